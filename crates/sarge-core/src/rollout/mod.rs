//! The rollout engine: takes the current state to a release, process by
//! process, with no failed request. Every change (a deploy, a rollback, a
//! config change, a restart, a scale) is a release rolled out here, in
//! the steps the user waits on, each its own method:
//!
//! 1. [`plan`](Sarge::plan_rollout): what each process keeps, retires and
//!    starts, refused whole if `port_range` cannot hold the new instances;
//! 2. [`start`](Sarge::start_instances) the new instances of each process
//!    being rolled out, all at once (as many as the release's count; for a
//!    [`Rollout::Resize`], only those the count adds), while haproxy is
//!    [made ready](Sarge::prepare_haproxy) for the switch;
//! 3. [`ready`](Sarge::wait_all_ready): wait until each answers (its port,
//!    its health check);
//! 4. [`switch`](Sarge::switch_and_verify) haproxy's stable addresses:
//!    every new instance joins its backend, then every instance being
//!    retired leaves it, through the live worker; then **verify** the end
//!    state. At no instant does a stable address have fewer ready
//!    instances than the count;
//! 5. [`commit`](Sarge::commit_rollout): `current.json` names the release
//!    and its instances;
//! 6. [`drain`](Sarge::retire_instances) the retired instances' open
//!    requests, then **stop** them, and [tidy](Sarge::tidy_after_rollout)
//!    (prune releases beyond `keep_releases`, unused virtualenvs): in the
//!    command, or, with [`Retirement::Detached`], in a process of its own
//!    that holds the home lock, so that the command returns as soon as the
//!    new release serves.
//!
//! A failure before the commit puts every route back and removes the new
//! instances: each process stays wholly on the release before.
//!
//! Embedders describe a change with a [`RolloutPlan`] and hand it to
//! [`Sarge::roll_out`].

mod instance;
mod plan;
mod prune;
mod retire;

use std::collections::BTreeMap;

use sarge_haproxy::Server;
use sarge_supervisor::Client;

use crate::durability::{self, DeferredSyncs, Syncing};
use crate::error::{Error, Result};
use crate::lock::HomeLock;
use crate::progress::{Event, Steps};
use crate::release::{Release, ReleaseId};
use crate::routing::{LiveWorker, Probe, Router, Routing};
use crate::state::{CurrentInstance, CurrentInstances, InstanceRecord, PreparedRelease};
use crate::{ProcessName, Sarge};

pub(crate) use instance::random_hex;
use instance::PendingInstances;
pub use instance::INSTANCE_VARIABLE;
pub use plan::RolloutPlan;
pub use retire::Retirement;
use retire::Retiring;

/// What a rollout did, per process rolled out.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RolledOut {
    /// The release now current.
    pub release: ReleaseId,
    /// The new instances, with the stable address each serves (if routed).
    pub instances: Vec<(InstanceRecord, Option<String>)>,
    /// The instances retired: stopped and removed, or being retired by
    /// the process [`Retirement::Detached`] started.
    pub replaced: Vec<String>,
}

/// What a rollout does with a process's running instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Rollout {
    /// New instances, as many as the count, replace every running one: a
    /// deploy, a rollback, a config change, a restart.
    #[default]
    Replace,
    /// The running instances stay, up to the count; new ones make up the
    /// rest, or the newest are retired: a scale.
    Resize,
}

/// One process during a rollout.
struct ProcessRollout {
    process: ProcessName,
    /// Whether it has a stable address.
    routed: bool,
    /// Running instances it keeps.
    kept: Vec<CurrentInstance>,
    /// Running instances it stops once the new ones serve.
    retired: Vec<CurrentInstance>,
    /// How many new instances it starts.
    to_start: usize,
    /// Its new instances, started by this rollout.
    started: Vec<InstanceRecord>,
}

impl ProcessRollout {
    /// The servers its stable address has once rolled out.
    fn servers(&self, home: &crate::Home) -> Vec<Server> {
        let kept = self
            .kept
            .iter()
            .filter_map(|instance| InstanceRecord::load(home, &instance.id).ok());
        kept.chain(self.started.iter().cloned())
            .map(|record| Server::new(record.id, record.port))
            .collect()
    }
}

