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
use sarge_haproxy::Slot;

/// What an instance is: written into its folder as `instance.json` before
/// it is started, never changed afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceRecord {
    /// Unique id, `<process>-<hex>`; also its supervisord program name.
    pub id: String,
    /// The Procfile process type it runs.
    pub process: String,
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

/// Which instance serves each process, and on which haproxy slot. This is
/// the commit point of a deploy: an instance folder not named here is a
/// leftover of a failed or killed deploy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CurrentInstances {
    /// Process name to its current instance.
    pub processes: BTreeMap<String, CurrentInstance>,
    /// The current release (none before the first release was made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
    /// The releases that were rolled out and are kept, oldest first; the
    /// last is the current one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ReleaseId>,
}

/// The current instance of one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CurrentInstance {
    /// Instance id.
    pub id: String,
    /// The haproxy server slot it is routed through, if the process has a
    /// stable address. Stored as `"a"` or `"b"`, as every sarge wrote it.
    #[serde(default, with = "slot_on_disk")]
    pub slot: Option<Slot>,
    /// The pid sarge saw answer when it made this instance current: while
    /// that process runs, it is running, whatever supervisord's start-up
    /// grace period still calls it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_pid: Option<u32>,
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

    pub(crate) fn save(&self, home: &Home) -> Result<()> {
        write_json(&home.current_file(), self, crate::privacy::PRIVATE_FILE)
    }

    /// The id of the next release: one past the newest of the history,
    /// whose newest is never pruned, so an id that named a release that
    /// was rolled out is never given again.
    pub(crate) fn next_release_id(&self) -> ReleaseId {
        self.history
            .last()
            .map_or(ReleaseId::new(1), |last| last.next())
    }

    /// The process whose current instance is `id`.
    pub fn process_of(&self, id: &str) -> Option<&str> {
        self.processes
            .iter()
            .find(|(_, current)| current.id == id)
            .map(|(process, _)| process.as_str())
    }
}

/// `current.json` keeps a slot as its haproxy server name, `"a"` or `"b"`
/// (what sarge wrote before the slot had a type of its own), so homes
/// written by any sarge read alike.
mod slot_on_disk {
    use sarge_haproxy::Slot;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        slot: &Option<Slot>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        slot.map(Slot::server_name).serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Slot>, D::Error> {
        match Option::<String>::deserialize(deserializer)?.as_deref() {
            None => Ok(None),
            Some("a") => Ok(Some(Slot::A)),
            Some("b") => Ok(Some(Slot::B)),
            Some(other) => Err(serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(other),
                &"a haproxy slot, \"a\" or \"b\"",
            )),
        }
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
        file.sync_data()?;
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

    /// A `current.json` as sarge wrote it when the slot was a `char`.
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
    fn a_current_file_written_with_char_slots_reads_and_writes_back_alike() {
        let current: CurrentInstances = serde_json::from_str(OLD_CURRENT).unwrap();
        assert_eq!(current.processes["web"].slot, Some(Slot::A));
        assert_eq!(current.processes["api"].slot, Some(Slot::B));
        assert_eq!(current.processes["api"].ready_pid, Some(4242));
        assert_eq!(current.processes["worker"].slot, None);
        // An older sarge reads what this one writes: the same strings.
        let written: serde_json::Value = serde_json::to_value(&current).unwrap();
        let old: serde_json::Value = serde_json::from_str(OLD_CURRENT).unwrap();
        assert_eq!(written, old);
    }

    #[test]
    fn a_slot_that_is_neither_a_nor_b_is_an_error_not_a_silent_none() {
        let text = r#"{"processes": {"web": {"id": "web-3fa9c1", "slot": "c"}}}"#;
        let error = serde_json::from_str::<CurrentInstances>(text).unwrap_err();
        assert!(error.to_string().contains("\"a\" or \"b\""), "{error}");
        // A record with no slot key at all is an unrouted one.
        let text = r#"{"processes": {"web": {"id": "web-3fa9c1"}}}"#;
        let current: CurrentInstances = serde_json::from_str(text).unwrap();
        assert_eq!(current.processes["web"].slot, None);
    }
}
