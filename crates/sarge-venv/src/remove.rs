//! Deleting a folder whose content was made read-only: what `chmod -R u+w`
//! followed by `rm -rf` does.
//!
//! Both kinds of folder sarge deletes can hold such content: a shared
//! virtualenv is made read-only on purpose once built, and an app may
//! unpack a mode-000 folder from its tarball or `chmod 555` one it made.
//! `std::fs::remove_dir_all` fails on those (a folder without write
//! permission cannot lose entries, one without read permission cannot be
//! listed), and a folder that can never be deleted must not wedge the home.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};

/// The bits a folder's owner needs to list it, enter it and delete its
/// entries.
const OWNER_RWX: u32 = 0o700;

/// Deletes `path` and everything under it, first giving its owner (the
/// user running sarge) write permission on every folder it descends into.
/// Symbolic links are deleted, never followed. A missing `path` is not an
/// error.
///
/// # Errors
///
/// [`Error::Io`] naming the innermost file or folder that could not be
/// changed or deleted (for example one owned by another user).
pub fn remove_tree(path: &Utf8Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io("inspect", path)(err)),
    };
    if meta.is_dir() {
        remove_dir_and_content(path.as_std_path(), meta.permissions().mode())
    } else {
        removed(fs::remove_file(path), "remove file", path.as_std_path())
    }
}

/// Gives `dir`'s owner read, write and search permission on it if it lacks
/// any of them, so its entries can be listed and deleted.
pub(crate) fn make_owner_writable(dir: &Path, mode: u32) -> Result<()> {
    if mode & OWNER_RWX == OWNER_RWX {
        return Ok(());
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode | OWNER_RWX))
        .map_err(Error::io("make folder writable to remove it", lossy(dir)))
}

/// Recursion depth is bounded by the path length limit (a few thousand
/// levels at most), and each level holds one open folder handle.
fn remove_dir_and_content(dir: &Path, mode: u32) -> Result<()> {
    make_owner_writable(dir, mode)?;
    let entries = fs::read_dir(dir).map_err(Error::io("list folder to remove it", lossy(dir)))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("list folder to remove it", lossy(dir)))?;
        let path = entry.path();
        // `file_type` and `symlink_metadata` do not follow links, so a link
        // to a folder elsewhere is deleted as a link, never descended into.
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(Error::io("inspect", lossy(&path))(err)),
        };
        if meta.is_dir() {
            remove_dir_and_content(&path, meta.permissions().mode())?;
        } else {
            removed(fs::remove_file(&path), "remove file", &path)?;
        }
    }
    removed(fs::remove_dir(dir), "remove folder", dir)
}

/// A deletion's outcome, where something already gone counts as deleted.
fn removed(result: std::io::Result<()>, action: &'static str, path: &Path) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::io(action, lossy(path))(err)),
    }
}

/// App folders may hold names that are not UTF-8; messages show them with
/// replacement characters rather than not at all.
pub(crate) fn lossy(path: &Path) -> Utf8PathBuf {
    Utf8PathBuf::from(path.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> Utf8PathBuf {
        let dir = Utf8PathBuf::from(format!(
            "{}/sarge-venv-remove-{name}-{}",
            std::env::temp_dir().display(),
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn read_only_and_mode_000_folders_are_removed() {
        let root = temp_dir("modes");
        let tree = root.join("tree");
        fs::create_dir_all(tree.join("ro/inner")).unwrap();
        fs::write(tree.join("ro/inner/file"), "x").unwrap();
        fs::create_dir(tree.join("locked")).unwrap();
        fs::set_permissions(tree.join("ro/inner"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(tree.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(tree.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(&tree, fs::Permissions::from_mode(0o555)).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn links_are_removed_not_followed() {
        let root = temp_dir("links");
        let outside = root.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("kept"), "x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o555)).unwrap();
        let tree = root.join("tree");
        fs::create_dir(&tree).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(outside.join("kept").exists());
        // The link's target kept its mode: nothing followed the link.
        assert_eq!(
            fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
            0o555
        );
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_path_is_not_an_error() {
        let root = temp_dir("missing");
        remove_tree(&root.join("not-there")).unwrap();
        fs::remove_dir_all(&root).unwrap();
    }
}
