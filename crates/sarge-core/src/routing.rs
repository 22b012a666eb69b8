//! Keeping haproxy's routes in line with the current instances: the config
//! file for restarts, the admin socket for switches that drop nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use sarge_config::Config;
use sarge_haproxy::{AdminClient, HaproxyConfig, Route, Slot};
use sarge_supervisor::{Client, ProcessState, Program};

use crate::error::{Error, Result};
use crate::home::Home;
use crate::state::{write_atomic, CurrentInstances, InstanceRecord};

/// The supervisord program that runs haproxy.
pub(crate) const HAPROXY_PROGRAM: &str = "haproxy";

/// How long haproxy may take to answer on its admin socket after a start
/// or reload.
const HAPROXY_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where each routed process points: its slot and port.
pub(crate) type Routing = BTreeMap<String, (Slot, u16)>;

pub(crate) struct Router<'a> {
    home: &'a Home,
    config: &'a Config,
    supervisor: &'a Client,
    admin: AdminClient,
    /// `haproxy_bin` resolved once; `None` if it cannot be found.
    bin: Option<Utf8PathBuf>,
}

impl<'a> Router<'a> {
    pub(crate) fn new(home: &'a Home, config: &'a Config, supervisor: &'a Client) -> Self {
        Self {
            home,
            config,
            supervisor,
            admin: AdminClient::new(home.haproxy_socket()),
            bin: resolve_binary(&config.haproxy_bin),
        }
    }

    /// The routing the committed state describes.
    pub(crate) fn committed(home: &Home, current: &CurrentInstances) -> Result<Routing> {
        let mut routing = Routing::new();
        for (process, instance) in &current.processes {
            if let Some(slot) = instance.slot.and_then(slot_from_char) {
                let record = InstanceRecord::load(home, &instance.id)?;
                routing.insert(process.clone(), (slot, record.port));
            }
        }
        Ok(routing)
    }

    /// The haproxy config for `routing`, validated (paths haproxy cannot
    /// take, such as a socket path over its length limit, fail here).
    pub(crate) fn render(&self, routing: &Routing) -> Result<HaproxyConfig> {
        let config = render_config(self.home, self.config, routing);
        config.validate()?;
        Ok(config)
    }

    /// Makes sure haproxy runs with a config matching `routing`, starting or
    /// reloading it only when needed, and that its runtime state matches
    /// (which repairs a switch that a killed deploy left half-done).
    pub(crate) fn ensure(&self, routing: &Routing) -> Result<()> {
        if self.config.port_map.is_empty() {
            return Ok(());
        }
        let bin = self.haproxy_bin()?;
        let config = self.render(routing)?;
        let config_path = self.home.haproxy_config();
        let previous_text = fs_err::read_to_string(&config_path).ok();
        let config_changed = previous_text.as_deref() != Some(config.render().as_str());
        if config_changed {
            config.write_checked(&config_path, &bin)?;
        }
        let program_file = self.home.program_file(HAPROXY_PROGRAM);
        let previous_program = fs_err::read_to_string(&program_file).ok();
        let started = self.start_or_reload(&bin, &config, config_changed);
        if started.is_err() {
            // Put back the files as they were, so nothing of a failed
            // deploy stays and the next attempt sees the change again.
            if previous_program.is_none() {
                let _ = self.supervisor.stop_process(HAPROXY_PROGRAM, true);
                let _ = self.supervisor.remove_process_group(HAPROXY_PROGRAM);
            }
            restore_file(&program_file, previous_program.as_deref());
            if config_changed {
                restore_file(&config_path, previous_text.as_deref());
            }
        }
        started?;
        for route in &config.routes {
            self.admin.apply(route)?;
        }
        Ok(())
    }

