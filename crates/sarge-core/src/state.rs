//! What sarge remembers between commands, written atomically so that a
//! crash never leaves a half-written file.

use fs_err::os::unix::fs::OpenOptionsExt;
use std::collections::BTreeMap;
use std::io::Write;

use camino::Utf8Path;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::home::Home;
use crate::release::ReleaseId;
use crate::ProcessName;

/// What an instance is: written into its folder as `instance.json` before
/// it is started, never changed afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceRecord {
    /// Unique id, `<process>-<hex>`; also its supervisord program name.
    pub id: String,
    /// The Procfile process type it runs.
    pub process: ProcessName,
    /// The port it listens on (`$PORT`).
    pub port: u16,
    /// When it was deployed, RFC 3339 UTC.
    pub created: String,
    /// The Procfile command.
    pub command: String,
    /// The shared virtualenv it runs in (its folder name in the store, a
    /// `sarge_venv::VenvId`), if the app has requirements.
    pub venv: Option<String>,
    /// The release it runs (none for an instance deployed before releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
}

impl InstanceRecord {
    /// Reads `var/instances/<id>/instance.json`.
    pub fn load(home: &Home, id: &str) -> Result<Self> {
        read_json(&home.instance_dir(id).join("instance.json"))
    }

    pub(crate) fn save(&self, home: &Home) -> Result<()> {
        write_json(
            &home.instance_dir(&self.id).join("instance.json"),
            self,
            crate::privacy::PRIVATE_FILE,
        )
    }
}

/// Which instances serve each process, and whether haproxy routes to
/// them. This is the commit point of a rollout: an instance folder not
/// named here is a leftover of a failed or killed command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CurrentInstances {
    /// Process name to its current instances, in the order they were
    /// started (`web.1`, `web.2`, ...). A process scaled to 0 has none.
    #[serde(deserialize_with = "one_or_many::deserialize")]
    pub processes: BTreeMap<ProcessName, Vec<CurrentInstance>>,
    /// The current release (none before the first release was made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
    /// The releases that were rolled out and are kept, oldest first; the
    /// last is the current one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ReleaseId>,
    /// A release whose instances are started and ready but not switched
    /// to (`sarge deploy --prepare`), waiting for `sarge switch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared: Option<PreparedRelease>,
    /// The newest release ever prepared, switched or not: its id is
    /// never given again, so a `sarge switch vN` of a client that lost
    /// track never switches another release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prepared: Option<ReleaseId>,
    /// The newest release whose release command was started, rolled out
    /// or not: its output (`var/log/release-vN.log`, which a failed
    /// deploy's error points to) is kept, so its id is never given again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted: Option<ReleaseId>,
}

/// A release prepared by `sarge deploy --prepare`: its instances run and
/// answered on their own ports; nothing routes to them yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PreparedRelease {
    /// The release.
    pub release: ReleaseId,
    /// The release that was current when it was prepared: it switches
    /// only from that one.
    pub based_on: Option<ReleaseId>,
    /// Its new instances, per process.
    pub instances: BTreeMap<ProcessName, Vec<String>>,
    /// When the next command discards it if it was not switched, in
    /// seconds since the Unix epoch.
    pub expires: u64,
}

impl PreparedRelease {
    /// Every instance id it started.
    pub fn instance_ids(&self) -> impl Iterator<Item = &str> {
        self.instances.values().flatten().map(String::as_str)
    }
}

/// One current instance of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CurrentInstanceOnDisk")]
#[non_exhaustive]
pub struct CurrentInstance {
    /// Instance id; also its haproxy server name.
    pub id: String,
    /// Whether the process's stable address routes to it.
    pub routed: bool,
    /// The pid sarge saw answer when it made this instance current: while
    /// that process runs, it is running, whatever supervisord's start-up
    /// grace period still calls it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_pid: Option<u32>,
}

/// A current instance as any sarge wrote it: older ones kept a haproxy
/// slot, `"a"` or `"b"`, where a routed instance now says `routed`.
#[derive(Deserialize)]
struct CurrentInstanceOnDisk {
    id: String,
    #[serde(default)]
    routed: bool,
    #[serde(default)]
    slot: Option<String>,
    #[serde(default)]
    ready_pid: Option<u32>,
}

impl From<CurrentInstanceOnDisk> for CurrentInstance {
    fn from(disk: CurrentInstanceOnDisk) -> Self {
        CurrentInstance {
            id: disk.id,
            routed: disk.routed || disk.slot.is_some(),
            ready_pid: disk.ready_pid,
        }
    }
}

impl CurrentInstances {
    /// Reads `var/state/current.json`; missing means nothing deployed yet.
    pub fn load(home: &Home) -> Result<Self> {
        let path = home.current_file();
        if !path.exists() {
            return Ok(Self::default());
        }
        read_json(&path)
    }

