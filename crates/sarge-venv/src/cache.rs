//! Sealing uv's cache between installs: every new virtualenv is copied
//! from it, so what the cache holds is what later releases run.
//!
//! The cache belongs to sarge's user, which is the user the apps run as,
//! and uv writes into it while it installs. Copying into the virtualenvs
//! (`--link-mode copy`) keeps an edit of a virtualenv out of the cache,
//! but not an edit of the cache itself. So, as for the virtualenvs (see
//! `seal`), two layers:
//! - **read-only between installs**: every file and folder in it, the
//!   cache folder itself included, loses its write bits, so an app can
//!   neither edit an unpacked wheel, nor add a file to one, nor rename an
//!   entry aside to put another in its place. The folders uv adds entries
//!   to (and the few files it opens for writing where they are) get their
//!   owner's write bit back only while an install runs, under a lock every
//!   install into the cache takes; an unpacked wheel's files and folders
//!   stay read-only throughout, but for its `RECORD`.
//! - **fingerprint**: when the cache is sealed, a fingerprint of every
//!   entry's metadata (ctime included, see `seal`) is recorded beside it
//!   and checked before the next install opens it. A change made anyway
//!   (by an app that runs `chmod` first, or by root, whom the bits do not
//!   stop) discards the whole cache, so that install runs without it.
//!
//! Like a virtualenv's marker, the record could be rewritten by an app set
//! on it: it runs as the user who owns the home (and could replace
//! `bin/sarge` as well). What this closes is an app changing, by mistake or
//! by a plain write, what every later release installs.
//!
//! The check runs only before an install, never on a redeploy that reuses
//! its virtualenv.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};
use crate::remove::{lossy, make_owner_writable, remove_tree};
use crate::seal;

/// The store's per-key build locks, kept in the cache folder: neither
/// sealed nor fingerprinted, since builds of other keys add lock files at
/// any time.
pub(crate) const LOCKS_DIR: &str = "venv-locks";
/// pip's cache (the pip installer unpacks nothing it reuses: it installs
/// straight from the wheels): not uv's, so not sealed.
pub(crate) const PIP_CACHE: &str = "pip";
/// The fingerprint of the sealed cache.
const SEAL_RECORD: &str = ".sarge-sealed";
const SEAL_RECORD_TEMP: &str = ".sarge-sealed.tmp";
/// What in the cache folder is not uv's, so neither sealed nor checked.
const NOT_UVS: [&str; 4] = [LOCKS_DIR, PIP_CACHE, SEAL_RECORD, SEAL_RECORD_TEMP];
/// Held from opening the cache to sealing it again: two installs of
/// different keys may run at once, and one must not seal the cache while
/// the other's uv writes into it.
const CACHE_LOCK: &str = "installer-cache.lock";
/// The record's line holding the fingerprint.
const FINGERPRINT_FIELD: &str = "fingerprint = ";

/// The cache, writable for one install. [`OpenCache::seal`] makes it
/// read-only again; if it is never called (sarge killed mid-install), the
/// cache stays without a record and the next install discards it.
pub(crate) struct OpenCache {
    dir: Utf8PathBuf,
    /// Bits the seal removes besides the write bits.
    also: u32,
    /// Why the cache was emptied before this install, if it was.
    pub(crate) discarded: Option<String>,
    _lock: File,
}

/// Locks the cache in `dir`, discards it if it changed since it was last
/// sealed, and makes it writable for one install. `also` is the bits the
/// seal removes besides the write bits (group and other, for an
/// owner-only store).
pub(crate) fn open(dir: &Utf8Path, also: u32) -> Result<OpenCache> {
    let (lock, lock_path) = lock_file(dir)?;
    lock.lock().map_err(Error::io("lock", &lock_path))?;

    let discarded = match changed(dir)? {
        Some(reason) => {
            discard(dir)?;
            Some(reason)
        }
        None => None,
    };
    // The record goes first: from here until the seal the cache is open to
    // anyone, so if this install never seals it, the next one must find no
    // record, and discard it.
    let record = dir.join(SEAL_RECORD);
    make_owner_writable(dir.as_std_path(), mode_of(dir)?)?;
    match fs::remove_file(&record) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(Error::io("remove cache seal", record)(err)),
    }
    let root = dir.as_std_path();
    seal::walk(root, &NOT_UVS, &mut |path, meta| {
        let relative = path.strip_prefix(root).unwrap_or(path);
        let mode = meta.permissions().mode();
        if mode & 0o200 != 0 || !uv_writes_into(relative, meta) {
            return Ok(());
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o200))
            .map_err(Error::io("make writable for an install", lossy(path)))
    })?;
    Ok(OpenCache {
        dir: dir.to_owned(),
        also,
        discarded,
        _lock: lock,
    })
}

