//! The crate's single error type.

use camino::Utf8PathBuf;

/// Everything that can go wrong while fingerprinting, building or pruning
/// environments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The interpreter is missing, cannot be run, or cannot create a
    /// virtualenv (for example Debian's python without `python3-venv`).
    #[error("python interpreter {python} {detail}")]
    Python {
        /// The interpreter as the caller named it.
        python: Utf8PathBuf,
        /// What is wrong with it, with the tail of its output when it ran.
        detail: String,
    },
    /// The installer ran and failed, usually because a wheel is missing
    /// from the dist folder.
    #[error("install requirements from {requirements}: {detail}")]
    Install {
        /// The requirements file that could not be installed.
        requirements: Utf8PathBuf,
        /// The missing package when it could be told from the output, then
        /// the installer's last lines of output.
        detail: String,
    },
    /// Compiling the environment's Python files failed.
    #[error("compile the Python files of {venv}: {detail}")]
    Compile {
        /// The environment being built.
        venv: Utf8PathBuf,
        /// What the compiler printed.
        detail: String,
    },
    /// The wheel folder does not exist or cannot be listed.
    #[error("wheel folder {path} not found or not readable")]
    Dist {
        /// The folder that was given as the only package source.
        path: Utf8PathBuf,
    },
    /// The requirements file cannot be read.
    #[error("read requirements file {path}")]
    Requirements {
        /// The requirements file.
        path: Utf8PathBuf,
        /// Why reading it failed.
        #[source]
        source: std::io::Error,
    },
    /// The requirements file, or a file it includes, cannot be used as one
    /// (a link out of the app folder, not a regular file, too large).
    #[error("requirements file {path} {problem}")]
    RequirementsFile {
        /// The file, relative to the app folder when it was included.
        path: Utf8PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A line of a requirements file would make the installer read outside
    /// the app folder or the wheel folder (an absolute `-r`, `-e`,
    /// `--index-url`, a URL), or is not understood.
    #[error("{file} line {line}, `{text}`: {problem}")]
    RequirementsLine {
        /// The file, relative to the app folder.
        file: Utf8PathBuf,
        /// Its line number, from 1 (the first of a `\`-continued line).
        line: usize,
        /// What is refused, and why.
        problem: String,
        /// The line, cut to 200 characters: never any other file's content.
        text: String,
    },
    /// The installer program could not be started at all.
    #[error("run installer {program}")]
    Spawn {
        /// The program that was run.
        program: Utf8PathBuf,
        /// Why starting it failed.
        #[source]
        source: std::io::Error,
    },
    /// A file system operation in the store failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done, as a verb phrase ("remove folder").
        action: &'static str,
        /// The file or folder it was done to.
        path: Utf8PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A string that is not an environment key (64 lowercase hex digits).
    #[error("parse environment key {value:?}: expected 64 lowercase hex digits")]
    Key {
        /// The rejected string.
        value: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<Utf8PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
