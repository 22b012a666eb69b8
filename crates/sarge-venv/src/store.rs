//! The store: immutable virtualenvs at `ROOT/<key>/`, built in place
//! (virtualenvs are not relocatable) and trusted only once their marker
//! file exists.
//!
//! A ready environment found changed is never removed or rebuilt where it
//! is: instances may be running from it, and their imports, lazy imports
//! and restarts would see a half-built tree. Its replacement is built at
//! `ROOT/<key>-<n>/`, the next generation, and the changed one stays until
//! [`VenvStore::remove_unused`] is told no instance uses it.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{File, TryLockError};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};

use crate::bytecode;
// Per-key lock files live in the cache folder, apart from the
// environments: listing the store only ever sees key folders, and a failed
// build leaves no trace in the store.
use crate::cache::{self, LOCKS_DIR};
use crate::error::{Error, Result};
use crate::installer::{self, Build, Installer};
use crate::key::{self, EnvKey, VenvId};
use crate::remove::{make_owner_writable, remove_tree};
use crate::seal;

/// Written last, atomically: a folder without it is a crashed or failed
/// build and is never handed out.
const READY_MARKER: &str = ".sarge-ready";
/// The marker and its temp file: written after the fingerprint, so not in it.
const MARKER_FILES: [&str; 2] = [READY_MARKER, ".sarge-ready.tmp"];
/// The marker's line holding the fingerprint of the built environment.
const FINGERPRINT_FIELD: &str = "fingerprint = ";

/// What an environment is built from.
#[derive(Debug, Clone, Copy)]
pub struct EnvironmentSpec<'a> {
    /// The interpreter: a path, or a bare name looked up in `PATH`.
    pub python: &'a Utf8Path,
    /// The app's requirements file. Its folder is taken as the app's: the
    /// files it includes (`-r`, `-c`) must lie inside it, and options that
    /// add package sources, editable, path and URL requirements are
    /// refused, so the wheel folder stays the only source.
    pub requirements: &'a Utf8Path,
    /// The folder of wheels that is the only package source.
    pub dist: &'a Utf8Path,
}

/// A ready environment in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Venv {
    /// Its key: what it was built from.
    pub key: EnvKey,
    /// Its folder's name, to record and pass to
    /// [`VenvStore::remove_unused`] while in use.
    pub id: VenvId,
    /// Its folder, `ROOT/<id>`.
    pub path: Utf8PathBuf,
    /// `true` when it already existed and nothing was installed.
    pub reused: bool,
    /// Set when the environment last built for this key had changed since
    /// it was built (what changed), so this one was built beside it.
    pub rebuilt_because: Option<String>,
    /// For one built now with uv: how many compiled (`.pyc`) files it
    /// took from earlier environments, and how many sources it compiled.
    pub bytecode: Option<(usize, usize)>,
    /// For one built now with uv: set when uv's cache had changed since
    /// the last install sealed it (what changed), so it was emptied and
    /// this one installed without it.
    pub cache_discarded: Option<String>,
}

impl Venv {
    /// The folder holding `python` and the apps' console scripts.
    pub fn bin_dir(&self) -> Utf8PathBuf {
        self.path.join("bin")
    }

    /// The environment's interpreter.
    pub fn python(&self) -> Utf8PathBuf {
        self.path.join("bin/python")
    }

    /// A sentence for the user when this environment replaces a changed
    /// one, naming the key and what changed; `None` otherwise.
    pub fn rebuild_note(&self) -> Option<String> {
        self.rebuilt_because.as_ref().map(|reason| {
            format!(
                "virtualenv {} changed since it was built ({reason}): built a fresh one at {}",
                self.key, self.path
            )
        })
    }

    /// A sentence for the user when the installer's cache was discarded
    /// before this environment was built, saying why; `None` otherwise.
    pub fn cache_note(&self) -> Option<String> {
        self.cache_discarded.as_ref().map(|reason| {
            format!(
                "the installer's cache could not be trusted ({reason}): \
                 emptied it, so {} was installed without it",
                self.key
            )
        })
    }
}

