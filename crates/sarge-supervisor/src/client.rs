//! A client for a running supervisord's XML-RPC API over its UNIX socket.
//!
//! It speaks HTTP/1.0 directly instead of running `supervisorctl`, because
//! each `supervisorctl` invocation costs ~200 ms of Python start-up and a
//! redeploy makes many calls. One connection per call: supervisord closes
//! HTTP/1.0 connections after the response anyway.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};
use crate::xmlrpc::{self, Response, Value};

/// How long a call may wait for supervisord by default; `startProcess` with
/// `wait` only answers once `startsecs` have passed.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// supervisord's fault codes (`supervisor.xmlrpc.Faults`) that the client
/// treats specially.
mod fault {
    pub const BAD_NAME: i32 = 10;
    pub const ALREADY_STARTED: i32 = 60;
    pub const NOT_RUNNING: i32 = 70;
    pub const ALREADY_ADDED: i32 = 90;
}

/// Talks to one supervisord through its control socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: Utf8PathBuf,
    timeout: Duration,
}

/// supervisord's own state (`supervisor.getState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DaemonState {
    /// Up and serving.
    Running,
    /// Restarting itself (after `supervisor.restart` or SIGHUP).
    Restarting,
    /// Shutting down.
    Shutdown,
    /// Hit an unrecoverable error.
    Fatal,
}

/// What `supervisor.reloadConfig` found when it re-read the config files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigChanges {
    /// Groups present in the files but not yet in supervisord.
    pub added: Vec<String>,
    /// Groups whose config differs from the running one.
    pub changed: Vec<String>,
    /// Groups running in supervisord but gone from the files.
    pub removed: Vec<String>,
}

/// State of one process (`supervisor.getProcessInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessInfo {
    /// Process name.
    pub name: String,
    /// Group name; for a plain `[program:x]` it equals the process name.
    pub group: String,
    /// Current state.
    pub state: ProcessState,
    /// Pid, or 0 when not running.
    pub pid: u32,
    /// Exit status of the last run.
    pub exit_status: i32,
    /// supervisord's one-line description, e.g. `pid 42, uptime 0:00:03`.
    pub description: String,
    /// Unix time of the last start, 0 if never started.
    pub start: i64,
    /// Unix time of the last stop, 0 if never stopped.
    pub stop: i64,
    /// Why the last spawn failed, empty if it did not.
    pub spawn_error: String,
    /// The stdout log file.
    pub log_file: String,
}

/// A process's state, as supervisord reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Stopped on request, or never started.
    Stopped,
    /// Started, but not yet up for `startsecs`.
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
    /// supervisord does not know (or reported a code this crate does not).
    Unknown,
}

impl ProcessState {
    fn from_code(code: i64) -> Self {
        match code {
            0 => Self::Stopped,
            10 => Self::Starting,
            20 => Self::Running,
            30 => Self::Backoff,
            40 => Self::Stopping,
            100 => Self::Exited,
            200 => Self::Fatal,
            _ => Self::Unknown,
        }
    }

    /// supervisord's name for the state, e.g. `RUNNING`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stopped => "STOPPED",
            Self::Starting => "STARTING",
            Self::Running => "RUNNING",
            Self::Backoff => "BACKOFF",
            Self::Stopping => "STOPPING",
            Self::Exited => "EXITED",
            Self::Fatal => "FATAL",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The process is up and has passed `startsecs`.
    pub fn is_running(self) -> bool {
        self == Self::Running
    }

    /// supervisord counts the process as started or being started
    /// (`STARTING`, `RUNNING`, `BACKOFF`): starting it again is refused and
    /// stopping it is possible.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Backoff)
    }

    /// No process is running and none will be without a start request
    /// (`STOPPED`, `EXITED`, `FATAL`, `UNKNOWN`).
    pub fn is_stopped(self) -> bool {
        matches!(
            self,
            Self::Stopped | Self::Exited | Self::Fatal | Self::Unknown
        )
    }
}

impl fmt::Display for ProcessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for DaemonState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "RUNNING",
            Self::Restarting => "RESTARTING",
            Self::Shutdown => "SHUTDOWN",
            Self::Fatal => "FATAL",
        })
    }
}

