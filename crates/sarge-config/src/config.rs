//! The parsed contents of `sarge.yaml` and the rules that check them.
//!
//! The YAML is read into a tree that keeps each scalar as written
//! ([`crate::yaml`]) and walked by hand rather than derived with serde: that
//! way every message can name the file and the exact dotted key, unknown keys
//! are caught at every level, and `env` values reach the application exactly
//! as typed.

use std::collections::BTreeMap;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};

use crate::address::StableAddress;
use crate::error::{Error, Result};
use crate::port_range::PortRange;
use crate::process_name::ProcessName;
use crate::yaml::{self, Kind, Node, Resolved};

/// Settings from `$SARGE_HOME/etc/sarge.yaml`.
///
/// New settings come in minor versions, so it cannot be written as a struct
/// literal: start from [`Config::new`] (or a file) and set fields, then
/// [`Config::check`] what you built.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Ports handed out to new deployments (`port_range`, required).
    pub port_range: PortRange,
    /// Stable address per process name that haproxy keeps pointing at the
    /// live deployment (`port_map`).
    pub port_map: BTreeMap<ProcessName, StableAddress>,
    /// Environment variables for every application process (`env`). Every
    /// value arrives exactly as written: unquoted `1.10`, `0x1F`, `007` or
    /// `yes` stay those characters; YAML's null (`~`, `null`, nothing) is an
    /// error rather than a guess between "" and unset.
    pub env: BTreeMap<String, String>,
    /// The haproxy program (`haproxy_bin`, default `haproxy`).
    pub haproxy_bin: Utf8PathBuf,
    /// The supervisord program (`supervisord_bin`, default `supervisord`).
    pub supervisord_bin: Utf8PathBuf,
    /// The supervisorctl program (`supervisorctl_bin`, default `supervisorctl`).
    pub supervisorctl_bin: Utf8PathBuf,
    /// Python used to create virtualenvs (`python_bin`, or the older name
    /// `virtualenv_python_bin`; default `python3`).
    pub python_bin: Utf8PathBuf,
    /// Folder of package archives to install from (`python_dist`); `None`
    /// means the caller uses `$SARGE_HOME/dist`.
    pub python_dist: Option<Utf8PathBuf>,
    /// HTTP health check per process name (`healthcheck`).
    pub healthcheck: BTreeMap<ProcessName, HealthCheck>,
    /// How long a new instance may take to start listening
    /// (`ready_timeout`, seconds, default 30).
    pub ready_timeout: Duration,
    /// How long an old instance's open requests may take after traffic has
    /// switched (`drain_timeout`, seconds, default 10).
    pub drain_timeout: Duration,
    /// The most bytes one app tarball may unpack to, counting each entry's
    /// content plus 512 bytes per entry (`max_unpacked_bytes`, default
    /// 2 GiB): a small gzip can expand a thousandfold, and the instances
    /// share the disk with the rest of the server.
    pub max_unpacked_bytes: u64,
    /// Size at which each program's log rotates (`log_max_bytes`, default
    /// 50 MB), so a chatty app cannot fill the disk.
    pub log_max_bytes: u64,
    /// Rotated log files kept per program (`log_backups`, default 5).
    pub log_backups: u32,
    /// How many releases keep their app folder and virtualenv so that a
    /// rollback can start them again (`keep_releases`, default 5, at
    /// least 1: the live release itself is always kept).
    pub keep_releases: u32,
    /// How long the Procfile's `release:` command may run before it is
    /// killed and the deploy fails (`release_timeout`, seconds, default
    /// 300): migrations can be slow, but a hung one must not hold the
    /// deploy lock forever. Never zero.
    pub release_timeout: Duration,
    /// How long a release prepared with `sarge deploy --prepare` waits for
    /// its `sarge switch` before the next command discards it
    /// (`prepared_timeout`, seconds, default 600): a client that vanished
    /// between the phases leaks nothing. Never zero.
    pub prepared_timeout: Duration,
}

/// An HTTP check that a new instance must pass before it gets traffic: a
/// 2xx answer to `GET path` (a redirect, say to a login page, is not one).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// Request path, always starting with `/`.
    pub path: String,
    /// The `Host` header the check sends (`host`, default `localhost`), so
    /// an app that checks its host name (Django's `ALLOWED_HOSTS`) answers
    /// the check as it answers its users. Sent as written: add `:port` to
    /// the value if the app wants one.
    pub host: String,
    /// How long to keep trying; `None` leaves the choice to the caller.
    pub timeout: Option<Duration>,
}

