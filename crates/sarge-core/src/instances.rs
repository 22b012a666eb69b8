//! Operations on existing instances: list, start, stop, destroy, run, and
//! the recovery every state-changing command does first.
//!
//! Reads (`list`, `resolve`, `run_command`) change nothing: they show what
//! `var/state/current.json` committed, whatever a killed command left
//! around it. Cleaning that up is [`Sarge::recover`], an explicit step
//! that every command which changes state runs under the lock first.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::process::Command;
use std::time::SystemTime;

use camino::Utf8PathBuf;

use sarge_supervisor::{Client, ProcessState};

use crate::error::{Error, Result};
use crate::launcher::launcher_path;
use crate::lock::{HomeLock, UploadMark};
use crate::progress::{Event, Progress, Steps};
use crate::routing::{Router, HAPROXY_PROGRAM};
use crate::state::{CurrentInstances, InstanceRecord};
use crate::Sarge;

/// How many removed instances keep their logs (each at most `log_max_bytes`
/// times 1 + `log_backups` rotated files: 50 MB x 6 by default, see
/// `sarge_config::Config`): enough to look into the last few releases or
/// failed deploys, and a bound on a home that deploys all day.
const KEPT_REMOVED_LOGS: usize = 5;

/// One current instance, as `sarge list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct InstanceStatus {
    /// Instance id.
    pub id: String,
    /// Process type.
    pub process: crate::ProcessName,
    /// Its own port (`$PORT`).
    pub port: u16,
    /// supervisord's state of its process (`running` too for a process
    /// supervisord still calls `starting` once sarge has seen it ready), or
    /// [`InstanceState::Missing`] if supervisord does not know it.
    pub state: InstanceState,
    /// When it was deployed, RFC 3339.
    pub created: String,
    /// The release it runs (none for an instance deployed before releases).
    pub release: Option<crate::ReleaseId>,
    /// Its process id, while it runs.
    pub pid: Option<u32>,
    /// Seconds since its process started, while it runs.
    pub uptime: Option<u64>,
    /// For a process with a stable address: whether haproxy's live worker
    /// routes it to this instance now (`None` if haproxy did not answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed: Option<bool>,
}

/// The state of an instance's process: supervisord's
/// [`ProcessState`], or [`InstanceState::Missing`] when supervisord does
/// not know the program at all. It serializes (`list --json`) and displays
/// as the lowercase name: `running`, `starting`, `missing`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum InstanceState {
    /// Stopped on request, or never started.
    Stopped,
    /// Started, not yet up for supervisord's `startsecs`, and not yet seen
    /// ready by sarge.
    Starting,
    /// Up.
    Running,
    /// Exited while starting; supervisord will retry.
    Backoff,
    /// Stop signal sent, waiting for exit.
    Stopping,
    /// Exited on its own after running.
    Exited,
    /// Could not be started; supervisord gave up.
    Fatal,
    /// supervisord reported a state sarge does not know.
    Unknown,
    /// supervisord has no such program (a supervisord restarted without
    /// its program files, or a program removed by hand).
    Missing,
}

impl InstanceState {
    /// The lowercase name, as `list` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Backoff => "backoff",
            Self::Stopping => "stopping",
            Self::Exited => "exited",
            Self::Fatal => "fatal",
            Self::Unknown => "unknown",
            Self::Missing => "missing",
        }
    }
}

impl From<ProcessState> for InstanceState {
    fn from(state: ProcessState) -> Self {
        match state {
            ProcessState::Stopped => Self::Stopped,
            ProcessState::Starting => Self::Starting,
            ProcessState::Running => Self::Running,
            ProcessState::Backoff => Self::Backoff,
            ProcessState::Stopping => Self::Stopping,
            ProcessState::Exited => Self::Exited,
            ProcessState::Fatal => Self::Fatal,
            ProcessState::Unknown => Self::Unknown,
        }
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that the CLI's table can align it with `{:<9}`.
        f.pad(self.as_str())
    }
}

