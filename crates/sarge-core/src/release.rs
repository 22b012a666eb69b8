//! Releases: what every process of the app runs, kept for rollback.
//!
//! A release `vN` holds, per process type, the code (an unpacked app
//! folder, `var/releases/vM/app`, shared by every process deployed from
//! the same tarball), the virtualenv, the Procfile command and the number
//! of instances; and the env the release was made with (`env.json`, mode
//! 0600). A rollback makes a new release from an old one's parts, so it
//! needs no unpack and no install.
//!
//! `var/state/current.json` is the one commit point: it names the current
//! release and the history of releases that were rolled out. A release
//! folder it does not name is the leftover of a failed or killed deploy.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::home::Home;
use crate::state::{read_json, write_json};
use crate::ProcessName;

/// A release id: `v1`, `v2`, ... per home, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseId(u32);

impl ReleaseId {
    /// The release numbered `number` (`v{number}`).
    pub fn new(number: u32) -> Self {
        Self(number)
    }

    /// Its number.
    pub fn number(self) -> u32 {
        self.0
    }

    /// The id after this one. Ids come from the history of releases that
    /// were rolled out, whose newest is never pruned: an id that ever named
    /// a release is never given again.
    pub(crate) fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl FromStr for ReleaseId {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        text.strip_prefix('v')
            .and_then(|number| number.parse().ok())
            .filter(|number| *number > 0)
            .map(Self)
            .ok_or_else(|| Error::BadReleaseId {
                id: crate::error::excerpt(text),
            })
    }
}

impl Serialize for ReleaseId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReleaseId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What one process type runs in a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProcessSpec {
    /// The release whose folder holds this process's code.
    pub code: ReleaseId,
    /// The Procfile command.
    pub command: String,
    /// The shared virtualenv it runs in, if the app has requirements.
    pub venv: Option<String>,
    /// How many instances run.
    pub count: u32,
}

/// A release, as `var/releases/vN/release.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Release {
    /// Its id.
    pub id: ReleaseId,
    /// When it was made, RFC 3339 UTC.
    pub created: String,
    /// What made it: `deploy web, worker`, `rollback to v6`.
    pub description: String,
    /// What each process type runs.
    pub processes: BTreeMap<ProcessName, ProcessSpec>,
    /// Whether a Procfile `release:` command ran for it.
    #[serde(default)]
    pub release_command_ran: bool,
}

impl Release {
    /// Reads `var/releases/<id>/release.json`.
    pub(crate) fn load(home: &Home, id: ReleaseId) -> Result<Self> {
        read_json(&home.release_dir(id).join("release.json"))
    }

    /// Writes its record and its env snapshot (mode 0600: it holds secrets).
    pub(crate) fn save(&self, home: &Home, env: &BTreeMap<String, String>) -> Result<()> {
        let dir = home.release_dir(self.id);
        crate::privacy::create_private_dir(&dir)?;
        write_json(&dir.join("env.json"), env, crate::privacy::PRIVATE_FILE)?;
        write_json(
            &dir.join("release.json"),
            self,
            crate::privacy::PRIVATE_FILE,
        )
    }

    /// The env this release runs with.
    pub(crate) fn env(home: &Home, id: ReleaseId) -> Result<BTreeMap<String, String>> {
        read_json(&home.release_dir(id).join("env.json"))
    }

    /// The app folder `process` runs in.
    pub(crate) fn app_dir(home: &Home, spec: &ProcessSpec) -> Utf8PathBuf {
        home.release_dir(spec.code).join("app")
    }
}

/// One release as `sarge releases` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReleaseSummary {
    /// Its id.
    pub id: ReleaseId,
    /// When it was made.
    pub created: String,
    /// Whether it is the current release.
    pub current: bool,
    /// What made it.
    pub description: String,
    /// Instances per process type.
    pub processes: BTreeMap<ProcessName, u32>,
}

impl From<(&Release, bool)> for ReleaseSummary {
    fn from((release, current): (&Release, bool)) -> Self {
        Self {
            id: release.id,
            created: release.created.clone(),
            current,
            description: release.description.clone(),
            processes: release
                .processes
                .iter()
                .map(|(process, spec)| (process.clone(), spec.count))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_ids_read_and_print_as_v_and_a_number() {
        let id: ReleaseId = "v12".parse().unwrap();
        assert_eq!(id, ReleaseId::new(12));
        assert_eq!(id.to_string(), "v12");
        assert_eq!(id.next().to_string(), "v13");
        for bad in ["12", "v", "v0", "v-1", "V3", "v1.5", ""] {
            assert!(bad.parse::<ReleaseId>().is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"v12\"",
            "stored as its text"
        );
    }
}

/// The instances that served a release, `var/releases/vN/instances.json`:
/// their logs stay readable (`sarge logs --release vN`) while the release
/// is kept, after the instances themselves are gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServedBy {
    /// Per process, its instance ids in order (`web.1`, `web.2`, ...).
    pub(crate) processes: BTreeMap<ProcessName, Vec<String>>,
}

impl ServedBy {
    /// The instances `current` names.
    pub(crate) fn of(current: &crate::state::CurrentInstances) -> Self {
        ServedBy {
            processes: current
                .processes
                .iter()
                .map(|(process, instances)| {
                    let ids = instances.iter().map(|instance| instance.id.clone());
                    (process.clone(), ids.collect())
                })
                .collect(),
        }
    }

    fn path(home: &Home, id: ReleaseId) -> Utf8PathBuf {
        home.release_dir(id).join("instances.json")
    }

    pub(crate) fn save(&self, home: &Home, id: ReleaseId) -> Result<()> {
        crate::state::write_json(&Self::path(home, id), self, crate::privacy::PRIVATE_FILE)
    }

    /// What served release `id`; nothing for a release made before this
    /// was recorded.
    pub(crate) fn load(home: &Home, id: ReleaseId) -> Result<Self> {
        let path = Self::path(home, id);
        if !path.exists() {
            return Ok(Self::default());
        }
        crate::state::read_json(&path)
    }
}
