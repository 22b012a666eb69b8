//! A small client for haproxy's admin (stats) socket: adding, draining and
//! removing a route's servers at runtime, without reloading haproxy.

use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};
use crate::model::{backend_name, frontend_name, Route, Server};

/// Answers haproxy gives instead of doing what was asked. The CLI has no
/// status code, and `set severity-output` does not help: 2.6 tags
/// "Invalid addr" with the same severity as success notices.
const ERROR_PREFIXES: &[&str] = &[
    "No such",
    "No backend",
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

    /// Adds `server` to `route`'s backend and makes it ready, then checks
    /// haproxy reports it ready at its port: from then on the route's
    /// requests are spread over it too. Safe to repeat: a server of that
    /// name already there is moved to the port and made ready.
    pub fn add_server(&self, route: &str, server: &Server) -> Result<()> {
        let backend = backend_name(route);
        let target = format!("{backend}/{}", server.name);
        let add = format!("add server {target} 127.0.0.1:{}", server.port);
        match self.command(&add) {
            Ok(response) if response.contains("New server registered") => {}
            Ok(response) if response.contains("Already exists") => {
                self.command(&format!(
                    "set server {target} addr 127.0.0.1 port {}",
                    server.port
                ))?;
            }
            Ok(response) => {
                return Err(Error::Command {
                    command: add,
                    response,
                })
            }
            Err(error) => return Err(error),
        }
        // A server added at runtime starts in maintenance.
        self.command(&format!("set server {target} state ready"))?;
        let status = self.server(route, &server.name)?;
        if !status.ready || status.port != server.port {
            return Err(Error::Unexpected {
                command: add,
                problem: format!(
                    "server {target} is {} at {}:{}, expected ready at 127.0.0.1:{}",
                    if status.ready {
                        "ready"
                    } else {
                        "in maintenance"
                    },
                    status.addr,
                    status.port,
                    server.port
                ),
            });
        }
        Ok(())
    }

    /// Puts server `name` of `route` in maintenance and checks it is: no new
    /// request goes to it; those it is serving finish there (see
    /// [`sessions`](Self::sessions) to wait for them).
    pub fn disable_server(&self, route: &str, name: &str) -> Result<()> {
        let target = format!("{}/{name}", backend_name(route));
        self.command(&format!("set server {target} state maint"))?;
        let status = self.server(route, name)?;
        if status.ready {
            return Err(Error::Unexpected {
                command: format!("set server {target} state maint"),
                problem: format!("server {target} is still ready"),
            });
        }
        Ok(())
    }

    /// Deletes server `name` of `route`, which must be in maintenance.
    /// Returns false, deleting nothing, while it still has connections (an
    /// idle keep-alive one counts); a later call, or haproxy's next
    /// reload, removes it. A server that is not there counts as deleted.
    pub fn delete_server(&self, route: &str, name: &str) -> Result<bool> {
        let command = format!("del server {}/{name}", backend_name(route));
        match self.command(&command) {
            Ok(response) if response.contains("Server deleted") => Ok(true),
            Ok(response) if response.contains("connections") => Ok(false),
            Ok(response) => Err(Error::Command { command, response }),
            Err(Error::Command { response, .. }) if response.starts_with("No such server") => {
                Ok(true)
            }
            Err(error) => Err(error),
        }
    }

    /// The routes whose backends this haproxy has, in one round trip
    /// (`show backend`). Reads only.
    pub fn routes(&self) -> Result<Vec<String>> {
        let response = self.command("show backend")?;
        Ok(response
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.trim().strip_prefix("be_"))
            .map(str::to_owned)
            .collect())
    }

    /// The servers of `route`'s backend as haproxy has them now. Reads only.
    pub fn servers(&self, route: &str) -> Result<Vec<ServerStatus>> {
        let backend = backend_name(route);
        let command = format!("show servers state {backend}");
        let response = self.command(&command)?;
        ServerStatus::parse(&response, &backend).map_err(|problem| Error::Unexpected {
            command,
            problem: problem.to_owned(),
        })
    }

    /// Server `name` of `route` as haproxy has it now. Reads only.
    fn server(&self, route: &str, name: &str) -> Result<ServerStatus> {
        self.servers(route)?
            .into_iter()
            .find(|server| server.name == name)
            .ok_or_else(|| Error::Unexpected {
                command: format!("show servers state {}", backend_name(route)),
                problem: format!("server {}/{name} is not listed", backend_name(route)),
            })
    }

    /// Makes the runtime match `route`: its servers ready at their ports,
    /// any other server in maintenance and deleted once it has no
    /// connection left. Repairs a rollout killed halfway, or a config an
    /// older sarge wrote. Safe to repeat.
    pub fn apply(&self, route: &Route) -> Result<()> {
        let present = self.servers(&route.name)?;
        for server in &route.servers {
            let in_line = present.iter().any(|status| {
                status.name == server.name
                    && status.ready
                    && status.addr == "127.0.0.1"
                    && status.port == server.port
            });
            if !in_line {
                self.add_server(&route.name, server)?;
            }
        }
        for status in &present {
            if route.server(&status.name).is_some() {
                continue;
            }
            if status.ready {
                self.disable_server(&route.name, &status.name)?;
            }
            self.delete_server(&route.name, &status.name)?;
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

    /// Requests currently being served by server `server` of `route`
    /// (`scur` in `show stat`); idle keep-alive connections do not count.
    pub fn sessions(&self, route: &str, server: &str) -> Result<u32> {
        self.server_stat(route, server, "scur")
    }

    /// Requests server `server` of `route` has been given since haproxy
    /// started (`stot` in `show stat`): a request through the stable
    /// address that raises it has reached that server's instance.
    pub fn sessions_total(&self, route: &str, server: &str) -> Result<u32> {
        self.server_stat(route, server, "stot")
    }

    /// One numeric column of `show stat` for one server.
    fn server_stat(&self, route: &str, server: &str, name: &str) -> Result<u32> {
        let backend = backend_name(route);
        // 4 = servers only, -1 = all of them.
        let command = format!("show stat {backend} 4 -1");
        let response = self.command(&command)?;
        let unexpected = |problem: String| Error::Unexpected {
            command: command.clone(),
            problem,
        };
        let table = StatTable::parse(&response).map_err(unexpected)?;
        let value = table.field(&backend, server, name).map_err(unexpected)?;
        value
            .parse()
            .map_err(|_| unexpected(format!("{name} {value:?} is not a number")))
    }

    /// Whether haproxy answers on the admin socket.
    pub fn is_up(&self) -> bool {
        self.command("show info").is_ok()
    }

    /// Whether `route` sends requests to `server` now: listed, ready (not
    /// in maintenance) and at its port. Reads only.
    pub fn serves(&self, route: &str, server: &Server) -> Result<bool> {
        Ok(self.servers(route)?.iter().any(|status| {
            status.name == server.name
                && status.ready
                && status.addr == "127.0.0.1"
                && status.port == server.port
        }))
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

/// One server of a backend as `show servers state` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStatus {
    /// The server's name.
    pub name: String,
    /// Its address, `127.0.0.1` for every server sarge adds.
    pub addr: String,
    /// Its port.
    pub port: u16,
    /// Ready for requests (not in maintenance).
    pub ready: bool,
}

impl ServerStatus {
    /// The rows of `backend` in a `show servers state` answer. Column
    /// positions come from the `#` header line, so extra columns in later
    /// haproxy versions do not shift anything.
    fn parse(response: &str, backend: &str) -> Result<Vec<Self>, &'static str> {
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
        let mut servers = Vec::new();
        // The first line is the format version, then the header.
        for line in response
            .lines()
            .skip(1)
            .filter(|line| !line.starts_with('#'))
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(be) != Some(&backend) {
                continue;
            }
            let field = |i: usize| fields.get(i).copied().ok_or("row too short");
            let admin_state: u32 = field(admin)?
                .parse()
                .map_err(|_| "srv_admin_state is not a number")?;
            servers.push(ServerStatus {
                name: field(srv)?.to_owned(),
                addr: field(addr)?.to_owned(),
                port: field(port)?
                    .parse()
                    .map_err(|_| "srv_port is not a number")?,
                ready: admin_state & ADMIN_MAINT_MASK == 0,
            });
        }
        Ok(servers)
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
    fn server_status_reads_columns_by_header_name() {
        let servers = ServerStatus::parse(SERVERS_STATE, "be_web").unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(
            (
                servers[0].name.as_str(),
                servers[0].addr.as_str(),
                servers[0].port,
                servers[0].ready
            ),
            ("a", "127.0.0.1", 25012, true)
        );
        assert!(!servers[1].ready);
        assert!(ServerStatus::parse(SERVERS_STATE, "be_api")
            .unwrap()
            .is_empty());
        assert!(ServerStatus::parse("1\n", "be_web").is_err());
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