/// A rollout whose new instances are started and ready, and not yet
/// switched to; see [`Sarge::start_rollout`].
pub(crate) struct StartedRollout<'a> {
    plans: Vec<ProcessRollout>,
    /// Removes the new instances unless the rollout commits.
    pending: PendingInstances<'a>,
    live: Option<LiveWorker>,
    /// The files written to start the new instances, flushing while they
    /// start up; the scope that deferred their flush.
    syncing: Option<(Syncing, DeferredSyncs)>,
}

impl StartedRollout<'_> {
    /// The new instances, per process.
    pub(crate) fn started(&self) -> BTreeMap<ProcessName, Vec<String>> {
        self.plans
            .iter()
            .map(|plan| {
                let ids = plan.started.iter().map(|record| record.id.clone());
                (plan.process.clone(), ids.collect())
            })
            .collect()
    }

    /// Returns once every file written to start the new instances is on
    /// disk: before anything that names them is committed.
    pub(crate) fn make_durable(&mut self) -> Result<()> {
        match self.syncing.take() {
            Some((syncing, _scope)) => syncing.wait(),
            None => Ok(()),
        }
    }

    /// Keeps the new instances: they outlive this value (a prepared
    /// release), and whoever takes them over removes them on failure.
    pub(crate) fn keep_instances(mut self) {
        self.pending.ids.clear();
    }
}

