//! Reading the kept releases, and rolling back to one: a new release made
//! of an old one's code, virtualenv and env, rolled out like any other. A
//! rollback is a switch, never a build: nothing is unpacked or installed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lock::HomeLock;
use crate::progress::{Event, Progress, Steps};
use crate::release::{Release, ReleaseId, ReleaseSummary};
use crate::rollout::RolledOut;
use crate::rollout::RolloutPlan;
use crate::state::CurrentInstances;
use crate::ProcessName;
use crate::Sarge;

/// What a rollback did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RolledBack {
    /// The release rolled back to.
    pub target: ReleaseId,
    /// The new release (with the target's code, virtualenv and env) and
    /// its instances.
    pub rolled_out: RolledOut,
    /// Env names whose value in the target release differs from
    /// `etc/sarge.yaml` now (names only: values may be secrets).
    pub env_differs: Vec<String>,
    /// Releases between the target and the one replaced whose release
    /// command ran: a migration may not be reversible.
    pub crossed_release_commands: Vec<ReleaseId>,
    /// How long it took.
    pub elapsed: Duration,
}

/// What [`Sarge::rollback`] is about to change, read before it runs (see
/// [`Sarge::rollback_plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RollbackPlan {
    /// The current release, if there is one.
    pub from: Option<ReleaseId>,
    /// The release rolled back to.
    pub to: ReleaseId,
    /// The process types that get new instances, sorted.
    pub processes: Vec<ProcessName>,
}

/// The release before the current one in the history: the default
/// target of a rollback.
fn previous_release(current: &CurrentInstances) -> Option<ReleaseId> {
    let position = current
        .release
        .and_then(|id| current.history.iter().position(|kept| *kept == id))?;
    let before = position.checked_sub(1)?;
    current.history.get(before).copied()
}

impl Sarge {
    /// Fails, naming what is gone, unless every part `release` runs (its
    /// code, its virtualenv as it was built) is still on disk: a release
    /// that is not current rolls out again without any build.
    pub(crate) fn check_intact(&self, release: &Release, current: &CurrentInstances) -> Result<()> {
        let gone = |what: String| Error::UnknownRelease {
            id: format!("{} ({what})", release.id),
            known: current.kept_releases(),
        };
        for spec in release.processes.values() {
            let app = Release::app_dir(&self.home, spec);
            if !app.is_dir() {
                return Err(gone(format!("its code in {app} is gone")));
            }
            if let Some(venv) = &spec.venv {
                let venv = sarge_venv::VenvId::new(venv.clone());
                if let Err(problem) = self.venv_store().check_unchanged(&venv) {
                    return Err(gone(format!("its virtualenv: {problem}")));
                }
            }
        }
        Ok(())
    }

    /// What `rollback(target)` would change, from the committed state, so
    /// a caller can say it before it starts: `None` when the rollback will
    /// be refused (no release before the current one, an unknown release,
    /// the current one), which `rollback` then explains. Reads only; like
    /// `releases`, it sees what is committed, which is what `rollback`
    /// sees once it has recovered, unless another command commits a
    /// release in between (`rollback` waits for its lock): then
    /// [`RolledBack::target`] is the truth.
    pub fn rollback_plan(&self, target: Option<ReleaseId>) -> Result<Option<RollbackPlan>> {
        let current = CurrentInstances::load(&self.home)?;
        let Some(to) = target.or_else(|| previous_release(&current)) else {
            return Ok(None);
        };
        if !current.history.contains(&to) || Some(to) == current.release {
            return Ok(None);
        }
        let release = Release::load(&self.home, to)?;
        Ok(Some(RollbackPlan {
            from: current.release,
            to,
            processes: release.processes.keys().cloned().collect(),
        }))
    }

    /// The releases you can roll back to, newest first, the current one
    /// marked. Reads only.
    pub fn releases(&self) -> Result<Vec<ReleaseSummary>> {
        let current = CurrentInstances::load(&self.home)?;
        let mut releases = Vec::new();
        for id in current.history.iter().rev() {
            let release = Release::load(&self.home, *id)?;
            releases.push(ReleaseSummary::from((
                &release,
                current.release == Some(*id),
            )));
        }
        Ok(releases)
    }

    /// The output of `id`'s release command, as it ran: of a kept release,
    /// or of a deploy whose release command failed (its error names this
    /// output, kept until it is older than every kept release). An error
    /// if there is none. Reads only.
    pub fn release_output(&self, id: ReleaseId) -> Result<String> {
        let path = self.home.release_output(id);
        match fs_err::read(&path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                CurrentInstances::load(&self.home)?.check_kept(id)?;
                Err(Error::NoReleaseOutput { id })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Rolls back to `target` (default: the release before the current
    /// one) by making and rolling out a new release with its code,
    /// virtualenv and env, with no failed request. An unknown or pruned
    /// release is an error naming what exists; nothing changes then.
    pub fn rollback(
        &self,
        target: Option<ReleaseId>,
        progress: &mut dyn Progress,
    ) -> Result<RolledBack> {
        let started = Instant::now();
        let mut steps = Steps::new(progress);
        let supervisor = self.supervisor_checked()?;
        let lock = HomeLock::acquire(&self.home, &mut steps)?;
        self.clean_leftovers(&supervisor, &mut steps)?;
        let current = CurrentInstances::load(&self.home)?;
        let known = || current.kept_releases();
        let target = match target {
            Some(id) => id,
            None => match previous_release(&current) {
                Some(previous) => previous,
                None => {
                    return Err(Error::NothingToRollBackTo {
                        current: current
                            .release
                            .map_or_else(|| "none".to_owned(), |id| id.to_string()),
                    })
                }
            },
        };
        if !current.history.contains(&target) || Some(target) == current.release {
            return Err(Error::UnknownRelease {
                id: target.to_string(),
                known: if Some(target) == current.release {
                    format!("{} (it is the current release)", known())
                } else {
                    known()
                },
            });
        }
        let mut old = Release::load(&self.home, target)?;
        // A rollback changes code and env, not capacity: each process keeps
        // the count it runs at now.
        if let Some(now) = current
            .release
            .and_then(|id| Release::load(&self.home, id).ok())
        {
            for (process, spec) in &mut old.processes {
                if let Some(running) = now.processes.get(process) {
                    spec.count = running.count;
                }
            }
        }
        let env = Release::env(&self.home, target)?;
        let crossed_release_commands: Vec<ReleaseId> = current
            .history
            .iter()
            .filter(|id| **id > target)
            .filter(|id| {
                Release::load(&self.home, **id).is_ok_and(|release| release.release_command_ran)
            })
            .copied()
            .collect();
        let mut plan = RolloutPlan::new(format!("rollback to {target}")).from(target);
        for (process, spec) in &old.processes {
            if let Ok(name) = process.parse::<ProcessName>() {
                plan = plan.count(name, spec.count);
            }
        }
        let rolled_out =
            self.roll_out_plan(&lock, &supervisor, &plan, &mut steps, |steps, made| {
                steps.report(Event::ReleaseMade {
                    release: made.id,
                    from: target,
                })
            })?;
        let next = self.env()?;
        let names: BTreeSet<&String> = env.keys().chain(next.keys()).collect();
        let env_differs = names
            .into_iter()
            .filter(|name| env.get(*name) != next.get(*name))
            .cloned()
            .collect();
        Ok(RolledBack {
            target,
            rolled_out,
            env_differs,
            crossed_release_commands,
            elapsed: started.elapsed(),
        })
    }
}
