//! A deploy: the new code becomes a release, rolled out by the rollout
//! engine. In the order the user waits for it: unpack (before the home
//! lock, so a slow upload blocks nobody), read the Procfile, install the
//! virtualenv, then [`Sarge::roll_out`](crate::Sarge) starts, switches and
//! cleans up.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::time::{Duration, Instant, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};
use sarge_venv::{EnvironmentSpec, Venv, VenvId};

use crate::error::{excerpt, Error, Result};
use crate::lock::{HomeLock, UploadMark};
use crate::procfile::Procfile;
use crate::progress::{Event, Progress, Steps};
use crate::release::{ProcessSpec, Release, ReleaseId};
use crate::release_command::ReleaseCommand;
use crate::rollout::Rollout;
use crate::rollout::{random_hex, RolledOut};
use crate::state::{CurrentInstances, PreparedRelease};
use crate::timestamp::rfc3339;
use crate::unpack::{unpack_tarball, Limits};
use crate::{ProcessName, Sarge};

/// The Procfile process type that is a release command, not a process.
const RELEASE_PROCESS: &str = "release";

/// What a deploy did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Deployed {
    /// The release it made, now current, and its new instances.
    pub rolled_out: RolledOut,
    /// Whether an existing virtualenv was reused (no installer ran).
    pub venv_reused: Option<bool>,
    /// How long the whole deploy took.
    pub elapsed: Duration,
}

/// What [`Sarge::prepare`] made: a release whose instances run and
/// answered on their own ports, waiting for [`Sarge::switch`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Prepared {
    /// The prepared release, its instances and when it expires.
    pub prepared: crate::state::PreparedRelease,
    /// Whether an existing virtualenv was reused (no installer ran).
    pub venv_reused: Option<bool>,
    /// How long the preparation took.
    pub elapsed: Duration,
}

/// How far a deploy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Switch and commit: the whole deploy.
    Whole,
    /// Stop once the new instances are ready; run the release command or not.
    Prepare { release_command: bool },
}

/// What a deploy made, by phase.
enum Made {
    RolledOut(RolledOut),
    Prepared(crate::state::PreparedRelease),
}

impl Sarge {
    /// Deploys the app in `tarball` (a tar or tar.gz stream) as a new
    /// release: `processes` get the new code (every process type of its
    /// Procfile but `release` when empty); the release keeps the others on
    /// their current code. On any failure before the switch the new
    /// instances and release are removed completely and the old ones keep
    /// serving, untouched.
    pub fn deploy(
        &self,
        tarball: impl Read,
        processes: &[ProcessName],
        progress: &mut dyn Progress,
    ) -> Result<Deployed> {
        let (made, venv_reused, elapsed) =
            self.deploy_to(tarball, processes, Phase::Whole, progress)?;
        match made {
            Made::RolledOut(rolled_out) => Ok(Deployed {
                rolled_out,
                venv_reused,
                elapsed,
            }),
            Made::Prepared(_) => unreachable!("a whole deploy rolls out"),
        }
    }

    /// The first phase of a deploy in two (see [`Sarge::switch`]): like
    /// [`Sarge::deploy`] up to the new instances being ready on their own
    /// ports, with nothing switched. The release command runs only with
    /// `release_command` (so that, over several servers, migrations run
    /// once). The release waits for [`Sarge::switch`] or
    /// [`Sarge::discard`]; the first command after `prepared_timeout`
    /// discards it. A release prepared earlier and not switched is
    /// replaced.
    pub fn prepare(
        &self,
        tarball: impl Read,
        processes: &[ProcessName],
        release_command: bool,
        progress: &mut dyn Progress,
    ) -> Result<Prepared> {
        let phase = Phase::Prepare { release_command };
        let (made, venv_reused, elapsed) = self.deploy_to(tarball, processes, phase, progress)?;
        match made {
            Made::Prepared(prepared) => Ok(Prepared {
                prepared,
                venv_reused,
                elapsed,
            }),
            Made::RolledOut(_) => unreachable!("a prepare does not roll out"),
        }
    }