/// A step of [`VenvStore::ensure`], for callers that show progress.
#[derive(Debug)]
#[non_exhaustive]
pub enum Progress<'a> {
    /// A folder left by a crashed or failed build is being removed.
    RemovingLeftover {
        /// The folder.
        path: &'a Utf8Path,
    },
    /// A new environment is being created.
    Building {
        /// Its key.
        key: &'a EnvKey,
        /// Its folder.
        path: &'a Utf8Path,
        /// The tool doing it.
        installer: &'a Installer,
    },
    /// A ready environment is no longer as it was built (an app wrote
    /// into it), so a fresh one is built beside it. The changed one is not
    /// touched: instances may run from it until they are replaced.
    Discarding {
        /// Its folder.
        path: &'a Utf8Path,
        /// What is wrong with it.
        reason: &'a str,
    },
    /// The environment is ready.
    Built {
        /// Its key.
        key: &'a EnvKey,
        /// Time spent creating and installing.
        elapsed: Duration,
        /// What the installer printed.
        output: &'a str,
    },
}

type ProgressFn = Box<dyn Fn(Progress<'_>) + Send + Sync>;

/// A folder of content-addressed virtualenvs shared by every app instance
/// that needs the same requirements, interpreter and wheels.
pub struct VenvStore {
    root: Utf8PathBuf,
    cache_dir: Utf8PathBuf,
    installer: Installer,
    owner_only: bool,
    progress: Option<ProgressFn>,
}

impl fmt::Debug for VenvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VenvStore")
            .field("root", &self.root)
            .field("cache_dir", &self.cache_dir)
            .field("installer", &self.installer)
            .field("owner_only", &self.owner_only)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl VenvStore {
    /// A store at `root`. `cache_dir` is the installer's cache (and holds
    /// the build locks); environments copy from it, never link to it.
    pub fn new(
        root: impl Into<Utf8PathBuf>,
        cache_dir: impl Into<Utf8PathBuf>,
        installer: Installer,
    ) -> Self {
        VenvStore {
            root: root.into(),
            cache_dir: cache_dir.into(),
            installer,
            owner_only: false,
            progress: None,
        }
    }

    /// Builds environments that only their owner can read: the seal
    /// removes group and other bits too (uv leaves executables 0711 on
    /// purpose). It must happen in the seal, before the fingerprint: a
    /// `chmod` afterwards makes the environment read as changed, so it
    /// would be rebuilt on every deploy.
    pub fn owner_only(mut self, owner_only: bool) -> Self {
        self.owner_only = owner_only;
        self
    }

    /// Calls `progress` at each step of a build; the store prints nothing.
    pub fn with_progress(
        mut self,
        progress: impl Fn(Progress<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// The store's folder.
    pub fn root(&self) -> &Utf8Path {
        &self.root
    }

    /// The installer used for new environments.
    pub fn installer(&self) -> &Installer {
        &self.installer
    }

    /// The key `spec` would be stored under. Cheap: reads the requirements
    /// file and stats the interpreter and wheels, runs nothing.
    pub fn key(&self, spec: &EnvironmentSpec<'_>) -> Result<EnvKey> {
        Ok(key::compute(spec, &self.installer)?.0)
    }

    /// Returns the ready environment for spec, building it if missing.
    /// `reused` tells which.
    ///
    /// Concurrent calls for the same key, from threads or processes, build
    /// it once; the others wait and then reuse it.
    pub fn ensure(&self, spec: &EnvironmentSpec<'_>) -> Result<Venv> {
        self.ensure_checked(spec, |_| false)
    }

    /// [`VenvStore::ensure`], asking `checked_unchanged` first whether the
    /// environment it would reuse was found unchanged by
    /// [`VenvStore::check_unchanged`] moments before (on another thread,
    /// say, while the app's upload was read): then it is not walked a
    /// second time. Asked at most once; on `false`, `ensure` checks it.
    pub fn ensure_checked(
        &self,
        spec: &EnvironmentSpec<'_>,
        checked_unchanged: impl FnOnce(&VenvId) -> bool,
    ) -> Result<Venv> {
        let (key, python) = key::compute(spec, &self.installer)?;
        if let Some((generation, path)) = newest_ready(&self.generations(&key)?) {
            if checked_unchanged(&VenvId::of(&key, generation)) || unchanged(&path).is_ok() {
                return Ok(self.ready(&key, generation, true, None));
            }
        }

        let lock = self.lock_file(&key)?;
        lock.lock()
            .map_err(Error::io("lock", self.lock_path(&key)))?;
        // Another process may have finished (or redone) this build while
        // we waited.
        let generations = self.generations(&key)?;
        let newest = newest_ready(&generations);
        let mut rebuilt_because = None;
        if let Some((generation, path)) = &newest {
            match unchanged(path) {
                Ok(()) => return Ok(self.ready(&key, *generation, true, None)),
                // An app changed it (or it predates fingerprints): the
                // next release gets a fresh build, never the changed one,
                // and the changed one stays as it is for the instances
                // running from it.
                Err(reason) => {
                    self.report(Progress::Discarding {
                        path,
                        reason: &reason,
                    });
                    rebuilt_because = Some(reason);
                }
            }
        }
        // Builds of this key happen under the lock we hold, and removals
        // too: a folder without the marker is a crashed build or removal,
        // which no instance runs from.
        for (_, path) in generations.iter().filter(|(_, path)| !is_ready(path)) {
            self.report(Progress::RemovingLeftover { path });
            remove_dir(path)?;
        }
        let generation = newest.map_or(0, |(generation, _)| generation + 1);
        let path = self.root.join(VenvId::of(&key, generation).as_str());
        std::fs::create_dir_all(&self.cache_dir)
            .map_err(Error::io("create installer cache folder", &self.cache_dir))?;

        self.report(Progress::Building {
            key: &key,
            path: &path,
            installer: &self.installer,
        });
        let started = Instant::now();
        let build = Build {
            python_as_given: spec.python,
            python: &python,
            venv: &path,
            requirements: spec.requirements,
            dist: spec.dist,
            cache_dir: &self.cache_dir,
            lock: &lock,
        };
        match self.build(&build, &key) {
            Ok(Built {
                output,
                compiled,
                cache_discarded,
            }) => {
                self.report(Progress::Built {
                    key: &key,
                    elapsed: started.elapsed(),
                    output: &output,
                });
                let mut venv = self.ready(&key, generation, false, rebuilt_because);
                venv.bytecode = compiled.map(|compiled| (compiled.reused, compiled.compiled));
                venv.cache_discarded = cache_discarded;
                Ok(venv)
            }
            Err(err) => {
                // The build's error matters more than a failed cleanup, and
                // the next ensure() removes the leftover anyway.
                let _ = remove_tree(&path);
                Err(err)
            }
        }
    }

    fn ready(
        &self,
        key: &EnvKey,
        generation: u32,
        reused: bool,
        rebuilt_because: Option<String>,
    ) -> Venv {
        let id = VenvId::of(key, generation);
        Venv {
            key: key.clone(),
            path: self.root.join(id.as_str()),
            id,
            reused,
            rebuilt_because,
            bytecode: None,
            cache_discarded: None,
        }
    }

    /// Every folder in the store built (or being built) for `key`, by
    /// generation.
    fn generations(&self, key: &EnvKey) -> Result<Vec<(u32, Utf8PathBuf)>> {
        let mut found = Vec::new();
        for (id, (entry_key, generation)) in self.entries()? {
            if entry_key == *key {
                found.push((generation, self.root.join(id.as_str())));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Ready environments whose compiled files a new one may take, newest
    /// first: a few, since each is searched package by package.
    fn donors(&self) -> Result<Vec<Utf8PathBuf>> {
        let mut ready: Vec<(std::time::SystemTime, Utf8PathBuf)> = self
            .entries()?
            .into_iter()
            .map(|(id, _)| self.root.join(id.as_str()))
            .filter_map(|path| {
                let built = std::fs::metadata(path.join(READY_MARKER))
                    .and_then(|meta| meta.modified())
                    .ok()?;
                Some((built, path))
            })
            .collect();
        ready.sort_by_key(|(built, _)| std::cmp::Reverse(*built));
        Ok(ready.into_iter().take(3).map(|(_, path)| path).collect())
    }

    /// The store's environment folders (names that are not ids are not
    /// sarge's and left alone); none when the store does not exist yet.
    fn entries(&self) -> Result<Vec<(VenvId, (EnvKey, u32))>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(Error::io("list store folder", &self.root)(err)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io("list store folder", &self.root))?;
            if let Some(name) = entry.file_name().to_str() {
                if let Some(parsed) = key::parse_id(name) {
                    found.push((VenvId::new(name), parsed));
                }
            }
        }
        Ok(found)
    }

    fn build(&self, build: &Build<'_>, key: &EnvKey) -> Result<Built> {
        let strip = if self.owner_only {
            seal::GROUP_OTHER_BITS
        } else {
            0
        };
        // uv's cache is what the next environments are copied from: it is
        // writable only while uv runs (`uv venv` writes it too). pip
        // installs from the wheels themselves; its cache would only hold
        // wheels it built from source archives, not sealed here.
        let cache = match self.installer {
            Installer::Uv { .. } => Some(cache::open(build.cache_dir, strip)?),
            Installer::Pip => None,
        };
        let cache_discarded = cache.as_ref().and_then(|cache| cache.discarded.clone());
        let installed = match (&cache, self.staging_for(build.venv)) {
            // Under the cache lock: no other build uses the staging folder.
            (Some(_), Some(staging)) => self.create_and_install_staged(build, key, &staging),
            _ => self.create_and_install(build),
        };
        // Sealed whether the install worked or not; its error matters more
        // than the seal's (a cache left unsealed is discarded next time).
        let sealed = cache.map(cache::OpenCache::seal);
        let output = installed?;
        sealed.transpose()?;
        // Compiled once here rather than at every start of every instance:
        // in a read-only venv Python never caches what it compiles (a warm
        // redeploy's app start went from ~130 ms to ~450 ms without it).
        // pip compiles as it installs.
        let compiled = match self.installer {
            Installer::Uv { .. } => Some(bytecode::compile(build.venv, &self.donors()?)?),
            Installer::Pip => None,
        };
        // Read-only first, so the fingerprint holds the final modes and
        // ctimes; the folder itself last, as the marker is written into it.
        seal::make_read_only(build.venv, strip, &[])?;
        let fingerprint = seal::fingerprint(build.venv, &MARKER_FILES)?;
        write_marker(build.venv, key, &self.installer, &fingerprint)?;
        let mode = std::fs::metadata(build.venv)
            .map_err(Error::io("inspect environment folder", build.venv))?
            .permissions()
            .mode();
        std::fs::set_permissions(
            build.venv,
            std::fs::Permissions::from_mode(mode & !(0o222 | strip)),
        )
        .map_err(Error::io("make read-only", build.venv))?;
        Ok(Built {
            output,
            compiled,
            cache_discarded,
        })
    }

    fn create_and_install(&self, build: &Build<'_>) -> Result<String> {
        let mut output = installer::create_venv(&self.installer, build)?;
        output.push_str(&installer::install(&self.installer, build)?);
        Ok(output)
    }

    /// The staging folder uv builds an environment in, then moved to
    /// `venv`: uv keeps what it learns of an interpreter by its path, so a
    /// build at the same path every time spares it running the new
    /// environment's Python to inspect it (`uv pip install` into a new
    /// path: 78 to 90 ms; into the staging path: 37 to 46 ms). None when
    /// `venv`'s path is so long that a script's `#!` line naming it could
    /// pass the kernel's limit: uv, which then writes another form, builds
    /// it where it stays. The staging folder is guarded by the cache's
    /// lock: a store is used with one cache folder.
    fn staging_for(&self, venv: &Utf8Path) -> Option<Utf8PathBuf> {
        (venv.as_str().len() <= MAX_STAGED_PATH).then(|| self.root.join(STAGING_DIR))
    }

    /// [`VenvStore::create_and_install`] at `staging`, then moved to
    /// `build.venv`, with the scripts in its `bin` that name the staging
    /// path (activation scripts, console scripts' `#!` lines) made to name
    /// `build.venv`. The caller holds the cache lock.
    fn create_and_install_staged(
        &self,
        build: &Build<'_>,
        key: &EnvKey,
        staging: &Utf8Path,
    ) -> Result<String> {
        if !self.staging_free(Some(key))? {
            // The installer of a build whose sarge was killed still runs
            // there.
            return self.create_and_install(build);
        }
        // A killed build's.
        remove_tree(staging)?;
        let record = self.root.join(STAGING_RECORD);
        let id = build.venv.file_name().unwrap_or_default();
        std::fs::create_dir_all(&self.root)
            .map_err(Error::io("create store folder", &self.root))?;
        std::fs::write(&record, id).map_err(Error::io("write", &record))?;
        let staged = Build {
            venv: staging,
            ..*build
        };
        let installed = self.create_and_install(&staged).and_then(|output| {
            relocate_scripts(staging, build.venv)?;
            std::fs::rename(staging, build.venv)
                .map_err(Error::io("move the new environment into place", build.venv))?;
            Ok(output)
        });
        if installed.is_err() {
            let _ = remove_tree(staging);
        }
        let _ = std::fs::remove_file(&record);
        installed
    }

    /// Whether no installer runs in the staging folder: the build that
    /// used it last (named in its record) holds its environment's lock no
    /// more. The caller holds the cache lock, and the lock of `own`.
    fn staging_free(&self, own: Option<&EnvKey>) -> Result<bool> {
        let record = self.root.join(STAGING_RECORD);
        let text = match std::fs::read_to_string(&record) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(err) => return Err(Error::io("read", record)(err)),
        };
        let Some((key, _)) = key::parse_id(text.trim()) else {
            return Ok(true);
        };
        if own == Some(&key) {
            return Ok(true);
        }
        match self.lock_file(&key)?.try_lock() {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(err)) => Err(Error::io("lock", self.lock_path(&key))(err)),
        }
    }

    /// Removes the staging folder a killed build left, once no install
    /// runs (the cache lock is free) and no installer it orphaned writes
    /// there.
    fn remove_staging_leftover(&self) -> Result<()> {
        let staging = self.root.join(STAGING_DIR);
        let record = self.root.join(STAGING_RECORD);
        if !staging.exists() && !record.exists() {
            return Ok(());
        }
        let Some(_cache) = cache::try_lock(&self.cache_dir)? else {
            return Ok(());
        };
        if self.staging_free(None)? {
            remove_tree(&staging)?;
            match std::fs::remove_file(&record) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io("remove", record)(err)),
            }
        }
        Ok(())
    }

    /// Whether environment `id` is ready and as it was built (nothing in it
    /// changed since); the error says why not. A rollback runs an old
    /// environment again only if it is.
    pub fn check_unchanged(&self, id: &VenvId) -> std::result::Result<(), String> {
        let path = self.root.join(id.as_str());
        if !is_ready(&path) {
            return Err(format!("{path} is gone"));
        }
        unchanged(&path)
    }

    /// Removes every environment whose id is not in `keep` (and leftover
    /// folders without the marker, and the staging folder a killed build
    /// left). Returns the removed ids.
    ///
    /// Folders being built right now are left alone. A folder that cannot
    /// be removed does not stop the others; the first such error is
    /// returned once all were tried.
    pub fn remove_unused(&self, keep: &BTreeSet<VenvId>) -> Result<Vec<VenvId>> {
        let mut candidates = Vec::new();
        for (id, (key, _)) in self.entries()? {
            let path = self.root.join(id.as_str());
            if keep.contains(&id) && is_ready(&path) {
                continue;
            }
            candidates.push((id, key, path));
        }
        candidates.sort();

        // One folder that cannot be removed (a file of another user's in
        // it) must not keep the others: each is tried, the first failure
        // reported.
        let mut removed = Vec::new();
        let mut first_error = None;
        for (id, key, path) in candidates {
            let lock = self.lock_file(&key)?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(err)) => {
                    return Err(Error::io("lock", self.lock_path(&key))(err))
                }
            }
            // Re-check under the lock: a build may have completed since
            // listing, and a kept id's fresh environment must survive.
            if keep.contains(&id) && is_ready(&path) {
                continue;
            }
            match remove_dir(&path) {
                Ok(()) => removed.push(id),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Err(err) = self.remove_staging_leftover() {
            first_error.get_or_insert(err);
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(removed),
        }
    }

    fn lock_path(&self, key: &EnvKey) -> Utf8PathBuf {
        self.cache_dir.join(LOCKS_DIR).join(format!("{key}.lock"))
    }

    fn lock_file(&self, key: &EnvKey) -> Result<File> {
        let dir = self.cache_dir.join(LOCKS_DIR);
        std::fs::create_dir_all(&dir).map_err(Error::io("create lock folder", &dir))?;
        let path = self.lock_path(key);
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("open lock file", path))
    }

    fn report(&self, progress: Progress<'_>) {
        if let Some(callback) = &self.progress {
            callback(progress);
        }
    }
}

