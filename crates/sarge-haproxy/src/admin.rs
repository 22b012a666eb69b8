//! A small client for haproxy's admin (stats) socket: switching which slot of
//! a route serves, without reloading haproxy.

use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};
use crate::model::{backend_name, frontend_name, Route, Slot};

/// Answers haproxy gives instead of doing what was asked. The CLI has no
/// status code, and `set severity-output` does not help: 2.6 tags
/// "Invalid addr" with the same severity as success notices.
const ERROR_PREFIXES: &[&str] = &[
    "No such",
    "Unknown command",
    "Require ",
    "Permission denied",
    "Invalid ",
    "Proxy is disabled",
    "Can't ",
    "Cannot ",
    "Missing ",
    "'set server",
    "'show stat",
];

/// `srv_admin_state` bits meaning "in maintenance": forced (0x01),
/// inherited (0x02), resolution (0x20). 0x04 only records that the config
/// said `disabled` and stays set after `state ready`.
const ADMIN_MAINT_MASK: u32 = 0x23;

/// Talks to haproxy over its admin socket, one command per connection:
/// the stats socket, or one chosen worker through the master CLI (see
/// [`MasterClient::worker`](crate::MasterClient::worker)).
#[derive(Debug, Clone)]
pub struct AdminClient {
    socket: Utf8PathBuf,
    /// `Some(pid)`: `socket` is the master CLI and commands go to worker `pid`.
    worker: Option<u32>,
    timeout: Duration,
}