/// The cache's lock, held, if no install holds it now.
pub(crate) fn try_lock(dir: &Utf8Path) -> Result<Option<File>> {
    let (lock, lock_path) = lock_file(dir)?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(err)) => Err(Error::io("lock", lock_path)(err)),
    }
}

fn lock_file(dir: &Utf8Path) -> Result<(File, Utf8PathBuf)> {
    let locks = dir.join(LOCKS_DIR);
    fs::create_dir_all(&locks).map_err(Error::io("create lock folder", &locks))?;
    let lock_path = locks.join(CACHE_LOCK);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(Error::io("open lock file", &lock_path))?;
    Ok((lock, lock_path))
}

impl OpenCache {
    /// Makes the cache read-only again and records its fingerprint. The
    /// folder itself goes read-only last, as the record is written into it.
    pub(crate) fn seal(self) -> Result<()> {
        seal::make_read_only(&self.dir, self.also, &NOT_UVS)?;
        let fingerprint = seal::fingerprint(&self.dir, &NOT_UVS)?;
        let temp = self.dir.join(SEAL_RECORD_TEMP);
        let record = self.dir.join(SEAL_RECORD);
        let mut file = File::create(&temp).map_err(Error::io("create cache seal", &temp))?;
        // Not flushed: a record a crash loses makes the next install
        // discard the cache, which is slower, never unsafe.
        writeln!(file, "{FINGERPRINT_FIELD}{fingerprint}")
            .and_then(|()| file.set_permissions(fs::Permissions::from_mode(0o400)))
            .map_err(Error::io("write cache seal", &temp))?;
        fs::rename(&temp, &record).map_err(Error::io("rename cache seal into place", &record))?;
        let mode = mode_of(&self.dir)?;
        fs::set_permissions(
            &self.dir,
            fs::Permissions::from_mode(mode & !(0o222 | self.also)),
        )
        .map_err(Error::io("make read-only", &self.dir))
    }
}

/// Whether uv (0.13) writes into the entry at `relative`, so that it must
/// be the owner's to write while uv runs. Kept to what it needs: the app
/// runs meanwhile, and what is writable then is what it could change.
/// - folders, where it renames new entries into place (a wheel is
///   unpacked into a temp folder, then renamed into `archive-v0/`), but
///   not those of an unpacked wheel, which it only reads;
/// - files it opens for writing where they are: its lock files, which it
///   only locks, the `.git` marker it rewrites in `sdists-*` on every run,
///   and each unpacked wheel's `RECORD`: a copy keeps its source's mode,
///   and uv rewrites the copy in the new virtualenv.
fn uv_writes_into(relative: &Path, meta: &fs::Metadata) -> bool {
    let mut parts = relative.iter();
    let in_unpacked_wheel = parts
        .next()
        .is_some_and(|bucket| bucket.as_bytes().starts_with(b"archive-v"))
        && parts.next().is_some();
    if meta.is_dir() {
        return !in_unpacked_wheel;
    }
    if !meta.is_file() {
        return false;
    }
    let name = relative.file_name().unwrap_or_default();
    let in_dist_info = relative
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|parent| parent.as_bytes().ends_with(b".dist-info"));
    name == ".git" || name.as_bytes().ends_with(b".lock") || (in_dist_info && name == "RECORD")
}

/// Why the cache cannot be trusted, if it cannot: it holds uv's entries but
/// no record of a seal, or not as sealed.
fn changed(dir: &Utf8Path) -> Result<Option<String>> {
    let holds_entries = fs::read_dir(dir)
        .map_err(Error::io("list folder", dir))?
        .filter_map(std::result::Result::ok)
        .any(|entry| {
            let name = entry.file_name();
            !NOT_UVS
                .iter()
                .any(|kept| name.as_bytes() == kept.as_bytes())
        });
    if !holds_entries {
        return Ok(None);
    }
    let record = dir.join(SEAL_RECORD);
    let text = match fs::read_to_string(&record) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(
                "it was never sealed: an install did not finish, or an older sarge filled it"
                    .to_owned(),
            ))
        }
        Err(err) => return Ok(Some(format!("its seal {record} cannot be read ({err})"))),
    };
    let recorded = text
        .lines()
        .find_map(|line| line.strip_prefix(FINGERPRINT_FIELD))
        .unwrap_or_default()
        .trim();
    if seal::fingerprint(dir, &NOT_UVS)? == recorded {
        return Ok(None);
    }
    Ok(Some(seal::describe_changes(
        dir,
        &record,
        "files in it changed since the last install",
        &NOT_UVS,
    )))
}

