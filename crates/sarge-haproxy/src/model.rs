//! The routing model: what haproxy should be doing, independent of how it is
//! told (config file via [`render`](HaproxyConfig::render), or the admin socket).

use std::collections::HashSet;
use std::fmt;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};

/// haproxy refuses unix socket paths longer than this: it binds to
/// `PATH.PID.tmp` first and renames, so it keeps room below `sun_path`'s 108.
const MAX_SOCKET_PATH_LEN: usize = 97;

/// The whole haproxy setup for one server: the admin socket and one route
/// per process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HaproxyConfig {
    /// Where haproxy listens for admin commands
    /// (`stats socket PATH mode 600 level admin`).
    pub admin_socket: Utf8PathBuf,
    /// One route per process, in the order they are rendered.
    pub routes: Vec<Route>,
}

/// A stable address that balances over the ready instances of a process.
///
/// Rendered as frontend `fe_NAME` and backend `be_NAME` (distinct names,
/// because `show stat NAME` picks only the first proxy called NAME); the
/// backend has one server per routed instance, balanced round-robin. A
/// route with no server answers 503.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The process name; also the frontend/backend name suffix.
    pub name: String,
    /// Address to bind, e.g. `127.0.0.1:5000`, `*:5000` or `[::1]:5000`.
    pub bind: String,
    /// The instances this route sends requests to, all ready.
    pub servers: Vec<Server>,
}

/// One instance behind a [`Route`]: a haproxy server named after it,
/// at `127.0.0.1:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    /// The server's name in haproxy; sarge uses the instance id. Letters,
    /// digits, `-`, `_`, `.` and `:` only.
    pub name: String,
    /// The loopback port the instance listens on.
    pub port: u16,
}

impl Server {
    /// The server `name` at `127.0.0.1:port`.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        Server {
            name: name.into(),
            port,
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (127.0.0.1:{})", self.name, self.port)
    }
}

impl Route {
    /// A route with no servers yet.
    pub fn new(name: impl Into<String>, bind: impl Into<String>) -> Self {
        Route {
            name: name.into(),
            bind: bind.into(),
            servers: Vec::new(),
        }
    }

    /// The route with `servers` behind it.
    pub fn with_servers(mut self, servers: impl IntoIterator<Item = Server>) -> Self {
        self.servers = servers.into_iter().collect();
        self
    }

    /// The server called `name`, if the route has one.
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|server| server.name == name)
    }
}

impl HaproxyConfig {
    /// The route named `name`, if any.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.name == name)
    }

    /// The route named `name` for changing, if any.
    pub fn route_mut(&mut self, name: &str) -> Option<&mut Route> {
        self.routes.iter_mut().find(|route| route.name == name)
    }

    /// Reject values haproxy would misread or refuse.
    ///
    /// [`render`](Self::render) cannot fail, so call this first: haproxy
    /// expands `$NAME` inside addresses even when quoted, so a `$` in the
    /// socket path or a bind would silently point somewhere else.
    pub fn validate(&self) -> Result<()> {
        validate_socket_path("admin socket path", &self.admin_socket)?;
        let mut seen = HashSet::new();
        for route in &self.routes {
            validate_route(route)?;
            if !seen.insert(route.name.as_str()) {
                return Err(invalid("route name", &route.name, "used by two routes"));
            }
        }
        Ok(())
    }
}

/// The haproxy backend of route `route`.
pub(crate) fn backend_name(route: &str) -> String {
    format!("be_{route}")
}

/// The haproxy frontend of route `route`.
pub(crate) fn frontend_name(route: &str) -> String {
    format!("fe_{route}")
}

fn invalid(field: &'static str, value: &str, reason: &'static str) -> Error {
    Error::Invalid {
        field,
        value: value.to_owned(),
        reason,
    }
}

pub(crate) fn validate_socket_path(field: &'static str, path: &Utf8Path) -> Result<()> {
    if !path.is_absolute() {
        // haproxy runs with supervisord's working directory, not ours.
        return Err(invalid(field, path.as_str(), "must be absolute"));
    }
    if path.as_str().len() > MAX_SOCKET_PATH_LEN {
        return Err(invalid(
            field,
            path.as_str(),
            "longer than 97 bytes, haproxy's limit for unix socket paths",
        ));
    }
    if path.as_str().contains('$') {
        return Err(invalid(
            field,
            path.as_str(),
            "contains '$', which haproxy expands as an environment variable",
        ));
    }
    if path.as_str().chars().any(char::is_control) {
        return Err(invalid(
            field,
            path.as_str(),
            "contains a control character",
        ));
    }
    Ok(())
}

