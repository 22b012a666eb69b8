//! The rollout engine: takes the current state to a release, process by
//! process, with no failed request. Every change (a deploy, a rollback, a
//! config change, a restart, a scale) is a release rolled out here, in
//! the steps the user waits on:
//!
//! 1. **start** the new instances of each process being rolled out, all
//!    at once (as many as the release's count; for a [`Rollout::Resize`],
//!    only those the count adds);
//! 2. **ready**: wait until each answers (its port, its health check);
//! 3. **switch** haproxy's stable addresses: every new instance joins its
//!    backend, then every instance being retired leaves it, through the
//!    live worker; then **verify** the end state. At no instant does a
//!    stable address have fewer ready instances than the count;
//! 4. **commit**: `current.json` names the release and its instances;
//! 5. **drain** the retired instances' open requests, then **stop** them.
//!
//! A failure before the commit puts every route back and removes the new
//! instances: each process stays wholly on the release before.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::time::{Duration, Instant, SystemTime};

use camino::Utf8Path;
use sarge_haproxy::Server;
use sarge_supervisor::{Client, ProcessState, Program};

use crate::error::{Error, Result};
use crate::launcher::{launcher_path, write_launcher};
use crate::logs::log_tail;
use crate::probe::{accepts_connections, http_status};
use crate::progress::{Event, Steps};
use crate::release::{Release, ReleaseId};
use crate::routing::{Probe, Router, Routing};
use crate::state::{CurrentInstance, CurrentInstances, InstanceRecord};
use crate::timestamp::rfc3339;
use crate::Sarge;

/// What a rollout did, per process rolled out.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RolledOut {
    /// The release now current.
    pub release: ReleaseId,
    /// The new instances, with the stable address each serves (if routed).
    pub instances: Vec<(InstanceRecord, Option<String>)>,
    /// The instances retired, now stopped and removed.
    pub replaced: Vec<String>,
}

/// What a rollout does with a process's running instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rollout {
    /// New instances, as many as the count, replace every running one: a
    /// deploy, a rollback, a config change, a restart.
    Replace,
    /// The running instances stay, up to the count; new ones make up the
    /// rest, or the newest are retired: a scale.
    Resize,
}

/// One process during a rollout.
struct ProcessRollout {
    process: String,
    /// Whether it has a stable address.
    routed: bool,
    /// Running instances it keeps.
    kept: Vec<CurrentInstance>,
    /// Running instances it stops once the new ones serve.
    retired: Vec<CurrentInstance>,
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
    live: Option<crate::routing::LiveWorker>,
}

