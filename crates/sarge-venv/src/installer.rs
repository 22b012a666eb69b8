//! Running uv or pip so that the only package source is the wheel folder.
//!
//! Flags alone are not enough: pip honours `--find-links` lines inside
//! requirements.txt even with `--no-index`, and both tools read settings from
//! the caller's environment. So every child gets a scrubbed environment and
//! pip additionally gets a proxy that refuses every connection.

use std::process::{Command, Output, Stdio};

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};
use crate::key::find_on_path;
use crate::output::{missing_package, tail, TAIL_LINES};

/// Which tool creates the virtualenv and installs into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installer {
    /// `uv venv` + `uv pip install`: much faster; files are copied from
    /// its cache, never hardlinked, so no environment shares a file with it,
    /// and the cache is sealed between installs (see `cache`).
    Uv {
        /// The `uv` executable.
        bin: Utf8PathBuf,
    },
    /// The interpreter's own `-m venv`, then the new environment's pip.
    Pip,
}

impl Installer {
    /// [`Installer::Uv`] when `uv` is on `PATH`, else [`Installer::Pip`].
    pub fn detect() -> Installer {
        find_on_path("uv")
            .and_then(|path| Utf8PathBuf::from_path_buf(path).ok())
            .map_or(Installer::Pip, |bin| Installer::Uv { bin })
    }

    /// A short name for messages and for the environment key: `uv` or `pip`.
    pub fn name(&self) -> &'static str {
        match self {
            Installer::Uv { .. } => "uv",
            Installer::Pip => "pip",
        }
    }
}

/// Everything one build needs, with the interpreter already resolved.
pub(crate) struct Build<'a> {
    /// The interpreter as the caller named it, for error messages.
    pub python_as_given: &'a Utf8Path,
    /// The canonical interpreter path that went into the key.
    pub python: &'a Utf8Path,
    pub venv: &'a Utf8Path,
    pub requirements: &'a Utf8Path,
    pub dist: &'a Utf8Path,
    pub cache_dir: &'a Utf8Path,
    /// The held build lock of this environment, shared with the installer.
    pub lock: &'a std::fs::File,
}

/// An address nothing listens on (the discard port on loopback), so any
/// download pip attempts fails at once instead of reaching the network.
const REFUSING_PROXY: &str = "http://127.0.0.1:9";

/// Creates the empty virtualenv at `build.venv`; returns the tool's output.
pub(crate) fn create_venv(installer: &Installer, build: &Build<'_>) -> Result<String> {
    let python_error = |detail: String| Error::Python {
        python: build.python_as_given.to_owned(),
        detail,
    };
    match installer {
        Installer::Uv { bin } => {
            let mut command = scrubbed_command(bin.as_str(), build);
            command
                .args(["venv", "--no-config", "--no-project", "--offline"])
                .args(["--no-python-downloads", "--color", "never", "--python"])
                .arg(build.python)
                .arg(build.venv)
                .env("UV_CACHE_DIR", build.cache_dir)
                .env("UV_PYTHON_DOWNLOADS", "never");
            let output = command.output().map_err(|source| Error::Spawn {
                program: bin.clone(),
                source,
            })?;
            let text = combined(&output);
            if output.status.success() {
                Ok(text)
            } else {
                Err(python_error(format!(
                    "cannot create a virtualenv with uv:\n{}",
                    tail(&text, TAIL_LINES)
                )))
            }
        }
        Installer::Pip => {
            let mut command = scrubbed_command(build.python.as_str(), build);
            command.args(["-m", "venv"]).arg(build.venv);
            let output = command
                .output()
                .map_err(|err| python_error(format!("cannot be run: {err}")))?;
            let text = combined(&output);
            if output.status.success() {
                Ok(text)
            } else if lacks_venv_support(&text) {
                Err(python_error(format!(
                    "has no venv support (ensurepip is missing; on Debian/Ubuntu install python3-venv):\n{}",
                    tail(&text, TAIL_LINES)
                )))
            } else {
                Err(python_error(format!(
                    "cannot create a virtualenv:\n{}",
                    tail(&text, TAIL_LINES)
                )))
            }
        }
    }
}

