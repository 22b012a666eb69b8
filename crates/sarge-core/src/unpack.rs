//! Unpacking an app tarball into a fresh instance folder, refusing every
//! entry that could write or point outside it, and every tarball that is
//! cut short, corrupt, or far bigger on disk than on the wire.
//!
//! The tar stream is read here block by block rather than through
//! `tar::Archive`, for three reasons: the `tar` crate reads GNU long names
//! and PAX headers into memory whatever their size, it takes a missing
//! end-of-archive marker for a normal end, and its `unpack_in` resolves
//! every entry's parent folder on disk (some twenty syscalls per entry)
//! although every path has already been checked here. `tar::Header` still
//! decodes the fields of each header.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};
use flate2::bufread::GzDecoder;
use tar::EntryType;

use crate::error::{excerpt, Error, Result};

/// How much one tarball may unpack to.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// `max_unpacked_bytes` from the config.
    pub max_unpacked_bytes: u64,
    /// The config file, named when the limit is hit.
    pub config: Utf8PathBuf,
    /// Bytes free for sarge on the file system of the instances folder.
    pub free_bytes: u64,
    /// Inodes free there; `u64::MAX` where the file system has no count.
    pub free_inodes: u64,
    /// That folder, named when the disk would fill up.
    pub free_on: Utf8PathBuf,
}

impl Limits {
    /// The limits for unpacking into `folder`, with its free space now.
    pub fn for_folder(
        max_unpacked_bytes: u64,
        config: Utf8PathBuf,
        folder: &Utf8Path,
    ) -> Result<Self> {
        let stat = rustix::fs::statvfs(folder.as_std_path()).map_err(|errno| {
            std::io::Error::other(format!(
                "cannot read the free space of {folder}: {}",
                std::io::Error::from(errno)
            ))
        })?;
        Ok(Self {
            max_unpacked_bytes,
            config,
            free_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
            // Some file systems (btrfs) have no fixed number of inodes
            // and report none at all.
            free_inodes: if stat.f_files == 0 {
                u64::MAX
            } else {
                stat.f_favail
            },
            free_on: folder.to_owned(),
        })
    }
}

const BLOCK: usize = 512;
/// Linux's PATH_MAX, counting the final NUL: no longer name can be created.
const MAX_NAME: u64 = 4096;
/// PAX headers carry a few keys; real ones are well under a kilobyte.
const MAX_PAX: u64 = 64 * 1024;
/// Linux's bound on links followed while resolving one path.
const MAX_LINK_HOPS: u32 = 40;
/// What each entry costs against `max_unpacked_bytes` besides its data: a
/// header's worth. Without it, millions of empty files would cost nothing
/// but still fill the inode table and sarge's memory.
const ENTRY_COST: u64 = BLOCK as u64;
/// Zero bytes after a gzip stream that tape-blocking tools may add.
const MAX_ZERO_PADDING: u64 = 1024 * 1024;

/// Unpacks a plain or gzip-compressed tar stream into `dest`, which must be
/// an empty folder. The compression is detected from the bytes, not a name.
///
/// The whole tarball is refused, naming the entry, if any entry is absolute,
/// climbs out with `..`, is a device or fifo, is a link whose target
/// resolves (through the other links) outside `dest`, would be written
/// through a link, or would take the app over `limits`. A tarball without
/// its end-of-archive marker, or a gzip stream without its trailer, is
/// refused as truncated. Returns the number of entries.
pub(crate) fn unpack_tarball(input: impl Read, dest: &Utf8Path, limits: &Limits) -> Result<usize> {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let head = input.fill_buf().map_err(|source| Error::Tarball {
        problem: format!("cannot read it: {source}"),
    })?;
    if head.is_empty() {
        return Err(Error::Tarball {
            problem: "it is empty".into(),
        });
    }
    let mut unpacker = Unpacker::new(dest.as_std_path(), limits);
    if !head.starts_with(&[0x1f, 0x8b]) {
        unpacker.unpack(&mut input, false)?;
        return unpacker.finish();
    }
    let mut decoder = GzDecoder::new(input);
    unpacker.unpack(&mut decoder, true)?;
    // The tar stream is complete, but gzip checks its CRC and length only
    // once the decoder is read to its end. Zero padding after the tar's own
    // end marker is normal; it counts against the same budget.
    let budget = limits.max_unpacked_bytes.saturating_sub(unpacker.unpacked);
    let after = drain(&mut decoder, budget).map_err(|source| stream_error(source, &unpacker))?;
    if after > budget {
        return Err(Error::Tarball {
            problem: format!(
                "it has more than {budget} bytes after the end of its tar archive (max_unpacked_bytes in {})",
                limits.config
            ),
        });
    }
    let garbage = trailing_garbage(decoder.into_inner()).map_err(|source| Error::Tarball {
        problem: format!("cannot read it: {source}"),
    })?;
    if let Some(garbage) = garbage {
        return Err(Error::Tarball {
            problem: format!("it has {garbage} after its gzip stream"),
        });
    }
    unpacker.finish()
}