impl HealthCheck {
    /// A check of `GET path` with the default `Host`
    /// ([`DEFAULT_HEALTHCHECK_HOST`]) and no timeout of its own.
    pub fn new(path: impl Into<String>) -> HealthCheck {
        HealthCheck {
            path: path.into(),
            host: DEFAULT_HEALTHCHECK_HOST.to_owned(),
            timeout: None,
        }
    }
}

const DEFAULT_LOG_MAX_BYTES: u64 = 50 * 1024 * 1024;
const DEFAULT_LOG_BACKUPS: u32 = 5;
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// 2 GiB: far above any Python web app, far below a disk.
const DEFAULT_MAX_UNPACKED_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Enough to roll back past a few bad deploys without filling the disk with
/// virtualenvs.
const DEFAULT_KEEP_RELEASES: u32 = 5;
/// Long enough for a real migration, short enough that a command waiting on
/// a lock or on input is noticed the same day.
const DEFAULT_RELEASE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_PREPARED_TIMEOUT: Duration = Duration::from_secs(600);

const TOP_LEVEL_KEYS: &[&str] = &[
    "port_range",
    "port_map",
    "env",
    "haproxy_bin",
    "supervisord_bin",
    "supervisorctl_bin",
    "python_bin",
    "virtualenv_python_bin",
    "python_dist",
    "healthcheck",
    "ready_timeout",
    "drain_timeout",
    "max_unpacked_bytes",
    "log_max_bytes",
    "log_backups",
    "keep_releases",
    "release_timeout",
    "prepared_timeout",
];

const HEALTHCHECK_KEYS: &[&str] = &["path", "host", "timeout"];

/// The `Host` a health check sends unless `healthcheck.PROCESS.host` says.
pub const DEFAULT_HEALTHCHECK_HOST: &str = "localhost";

impl Config {
    /// A config with the given port range and every other setting at its
    /// default, as if `sarge.yaml` held only `port_range`.
    pub fn new(port_range: PortRange) -> Config {
        Config {
            port_range,
            port_map: BTreeMap::new(),
            env: BTreeMap::new(),
            haproxy_bin: "haproxy".into(),
            supervisord_bin: "supervisord".into(),
            supervisorctl_bin: "supervisorctl".into(),
            python_bin: "python3".into(),
            python_dist: None,
            healthcheck: BTreeMap::new(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_unpacked_bytes: DEFAULT_MAX_UNPACKED_BYTES,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            log_backups: DEFAULT_LOG_BACKUPS,
            keep_releases: DEFAULT_KEEP_RELEASES,
            release_timeout: DEFAULT_RELEASE_TIMEOUT,
            prepared_timeout: DEFAULT_PREPARED_TIMEOUT,
        }
    }

    /// Reads and checks the config file at `path`.
    pub fn load(path: &Utf8Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml_str(&text, path)
    }

    /// Parses and checks config text; `origin` only appears in error
    /// messages.
    pub fn from_yaml_str(text: &str, origin: &Utf8Path) -> Result<Config> {
        Parser { origin }.parse(text)
    }

    /// Checks a config built in code by the rules a file must pass: what
    /// the field types alone cannot hold (a `port_map` port inside
    /// `port_range`, two stable addresses that clash, `keep_releases` of 0,
    /// an env name or health check path that cannot be sent, ...). `origin`
    /// names the config in errors, as the file does for [`Config::load`].
    /// A config from [`Config::load`] or [`Config::from_yaml_str`] always
    /// passes.
    pub fn check(&self, origin: &Utf8Path) -> Result<()> {
        let invalid = |key: String, problem: String| Error::Invalid {
            path: origin.to_owned(),
            key,
            problem,
        };
        let range = self.port_range;
        if range.first < 1024 || range.first > range.last {
            return Err(invalid(
                "port_range".into(),
                format!("{range} is not a range of ports within 1024..=65535"),
            ));
        }
        let mut seen: Vec<(&ProcessName, &StableAddress)> = Vec::new();
        for (name, address) in &self.port_map {
            let key = format!("port_map.{name}");
            if range.contains(address.port) {
                return Err(invalid(
                    key,
                    format!("port {} is inside port_range {range}", address.port),
                ));
            }
            if let Some((other, other_address)) =
                seen.iter().find(|(_, taken)| taken.overlaps(address))
            {
                return Err(invalid(
                    key,
                    format!("{address} clashes with port_map.{other} ({other_address})"),
                ));
            }
            seen.push((name, address));
        }
        for (name, value) in &self.env {
            env_name(name).map_err(|problem| invalid(format!("env.{name}"), problem))?;
            if value.contains('\0') {
                return Err(invalid(
                    format!("env.{name}"),
                    "contains a NUL character".into(),
                ));
            }
        }
        for (name, check) in &self.healthcheck {
            if !is_request_path(&check.path) {
                return Err(invalid(
                    format!("healthcheck.{name}.path"),
                    format!(
                        "{:?} is not a URL path starting with '/' (no spaces)",
                        check.path
                    ),
                ));
            }
            if !is_host_header(&check.host) {
                return Err(invalid(
                    format!("healthcheck.{name}.host"),
                    format!("{:?} is not a host name (no spaces)", check.host),
                ));
            }
        }
        if self.keep_releases == 0 {
            return Err(invalid(
                "keep_releases".into(),
                "0; expected 1 or more (the live release is always kept)".into(),
            ));
        }
        if self.release_timeout.is_zero() {
            return Err(invalid(
                "release_timeout".into(),
                "0 would kill the release command before it runs; expected seconds above 0".into(),
            ));
        }
        if self.prepared_timeout.is_zero() {
            return Err(invalid(
                "prepared_timeout".into(),
                "0 would discard a prepared release before it can be switched; expected seconds above 0".into(),
            ));
        }
        Ok(())
    }
}

struct Parser<'a> {
    origin: &'a Utf8Path,
}

