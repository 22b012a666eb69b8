//! A deploy, in the order the user waits for it: unpack, read the
//! Procfile, install, start, wait until ready, switch, clean up.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::time::{Duration, Instant, SystemTime};

use camino::Utf8Path;
use sarge_haproxy::Slot;
use sarge_supervisor::{ProcessState, Program};
use sarge_venv::{EnvironmentSpec, Venv};

use crate::error::{excerpt, Error, Result};
use crate::launcher::{launcher_path, write_launcher};
use crate::lock::{HomeLock, UploadMark};
use crate::procfile::{is_valid_process_name, Procfile};
use crate::progress::{Progress, Steps};
use crate::routing::{slot_char, slot_from_char, Probe, Router};
use crate::state::{CurrentInstance, CurrentInstances, InstanceRecord};
use crate::timestamp::rfc3339;
use crate::unpack::{unpack_tarball, Limits};
use crate::Sarge;

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The new instance.
    pub instance: InstanceRecord,
    /// The instance it replaced, now removed.
    pub replaced: Option<String>,
    /// Whether an existing virtualenv was reused (no installer ran).
    pub venv_reused: Option<bool>,
    /// The stable address now routed to it, if the process has one.
    pub stable_address: Option<String>,
    /// How long the whole deploy took.
    pub elapsed: Duration,
}