/// Reads `reader` to its end, returning how many bytes it gave; stops
/// early once that is more than `budget`.
fn drain(reader: &mut impl Read, budget: u64) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(read) => {
                total += read as u64;
                if total > budget {
                    return Ok(total);
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// What follows the gzip stream, described, unless it is nothing or a
/// little zero padding.
fn trailing_garbage(mut rest: impl Read) -> std::io::Result<Option<String>> {
    let mut buffer = vec![0; 64 * 1024];
    let mut total = 0u64;
    let mut garbage = false;
    loop {
        let read = match rest.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        garbage |= buffer[..read].iter().any(|byte| *byte != 0);
        total += read as u64;
        if total > MAX_ZERO_PADDING {
            return Ok(Some(format!("more than {MAX_ZERO_PADDING} bytes")));
        }
    }
    Ok(garbage.then(|| format!("{total} bytes of garbage")))
}

/// Why reading the stream stopped, before it is given a context.
enum Stop {
    /// The input ended.
    End,
    /// The input (or its gzip decoder) failed.
    Failed(std::io::Error),
}

impl From<std::io::Error> for Stop {
    fn from(error: std::io::Error) -> Self {
        // A gzip stream cut short shows as an unexpected end in its decoder.
        if error.kind() == ErrorKind::UnexpectedEof {
            Stop::End
        } else {
            Stop::Failed(error)
        }
    }
}

/// The message for a read that failed outside any entry.
fn stream_error(source: std::io::Error, unpacker: &Unpacker<'_>) -> Error {
    match Stop::from(source) {
        Stop::End => Error::Tarball {
            problem: "it is truncated: its gzip stream ends before its trailer".into(),
        },
        Stop::Failed(source) => unpacker.failed(source),
    }
}

/// Reads exactly `buffer.len()` bytes. `Ok(false)` if the input ended
/// before the first byte; [`Stop::End`] if it ended after.
fn read_exact_or_end(input: &mut impl Read, buffer: &mut [u8]) -> Result<bool, Stop> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(Stop::End),
            Ok(read) => filled += read,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(true)
}

/// Reads and drops `count` bytes.
fn skip(input: &mut impl Read, count: u64) -> Result<(), Stop> {
    let copied = std::io::copy(&mut input.take(count), &mut std::io::sink())?;
    if copied < count {
        return Err(Stop::End);
    }
    Ok(())
}

/// The zero bytes after `size` bytes of data, up to the next block.
fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// What extension headers (GNU long names, PAX) say about the next entry.
#[derive(Default)]
struct Pending {
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<u64>,
}

/// One entry as the headers describe it.
struct Entry {
    kind: EntryType,
    name: Vec<u8>,
    link: Option<Vec<u8>>,
    size: u64,
    mode: u32,
    mtime: Option<u64>,
}

struct Unpacker<'a> {
    dest: &'a Path,
    limits: &'a Limits,
    /// Bytes of entry data so far, plus [`ENTRY_COST`] per entry.
    unpacked: u64,
    /// Entries that may each have taken an inode so far.
    inodes: u64,
    /// Entries so far, extension headers not counted.
    count: usize,
    /// Every symbolic link written, by its path, with its target.
    links: HashMap<PathBuf, PathBuf>,
    /// The same links in tarball order, checked at the end.
    link_order: Vec<PathBuf>,
    /// Regular files written: the only things a hard link may point to.
    files: HashSet<PathBuf>,
    /// Folders known to exist.
    dirs: HashSet<PathBuf>,
    /// Folder modes, set at the end so a read-only folder can still be
    /// filled first.
    dir_modes: Vec<(PathBuf, u32)>,
}

impl<'a> Unpacker<'a> {
    fn new(dest: &'a Path, limits: &'a Limits) -> Self {
        Self {
            dest,
            limits,
            unpacked: 0,
            inodes: 0,
            count: 0,
            links: HashMap::new(),
            link_order: Vec::new(),
            files: HashSet::new(),
            dirs: HashSet::from([PathBuf::new()]),
            dir_modes: Vec::new(),
        }
    }