    /// A deploy, step by step: check the names, receive the tarball (before
    /// the lock), recover, read the Procfile, install, make the release,
    /// then roll it out or prepare it.
    fn deploy_to(
        &self,
        tarball: impl Read,
        processes: &[ProcessName],
        phase: Phase,
        progress: &mut dyn Progress,
    ) -> Result<(Made, Option<bool>, Duration)> {
        let started = Instant::now();
        let mut steps = Steps::new(progress);
        check_deployable(processes)?;
        // Fails before the upload is read if supervisord is down.
        let supervisor = self.supervisor_checked()?;
        let checking_venvs = self.check_current_venvs();
        // The upload is read before the home lock is taken, so that a slow
        // or stalled client never holds up other commands.
        let mut upload = self.receive_upload(tarball, &mut steps)?;
        let app_dir = upload.dir.join("app");

        let lock = HomeLock::acquire(&self.home, &mut steps)?;
        self.clean_leftovers(&supervisor, &mut steps)?;
        let mut current = CurrentInstances::load(&self.home)?;
        if phase != Phase::Whole {
            self.replace_prepared(&supervisor, &mut current, &mut steps)?;
        }
        let procfile = read_procfile(&app_dir)?;
        let rolled = processes_to_deploy(&procfile, processes, &mut steps)?;
        let venv = self.install_requirements(&app_dir, checking_venvs, &mut steps)?;

        // The release takes its number once the app is known good, so a
        // refused tarball changes nothing in the home.
        let id = current.next_release_id();
        let release_dir = upload.promote(&self.home, id)?;
        let release = self.new_release(&current, id, &rolled, &procfile, venv.as_ref());
        let made = self.roll_out_new_release(
            &lock,
            &supervisor,
            release,
            &rolled,
            &procfile,
            venv.as_ref(),
            phase,
            &mut steps,
        );
        match made {
            Ok(made) => Ok((made, venv.map(|venv| venv.reused), started.elapsed())),
            Err(error) => {
                // Never current: nothing may keep it.
                let _ = sarge_venv::remove_tree(&release_dir);
                Err(error)
            }
        }
    }

    /// Claims an upload folder and unpacks `tarball` into its `app`.
    fn receive_upload(&self, tarball: impl Read, steps: &mut Steps<'_>) -> Result<Upload> {
        let upload = self.claim_upload()?;
        let app_dir = upload.dir.join("app");
        let entries = (|| {
            crate::privacy::create_private_dir(&app_dir)?;
            let limits = Limits::for_folder(
                self.config.max_unpacked_bytes,
                self.home.config_file(),
                &app_dir,
            )?;
            unpack_tarball(tarball, &app_dir, &limits)
        })()?;
        steps.report(Event::Unpacked {
            entries,
            folder: &upload.dir,
        });
        Ok(upload)
    }

    /// One prepared release at a time: a newer one replaces it.
    fn replace_prepared(
        &self,
        supervisor: &sarge_supervisor::Client,
        current: &mut CurrentInstances,
        steps: &mut Steps<'_>,
    ) -> Result<()> {
        let Some(replaced) = current.prepared.as_ref().map(|prepared| prepared.release) else {
            return Ok(());
        };
        self.discard_prepared(supervisor, current)?;
        steps.report(Event::Discarded { release: replaced });
        Ok(())
    }

    /// The release a deploy makes: the current release's processes, with
    /// those in `rolled` on the new code and virtualenv. A deploy keeps
    /// each process's count; a new process runs one instance.
    fn new_release(
        &self,
        current: &CurrentInstances,
        id: ReleaseId,
        rolled: &[ProcessName],
        procfile: &Procfile,
        venv: Option<&Venv>,
    ) -> Release {
        let mut processes: BTreeMap<ProcessName, ProcessSpec> = match current.release {
            Some(previous) => Release::load(&self.home, previous)
                .map(|release| release.processes)
                .unwrap_or_default(),
            None => BTreeMap::new(),
        };
        for process in rolled {
            let count = processes.get(process).map_or(1, |spec| spec.count);
            processes.insert(
                process.clone(),
                ProcessSpec {
                    code: id,
                    command: procfile.command(process).unwrap_or("").to_owned(),
                    venv: venv.map(|venv| venv.id.to_string()),
                    count,
                },
            );
        }
        Release {
            id,
            created: rfc3339(SystemTime::now()),
            description: format!("deploy {}", rolled.join(", ")),
            processes,
            release_command_ran: false,
        }
    }