/// What a build did, for [`Venv`] and [`Progress::Built`].
struct Built {
    output: String,
    compiled: Option<bytecode::Compiled>,
    cache_discarded: Option<String>,
}

/// The newest generation that is ready: the one a deploy should use.
fn newest_ready(generations: &[(u32, Utf8PathBuf)]) -> Option<(u32, Utf8PathBuf)> {
    generations
        .iter()
        .rev()
        .find(|(_, path)| is_ready(path))
        .cloned()
}

fn is_ready(path: &Utf8Path) -> bool {
    path.join(READY_MARKER).is_file()
}

/// Removes the marker first so that a crash halfway through leaves a
/// leftover, never a "ready" environment with files missing. The folder is
/// read-only once built, so it is made writable for that first.
fn remove_dir(path: &Utf8Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            make_owner_writable(path.as_std_path(), meta.permissions().mode())?
        }
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io("inspect environment folder", path)(err)),
    }
    let marker = path.join(READY_MARKER);
    match std::fs::remove_file(&marker) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(Error::io("remove marker", marker)(err)),
    }
    remove_tree(path)
}

/// The staging folder's name in the store: not an id, so never taken for
/// an environment.
const STAGING_DIR: &str = ".staging";

/// Beside it, the id of the environment being built there.
const STAGING_RECORD: &str = ".staging-for";