    fn truncated(&self, problem: impl std::fmt::Display) -> Error {
        Error::Tarball {
            problem: format!("it is truncated: {problem}"),
        }
    }

    fn failed(&self, source: std::io::Error) -> Error {
        Error::Tarball {
            problem: if source.kind() == ErrorKind::InvalidInput
                || source.kind() == ErrorKind::InvalidData
            {
                // The gzip decoder's words for a bad stream or checksum.
                format!("it is corrupt after {} entries: {source}", self.count)
            } else {
                format!("cannot read it: {source}")
            },
        }
    }

    /// Reads entries up to the end-of-archive marker, writing each.
    fn unpack(&mut self, input: &mut impl Read, gzipped: bool) -> Result<()> {
        let mut pending = Pending::default();
        let mut block = [0u8; BLOCK];
        loop {
            let started = self.count == 0 && pending.name.is_none() && pending.link.is_none();
            match read_exact_or_end(input, &mut block) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(self.truncated(format_args!(
                        "it ends after {} entries without the end-of-archive marker",
                        self.count
                    )))
                }
                Err(Stop::End) if started && !gzipped => return Err(not_an_archive()),
                Err(Stop::End) => {
                    return Err(self.truncated(format_args!(
                        "it ends inside a header after {} entries",
                        self.count
                    )))
                }
                Err(Stop::Failed(source)) => return Err(self.failed(source)),
            }
            if block.iter().all(|byte| *byte == 0) {
                // The marker is two zero blocks; one alone may be a cut.
                return match read_exact_or_end(input, &mut block) {
                    Ok(true) if block.iter().all(|byte| *byte == 0) => Ok(()),
                    Ok(true) => Err(Error::Tarball {
                        problem: format!(
                            "it is corrupt after {} entries: a zero block is followed by data",
                            self.count
                        ),
                    }),
                    Ok(false) | Err(Stop::End) => Err(self.truncated(format_args!(
                        "it ends after {} entries with half of the end-of-archive marker",
                        self.count
                    ))),
                    Err(Stop::Failed(source)) => Err(self.failed(source)),
                };
            }
            let header = tar::Header::from_byte_slice(&block);
            if !checksum_matches(&block) {
                return Err(if started {
                    not_an_archive()
                } else {
                    Error::Tarball {
                        problem: format!(
                            "it is corrupt after {} entries: a header has a wrong checksum",
                            self.count
                        ),
                    }
                });
            }
            let header_size = header.entry_size().map_err(|_| Error::TarEntry {
                entry: shown(&header.path_bytes()),
                problem: "has an unreadable size".into(),
            })?;
            let kind = header.entry_type();
            let meta = |bound: u64, what: &str| -> Result<()> {
                if header_size > bound {
                    return Err(Error::TarEntry {
                        entry: shown(&header.path_bytes()),
                        problem: format!("has {what} of {header_size} bytes (at most {bound})"),
                    });
                }
                Ok(())
            };
            match kind {
                EntryType::GNULongName | EntryType::GNULongLink => {
                    let long_name = kind == EntryType::GNULongName;
                    meta(
                        MAX_NAME,
                        if long_name {
                            "a long name"
                        } else {
                            "a long link name"
                        },
                    )?;
                    let mut data = self.read_meta(input, header_size, &header.path_bytes())?;
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    if long_name {
                        pending.name = Some(data);
                    } else {
                        pending.link = Some(data);
                    }
                    continue;
                }
                EntryType::XHeader | EntryType::XGlobalHeader => {
                    meta(MAX_PAX, "a PAX header")?;
                    let data = self.read_meta(input, header_size, &header.path_bytes())?;
                    // Global headers hold metadata such as `git archive`'s
                    // commit id; none of it matters here.
                    if kind == EntryType::XHeader {
                        self.read_pax(&data, &header.path_bytes(), &mut pending)?;
                    }
                    continue;
                }
                _ => {}
            }
            let entry = Entry {
                kind,
                name: pending
                    .name
                    .take()
                    .unwrap_or_else(|| header.path_bytes().into_owned()),
                link: pending
                    .link
                    .take()
                    .or_else(|| header.link_name_bytes().map(|link| link.into_owned())),
                size: pending.size.take().unwrap_or(header_size),
                mode: header.mode().unwrap_or(0o644),
                mtime: pending.mtime.take().or_else(|| header.mtime().ok()),
            };
            self.entry(input, entry)?;
            self.count += 1;
        }
    }

    /// The data of an extension header, whose size has been checked.
    fn read_meta(&self, input: &mut impl Read, size: u64, name: &[u8]) -> Result<Vec<u8>> {
        let mut data = vec![0; size as usize];
        let read = match read_exact_or_end(input, &mut data) {
            // The size is not 0: no data at all is a cut too.
            Ok(false) => Err(Stop::End),
            Ok(true) => skip(input, padding(size)),
            Err(stop) => Err(stop),
        };
        match read {
            Ok(()) => Ok(data),
            Err(Stop::End) => {
                Err(self.truncated(format_args!("it ends inside entry {}", shown(name))))
            }
            Err(Stop::Failed(source)) => Err(self.failed(source)),
        }
    }

    fn read_pax(&self, data: &[u8], name: &[u8], pending: &mut Pending) -> Result<()> {
        let corrupt = |problem: &str| Error::TarEntry {
            entry: shown(name),
            problem: problem.to_owned(),
        };
        for extension in tar::PaxExtensions::new(data) {
            let extension = extension.map_err(|_| corrupt("is a malformed PAX header"))?;
            let value = extension.value_bytes();
            match extension.key_bytes() {
                b"path" => pending.name = Some(value.to_vec()),
                b"linkpath" => pending.link = Some(value.to_vec()),
                b"size" => {
                    let size = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                    pending.size =
                        Some(size.ok_or_else(|| corrupt("has a PAX size that is not a number"))?);
                }
                b"mtime" => {
                    // Seconds with an optional fraction; the fraction is dropped.
                    let whole = value.split(|byte| *byte == b'.').next().unwrap_or_default();
                    pending.mtime = std::str::from_utf8(whole).ok().and_then(|v| v.parse().ok());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks one entry and writes it under `dest`.
    fn entry(&mut self, input: &mut impl Read, entry: Entry) -> Result<()> {
        let shown_name = shown(&entry.name);
        let refuse = |problem: String| Error::TarEntry {
            entry: shown_name.clone(),
            problem,
        };
        match entry.kind {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::Symlink | EntryType::Link => {}
            EntryType::Char | EntryType::Block => return Err(refuse("is a device file".into())),
            EntryType::Fifo => return Err(refuse("is a fifo".into())),
            other => return Err(refuse(format!("has unsupported type {other:?}"))),
        }
        let path = Path::new(OsStr::from_bytes(&entry.name));
        let relative = normalized_relative(path).map_err(|problem| refuse(problem.into()))?;

        let total = self
            .unpacked
            .saturating_add(entry.size)
            .saturating_add(ENTRY_COST);
        if total > self.limits.max_unpacked_bytes {
            return Err(refuse(format!(
                "would bring the app to more than {} bytes (max_unpacked_bytes in {})",
                self.limits.max_unpacked_bytes, self.limits.config
            )));
        }
        if total > self.limits.free_bytes {
            return Err(refuse(format!(
                "would bring the app to more than the {} bytes free on {}",
                self.limits.free_bytes, self.limits.free_on
            )));
        }
        self.unpacked = total;
        // Hard links share their file's inode.
        if entry.kind != EntryType::Link {
            self.inodes += 1;
            if self.inodes > self.limits.free_inodes {
                return Err(refuse(format!(
                    "would need more than the {} inodes free on {}",
                    self.limits.free_inodes, self.limits.free_on
                )));
            }
        }

        if relative.as_os_str().is_empty() {
            // `./` itself: the instance folder already exists.
            if entry.kind != EntryType::Directory {
                return Err(refuse(
                    "is not a folder but names the app folder itself".into(),
                ));
            }
            return self.skip_data(input, &entry, &shown_name);
        }
        if self.links.contains_key(&relative) {
            return Err(refuse("would replace a link".into()));
        }
        if let Some(link) = relative
            .ancestors()
            .skip(1)
            .find(|ancestor| self.links.contains_key(*ancestor))
        {
            return Err(refuse(format!(
                "would be written through the link {}",
                shown(link.as_os_str().as_bytes())
            )));
        }
        let cannot_write = |source: std::io::Error| refuse(format!("cannot be written: {source}"));
        if let Some(parent) = relative.parent() {
            self.make_dirs(parent).map_err(cannot_write)?;
        }
        let full = self.dest.join(&relative);
        match entry.kind {
            EntryType::Directory => {
                self.make_dirs(&relative).map_err(cannot_write)?;
                self.dir_modes
                    .push((relative, tamed_mode(entry.mode) | 0o700));
                self.skip_data(input, &entry, &shown_name)
            }
            EntryType::Symlink => {
                let target = match &entry.link {
                    Some(link) if !link.is_empty() => PathBuf::from(OsStr::from_bytes(link)),
                    _ => return Err(refuse("is a link without a target".into())),
                };
                let parent = relative.parent().unwrap_or(Path::new(""));
                if target.is_absolute() || normalized_relative(&parent.join(&target)).is_err() {
                    return Err(refuse(format!(
                        "is a link to {} outside the app folder",
                        shown(target.as_os_str().as_bytes())
                    )));
                }
                replacing(&full, |path| std::os::unix::fs::symlink(&target, path))
                    .map_err(cannot_write)?;
                self.files.remove(&relative);
                self.links.insert(relative.clone(), target);
                self.link_order.push(relative);
                self.skip_data(input, &entry, &shown_name)
            }
            EntryType::Link => {
                let target = match &entry.link {
                    Some(link) if !link.is_empty() => link,
                    _ => return Err(refuse("is a link without a target".into())),
                };
                let target_shown = shown(target);
                let target =
                    normalized_relative(Path::new(OsStr::from_bytes(target))).map_err(|_| {
                        refuse(format!(
                            "is a hard link to {target_shown} outside the app folder"
                        ))
                    })?;
                // Only files are linked to: a hard link to a symbolic link
                // would be a copy of it, resolved from another folder.
                if !self.files.contains(&target) {
                    return Err(refuse(format!(
                        "is a hard link to {target_shown}, which is not an earlier file of the tarball"
                    )));
                }
                replacing(&full, |path| {
                    std::fs::hard_link(self.dest.join(&target), path)
                })
                .map_err(cannot_write)?;
                self.files.insert(relative);
                self.skip_data(input, &entry, &shown_name)
            }
            _ => {
                let file = replacing(&full, |path| {
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(path)
                })
                .map_err(cannot_write)?;
                self.files.insert(relative);
                self.write_file(input, &entry, file, &shown_name)
            }
        }
    }

    /// Creates `relative` and its missing parents; none of them is a link,
    /// since entries through links are refused before this.
    fn make_dirs(&mut self, relative: &Path) -> std::io::Result<()> {
        if self.dirs.contains(relative) {
            return Ok(());
        }
        if let Some(parent) = relative.parent() {
            self.make_dirs(parent)?;
        }
        let full = self.dest.join(relative);
        match std::fs::create_dir(&full) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                if !std::fs::symlink_metadata(&full)?.is_dir() {
                    // An earlier entry made a file here; say what the
                    // system would say when writing beneath it.
                    return Err(rustix::io::Errno::NOTDIR.into());
                }
            }
            Err(error) => return Err(error),
        }
        self.files.remove(relative);
        self.dirs.insert(relative.to_owned());
        Ok(())
    }

    fn skip_data(&self, input: &mut impl Read, entry: &Entry, shown_name: &str) -> Result<()> {
        match skip(input, entry.size + padding(entry.size)) {
            Ok(()) => Ok(()),
            Err(Stop::End) => {
                Err(self.truncated(format_args!("it ends inside entry {shown_name}")))
            }
            Err(Stop::Failed(source)) => Err(self.failed(source)),
        }
    }

    fn write_file(
        &self,
        input: &mut impl Read,
        entry: &Entry,
        mut file: File,
        shown_name: &str,
    ) -> Result<()> {
        let cannot_write = |source: std::io::Error| Error::TarEntry {
            entry: shown_name.to_owned(),
            problem: format!("cannot be written: {source}"),
        };
        let mut left = entry.size;
        let mut buffer = vec![0; 64 * 1024];
        while left > 0 {
            let want = buffer
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let read = match input.read(&mut buffer[..want]) {
                Ok(0) => {
                    return Err(self.truncated(format_args!("it ends inside entry {shown_name}")))
                }
                Ok(read) => read,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Err(match Stop::from(error) {
                        Stop::End => {
                            self.truncated(format_args!("it ends inside entry {shown_name}"))
                        }
                        Stop::Failed(source) => self.failed(source),
                    })
                }
            };
            file.write_all(&buffer[..read]).map_err(cannot_write)?;
            left -= read as u64;
        }
        match skip(input, padding(entry.size)) {
            Ok(()) => {}
            Err(Stop::End) => {
                return Err(self.truncated(format_args!("it ends inside entry {shown_name}")))
            }
            Err(Stop::Failed(source)) => return Err(self.failed(source)),
        }
        file.set_permissions(std::fs::Permissions::from_mode(tamed_mode(entry.mode)))
            .map_err(cannot_write)?;
        if let Some(mtime) = entry.mtime {
            // Python compares a module's mtime with its cached bytecode.
            let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
            file.set_modified(modified).map_err(cannot_write)?;
        }
        Ok(())
    }

    /// Checks every link against the finished tree, sets folder modes, and
    /// returns the entry count.
    fn finish(self) -> Result<usize> {
        // A link is checked only now: a later link can change where an
        // earlier one leads (`a -> b/..` is harmless until `b -> .`).
        for link in &self.link_order {
            let target = &self.links[link];
            let mut at = link.parent().unwrap_or(Path::new("")).to_owned();
            let mut hops = MAX_LINK_HOPS;
            let problem = match resolve(&self.links, &mut at, target, &mut hops) {
                Ok(()) => continue,
                Err(Resolve::Outside) => format!(
                    "is a link to {} that resolves outside the app folder",
                    shown(target.as_os_str().as_bytes())
                ),
                Err(Resolve::TooManyLinks) => {
                    format!("is a link that goes through more than {MAX_LINK_HOPS} links")
                }
            };
            return Err(Error::TarEntry {
                entry: shown(link.as_os_str().as_bytes()),
                problem,
            });
        }
        for (relative, mode) in &self.dir_modes {
            std::fs::set_permissions(
                self.dest.join(relative),
                std::fs::Permissions::from_mode(*mode),
            )
            .map_err(|source| Error::TarEntry {
                entry: shown(relative.as_os_str().as_bytes()),
                problem: format!("cannot be written: {source}"),
            })?;
        }
        if self.count == 0 {
            return Err(Error::Tarball {
                problem: "it has no files".into(),
            });
        }
        Ok(self.count)
    }
}