impl Parser<'_> {
    fn parse(&self, text: &str) -> Result<Config> {
        let document = yaml::parse(text).map_err(|e| self.syntax(e))?;
        let no_settings = Vec::new();
        let top = match &document {
            // An empty file or one holding only comments.
            None => &no_settings,
            Some(node) => match &node.kind {
                Kind::Mapping(entries) => entries,
                _ if is_null(node) => &no_settings,
                _ => {
                    return Err(self.invalid(
                        "top level",
                        format!("expected a mapping of settings, found {}", describe(node)),
                    ))
                }
            },
        };
        let top = self.entries(top, "", TOP_LEVEL_KEYS)?;

        let port_range = match top.get("port_range") {
            Some(value) => self.port_range(value)?,
            None => return Err(self.missing("port_range")),
        };
        let mut config = Config::new(port_range);
        if let Some(value) = top.get("port_map") {
            config.port_map = self.port_map(value, port_range)?;
        }
        if let Some(value) = top.get("env") {
            config.env = self.env(value)?;
        }
        if let Some(value) = top.get("haproxy_bin") {
            config.haproxy_bin = self.path("haproxy_bin", value)?;
        }
        if let Some(value) = top.get("supervisord_bin") {
            config.supervisord_bin = self.path("supervisord_bin", value)?;
        }
        if let Some(value) = top.get("supervisorctl_bin") {
            config.supervisorctl_bin = self.path("supervisorctl_bin", value)?;
        }
        match (top.get("python_bin"), top.get("virtualenv_python_bin")) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    "virtualenv_python_bin",
                    "is the old name of python_bin, which is also set; keep only python_bin",
                ))
            }
            (Some(value), None) => config.python_bin = self.path("python_bin", value)?,
            (None, Some(value)) => {
                config.python_bin = self.path("virtualenv_python_bin", value)?;
            }
            (None, None) => {}
        }
        if let Some(value) = top.get("python_dist") {
            config.python_dist = Some(self.path("python_dist", value)?);
        }
        if let Some(value) = top.get("healthcheck") {
            config.healthcheck = self.healthchecks(value)?;
        }
        if let Some(value) = top.get("ready_timeout") {
            config.ready_timeout = self.seconds("ready_timeout", value)?;
        }
        if let Some(value) = top.get("drain_timeout") {
            config.drain_timeout = self.seconds("drain_timeout", value)?;
        }
        if let Some(value) = top.get("max_unpacked_bytes") {
            config.max_unpacked_bytes = match resolve(value) {
                Some(Resolved::Int(bytes)) if bytes > 0 => bytes as u64,
                _ => {
                    return Err(self.invalid(
                        "max_unpacked_bytes",
                        format!(
                            "expected a number of bytes above 0, found {}",
                            describe(value)
                        ),
                    ))
                }
            };
        }
        if let Some(value) = top.get("log_max_bytes") {
            config.log_max_bytes = match resolve(value) {
                Some(Resolved::Int(bytes)) if bytes >= 1024 => bytes as u64,
                _ => {
                    return Err(self.invalid(
                        "log_max_bytes",
                        format!(
                            "expected a number of bytes of 1024 or more, found {}",
                            describe(value)
                        ),
                    ))
                }
            };
        }
        if let Some(value) = top.get("log_backups") {
            config.log_backups = match resolve(value) {
                Some(Resolved::Int(count)) if (0..=1000).contains(&count) => count as u32,
                _ => {
                    return Err(self.invalid(
                        "log_backups",
                        format!(
                            "expected a number of files from 0 to 1000, found {}",
                            describe(value)
                        ),
                    ))
                }
            };
        }
        if let Some(value) = top.get("keep_releases") {
            config.keep_releases = match resolve(value) {
                Some(Resolved::Int(count)) if count >= 1 => {
                    u32::try_from(count).map_err(|_| {
                        self.invalid(
                            "keep_releases",
                            format!("{} releases is more than sarge can count", describe(value)),
                        )
                    })?
                }
                _ => {
                    return Err(self.invalid(
                        "keep_releases",
                        format!(
                            "expected a number of releases of 1 or more (the live one is always kept), found {}",
                            describe(value)
                        ),
                    ))
                }
            };
        }
        if let Some(value) = top.get("release_timeout") {
            let timeout = self.seconds("release_timeout", value)?;
            // Unlike drain_timeout, where 0 means "switch at once", a zero
            // here would kill every release command before it starts.
            if timeout.is_zero() {
                return Err(self.invalid(
                    "release_timeout",
                    "0 would kill the release command before it runs; expected seconds above 0",
                ));
            }
            config.release_timeout = timeout;
        }
        if let Some(value) = top.get("prepared_timeout") {
            let timeout = self.seconds("prepared_timeout", value)?;
            if timeout.is_zero() {
                return Err(self.invalid(
                    "prepared_timeout",
                    "0 would discard a prepared release before it can be switched; expected seconds above 0",
                ));
            }
            config.prepared_timeout = timeout;
        }
        Ok(config)
    }

    /// The entries of a settings mapping by key, rejecting keys outside
    /// `known` so that a typo never silently falls back to a default.
    fn entries<'v>(
        &self,
        mapping: &'v [(Node, Node)],
        prefix: &str,
        known: &[&str],
    ) -> Result<BTreeMap<&'v str, &'v Node>> {
        let mut entries = BTreeMap::new();
        for (key, value) in mapping {
            let name = string(key).filter(|name| known.contains(name));
            let Some(name) = name else {
                return Err(Error::UnknownKey {
                    path: self.origin.to_owned(),
                    key: format!("{prefix}{}", key_text(key).unwrap_or_else(|| describe(key))),
                    known: known.join(", "),
                });
            };
            entries.insert(name, value);
        }
        Ok(entries)
    }

    fn port_range(&self, value: &Node) -> Result<PortRange> {
        const KEY: &str = "port_range";
        let Kind::Sequence(items) = &value.kind else {
            return Err(self.invalid(
                KEY,
                format!("expected [first, last], found {}", describe(value)),
            ));
        };
        let [first, last] = items.as_slice() else {
            return Err(self.invalid(
                KEY,
                format!(
                    "expected exactly two ports [first, last], found {} items",
                    items.len()
                ),
            ));
        };
        let first = self.unprivileged_port(first)?;
        let last = self.unprivileged_port(last)?;
        if first > last {
            return Err(self.invalid(
                KEY,
                format!("first port {first} is greater than last port {last}"),
            ));
        }
        Ok(PortRange { first, last })
    }

    fn unprivileged_port(&self, value: &Node) -> Result<u16> {
        let Some(Resolved::Int(number)) = resolve(value) else {
            return Err(self.invalid(
                "port_range",
                format!("{} is not a port number", describe(value)),
            ));
        };
        u16::try_from(number)
            .ok()
            .filter(|port| *port >= 1024)
            .ok_or_else(|| self.invalid("port_range", format!("{number} is outside 1024..=65535")))
    }

    fn port_map(
        &self,
        value: &Node,
        port_range: PortRange,
    ) -> Result<BTreeMap<ProcessName, StableAddress>> {
        let mut port_map: BTreeMap<ProcessName, StableAddress> = BTreeMap::new();
        for (name, value) in self.named_entries("port_map", value, process_name)? {
            let key = format!("port_map.{name}");
            let address: StableAddress = match string(value) {
                Some(text) => text
                    .parse()
                    .map_err(|e: Error| self.invalid(&key, e.to_string()))?,
                None => {
                    return Err(self.invalid(
                        &key,
                        format!("{} is not host:port, e.g. 127.0.0.1:5000", describe(value)),
                    ))
                }
            };
            if port_range.contains(address.port) {
                return Err(self.invalid(
                    &key,
                    format!("port {} is inside port_range {port_range}", address.port),
                ));
            }
            if let Some((other, other_address)) =
                port_map.iter().find(|(_, taken)| taken.overlaps(&address))
            {
                return Err(self.invalid(
                    &key,
                    format!("{address} clashes with port_map.{other} ({other_address})"),
                ));
            }
            port_map.insert(name, address);
        }
        Ok(port_map)
    }

    fn env(&self, value: &Node) -> Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for (name, value) in self.named_entries("env", value, env_name)? {
            let key = format!("env.{name}");
            // The text as written, whatever YAML would make of it: the app
            // reads strings, and `1.10` or `0x1F` must not come out as `1.1`
            // or `31`. Null is refused because "" and "unset" are both
            // plausible readings and a wrong guess is silent.
            let text = match &value.kind {
                Kind::Scalar(scalar) if scalar.resolve() == Resolved::Null => {
                    let problem = if scalar.text.is_empty() {
                        "has no value; write \"\" for an empty string".to_owned()
                    } else {
                        format!(
                            "{} means no value in YAML; write \"\" for an empty string or {:?} for that text",
                            scalar.text, scalar.text
                        )
                    };
                    return Err(self.invalid(&key, problem));
                }
                Kind::Scalar(scalar) => scalar.text.clone(),
                _ => {
                    return Err(self.invalid(
                        &key,
                        format!(
                            "expected a string, number or boolean, found {}",
                            describe(value)
                        ),
                    ))
                }
            };
            if text.contains('\0') {
                return Err(self.invalid(&key, "contains a NUL character"));
            }
            env.insert(name, text);
        }
        Ok(env)
    }

    fn healthchecks(&self, value: &Node) -> Result<BTreeMap<ProcessName, HealthCheck>> {
        let mut checks = BTreeMap::new();
        for (name, value) in self.named_entries("healthcheck", value, process_name)? {
            let key = format!("healthcheck.{name}");
            let Kind::Mapping(mapping) = &value.kind else {
                return Err(self.invalid(
                    &key,
                    format!(
                        "expected a mapping like {{path: /up, timeout: 30}}, found {}",
                        describe(value)
                    ),
                ));
            };
            let entries = self.entries(mapping, &format!("{key}."), HEALTHCHECK_KEYS)?;
            let path_key = format!("{key}.path");
            let path = match entries.get("path") {
                Some(value) => match string(value) {
                    Some(path) if is_request_path(path) => path.to_owned(),
                    _ => {
                        return Err(self.invalid(
                            &path_key,
                            format!(
                                "{} is not a URL path starting with '/' (no spaces)",
                                describe(value)
                            ),
                        ))
                    }
                },
                None => return Err(self.missing(&path_key)),
            };
            let host = match entries.get("host") {
                Some(value) => match key_text(value) {
                    Some(host) if is_host_header(&host) => host,
                    _ => {
                        return Err(self.invalid(
                            &format!("{key}.host"),
                            format!(
                            "{} is not a host name (e.g. localhost or app.example.com; no spaces)",
                            describe(value)
                        ),
                        ))
                    }
                },
                None => DEFAULT_HEALTHCHECK_HOST.to_owned(),
            };
            let timeout = match entries.get("timeout") {
                Some(value) => Some(self.seconds(&format!("{key}.timeout"), value)?),
                None => None,
            };
            checks.insert(
                name,
                HealthCheck {
                    path,
                    host,
                    timeout,
                },
            );
        }
        Ok(checks)
    }

    /// Entries of a mapping whose keys are user-chosen names (process or
    /// variable names), each parsed by `parse_name`, whose error message
    /// names the key. An empty value (`key:` with everything below
    /// commented out) counts as an empty mapping.
    fn named_entries<'v, N>(
        &self,
        key: &str,
        value: &'v Node,
        parse_name: fn(&str) -> Result<N, String>,
    ) -> Result<Vec<(N, &'v Node)>> {
        let mapping = match &value.kind {
            Kind::Mapping(mapping) => mapping,
            _ if is_null(value) => return Ok(Vec::new()),
            _ => {
                return Err(self.invalid(
                    key,
                    format!("expected a mapping of names, found {}", describe(value)),
                ))
            }
        };
        mapping
            .iter()
            .map(|(name, value)| {
                let text = key_text(name).ok_or_else(|| {
                    self.invalid(key, format!("{} is not a name", describe(name)))
                })?;
                let name = parse_name(&text).map_err(|problem| self.invalid(key, problem))?;
                Ok((name, value))
            })
            .collect()
    }

    fn path(&self, key: &str, value: &Node) -> Result<Utf8PathBuf> {
        match string(value) {
            Some(text) if !text.is_empty() && !text.contains('\0') => Ok(Utf8PathBuf::from(text)),
            _ => Err(self.invalid(key, format!("expected a path, found {}", describe(value)))),
        }
    }

    fn seconds(&self, key: &str, value: &Node) -> Result<Duration> {
        let seconds = match resolve(value) {
            Some(Resolved::Int(whole)) => match u64::try_from(whole) {
                Ok(whole) => return Ok(Duration::from_secs(whole)),
                // Negative: reported below with the float rule.
                Err(_) => whole as f64,
            },
            Some(Resolved::Float(seconds)) => seconds,
            _ => {
                return Err(self.invalid(
                    key,
                    format!("expected a number of seconds, found {}", describe(value)),
                ))
            }
        };
        let number = describe(value);
        if seconds.is_nan() {
            return Err(self.invalid(key, format!("{number} is not a number of seconds")));
        }
        if seconds < 0.0 {
            return Err(self.invalid(key, format!("{number} is negative; expected seconds >= 0")));
        }
        Duration::try_from_secs_f64(seconds)
            .map_err(|_| self.invalid(key, format!("{number} seconds is too long")))
    }

    fn syntax(&self, error: yaml::SyntaxError) -> Error {
        Error::Syntax {
            path: self.origin.to_owned(),
            line: Some(error.line),
            column: Some(error.column),
            message: error.message,
        }
    }

    fn invalid(&self, key: &str, problem: impl Into<String>) -> Error {
        Error::Invalid {
            path: self.origin.to_owned(),
            key: key.to_owned(),
            problem: problem.into(),
        }
    }

    fn missing(&self, key: &str) -> Error {
        Error::Missing {
            path: self.origin.to_owned(),
            key: key.to_owned(),
        }
    }
}

