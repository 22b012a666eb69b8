//! The one error type of this crate.

use camino::Utf8PathBuf;

/// Everything that can go wrong while handing out a port.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every port of the range is in use.
    #[error("no free port left in range {first}..={last}")]
    Exhausted {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },

    /// The state file exists but could not be read.
    #[error("cannot read port state file {path}")]
    ReadState {
        /// The state file.
        path: Utf8PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The state file does not hold a single `last_port = N` line.
    #[error("port state file {path} is corrupt: {problem}")]
    CorruptState {
        /// The state file.
        path: Utf8PathBuf,
        /// What is wrong with its content.
        problem: String,
    },

    /// Writing the new state (temp file, then rename) failed.
    #[error("cannot write port state file {path}")]
    WriteState {
        /// The file being written: the temp file, or the state file for the
        /// final rename.
        path: Utf8PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
