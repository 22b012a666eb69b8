//! The wheel folder as a client sees it: which requirement lines it cannot
//! satisfy (`sarge dist missing -`), and adding wheels to it
//! (`sarge dist add -`).
//!
//! The server never touches the network, so `sarge push` asks it what it
//! lacks for its own interpreter and sends just that. Wheels land
//! atomically: every entry of the tar is written to a hidden temp file in
//! the wheel folder (`.NAME.whl.part-PID`, a name no installer takes for a
//! wheel), fsynced, and only once the whole tar was read and every entry
//! accepted is each renamed into place, so an install never sees half a
//! wheel and a refused tar adds nothing.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use camino::{Utf8Path, Utf8PathBuf};
use sarge_venv::{missing_requirements, wheels_in, PythonTags, WheelName};
use serde::Serialize;

use crate::error::{excerpt, Error, Result};
use crate::Sarge;

/// What a wheel folder lacks for a requirements file
/// ([`Sarge::dist_missing`]); `sarge dist missing --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DistMissing {
    /// The requirement lines no wheel in the folder satisfies, in file
    /// order, as written.
    pub missing: Vec<String>,
    /// The server interpreter's `major.minor`.
    pub python_version: String,
    /// The wheel tags it supports, most preferred first.
    pub tags: Vec<String>,
}

/// What [`Sarge::dist_add`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DistAdded {
    /// The wheels written, by file name.
    pub added: Vec<String>,
    /// The wheels already there, left as they were.
    pub skipped: Vec<String>,
}

/// A wheel larger than this is refused: the biggest on PyPI are under 1 GB.
const MAX_WHEEL_BYTES: u64 = 2 * 1024 * 1024 * 1024;

impl Sarge {
    /// The lines of `requirements` (a requirements file's text) that the
    /// wheel folder (`python_dist`, default `dist/`) cannot satisfy for
    /// this home's `python_bin`, which is asked once for its tags.
    pub fn dist_missing(&self, requirements: &str) -> Result<DistMissing> {
        let python = PythonTags::query(&self.config.python_bin)?;
        let dist = self.python_dist();
        let wheels: Vec<WheelName> = match wheels_in(&dist) {
            Ok(wheels) => wheels.into_iter().map(|(_, wheel)| wheel).collect(),
            // No folder yet: everything is missing.
            Err(_) if !dist.exists() => Vec::new(),
            Err(error) => return Err(error.into()),
        };
        let missing = missing_requirements(requirements, &wheels, &python.tag_set())
            .into_iter()
            .map(|requirement| requirement.line)
            .collect();
        Ok(DistMissing {
            missing,
            python_version: python.python_version,
            tags: python.tags.iter().map(ToString::to_string).collect(),
        })
    }

    /// Adds the `*.whl` files of the tar read from `tarball` to the wheel
    /// folder, each atomically; a wheel already there is skipped. An entry
    /// that is not a wheel file at the tar's top level (a folder, a link,
    /// a path with `/`, a name that is not a wheel's, content that is not a
    /// zip) refuses the whole tar, naming the entry, and adds nothing.
    pub fn dist_add(&self, tarball: impl Read) -> Result<DistAdded> {
        let dist = self.python_dist();
        fs_err::create_dir_all(&dist)?;
        let mut staged = Staged::default();
        let mut archive = tar::Archive::new(tarball);
        let entries = archive.entries().map_err(|source| Error::Tarball {
            problem: format!("it is not a tar archive ({source})"),
        })?;
        let mut seen = BTreeSet::new();
        for entry in entries {
            let mut entry = entry.map_err(|source| Error::Tarball {
                problem: format!("it is corrupt after {} entries ({source})", seen.len()),
            })?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let refuse = |problem: &str| Error::DistEntry {
                entry: excerpt(&raw),
                problem: problem.to_owned(),
            };
            let kind = entry.header().entry_type();
            let name = raw.strip_prefix("./").unwrap_or(&raw);
            if kind.is_dir() && name.trim_end_matches('/').is_empty() {
                continue; // the `./` of `tar -C dir .`
            }
            if !kind.is_file() {
                return Err(refuse("is not a regular file"));
            }
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(refuse(
                    "is not a file name at the top of the archive (no folders, no hidden files)",
                ));
            }
            if let Err(problem) = name.parse::<WheelName>() {
                return Err(refuse(&problem));
            }
            if entry.size() > MAX_WHEEL_BYTES {
                return Err(refuse(&format!("is larger than {MAX_WHEEL_BYTES} bytes")));
            }
            if !seen.insert(name.to_owned()) {
                return Err(refuse("appears twice in the archive"));
            }
            let target = dist.join(name);
            if target.exists() {
                std::io::copy(&mut entry, &mut std::io::sink())?;
                staged.skipped.push(name.to_owned());
                continue;
            }
            let temp = dist.join(format!(".{name}.part-{}", std::process::id()));
            staged.temps.push((temp.clone(), target));
            write_synced(&temp, &mut entry).map_err(|source| Error::DistWrite {
                path: temp.clone(),
                source,
            })?;
            if !is_zip(&temp)? {
                return Err(refuse("is not a wheel (its content is not a zip archive)"));
            }
        }
        staged.land(&dist)
    }
}