/// The longest environment path built in the staging folder: its
/// `bin/python` in a `#!` line stays well within the kernel's 256 bytes.
const MAX_STAGED_PATH: usize = 200;

/// Makes the regular files directly in `from/bin` that name `from` name
/// `to` instead. uv writes the environment's own path there only (checked
/// for uv 0.13: the activation scripts, and each console script's `#!`).
fn relocate_scripts(from: &Utf8Path, to: &Utf8Path) -> Result<()> {
    let bin = from.join("bin");
    let entries = std::fs::read_dir(&bin).map_err(Error::io("list folder", &bin))?;
    let old = from.as_str().as_bytes();
    for entry in entries {
        let entry = entry.map_err(Error::io("list folder", &bin))?;
        let path = entry.path();
        if !entry.file_type().is_ok_and(|kind| kind.is_file()) {
            continue;
        }
        let text = std::fs::read(&path).map_err(Error::io("read", crate::remove::lossy(&path)))?;
        // A package's own executables (ruff's, say) are read but never
        // rewritten: uv names the environment in scripts only.
        if text.starts_with(b"\x7fELF") {
            continue;
        }
        let Some(relocated) = replace_all(&text, old, to.as_str().as_bytes()) else {
            continue;
        };
        std::fs::write(&path, relocated)
            .map_err(Error::io("rewrite", crate::remove::lossy(&path)))?;
    }
    Ok(())
}