impl AdminClient {
    /// A client for the admin socket at `socket`; nothing is opened yet.
    pub fn new(socket: impl Into<Utf8PathBuf>) -> Self {
        AdminClient {
            socket: socket.into(),
            worker: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// A client whose commands reach worker `pid` through the master CLI
    /// at `master_socket`.
    pub(crate) fn through_master(master_socket: Utf8PathBuf, pid: u32) -> Self {
        AdminClient {
            socket: master_socket,
            worker: Some(pid),
            timeout: Duration::from_secs(10),
        }
    }

    /// The worker pid commands are sent to, if sent through the master.
    pub fn worker(&self) -> Option<u32> {
        self.worker
    }

    /// How long to wait for haproxy on each read or write (default 10s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The admin socket path.
    pub fn socket(&self) -> &Utf8Path {
        &self.socket
    }

    /// Send one command line and return haproxy's answer with trailing
    /// blank lines removed (empty for most successful `set` commands).
    ///
    /// An answer that is one of haproxy's error messages (e.g.
    /// `No such server.`) becomes [`Error::Command`].
    pub fn command(&self, line: &str) -> Result<String> {
        if line.contains(['\n', '\r']) {
            return Err(Error::Invalid {
                field: "admin command",
                value: line.to_owned(),
                reason: "must be a single line",
            });
        }
        let sent = match self.worker {
            Some(pid) => format!("@!{pid} {line}"),
            None => line.to_owned(),
        };
        let response = crate::master::send(&self.socket, &sent, self.timeout)?;
        let response = response.trim_end().to_owned();
        let first_line = response.trim_start().lines().next().unwrap_or("");
        if ERROR_PREFIXES.iter().any(|p| first_line.starts_with(p)) {
            return Err(Error::Command {
                command: line.to_owned(),
                response,
            });
        }
        Ok(response)
    }

    /// Make slot `to` of `route` serve `127.0.0.1:port` and take the other
    /// slot out of rotation, then check haproxy reports exactly that.
    ///
    /// The new slot is made ready before the old one goes to maintenance,
    /// so there is no instant with no server. Requests already running on
    /// the old slot finish there; see [`sessions`](Self::sessions) to wait
    /// for them.
    pub fn switch(&self, route: &str, to: Slot, port: u16) -> Result<()> {
        self.set_addr(route, to, port)?;
        self.set_state(route, to, "ready")?;
        self.set_state(route, to.other(), "maint")?;
        self.expect_state(route, to, Some(port), true)?;
        self.expect_state(route, to.other(), None, false)
    }

    /// Make the runtime match `route` (addresses, which slot serves), e.g.
    /// after a crash between [`switch`](Self::switch) and rewriting the
    /// config. Safe to repeat.
    pub fn apply(&self, route: &Route) -> Result<()> {
        let name = route.name.as_str();
        for slot in [Slot::A, Slot::B] {
            if let Some(port) = route.ports[slot.index()] {
                self.set_addr(name, slot, port)?;
            }
        }
        if let Some(active) = route.active {
            self.set_state(name, active, "ready")?;
        }
        for slot in [Slot::A, Slot::B] {
            if route.active != Some(slot) {
                self.set_state(name, slot, "maint")?;
            }
        }
        for slot in [Slot::A, Slot::B] {
            let serving = route.active == Some(slot);
            let port = route.ports[slot.index()].filter(|_| serving);
            self.expect_state(name, slot, port, serving)?;
        }
        Ok(())
    }

    /// Makes sure `route`'s frontend accepts connections, resuming it if it
    /// is paused; true if it had to. A reload that rebinds an address
    /// overlapping another (`*:80` to `127.0.0.1:80`) makes the old worker
    /// pause all its listeners, and the new worker inherits the other
    /// routes' sockets paused (haproxy 2.6): they would refuse every
    /// connection until resumed.
    pub fn resume_if_paused(&self, route: &str) -> Result<bool> {
        let frontend = frontend_name(route);
        let status = self.frontend_status(&frontend)?;
        if status == "OPEN" {
            return Ok(false);
        }
        self.command(&format!("enable frontend {frontend}"))?;
        let status = self.frontend_status(&frontend)?;
        if status != "OPEN" {
            return Err(Error::Unexpected {
                command: format!("enable frontend {frontend}"),
                problem: format!("frontend {frontend} is still {status}"),
            });
        }
        Ok(true)
    }

    /// The `status` column of a frontend in `show stat` (`OPEN`, `PAUSED`, `STOP`).
    fn frontend_status(&self, frontend: &str) -> Result<String> {
        // 1 = frontends only, -1 = every server.
        let command = format!("show stat {frontend} 1 -1");
        let response = self.command(&command)?;
        let table = StatTable::parse(&response).map_err(|problem| Error::Unexpected {
            command: command.clone(),
            problem,
        })?;
        table
            .field(frontend, "FRONTEND", "status")
            .map(str::to_owned)
            .map_err(|problem| Error::Unexpected { command, problem })
    }

    /// Requests currently being served by `slot` of `route` (`scur` in
    /// `show stat`); idle keep-alive connections do not count.
    pub fn sessions(&self, route: &str, slot: Slot) -> Result<u32> {
        self.server_stat(route, slot, "scur")
    }

    /// Requests `slot` of `route` has been given since haproxy started
    /// (`stot` in `show stat`): a request through the stable address that
    /// raises it has reached that slot's instance.
    pub fn sessions_total(&self, route: &str, slot: Slot) -> Result<u32> {
        self.server_stat(route, slot, "stot")
    }

    /// One numeric column of `show stat` for one server.
    fn server_stat(&self, route: &str, slot: Slot, name: &str) -> Result<u32> {
        let backend = backend_name(route);
        // 4 = servers only, -1 = all of them.
        let command = format!("show stat {backend} 4 -1");
        let response = self.command(&command)?;
        let unexpected = |problem: String| Error::Unexpected {
            command: command.clone(),
            problem,
        };
        let table = StatTable::parse(&response).map_err(unexpected)?;
        let value = table
            .field(&backend, slot.server_name(), name)
            .map_err(unexpected)?;
        value
            .parse()
            .map_err(|_| unexpected(format!("{name} {value:?} is not a number")))
    }

    /// Whether haproxy answers on the admin socket.
    pub fn is_up(&self) -> bool {
        self.command("show info").is_ok()
    }

    fn set_addr(&self, route: &str, slot: Slot, port: u16) -> Result<()> {
        let backend = backend_name(route);
        self.command(&format!(
            "set server {backend}/{slot} addr 127.0.0.1 port {port}"
        ))
        .map(drop)
    }

    fn set_state(&self, route: &str, slot: Slot, state: &str) -> Result<()> {
        let backend = backend_name(route);
        self.command(&format!("set server {backend}/{slot} state {state}"))
            .map(drop)
    }

    /// Whether `slot` of `route` serves `127.0.0.1:port` now: ready (not
    /// in maintenance) at that address. Reads only.
    pub fn serves(&self, route: &str, slot: Slot, port: u16) -> Result<bool> {
        let backend = backend_name(route);
        let command = format!("show servers state {backend}");
        let response = self.command(&command)?;
        let server =
            ServerState::find(&response, &backend, slot.server_name()).map_err(|problem| {
                Error::Unexpected {
                    command: command.clone(),
                    problem: problem.to_owned(),
                }
            })?;
        Ok(server.admin_state & ADMIN_MAINT_MASK == 0
            && server.addr == "127.0.0.1"
            && server.port == port.to_string())
    }

    /// Read back one slot from `show servers state`, so a command haproxy
    /// accepted but did not apply is caught here rather than by users.
    fn expect_state(
        &self,
        route: &str,
        slot: Slot,
        port: Option<u16>,
        serving: bool,
    ) -> Result<()> {
        let backend = backend_name(route);
        let command = format!("show servers state {backend}");
        let response = self.command(&command)?;
        let unexpected = |problem: String| Error::Unexpected {
            command: command.clone(),
            problem,
        };
        let server = ServerState::find(&response, &backend, slot.server_name())
            .map_err(|problem| unexpected(problem.to_owned()))?;
        if let Some(port) = port {
            if server.addr != "127.0.0.1" || server.port != port.to_string() {
                return Err(unexpected(format!(
                    "server {backend}/{slot} is at {}:{}, expected 127.0.0.1:{port}",
                    server.addr, server.port
                )));
            }
        }
        let in_maint = server.admin_state & ADMIN_MAINT_MASK != 0;
        if in_maint == serving {
            let wanted = if serving { "ready" } else { "in maintenance" };
            return Err(unexpected(format!(
                "server {backend}/{slot} is not {wanted} (srv_admin_state {})",
                server.admin_state
            )));
        }
        Ok(())
    }
}

/// The CSV of `show stat`, columns found by the header's names so that
/// later haproxy versions' extra columns shift nothing.
struct StatTable<'a> {
    header: Vec<&'a str>,
    rows: Vec<Vec<&'a str>>,
}

impl<'a> StatTable<'a> {
    fn parse(response: &'a str) -> Result<Self, String> {
        let mut lines = response.lines();
        let header = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .ok_or_else(|| "no CSV header".to_owned())?
            .split(',')
            .collect();
        let rows = lines.map(|line| line.split(',').collect()).collect();
        Ok(Self { header, rows })
    }