    /// Starts haproxy under supervisord if it is not running (restarting it
    /// only if its command changed), or reloads it if its config changed.
    fn start_or_reload(
        &self,
        bin: &Utf8Path,
        config: &HaproxyConfig,
        config_changed: bool,
    ) -> Result<()> {
        let program = haproxy_program(self.home, bin);
        let program_file = self.home.program_file(HAPROXY_PROGRAM);
        let program_text = program.render()?;
        let program_changed =
            fs_err::read_to_string(&program_file).ok().as_deref() != Some(program_text.as_str());
        // STARTING counts: haproxy serves from its first second, before
        // supervisord calls it RUNNING.
        let running = matches!(
            self.supervisor.process_info(HAPROXY_PROGRAM),
            Ok(info) if matches!(info.state, ProcessState::Running | ProcessState::Starting)
        );
        if program_changed {
            write_atomic(
                &program_file,
                program_text.as_bytes(),
                crate::privacy::PRIVATE_FILE,
            )?;
            self.supervisor.reload_config()?;
            // The command changed (another haproxy binary): this is the one
            // case where haproxy is restarted.
            self.supervisor.stop_process(HAPROXY_PROGRAM, true).ok();
            self.supervisor.remove_process_group(HAPROXY_PROGRAM)?;
            self.supervisor.add_process_group(HAPROXY_PROGRAM)?;
            self.supervisor.start_process(HAPROXY_PROGRAM, false)?;
            self.wait_up(config)
        } else if !running {
            self.supervisor.reload_config()?;
            self.supervisor.add_process_group(HAPROXY_PROGRAM)?;
            self.supervisor.start_process(HAPROXY_PROGRAM, false)?;
            self.wait_up(config)
        } else if config_changed {
            // A new or removed stable address: a structural change, so the
            // master reloads; its old worker finishes the open connections.
            self.supervisor.signal_process(HAPROXY_PROGRAM, "USR2")?;
            self.wait_up(config)
        } else {
            Ok(())
        }
    }

    /// Prepares a switch of `process` to `port` on `slot`: writes the
    /// config haproxy will have afterwards beside the live one and starts
    /// `haproxy -c` on it, which then runs while the new instance starts.
    pub(crate) fn stage_switch(
        &self,
        routing: &Routing,
        process: &str,
        slot: Slot,
        port: u16,
    ) -> Result<StagedSwitch> {
        let bin = self.haproxy_bin()?;
        let mut next = routing.clone();
        next.insert(process.to_owned(), (slot, port));
        let staged = staged_path(&self.home.haproxy_config());
        self.render(&next)?.write(&staged)?;
        let check = match sarge_haproxy::spawn_check(&bin, &staged) {
            Ok(check) => check,
            Err(error) => {
                let _ = fs_err::remove_file(&staged);
                return Err(error.into());
            }
        };
        Ok(StagedSwitch {
            process: process.to_owned(),
            slot,
            port,
            staged,
            check: Some(check),
        })
    }

    /// Sends new connections for the staged process to its new port; the
    /// other slot (the old instance) goes into maintenance. The checked
    /// config then replaces the live one, so a reload lands in this state.
    pub(crate) fn switch(&self, routing: &Routing, mut staged: StagedSwitch) -> Result<()> {
        if let Some(check) = staged.check.take() {
            check.wait()?;
        }
        if let Err(error) = self.admin.switch(&staged.process, staged.slot, staged.port) {
            self.restore(routing);
            return Err(error.into());
        }
        fs_err::rename(&staged.staged, self.home.haproxy_config())?;
        Ok(())
    }

    /// Puts back the routes of `routing` (the committed state), in the
    /// running haproxy and its config file, so the old instances keep
    /// serving after a failed switch. Best effort: it runs on a path that
    /// already reports an error.
    pub(crate) fn restore(&self, routing: &Routing) {
        if let Ok(config) = self.render(routing) {
            for route in &config.routes {
                let _ = self.admin.apply(route);
            }
            let _ = config.write(&self.home.haproxy_config());
        }
    }

    /// Takes `process` out of routing (its instance is being destroyed).
    pub(crate) fn unroute(&self, routing: &Routing, process: &str) -> Result<()> {
        let mut next = routing.clone();
        next.remove(process);
        let config = self.render(&next)?;
        if let Some(route) = config.routes.iter().find(|route| route.name == process) {
            self.admin.apply(route)?;
        }
        Ok(config.write(&self.home.haproxy_config())?)
    }

