//! Keeping haproxy's routes in line with the current instances: the config
//! file for restarts, the admin socket for switches that drop nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use sarge_config::{Config, StableAddress};
use sarge_haproxy::{AdminClient, HaproxyConfig, MasterClient, Route, Server};
use sarge_supervisor::{Client, ProcessState, Program};

use crate::error::{Error, Result};
use crate::home::Home;
use crate::state::{write_atomic, CurrentInstances, InstanceRecord};

/// The supervisord program that runs haproxy.
pub(crate) const HAPROXY_PROGRAM: &str = "haproxy";

/// How long haproxy may take to answer on its admin socket after a start
/// or reload.
const HAPROXY_START_TIMEOUT: Duration = Duration::from_secs(10);

/// The servers (instances) behind each routed process's stable address.
pub(crate) type Routing = BTreeMap<String, Vec<Server>>;

pub(crate) struct Router<'a> {
    home: &'a Home,
    config: &'a Config,
    supervisor: &'a Client,
    master: MasterClient,
    /// `haproxy_bin` resolved once; `None` if it cannot be found.
    bin: Option<Utf8PathBuf>,
}

/// The haproxy worker the master names as the live one: every admin
/// command of a rollout goes to it, never to a worker on its way out.
pub(crate) struct LiveWorker {
    admin: AdminClient,
}

impl LiveWorker {
    fn pid(&self) -> u32 {
        self.admin.worker().unwrap_or_default()
    }
}

impl<'a> Router<'a> {
    pub(crate) fn new(home: &'a Home, config: &'a Config, supervisor: &'a Client) -> Self {
        Self {
            home,
            config,
            supervisor,
            master: MasterClient::new(home.haproxy_master_socket()),
            bin: resolve_binary(&config.haproxy_bin),
        }
    }

    /// The routing the committed state describes. A current instance whose
    /// record is gone is left out: it cannot be routed to, and recovery
    /// drops it from the state.
    pub(crate) fn committed(home: &Home, current: &CurrentInstances) -> Routing {
        let mut routing = Routing::new();
        for (process, instance) in current.instances() {
            if !instance.routed {
                continue;
            }
            if let Ok(record) = InstanceRecord::load(home, &instance.id) {
                routing
                    .entry(process.to_string())
                    .or_default()
                    .push(Server::new(record.id, record.port));
            }
        }
        routing
    }

    /// The haproxy config for `routing`, validated (paths haproxy cannot
    /// take, such as a socket path over its length limit, fail here).
    pub(crate) fn render(&self, routing: &Routing) -> Result<HaproxyConfig> {
        let config = render_config(self.home, self.config, routing);
        config.validate()?;
        self.master.validate()?;
        Ok(config)
    }