    /// Column `name` of the row of proxy `proxy`, server `server`.
    fn field(&self, proxy: &str, server: &str, name: &str) -> Result<&'a str, String> {
        let column = |wanted: &str| {
            self.header
                .iter()
                .position(|h| *h == wanted)
                .ok_or_else(|| format!("no `{wanted}` column"))
        };
        let (px, sv, wanted) = (column("pxname")?, column("svname")?, column(name)?);
        self.rows
            .iter()
            .find(|row| row.get(px) == Some(&proxy) && row.get(sv) == Some(&server))
            .map(|row| row.get(wanted).copied().unwrap_or(""))
            .ok_or_else(|| format!("no row for {proxy}/{server}"))
    }
}

/// The fields of one `show servers state` row this crate looks at.
struct ServerState<'a> {
    addr: &'a str,
    port: &'a str,
    admin_state: u32,
}

impl<'a> ServerState<'a> {
    /// Column positions come from the `#` header line, so extra columns in
    /// later haproxy versions do not shift anything.
    fn find(response: &'a str, backend: &str, server: &str) -> Result<Self, &'static str> {
        let header: Vec<&str> = response
            .lines()
            .find_map(|line| line.strip_prefix("# "))
            .ok_or("no header line")?
            .split_whitespace()
            .collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (Some(be), Some(srv), Some(addr), Some(admin), Some(port)) = (
            column("be_name"),
            column("srv_name"),
            column("srv_addr"),
            column("srv_admin_state"),
            column("srv_port"),
        ) else {
            return Err("header lacks an expected column");
        };
        let row = response
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(be) == Some(&backend) && f.get(srv) == Some(&server))
            .ok_or("server not listed")?;
        let field = |i: usize| row.get(i).copied().ok_or("row too short");
        Ok(ServerState {
            addr: field(addr)?,
            port: field(port)?,
            admin_state: field(admin)?
                .parse()
                .map_err(|_| "srv_admin_state is not a number")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from haproxy 2.6.12 right after `set server web/a state ready`.
    const SERVERS_STATE: &str = "1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 be_web 1 a 127.0.0.1 2 4 1 1 0 1 0 0 8 0 0 0 - 25012 - 0 0 - - 0
3 be_web 2 b 127.0.0.1 0 5 1 1 5 1 0 0 8 0 0 0 - 25003 - 0 0 - - 0";

    #[test]
    fn server_state_reads_columns_by_header_name() {
        let a = ServerState::find(SERVERS_STATE, "be_web", "a").unwrap();
        assert_eq!((a.addr, a.port, a.admin_state), ("127.0.0.1", "25012", 4));
        assert_eq!(a.admin_state & ADMIN_MAINT_MASK, 0);
        let b = ServerState::find(SERVERS_STATE, "be_web", "b").unwrap();
        assert_ne!(b.admin_state & ADMIN_MAINT_MASK, 0);
        assert!(ServerState::find(SERVERS_STATE, "api", "a").is_err());
    }

    #[test]
    fn command_fails_naming_the_socket_when_haproxy_is_not_there() {
        let client = AdminClient::new("/nonexistent/sarge-haproxy-test.sock");
        let err = client.command("show info").unwrap_err();
        assert_eq!(
            err.to_string(),
            "connect to haproxy admin socket /nonexistent/sarge-haproxy-test.sock"
        );
        assert!(!client.is_up());
    }

    #[test]
    fn command_rejects_embedded_newlines() {
        let client = AdminClient::new("/nonexistent.sock");
        assert!(matches!(
            client.command("show info\nshutdown frontend web"),
            Err(Error::Invalid { .. })
        ));
    }
}