impl Sarge {
    /// The current instances, one per deployed process, with supervisord's
    /// state of each. Reads only: what a failed or killed deploy left (an
    /// instance that never became current) is never shown, and stays on
    /// disk until the next command that changes state, or
    /// [`Sarge::recover`], removes it.
    pub fn list(&self) -> Result<Vec<InstanceStatus>> {
        let supervisor = self.supervisor_checked()?;
        let states = supervisor.all_process_info()?;
        let current = CurrentInstances::load(&self.home)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        // Asked of the worker haproxy's master names as live.
        let live = (!self.config.port_map.is_empty())
            .then(|| {
                let master = sarge_haproxy::MasterClient::new(self.home.haproxy_master_socket());
                let pid = master.processes().ok()?.current_worker()?;
                Some(master.worker(pid))
            })
            .flatten();
        let mut statuses = Vec::new();
        for (_, instance) in current.instances() {
            // A record that is gone (see `clean_leftovers`) has nothing to show.
            let Ok(record) = InstanceRecord::load(&self.home, &instance.id) else {
                continue;
            };
            let state = match states.iter().find(|info| info.name == record.id) {
                // supervisord says STARTING until `startsecs` has passed, but
                // sarge saw this very process answer before making it current.
                Some(info)
                    if info.state == ProcessState::Starting
                        && instance.ready_pid == Some(info.pid) =>
                {
                    InstanceState::Running
                }
                Some(info) => info.state.into(),
                None => InstanceState::Missing,
            };
            let info = states
                .iter()
                .find(|info| info.name == record.id)
                .filter(|info| {
                    matches!(info.state, ProcessState::Running | ProcessState::Starting)
                });
            let routed = match (
                instance.routed,
                self.config.port_map.contains_key(record.process.as_str()),
            ) {
                (true, true) => live.as_ref().and_then(|admin| {
                    let server = sarge_haproxy::Server::new(record.id.clone(), record.port);
                    admin.serves(&record.process, &server).ok()
                }),
                (false, true) => Some(false),
                _ => None,
            };
            statuses.push(InstanceStatus {
                id: record.id,
                process: record.process,
                port: record.port,
                state,
                created: record.created,
                release: record.release,
                pid: info.map(|info| info.pid),
                uptime: info.map(|info| now.saturating_sub(u64::try_from(info.start).unwrap_or(0))),
                routed,
            });
        }
        Ok(statuses)
    }

    /// Cleans up what a failed or killed command left, so that the home is
    /// exactly what `var/state/current.json` committed: haproxy routes
    /// back to the committed instances (a kill after the switch left it on
    /// a new one), then instance folders and supervisord programs that
    /// never became current, releases that were never rolled out, unused
    /// virtualenvs and the temp files of interrupted writes are removed.
    ///
    /// Every command that changes state ([`Sarge::deploy`],
    /// [`Sarge::rollback`], [`Sarge::destroy`], [`Sarge::start`],
    /// [`Sarge::stop`]) runs this first under the home's lock, so calling
    /// it yourself is only needed to clean up without changing anything
    /// else (`sarge recover`). It waits for a running command to finish,
    /// and leaves alone the upload a deploy is still reading. What cannot
    /// be removed (a folder owned by someone else) is reported to
    /// `progress` and tried again next time; it is not an error.
    pub fn recover(&self, progress: &mut dyn Progress) -> Result<()> {
        let mut steps = Steps::new(progress);
        let supervisor = self.supervisor_checked()?;
        let _lock = HomeLock::acquire(&self.home, &mut steps)?;
        self.clean_leftovers(&supervisor, &mut steps)
    }

    /// Starts the process of `target` (an instance id or a process name),
    /// after [`Sarge::recover`].
    pub fn start(&self, target: &str) -> Result<InstanceRecord> {
        let mut silent = crate::Silent;
        let mut steps = Steps::new(&mut silent);
        let _lock = HomeLock::acquire(&self.home, &mut steps)?;
        let supervisor = self.supervisor_checked()?;
        // Recover first, as every changing command does: a killed deploy may
        // have left the stable address on an instance that is not current.
        self.clean_leftovers(&supervisor, &mut steps)?;
        let record = self.resolve(target)?;
        supervisor.start_process(&record.id, true)?;
        Ok(record)
    }

    /// Stops the process of `target`; it stays deployed and can be started.
    /// Runs [`Sarge::recover`] first.
    pub fn stop(&self, target: &str) -> Result<InstanceRecord> {
        let mut silent = crate::Silent;
        let mut steps = Steps::new(&mut silent);
        let _lock = HomeLock::acquire(&self.home, &mut steps)?;
        let supervisor = self.supervisor_checked()?;
        // Else a leftover a killed deploy switched to would go on serving
        // the stable address of a process that `stop` says is stopped.
        self.clean_leftovers(&supervisor, &mut steps)?;
        let record = self.resolve(target)?;
        supervisor.stop_process(&record.id, true)?;
        Ok(record)
    }

