//! Unpacking an app tarball into a fresh instance folder, refusing every
//! entry that could write outside it.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use camino::Utf8Path;
use flate2::read::GzDecoder;
use tar::EntryType;

use crate::error::{Error, Result};

/// Unpacks a plain or gzip-compressed tar stream into `dest`, which must be
/// an empty folder. The compression is detected from the bytes, not a name.
///
/// The whole tarball is refused, naming the entry, if any entry is absolute,
/// climbs out with `..`, is a device or fifo, is a link pointing outside
/// `dest`, or would be written through a link. Returns the number of entries.
pub(crate) fn unpack_tarball(input: impl Read, dest: &Utf8Path) -> Result<usize> {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let head = input.fill_buf().map_err(|source| Error::Tarball {
        problem: format!("cannot read it: {source}"),
    })?;
    if head.is_empty() {
        return Err(Error::Tarball {
            problem: "it is empty".into(),
        });
    }
    let gzipped = head.starts_with(&[0x1f, 0x8b]);
    let ended = Rc::new(Cell::new(false));
    let input = NoticesEnd {
        inner: input,
        ended: ended.clone(),
    };
    let stream: Box<dyn Read> = if gzipped {
        Box::new(GzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(true);
    // The app's files keep their owner bits (scripts stay executable) but
    // are the owner's alone, like the rest of var/.
    archive.set_mask(0o077);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);

    let not_an_archive = |source: std::io::Error, count: usize| {
        if count == 0 {
            Error::Tarball {
                problem: format!(
                    "it is not a tar or gzip archive ({})",
                    if gzipped {
                        source.to_string()
                    } else {
                        "no valid tar header".into()
                    }
                ),
            }
        } else {
            Error::Tarball {
                problem: format!("it is truncated or corrupt after {count} entries: {source}"),
            }
        }
    };

    let dest_std = dest.as_std_path();
    let mut links = BTreeSet::new();
    let mut count = 0;
    let entries = archive
        .entries()
        .map_err(|source| not_an_archive(source, 0))?;
    for entry in entries {
        let mut entry = entry.map_err(|source| not_an_archive(source, count))?;
        let path = entry
            .path()
            .map_err(|source| not_an_archive(source, count))?
            .into_owned();
        let entry_type = entry.header().entry_type();
        let shown = path.display().to_string();
        let refuse = |problem: &str| Error::TarEntry {
            entry: shown.clone(),
            problem: problem.to_owned(),
        };
        match entry_type {
            // Metadata for the entries that follow, or git archive's commit id.
            EntryType::XGlobalHeader | EntryType::XHeader => continue,
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::Symlink | EntryType::Link => {}
            EntryType::Char | EntryType::Block => return Err(refuse("is a device file")),
            EntryType::Fifo => return Err(refuse("is a fifo")),
            other => return Err(refuse(&format!("has unsupported type {other:?}"))),
        }
        let relative = normalized_relative(&path).map_err(&refuse)?;
        if relative.as_os_str().is_empty() {
            // `./` itself: the instance folder already exists.
            count += 1;
            continue;
        }
        if let Some(link) = links
            .iter()
            .find(|link: &&PathBuf| relative.starts_with(link))
        {
            return Err(refuse(&format!(
                "would be written through the link {}",
                link.display()
            )));
        }
        match entry_type {
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|source| not_an_archive(source, count))?
                    .ok_or_else(|| refuse("is a link without a target"))?;
                let parent = relative.parent().unwrap_or(Path::new(""));
                if target.is_absolute() || normalized_relative(&parent.join(&target)).is_err() {
                    return Err(refuse(&format!(
                        "is a link to {} outside the app folder",
                        target.display()
                    )));
                }
                links.insert(relative.clone());
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|source| not_an_archive(source, count))?
                    .ok_or_else(|| refuse("is a link without a target"))?;
                let target = normalized_relative(&target).map_err(|_| {
                    refuse(&format!(
                        "is a hard link to {} outside the app folder",
                        target.display()
                    ))
                })?;
                if links.iter().any(|link| target.starts_with(link)) {
                    return Err(refuse("is a hard link through a symbolic link"));
                }
                if !dest_std.join(&target).is_file() {
                    return Err(refuse(&format!(
                        "is a hard link to {}, which is not an earlier file of the tarball",
                        target.display()
                    )));
                }
            }
            _ => {
                if links.contains(&relative) {
                    return Err(refuse("would replace a link"));
                }
            }
        }
        let unpacked = entry.unpack_in(dest_std).map_err(|source| {
            // The input ended inside this entry's data: the tarball is cut
            // short, which is not the entry's fault.
            if ended.get() || source.kind() == std::io::ErrorKind::UnexpectedEof {
                not_an_archive(source, count)
            } else {
                Error::TarEntry {
                    entry: shown.clone(),
                    problem: format!("cannot be unpacked: {source}"),
                }
            }
        })?;
        if !unpacked {
            return Err(refuse("points outside the app folder"));
        }
        count += 1;
    }
    if count == 0 {
        return Err(Error::Tarball {
            problem: "it has no files".into(),
        });
    }
    Ok(count)
}

