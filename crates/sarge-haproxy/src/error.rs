//! The one error type of this crate.

use std::io;

use camino::Utf8PathBuf;

/// Everything that can go wrong while rendering, checking or steering haproxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`HaproxyConfig`](crate::HaproxyConfig) holds a value haproxy
    /// would misread or reject (see [`HaproxyConfig::validate`](crate::HaproxyConfig::validate)).
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// Which field, e.g. `route name` or `admin socket path`.
        field: &'static str,
        /// The offending value.
        value: String,
        /// Why it cannot be used.
        reason: &'static str,
    },

    /// The haproxy binary could not be started at all.
    #[error("run haproxy binary {bin}{}", not_found_hint(source))]
    Binary {
        /// The binary that was run.
        bin: Utf8PathBuf,
        /// Why it could not be run.
        #[source]
        source: io::Error,
    },

    /// `haproxy -c` refused the config; `output` is haproxy's own report.
    #[error("haproxy rejected config {config}:\n{output}")]
    ConfigRejected {
        /// The config file that was checked.
        config: Utf8PathBuf,
        /// haproxy's stdout and stderr.
        output: String,
    },

    /// Writing the config file failed.
    #[error("write haproxy config {path}")]
    Write {
        /// The config file being written.
        path: Utf8PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },

    /// The admin socket could not be reached (haproxy down, wrong path, ...).
    #[error("connect to haproxy admin socket {socket}")]
    Connect {
        /// The admin socket path.
        socket: Utf8PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },

    /// Sending a command or reading its answer failed mid-way.
    #[error("send `{command}` over haproxy admin socket {socket}")]
    Io {
        /// The admin socket path.
        socket: Utf8PathBuf,
        /// The command line that was being sent.
        command: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },

    /// haproxy answered the command with an error message.
    #[error("haproxy admin command `{command}`: {response}")]
    Command {
        /// The command line that was sent.
        command: String,
        /// haproxy's answer, trimmed.
        response: String,
    },

    /// haproxy refused to reload: its new config could not be loaded (a
    /// syntax error, an address that cannot be bound). The old worker keeps
    /// serving the old config; haproxy's log says why.
    #[error("haproxy refused to reload (the master at {socket} counted a failed reload)")]
    ReloadFailed {
        /// The master CLI socket.
        socket: Utf8PathBuf,
    },

    /// haproxy accepted the command but its answer is not what this crate
    /// expected (a missing server row, a state that did not take effect).
    #[error("haproxy admin command `{command}`: {problem}")]
    Unexpected {
        /// The command line whose answer was inspected.
        command: String,
        /// What was wrong with the answer.
        problem: String,
    },
}

fn not_found_hint(source: &io::Error) -> &'static str {
    if source.kind() == io::ErrorKind::NotFound {
        " (not found; is haproxy installed?)"
    } else {
        ""
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