    /// Runs the release command (unless the phase says not to), records
    /// the release, then rolls it out, or starts its instances and records
    /// it as prepared.
    #[allow(clippy::too_many_arguments)]
    fn roll_out_new_release(
        &self,
        lock: &HomeLock,
        supervisor: &sarge_supervisor::Client,
        mut release: Release,
        rolled: &[ProcessName],
        procfile: &Procfile,
        venv: Option<&Venv>,
        phase: Phase,
        steps: &mut Steps<'_>,
    ) -> Result<Made> {
        // The release's files are flushed while its instances start up.
        let _deferred = crate::durability::DeferredSyncs::open();
        let env = self.env()?;
        let release_command = phase
            != Phase::Prepare {
                release_command: false,
            };
        if let (Some(command), true) = (procfile.command(RELEASE_PROCESS), release_command) {
            let release_dir = self.home.release_dir(release.id);
            self.run_release_command(command, release.id, &release_dir, venv, &env, steps)?;
            release.release_command_ran = true;
        }
        release.save(&self.home, &env)?;
        if phase == Phase::Whole {
            let rolled_out =
                self.roll_out_locked(lock, supervisor, &release, rolled, Rollout::Replace, steps)?;
            return Ok(Made::RolledOut(rolled_out));
        }
        let mut started =
            self.start_rollout(supervisor, &release, rolled, Rollout::Replace, false, steps)?;
        started.make_durable()?;
        let mut current = CurrentInstances::load(&self.home)?;
        let prepared = PreparedRelease {
            release: release.id,
            based_on: current.release,
            instances: started.started(),
            expires: self.prepared_expiry(),
        };
        current.prepared = Some(prepared.clone());
        current.last_prepared = Some(release.id);
        current.save(&self.home)?;
        started.keep_instances();
        steps.report(Event::Prepared {
            release: release.id,
        });
        Ok(Made::Prepared(prepared))
    }

    /// Checks on a thread that the current release's virtualenvs are
    /// unchanged (a walk of every file in them), while the upload is read
    /// and unpacked: a redeploy with the same requirements reuses one of
    /// them, and finds it checked already. It only reads.
    fn check_current_venvs(&self) -> VenvPrecheck {
        let ids: Vec<VenvId> = CurrentInstances::load(&self.home)
            .ok()
            .and_then(|current| current.release)
            .and_then(|id| Release::load(&self.home, id).ok())
            .map(|release| {
                let ids: BTreeSet<String> = release
                    .processes
                    .into_values()
                    .filter_map(|spec| spec.venv)
                    .collect();
                ids.into_iter().map(VenvId::new).collect()
            })
            .unwrap_or_default();
        let store = self.venv_store();
        let checking = ids.clone();
        let handle = std::thread::spawn(move || {
            checking
                .into_iter()
                .filter(|id| store.check_unchanged(id).is_ok())
                .collect()
        });
        VenvPrecheck { ids, handle }
    }

    /// Installs the app's requirements.txt into a shared virtualenv, if it
    /// has one. `precheck`: the current release's, being checked.
    fn install_requirements(
        &self,
        app_dir: &Utf8Path,
        precheck: VenvPrecheck,
        steps: &mut Steps<'_>,
    ) -> Result<Option<Venv>> {
        if !check_requirements(app_dir)? {
            steps.report(Event::NoVirtualenv);
            return Ok(None);
        }
        let requirements = app_dir.join("requirements.txt");
        let dist = self.python_dist();
        let spec = EnvironmentSpec {
            python: &self.config.python_bin,
            requirements: &requirements,
            dist: &dist,
        };
        let venv = self
            .venv_store()
            .ensure_checked(&spec, |id| precheck.found_unchanged(id))?;
        if let Some(note) = venv.rebuild_note() {
            steps.warn(note);
        }
        if let Some(note) = venv.cache_note() {
            steps.warn(note);
        }
        if !venv.reused {
            // The store seals venvs owner-only; uv makes some cache files
            // readable by all whatever the umask.
            crate::privacy::make_tree_private(&self.home.cache_dir())?;
        }
        steps.report(Event::Virtualenv {
            path: &venv.path,
            reused: venv.reused,
            dist: &dist,
            bytecode: venv.bytecode,
        });
        Ok(Some(venv))
    }