/// Removes everything of uv's from the cache: it is a cache, so the install
/// fills it again from the wheels.
fn discard(dir: &Utf8Path) -> Result<()> {
    make_owner_writable(dir.as_std_path(), mode_of(dir)?)?;
    for entry in fs::read_dir(dir).map_err(Error::io("list folder", dir))? {
        let entry = entry.map_err(Error::io("list folder", dir))?;
        let name = entry.file_name();
        if NOT_UVS
            .iter()
            .any(|kept| name.as_bytes() == kept.as_bytes())
        {
            continue;
        }
        remove_tree(&lossy(&entry.path()))?;
    }
    Ok(())
}

fn mode_of(path: &Utf8Path) -> Result<u32> {
    Ok(fs::metadata(path)
        .map_err(Error::io("inspect", path))?
        .permissions()
        .mode())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty cache folder with the store's lock folder.
    fn temp_cache(name: &str) -> Utf8PathBuf {
        let dir = Utf8PathBuf::from(format!(
            "{}/sarge-venv-cache-{name}-{}",
            std::env::temp_dir().display(),
            std::process::id()
        ));
        let _ = remove_tree(&dir);
        fs::create_dir_all(dir.join(LOCKS_DIR)).unwrap();
        dir
    }

    /// What an install leaves in the cache, in short.
    fn fill(dir: &Utf8Path) {
        fs::create_dir_all(dir.join("archive-v0/abc/flask")).unwrap();
        fs::create_dir_all(dir.join("archive-v0/abc/flask-3.1.3.dist-info")).unwrap();
        fs::create_dir_all(dir.join("sdists-v11")).unwrap();
        fs::write(dir.join("archive-v0/abc/flask/__init__.py"), "x = 1\n").unwrap();
        fs::write(dir.join("archive-v0/abc/flask-3.1.3.dist-info/RECORD"), "").unwrap();
        fs::write(dir.join("sdists-v11/.git"), "").unwrap();
        fs::write(dir.join(".lock"), "").unwrap();
    }

    fn mode(path: &Utf8Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_sealed_cache_is_read_only_but_its_build_locks() {
        let dir = temp_cache("sealed");
        let cache = open(&dir, seal::GROUP_OTHER_BITS).unwrap();
        assert_eq!(cache.discarded, None);
        fill(&dir);
        cache.seal().unwrap();
        for path in [
            "",
            "archive-v0",
            "archive-v0/abc/flask/__init__.py",
            ".lock",
        ] {
            assert_eq!(mode(&dir.join(path)) & 0o277, 0, "{path}");
        }
        assert_eq!(mode(&dir.join(LOCKS_DIR)) & 0o200, 0o200);

        // Opened again: the folders uv adds to and the files it writes are
        // the owner's to write, the rest of what it unpacked stays
        // read-only.
        let cache = open(&dir, seal::GROUP_OTHER_BITS).unwrap();
        assert_eq!(cache.discarded, None);
        for path in [
            "",
            "archive-v0",
            ".lock",
            "sdists-v11/.git",
            "archive-v0/abc/flask-3.1.3.dist-info/RECORD",
        ] {
            assert_eq!(mode(&dir.join(path)) & 0o200, 0o200, "{path}");
        }
        assert_eq!(mode(&dir.join("archive-v0/abc")), 0o500);
        assert_eq!(mode(&dir.join("archive-v0/abc/flask")), 0o500);
        assert_eq!(mode(&dir.join("archive-v0/abc/flask/__init__.py")), 0o400);
        cache.seal().unwrap();
        remove_tree(&dir).unwrap();
    }

    #[test]
    fn a_changed_or_never_sealed_cache_is_discarded_but_not_its_build_locks() {
        let dir = temp_cache("changed");
        fs::write(dir.join(LOCKS_DIR).join("key.lock"), "").unwrap();
        // Filled before sarge sealed it.
        fill(&dir);
        let cache = open(&dir, 0).unwrap();
        let reason = cache.discarded.clone().unwrap();
        assert!(reason.contains("never sealed"), "{reason}");
        assert!(!dir.join("archive-v0").exists());
        fill(&dir);
        cache.seal().unwrap();

        // A change made anyway, after a chmod.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let file = dir.join("archive-v0/abc/flask/__init__.py");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&file, "x = 2\n").unwrap();
        let cache = open(&dir, 0).unwrap();
        let reason = cache.discarded.clone().unwrap();
        assert!(
            reason.contains("changed since the last install: archive-v0/abc/flask/__init__.py"),
            "{reason}"
        );
        assert!(!dir.join("archive-v0").exists());
        assert!(dir.join(LOCKS_DIR).join("key.lock").exists());
        cache.seal().unwrap();
        remove_tree(&dir).unwrap();
    }
}