    /// Saves the state, on disk when this returns even inside a
    /// [`DeferredSyncs`](crate::durability::DeferredSyncs) scope: this
    /// write is the commit point everything else is ordered by.
    pub(crate) fn save(&self, home: &Home) -> Result<()> {
        let _flushed_now = crate::durability::FlushNow::open();
        write_json(&home.current_file(), self, crate::privacy::PRIVATE_FILE)
    }

    /// The id of the next release: one past the newest of the history
    /// (whose newest is never pruned), of any release prepared, and of any
    /// whose release command ran, so an id that named a release that was
    /// rolled out, or that left output behind, is never given again.
    pub(crate) fn next_release_id(&self) -> ReleaseId {
        let newest = self
            .history
            .last()
            .copied()
            .max(self.prepared.as_ref().map(|prepared| prepared.release))
            .max(self.last_prepared)
            .max(self.last_attempted);
        newest.map_or(ReleaseId::new(1), ReleaseId::next)
    }

    /// Fails, listing the kept releases, unless `release` is one of them.
    pub(crate) fn check_kept(&self, release: ReleaseId) -> Result<()> {
        if self.history.contains(&release) {
            return Ok(());
        }
        Err(Error::UnknownRelease {
            id: release.to_string(),
            known: self.kept_releases(),
        })
    }

    /// The kept releases, newest first, as an error lists them ("none").
    pub(crate) fn kept_releases(&self) -> String {
        if self.history.is_empty() {
            return "none".to_owned();
        }
        let ids: Vec<String> = self.history.iter().rev().map(ToString::to_string).collect();
        ids.join(", ")
    }

    /// The process whose current instances include `id`.
    pub fn process_of(&self, id: &str) -> Option<&ProcessName> {
        self.processes
            .iter()
            .find(|(_, instances)| instances.iter().any(|instance| instance.id == id))
            .map(|(process, _)| process)
    }

    /// Every current instance, with its process, process by process.
    pub fn instances(&self) -> impl Iterator<Item = (&ProcessName, &CurrentInstance)> {
        self.processes.iter().flat_map(|(process, instances)| {
            instances.iter().map(move |instance| (process, instance))
        })
    }

    /// The ids of every current instance and of the prepared release's:
    /// the instances no cleanup or retirement may touch.
    pub(crate) fn kept_ids(&self) -> std::collections::BTreeSet<&str> {
        self.instances()
            .map(|(_, instance)| instance.id.as_str())
            .chain(self.prepared.iter().flat_map(PreparedRelease::instance_ids))
            .collect()
    }

    /// The current instances of `process` (none if it has none).
    pub fn of(&self, process: &str) -> &[CurrentInstance] {
        self.processes.get(process).map_or(&[], Vec::as_slice)
    }
}

/// `processes` maps each process to a list of instances; sarge before
/// scaling wrote one instance, not a list.
mod one_or_many {
    use super::CurrentInstance;
    use crate::ProcessName;
    use serde::{Deserialize, Deserializer};
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<CurrentInstance>),
        One(CurrentInstance),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<ProcessName, Vec<CurrentInstance>>, D::Error> {
        let map = BTreeMap::<ProcessName, OneOrMany>::deserialize(deserializer)?;
        Ok(map
            .into_iter()
            .map(|(process, instances)| {
                let instances = match instances {
                    OneOrMany::Many(instances) => instances,
                    OneOrMany::One(instance) => vec![instance],
                };
                (process, instances)
            })
            .collect())
    }
}

/// Reads a JSON state file, naming the file in errors.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Utf8Path) -> Result<T> {
    let text = fs_err::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|source| Error::StateFile {
        path: path.to_owned(),
        problem: source.to_string(),
    })
}

/// Writes `value` as JSON to `path` atomically with file `mode`.
pub(crate) fn write_json<T: Serialize>(path: &Utf8Path, value: &T, mode: u32) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| Error::StateFile {
        path: path.to_owned(),
        problem: source.to_string(),
    })?;
    text.push('\n');
    write_atomic(path, text.as_bytes(), mode)
}