    /// Stops and removes `target`: its route, program, folder and port.
    pub fn destroy(&self, target: &str, progress: &mut dyn Progress) -> Result<InstanceRecord> {
        let mut steps = Steps::new(progress);
        let _lock = HomeLock::acquire(&self.home, &mut steps)?;
        let supervisor = self.supervisor_checked()?;
        self.clean_leftovers(&supervisor, &mut steps)?;
        let record = self.resolve(target)?;
        let mut current = CurrentInstances::load(&self.home)?;
        let process = record.process.clone();
        // A process name takes the whole process; an instance, only it,
        // unless it is the process's last one.
        let whole = target == process || current.of(&process).len() <= 1;
        let doomed: Vec<String> = if whole {
            current
                .of(&process)
                .iter()
                .map(|instance| instance.id.clone())
                .collect()
        } else {
            vec![record.id.clone()]
        };
        if self.config.port_map.contains_key(process.as_str()) {
            let router = Router::new(&self.home, &self.config, &supervisor);
            let routing = Router::committed(&self.home, &current);
            if whole {
                router.unroute(&routing, &process)?;
                steps.report(Event::Unrouted { process: &process });
            } else {
                let mut rest = routing.get(process.as_str()).cloned().unwrap_or_default();
                rest.retain(|server| server.name != record.id);
                let changes = crate::routing::Routing::from([(process.to_string(), rest)]);
                let live = router.live()?;
                // switch leaves writing the file to its caller: without
                // it, the next reload would route to this instance again.
                let config = router.switch(&live, &routing, &changes)?;
                if let Err(error) = config.write(&self.home.haproxy_config()) {
                    router.restore(&live, &routing);
                    return Err(error.into());
                }
                router.drain(&live, &process, &record.id, self.config.drain_timeout);
            }
        }
        if whole {
            current.processes.remove(&process);
        } else if let Some(instances) = current.processes.get_mut(&process) {
            instances.retain(|instance| instance.id != record.id);
        }
        current.save(&self.home)?;
        // Past this point the instances are no longer current: what cannot
        // be deleted now is a leftover the next command retries.
        for id in &doomed {
            match self.remove_instance(&supervisor, id) {
                Ok(()) => steps.report(Event::Destroyed { instance: id }),
                Err(error) => steps.warn(format!(
                    "{id} is destroyed but its files could not all be removed ({}); the next sarge command will try again",
                    described(&error)
                )),
            }
        }
        if let Err(error) = self.collect_venvs(&current) {
            steps.warn(format!(
                "could not remove unused virtualenvs ({}); the next sarge command will try again",
                described(&error)
            ));
        }
        Ok(record)
    }

    /// A command that runs `argv` (program, then its arguments) in
    /// `target`'s folder with its env, `PORT` and virtualenv, or an
    /// interactive `bash` when `argv` is empty.
    ///
    /// Each element reaches the program as one argument, untouched: the
    /// instance's launcher ends in `exec "$@"`, so no shell reparses them.
    /// For shell syntax, pass a shell: `["sh", "-c", "echo $PORT"]`.
    pub fn run_command(&self, target: &str, argv: &[OsString]) -> Result<Command> {
        let record = self.resolve(target)?;
        let mut command = Command::new(launcher_path(&self.home.instance_dir(&record.id)));
        if argv.is_empty() {
            command.arg("bash");
        } else {
            command.args(argv);
        }
        Ok(command)
    }