    /// Makes sure haproxy runs with a config matching `routing`, starting,
    /// restarting or reloading it only when needed (a new or moved stable
    /// address; servers change at runtime), and that the live worker's
    /// servers match (which repairs a switch that a killed command left
    /// half-done). On failure the files are put back and the haproxy that
    /// ran before keeps running.
    ///
    /// With `touched`, a haproxy that was neither started nor reloaded has
    /// only those routes checked and repaired: a rollout of one process
    /// costs the same however many others are routed. (A command killed
    /// halfway leaves leftovers, whose cleanup checks every route.)
    pub(crate) fn ensure(&self, routing: &Routing, touched: Option<&[&str]>) -> Result<LiveWorker> {
        let bin = self.haproxy_bin()?;
        let config = self.render(routing)?;
        let config_path = self.home.haproxy_config();
        let previous_text = fs_err::read_to_string(&config_path).ok();
        let structure_changed = !previous_text
            .as_deref()
            .is_some_and(|text| config.same_structure(text));
        if structure_changed {
            config.write_checked(&config_path, &bin)?;
        }
        let program_file = self.home.program_file(HAPROXY_PROGRAM);
        let previous_program = fs_err::read_to_string(&program_file).ok();
        let reload_from = previous_text.as_deref().filter(|_| structure_changed);
        let started = self.start_or_reload(&bin, &config, reload_from);
        if started.is_err() {
            // Put back the files as they were, so nothing of a failed
            // deploy stays and the next attempt sees the change again.
            if structure_changed {
                restore_file(&config_path, previous_text.as_deref());
            }
            let program_changed = fs_err::read_to_string(&program_file).ok() != previous_program;
            if program_changed {
                restore_file(&program_file, previous_program.as_deref());
                let _ = self.supervisor.reload_config();
                let _ = self.supervisor.stop_process(HAPROXY_PROGRAM, true);
                let _ = self.supervisor.remove_process_group(HAPROXY_PROGRAM);
                // The haproxy that ran before comes back.
                if previous_program.is_some() {
                    let _ = self.supervisor.add_process_group(HAPROXY_PROGRAM);
                    let _ = self.supervisor.start_process(HAPROXY_PROGRAM, false);
                }
            } else if previous_program.is_none() {
                let _ = self.supervisor.stop_process(HAPROXY_PROGRAM, true);
                let _ = self.supervisor.remove_process_group(HAPROXY_PROGRAM);
                restore_file(&program_file, None);
            }
        }
        let (live, restarted) = started?;
        let checked = |route: &&Route| {
            restarted || touched.is_none_or(|touched| touched.contains(&route.name.as_str()))
        };
        for route in config.routes.iter().filter(checked) {
            live.admin.resume_if_paused(&route.name)?;
            live.admin.apply(route)?;
        }
        if !structure_changed && previous_text.as_deref() != Some(config.render().as_str()) {
            // Only servers differ: the runtime now has them, and a later
            // reload must come back the same.
            config.write(&config_path)?;
        }
        Ok(live)
    }