/// Writes `bytes` to `path` through a temp file in the same folder and a
/// rename, so readers see the old content or the new, never a mix. The temp
/// file is created with `mode` so secrets are never readable by others,
/// even for an instant.
pub(crate) fn write_atomic(path: &Utf8Path, bytes: &[u8], mode: u32) -> Result<()> {
    let file_name = path.file_name().unwrap_or("file");
    let temp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    // A temp file left by a killed run may have another mode; start afresh.
    let _ = std::fs::remove_file(&temp);
    let result = (|| -> std::io::Result<()> {
        let mut options = fs_err::OpenOptions::new();
        options.write(true).create(true).truncate(true).mode(mode);
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        if !crate::durability::defer(path) {
            file.sync_data()?;
        }
        // `mode` is filtered by the umask on creation; say exactly what we mean.
        fs_err::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        fs_err::rename(&temp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs_err::remove_file(&temp);
    }
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `current.json` as sarge wrote it before scaling: one instance
    /// per process, routed ones on haproxy slot `a` or `b`.
    const OLD_CURRENT: &str = r#"{
  "processes": {
    "api": {
      "id": "api-0a1b2c",
      "slot": "b",
      "ready_pid": 4242
    },
    "web": {
      "id": "web-3fa9c1",
      "slot": "a"
    },
    "worker": {
      "id": "worker-77aa00",
      "slot": null
    }
  },
  "release": "v3",
  "history": ["v2", "v3"]
}
"#;

    #[test]
    fn a_current_file_written_before_scaling_reads_as_one_instance_each() {
        let current: CurrentInstances = serde_json::from_str(OLD_CURRENT).unwrap();
        assert!(current.of("web")[0].routed);
        assert_eq!(current.of("api")[0].ready_pid, Some(4242));
        assert!(!current.of("worker")[0].routed);
        assert_eq!(current.process_of("worker-77aa00").unwrap(), "worker");
        assert_eq!(current.instances().count(), 3);
        // What this sarge writes reads back alike.
        let written = serde_json::to_string(&current).unwrap();
        let again: CurrentInstances = serde_json::from_str(&written).unwrap();
        assert_eq!(again, current);
    }

    #[test]
    fn an_id_whose_release_command_ran_is_never_given_again() {
        let text = r#"{"processes": {}, "history": ["v3"], "last_attempted": "v4"}"#;
        let current: CurrentInstances = serde_json::from_str(text).unwrap();
        assert_eq!(current.next_release_id(), ReleaseId::new(5));
        // A file written before the field reads as before.
        let text = r#"{"processes": {}, "history": ["v3"]}"#;
        let current: CurrentInstances = serde_json::from_str(text).unwrap();
        assert_eq!(current.next_release_id(), ReleaseId::new(4));
    }

    #[test]
    fn names_are_written_as_plain_strings() {
        let current: CurrentInstances = serde_json::from_str(OLD_CURRENT).unwrap();
        let written: serde_json::Value = serde_json::to_value(&current).unwrap();
        let keys: Vec<&String> = written["processes"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["api", "web", "worker"]);
        let record = InstanceRecord {
            id: "web-3fa9c1".to_owned(),
            process: "web".parse().unwrap(),
            port: 5010,
            created: "2026-01-01T00:00:00Z".to_owned(),
            command: "python app.py".to_owned(),
            venv: None,
            release: None,
        };
        assert_eq!(serde_json::to_value(&record).unwrap()["process"], "web");
    }

    #[test]
    fn a_bad_process_name_in_a_state_file_is_an_error_naming_the_file_and_the_rule() {
        let dir = std::env::temp_dir().join(format!("sarge-state-{}", std::process::id()));
        let dir = camino::Utf8PathBuf::try_from(dir).unwrap();
        fs_err::create_dir_all(&dir).unwrap();
        let current = dir.join("current.json");
        fs_err::write(&current, r#"{"processes": {"../web": []}}"#).unwrap();
        let record = dir.join("instance.json");
        let text = r#"{"id": "x-0a1b2c", "process": "we b", "port": 5010,
            "created": "2026-01-01T00:00:00Z", "command": "x", "venv": null}"#;
        fs_err::write(&record, text).unwrap();

        let error = read_json::<CurrentInstances>(&current).unwrap_err();
        let message = error.to_string();
        let error_record = read_json::<InstanceRecord>(&record).unwrap_err();
        let message_record = error_record.to_string();
        fs_err::remove_dir_all(&dir).unwrap();

        assert!(matches!(error, Error::StateFile { .. }), "{error:?}");
        assert!(
            message.starts_with(&format!("state file {current} is corrupt: ")),
            "{message}"
        );
        assert!(
            message.contains(r#""../web" is not a valid process name: it starts with '.'"#),
            "{message}"
        );
        assert!(message.contains(ProcessName::RULE), "{message}");
        assert!(
            message_record.starts_with(&format!("state file {record} is corrupt: ")),
            "{message_record}"
        );
        assert!(
            message_record.contains(r#""we b" is not a valid process name: it contains ' '"#),
            "{message_record}"
        );
    }

    #[test]
    fn a_process_scaled_to_zero_keeps_its_key_with_no_instance() {
        let text = r#"{"processes": {"web": [], "worker": [{"id": "worker-1", "routed": false}]}}"#;
        let current: CurrentInstances = serde_json::from_str(text).unwrap();
        assert!(current.of("web").is_empty());
        assert!(current.processes.contains_key("web"));
        assert_eq!(current.of("worker").len(), 1);
        assert!(current.of("api").is_empty());
    }
}
