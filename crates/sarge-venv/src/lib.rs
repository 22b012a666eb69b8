//! Python virtualenvs built offline from one wheel folder, and shared.
//!
//! A [`VenvStore`] keeps immutable environments at `ROOT/<key>/`, where the
//! [`EnvKey`] is a SHA-256 over the requirements file's bytes, the
//! interpreter's identity, the identity of every file in the wheel folder
//! and the [`Installer`] kind. [`VenvStore::ensure`] returns the [`Venv`]
//! for an [`EnvironmentSpec`], building it only when no ready one exists,
//! so a redeploy with unchanged dependencies runs no installer at all. An
//! environment found changed since it was built is never rebuilt in place
//! (instances may be running from it): the fresh one goes to
//! `ROOT/<key>-<n>/`, and each is named by its [`VenvId`].
//!
//! Builds never touch the network: uv runs with `--offline --no-index`,
//! pip with `--no-index` and a proxy that refuses connections, and both
//! without the caller's `UV_*`/`PIP_*` settings. Before anything reads
//! them, the requirements file and the files it includes are checked:
//! includes must stay in the requirements file's folder, and index,
//! find-links, editable, path and URL lines are refused
//! ([`Error::RequirementsLine`], naming the file and line). Failures come back as
//! [`Error`]s naming the interpreter, the wheel folder or the missing
//! package; nothing is printed.
//!
//! Which requirement lines a wheel folder cannot satisfy for a given
//! interpreter is [`missing_requirements`], over [`WheelName`]s and the
//! [`PythonTags`] the interpreter supports: what `sarge dist missing`
//! answers.
//!
//! uv's cache, which every new environment is copied from (never linked
//! to), is read-only too except while uv installs, and its fingerprint is
//! checked before each install: one found changed is emptied first
//! ([`Venv::cache_note`]), so an app cannot change what later releases
//! install. uv builds each environment in one staging folder of the store
//! (`ROOT/.staging`), used only under the cache's lock, and it is then
//! moved to its own path, the scripts in its `bin` rewritten to name it: uv
//! remembers an interpreter by its path, so the same path every time
//! spares it starting the new environment's Python to inspect it.
//!
//! Environments are read-only once built, so [`remove_tree`] (which
//! `chmod -R u+w`s what it deletes) removes them; sarge uses it for the
//! app folders too, which an app may have made read-only.
//!
//! ```no_run
//! use std::collections::BTreeSet;
//! use camino::Utf8Path;
//! use sarge_venv::{EnvironmentSpec, Installer, VenvStore};
//!
//! # fn main() -> sarge_venv::Result<()> {
//! let store = VenvStore::new("/srv/sarge/venvs", "/srv/sarge/cache", Installer::detect());
//! let spec = EnvironmentSpec {
//!     python: Utf8Path::new("python3"),
//!     requirements: Utf8Path::new("/srv/sarge/apps/web/requirements.txt"),
//!     dist: Utf8Path::new("/srv/sarge/dist"),
//! };
//! let venv = store.ensure(&spec)?;
//! println!("{} (reused: {})", venv.bin_dir(), venv.reused);
//!
//! let removed = store.remove_unused(&BTreeSet::from([venv.id]))?;
//! println!("removed {} unused environments", removed.len());
//! # Ok(())
//! # }
//! ```
//!
//! # Stability
//!
//! sarge is before 1.0: a minor release (0.x to 0.(x+1)) may change this API, a patch release does not, and every change is in the changelog. The [`EnvKey`] of the same inputs may change between releases (it
//! then builds a fresh environment beside the old, never reuses a wrong one);
//! [`VenvId`]s already on disk stay valid. [`Venv`], [`Progress`] and
//! [`Error`] are `#[non_exhaustive]`: they grow in minor releases.
//! [`EnvironmentSpec`] and [`Installer`] are filled in by callers and are
//! exhaustive, so a new field or installer is a breaking change. The
//! installer's output passed through [`Progress`] is for people.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod bytecode;
mod cache;
mod error;
mod installer;
mod key;
mod output;
mod remove;
mod requirements;
mod seal;
mod store;
mod wheel;

pub use error::{Error, Result};
pub use installer::Installer;
pub use key::{EnvKey, VenvId};
pub use remove::remove_tree;
pub use store::{EnvironmentSpec, Progress, Venv, VenvStore};
pub use wheel::{
    missing_requirements, wheels_in, PackageName, PythonTags, Requirement, WheelName, WheelTag,
};