    /// Starts haproxy under supervisord if it is not running (restarting it
    /// only if its command changed), or reloads it if its config changed;
    /// returns the worker that serves the config on disk, once it answers,
    /// and whether haproxy was started, restarted or reloaded. `reload_from`
    /// is the config haproxy runs, if the one on disk differs from it in
    /// more than servers.
    fn start_or_reload(
        &self,
        bin: &Utf8Path,
        config: &HaproxyConfig,
        reload_from: Option<&str>,
    ) -> Result<(LiveWorker, bool)> {
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
            // Another binary (or an older sarge's command line): the one
            // case where haproxy is restarted. The new binary must prove it
            // is a haproxy that takes the config before the running one stops.
            self.check_binary(bin)?;
            write_atomic(
                &program_file,
                program_text.as_bytes(),
                crate::privacy::PRIVATE_FILE,
            )?;
            self.supervisor.reload_config()?;
            self.supervisor.stop_process(HAPROXY_PROGRAM, true).ok();
            self.supervisor.remove_process_group(HAPROXY_PROGRAM)?;
            self.supervisor.add_process_group(HAPROXY_PROGRAM)?;
            self.supervisor.start_process(HAPROXY_PROGRAM, false)?;
            Ok((self.wait_live(config, None)?, true))
        } else if !running {
            self.supervisor.reload_config()?;
            self.supervisor.add_process_group(HAPROXY_PROGRAM)?;
            self.supervisor.start_process(HAPROXY_PROGRAM, false)?;
            Ok((self.wait_live(config, None)?, true))
        } else if let Some(previous) = reload_from {
            // A new or removed stable address: a structural change, so the
            // master reloads; its old worker finishes the open connections.
            // The file is final by now, so the new worker reads this config.
            self.check_new_addresses_free(previous)?;
            let pid = self
                .master
                .reload(HAPROXY_START_TIMEOUT)
                .map_err(|error| self.not_up(error.to_string()))?;
            Ok((self.wait_live(config, Some(pid))?, true))
        } else {
            Ok((self.wait_live(config, None)?, false))
        }
    }

    /// Refuses, before haproxy is reloaded, a stable address that another
    /// program listens on. `haproxy -c` does not bind, so only the new
    /// worker would find out, and while it retries the bind it pauses the
    /// old worker's listeners: for about a second every stable address
    /// refuses connections, before the reload fails. A port the running
    /// config binds is left alone: haproxy takes it over itself (an
    /// address switched between `127.0.0.1:P` and `*:P`).
    fn check_new_addresses_free(&self, previous: &str) -> Result<()> {
        let held = HaproxyConfig::bound_ports(previous);
        for (process, address) in &self.config.port_map {
            if held.contains(&address.port) {
                continue;
            }
            for target in bind_targets(address) {
                match std::net::TcpListener::bind(target) {
                    Err(source) if source.kind() == std::io::ErrorKind::AddrInUse => {
                        return Err(Error::StableAddressTaken {
                            process: process.to_string(),
                            address: address.to_string(),
                            config: self.home.config_file(),
                            source,
                        });
                    }
                    // Other refusals (a host not on this machine, a port
                    // below 1024) are haproxy's to report: it does not
                    // pause the old worker for those.
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Runs `bin -v` and `bin -c` on the live config: a `haproxy_bin` that
    /// is not haproxy, or cannot read the config, never replaces one that runs.
    fn check_binary(&self, bin: &Utf8Path) -> Result<()> {
        let output = std::process::Command::new(bin.as_std_path())
            .arg("-v")
            .output()
            .map_err(|source| Error::Spawn {
                program: bin.to_string(),
                source,
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !text.contains("HAProxy version") {
            return Err(Error::HaproxyBinaryRefused {
                bin: bin.to_owned(),
                config: self.home.config_file(),
                problem: format!(
                    "`{bin} -v` {} without printing a HAProxy version{}",
                    describe_status(output.status),
                    excerpt(&text, &output.stderr)
                ),
            });
        }
        sarge_haproxy::check_config(bin, &self.home.haproxy_config()).map_err(|error| {
            Error::HaproxyBinaryRefused {
                bin: bin.to_owned(),
                config: self.home.config_file(),
                problem: error.to_string(),
            }
        })
    }

    /// Gives each process of `changes` its new servers: every server it
    /// did not have joins its backend ready, then every server it no
    /// longer has goes into maintenance (its open requests finish), so the
    /// stable address never has fewer ready servers than either side.
    /// Returns the config that says the same, for the caller to write (so
    /// a reload lands in this state) while it verifies the switch. On
    /// failure the committed routes are back.
    pub(crate) fn switch(
        &self,
        live: &LiveWorker,
        routing: &Routing,
        changes: &Routing,
    ) -> Result<HaproxyConfig> {
        let mut next = routing.clone();
        let switched = (|| -> Result<HaproxyConfig> {
            for (process, servers) in changes {
                let before = routing.get(process).map_or(&[][..], Vec::as_slice);
                for server in servers {
                    if !before.contains(server) {
                        live.admin.add_server(process, server)?;
                    }
                }
                for server in before {
                    if !servers.contains(server) {
                        live.admin.disable_server(process, &server.name)?;
                    }
                }
                next.insert(process.clone(), servers.clone());
            }
            self.render(&next)
        })();
        if switched.is_err() {
            self.restore(live, routing);
        }
        switched
    }

    /// Checks the end state a user relies on after a switch: the worker
    /// that was switched is still the live one, every stable address
    /// accepts connections, and a request on `process`'s stable address
    /// reaches one of `servers` (their request count rises).
    pub(crate) fn verify(
        &self,
        live: &LiveWorker,
        process: &str,
        servers: &[Server],
        probe: &Probe<'_>,
    ) -> Result<()> {
        let failed = |problem: String| Error::SwitchNotVerified {
            process: process.to_owned(),
            problem,
        };
        let processes = self
            .master
            .processes()
            .map_err(|error| failed(format!("haproxy's master did not answer: {error}")))?;
        if processes.current_worker() != Some(live.pid()) {
            return Err(failed(format!(
                "haproxy's live worker is now {:?}, not {} which was switched",
                processes.workers,
                live.pid()
            )));
        }
        for (name, address) in &self.config.port_map {
            let target = connect_address(address);
            if let Err(error) = crate::probe::connect(target, Duration::from_secs(2)) {
                return Err(failed(format!(
                    "the stable address {address} of {name} refuses connections ({error})"
                )));
            }
        }
        let Some(address) = self.config.port_map.get(process) else {
            return Ok(());
        };
        if servers.is_empty() {
            // Scaled to zero: nothing to reach.
            return Ok(());
        }
        // haproxy counts a request against the server it picks before the
        // answer comes, so a slow page still proves the route.
        let total = || -> Result<u64> {
            servers.iter().try_fold(0, |sum, server| {
                Ok(sum + u64::from(live.admin.sessions_total(process, &server.name)?))
            })
        };
        let before = total()?;
        let answer = probe.send(connect_address(address));
        let after = total()?;
        if after > before {
            return Ok(());
        }
        Err(failed(match answer {
            Ok(status) => {
                format!("a request on {address} was answered ({status}) but not by a new instance")
            }
            Err(error) => format!("a request on {address} did not reach a new instance: {error}"),
        }))
    }

    /// Puts back the routes of `routing` (the committed state), in the
    /// live worker and its config file, so the old instances keep serving
    /// after a failed switch. Best effort: it runs on a path that already
    /// reports an error.
    pub(crate) fn restore(&self, live: &LiveWorker, routing: &Routing) {
        if let Ok(config) = self.render(routing) {
            for route in &config.routes {
                let _ = live.admin.apply(route);
            }
            let _ = config.write(&self.home.haproxy_config());
        }
    }

    /// The live worker, for commands that change routes without a reload.
    pub(crate) fn live(&self) -> Result<LiveWorker> {
        let config = self.render(&Routing::new())?;
        self.wait_live(&config, None)
    }

    /// Takes `process` out of routing (its instance is being destroyed).
    pub(crate) fn unroute(&self, routing: &Routing, process: &str) -> Result<()> {
        let mut next = routing.clone();
        next.remove(process);
        let config = self.render(&next)?;
        if let Some(route) = config.routes.iter().find(|route| route.name == process) {
            self.live()?.admin.apply(route)?;
        }
        Ok(config.write(&self.home.haproxy_config())?)
    }

    /// Waits until server `server` of `process` has no open sessions, at
    /// most `limit`.
    pub(crate) fn drain(
        &self,
        live: &LiveWorker,
        process: &str,
        server: &str,
        limit: Duration,
    ) -> Duration {
        let started = Instant::now();
        while started.elapsed() < limit {
            match live.admin.sessions(process, server) {
                Ok(0) | Err(_) => break,
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        started.elapsed()
    }

    /// Deletes the drained server `server` of `process` from the live
    /// worker. Best effort: one haproxy still holds a connection to stays
    /// in maintenance until the next rollout's [`Router::ensure`] deletes it.
    pub(crate) fn forget(&self, live: &LiveWorker, process: &str, server: &str) {
        let _ = live.admin.delete_server(process, server);
    }

    /// Waits until haproxy's master names one live worker (`expected`, if
    /// given) and that worker answers for every route of `config`.
    fn wait_live(&self, config: &HaproxyConfig, expected: Option<u32>) -> Result<LiveWorker> {
        let started = Instant::now();
        let mut last_problem = "its master CLI never answered".to_owned();
        while started.elapsed() < HAPROXY_START_TIMEOUT {
            match self.master.processes() {
                Ok(processes) => match processes.current_worker() {
                    Some(pid) if expected.is_none_or(|expected| expected == pid) => {
                        let admin = self.master.worker(pid);
                        // One round trip, however many routes.
                        match admin.routes() {
                            Ok(routes)
                                if config
                                    .routes
                                    .iter()
                                    .all(|route| routes.contains(&route.name)) =>
                            {
                                return Ok(LiveWorker { admin })
                            }
                            Ok(routes) => {
                                last_problem = format!("worker {pid} has the routes {routes:?}")
                            }
                            Err(error) => last_problem = format!("worker {pid}: {error}"),
                        }
                    }
                    _ => {
                        last_problem = format!("its workers are {:?}", processes.workers);
                    }
                },
                Err(error) => last_problem = error.to_string(),
            }
            // A haproxy that cannot start (a stable address already taken)
            // fails now, not after the whole wait.
            if let Ok(info) = self.supervisor.process_info(HAPROXY_PROGRAM) {
                if matches!(
                    info.state,
                    ProcessState::Backoff | ProcessState::Fatal | ProcessState::Exited
                ) {
                    return Err(self.not_up(format!(
                        "it exited: {}",
                        info.state.name().to_ascii_lowercase()
                    )));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(self.not_up(format!(
            "no live worker answering for every route within {} s ({last_problem})",
            HAPROXY_START_TIMEOUT.as_secs()
        )))
    }

    fn not_up(&self, problem: String) -> Error {
        let log = self.home.program_log(HAPROXY_PROGRAM);
        Error::HaproxyNotUp {
            problem,
            log_tail: crate::logs::log_tail(&log),
            log,
        }
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

/// The request [`Router::verify`] sends through a stable address.
pub(crate) struct Probe<'a> {
    /// The path to request: the health check's, else `/`.
    pub(crate) path: &'a str,
    /// The `Host` header.
    pub(crate) host: &'a str,
}

impl Probe<'_> {
    /// Sends the request and returns the status of the answer, whatever it is.
    fn send(&self, address: SocketAddr) -> std::io::Result<u16> {
        crate::probe::http_status(address, self.host, self.path)
    }
}

/// Where to connect to reach a stable address from this machine: its own
/// host, or loopback for one bound on every interface.
fn connect_address(address: &StableAddress) -> SocketAddr {
    use std::net::ToSocketAddrs;
    let port = address.port;
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    match address.host.as_deref() {
        None | Some("0.0.0.0") => loopback,
        Some("::") => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        Some(host) => (host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .unwrap_or(loopback),
    }
}

/// The socket addresses haproxy binds for `address`: `*` is every IPv4
/// interface, a host name each address it resolves to.
fn bind_targets(address: &StableAddress) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
    match address.host.as_deref() {
        None => vec![SocketAddr::from(([0, 0, 0, 0], address.port))],
        Some(host) => (host, address.port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default(),
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited {code}"),
        None => "was killed".to_owned(),
    }
}

/// A short excerpt of what a program printed, for an error message.
fn excerpt(stdout: &str, stderr: &[u8]) -> String {
    let text = format!("{stdout}{}", String::from_utf8_lossy(stderr));
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let short: String = text.chars().take(200).collect();
    format!(": {short}")
}

/// The haproxy config for `routing` under `config`'s stable addresses.
pub(crate) fn render_config(home: &Home, config: &Config, routing: &Routing) -> HaproxyConfig {
    let routes = config
        .port_map
        .iter()
        .map(|(process, address)| {
            Route::new(process.to_string(), address.to_string())
                .with_servers(routing.get(process.as_str()).cloned().unwrap_or_default())
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
            // The master CLI: which worker is live, reloads with an outcome.
            "-S".into(),
            format!("{},mode,600", home.haproxy_master_socket()),
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
        // Fixed, not the app's log_max_bytes: a change to haproxy's
        // program restarts it, and it logs little.
        log_max_bytes: 10 * 1024 * 1024,
        log_backups: 3,
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

/// Where an older sarge staged the config it had haproxy check before a
/// switch; a killed one may have left it.
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