    /// Waits until `slot` of `process` has no open sessions, at most `limit`.
    pub(crate) fn drain(&self, process: &str, slot: Slot, limit: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < limit {
            match self.admin.sessions(process, slot) {
                Ok(0) | Err(_) => break,
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        started.elapsed()
    }

    fn wait_up(&self, config: &HaproxyConfig) -> Result<()> {
        let started = Instant::now();
        let failed = |problem: String| {
            let log = self.home.program_log(HAPROXY_PROGRAM);
            Error::HaproxyNotUp {
                problem,
                log_tail: crate::deploy::log_tail(&log),
                log,
            }
        };
        while started.elapsed() < HAPROXY_START_TIMEOUT {
            // After a reload the new worker answers only once it has every
            // route; the old one may still hold the socket for a moment.
            if self.admin.is_up()
                && config
                    .routes
                    .iter()
                    .all(|route| self.admin.sessions(&route.name, Slot::A).is_ok())
            {
                return Ok(());
            }
            // A haproxy that cannot start (a stable address already taken)
            // fails now, not after the whole wait.
            if let Ok(info) = self.supervisor.process_info(HAPROXY_PROGRAM) {
                if matches!(
                    info.state,
                    ProcessState::Backoff | ProcessState::Fatal | ProcessState::Exited
                ) {
                    return Err(failed(format!(
                        "it exited: {}",
                        info.state.name().to_ascii_lowercase()
                    )));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(failed(format!(
            "no answer with every route on {} within {} s",
            self.home.haproxy_socket(),
            HAPROXY_START_TIMEOUT.as_secs()
        )))
    }

    /// `haproxy_bin` made absolute through `PATH`, since supervisord's own
    /// `PATH` may differ from the user's.
    pub(crate) fn haproxy_bin(&self) -> Result<Utf8PathBuf> {
        self.bin.clone().ok_or_else(|| Error::HaproxyNotFound {
            bin: self.config.haproxy_bin.clone(),
            config: self.home.config_file(),
        })
    }
}

/// A switch prepared by [`Router::stage_switch`]: its config is staged
/// and being checked. Dropped without [`Router::switch`], it leaves the
/// live config alone.
pub(crate) struct StagedSwitch {
    process: String,
    slot: Slot,
    port: u16,
    staged: Utf8PathBuf,
    check: Option<sarge_haproxy::PendingCheck>,
}

impl Drop for StagedSwitch {
    fn drop(&mut self) {
        // After a successful switch the file was renamed away: nothing to do.
        let _ = std::fs::remove_file(&self.staged);
    }
}

/// The haproxy config for `routing` under `config`'s stable addresses.
pub(crate) fn render_config(home: &Home, config: &Config, routing: &Routing) -> HaproxyConfig {
    let routes = config
        .port_map
        .iter()
        .map(|(process, address)| {
            let mut route = Route {
                name: process.clone(),
                bind: address.to_string(),
                active: None,
                ports: [None, None],
            };
            if let Some((slot, port)) = routing.get(process) {
                route.active = Some(*slot);
                route.ports[slot_index(*slot)] = Some(*port);
            }
            route
        })
        .collect();
    HaproxyConfig {
        admin_socket: home.haproxy_socket(),
        routes,
    }
}

fn haproxy_program(home: &Home, bin: &Utf8Path) -> Program {
    Program {
        name: HAPROXY_PROGRAM.to_owned(),
        command: vec![
            bin.to_string(),
            "-W".into(),
            "-db".into(),
            "-f".into(),
            home.haproxy_config().to_string(),
        ],
        directory: home.root().to_owned(),
        log_file: home.program_log(HAPROXY_PROGRAM),
        autostart: true,
        autorestart: true,
        start_secs: 1,
        start_retries: 3,
        stop_wait_secs: 10,
        stop_as_group: false,
    }
}

/// Puts `path` back to `previous` content, or removes it if it did not
/// exist. Best effort: it runs on a path that already reports an error.
fn restore_file(path: &Utf8Path, previous: Option<&str>) {
    let _ = match previous {
        Some(text) => write_atomic(path, text.as_bytes(), crate::privacy::PRIVATE_FILE),
        None => fs_err::remove_file(path).map_err(Into::into),
    };
}

/// Where a switch stages the config it has haproxy check.
pub(crate) fn staged_path(path: &Utf8Path) -> Utf8PathBuf {
    path.with_extension("cfg.next")
}

/// `bin` itself if it contains a `/`, else the first match on `PATH`.
pub(crate) fn resolve_binary(bin: &Utf8Path) -> Option<Utf8PathBuf> {
    if bin.as_str().contains('/') {
        return bin.is_file().then(|| bin.to_owned());
    }
    let path = std::env::var("PATH").ok()?;
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Utf8Path::new(dir).join(bin))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Utf8Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub(crate) fn slot_from_char(slot: char) -> Option<Slot> {
    match slot {
        'a' => Some(Slot::A),
        'b' => Some(Slot::B),
        _ => None,
    }
}

pub(crate) fn slot_char(slot: Slot) -> char {
    match slot {
        Slot::A => 'a',
        Slot::B => 'b',
    }
}

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}
