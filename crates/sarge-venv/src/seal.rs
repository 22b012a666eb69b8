//! Sealing a built environment: what a release runs must be what was
//! installed, although the app that runs from it could change it.
//!
//! Two layers, because neither holds alone:
//! - **read-only**: every file and folder loses its write bits, so an app
//!   running as sarge's (non-root) user cannot write an `evil.pth` or edit
//!   a package in place by accident. It could `chmod` them back (it owns
//!   them), and root ignores the bits altogether.
//! - **fingerprint**: the marker records a SHA-256 over every entry's path,
//!   type, mode, size, mtime and ctime (and a link's target), checked
//!   before each reuse. ctime cannot be set back from user space, so even a
//!   change that restores the mtime, or one made as root, is seen; a
//!   changed environment is rebuilt rather than handed to the next release.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use camino::Utf8Path;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::remove::lossy;

/// Write permission for owner, group and others.
const WRITE_BITS: u32 = 0o222;

/// Group and other permissions, removed as well by an owner-only store.
pub(crate) const GROUP_OTHER_BITS: u32 = 0o077;

/// Removes the write bits, and the bits in `also` (see
/// [`GROUP_OTHER_BITS`]), of everything inside `dir` (not `dir` itself:
/// its marker is written after this) but the entries named in `skip`.
/// Nothing may change a mode after the fingerprint is taken, or the
/// environment reads as changed.
pub(crate) fn make_read_only(dir: &Utf8Path, also: u32, skip: &[&str]) -> Result<()> {
    let strip = WRITE_BITS | also;
    walk(dir.as_std_path(), skip, &mut |path, meta| {
        // Links have no mode of their own on Linux; chmod would follow them.
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mode = meta.permissions().mode();
        if mode & strip == 0 {
            return Ok(());
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode & !strip))
            .map_err(Error::io("make read-only", lossy(path)))
    })
}