/// `text` with every `old` replaced by `new`; None if it has no `old`.
fn replace_all(text: &[u8], old: &[u8], new: &[u8]) -> Option<Vec<u8>> {
    let find = |rest: &[u8]| rest.windows(old.len()).position(|window| window == old);
    let mut at = find(text)?;
    let mut replaced = Vec::with_capacity(text.len() + new.len());
    let mut rest = text;
    loop {
        replaced.extend_from_slice(&rest[..at]);
        replaced.extend_from_slice(new);
        rest = &rest[at + old.len()..];
        match find(rest) {
            Some(next) => at = next,
            None => break,
        }
    }
    replaced.extend_from_slice(rest);
    Some(replaced)
}

/// Whether the environment at `path` is as it was built: its fingerprint
/// matches the one in its marker. The error says why not.
fn unchanged(path: &Utf8Path) -> std::result::Result<(), String> {
    let marker = path.join(READY_MARKER);
    let text = std::fs::read_to_string(&marker)
        .map_err(|err| format!("its marker {marker} cannot be read ({err})"))?;
    let Some(recorded) = text
        .lines()
        .find_map(|line| line.strip_prefix(FINGERPRINT_FIELD))
    else {
        return Err("it was built by an older sarge, without a fingerprint".to_owned());
    };
    match seal::fingerprint(path, &MARKER_FILES) {
        Ok(now) if now == recorded.trim() => Ok(()),
        Ok(_) => Err(seal::describe_changes(
            path,
            &marker,
            "files in it changed after it was built",
            &MARKER_FILES,
        )),
        Err(err) => Err(format!("it cannot be checked ({err})")),
    }
}