impl Sarge {
    /// Deploys process `process` of the app in `tarball` (a tar or tar.gz
    /// stream), replacing its current instance. On any failure before the
    /// switch the new instance is removed completely and the old one keeps
    /// serving, untouched.
    pub fn deploy(
        &self,
        tarball: impl Read,
        process: &str,
        progress: &mut dyn Progress,
    ) -> Result<Deployed> {
        let started = Instant::now();
        let mut steps = Steps::new(progress);
        if !is_valid_process_name(process) {
            return Err(Error::InvalidProcessName {
                name: excerpt(process),
            });
        }
        // Fails before the upload is read if supervisord is down.
        let supervisor = self.supervisor_checked()?;
        // The upload is read before the home lock is taken, so that a slow
        // or stalled client never holds up other commands.
        let (id, upload) = self.claim_instance(process)?;
        let instance_dir = self.home.instance_dir(&id);
        let app_dir = instance_dir.join("app");
        let unpacked = (|| {
            crate::privacy::create_private_dir(&app_dir)?;
            let limits = Limits::for_folder(
                self.config.max_unpacked_bytes,
                self.home.config_file(),
                &app_dir,
            )?;
            unpack_tarball(tarball, &app_dir, &limits)
        })();
        let entries = match unpacked {
            Ok(entries) => entries,
            Err(error) => {
                drop(upload);
                let _ = sarge_venv::remove_tree(&instance_dir);
                return Err(error);
            }
        };
        steps.done("unpack", format!("{entries} entries into {instance_dir}"));

        let _lock = match HomeLock::acquire(&self.home, &mut steps) {
            Ok(lock) => lock,
            Err(error) => {
                drop(upload);
                let _ = sarge_venv::remove_tree(&instance_dir);
                return Err(error);
            }
        };
        let mut pending = PendingInstance {
            sarge: self,
            supervisor: &supervisor,
            id: id.clone(),
            armed: true,
        };
        self.clean_leftovers(&supervisor, &mut steps)?;
        upload.clear()?;
        let mut current = CurrentInstances::load(&self.home)?;
        let previous = current.processes.get(process).cloned();
        let routed = self.config.port_map.get(process);
        // What can fail without the app is checked before any more work.
        let port = self.allocate_port()?;
        let router = Router::new(&self.home, &self.config, &supervisor);
        if routed.is_some() {
            router.haproxy_bin()?;
        }

        let command = read_command(&app_dir, process)?;
        steps.done("procfile", format!("{process}: {command}; port {port}"));

        let requirements = app_dir.join("requirements.txt");
        let venv: Option<Venv> = if check_requirements(&app_dir)? {
            let dist = self.python_dist();
            let spec = EnvironmentSpec {
                python: &self.config.python_bin,
                requirements: &requirements,
                dist: &dist,
            };
            let venv = self.venv_store().ensure(&spec)?;
            if let Some(note) = venv.rebuild_note() {
                steps.note(note);
            }
            if !venv.reused {
                // The store seals venvs owner-only; uv makes some cache files
                // readable by all whatever the umask.
                crate::privacy::make_tree_private(&self.home.cache_dir())?;
            }
            steps.done(
                "virtualenv",
                if venv.reused {
                    format!("reused {}", venv.path)
                } else {
                    format!("installed requirements.txt from {dist} into {}", venv.path)
                },
            );
            Some(venv)
        } else {
            steps.done("virtualenv", "no requirements.txt, none needed");
            None
        };

        let record = InstanceRecord {
            id: id.clone(),
            process: process.to_owned(),
            port,
            created: rfc3339(SystemTime::now()),
            command: command.clone(),
            venv: venv.as_ref().map(|venv| venv.id.to_string()),
        };
        record.save(&self.home)?;
        let mut env = self.config.env.clone();
        env.insert("PORT".to_owned(), port.to_string());
        write_launcher(
            &instance_dir,
            &app_dir,
            &env,
            venv.as_ref().map(Venv::bin_dir).as_deref(),
            &command,
        )?;
        self.add_program(&supervisor, &id, &app_dir)?;
        steps.done("start", format!("supervisord program {id}"));

        // haproxy checks the next config while the app starts.
        let routing = Router::committed(&self.home, &current);
        let slot = match previous
            .as_ref()
            .and_then(|p| p.slot)
            .and_then(slot_from_char)
        {
            Some(Slot::A) => Slot::B,
            _ => Slot::A,
        };
        let staged = match routed {
            Some(_) => Some(router.stage_switch(&routing, process, slot, port)?),
            None => None,
        };
        // Starting haproxy (first deploy) or reloading it (a new stable
        // address) overlaps the app's start-up too. Either way it serves the
        // committed routes, so the old instance is unaffected.
        let live = match routed {
            Some(_) => Some(router.ensure(&routing)?),
            None => None,
        };

        let health = self.config.healthcheck.get(process);
        self.wait_ready(&supervisor, &record, routed.is_some() || health.is_some())?;
        steps.done(
            "ready",
            if routed.is_some() || health.is_some() {
                format!("{id} answers on port {port}")
            } else {
                format!("{id} is running under supervisord")
            },
        );

        let mut new_slot = None;
        if let (Some(address), Some(staged), Some(live)) = (routed, staged, &live) {
            router.switch(live, &routing, staged)?;
            // The last moment the old instance can take its traffic back:
            // if the new process died meanwhile, or the stable address does
            // not reach it through the live worker, route to the old again.
            let probe = Probe {
                path: health.map_or("/", |health| health.path.as_str()),
                host: "localhost",
            };
            let confirmed = self
                .confirm_alive(&supervisor, &record)
                .and_then(|_| router.verify(live, process, slot, &probe));
            if let Err(error) = confirmed {
                router.restore(live, &routing);
                return Err(error);
            }
            new_slot = Some(slot);
            steps.done("switch", format!("{address} -> 127.0.0.1:{port}"));
        }
        let pid = self.confirm_alive(&supervisor, &record)?;

        // The commit point: from here on the new instance is the current one.
        current.processes.insert(
            process.to_owned(),
            CurrentInstance {
                id: id.clone(),
                slot: new_slot.map(slot_char),
                ready_pid: Some(pid),
            },
        );
        if let Err(error) = current.save(&self.home) {
            // The state still names the old instance: it gets its traffic
            // back before the new one is removed.
            if let Some(live) = &live {
                router.restore(live, &routing);
            }
            return Err(error);
        }
        pending.armed = false;
        // Only a hint for where the next allocation starts.
        if let Err(error) = self.record_port(port) {
            steps.note(format!(
                "could not record port {port} as the last one used ({error})"
            ));
        }

        if let Some(old) = &previous {
            if let (Some(slot), Some(live)) = (old.slot.and_then(slot_from_char), &live) {
                let waited = router.drain(live, process, slot, self.config.drain_timeout);
                steps.done(
                    "drain",
                    format!("{} after {} ms", old.id, waited.as_millis()),
                );
            }
            // The deploy has succeeded: a failed cleanup is reported, and
            // the next command removes what is left as a leftover.
            match self.remove_instance(&supervisor, &old.id) {
                Ok(()) => steps.done("cleanup", format!("removed {}", old.id)),
                Err(error) => steps.note(format!(
                    "could not remove the old instance {} ({error}); the next sarge command will",
                    old.id
                )),
            }
        }
        if let Err(error) = self.collect_venvs(&current) {
            steps.note(format!("could not remove unused virtualenvs ({error})"));
        }

        Ok(Deployed {
            instance: record,
            replaced: previous.map(|old| old.id),
            venv_reused: venv.map(|venv| venv.reused),
            stable_address: routed.map(ToString::to_string),
            elapsed: started.elapsed(),
        })
    }