impl Client {
    /// A client for the supervisord listening on `socket`; nothing is
    /// connected until the first call.
    pub fn new(socket: impl Into<Utf8PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets how long one call may wait on the socket (default 60 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The control socket this client talks to.
    pub fn socket(&self) -> &Utf8Path {
        &self.socket
    }

    /// supervisord's own state.
    pub fn state(&self) -> Result<DaemonState> {
        const METHOD: &str = "supervisor.getState";
        let reply = self.call(METHOD, &[])?;
        let mut members = expect_struct(METHOD, reply)?;
        match take_int(METHOD, &mut members, "statecode")? {
            1 => Ok(DaemonState::Running),
            0 => Ok(DaemonState::Restarting),
            -1 => Ok(DaemonState::Shutdown),
            2 => Ok(DaemonState::Fatal),
            code => Err(protocol(METHOD, format!("unknown statecode {code}"))),
        }
    }

    /// supervisord's pid.
    pub fn pid(&self) -> Result<u32> {
        const METHOD: &str = "supervisor.getPID";
        match self.call(METHOD, &[])? {
            Value::Int(pid) => {
                u32::try_from(pid).map_err(|_| protocol(METHOD, format!("pid {pid} out of range")))
            }
            other => Err(unexpected(METHOD, "an int", &other)),
        }
    }

    /// Re-reads the config files and reports what differs from what is
    /// loaded (`supervisorctl reread`). Nothing is applied: use
    /// [`add_process_group`](Self::add_process_group) and
    /// [`remove_process_group`](Self::remove_process_group) for that.
    pub fn reload_config(&self) -> Result<ConfigChanges> {
        config_changes(self.call(RELOAD_CONFIG, &[])?)
    }

    /// [`reload_config`](Self::reload_config), then
    /// [`add_process_group`](Self::add_process_group) for each of `names`,
    /// in one round trip (`system.multicall`): how new programs with
    /// `autostart=true` are loaded and started at once. Fails with the
    /// first call that failed; the calls after it ran all the same.
    pub fn reload_and_add(&self, names: &[&str]) -> Result<ConfigChanges> {
        const ADD: &str = "supervisor.addProcessGroup";
        let call = |method: &str, params: Vec<Value>| {
            Value::Struct(BTreeMap::from([
                ("methodName".to_owned(), Value::String(method.to_owned())),
                ("params".to_owned(), Value::Array(params)),
            ]))
        };
        let mut calls = vec![call(RELOAD_CONFIG, Vec::new())];
        calls.extend(
            names
                .iter()
                .map(|name| call(ADD, vec![Value::String((*name).to_owned())])),
        );
        let Value::Array(replies) = self.call(MULTICALL, &[Value::Array(calls)])? else {
            return Err(protocol(MULTICALL, "expected an array of replies"));
        };
        if replies.len() != names.len() + 1 {
            return Err(protocol(
                MULTICALL,
                format!("{} replies to {} calls", replies.len(), names.len() + 1),
            ));
        }
        let mut replies = replies.into_iter();
        let changes = multicall_reply(RELOAD_CONFIG, replies.next())?;
        let changes = config_changes(changes)?;
        for (name, reply) in names.iter().zip(replies) {
            match multicall_reply(ADD, Some(reply)) {
                Ok(_) => {}
                Err(Error::Fault { code, .. }) if code == fault::ALREADY_ADDED => {}
                Err(err) => return Err(no_such_program(err, name)),
            }
        }
        Ok(changes)
    }

    /// Loads a group that [`reload_config`](Self::reload_config) reported as
    /// added. Adding an already loaded group succeeds.
    ///
    /// With `autostart=true` supervisord starts the process itself: it is
    /// `STARTING` when this returns, so a following
    /// [`start_process`](Self::start_process) with `wait` returns at once
    /// rather than after `startsecs`. Poll [`process_info`](Self::process_info)
    /// to wait for `RUNNING`.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchProgram`] if the config files have no such group.
    pub fn add_process_group(&self, name: &str) -> Result<()> {
        self.call_named(
            "supervisor.addProcessGroup",
            name,
            &[],
            &[fault::ALREADY_ADDED],
        )
    }

    /// Unloads a stopped group. Removing a group that is not loaded succeeds.
    ///
    /// # Errors
    ///
    /// [`Error::Fault`] with code 91 (`STILL_RUNNING`) if a process of the
    /// group is still running.
    pub fn remove_process_group(&self, name: &str) -> Result<()> {
        const METHOD: &str = "supervisor.removeProcessGroup";
        match self.call(METHOD, &[Value::String(name.to_owned())]) {
            Ok(_) => Ok(()),
            Err(Error::Fault { code, .. }) if code == fault::BAD_NAME => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Starts a process; with `wait`, returns only once it has stayed up for
    /// `startsecs` (or failed). Starting a process that is already
    /// `STARTING`, `RUNNING` or `BACKOFF` succeeds at once, without waiting.
    pub fn start_process(&self, name: &str, wait: bool) -> Result<()> {
        self.call_named(
            "supervisor.startProcess",
            name,
            &[Value::Bool(wait)],
            &[fault::ALREADY_STARTED],
        )
    }

    /// Stops a process; with `wait`, returns only once it has exited.
    /// Stopping a process that is not running succeeds.
    pub fn stop_process(&self, name: &str, wait: bool) -> Result<()> {
        self.call_named(
            "supervisor.stopProcess",
            name,
            &[Value::Bool(wait)],
            &[fault::NOT_RUNNING],
        )
    }

    /// Sends a signal, by name (`"USR2"`, `"HUP"`) or number, to a running
    /// process.
    pub fn signal_process(&self, name: &str, signal: &str) -> Result<()> {
        self.call_named(
            "supervisor.signalProcess",
            name,
            &[Value::String(signal.to_owned())],
            &[],
        )
    }

    /// State of one process.
    pub fn process_info(&self, name: &str) -> Result<ProcessInfo> {
        const METHOD: &str = "supervisor.getProcessInfo";
        match self.call(METHOD, &[Value::String(name.to_owned())]) {
            Ok(reply) => process_info_from(METHOD, reply),
            Err(err) => Err(no_such_program(err, name)),
        }
    }

    /// State of every loaded process.
    pub fn all_process_info(&self) -> Result<Vec<ProcessInfo>> {
        const METHOD: &str = "supervisor.getAllProcessInfo";
        match self.call(METHOD, &[])? {
            Value::Array(items) => items
                .into_iter()
                .map(|item| process_info_from(METHOD, item))
                .collect(),
            other => Err(unexpected(METHOD, "an array", &other)),
        }
    }

    /// Asks supervisord to stop all processes and exit. Returns once the
    /// request is accepted, not once supervisord has exited.
    pub fn shutdown(&self) -> Result<()> {
        self.call("supervisor.shutdown", &[]).map(drop)
    }

    /// Calls a method whose first parameter is a program or group name,
    /// treating the `ok_faults` as success and `BAD_NAME` as
    /// [`Error::NoSuchProgram`].
    fn call_named(
        &self,
        method: &str,
        name: &str,
        extra: &[Value],
        ok_faults: &[i32],
    ) -> Result<()> {
        let mut params = vec![Value::String(name.to_owned())];
        params.extend_from_slice(extra);
        match self.call(method, &params) {
            Ok(_) => Ok(()),
            Err(Error::Fault { code, .. }) if ok_faults.contains(&code) => Ok(()),
            Err(err) => Err(no_such_program(err, name)),
        }
    }

    /// One XML-RPC call; faults come back as [`Error::Fault`].
    fn call(&self, method: &str, params: &[Value]) -> Result<Value> {
        let body = xmlrpc::encode_call(method, params);
        let response = self.post(method, body.as_bytes())?;
        match xmlrpc::decode_response(&response).map_err(|detail| protocol(method, detail))? {
            Response::Value(value) => Ok(value),
            Response::Fault { code, message } => Err(Error::Fault {
                method: method.to_owned(),
                code,
                message,
            }),
        }
    }

    /// POSTs `body` to `/RPC2` and returns the response body.
    fn post(&self, method: &str, body: &[u8]) -> Result<String> {
        // A signal (SIGCHLD from a child sarge started, say) must not fail
        // a call: each retry connects a fresh socket, so none is half-open.
        let mut stream = retry_interrupted(|| UnixStream::connect(&self.socket)).map_err(
            |source| match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Error::NotRunning {
                    socket: self.socket.clone(),
                },
                _ => self.io_error(source),
            },
        )?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|source| self.io_error(source))?;
        let head = format!(
            "POST /RPC2 HTTP/1.0\r\nHost: localhost\r\nUser-Agent: sarge\r\n\
             Content-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        // write_all already retries a write that a signal interrupted.
        stream
            .write_all(&request)
            .map_err(|source| self.io_error(source))?;
        let raw = read_http_response(&mut stream).map_err(|source| self.io_error(source))?;
        parse_http_response(&raw).map_err(|detail| protocol(method, detail))
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::Io {
            socket: self.socket.clone(),
            source,
        }
    }
}

/// Reads until the body announced by Content-Length is complete, or until
/// the server closes the connection.
fn read_http_response(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut chunk = [0_u8; 16 * 1024];
    loop {
        let read = retry_interrupted(|| stream.read(&mut chunk))?;
        if read == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&chunk[..read]);
        if let Some((body_start, Some(length))) = split_head(&raw) {
            if raw.len() >= body_start + length {
                return Ok(raw);
            }
        }
    }
}

/// Runs `operation` again for as long as a signal interrupts it (`EINTR`),
/// which says nothing about the socket or supervisord.
fn retry_interrupted<T>(mut operation: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match operation() {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Where the body starts and the Content-Length, once the head is complete.
fn split_head(raw: &[u8]) -> Option<(usize, Option<usize>)> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let length = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("content-length") {
            value.trim().parse().ok()
        } else {
            None
        }
    });
    Some((head_end + 4, length))
}

fn parse_http_response(raw: &[u8]) -> std::result::Result<String, String> {
    let Some((body_start, length)) = split_head(raw) else {
        return Err(if raw.is_empty() {
            "connection closed without a response".to_owned()
        } else {
            "response ended inside the HTTP head".to_owned()
        });
    };
    let status_line = String::from_utf8_lossy(&raw[..body_start])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("HTTP status {status_line:?}"));
    }
    let mut body = &raw[body_start..];
    if let Some(length) = length {
        if body.len() < length {
            return Err(format!("body cut short: {} of {length} bytes", body.len()));
        }
        body = &body[..length];
    }
    String::from_utf8(body.to_vec()).map_err(|_| "body is not UTF-8".to_owned())
}