/// Runs `create` on `path`; if something is already there (an earlier
/// entry of the same name), removes it and tries once more.
fn replacing<T>(path: &Path, create: impl Fn(&Path) -> std::io::Result<T>) -> std::io::Result<T> {
    match create(path) {
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            create(path)
        }
        result => result,
    }
}

enum Resolve {
    Outside,
    TooManyLinks,
}

/// Walks `target` from the folder `at` (both relative to the app folder)
/// as the kernel would, following the tarball's links, leaving `at` at the
/// result. Components that do not exist are taken as folders, which can
/// only keep the result further inside than the kernel would.
fn resolve(
    links: &HashMap<PathBuf, PathBuf>,
    at: &mut PathBuf,
    target: &Path,
    hops: &mut u32,
) -> Result<(), Resolve> {
    for component in target.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => return Err(Resolve::Outside),
            Component::CurDir => {}
            Component::ParentDir => {
                if !at.pop() {
                    return Err(Resolve::Outside);
                }
            }
            Component::Normal(part) => {
                at.push(part);
                if let Some(next) = links.get(at.as_path()) {
                    if *hops == 0 {
                        return Err(Resolve::TooManyLinks);
                    }
                    *hops -= 1;
                    at.pop();
                    resolve(links, at, next, hops)?;
                }
            }
        }
    }
    Ok(())
}

/// The mode an unpacked file gets: the owner's bits only (scripts stay
/// executable). No setuid, setgid or sticky bit (the app runs as sarge's
/// user, and a tarball must not hand out privileges), nothing writable by
/// every user, and nothing readable by others, like the rest of `var/`.
fn tamed_mode(mode: u32) -> u32 {
    mode & 0o700
}

fn not_an_archive() -> Error {
    Error::Tarball {
        problem: "it is not a tar or gzip archive (no valid tar header)".into(),
    }
}

/// A header's checksum: the sum of its bytes with the checksum field
/// itself counted as spaces.
fn checksum_matches(block: &[u8; BLOCK]) -> bool {
    let header = tar::Header::from_byte_slice(block);
    let Ok(stored) = header.cksum() else {
        return false;
    };
    let sum: u32 = block[..148]
        .iter()
        .chain(&[b' '; 8])
        .chain(&block[156..])
        .map(|byte| u32::from(*byte))
        .sum();
    sum == stored
}

/// An entry name fit for one line of an error message.
fn shown(name: &[u8]) -> String {
    excerpt(&String::from_utf8_lossy(name))
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
mod tests;