    /// The current instance that `target` names: an instance id, a
    /// process name for its first instance, or `PROCESS.N` for its Nth
    /// (as `sarge logs` labels them).
    pub fn resolve(&self, target: &str) -> Result<InstanceRecord> {
        let current = CurrentInstances::load(&self.home)?;
        let by_label = target.rsplit_once('.').and_then(|(process, number)| {
            let index = number.parse::<usize>().ok()?.checked_sub(1)?;
            current.of(process).get(index)
        });
        let id = match (current.of(target).first(), by_label) {
            (Some(instance), _) | (None, Some(instance)) => Some(instance.id.clone()),
            (None, None) => current.process_of(target).map(|_| target.to_owned()),
        };
        match id {
            Some(id) => InstanceRecord::load(&self.home, &id),
            None => Err(Error::UnknownTarget {
                target: target.to_owned(),
                known: if current.instances().next().is_none() {
                    "none".to_owned()
                } else {
                    current
                        .instances()
                        .map(|(process, instance)| format!("{} ({process})", instance.id))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            }),
        }
    }

    /// Removes what a failed or killed deploy left behind: instance folders
    /// and programs that never became current. Routes are re-applied first,
    /// so haproxy never points at an instance about to go. The caller holds
    /// the home lock; [`Sarge::recover`] is the public entry.
    pub(crate) fn clean_leftovers(&self, supervisor: &Client, steps: &mut Steps<'_>) -> Result<()> {
        // A release command whose deploy was killed runs on in its own
        // process group: it goes first, before the folder it runs in.
        if let Some(left) = crate::release_command::kill_left_behind(
            &crate::release_command::group_file(&self.home),
        )? {
            steps.warn(format!(
                "killed the release command of {} ({} processes still running), left by a deploy that was interrupted; what it was doing (a migration?) may be half done",
                left.release, left.processes
            ));
        }
        // What a killed command was writing: a config staged for a switch,
        // and the temp files of atomic writes (`.NAME.PID.tmp`).
        let staged = crate::routing::staged_path(&self.home.haproxy_config());
        if staged.exists() {
            fs_err::remove_file(&staged)?;
        }
        for dir in [
            self.home.etc_dir(),
            self.home.programs_dir(),
            self.home.state_dir(),
        ] {
            for entry in fs_err::read_dir(&dir)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    fs_err::remove_file(dir.join(&name))?;
                }
            }
        }
        let mut current = CurrentInstances::load(&self.home)?;
        // A prepared release nobody switched to in time: its client is gone.
        if let Some(late) = current
            .prepared
            .as_ref()
            .and_then(|prepared| prepared.expired_for().map(|late| (prepared.release, late)))
        {
            self.discard_prepared(supervisor, &mut current)?;
            steps.warn(format!(
                "release {} was prepared but not switched to within prepared_timeout; discarded it ({} s late)",
                late.0,
                late.1.as_secs()
            ));
        }
        // A current instance whose record is gone (deleted by hand, lost
        // to a disk error) cannot run or be routed to: drop it from the
        // state, so that it never blocks a command again.
        let gone: Vec<(crate::ProcessName, String)> = current
            .instances()
            .filter(|(_, instance)| {
                matches!(
                    InstanceRecord::load(&self.home, &instance.id),
                    Err(Error::StateFile { .. })
                ) || !self
                    .home
                    .instance_dir(&instance.id)
                    .join("instance.json")
                    .exists()
            })
            .map(|(process, instance)| (process.clone(), instance.id.clone()))
            .collect();
        for (process, id) in &gone {
            if let Some(instances) = current.processes.get_mut(process) {
                instances.retain(|instance| instance.id != *id);
            }
            steps.warn(format!(
                "the current instance {id} of {process} has no readable instance.json; it is no longer deployed"
            ));
        }
        if !gone.is_empty() {
            current.save(&self.home)?;
        }
        // The instances of a prepared release are not leftovers.
        let current_ids = current.kept_ids();
        let mut leftovers: BTreeSet<String> = self
            .instance_ids()?
            .into_iter()
            .filter(|id| !current_ids.contains(id.as_str()))
            // Another deploy is still reading its upload into this one.
            .filter(|id| !UploadMark::is_held(&self.home.instance_dir(id)))
            .collect();
        for entry in fs_err::read_dir(self.home.programs_dir())? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(program) = name.strip_suffix(".conf") {
                if program != HAPROXY_PROGRAM && !current_ids.contains(program) {
                    leftovers.insert(program.to_owned());
                }
            }
        }
        let abandoned = match self.remove_unkept_releases(&current) {
            Ok(abandoned) => abandoned,
            Err(error) => {
                steps.warn(format!(
                    "could not remove an old release's folder ({}); the next sarge command will try again",
                    described(&error)
                ));
                Vec::new()
            }
        };
        if !abandoned.is_empty() {
            steps.report(Event::Recovered {
                removed: &abandoned,
                what: "releases",
            });
        }
        // Housekeeping: one that cannot be deleted is tried again next time.
        let _ = self.remove_old_release_outputs(&current);
        if leftovers.is_empty() && gone.is_empty() && abandoned.is_empty() {
            return Ok(());
        }
        if (!leftovers.is_empty() || !gone.is_empty())
            && !self.config.port_map.is_empty()
            && matches!(supervisor.process_info(HAPROXY_PROGRAM), Ok(info) if matches!(info.state, ProcessState::Running | ProcessState::Starting))
        {
            // Traffic goes back to the committed instances first; requests
            // a killed deploy's instance already took finish before it stops.
            let router = Router::new(&self.home, &self.config, supervisor);
            let routing = Router::committed(&self.home, &current);
            let live = router.ensure(&routing, None)?;
            for id in &leftovers {
                if let Ok(record) = InstanceRecord::load(&self.home, id) {
                    if self.config.port_map.contains_key(record.process.as_str()) {
                        router.drain(&live, &record.process, id, self.config.drain_timeout);
                    }
                }
            }
        }
        // A leftover that cannot be removed (a folder owned by another
        // user, say) is reported and tried again by the next command; it
        // must not stop this one, or one such folder wedges the home.
        let mut removed = Vec::new();
        for id in leftovers {
            match self.remove_instance(supervisor, &id) {
                Ok(()) => removed.push(id),
                Err(error) => steps.warn(format!(
                    "could not remove {id}, left by an earlier deploy ({}); the next sarge command will try again",
                    described(&error)
                )),
            }
        }
        if let Err(error) = self.collect_venvs(&current) {
            steps.warn(format!(
                "could not remove unused virtualenvs ({}); the next sarge command will try again",
                described(&error)
            ));
        }
        if !removed.is_empty() {
            steps.report(Event::Recovered {
                removed: &removed,
                what: "leftovers",
            });
        }
        Ok(())
    }

    /// Stops and forgets an instance's program, then deletes its folder.
    pub(crate) fn remove_instance(&self, supervisor: &Client, id: &str) -> Result<()> {
        match supervisor.stop_process(id, true) {
            Ok(()) | Err(sarge_supervisor::Error::NoSuchProgram { .. }) => {}
            Err(other) => return Err(other.into()),
        }
        supervisor.remove_process_group(id)?;
        let program_file = self.home.program_file(id);
        if program_file.exists() {
            fs_err::remove_file(&program_file)?;
        }
        // The app may have made parts of its folder read-only (or shipped
        // a mode-000 folder): remove_tree makes them writable first.
        sarge_venv::remove_tree(&self.home.instance_dir(id))?;
        // Logs are housekeeping: one that cannot be deleted now is tried
        // again at the next removal, and must not fail this one.
        let _ = self.prune_logs();
        Ok(())
    }

    /// Deletes the logs of removed instances but those of the newest
    /// [`KEPT_REMOVED_LOGS`], so that 400 deploys leave a few files rather
    /// than 400. A log is an instance's when it is named `ID.log` (or a
    /// rotated `ID.log.N`) with ID shaped like an instance id; the logs of
    /// instances that still have a folder, and of supervisord and haproxy,
    /// are never touched.
    fn prune_logs(&self) -> Result<()> {
        let existing: BTreeSet<String> = self.instance_ids()?.into_iter().collect();
        // The logs of a kept release's instances stay readable
        // (`sarge logs --release`) until the release is pruned.
        let mut of_kept_releases = BTreeSet::new();
        for release in CurrentInstances::load(&self.home)?.history {
            if let Ok(served) = crate::release::ServedBy::load(&self.home, release) {
                of_kept_releases.extend(served.processes.into_values().flatten());
            }
        }
        let mut removed: BTreeMap<String, (SystemTime, Vec<Utf8PathBuf>)> = BTreeMap::new();
        let log_dir = self.home.log_dir();
        for entry in fs_err::read_dir(&log_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = instance_of_log(&name) else {
                continue;
            };
            if existing.contains(id) {
                continue;
            }
            let modified = entry.metadata()?.modified()?;
            let (newest, files) = removed
                .entry(id.to_owned())
                .or_insert((SystemTime::UNIX_EPOCH, Vec::new()));
            *newest = (*newest).max(modified);
            files.push(log_dir.join(&name));
        }
        let mut by_age: Vec<(String, (SystemTime, Vec<Utf8PathBuf>))> =
            removed.into_iter().collect();
        by_age.sort_by_key(|(_, (newest, _))| std::cmp::Reverse(*newest));
        for (_, (_, files)) in by_age
            .into_iter()
            .skip(KEPT_REMOVED_LOGS)
            .filter(|(id, _)| !of_kept_releases.contains(id))
        {
            for file in files {
                match fs_err::remove_file(&file) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(())
    }

    /// Deletes the release command output of deploys that failed (they
    /// never joined the history) once they are older than every kept
    /// release, so that a home whose deploys keep failing stays bounded.
    /// The output of a pruned release goes with its folder.
    fn remove_old_release_outputs(&self, current: &CurrentInstances) -> Result<()> {
        let Some(oldest) = current.history.first() else {
            return Ok(());
        };
        let log_dir = self.home.log_dir();
        for entry in fs_err::read_dir(&log_dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix("release-")
                .and_then(|rest| rest.strip_suffix(".log"))
                .and_then(|id| id.parse::<crate::ReleaseId>().ok())
            else {
                continue;
            };
            if id < *oldest && !current.history.contains(&id) {
                fs_err::remove_file(log_dir.join(&name))?;
            }
        }
        Ok(())
    }

    /// Every instance folder, current or not.
    pub(crate) fn instance_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs_err::read_dir(self.home.instances_dir())? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(ids)
    }

    /// Deletes virtualenvs no current instance uses.
    pub(crate) fn collect_venvs(&self, current: &CurrentInstances) -> Result<()> {
        let mut keep = BTreeSet::new();
        for (_, instance) in current.instances() {
            if let Ok(record) = InstanceRecord::load(&self.home, &instance.id) {
                if let Some(key) = record.venv {
                    keep.insert(sarge_venv::VenvId::new(key));
                }
            }
        }
        // A kept release rolls back without an install, if its virtualenv
        // is as it was built (a changed one is never run again). Each is
        // checked once, however many releases share it.
        let store = self.venv_store();
        let mut of_releases = BTreeSet::new();
        for id in &current.history {
            if let Ok(release) = crate::release::Release::load(&self.home, *id) {
                of_releases.extend(release.processes.into_values().filter_map(|spec| spec.venv));
            }
        }
        for venv in of_releases {
            let venv = sarge_venv::VenvId::new(venv);
            if !keep.contains(&venv) && store.check_unchanged(&venv).is_ok() {
                keep.insert(venv);
            }
        }
        store.remove_unused(&keep)?;
        Ok(())
    }
}

