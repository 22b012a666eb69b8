//! Who may read the home: its `etc/` and `var/` are the owner's alone.
//!
//! `etc/sarge.yaml` holds the app's env (database passwords included),
//! `var/instances/*/env.sh` the same, and `var/log` whatever the apps print.
//! So every file sarge writes there is [`PRIVATE_FILE`] and every folder
//! [`PRIVATE_DIR`]; what other programs create there (supervisord's logs,
//! virtualenvs) is covered by their umask (077 in supervisord's config, and
//! in the `sarge` binary), and what uv makes shareable on purpose is fixed
//! after each install ([`make_tree_private`], for its cache; virtualenvs are
//! sealed owner-only by the store itself, since a chmod after their
//! fingerprint would make them read as changed). `bin/`, `opt/` and `dist/` hold no secrets and
//! stay as they are, so the scripts stay runnable from a boot script.
//!
//! Homes made by older versions had 0644 files and 0755 folders;
//! [`make_private`] fixes them, and `init` runs it.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Result;
use crate::home::Home;

/// Mode of the files sarge writes under `etc/` and `var/`.
pub(crate) const PRIVATE_FILE: u32 = 0o600;

/// Mode of every folder under `etc/` and `var/`.
pub(crate) const PRIVATE_DIR: u32 = 0o700;

/// `create_dir_all` whose new folders are [`PRIVATE_DIR`] whatever the
/// umask (a 0700 request can only lose bits to it, never gain).
pub(crate) fn create_private_dir(path: &Utf8Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)
        .map_err(|source| {
            std::io::Error::new(
                source.kind(),
                format!("failed to create directory `{path}`: {source}"),
            )
        })?;
    Ok(())
}

/// The top folders that must be private: everything below them is.
pub(crate) fn private_roots(home: &Home) -> [Utf8PathBuf; 2] {
    [home.etc_dir(), home.root().join("var")]
}

/// Takes group and other access away from everything under `etc/` and
/// `var/` (folders become [`PRIVATE_DIR`], files keep only their owner
/// bits, so scripts stay executable) and returns what it changed.
/// Symlinks are left alone: their own mode means nothing, and following
/// them could reach outside the home.
pub(crate) fn make_private(home: &Home) -> Result<Vec<Utf8PathBuf>> {
    let mut changed = Vec::new();
    for root in private_roots(home) {
        if root.is_dir() {
            fix(&root, true, &mut changed)?;
        }
    }
    Ok(changed)
}

/// [`make_private`] for one folder and what it holds. A deploy runs it on a
/// new virtualenv and the installer's cache: uv gives its lock files mode
/// 0666 and executables 0711 on purpose (caches shared between users),
/// whatever the umask.
pub(crate) fn make_tree_private(dir: &Utf8Path) -> Result<()> {
    if dir.is_dir() {
        fix(dir, true, &mut Vec::new())?;
    }
    Ok(())
}

fn fix(path: &Utf8Path, is_dir: bool, changed: &mut Vec<Utf8PathBuf>) -> Result<()> {
    let mode = fs_err::symlink_metadata(path)?.permissions().mode() & 0o7777;
    // Only group and other bits go: a sealed virtualenv's read-only
    // folders stay read-only (a change would count as tampering).
    let wanted = mode & 0o700;
    if mode != wanted {
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
        changed.push(path.to_owned());
    }
    if is_dir {
        for entry in fs_err::read_dir(path)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                continue;
            }
            let child = Utf8PathBuf::from_path_buf(entry.path()).map_err(|path| {
                std::io::Error::other(format!("{} is not a UTF-8 path", path.display()))
            })?;
            fix(&child, kind.is_dir(), changed)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Utf8Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn make_private_takes_group_and_other_bits_only_under_etc_and_var() {
        let dir = std::env::temp_dir().join(format!("sarge-privacy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = Utf8PathBuf::from_path_buf(dir).unwrap();
        let home = Home::new(root.clone());
        for folder in ["etc", "var/log", "bin"] {
            std::fs::create_dir_all(root.join(folder)).unwrap();
        }
        let set = |path: &str, mode: u32| {
            std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode))
                .unwrap();
        };
        std::fs::write(root.join("etc/sarge.yaml"), "x").unwrap();
        std::fs::write(root.join("var/log/a.log"), "x").unwrap();
        std::fs::write(root.join("var/log/run"), "x").unwrap();
        std::fs::write(root.join("bin/sarge"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("var/log/link")).unwrap();
        for (path, mode) in [
            ("etc", 0o755),
            ("etc/sarge.yaml", 0o644),
            ("var", 0o755),
            ("var/log", 0o700),
            ("var/log/a.log", 0o600),
            ("var/log/run", 0o755),
            ("bin", 0o755),
            ("bin/sarge", 0o755),
        ] {
            set(path, mode);
        }

        let changed = make_private(&home).unwrap();
        let changed: Vec<&str> = changed
            .iter()
            .map(|path| path.strip_prefix(&root).unwrap().as_str())
            .collect();
        assert_eq!(changed, ["etc", "etc/sarge.yaml", "var", "var/log/run"]);
        assert_eq!(mode(&root.join("etc")), 0o700);
        assert_eq!(mode(&root.join("etc/sarge.yaml")), 0o600);
        assert_eq!(mode(&root.join("var/log/run")), 0o700);
        assert_eq!(mode(&root.join("bin/sarge")), 0o755);
        assert_eq!(mode(Utf8Path::new("/etc/passwd")) & 0o044, 0o044);
        assert!(make_private(&home).unwrap().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