/// A `port_map` or `healthcheck` key: the same rule as the Procfile's
/// names, so a key that loads here is one a deploy can run and route.
fn process_name(name: &str) -> Result<ProcessName, String> {
    name.parse().map_err(|error: Error| error.to_string())
}

fn env_name(name: &str) -> Result<String, String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not a valid environment variable name (letters, digits, '_'; not starting with a digit)"
        ))
    }
}

/// The path goes into an HTTP request line, where whitespace or control
/// characters would break the request.
fn is_request_path(path: &str) -> bool {
    path.starts_with('/') && !path.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The meaning of a scalar node; `None` for collections and tagged values.
fn resolve(node: &Node) -> Option<Resolved<'_>> {
    match &node.kind {
        Kind::Scalar(scalar) => Some(scalar.resolve()),
        _ => None,
    }
}

fn is_null(node: &Node) -> bool {
    resolve(node) == Some(Resolved::Null)
}

/// The node's text if YAML reads it as a string (quoted, or plain text that
/// is not null, a boolean or a number).
fn string(node: &Node) -> Option<&str> {
    match resolve(node) {
        Some(Resolved::Str(text)) => Some(text),
        _ => None,
    }
}

/// The host goes into the request's `Host:` line, where whitespace or
/// control characters would break the request.
fn is_host_header(host: &str) -> bool {
    !host.is_empty() && !host.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Text of a scalar used as a name: as written, so a key `7` is "7". `None`
/// for null and anything that has no sensible text form.
fn key_text(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Scalar(scalar) if scalar.resolve() != Resolved::Null => Some(scalar.text.clone()),
        _ => None,
    }
}

/// How a value is shown in messages: strings quoted, other scalars as
/// written, containers by kind.
fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Scalar(scalar) => match scalar.resolve() {
            Resolved::Null => "nothing".to_owned(),
            Resolved::Str(text) => format!("{text:?}"),
            Resolved::Bool(_) | Resolved::Int(_) | Resolved::Float(_) => scalar.text.clone(),
        },
        Kind::Sequence(_) => "a list".to_owned(),
        Kind::Mapping(_) => "a mapping".to_owned(),
        Kind::Tagged(tag) => format!("a value tagged {tag}"),
    }
}

#[cfg(test)]
mod tests;