/// Remembers whether the input ran out, so a short read inside an entry
/// is reported as a truncated tarball.
struct NoticesEnd<R> {
    inner: R,
    ended: Rc<Cell<bool>>,
}

impl<R: Read> Read for NoticesEnd<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read == 0 && !buf.is_empty() {
            self.ended.set(true);
        }
        Ok(read)
    }
}

/// `path` without `.` components, if it stays inside its base folder.
fn normalized_relative(path: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut normalized = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => normalized.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !normalized.pop() {
                    return Err("climbs out of the app folder with `..`");
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err("has an absolute path"),
        }
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct TempDir(camino::Utf8PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("sarge-unpack-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(camino::Utf8PathBuf::from_path_buf(dir).unwrap())
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A tar stream built entry by entry, with raw names so that hostile
    /// paths the `tar` builder would refuse can be written too.
    fn tarball(entries: &[(&str, EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, entry_type, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(*entry_type);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if !link.is_empty() {
                header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn unpack(name: &str, bytes: &[u8]) -> (TempDir, Result<usize>) {
        let dir = TempDir::new(name);
        let result = unpack_tarball(bytes, &dir.0);
        (dir, result)
    }

    #[test]
    fn unpacks_plain_and_gzip_tarballs() {
        let bytes = tarball(&[
            ("./", EntryType::Directory, b"", ""),
            ("Procfile", EntryType::Regular, b"web: x\n", ""),
            ("src/app.py", EntryType::Regular, b"print(1)\n", ""),
            ("app.py", EntryType::Symlink, b"", "src/app.py"),
        ]);
        let (dir, result) = unpack("plain", &bytes);
        assert_eq!(result.unwrap(), 4);
        assert_eq!(
            std::fs::read_to_string(dir.0.join("app.py")).unwrap(),
            "print(1)\n"
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        let (dir, result) = unpack("gzip", &gz.finish().unwrap());
        assert_eq!(result.unwrap(), 4);
        assert_eq!(
            std::fs::read_to_string(dir.0.join("Procfile")).unwrap(),
            "web: x\n"
        );
    }

    fn refused(name: &str, bytes: &[u8]) -> String {
        let (_dir, result) = unpack(name, bytes);
        result.unwrap_err().to_string()
    }

    #[test]
    fn refuses_entries_that_escape() {
        assert_eq!(
            refused(
                "dotdot",
                &tarball(&[("a/../../evil", EntryType::Regular, b"x", "")])
            ),
            "tarball entry a/../../evil climbs out of the app folder with `..`"
        );
        assert_eq!(
            refused(
                "abs",
                &tarball(&[("/tmp/evil", EntryType::Regular, b"x", "")])
            ),
            "tarball entry /tmp/evil has an absolute path"
        );
        assert_eq!(
            refused(
                "symlink",
                &tarball(&[("up", EntryType::Symlink, b"", "../..")])
            ),
            "tarball entry up is a link to ../.. outside the app folder"
        );
        assert_eq!(
            refused(
                "abslink",
                &tarball(&[("etc", EntryType::Symlink, b"", "/etc")])
            ),
            "tarball entry etc is a link to /etc outside the app folder"
        );
        assert_eq!(
            refused(
                "hardlink",
                &tarball(&[("passwd", EntryType::Link, b"", "../../etc/passwd")])
            ),
            "tarball entry passwd is a hard link to ../../etc/passwd outside the app folder"
        );
        assert_eq!(
            refused(
                "through",
                &tarball(&[
                    ("sub", EntryType::Directory, b"", ""),
                    ("here", EntryType::Symlink, b"", "sub"),
                    ("here/file", EntryType::Regular, b"x", ""),
                ])
            ),
            "tarball entry here/file would be written through the link here"
        );
        assert_eq!(
            refused("fifo", &tarball(&[("pipe", EntryType::Fifo, b"", "")])),
            "tarball entry pipe is a fifo"
        );
        assert_eq!(
            refused("dev", &tarball(&[("sda", EntryType::Block, b"", "")])),
            "tarball entry sda is a device file"
        );
    }

    #[test]
    fn refuses_what_is_not_a_tarball() {
        assert_eq!(
            refused(
                "garbage",
                b"this is not a tarball at all, just some words........"
            ),
            "cannot unpack the tarball: it is not a tar or gzip archive (no valid tar header)"
        );
        assert_eq!(
            refused("empty", b""),
            "cannot unpack the tarball: it is empty"
        );
        let bytes = tarball(&[
            ("a", EntryType::Regular, &[b'a'; 2000], ""),
            ("b", EntryType::Regular, &[b'b'; 2000], ""),
        ]);
        let message = refused("truncated", &bytes[..2600]);
        assert!(
            message.starts_with(
                "cannot unpack the tarball: it is truncated or corrupt after 1 entries"
            ),
            "{message}"
        );
        // Cut inside a file's data.
        let message = refused("truncated-data", &bytes[..3000]);
        assert!(
            message.starts_with(
                "cannot unpack the tarball: it is truncated or corrupt after 1 entries"
            ),
            "{message}"
        );
    }
}
