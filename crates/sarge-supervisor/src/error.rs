//! The crate's single error type.

use camino::Utf8PathBuf;

/// Everything that can go wrong while rendering supervisord config or
/// talking to a running supervisord.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing is listening on the control socket: the socket file is missing
    /// or the connection was refused.
    #[error("supervisord is not running at {socket} (no one is listening on that socket)")]
    NotRunning {
        /// The UNIX socket that was tried.
        socket: Utf8PathBuf,
    },

    /// supervisord answered the call with an XML-RPC fault.
    #[error("supervisord refused {method}: {code} {message}")]
    Fault {
        /// The XML-RPC method, e.g. `supervisor.startProcess`.
        method: String,
        /// supervisord's fault code, e.g. 91 for `STILL_RUNNING`.
        code: i32,
        /// supervisord's fault string, e.g. `STILL_RUNNING: web`.
        message: String,
    },

    /// supervisord does not know a program (or group) by this name.
    #[error("supervisord has no program named {name:?}")]
    NoSuchProgram {
        /// The program name that was asked for.
        name: String,
    },

    /// Reading from or writing to the control socket failed (including
    /// time-outs).
    #[error("talking to supervisord over {socket}")]
    Io {
        /// The UNIX socket in use.
        socket: Utf8PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// supervisord's answer could not be understood.
    #[error("unreadable response from supervisord to {method}: {detail}")]
    Protocol {
        /// The XML-RPC method whose response was unreadable.
        method: String,
        /// What was wrong with it.
        detail: String,
    },

    /// A program name that supervisord (or sarge's file layout) cannot take.
    #[error("invalid program name {name:?}: {reason}")]
    InvalidProgramName {
        /// The rejected name.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// A config value that supervisord's config parser would silently change,
    /// so it cannot be written faithfully.
    #[error("cannot write {key} = {value:?} into a supervisord config: {reason}")]
    InvalidValue {
        /// The config key, e.g. `program:web command`.
        key: String,
        /// The rejected value.
        value: String,
        /// Why it cannot be written.
        reason: &'static str,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