fn write_marker(
    venv: &Utf8Path,
    key: &EnvKey,
    installer: &Installer,
    fingerprint: &str,
) -> Result<()> {
    let temp = venv.join(format!("{READY_MARKER}.tmp"));
    let marker = venv.join(READY_MARKER);
    let mut file = File::create(&temp).map_err(Error::io("create marker", &temp))?;
    writeln!(
        file,
        "key = {key}\ninstaller = {}\n{FINGERPRINT_FIELD}{fingerprint}",
        installer.name()
    )
    .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(0o400)))
    .and_then(|()| file.sync_all())
    .map_err(Error::io("write marker", &temp))?;
    std::fs::rename(&temp, &marker).map_err(Error::io("rename marker into place", &marker))?;
    // The rename is only durable once the folder's entry is on disk.
    File::open(venv)
        .and_then(|dir| dir.sync_all())
        .map_err(Error::io("sync environment folder", venv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_all_replaces_every_occurrence_or_says_there_was_none() {
        let old = b"/h/var/venvs/.staging";
        let new = b"/h/var/venvs/abc";
        let text = b"#!/h/var/venvs/.staging/bin/python\nVIRTUAL_ENV='/h/var/venvs/.staging'\n";
        assert_eq!(
            replace_all(text, old, new).unwrap(),
            b"#!/h/var/venvs/abc/bin/python\nVIRTUAL_ENV='/h/var/venvs/abc'\n"
        );
        assert_eq!(replace_all(b"#!/usr/bin/env python\n", old, new), None);
    }
}