    fn add_program(
        &self,
        supervisor: &sarge_supervisor::Client,
        id: &str,
        app_dir: &Utf8Path,
    ) -> Result<()> {
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
        };
        crate::state::write_atomic(
            &self.home.program_file(id),
            program.render()?.as_bytes(),
            crate::privacy::PRIVATE_FILE,
        )?;
        supervisor.reload_config()?;
        supervisor.add_process_group(id)?;
        supervisor.start_process(id, false)?;
        Ok(())
    }

    /// Polls until the instance listens on its port (and answers its health
    /// check, if one is set), or fails as soon as its process exits.
    fn wait_ready(
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
        loop {
            let info = supervisor.process_info(&record.id)?;
            match info.state {
                ProcessState::Exited | ProcessState::Fatal | ProcessState::Backoff => {
                    return Err(self.exited(record, &info));
                }
                ProcessState::Running if !needs_port => return Ok(()),
                ProcessState::Running | ProcessState::Starting
                    if needs_port && accepts_connections(address) =>
                {
                    match health {
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
                    }
                }
                _ => {}
            }
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
            let pause = if started.elapsed() < Duration::from_secs(2) {
                5
            } else {
                50
            };
            std::thread::sleep(Duration::from_millis(pause));
        }
    }

    /// Fails if the instance's process is no longer starting or running;
    /// its pid if it is.
    fn confirm_alive(
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

    /// A new instance folder, created (so two deploys never share an id)
    /// and marked as being uploaded.
    fn claim_instance(&self, process: &str) -> Result<(String, UploadMark)> {
        use std::hash::{BuildHasher, Hasher};
        crate::privacy::create_private_dir(&self.home.instances_dir())?;
        loop {
            // RandomState is seeded from the OS: a cheap, dependency-free
            // source of unique ids.
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_nanos())
                    .unwrap_or(0),
            );
            let id = format!("{process}-{:06x}", hasher.finish() & 0xff_ffff);
            let dir = self.home.instance_dir(&id);
            match std::fs::DirBuilder::new()
                .mode(crate::privacy::PRIVATE_DIR)
                .create(&dir)
            {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error.into()),
            }
            match UploadMark::new(&dir) {
                Ok(mark) => return Ok((id, mark)),
                Err(error) => {
                    let _ = sarge_venv::remove_tree(&dir);
                    return Err(error);
                }
            }
        }
    }

    fn allocate_port(&self) -> Result<u16> {
        let used: BTreeSet<u16> = self
            .instance_ids()?
            .iter()
            .filter_map(|id| InstanceRecord::load(&self.home, id).ok())
            .map(|record| record.port)
            .collect();
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

    fn record_port(&self, port: u16) -> Result<()> {
        let allocator = sarge_ports::PortAllocator::new(
            self.home.ports_file(),
            self.config.port_range.as_range(),
        );
        allocator.record(port)?;
        Ok(())
    }
}

/// Most bytes of a Procfile sarge reads: a few lines in practice.
const PROCFILE_LIMIT: u64 = 64 * 1024;
/// Most bytes of a requirements.txt: hundreds of pinned, hashed lines fit.
const REQUIREMENTS_LIMIT: u64 = 1024 * 1024;

/// The Procfile command of `process` in the app unpacked at `app_dir`.
fn read_command(app_dir: &Utf8Path, process: &str) -> Result<String> {
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
    let procfile = Procfile::parse(&text, name)?;
    let command = procfile
        .command(process)
        .ok_or_else(|| Error::ProcessNotInProcfile {
            process: excerpt(process),
            available: excerpt(&procfile.names().collect::<Vec<_>>().join(", ")),
        })?;
    Ok(command.to_owned())
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

/// Removes an instance that never became current, unless disarmed.
struct PendingInstance<'a> {
    sarge: &'a Sarge,
    supervisor: &'a sarge_supervisor::Client,
    id: String,
    armed: bool,
}

impl Drop for PendingInstance<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.sarge.remove_instance(self.supervisor, &self.id);
        }
    }
}

/// Whether something listens on `address`. A connect to a loopback port
/// nobody listens on can succeed by connecting to itself, when the kernel
/// picks that very port as the ephemeral source port (TCP simultaneous
/// open); that would pass a dead instance as ready, so it does not count.
fn accepts_connections(address: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&address, Duration::from_millis(250)) {
        Ok(stream) => stream.local_addr().ok() != stream.peer_addr().ok(),
        Err(_) => false,
    }
}

/// The last lines of a log file, for errors about an instance that failed.
pub(crate) fn log_tail(path: &Utf8Path) -> String {
    use std::io::{Seek, SeekFrom};
    const TAIL_BYTES: u64 = 4096;
    const TAIL_LINES: usize = 15;
    let Ok(mut file) = std::fs::File::open(path) else {
        return "(no log written)".to_owned();
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    if tail.trim().is_empty() {
        "(log is empty)".to_owned()
    } else {
        tail
    }
}

/// The status code of `GET path` on `address`, asking for `host` (the
/// app may check it, as Django's `ALLOWED_HOSTS` does).
pub(crate) fn http_status(address: SocketAddr, host: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    // One write: several small ones would wait on Nagle and delayed ACKs.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: sarge\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut head = [0u8; 32];
    let mut filled = 0;
    while filled < 12 {
        let read = stream.read(&mut head[filled..])?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    let head = String::from_utf8_lossy(&head[..filled]);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))
}

/// An I/O error that names what was done to which file, keeping the
/// system's reason.
fn failed_at(action: &str, path: &Utf8Path, source: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        source.kind(),
        format!("cannot {action} {path}: {source}"),
    ))
}