const RELOAD_CONFIG: &str = "supervisor.reloadConfig";
const MULTICALL: &str = "system.multicall";

/// One reply of `system.multicall`. supervisord gives each call's value
/// as it is (not wrapped in a one-item array, as the XML-RPC multicall
/// convention has it), or a `{faultCode, faultString}` struct.
fn multicall_reply(method: &str, reply: Option<Value>) -> Result<Value> {
    match reply {
        Some(Value::Struct(mut fault)) if fault.contains_key("faultCode") => {
            let code = match fault.remove("faultCode") {
                Some(Value::Int(code)) => i32::try_from(code).unwrap_or(i32::MIN),
                _ => return Err(protocol(method, "a faultCode that is not an int")),
            };
            let message = match fault.remove("faultString") {
                Some(Value::String(message)) => message,
                _ => String::new(),
            };
            Err(Error::Fault {
                method: method.to_owned(),
                code,
                message,
            })
        }
        Some(value) => Ok(value),
        None => Err(protocol(method, "no reply")),
    }
}

/// The `[[added, changed, removed]]` of `supervisor.reloadConfig`.
fn config_changes(reply: Value) -> Result<ConfigChanges> {
    const METHOD: &str = RELOAD_CONFIG;
    let lists = match reply {
        Value::Array(mut outer) if outer.len() == 1 => match outer.pop() {
            Some(Value::Array(lists)) if lists.len() == 3 => lists,
            _ => return Err(protocol(METHOD, "expected [[added, changed, removed]]")),
        },
        other => return Err(unexpected(METHOD, "[[added, changed, removed]]", &other)),
    };
    let mut lists = lists.into_iter().map(|list| string_list(METHOD, list));
    let mut next = || lists.next().unwrap_or_else(|| Ok(Vec::new()));
    Ok(ConfigChanges {
        added: next()?,
        changed: next()?,
        removed: next()?,
    })
}

