//! Step 6 of a rollout: the instances it replaced are drained, stopped and
//! removed, and the home tidied. By default the command does it before it
//! returns; with [`Retirement::Detached`] a process of its own does, so that
//! the command returns as soon as the new release serves, committed. That
//! process holds the home lock: the next command waits for the retirement
//! to finish, and whatever it could not finish is a leftover the next
//! command removes.

use std::ffi::OsString;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use camino::Utf8PathBuf;
use sarge_supervisor::Client;

use super::ProcessRollout;
use crate::error::Result;
use crate::lock::HomeLock;
use crate::progress::{Event, Progress, Steps};
use crate::routing::{LiveWorker, Router};
use crate::state::{CurrentInstances, InstanceRecord, PreparedRelease};
use crate::{ProcessName, Sarge};

/// How a rollout retires the instances it replaced, once the new release
/// serves and is committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retirement {
    /// In the command, which returns once they are gone (the default).
    #[default]
    InCommand,
    /// In a process started as `program` with `args`, then the ids of the
    /// instances to retire; the command returns as soon as the new release
    /// is committed. The process gets the home lock as its standard input,
    /// so the next command waits until it is done, and writes its output
    /// to `var/log/sarge-retire.log`. It should call [`Sarge::retire`]
    /// (`sarge retire` does). Should it fail to start, the command retires
    /// them itself.
    Detached {
        /// The program, e.g. `sarge` itself.
        program: PathBuf,
        /// Its arguments before the instance ids.
        args: Vec<OsString>,
    },
}

/// An instance being retired.
pub(super) struct Retiring {
    pub(super) process: ProcessName,
    pub(super) id: String,
    /// Whether it may have a server in haproxy to drain.
    pub(super) routed: bool,
}

impl Retiring {
    pub(super) fn of(plans: &[ProcessRollout]) -> Vec<Retiring> {
        plans
            .iter()
            .flat_map(|plan| {
                plan.retired.iter().map(|old| Retiring {
                    process: plan.process.clone(),
                    id: old.id.clone(),
                    routed: old.routed,
                })
            })
            .collect()
    }
}

impl Sarge {
    /// Retires `ids`, instances a rollout replaced: drains each one's open
    /// requests, then stops and removes it; then prunes releases beyond
    /// `keep_releases` and unused virtualenvs. What
    /// [`Retirement::Detached`]'s process runs, under the lock its command
    /// handed over as standard input (or, run by hand, under the lock it
    /// waits for). An id that is gone already is skipped; a current one is
    /// never touched. Returns the ids retired.
    pub fn retire(&self, ids: &[String], progress: &mut dyn Progress) -> Result<Vec<String>> {
        let mut steps = Steps::new(progress);
        let _lock = HomeLock::handed_over_or_acquire(&self.home, &mut steps)?;
        let supervisor = self.supervisor_checked()?;
        let mut current = CurrentInstances::load(&self.home)?;
        let keep = current.kept_ids();
        let mut retiring = Vec::new();
        for id in ids {
            if keep.contains(id.as_str()) {
                steps.warn(format!("{id} is current; it is not retired"));
                continue;
            }
            // Gone: the command that took the lock first removed it.
            if let Ok(record) = InstanceRecord::load(&self.home, id) {
                retiring.push(Retiring {
                    routed: self.config.port_map.contains_key(record.process.as_str()),
                    process: record.process,
                    id: id.clone(),
                });
            }
        }
        let router = Router::new(&self.home, &self.config, &supervisor);
        let live = if retiring.iter().any(|old| old.routed) {
            router.live().ok()
        } else {
            None
        };
        let retired =
            self.retire_instances(&supervisor, &router, live.as_ref(), &retiring, &mut steps);
        self.tidy_after_rollout(&mut current, &mut steps);
        Ok(retired)
    }

    /// Starts [`Retirement::Detached`]'s process for `retiring`, handing it
    /// `lock`. `None` when retirement is in the command, there is nothing
    /// to retire, or the process could not start: the caller retires.
    pub(super) fn detach_retirement(
        &self,
        lock: &HomeLock,
        retiring: &[Retiring],
        steps: &mut Steps<'_>,
    ) -> Option<Vec<String>> {
        let Retirement::Detached { program, args } = &self.retirement else {
            return None;
        };
        if retiring.is_empty() {
            return None;
        }
        let ids: Vec<String> = retiring.iter().map(|old| old.id.clone()).collect();
        let log: Utf8PathBuf = self.home.log_dir().join("sarge-retire.log");
        let started = (|| -> Result<()> {
            let output = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&log)?;
            Command::new(program)
                .args(args)
                .args(&ids)
                .stdin(Stdio::from(lock.share()?))
                .stderr(output.try_clone()?)
                .stdout(output)
                // Its own group: a Ctrl-C meant for the command that
                // started it does not stop it halfway.
                .process_group(0)
                .spawn()?;
            Ok(())
        })();
        match started {
            Ok(()) => {
                steps.report(Event::RetiringDetached {
                    instances: &ids,
                    log: &log,
                });
                Some(ids)
            }
            Err(error) => {
                steps.warn(format!(
                    "could not start {} to retire {} ({error}); retiring them now",
                    program.display(),
                    ids.join(", ")
                ));
                None
            }
        }
    }

    /// Drains and stops `retiring`. The rollout has succeeded: a failed
    /// removal is a note, and the next command finishes it. Returns the
    /// retired instances' ids.
    pub(super) fn retire_instances(
        &self,
        supervisor: &Client,
        router: &Router<'_>,
        live: Option<&LiveWorker>,
        retiring: &[Retiring],
        steps: &mut Steps<'_>,
    ) -> Vec<String> {
        let mut replaced = Vec::new();
        for old in retiring {
            let live = live.filter(|_| old.routed);
            if let Some(live) = live {
                let waited = router.drain(live, &old.process, &old.id, self.config.drain_timeout);
                steps.report(Event::Drained {
                    instance: &old.id,
                    waited,
                });
            }
            match self.remove_instance(supervisor, &old.id) {
                Ok(()) => steps.report(Event::Removed { instance: &old.id }),
                Err(error) => steps.warn(format!(
                    "could not remove the old instance {} ({error}); the next sarge command will",
                    old.id
                )),
            }
            if let Some(live) = live {
                // Its idle connections closed with it; a server haproxy
                // still holds on to goes at the next rollout.
                router.forget(live, &old.process, &old.id);
            }
            replaced.push(old.id.clone());
        }
        replaced
    }

    /// A release prepared before this rollout, which it superseded, goes.
    pub(super) fn remove_superseded(
        &self,
        supervisor: &Client,
        superseded: Option<PreparedRelease>,
        steps: &mut Steps<'_>,
    ) {
        if let Some(prepared) = superseded {
            if let Err(error) = self.remove_prepared(supervisor, &prepared) {
                steps.warn(format!(
                    "could not remove release {} prepared before this one ({error}); the next sarge command will",
                    prepared.release
                ));
            }
        }
    }

    /// After the retirement: releases beyond `keep_releases` are pruned,
    /// unused virtualenvs removed. Each failure is a note; the next
    /// command finishes the job.
    pub(super) fn tidy_after_rollout(&self, current: &mut CurrentInstances, steps: &mut Steps<'_>) {
        if let Err(error) = self.prune_releases(current) {
            steps.warn(format!("could not prune old releases ({error})"));
        }
        if let Err(error) = self.collect_venvs(current) {
            steps.warn(format!("could not remove unused virtualenvs ({error})"));
        }
    }
}