/// Wheels written to temp files, renamed into place only when every entry
/// was accepted; dropped before that, they are removed.
#[derive(Default)]
struct Staged {
    temps: Vec<(Utf8PathBuf, Utf8PathBuf)>,
    skipped: Vec<String>,
}

impl Staged {
    fn land(mut self, dist: &Utf8Path) -> Result<DistAdded> {
        let mut added = Vec::new();
        for (temp, target) in std::mem::take(&mut self.temps) {
            if let Err(source) = std::fs::rename(&temp, &target) {
                let _ = std::fs::remove_file(&temp);
                return Err(Error::DistWrite {
                    path: target,
                    source,
                });
            }
            added.push(target.file_name().unwrap_or_default().to_owned());
        }
        // The renames themselves survive a crash only once the folder is
        // synced.
        std::fs::File::open(dist)
            .and_then(|folder| folder.sync_all())
            .map_err(|source| Error::DistWrite {
                path: dist.to_owned(),
                source,
            })?;
        Ok(DistAdded {
            added,
            skipped: std::mem::take(&mut self.skipped),
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (temp, _) in &self.temps {
            let _ = std::fs::remove_file(temp);
        }
    }
}

fn write_synced(path: &Utf8Path, content: &mut impl Read) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    std::io::copy(content, &mut file)?;
    file.flush()?;
    file.sync_all()
}

/// Whether the file starts as a zip archive (a wheel is one).
fn is_zip(path: &Utf8Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = fs_err::File::open(path)?;
    let read = file.read(&mut magic)?;
    Ok(read == 4 && magic == *b"PK\x03\x04")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{init, Home, InitOptions};

    struct TempHome(Utf8PathBuf);

    impl TempHome {
        fn new(name: &str) -> (Self, Sarge) {
            let root =
                std::env::temp_dir().join(format!("sarge-dist-{name}-{}", std::process::id()));
            let root = Utf8PathBuf::from_path_buf(root).unwrap();
            let _ = std::fs::remove_dir_all(&root);
            let home = Home::new(&root);
            init(&home, &InitOptions::default()).unwrap();
            (Self(root), Sarge::open(home).unwrap())
        }
    }

    impl Drop for TempHome {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    const WHEEL: &[u8] = b"PK\x03\x04 not really a wheel, but a zip header";

    #[test]
    fn wheels_land_once_and_a_present_one_is_skipped() {
        let (_home, sarge) = TempHome::new("add");
        let tar = tar_of(&[
            ("flask-3.1.3-py3-none-any.whl", WHEEL),
            ("./click-8.5.1-py3-none-any.whl", WHEEL),
        ]);
        let added = sarge.dist_add(&tar[..]).unwrap();
        assert_eq!(
            added.added,
            [
                "flask-3.1.3-py3-none-any.whl",
                "click-8.5.1-py3-none-any.whl"
            ]
        );
        let again = sarge.dist_add(&tar[..]).unwrap();
        assert!(again.added.is_empty());
        assert_eq!(again.skipped.len(), 2);
        let mut files: Vec<String> = std::fs::read_dir(sarge.python_dist())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "click-8.5.1-py3-none-any.whl",
                "flask-3.1.3-py3-none-any.whl"
            ]
        );
    }

    #[test]
    fn a_bad_entry_refuses_the_whole_tar_naming_it() {
        let (_home, sarge) = TempHome::new("refuse");
        for (entries, expected) in [
            (
                vec![
                    ("flask-3.1.3-py3-none-any.whl", WHEEL),
                    ("../x-1-py3-none-any.whl", WHEEL),
                ],
                "wheel archive entry ../x-1-py3-none-any.whl is not a file name at the top",
            ),
            (
                vec![("flask-3.1.3-py3-none-any.whl", WHEEL), ("setup.py", WHEEL)],
                "wheel archive entry setup.py does not end in .whl",
            ),
            (
                vec![("flask-3.1.3-py3-none-any.whl", b"#!/bin/sh".as_slice())],
                "wheel archive entry flask-3.1.3-py3-none-any.whl is not a wheel",
            ),
        ] {
            let error = sarge.dist_add(&tar_of(&entries)[..]).unwrap_err();
            assert!(error.to_string().starts_with(expected), "{error}");
            assert_eq!(std::fs::read_dir(sarge.python_dist()).unwrap().count(), 0);
        }
    }

    #[test]
    fn missing_lines_are_those_without_a_wheel_for_this_python() {
        let (_home, sarge) = TempHome::new("missing");
        let dist = sarge.python_dist();
        std::fs::create_dir_all(&dist).unwrap();
        std::fs::write(dist.join("flask-3.1.3-py3-none-any.whl"), WHEEL).unwrap();
        std::fs::write(dist.join(".click-8.5.1-py3-none-any.whl.part-1"), WHEEL).unwrap();
        let missing = sarge.dist_missing("Flask==3.1.3\nclick==8.5.1\n").unwrap();
        assert_eq!(missing.missing, ["click==8.5.1"]);
        assert!(missing.tags.iter().any(|tag| tag == "py3-none-any"));
    }
}