fn protocol(method: &str, detail: impl Into<String>) -> Error {
    Error::Protocol {
        method: method.to_owned(),
        detail: detail.into(),
    }
}

fn unexpected(method: &str, wanted: &str, got: &Value) -> Error {
    protocol(method, format!("expected {wanted}, got {got:?}"))
}

fn no_such_program(err: Error, name: &str) -> Error {
    match err {
        Error::Fault { code, .. } if code == fault::BAD_NAME => Error::NoSuchProgram {
            name: name.to_owned(),
        },
        other => other,
    }
}

fn expect_struct(method: &str, value: Value) -> Result<BTreeMap<String, Value>> {
    match value {
        Value::Struct(members) => Ok(members),
        other => Err(unexpected(method, "a struct", &other)),
    }
}

fn take_int(method: &str, members: &mut BTreeMap<String, Value>, key: &str) -> Result<i64> {
    match members.remove(key) {
        Some(Value::Int(value)) => Ok(value),
        other => Err(protocol(method, format!("{key} is not an int: {other:?}"))),
    }
}

fn take_string(method: &str, members: &mut BTreeMap<String, Value>, key: &str) -> Result<String> {
    match members.remove(key) {
        Some(Value::String(value)) => Ok(value),
        other => Err(protocol(
            method,
            format!("{key} is not a string: {other:?}"),
        )),
    }
}

