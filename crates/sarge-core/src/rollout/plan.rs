//! [`RolloutPlan`]: a change to roll out, described by an embedder or by
//! one of sarge's own commands, and [`Sarge::roll_out`], which makes it a
//! release and hands it to the engine.

use std::collections::BTreeMap;
use std::time::SystemTime;

use sarge_config::ProcessName;
use sarge_supervisor::Client;

use super::{RolledOut, Rollout};
use crate::error::{excerpt, Error, Result};
use crate::lock::HomeLock;
use crate::progress::{Progress, Steps};
use crate::release::{Release, ReleaseId};
use crate::scale::MAX_INSTANCES;
use crate::state::CurrentInstances;
use crate::Sarge;

/// A change rolled out as a new release: the code and virtualenv of a
/// release the home keeps (the current one unless [`from`](Self::from)
/// names another), with its env and instance counts changed as asked, for
/// some or all of its processes. `restart`, `scale`, `config set` and
/// `rollback` are each one such plan.
///
/// ```no_run
/// use sarge_core::{Home, ProcessName, Rollout, RolloutPlan, Sarge, Silent};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sarge = Sarge::open(Home::new("/var/local/my_awesome_app"))?;
/// let web: ProcessName = "web".parse()?;
/// // Two more web instances beside the running ones, nothing else touched.
/// let plan = RolloutPlan::new("scale web=3")
///     .processes([web.clone()])
///     .count(web, 3)
///     .how(Rollout::Resize);
/// let rolled_out = sarge.roll_out(&plan, &mut Silent)?;
/// println!("{} is current", rolled_out.release);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RolloutPlan {
    /// The release whose code and virtualenv (and env, unless
    /// [`env`](Self::env) is set) the new release runs; the current one
    /// when `None`.
    pub from: Option<ReleaseId>,
    /// What `sarge releases` says of the new release.
    pub description: String,
    /// The env the new release runs; the `from` release's when `None`.
    pub env: Option<BTreeMap<String, String>>,
    /// New instance counts, per process.
    pub counts: BTreeMap<ProcessName, u32>,
    /// The processes rolled out; every process of the release when empty.
    /// The others keep running as they are.
    pub processes: Vec<ProcessName>,
    /// Whether running instances are replaced or kept.
    pub how: Rollout,
}

impl RolloutPlan {
    /// A plan that replaces every instance of the current release with
    /// new ones of the same code, virtualenv, env and counts: a restart.
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            ..Self::default()
        }
    }

    /// Runs the code and virtualenv of `release` instead of the current
    /// one's (a rollback).
    #[must_use]
    pub fn from(mut self, release: ReleaseId) -> Self {
        self.from = Some(release);
        self
    }

    /// Runs with `env` instead of the `from` release's env.
    #[must_use]
    pub fn env(mut self, env: BTreeMap<String, String>) -> Self {
        self.env = Some(env);
        self
    }

    /// Runs `count` instances of `process`.
    #[must_use]
    pub fn count(mut self, process: ProcessName, count: u32) -> Self {
        self.counts.insert(process, count);
        self
    }

    /// Rolls out only `processes`.
    #[must_use]
    pub fn processes(mut self, processes: impl IntoIterator<Item = ProcessName>) -> Self {
        self.processes = processes.into_iter().collect();
        self
    }

    /// Replaces, or keeps, the running instances.
    #[must_use]
    pub fn how(mut self, how: Rollout) -> Self {
        self.how = how;
        self
    }
}

impl Sarge {
    /// Makes `plan` a new release and rolls it out with no failed request:
    /// new instances start and join their stable address once ready,
    /// replaced ones leave it, drain and stop. Takes the home lock and
    /// finishes what an interrupted command left first. Nothing changes if
    /// a process named is not in the release, a count is over
    /// [`MAX_INSTANCES`], the `from` release is not kept, or `port_range`
    /// cannot hold the new instances; a failure before the switch leaves
    /// every process on the release it ran.
    pub fn roll_out(&self, plan: &RolloutPlan, progress: &mut dyn Progress) -> Result<RolledOut> {
        let mut steps = Steps::new(progress);
        let supervisor = self.supervisor_checked()?;
        let lock = HomeLock::acquire(&self.home, &mut steps)?;
        self.clean_leftovers(&supervisor, &mut steps)?;
        self.roll_out_plan(&lock, &supervisor, plan, &mut steps, |_, _| {})
    }

    /// [`Sarge::roll_out`] with the lock held and leftovers cleaned;
    /// `saved` runs once the new release is recorded, before its instances
    /// start.
    pub(crate) fn roll_out_plan(
        &self,
        lock: &HomeLock,
        supervisor: &Client,
        plan: &RolloutPlan,
        steps: &mut Steps<'_>,
        saved: impl FnOnce(&mut Steps<'_>, &Release),
    ) -> Result<RolledOut> {
        let current = CurrentInstances::load(&self.home)?;
        let from = match plan.from.or(current.release) {
            Some(from) => from,
            None => {
                return Err(Error::NothingDeployed {
                    home: self.home.root().to_owned(),
                })
            }
        };
        current.check_kept(from)?;
        let base = Release::load(&self.home, from)?;
        if Some(from) != current.release {
            self.check_intact(&base, &current)?;
        }
        let mut processes = base.processes.clone();
        for name in plan.processes.iter().chain(plan.counts.keys()) {
            if !processes.contains_key(name.as_str()) {
                return Err(Error::ProcessNotInRelease {
                    process: excerpt(name.as_str()),
                    release: from,
                });
            }
        }
        for (name, count) in &plan.counts {
            if *count > MAX_INSTANCES {
                return Err(Error::BadScale {
                    problem: format!(
                        "{name}={count} is over the limit of {MAX_INSTANCES} instances"
                    ),
                });
            }
            if let Some(spec) = processes.get_mut(name.as_str()) {
                spec.count = *count;
            }
        }
        let env = match &plan.env {
            Some(env) => env.clone(),
            None => Release::env(&self.home, from)?,
        };
        let release = Release {
            id: current.next_release_id(),
            created: crate::timestamp::rfc3339(SystemTime::now()),
            description: plan.description.clone(),
            processes,
            release_command_ran: false,
        };
        // The release's files are flushed while its instances start up.
        let _deferred = crate::durability::DeferredSyncs::open();
        release.save(&self.home, &env)?;
        saved(steps, &release);
        self.roll_out_locked(lock, supervisor, &release, &plan.processes, plan.how, steps)
            .inspect_err(|_| {
                // Never current: nothing may keep it.
                let _ = sarge_venv::remove_tree(&self.home.release_dir(release.id));
            })
    }
}