impl Sarge {
    /// Takes over the instances of `prepared` (started and found ready by
    /// an earlier command) as a started rollout replacing the running
    /// instances of its processes. An instance no longer up fails here.
    pub(crate) fn resume_rollout<'a>(
        &'a self,
        supervisor: &'a Client,
        prepared: &PreparedRelease,
    ) -> Result<StartedRollout<'a>> {
        let current = CurrentInstances::load(&self.home)?;
        let pending = PendingInstances {
            sarge: self,
            supervisor,
            ids: prepared.instance_ids().map(str::to_owned).collect(),
        };
        let mut plans = Vec::new();
        for (process, ids) in &prepared.instances {
            let mut started = Vec::new();
            for id in ids {
                let record = InstanceRecord::load(&self.home, id)?;
                self.confirm_alive(supervisor, &record)?;
                started.push(record);
            }
            plans.push(ProcessRollout {
                process: process.clone(),
                routed: self.config.port_map.contains_key(process.as_str()),
                kept: Vec::new(),
                retired: current.of(process).to_vec(),
                to_start: 0,
                started,
            });
        }
        Ok(StartedRollout {
            plans,
            pending,
            live: None,
            syncing: None,
        })
    }

    /// Rolls `release` out for `processes` (all of them in the release when
    /// empty); the others are left as they are. The home lock must be held
    /// and leftovers cleaned.
    pub(crate) fn roll_out_locked(
        &self,
        lock: &HomeLock,
        supervisor: &Client,
        release: &Release,
        processes: &[ProcessName],
        how: Rollout,
        steps: &mut Steps<'_>,
    ) -> Result<RolledOut> {
        let started = self.start_rollout(supervisor, release, processes, how, true, steps)?;
        self.finish_rollout(lock, supervisor, release, started, steps)
    }

    /// Steps 1 to 3 of a rollout: the new instances are started and
    /// ready, nothing is switched. With `with_haproxy`, haproxy is made
    /// ready for the switch meanwhile (started or reloaded for a new
    /// stable address). Dropped without [`Sarge::finish_rollout`], the new
    /// instances are removed.
    pub(crate) fn start_rollout<'a>(
        &'a self,
        supervisor: &'a Client,
        release: &Release,
        processes: &[ProcessName],
        how: Rollout,
        with_haproxy: bool,
        steps: &mut Steps<'_>,
    ) -> Result<StartedRollout<'a>> {
        let current = CurrentInstances::load(&self.home)?;
        let mut plans = self.plan_rollout(supervisor, &current, release, processes, how)?;
        let mut pending = PendingInstances {
            sarge: self,
            supervisor,
            ids: Vec::new(),
        };
        let deferred = DeferredSyncs::open();
        self.start_instances(supervisor, release, &mut plans, &mut pending, steps)?;
        let syncing = durability::sync_in_background();
        // Written while the new instances start up, off the critical path.
        self.record_served_by(&current, release, &plans)?;
        let live = if with_haproxy {
            self.prepare_haproxy(supervisor, &current, &plans)?
        } else {
            None
        };
        self.wait_all_ready(supervisor, &plans, steps)?;
        Ok(StartedRollout {
            plans,
            pending,
            live,
            syncing: Some((syncing, deferred)),
        })
    }

    /// Steps 4 to 6 of a rollout started by [`Sarge::start_rollout`]:
    /// switch, verify, commit, drain and stop what was retired, tidy.
    pub(crate) fn finish_rollout(
        &self,
        lock: &HomeLock,
        supervisor: &Client,
        release: &Release,
        mut started: StartedRollout<'_>,
        steps: &mut Steps<'_>,
    ) -> Result<RolledOut> {
        started.make_durable()?;
        let StartedRollout {
            plans,
            mut pending,
            live,
            syncing: _,
        } = started;
        let mut current = CurrentInstances::load(&self.home)?;
        let router = Router::new(&self.home, &self.config, supervisor);
        let routing = Router::committed(&self.home, &current);
        let live = match live {
            Some(live) => Some(live),
            None => self.prepare_haproxy(supervisor, &current, &plans)?,
        };
        let ready_pids = match &live {
            Some(live) => {
                self.switch_and_verify(supervisor, &router, live, &routing, &plans, steps)?
            }
            None => BTreeMap::new(),
        };
        let superseded = self.commit_rollout(
            supervisor,
            &router,
            live.as_ref(),
            &routing,
            &mut current,
            release,
            &plans,
            ready_pids,
        )?;
        pending.ids.clear();
        steps.report(Event::Committed {
            release: release.id,
        });
        if let Some(last) = plans.iter().flat_map(|plan| &plan.started).last() {
            // Only a hint for where the next allocation starts.
            if let Err(error) = self.record_port(last.port) {
                steps.warn(format!(
                    "could not record port {} as the last one used ({error})",
                    last.port
                ));
            }
        }
        self.remove_superseded(supervisor, superseded, steps);
        let retiring = Retiring::of(&plans);
        let replaced = match self.detach_retirement(lock, &retiring, steps) {
            Some(handed_over) => handed_over,
            None => {
                let replaced =
                    self.retire_instances(supervisor, &router, live.as_ref(), &retiring, steps);
                self.tidy_after_rollout(&mut current, steps);
                replaced
            }
        };
        Ok(RolledOut {
            release: release.id,
            instances: plans
                .into_iter()
                .flat_map(|plan| plan.started)
                .map(|record| {
                    let address = self
                        .config
                        .port_map
                        .get(record.process.as_str())
                        .map(ToString::to_string);
                    (record, address)
                })
                .collect(),
            replaced,
        })
    }

    /// Step 1: what each process of `processes` (all in the release when
    /// empty) keeps, retires and starts; an error, before anything
    /// starts, if a process is not in the release or `port_range` cannot
    /// hold the new instances.
    fn plan_rollout(
        &self,
        supervisor: &Client,
        current: &CurrentInstances,
        release: &Release,
        processes: &[ProcessName],
        how: Rollout,
    ) -> Result<Vec<ProcessRollout>> {
        let rolled: Vec<&ProcessName> = if processes.is_empty() {
            release.processes.keys().collect()
        } else {
            processes.iter().collect()
        };
        let mut plans = Vec::new();
        for process in rolled {
            let spec =
                release
                    .processes
                    .get(process)
                    .ok_or_else(|| Error::ProcessNotInRelease {
                        process: process.to_string(),
                        release: release.id,
                    })?;
            let running = current.of(process).to_vec();
            let count = usize::try_from(spec.count).unwrap_or(usize::MAX);
            let (kept, retired) = match how {
                Rollout::Replace => (Vec::new(), running),
                Rollout::Resize => {
                    let split = count.min(running.len());
                    (running[..split].to_vec(), running[split..].to_vec())
                }
            };
            plans.push(ProcessRollout {
                process: process.clone(),
                routed: self.config.port_map.contains_key(process.as_str()),
                to_start: count - kept.len(),
                kept,
                retired,
                started: Vec::new(),
            });
        }
        if plans.iter().any(|plan| plan.routed) {
            Router::new(&self.home, &self.config, supervisor).haproxy_bin()?;
        }
        self.check_port_capacity(&plans)?;
        Ok(plans)
    }

    /// Step 2: starts every new instance; they start up side by side,
    /// from one re-read of supervisord's config.
    fn start_instances(
        &self,
        supervisor: &Client,
        release: &Release,
        plans: &mut [ProcessRollout],
        pending: &mut PendingInstances<'_>,
        steps: &mut Steps<'_>,
    ) -> Result<()> {
        let env = Release::env(&self.home, release.id)?;
        for plan in plans.iter_mut() {
            let spec = &release.processes[plan.process.as_str()];
            for _ in 0..plan.to_start {
                let record =
                    self.create_instance(release.id, &plan.process, spec, &env, pending)?;
                plan.started.push(record);
            }
        }
        if plans.iter().all(|plan| plan.started.is_empty()) {
            return Ok(());
        }
        // Their programs autostart: loading them starts them, and both
        // take one round trip to supervisord.
        let ids: Vec<&str> = plans
            .iter()
            .flat_map(|plan| plan.started.iter().map(|record| record.id.as_str()))
            .collect();
        supervisor.reload_and_add(&ids)?;
        for record in plans.iter().flat_map(|plan| &plan.started) {
            steps.report(Event::Started { instance: record });
        }
        Ok(())
    }

    /// Which instances serve this release, for `sarge logs --release` once
    /// they are gone; kept with the release, pruned with it.
    fn record_served_by(
        &self,
        current: &CurrentInstances,
        release: &Release,
        plans: &[ProcessRollout],
    ) -> Result<()> {
        let mut served = crate::release::ServedBy::of(current);
        for plan in plans {
            let ids = plan.kept.iter().map(|instance| instance.id.clone());
            let ids = ids.chain(plan.started.iter().map(|record| record.id.clone()));
            served.processes.insert(plan.process.clone(), ids.collect());
        }
        served.save(&self.home, release.id)
    }

    /// haproxy started, or reloaded for a new stable address, and its live
    /// worker found; `None` when no process rolled out is routed. Called
    /// while the apps start: haproxy serves the committed routes
    /// meanwhile, so the running instances are unaffected.
    fn prepare_haproxy(
        &self,
        supervisor: &Client,
        current: &CurrentInstances,
        plans: &[ProcessRollout],
    ) -> Result<Option<LiveWorker>> {
        if !plans.iter().any(|plan| plan.routed) {
            return Ok(None);
        }
        let router = Router::new(&self.home, &self.config, supervisor);
        let touched: Vec<&str> = plans.iter().map(|plan| plan.process.as_str()).collect();
        router
            .ensure(&Router::committed(&self.home, current), Some(&touched))
            .map(Some)
    }

    /// Step 3: waits until every new instance is ready.
    fn wait_all_ready(
        &self,
        supervisor: &Client,
        plans: &[ProcessRollout],
        steps: &mut Steps<'_>,
    ) -> Result<()> {
        for plan in plans {
            let health = self.config.healthcheck.get(plan.process.as_str());
            let needs_port = plan.routed || health.is_some();
            for record in &plan.started {
                self.wait_ready(supervisor, record, needs_port)?;
                steps.report(Event::Ready {
                    instance: record,
                    answers: needs_port,
                });
            }
        }
        Ok(())
    }

    /// Step 4: the stable addresses switch to the new instances, then the
    /// end state is checked through the live worker; anything amiss puts
    /// every committed route back while the old instances still run.
    fn switch_and_verify(
        &self,
        supervisor: &Client,
        router: &Router<'_>,
        live: &LiveWorker,
        routing: &Routing,
        plans: &[ProcessRollout],
        steps: &mut Steps<'_>,
    ) -> Result<BTreeMap<String, u32>> {
        let changes: Routing = plans
            .iter()
            .filter(|plan| plan.routed)
            .map(|plan| (plan.process.to_string(), plan.servers(&self.home)))
            .collect();
        let config = router.switch(live, routing, &changes)?;
        // The config file says the same as the live worker before the step
        // ends; its flush overlaps the checks.
        let path = self.home.haproxy_config();
        let written = std::thread::spawn(move || config.write(&path));
        let verified = self.verify_switch(supervisor, router, live, &changes, plans, steps);
        let written = match written.join() {
            Ok(result) => result.map_err(Error::from),
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (verified, written) {
            (Ok(pids), Ok(())) => Ok(pids),
            (Err(error), _) | (Ok(_), Err(error)) => {
                router.restore(live, routing);
                Err(error)
            }
        }
    }

    /// The checks of step 4: every new instance still up, and each stable
    /// address reaching its new instances through the live worker. Returns
    /// the pid each routed new instance was found running with.
    fn verify_switch(
        &self,
        supervisor: &Client,
        router: &Router<'_>,
        live: &LiveWorker,
        changes: &Routing,
        plans: &[ProcessRollout],
        steps: &mut Steps<'_>,
    ) -> Result<BTreeMap<String, u32>> {
        let mut pids = BTreeMap::new();
        for plan in plans.iter().filter(|plan| plan.routed) {
            let health = self.config.healthcheck.get(plan.process.as_str());
            let probe = Probe {
                path: health.map_or("/", |health| health.path.as_str()),
                host: health.map_or("localhost", |health| health.host.as_str()),
            };
            for record in &plan.started {
                pids.insert(record.id.clone(), self.confirm_alive(supervisor, record)?);
            }
            router.verify(live, &plan.process, &changes[plan.process.as_str()], &probe)?;
            if let Some(address) = self.config.port_map.get(plan.process.as_str()) {
                for record in &plan.started {
                    steps.report(Event::Switched {
                        address: &address.to_string(),
                        instance: record,
                    });
                }
            }
        }
        Ok(pids)
    }

    /// Step 5, the commit point: from here on the new instances are
    /// current. `ready_pids` holds the pids the switch found the routed new
    /// instances running with; the others are asked for now. If the state
    /// cannot be saved, the old instances get their traffic back before the
    /// new ones are removed. Returns a release prepared earlier that this
    /// commit supersedes.
    #[allow(clippy::too_many_arguments)]
    fn commit_rollout(
        &self,
        supervisor: &Client,
        router: &Router<'_>,
        live: Option<&LiveWorker>,
        routing: &Routing,
        current: &mut CurrentInstances,
        release: &Release,
        plans: &[ProcessRollout],
        mut ready_pids: BTreeMap<String, u32>,
    ) -> Result<Option<PreparedRelease>> {
        let restore = |error: Error| {
            if let Some(live) = live {
                router.restore(live, routing);
            }
            error
        };
        for record in plans.iter().flat_map(|plan| &plan.started) {
            if !ready_pids.contains_key(&record.id) {
                let pid = self.confirm_alive(supervisor, record).map_err(restore)?;
                ready_pids.insert(record.id.clone(), pid);
            }
        }
        for plan in plans {
            let started = plan.started.iter().map(|record| CurrentInstance {
                id: record.id.clone(),
                routed: plan.routed,
                ready_pid: ready_pids.get(&record.id).copied(),
            });
            current.processes.insert(
                plan.process.clone(),
                plan.kept.iter().cloned().chain(started).collect(),
            );
        }
        current.release = Some(release.id);
        // A prepared release is switched by this commit, or can no longer
        // be (it was prepared on top of the release this one replaces).
        let superseded = current
            .prepared
            .take()
            .filter(|prepared| prepared.release != release.id);
        current.history.retain(|id| *id != release.id);
        current.history.push(release.id);
        current.save(&self.home).map_err(restore)?;
        Ok(superseded)
    }
}
