//! Day-two operations, each a new release rolled out by the rollout engine
//! with no failed request: changing the env (`sarge config set/unset`) and
//! restarting processes (`sarge restart`).
//!
//! Values set with `sarge config` live in `etc/env.json` (mode 0600), which
//! overrides `etc/sarge.yaml`'s `env` without rewriting the user's
//! commented YAML, so secrets need not sit in `sarge.yaml`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{excerpt, Error, Result};
use crate::lock::HomeLock;
use crate::progress::{Progress, Steps};
use crate::release::Release;
use crate::rollout::{RolledOut, RolloutPlan, INSTANCE_VARIABLE};
use crate::state::{read_json, write_json, CurrentInstances};
use crate::{ProcessName, Sarge};

/// `etc/env.json`: what `sarge config` changed over `sarge.yaml`'s `env`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct EnvOverlay {
    /// Names set, with their values.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Names unset even if `sarge.yaml` sets them.
    #[serde(default)]
    unset: BTreeSet<String>,
}

impl EnvOverlay {
    fn load(sarge: &Sarge) -> Result<Self> {
        let path = sarge.home.env_overlay_file();
        if !path.exists() {
            return Ok(Self::default());
        }
        read_json(&path)
    }

    fn save(&self, sarge: &Sarge) -> Result<()> {
        write_json(
            &sarge.home.env_overlay_file(),
            self,
            crate::privacy::PRIVATE_FILE,
        )
    }
}

/// Whether `name` may be an environment variable an app gets: a shell
/// name, and not one sarge sets for each instance.
fn check_env_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.starts_with(|c: char| c.is_ascii_digit()) {
        Some("starts with a digit")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Some("has a character other than ASCII letters, digits and `_`")
    } else if name == "PORT" || name == INSTANCE_VARIABLE {
        Some("is set by sarge for each instance")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::BadEnvName {
            name: excerpt(name),
            problem: problem.to_owned(),
        }),
        None => Ok(()),
    }
}

/// What a config change did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConfigChanged {
    /// The release that now runs with the new env, if one was rolled out
    /// (none with `--no-restart`, or before the first deploy).
    pub rolled_out: Option<RolledOut>,
}

impl Sarge {
    /// The env the next release gets: `sarge.yaml`'s `env` with what
    /// `sarge config` set and unset over it. Reads only.
    pub fn env(&self) -> Result<BTreeMap<String, String>> {
        let overlay = EnvOverlay::load(self)?;
        let mut env = self.config.env.clone();
        env.retain(|name, _| !overlay.unset.contains(name));
        env.extend(overlay.set);
        Ok(env)
    }

    /// The env of the current release (what the running instances got),
    /// or the next release's before the first deploy. Reads only.
    pub fn current_env(&self) -> Result<BTreeMap<String, String>> {
        match CurrentInstances::load(&self.home)?.release {
            Some(id) => Release::env(&self.home, id),
            None => self.env(),
        }
    }

    /// Sets env `values` (NAME, value) and, unless `restart` is false,
    /// rolls out a new release with the same code and virtualenv and the
    /// new env. A bad name is refused before anything changes.
    pub fn set_env(
        &self,
        values: &[(String, String)],
        restart: bool,
        progress: &mut dyn Progress,
    ) -> Result<ConfigChanged> {
        for (name, _) in values {
            check_env_name(name)?;
        }
        let names: Vec<&str> = values.iter().map(|(name, _)| name.as_str()).collect();
        self.change_env(
            &format!("config set {}", names.join(", ")),
            |overlay| {
                for (name, value) in values {
                    overlay.unset.remove(name);
                    overlay.set.insert(name.clone(), value.clone());
                }
            },
            restart,
            progress,
        )
    }

    /// Unsets env `names` (also those `sarge.yaml` sets) and, unless
    /// `restart` is false, rolls out a new release without them.
    pub fn unset_env(
        &self,
        names: &[String],
        restart: bool,
        progress: &mut dyn Progress,
    ) -> Result<ConfigChanged> {
        for name in names {
            check_env_name(name)?;
        }
        let yaml = &self.config.env;
        self.change_env(
            &format!("config unset {}", names.join(", ")),
            |overlay| {
                for name in names {
                    overlay.set.remove(name);
                    if yaml.contains_key(name) {
                        overlay.unset.insert(name.clone());
                    }
                }
            },
            restart,
            progress,
        )
    }

    fn change_env(
        &self,
        description: &str,
        change: impl FnOnce(&mut EnvOverlay),
        restart: bool,
        progress: &mut dyn Progress,
    ) -> Result<ConfigChanged> {
        let mut steps = Steps::new(progress);
        let supervisor = if restart {
            Some(self.supervisor_checked()?)
        } else {
            None
        };
        let lock = HomeLock::acquire(&self.home, &mut steps)?;
        let mut overlay = EnvOverlay::load(self)?;
        let before = overlay.clone();
        change(&mut overlay);
        overlay.save(self)?;
        let Some(supervisor) = supervisor else {
            return Ok(ConfigChanged { rolled_out: None });
        };
        self.clean_leftovers(&supervisor, &mut steps)?;
        let current = CurrentInstances::load(&self.home)?;
        let Some(current_id) = current.release else {
            return Ok(ConfigChanged { rolled_out: None });
        };
        let plan = RolloutPlan::new(description)
            .from(current_id)
            .env(self.env()?);
        let rolled_out = self.roll_out_plan(&lock, &supervisor, &plan, &mut steps, |_, _| {});
        if rolled_out.is_err() {
            // The running release keeps its env; so does the next one.
            let _ = before.save(self);
        }
        Ok(ConfigChanged {
            rolled_out: Some(rolled_out?),
        })
    }

    /// Replaces the instances of `processes` (all when empty) with new
    /// ones of the current release, with no failed request: a new release
    /// with the same code, virtualenv and env. For an app that leaked
    /// memory or lost its database connection.
    pub fn restart(
        &self,
        processes: &[ProcessName],
        progress: &mut dyn Progress,
    ) -> Result<RolledOut> {
        let description = if processes.is_empty() {
            "restart".to_owned()
        } else {
            let names: Vec<&str> = processes.iter().map(ProcessName::as_str).collect();
            format!("restart {}", names.join(", "))
        };
        let plan = RolloutPlan::new(description).processes(processes.iter().cloned());
        self.roll_out(&plan, progress)
    }
}
