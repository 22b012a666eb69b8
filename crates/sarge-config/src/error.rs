//! The one error type of this crate.

use camino::Utf8PathBuf;

/// Everything that can go wrong while reading `sarge.yaml`.
///
/// Every message starts with the file it is about (except
/// [`Error::BadAddress`], which has no file) and names the key that was
/// wrong, using dotted paths such as `port_map.web` or `healthcheck.web.path`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read (missing, no permission, not UTF-8).
    #[error("cannot read config file {path}")]
    Read {
        /// The file that could not be read.
        path: Utf8PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The text is not valid YAML (or repeats a key).
    ///
    /// The parser's own message is the whole story, so it is copied into
    /// `message` rather than kept as a source: that keeps the parser's types
    /// out of this crate's API.
    #[error("{path}: invalid YAML: {message}")]
    Syntax {
        /// The file being parsed.
        path: Utf8PathBuf,
        /// 1-based line of the problem, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the problem, when the parser knows it.
        column: Option<usize>,
        /// The parser's description, including the location.
        message: String,
    },

    /// A required key is absent.
    #[error("{path}: {key} is required")]
    Missing {
        /// The file being parsed.
        path: Utf8PathBuf,
        /// Dotted path of the missing key.
        key: String,
    },

    /// A key this version of sarge does not know; most likely a typo.
    #[error("{path}: unknown key \"{key}\" (known keys here: {known})")]
    UnknownKey {
        /// The file being parsed.
        path: Utf8PathBuf,
        /// Dotted path of the unknown key.
        key: String,
        /// Comma-separated keys that are allowed at that place.
        known: String,
    },

    /// A key is present but its value is unusable.
    #[error("{path}: {key}: {problem}")]
    Invalid {
        /// The file being parsed.
        path: Utf8PathBuf,
        /// Dotted path of the key whose value is wrong.
        key: String,
        /// What is wrong with it.
        problem: String,
    },

    /// Text given to [`StableAddress`](crate::StableAddress)'s `FromStr` is
    /// not `host:port`.
    #[error("{address:?} is not host:port ({reason})")]
    BadAddress {
        /// The text that was parsed.
        address: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// Text given to [`ProcessName`](crate::ProcessName)'s `FromStr` breaks
    /// the process-name rule; the message names the problem and states the
    /// whole rule ([`ProcessName::RULE`](crate::ProcessName::RULE)).
    #[error(
        "{} is not a valid process name: {problem} ({})",
        shown(name),
        crate::ProcessName::RULE
    )]
    InvalidProcessName {
        /// The rejected text, whole.
        name: String,
        /// What is wrong with it, e.g. `it is 41 characters long`.
        problem: String,
    },
}

/// How a rejected name is echoed: quoted, and cut short if long (it may
/// be a whole Procfile line).
fn shown(name: &str) -> String {
    const SHOWN: usize = 60;
    match name.char_indices().nth(SHOWN) {
        None => format!("{name:?}"),
        Some((cut, _)) => format!(
            "{:?} ({} bytes)",
            format!("{}...", &name[..cut]),
            name.len()
        ),
    }
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