/// Route names become `fe_NAME` and `be_NAME`. haproxy limits proxy names
/// by characters only, not length, so no length limit here: every process
/// name sarge-config accepts (at most 40 of `[A-Za-z0-9_.-]`) is a valid
/// route name.
/// A name haproxy takes for a proxy or a server.
fn is_haproxy_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn validate_route(route: &Route) -> Result<()> {
    if !is_haproxy_name(&route.name) {
        return Err(invalid(
            "route name",
            &route.name,
            "haproxy names may only hold letters, digits, '-', '_', '.' and ':'",
        ));
    }
    let bind_ok = !route.bind.is_empty()
        && route.bind.contains(':')
        && route
            .bind
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '$' | '#' | '\'' | '"' | '\\'));
    if !bind_ok {
        return Err(invalid(
            "bind address",
            &route.bind,
            "expected HOST:PORT such as 127.0.0.1:5000, *:5000 or [::1]:5000",
        ));
    }
    let mut seen = HashSet::new();
    for server in &route.servers {
        if !is_haproxy_name(&server.name) {
            return Err(invalid(
                "server name",
                &server.name,
                "haproxy names may only hold letters, digits, '-', '_', '.' and ':'",
            ));
        }
        if !seen.insert(server.name.as_str()) {
            return Err(invalid(
                "server name",
                &server.name,
                "used twice in a route",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(socket: &str, routes: Vec<Route>) -> HaproxyConfig {
        HaproxyConfig {
            admin_socket: socket.into(),
            routes,
        }
    }

    #[test]
    fn with_servers_and_lookup() {
        let route =
            Route::new("web", "127.0.0.1:5000").with_servers([Server::new("web-1a2b3c", 8001)]);
        assert_eq!(route.server("web-1a2b3c").map(|s| s.port), Some(8001));
        assert!(route.server("web-ffffff").is_none());
        assert_eq!(route.servers[0].to_string(), "web-1a2b3c (127.0.0.1:8001)");
    }

    #[test]
    fn validate_accepts_spaces_in_socket_path() {
        let cfg = config(
            "/srv/my sarge/haproxy.sock",
            vec![Route::new("web", "[::1]:5000")],
        );
        cfg.validate().unwrap();
    }

    #[test]
    fn validate_rejects_dollar_in_socket_path() {
        let err = config("/srv/$HOME/a.sock", vec![]).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid admin socket path \"/srv/$HOME/a.sock\": \
             contains '$', which haproxy expands as an environment variable"
        );
    }

    #[test]
    fn validate_rejects_socket_path_haproxy_finds_too_long() {
        let long = format!("/{}", "x".repeat(97));
        let err = config(&long, vec![]).validate().unwrap_err();
        assert!(err.to_string().contains("longer than 97 bytes"), "{err}");
        config(&long[..97], vec![]).validate().unwrap();
    }

    #[test]
    fn validate_rejects_relative_socket_path() {
        assert!(config("run/a.sock", vec![]).validate().is_err());
    }

    #[test]
    fn validate_rejects_bad_route_names_and_binds() {
        for (name, bind) in [
            ("we b", "127.0.0.1:5000"),
            ("", "127.0.0.1:5000"),
            ("web", "5000"),
            ("web", "127.0.0.1:5000 ssl"),
            ("web", "${HOST}:5000"),
        ] {
            let cfg = config("/run/a.sock", vec![Route::new(name, bind)]);
            assert!(cfg.validate().is_err(), "{name:?} {bind:?}");
        }
    }

    /// The contract with sarge-core: every process name sarge-config
    /// accepts (1 to 40 of `[A-Za-z0-9_.-]`, starting with a letter or
    /// digit) is a valid route name.
    #[test]
    fn validate_accepts_every_40_character_process_name() {
        let name = format!("W9_.-{}", "x".repeat(35));
        assert_eq!(name.len(), 40);
        let cfg = config(
            "/run/a.sock",
            vec![Route::new(name.as_str(), "127.0.0.1:5000")],
        );
        cfg.validate().unwrap();
        assert!(cfg.render().contains(&format!("backend be_{name}\n")));
    }

    #[test]
    fn validate_rejects_duplicate_route_names() {
        let cfg = config(
            "/run/a.sock",
            vec![
                Route::new("web", "127.0.0.1:5000"),
                Route::new("web", "127.0.0.1:5001"),
            ],
        );
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "invalid route name \"web\": used by two routes"
        );
    }

    #[test]
    fn validate_rejects_bad_and_duplicate_server_names() {
        for servers in [
            vec![Server::new("web 1", 8001)],
            vec![Server::new("", 8001)],
            vec![Server::new("web-1", 8001), Server::new("web-1", 8002)],
        ] {
            let route = Route::new("web", "127.0.0.1:5000").with_servers(servers.clone());
            assert!(
                config("/run/a.sock", vec![route]).validate().is_err(),
                "{servers:?}"
            );
        }
    }
}