fn string_list(method: &str, value: Value) -> Result<Vec<String>> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(unexpected(method, "a string", &other)),
            })
            .collect(),
        other => Err(unexpected(method, "a list of names", &other)),
    }
}

fn process_info_from(method: &str, value: Value) -> Result<ProcessInfo> {
    let mut m = expect_struct(method, value)?;
    let pid = take_int(method, &mut m, "pid")?;
    let exit_status = take_int(method, &mut m, "exitstatus")?;
    // `logfile` is the deprecated alias of `stdout_logfile`; older
    // supervisords only have the former.
    let log_file = match m.contains_key("stdout_logfile") {
        true => take_string(method, &mut m, "stdout_logfile")?,
        false => take_string(method, &mut m, "logfile")?,
    };
    Ok(ProcessInfo {
        name: take_string(method, &mut m, "name")?,
        group: take_string(method, &mut m, "group")?,
        state: ProcessState::from_code(take_int(method, &mut m, "state")?),
        pid: u32::try_from(pid).map_err(|_| protocol(method, format!("pid {pid} out of range")))?,
        exit_status: i32::try_from(exit_status)
            .map_err(|_| protocol(method, format!("exitstatus {exit_status} out of range")))?,
        description: take_string(method, &mut m, "description")?,
        start: take_int(method, &mut m, "start")?,
        stop: take_int(method, &mut m, "stop")?,
        spawn_error: take_string(method, &mut m, "spawnerr")?,
        log_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_response_body_is_cut_at_content_length() {
        let raw =
            b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 5\r\n\r\nhello extra";
        assert_eq!(parse_http_response(raw).unwrap(), "hello");
    }

    #[test]
    fn http_response_without_length_runs_to_eof() {
        let raw = b"HTTP/1.0 200 OK\r\nServer: medusa\r\n\r\n<xml/>";
        assert_eq!(parse_http_response(raw).unwrap(), "<xml/>");
    }

    #[test]
    fn http_errors_are_described() {
        assert_eq!(
            parse_http_response(b"HTTP/1.0 401 Unauthorized\r\n\r\n").unwrap_err(),
            "HTTP status \"HTTP/1.0 401 Unauthorized\""
        );
        assert_eq!(
            parse_http_response(b"").unwrap_err(),
            "connection closed without a response"
        );
        assert_eq!(
            parse_http_response(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nabc").unwrap_err(),
            "body cut short: 3 of 10 bytes"
        );
    }

    #[test]
    fn reading_stops_once_content_length_is_met() {
        // A reader that would fail if read past the announced body, like a
        // keep-alive server that never closes.
        struct Once(Option<&'static [u8]>);
        impl Read for Once {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let data = self.0.take().ok_or(io::ErrorKind::WouldBlock)?;
                buf[..data.len()].copy_from_slice(data);
                Ok(data.len())
            }
        }
        let raw = read_http_response(&mut Once(Some(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )))
        .unwrap();
        assert_eq!(parse_http_response(&raw).unwrap(), "ok");
    }

    #[test]
    fn reads_interrupted_by_a_signal_are_retried() {
        // Interrupted before each chunk, as a process that gets signals
        // (SIGCHLD, SIGWINCH) while it waits for supervisord can be.
        struct Interrupting {
            chunks: Vec<&'static [u8]>,
            interrupt_next: bool,
        }
        impl Read for Interrupting {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.interrupt_next = !self.interrupt_next;
                if self.interrupt_next {
                    return Err(io::Error::from(io::ErrorKind::Interrupted));
                }
                if self.chunks.is_empty() {
                    return Ok(0);
                }
                let chunk = self.chunks.remove(0);
                buf[..chunk.len()].copy_from_slice(chunk);
                Ok(chunk.len())
            }
        }
        let mut reader = Interrupting {
            chunks: vec![
                b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                b"hel",
                b"lo",
            ],
            interrupt_next: false,
        };
        let raw = read_http_response(&mut reader).unwrap();
        assert_eq!(parse_http_response(&raw).unwrap(), "hello");
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut calls = 0;
        let result: io::Result<()> = retry_interrupted(|| {
            calls += 1;
            Err(io::Error::from(io::ErrorKind::ConnectionReset))
        });
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(calls, 1);
    }

    #[test]
    fn process_info_is_read_from_supervisord_struct() {
        let string = |s: &str| Value::String(s.to_owned());
        let value = Value::Struct(BTreeMap::from([
            ("name".to_owned(), string("web")),
            ("group".to_owned(), string("web")),
            ("state".to_owned(), Value::Int(20)),
            ("statename".to_owned(), string("RUNNING")),
            ("pid".to_owned(), Value::Int(4242)),
            ("exitstatus".to_owned(), Value::Int(0)),
            ("description".to_owned(), string("pid 4242, uptime 0:00:03")),
            ("start".to_owned(), Value::Int(1_700_000_000)),
            ("stop".to_owned(), Value::Int(0)),
            ("now".to_owned(), Value::Int(1_700_000_003)),
            ("spawnerr".to_owned(), string("")),
            ("logfile".to_owned(), string("/log/web.log")),
            ("stdout_logfile".to_owned(), string("/log/web.log")),
            ("stderr_logfile".to_owned(), string("")),
        ]));
        assert_eq!(
            process_info_from("m", value).unwrap(),
            ProcessInfo {
                name: "web".into(),
                group: "web".into(),
                state: ProcessState::Running,
                pid: 4242,
                exit_status: 0,
                description: "pid 4242, uptime 0:00:03".into(),
                start: 1_700_000_000,
                stop: 0,
                spawn_error: String::new(),
                log_file: "/log/web.log".into(),
            }
        );
    }

    #[test]
    fn missing_socket_means_not_running() {
        let socket =
            std::env::temp_dir().join(format!("sarge-no-such-{}.sock", std::process::id()));
        let client = Client::new(Utf8PathBuf::try_from(socket).unwrap());
        let err = client.state().unwrap_err();
        assert!(matches!(err, Error::NotRunning { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("supervisord is not running at /"),
            "{err}"
        );
    }

    #[test]
    fn state_helpers_follow_supervisord_groups() {
        assert!(ProcessState::Running.is_running() && ProcessState::Running.is_active());
        assert!(ProcessState::Backoff.is_active() && !ProcessState::Backoff.is_running());
        assert!(ProcessState::Exited.is_stopped() && !ProcessState::Stopping.is_stopped());
        assert_eq!(ProcessState::from_code(1000), ProcessState::Unknown);
        assert_eq!(ProcessState::Fatal.to_string(), "FATAL");
    }
}