impl StartedRollout<'_> {
    /// The new instances, per process.
    pub(crate) fn started(&self) -> BTreeMap<String, Vec<String>> {
        self.plans
            .iter()
            .map(|plan| {
                let ids = plan.started.iter().map(|record| record.id.clone());
                (plan.process.clone(), ids.collect())
            })
            .collect()
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
        prepared: &crate::state::PreparedRelease,
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
                started,
            });
        }
        Ok(StartedRollout {
            plans,
            pending,
            live: None,
        })
    }

    /// Rolls `release` out for `processes` (all of them in the release when
    /// empty); the others are left as they are. The home lock must be held
    /// and leftovers cleaned.
    pub(crate) fn roll_out(
        &self,
        supervisor: &Client,
        release: &Release,
        processes: &[String],
        how: Rollout,
        steps: &mut Steps<'_>,
    ) -> Result<RolledOut> {
        let started = self.start_rollout(supervisor, release, processes, how, true, steps)?;
        self.finish_rollout(supervisor, release, started, steps)
    }

    /// Steps 1 and 2 of a rollout: the new instances are started and
    /// ready, nothing is switched. With `with_haproxy`, haproxy is made
    /// ready for the switch meanwhile (started or reloaded for a new
    /// stable address). Dropped without [`Sarge::finish_rollout`], the new
    /// instances are removed.
    pub(crate) fn start_rollout<'a>(
        &'a self,
        supervisor: &'a Client,
        release: &Release,
        processes: &[String],
        how: Rollout,
        with_haproxy: bool,
        steps: &mut Steps<'_>,
    ) -> Result<StartedRollout<'a>> {
        let current = CurrentInstances::load(&self.home)?;
        let env = Release::env(&self.home, release.id)?;
        let router = Router::new(&self.home, &self.config, supervisor);
        let rolled: Vec<&String> = if processes.is_empty() {
            release.processes.keys().collect()
        } else {
            processes.iter().collect()
        };

        // What each process keeps, retires and starts; nothing starts
        // unless every new instance has a port.
        let mut plans = Vec::new();
        let mut to_start = Vec::new();
        for process in &rolled {
            let spec =
                release
                    .processes
                    .get(*process)
                    .ok_or_else(|| Error::ProcessNotInRelease {
                        process: (*process).clone(),
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
            to_start.push((count - kept.len(), spec));
            plans.push(ProcessRollout {
                process: (*process).clone(),
                routed: self.config.port_map.contains_key(process.as_str()),
                kept,
                retired,
                started: Vec::new(),
            });
        }
        if plans.iter().any(|plan| plan.routed) {
            router.haproxy_bin()?;
        }
        let needed: usize = to_start.iter().map(|(count, _)| count).sum();
        self.check_port_capacity(needed, &plans)?;

        // 1. Start every new instance; they start up side by side, from one
        // re-read of supervisord's config.
        let mut pending = PendingInstances {
            sarge: self,
            supervisor,
            ids: Vec::new(),
        };
        for (plan, (count, spec)) in plans.iter_mut().zip(&to_start) {
            for _ in 0..*count {
                let port = self.allocate_port()?;
                let id = self.claim_instance_dir(&plan.process)?;
                pending.ids.push(id.clone());
                let record = InstanceRecord {
                    id: id.clone(),
                    process: plan.process.clone(),
                    port,
                    created: rfc3339(SystemTime::now()),
                    command: spec.command.clone(),
                    venv: spec.venv.clone(),
                    release: Some(release.id),
                };
                record.save(&self.home)?;
                let mut instance_env = env.clone();
                instance_env.insert("PORT".to_owned(), port.to_string());
                // Which instance this is, as Heroku's DYNO says: also how
                // `bin/supervisord` names what a killed supervisord left.
                instance_env.insert(INSTANCE_VARIABLE.to_owned(), id.clone());
                let venv_bin = spec
                    .venv
                    .as_ref()
                    .map(|venv| self.home.venvs_dir().join(venv).join("bin"));
                let app_dir = Release::app_dir(&self.home, spec);
                write_launcher(
                    &self.home.instance_dir(&id),
                    &app_dir,
                    &instance_env,
                    venv_bin.as_deref(),
                    &spec.command,
                )?;
                self.write_program(&id, &app_dir)?;
                plan.started.push(record);
            }
        }
        let new_ids: Vec<&str> = plans
            .iter()
            .flat_map(|plan| plan.started.iter().map(|record| record.id.as_str()))
            .collect();
        if !new_ids.is_empty() {
            supervisor.reload_config()?;
            for plan in &plans {
                for record in &plan.started {
                    supervisor.add_process_group(&record.id)?;
                    supervisor.start_process(&record.id, false)?;
                    steps.report(Event::Started { instance: record });
                }
            }
        }
        // Written while the new instances start up, off the critical path.
        // Which instances serve this release, for `sarge logs --release`
        // once they are gone; kept with the release, pruned with it.
        let mut served = crate::release::ServedBy::of(&current);
        for plan in &plans {
            let ids = plan.kept.iter().map(|instance| instance.id.clone());
            let ids = ids.chain(plan.started.iter().map(|record| record.id.clone()));
            served.processes.insert(plan.process.clone(), ids.collect());
        }
        served.save(&self.home, release.id)?;

        // haproxy starts, or reloads for a new stable address, while the
        // apps start; it serves the committed routes meanwhile, so the
        // running instances are unaffected.
        let live = if with_haproxy && plans.iter().any(|plan| plan.routed) {
            let touched: Vec<&str> = plans.iter().map(|plan| plan.process.as_str()).collect();
            Some(router.ensure(&Router::committed(&self.home, &current), Some(&touched))?)
        } else {
            None
        };

        // 2. Ready.
        for plan in &plans {
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

        Ok(StartedRollout {
            plans,
            pending,
            live,
        })
    }

    /// Steps 3 to 5 of a rollout started by [`Sarge::start_rollout`]:
    /// switch, verify, commit, drain and stop what was retired.
    pub(crate) fn finish_rollout(
        &self,
        supervisor: &Client,
        release: &Release,
        started: StartedRollout<'_>,
        steps: &mut Steps<'_>,
    ) -> Result<RolledOut> {
        let StartedRollout {
            plans,
            mut pending,
            live,
        } = started;
        let mut current = CurrentInstances::load(&self.home)?;
        let router = Router::new(&self.home, &self.config, supervisor);
        let routing = Router::committed(&self.home, &current);
        let live = match live {
            Some(live) => Some(live),
            None if plans.iter().any(|plan| plan.routed) => {
                let touched: Vec<&str> = plans.iter().map(|plan| plan.process.as_str()).collect();
                Some(router.ensure(&routing, Some(&touched))?)
            }
            None => None,
        };

        // 3. Switch, then check the end state; anything amiss puts every
        // committed route back while the old instances still run.
        if let Some(live) = &live {
            let changes: Routing = plans
                .iter()
                .filter(|plan| plan.routed)
                .map(|plan| (plan.process.clone(), plan.servers(&self.home)))
                .collect();
            router.switch(live, &routing, &changes)?;
            for plan in plans.iter().filter(|plan| plan.routed) {
                let health = self.config.healthcheck.get(plan.process.as_str());
                let probe = Probe {
                    path: health.map_or("/", |health| health.path.as_str()),
                    host: health.map_or("localhost", |health| health.host.as_str()),
                };
                let confirmed = plan
                    .started
                    .iter()
                    .try_for_each(|record| self.confirm_alive(supervisor, record).map(drop))
                    .and_then(|()| {
                        router.verify(live, &plan.process, &changes[&plan.process], &probe)
                    });
                if let Err(error) = confirmed {
                    router.restore(live, &routing);
                    return Err(error);
                }
                if let Some(address) = self.config.port_map.get(plan.process.as_str()) {
                    for record in &plan.started {
                        steps.report(Event::Switched {
                            address: &address.to_string(),
                            instance: record,
                        });
                    }
                }
            }
        }

        // 4. The commit point: from here on the new instances are current.
        let mut ready_pids = BTreeMap::new();
        for record in plans.iter().flat_map(|plan| &plan.started) {
            ready_pids.insert(record.id.clone(), self.confirm_alive(supervisor, record)?);
        }
        for plan in &plans {
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
        if let Err(error) = current.save(&self.home) {
            // The state still names the old instances: they get their
            // traffic back before the new ones are removed.
            if let Some(live) = &live {
                router.restore(live, &routing);
            }
            return Err(error);
        }
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

        // 5. Drain and stop what was retired. The rollout has succeeded:
        // a failed cleanup is a note, and the next command finishes it.
        let mut replaced = Vec::new();
        for plan in &plans {
            for old in &plan.retired {
                if let (true, Some(live)) = (old.routed, &live) {
                    let waited =
                        router.drain(live, &plan.process, &old.id, self.config.drain_timeout);
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
                if let (true, Some(live)) = (old.routed, &live) {
                    // Its idle connections closed with it; a server haproxy
                    // still holds on to goes at the next rollout.
                    router.forget(live, &plan.process, &old.id);
                }
                replaced.push(old.id.clone());
            }
        }
        if let Some(prepared) = superseded {
            if let Err(error) = self.remove_prepared(supervisor, &prepared) {
                steps.warn(format!(
                    "could not remove release {} prepared before this one ({error}); the next sarge command will",
                    prepared.release
                ));
            }
        }
        if let Err(error) = self.prune_releases(&mut current) {
            steps.warn(format!("could not prune old releases ({error})"));
        }
        if let Err(error) = self.collect_venvs(&current) {
            steps.warn(format!("could not remove unused virtualenvs ({error})"));
        }
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

    /// Fails, naming the processes, if `port_range` has fewer than
    /// `needed` ports no instance holds.
    fn check_port_capacity(&self, needed: usize, plans: &[ProcessRollout]) -> Result<()> {
        if needed == 0 {
            return Ok(());
        }
        let used = self.used_ports()?;
        let range = self.config.port_range.as_range();
        let free = range.filter(|port| !used.contains(port)).count();
        if free >= needed {
            return Ok(());
        }
        Err(Error::PortsTooFew {
            needed,
            free,
            first: self.config.port_range.first,
            last: self.config.port_range.last,
            processes: plans
                .iter()
                .map(|plan| plan.process.clone())
                .collect::<Vec<_>>()
                .join(", "),
            config: self.home.config_file(),
        })
    }

    /// Makes a new release with `from`'s processes and `env`, and rolls it
    /// out for `processes` (all when empty): a rollback, a config change, a
    /// restart. `saved` runs once the release is recorded, before its
    /// instances start. A release that does not become current is removed.
    /// The lock must be held.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn roll_out_copy(
        &self,
        supervisor: &Client,
        from: &Release,
        env: &BTreeMap<String, String>,
        description: &str,
        processes: &[String],
        how: Rollout,
        steps: &mut Steps<'_>,
        saved: impl FnOnce(&mut Steps<'_>),
    ) -> Result<RolledOut> {
        let release = Release {
            id: CurrentInstances::load(&self.home)?.next_release_id(),
            created: rfc3339(SystemTime::now()),
            description: description.to_owned(),
            processes: from.processes.clone(),
            release_command_ran: false,
        };
        self.roll_out_release(supervisor, release, env, processes, how, steps, saved)
    }

    /// Records `release` with `env` and rolls it out for `processes` (all
    /// when empty); `saved` runs once it is recorded. A release that does
    /// not become current is removed. The lock must be held.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn roll_out_release(
        &self,
        supervisor: &Client,
        release: Release,
        env: &BTreeMap<String, String>,
        processes: &[String],
        how: Rollout,
        steps: &mut Steps<'_>,
        saved: impl FnOnce(&mut Steps<'_>),
    ) -> Result<RolledOut> {
        release.save(&self.home, env)?;
        saved(steps);
        self.roll_out(supervisor, &release, processes, how, steps)
            .inspect_err(|_| {
                let _ = sarge_venv::remove_tree(&self.home.release_dir(release.id));
            })
    }

    /// A new, empty instance folder; created here so two rollouts never
    /// share an id.
    fn claim_instance_dir(&self, process: &str) -> Result<String> {
        crate::privacy::create_private_dir(&self.home.instances_dir())?;
        loop {
            let id = format!("{process}-{}", random_hex());
            match std::fs::DirBuilder::new()
                .mode(crate::privacy::PRIVATE_DIR)
                .create(self.home.instance_dir(&id))
            {
                Ok(()) => return Ok(id),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Keeps the newest `keep_releases` releases of the history (the
    /// current one always) and the folders whose code a kept release
    /// runs; removes the rest.
    pub(crate) fn prune_releases(&self, current: &mut CurrentInstances) -> Result<()> {
        let keep = usize::try_from(self.config.keep_releases.max(1)).unwrap_or(usize::MAX);
        if current.history.len() > keep {
            let cut = current.history.len() - keep;
            current.history.drain(..cut);
            current.save(&self.home)?;
        }
        self.remove_unkept_releases(current).map(drop)
    }

    /// Removes every release folder neither in the history nor holding
    /// code a release of the history runs (abandoned deploys, pruned
    /// releases), except uploads still being read.
    pub(crate) fn remove_unkept_releases(&self, current: &CurrentInstances) -> Result<Vec<String>> {
        let mut kept: BTreeSet<ReleaseId> = current.history.iter().copied().collect();
        kept.extend(current.prepared.as_ref().map(|prepared| prepared.release));
        for id in kept.clone().iter() {
            if let Ok(release) = Release::load(&self.home, *id) {
                kept.extend(release.processes.values().map(|spec| spec.code));
            }
        }
        let mut removed = Vec::new();
        let dir = self.home.releases_dir();
        if !dir.is_dir() {
            return Ok(removed);
        }
        for entry in fs_err::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let path = dir.join(&name);
            let keep = match name.parse::<ReleaseId>() {
                Ok(id) => kept.contains(&id),
                // An upload another deploy is still reading.
                Err(_) => crate::lock::UploadMark::is_held(&path),
            };
            if !keep {
                sarge_venv::remove_tree(&path)?;
                if let Ok(id) = name.parse::<ReleaseId>() {
                    if !current.history.contains(&id) {
                        let _ = fs_err::remove_file(self.home.release_output(id));
                    }
                }
                removed.push(name);
            }
        }
        Ok(removed)
    }
}

/// The environment variable that holds an instance's id.
pub const INSTANCE_VARIABLE: &str = "SARGE_INSTANCE";

/// Six random hex digits, for instance and upload folder names.
pub(crate) fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS: a cheap, dependency-free source
    // of unique names.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0),
    );
    format!("{:06x}", hasher.finish() & 0xff_ffff)
}

/// Removes the instances of a rollout that never became current, unless
/// the rollout committed (it then empties the list).
struct PendingInstances<'a> {
    sarge: &'a Sarge,
    supervisor: &'a Client,
    ids: Vec<String>,
}

impl Drop for PendingInstances<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.sarge.remove_instance(self.supervisor, id);
        }
    }
}

impl Sarge {
    /// Writes the supervisord program file of instance `id`; supervisord
    /// takes it at its next `reloadConfig`.
    fn write_program(&self, id: &str, app_dir: &Utf8Path) -> Result<()> {
        let program = Program {
            name: id.to_owned(),
            command: vec![launcher_path(&self.home.instance_dir(id)).to_string()],
            directory: app_dir.to_owned(),
            log_file: self.home.program_log(id),
            autostart: true,
            autorestart: true,
            start_secs: 1,
            start_retries: 3,
            stop_wait_secs: 10,
            stop_as_group: true,
            log_max_bytes: self.config.log_max_bytes,
            log_backups: self.config.log_backups,
        };
        crate::state::write_atomic(
            &self.home.program_file(id),
            program.render()?.as_bytes(),
            crate::privacy::PRIVATE_FILE,
        )
    }

    /// Polls until the instance listens on its port (and answers its health
    /// check, if one is set), or fails as soon as its process exits.
    pub(crate) fn wait_ready(
        &self,
        supervisor: &sarge_supervisor::Client,
        record: &InstanceRecord,
        needs_port: bool,
    ) -> Result<()> {
        let health = self.config.healthcheck.get(record.process.as_str());
        let limit = health
            .and_then(|health| health.timeout)
            .unwrap_or(self.config.ready_timeout);
        let address = SocketAddr::from(([127, 0, 0, 1], record.port));
        let log = self.home.program_log(&record.id);
        let started = Instant::now();
        let mut waiting_for = if needs_port {
            format!("waiting for it to listen on port {}", record.port)
        } else {
            "waiting for supervisord to report it running".to_owned()
        };
        let mut polls: u32 = 0;
        loop {
            // The port is polled every couple of milliseconds (a connect is
            // cheap); supervisord is asked how the process is doing once
            // the port opens, and every 16th poll meanwhile (every poll
            // once they slow down), so a crash still fails the wait at once.
            let listening = needs_port && accepts_connections(address);
            let slow = started.elapsed() >= Duration::from_secs(2);
            if !needs_port || listening || slow || polls.is_multiple_of(16) {
                let info = supervisor.process_info(&record.id)?;
                match info.state {
                    ProcessState::Exited | ProcessState::Fatal | ProcessState::Backoff => {
                        return Err(self.exited(record, &info));
                    }
                    ProcessState::Running if !needs_port => return Ok(()),
                    ProcessState::Running | ProcessState::Starting if listening => match health {
                        None => return Ok(()),
                        Some(health) => match http_status(address, &health.host, &health.path) {
                            // Only 2xx: a redirect is often to a login page
                            // of an app that is not working.
                            Ok(status) if (200..300).contains(&status) => return Ok(()),
                            Ok(status) => {
                                waiting_for = format!("GET {} answered {status}", health.path)
                            }
                            Err(error) => {
                                waiting_for = format!("GET {} failed: {error}", health.path)
                            }
                        },
                    },
                    _ => {}
                }
            }
            polls = polls.wrapping_add(1);
            if started.elapsed() >= limit {
                return Err(Error::InstanceNotReady {
                    id: record.id.clone(),
                    seconds: limit.as_secs_f64(),
                    what: waiting_for,
                    log_tail: log_tail(&log),
                    log,
                });
            }
            // Poll fast at first: most apps are up within a few hundred ms.
            let pause = if !slow {
                Duration::from_micros(2500)
            } else {
                Duration::from_millis(50)
            };
            std::thread::sleep(pause);
        }
    }

    /// Fails if the instance's process is no longer starting or running;
    /// its pid if it is.
    pub(crate) fn confirm_alive(
        &self,
        supervisor: &sarge_supervisor::Client,
        record: &InstanceRecord,
    ) -> Result<u32> {
        let info = supervisor.process_info(&record.id)?;
        if matches!(info.state, ProcessState::Running | ProcessState::Starting) {
            return Ok(info.pid);
        }
        Err(self.exited(record, &info))
    }

    /// The error for an instance whose process is no longer up.
    fn exited(&self, record: &InstanceRecord, info: &sarge_supervisor::ProcessInfo) -> Error {
        let log = self.home.program_log(&record.id);
        Error::InstanceExited {
            id: record.id.clone(),
            state: format!(
                "{}: {}",
                info.state.name().to_ascii_lowercase(),
                info.description
            ),
            log_tail: log_tail(&log),
            log,
        }
    }

    /// The ports every instance folder's record holds.
    fn used_ports(&self) -> Result<BTreeSet<u16>> {
        Ok(self
            .instance_ids()?
            .iter()
            .filter_map(|id| InstanceRecord::load(&self.home, id).ok())
            .map(|record| record.port)
            .collect())
    }

    pub(crate) fn allocate_port(&self) -> Result<u16> {
        let used = self.used_ports()?;
        let allocator = sarge_ports::PortAllocator::new(
            self.home.ports_file(),
            self.config.port_range.as_range(),
        );
        let last = allocator.last_allocated()?;
        sarge_ports::next_free_port(self.config.port_range.as_range(), last, |port| {
            used.contains(&port) || !sarge_ports::port_is_bindable(port)
        })
        .ok_or(Error::Ports(sarge_ports::Error::Exhausted {
            first: self.config.port_range.first,
            last: self.config.port_range.last,
        }))
    }

    pub(crate) fn record_port(&self, port: u16) -> Result<()> {
        let allocator = sarge_ports::PortAllocator::new(
            self.home.ports_file(),
            self.config.port_range.as_range(),
        );
        allocator.record(port)?;
        Ok(())
    }
}