/// An error with its causes, for a note (which, unlike an error, the CLI
/// prints as it is): `remove file X: Permission denied (os error 13)`.
fn described(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Transparent variants repeat their inner error's message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The instance id a log file name belongs to: `ID.log` or `ID.log.N`
/// where ID is `PROCESS-xxxxxx` (six hex digits), as deploys name them.
fn instance_of_log(name: &str) -> Option<&str> {
    // The last `.log`: a process name may hold one (`api.log-0a1b2c.log`).
    let (id, rotation) = name.rsplit_once(".log")?;
    let rotation_ok = rotation.is_empty()
        || rotation
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let (process, suffix) = id.rsplit_once('-')?;
    let id_ok = suffix.len() == 6
        && suffix.bytes().all(|b| b.is_ascii_hexdigit())
        && crate::procfile::is_valid_process_name(process);
    (rotation_ok && id_ok).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_logs_are_told_from_other_logs() {
        assert_eq!(instance_of_log("web-0a1b2c.log"), Some("web-0a1b2c"));
        assert_eq!(instance_of_log("web-0a1b2c.log.3"), Some("web-0a1b2c"));
        assert_eq!(
            instance_of_log("my-api-0a1b2c.log.10"),
            Some("my-api-0a1b2c")
        );
        assert_eq!(
            instance_of_log("api.logs-0a1b2c.log.1"),
            Some("api.logs-0a1b2c")
        );
        for other in [
            "supervisord.log",
            "supervisord.log.1",
            "haproxy.log",
            "web-0a1b2c.log.bak",
            "web-0a1b2.log",
            "web-0a1b2c.txt",
            "-0a1b2c.log",
        ] {
            assert_eq!(instance_of_log(other), None, "{other}");
        }
    }

    #[test]
    fn instance_states_serialize_and_display_as_list_has_always_shown_them() {
        for (state, text) in [
            (InstanceState::Running, "running"),
            (InstanceState::Starting, "starting"),
            (InstanceState::Missing, "missing"),
            (InstanceState::Backoff, "backoff"),
            (InstanceState::from(ProcessState::Fatal), "fatal"),
            (InstanceState::from(ProcessState::Stopped), "stopped"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), text);
            assert_eq!(state.to_string(), text);
        }
        // Every supervisord state keeps its (lowercased) supervisord name.
        for state in [
            ProcessState::Stopped,
            ProcessState::Starting,
            ProcessState::Running,
            ProcessState::Backoff,
            ProcessState::Stopping,
            ProcessState::Exited,
            ProcessState::Fatal,
            ProcessState::Unknown,
        ] {
            assert_eq!(
                InstanceState::from(state).as_str(),
                state.name().to_ascii_lowercase()
            );
        }
        assert_eq!(format!("{:<9}|", InstanceState::Running), "running  |");
    }
}