    /// Runs the Procfile's `release:` command once, in the new release's
    /// app folder with its env and virtualenv, before any of its instances
    /// starts: its output streams into the progress and is kept in
    /// `var/log/release-vN.log` (also when it fails, for a look at why).
    fn run_release_command(
        &self,
        command: &str,
        id: ReleaseId,
        release_dir: &Utf8Path,
        venv: Option<&Venv>,
        env: &BTreeMap<String, String>,
        steps: &mut Steps<'_>,
    ) -> Result<()> {
        // Its output outlives a failure (the error points at the file), so
        // the id is never given again, even if this release never comes to be.
        let mut current = CurrentInstances::load(&self.home)?;
        current.last_attempted = current.last_attempted.max(Some(id));
        current.save(&self.home)?;
        let venv_bin = venv.map(Venv::bin_dir);
        let output_file = self.home.release_output(id);
        let group_file = crate::release_command::group_file(&self.home);
        let runner = ReleaseCommand {
            command,
            app_dir: &release_dir.join("app"),
            env,
            venv_bin: venv_bin.as_deref(),
            timeout: self.config.release_timeout,
            output_file: &output_file,
            release: id,
            group_file: &group_file,
        };
        let ran = runner.run(&mut |line| steps.report(Event::ReleaseOutput { line }))?;
        steps.report(Event::ReleaseCommand {
            command,
            lines: ran.lines,
        });
        Ok(())
    }

    /// A new upload folder under `var/releases/`, marked as being read.
    fn claim_upload(&self) -> Result<Upload> {
        crate::privacy::create_private_dir(&self.home.releases_dir())?;
        loop {
            let dir = self
                .home
                .releases_dir()
                .join(format!(".upload-{}", random_hex()));
            match std::fs::DirBuilder::new()
                .mode(crate::privacy::PRIVATE_DIR)
                .create(&dir)
            {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error.into()),
            }
            return match UploadMark::new(&dir) {
                Ok(mark) => Ok(Upload {
                    dir,
                    mark: Some(mark),
                }),
                Err(error) => {
                    let _ = sarge_venv::remove_tree(&dir);
                    Err(error)
                }
            };
        }
    }
}

/// An upload being read into `var/releases/.upload-*`; removed on drop
/// unless it became a release.
struct Upload {
    dir: Utf8PathBuf,
    mark: Option<UploadMark>,
}

impl Upload {
    /// Makes the upload release `id`'s folder.
    fn promote(&mut self, home: &crate::Home, id: ReleaseId) -> Result<Utf8PathBuf> {
        let target = home.release_dir(id);
        // A folder of this id can only be an abandoned attempt: the id is
        // past every release of the history.
        if target.exists() {
            sarge_venv::remove_tree(&target)?;
        }
        fs_err::rename(&self.dir, &target)?;
        self.dir = target.clone();
        if let Some(mark) = self.mark.take() {
            mark.clear_in(&target)?;
        }
        Ok(target)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.mark.is_some() {
            self.mark = None;
            let _ = sarge_venv::remove_tree(&self.dir);
        }
    }
}

/// Most bytes of a Procfile sarge reads: a few lines in practice.
const PROCFILE_LIMIT: u64 = 64 * 1024;
/// Most bytes of a requirements.txt: hundreds of pinned, hashed lines fit.
const REQUIREMENTS_LIMIT: u64 = 1024 * 1024;

/// Refuses, before anything is read, the release command named as a
/// process to deploy. (A [`ProcessName`] is valid by construction.)
fn check_deployable(processes: &[ProcessName]) -> Result<()> {
    if processes.iter().any(|process| *process == RELEASE_PROCESS) {
        return Err(Error::ReleaseIsNotAProcess);
    }
    Ok(())
}