/// The fingerprint of everything inside `dir` except the entries named in
/// `skip` (the marker, which is written after the fingerprint), as hex.
pub(crate) fn fingerprint(dir: &Utf8Path, skip: &[&str]) -> Result<String> {
    let root = dir.as_std_path();
    let mut hasher = Sha256::new();
    walk(root, skip, &mut |path, meta| {
        let relative = path.strip_prefix(root).unwrap_or(path);
        hasher.update(relative.as_os_str().as_bytes());
        hasher.update([0]);
        let kind = if meta.is_dir() {
            b'd'
        } else if meta.file_type().is_symlink() {
            b'l'
        } else {
            b'f'
        };
        hasher.update([kind]);
        for number in [
            u64::from(meta.mode()),
            meta.size(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ] {
            hasher.update(number.to_le_bytes());
        }
        if kind == b'l' {
            let target = fs::read_link(path).map_err(Error::io("read link", lossy(path)))?;
            hasher.update(target.as_os_str().as_bytes());
            hasher.update([0]);
        }
        Ok(())
    })?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// `summary`, naming the first few files under `dir` (but `skip`) whose
/// ctime is later than `record`'s: what changed since it was sealed, for
/// an error or a note. Not even root can set a ctime back.
pub(crate) fn describe_changes(
    dir: &Utf8Path,
    record: &Utf8Path,
    summary: &str,
    skip: &[&str],
) -> String {
    use std::os::unix::fs::MetadataExt;
    const SHOWN: usize = 3;
    let Ok(meta) = std::fs::metadata(record) else {
        return summary.to_owned();
    };
    let changed = changed_since(dir, (meta.ctime(), meta.ctime_nsec()), skip);
    match changed.len() {
        0 => summary.to_owned(),
        count if count <= SHOWN => format!("{summary}: {}", changed.join(", ")),
        count => format!(
            "{summary}: {} and {} more",
            changed[..SHOWN].join(", "),
            count - SHOWN
        ),
    }
}

/// The entries inside `venv` whose ctime is later than `sealed` (the
/// marker's ctime, taken after the seal), relative to `venv`: files first,
/// then folders (a deleted file shows only as its folder). Only for
/// messages, once the fingerprint said something changed.
pub(crate) fn changed_since(venv: &Utf8Path, sealed: (i64, i64), skip: &[&str]) -> Vec<String> {
    let root = venv.as_std_path();
    let (mut files, mut folders) = (Vec::new(), Vec::new());
    let _ = walk(root, skip, &mut |path, meta| {
        let relative = path.strip_prefix(root).unwrap_or(path);
        if (meta.ctime(), meta.ctime_nsec()) > sealed {
            let name = relative.to_string_lossy().into_owned();
            if meta.is_dir() {
                folders.push(name);
            } else {
                files.push(name);
            }
        }
        Ok(())
    });
    files.extend(folders);
    files
}

/// Calls `visit` for every entry under `root` (links not followed) but the
/// entries of `root` named in `skip` and what they hold, in name order so
/// that the fingerprint does not depend on the folder's order; a folder's
/// entries come before the folder itself.
pub(crate) fn walk(
    root: &Path,
    skip: &[&str],
    visit: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>,
) -> Result<()> {
    let mut entries = fs::read_dir(root)
        .map_err(Error::io("list folder", lossy(root)))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(Error::io("list folder", lossy(root)))?;
    entries.retain(|path| {
        path.file_name().is_none_or(|name| {
            !skip
                .iter()
                .any(|skipped| name.as_bytes() == skipped.as_bytes())
        })
    });
    visit_all(entries, visit)
}

fn walk_all(dir: &Path, visit: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>) -> Result<()> {
    let entries = fs::read_dir(dir)
        .map_err(Error::io("list folder", lossy(dir)))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(Error::io("list folder", lossy(dir)))?;
    visit_all(entries, visit)
}

fn visit_all(
    mut entries: Vec<std::path::PathBuf>,
    visit: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>,
) -> Result<()> {
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).map_err(Error::io("inspect", lossy(&path)))?;
        if meta.is_dir() {
            walk_all(&path, visit)?;
        }
        visit(&path, &meta)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use camino::Utf8PathBuf;

    fn temp_dir(name: &str) -> Utf8PathBuf {
        let dir = Utf8PathBuf::from(format!(
            "{}/sarge-venv-seal-{name}-{}",
            std::env::temp_dir().display(),
            std::process::id()
        ));
        let _ = crate::remove_tree(&dir);
        fs::create_dir_all(dir.join("lib/site-packages/pkg")).unwrap();
        fs::write(dir.join("lib/site-packages/pkg/__init__.py"), "x = 1\n").unwrap();
        fs::write(dir.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        std::os::unix::fs::symlink("lib", dir.join("lib64")).unwrap();
        dir
    }

    #[test]
    fn sealed_content_has_no_write_bits() {
        let dir = temp_dir("ro");
        make_read_only(&dir, 0, &[]).unwrap();
        for path in ["pyvenv.cfg", "lib", "lib/site-packages/pkg/__init__.py"] {
            let mode = fs::metadata(dir.join(path)).unwrap().permissions().mode();
            assert_eq!(mode & WRITE_BITS, 0, "{path}: {mode:o}");
        }
        crate::remove_tree(&dir).unwrap();
    }

    #[test]
    fn an_owner_only_seal_leaves_the_owner_read_and_search_only() {
        let dir = temp_dir("owner");
        fs::set_permissions(dir.join("pyvenv.cfg"), fs::Permissions::from_mode(0o666)).unwrap();
        make_read_only(&dir, GROUP_OTHER_BITS, &[]).unwrap();
        for (path, expected) in [("pyvenv.cfg", 0o400), ("lib", 0o500)] {
            let mode = fs::metadata(dir.join(path)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, expected, "{path}: {mode:o}");
        }
        crate::remove_tree(&dir).unwrap();
    }

    #[test]
    fn fingerprint_sees_added_and_changed_files_but_not_skipped_ones() {
        let dir = temp_dir("fingerprint");
        let sealed = fingerprint(&dir, &[".marker"]).unwrap();
        assert_eq!(fingerprint(&dir, &[".marker"]).unwrap(), sealed);
        fs::write(dir.join(".marker"), "ignored").unwrap();
        assert_eq!(fingerprint(&dir, &[".marker"]).unwrap(), sealed);

        fs::write(dir.join("lib/site-packages/evil.pth"), "import os\n").unwrap();
        assert_ne!(fingerprint(&dir, &[".marker"]).unwrap(), sealed);
        fs::remove_file(dir.join("lib/site-packages/evil.pth")).unwrap();

        // Same size, and the mtime put back: the ctime still moved.
        let file = dir.join("lib/site-packages/pkg/__init__.py");
        let before = fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&file, "x = 2\n").unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(before)
            .unwrap();
        assert_ne!(fingerprint(&dir, &[".marker"]).unwrap(), sealed);
        crate::remove_tree(&dir).unwrap();
    }

    #[test]
    fn changed_entries_are_named_files_first() {
        let dir = temp_dir("changed");
        make_read_only(&dir, 0, &[]).unwrap();
        fs::write(dir.join(".marker"), "").unwrap();
        let marker = fs::metadata(dir.join(".marker")).unwrap();
        let sealed = (marker.ctime(), marker.ctime_nsec());
        assert_eq!(
            changed_since(&dir, sealed, &[".marker"]),
            Vec::<String>::new()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let site = dir.join("lib/site-packages");
        fs::set_permissions(&site, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(site.join("evil.pth"), "import os\n").unwrap();
        assert_eq!(
            changed_since(&dir, sealed, &[".marker"]),
            ["lib/site-packages/evil.pth", "lib/site-packages"]
        );
        crate::remove_tree(&dir).unwrap();
    }
}