/// Installs the requirements into the virtualenv; returns the tool's output.
pub(crate) fn install(installer: &Installer, build: &Build<'_>) -> Result<String> {
    let venv_python = build.venv.join("bin/python");
    let (program, mut command, label) = match installer {
        Installer::Uv { bin } => {
            let mut command = scrubbed_command(bin.as_str(), build);
            command
                .args(["pip", "install", "--no-config", "--offline", "--no-index"])
                .arg("--find-links")
                .arg(build.dist)
                .arg("--requirement")
                .arg(build.requirements)
                .arg("--python")
                .arg(&venv_python)
                // Copies, not hardlinks: a hardlinked file is the cache's
                // file, so an app editing its package in place would edit
                // the cache and every environment built from it later.
                // (`clone` is no better: on ext4 uv falls back to
                // hardlinks.) Copying Flask's packages costs no measurable
                // time next to compiling them, and ~6 MB per environment.
                .args(["--link-mode", "copy"])
                // No --compile-bytecode: the store compiles afterwards
                // (see `bytecode`), reusing what earlier environments
                // compiled from the same packages.
                .args(["--no-progress", "--color", "never"])
                .env("UV_CACHE_DIR", build.cache_dir)
                .env("UV_PYTHON_DOWNLOADS", "never");
            (bin.clone(), command, "uv pip install")
        }
        Installer::Pip => {
            let mut command = scrubbed_command(venv_python.as_str(), build);
            command
                .args(["-m", "pip", "install", "--no-index", "--find-links"])
                .arg(build.dist)
                .arg("--requirement")
                .arg(build.requirements)
                .args(["--disable-pip-version-check", "--no-input"])
                .args(["--progress-bar", "off", "--retries", "0"])
                .args(["--proxy", REFUSING_PROXY])
                .arg("--cache-dir")
                .arg(build.cache_dir.join(crate::cache::PIP_CACHE))
                .env("PIP_CONFIG_FILE", "/dev/null");
            (venv_python.clone(), command, "pip install")
        }
    };
    let output = command
        .output()
        .map_err(|source| Error::Spawn { program, source })?;
    let text = combined(&output);
    if output.status.success() {
        return Ok(text);
    }
    let mut detail = match missing_package(&text) {
        Some(package) => format!("no wheel in {} satisfies {package}\n", build.dist),
        None => String::new(),
    };
    detail.push_str(&format!("{label} output:\n{}", tail(&text, TAIL_LINES)));
    Err(Error::Install {
        requirements: build.requirements.to_owned(),
        detail,
    })
}

/// Settings a user's shell may carry that would add package sources or
/// point the tools at another environment.
fn is_inherited_setting_dropped(name: &str) -> bool {
    name.starts_with("UV_")
        || name.starts_with("PIP_")
        || matches!(
            name,
            "VIRTUAL_ENV" | "CONDA_PREFIX" | "PYTHONPATH" | "PYTHONHOME" | "NO_PROXY" | "no_proxy"
        )
}

fn scrubbed_command(program: &str, build: &Build<'_>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_inherited_setting_dropped) {
            command.env_remove(&name);
        }
    }
    for proxy in ["http_proxy", "https_proxy", "all_proxy"] {
        command.env(proxy, REFUSING_PROXY);
        command.env(proxy.to_uppercase(), REFUSING_PROXY);
    }
    // The build lock is the installer's stdin (it never reads it): the lock
    // then lives as long as the installer does, so if sarge is killed
    // mid-build, the orphaned installer still holds it and no cleanup
    // deletes the folder under its feet.
    match build.lock.try_clone() {
        Ok(lock) => command.stdin(Stdio::from(lock)),
        Err(_) => command.stdin(Stdio::null()),
    };
    command
}

fn lacks_venv_support(output: &str) -> bool {
    // Debian wraps its message mid-phrase, so compare with line breaks gone.
    let flat = output.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.contains("ensurepip is not available")
        || flat.contains("No module named ensurepip")
        || flat.contains("No module named venv")
}

/// stdout then stderr: both tools print the cause of a failure on stderr,
/// so putting it last keeps it inside the tail.
fn combined(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_environment_settings_are_dropped() {
        for name in [
            "UV_INDEX_URL",
            "UV_EXTRA_INDEX_URL",
            "UV_FIND_LINKS",
            "PIP_INDEX_URL",
            "PIP_FIND_LINKS",
            "PIP_CONFIG_FILE",
            "VIRTUAL_ENV",
            "PYTHONPATH",
            "NO_PROXY",
        ] {
            assert!(is_inherited_setting_dropped(name), "{name}");
        }
        for name in ["PATH", "HOME", "PYENV_VERSION", "LANG"] {
            assert!(!is_inherited_setting_dropped(name), "{name}");
        }
    }

    #[test]
    fn debian_missing_ensurepip_message_is_recognised() {
        // From Debian's python3.11 venv/__init__.py when python3-venv is absent.
        let output = "\
The virtual environment was not created successfully because ensurepip is not
available.  On Debian/Ubuntu systems, you need to install the python3-venv
package using the following command.

    apt install python3.11-venv
";
        assert!(lacks_venv_support(output));
        assert!(!lacks_venv_support(
            "Error: [Errno 13] Permission denied: '/srv'"
        ));
    }
}