/// The processes a deploy gives the new code: `processes`, each of which
/// the Procfile must have, or every process of the Procfile but `release`.
fn processes_to_deploy(
    procfile: &Procfile,
    processes: &[ProcessName],
    steps: &mut Steps<'_>,
) -> Result<Vec<ProcessName>> {
    let available = || excerpt(&procfile.names().collect::<Vec<_>>().join(", "));
    let rolled: Vec<ProcessName> = if processes.is_empty() {
        procfile
            .process_names()
            .filter(|name| *name != RELEASE_PROCESS)
            .cloned()
            .collect()
    } else {
        if let Some(missing) = processes
            .iter()
            .find(|process| procfile.command(process).is_none())
        {
            return Err(Error::ProcessNotInProcfile {
                process: excerpt(missing),
                available: available(),
            });
        }
        processes.to_vec()
    };
    if rolled.is_empty() {
        return Err(Error::ProcessNotInProcfile {
            process: "(any process but release)".to_owned(),
            available: available(),
        });
    }
    let commands: Vec<(ProcessName, String)> = rolled
        .iter()
        .map(|process| {
            let command = procfile.command(process).unwrap_or("").to_owned();
            (process.clone(), command)
        })
        .collect();
    steps.report(Event::Procfile {
        processes: &commands,
    });
    Ok(rolled)
}

/// The Procfile of the app unpacked at `app_dir`.
fn read_procfile(app_dir: &Utf8Path) -> Result<Procfile> {
    let name = Utf8Path::new("Procfile");
    let Some((mut file, size)) = open_app_file(app_dir, name, PROCFILE_LIMIT)? else {
        return Err(Error::ProcfileMissing { path: name.into() });
    };
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // The bound holds even if the file grows after the size was read.
    Read::by_ref(&mut file)
        .take(PROCFILE_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|source| failed_at("read", &app_dir.join(name), source))?;
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        Error::Procfile {
            path: name.into(),
            line: valid.iter().filter(|byte| **byte == b'\n').count() + 1,
            problem: "is not UTF-8 text".into(),
        }
    })?;
    Procfile::parse(&text, name)
}

/// Whether the app has a requirements.txt to install; an error if it is
/// there but not a file sarge would read whole.
fn check_requirements(app_dir: &Utf8Path) -> Result<bool> {
    let name = Utf8Path::new("requirements.txt");
    Ok(open_app_file(app_dir, name, REQUIREMENTS_LIMIT)?.is_some())
}

/// Opens `name` in the app folder if it exists, with its size; an error
/// naming it if it is not a regular file or larger than `limit`. A link is
/// followed: unpacking has made sure every link resolves inside the app.
fn open_app_file(
    app_dir: &Utf8Path,
    name: &Utf8Path,
    limit: u64,
) -> Result<Option<(std::fs::File, u64)>> {
    let path = app_dir.join(name);
    let not_a_file = |kind: &str| Error::AppFileKind {
        path: name.to_owned(),
        kind: kind.to_owned(),
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return match std::fs::symlink_metadata(&path) {
                Ok(_) => Err(not_a_file("a link to nothing")),
                Err(_) => Ok(None),
            };
        }
        Err(error) => return Err(failed_at("open", &path, error)),
    };
    let metadata = file
        .metadata()
        .map_err(|source| failed_at("read the metadata of", &path, source))?;
    if metadata.is_dir() {
        return Err(not_a_file("a folder"));
    }
    if !metadata.is_file() {
        return Err(not_a_file("neither a file nor a folder"));
    }
    if metadata.len() > limit {
        return Err(Error::AppFileTooLarge {
            path: name.to_owned(),
            limit,
            size: metadata.len(),
        });
    }
    Ok(Some((file, metadata.len())))
}

/// An I/O error that names what was done to which file, keeping the
/// system's reason.
fn failed_at(action: &str, path: &Utf8Path, source: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        source.kind(),
        format!("cannot {action} {path}: {source}"),
    ))
}

/// The current release's virtualenvs, being checked on a thread.
struct VenvPrecheck {
    ids: Vec<VenvId>,
    handle: std::thread::JoinHandle<Vec<VenvId>>,
}

impl VenvPrecheck {
    /// Whether `id` was found unchanged. Waits for the check only if it
    /// covers `id`: another virtualenv is checked by the caller.
    fn found_unchanged(self, id: &VenvId) -> bool {
        self.ids.contains(id)
            && self
                .handle
                .join()
                .is_ok_and(|unchanged| unchanged.contains(id))
    }
}
