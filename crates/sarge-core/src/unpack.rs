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
//!
//! Every path is checked before anything is written, so writing is direct:
//! the app folder is opened once and each entry is created relative to it
//! (`mkdirat`, `openat` with `O_EXCL`, `symlinkat`, `linkat`), never through
//! a link and without walking the path to the home again. A file is created
//! with its final mode, so it costs `openat`, `write`, `futimens` and
//! `close` (less than GNU tar); the mode is set again only where the umask
//! could have taken bits of it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};
use flate2::bufread::GzDecoder;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
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
/// The mode of every folder entry: [`tamed_mode`] keeps the owner's bits
/// only, and sarge needs all three of them to fill and later remove it.
const DIR_MODE: u32 = 0o700;

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
    let mut unpacker = Unpacker::new(dest.as_std_path(), limits)?;
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
fn skip(input: &mut impl Read, mut count: u64) -> Result<(), Stop> {
    // Mostly the padding of one entry, under a block.
    let mut buffer = [0u8; 8 * BLOCK];
    while count > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(count).unwrap_or(usize::MAX));
        match input.read(&mut buffer[..want]) {
            Ok(0) => return Err(Stop::End),
            Ok(read) => count -= read as u64,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
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
    /// The app folder, opened once: every entry is created relative to it
    /// (`openat`, `mkdirat`, ...), so no entry walks the path to it again.
    root: OwnedFd,
    limits: &'a Limits,
    /// The process's umask, if `/proc` tells it; unknown, every mode is set
    /// again after creation.
    umask: Option<u32>,
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
    /// File data passes through here, one allocation for the whole tarball.
    buffer: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    fn new(dest: &Path, limits: &'a Limits) -> Result<Self> {
        // Resolved once; `O_PATH` is all the `*at` calls need.
        let root = rustix::fs::open(
            dest,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| {
            std::io::Error::new(
                std::io::Error::from(errno).kind(),
                format!(
                    "cannot open the app folder {}: {}",
                    dest.display(),
                    std::io::Error::from(errno)
                ),
            )
        })?;
        Ok(Self {
            root,
            limits,
            umask: umask(),
            unpacked: 0,
            inodes: 0,
            count: 0,
            links: HashMap::new(),
            link_order: Vec::new(),
            files: HashSet::new(),
            dirs: HashSet::from([PathBuf::new()]),
            buffer: vec![0; 64 * 1024],
        })
    }

    /// Whether a file or folder created with `mode` may have lost bits of
    /// it to the umask and needs it set again.
    fn masked(&self, mode: u32) -> bool {
        self.umask.is_none_or(|umask| mode & umask != 0)
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

    /// Checks one entry and writes it under the app folder.
    fn entry(&mut self, input: &mut impl Read, entry: Entry) -> Result<()> {
        // The name is shown only in an error: most entries never need it.
        let refuse = |problem: String| Error::TarEntry {
            entry: shown(&entry.name),
            problem,
        };
        match entry.kind {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::Symlink | EntryType::Link => {}
            EntryType::Char | EntryType::Block => return Err(refuse("is a device file".into())),
            EntryType::Fifo => return Err(refuse("is a fifo".into())),
            other => return Err(refuse(format!("has unsupported type {other:?}"))),
        }
        if entry.name.contains(&0) {
            return Err(refuse("has a NUL byte in its name".into()));
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
            return self.skip_data(input, &entry);
        }
        if !self.links.is_empty() {
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
        }
        // Every path below is relative to `root` and none of its folders
        // is a link (checked just above), so nothing is written through a
        // link; the last component is created exclusively, never followed.
        let cannot_write = |source: std::io::Error| refuse(format!("cannot be written: {source}"));
        if let Some(parent) = relative.parent() {
            self.make_dirs(parent).map_err(cannot_write)?;
        }
        match entry.kind {
            EntryType::Directory => {
                self.make_dir(&relative).map_err(cannot_write)?;
                self.skip_data(input, &entry)
            }
            EntryType::Symlink => {
                let target = match &entry.link {
                    Some(link) if !link.is_empty() => PathBuf::from(OsStr::from_bytes(link)),
                    _ => return Err(refuse("is a link without a target".into())),
                };
                if target.as_os_str().as_bytes().contains(&0) {
                    return Err(refuse("is a link whose target has a NUL byte".into()));
                }
                let parent = relative.parent().unwrap_or(Path::new(""));
                if target.is_absolute() || normalized_relative(&parent.join(&target)).is_err() {
                    return Err(refuse(format!(
                        "is a link to {} outside the app folder",
                        shown(target.as_os_str().as_bytes())
                    )));
                }
                let root = &self.root;
                replacing(root, &relative, || {
                    rustix::fs::symlinkat(&target, root, &relative)
                })
                .map_err(cannot_write)?;
                self.files.remove(&relative);
                self.links.insert(relative.clone(), target);
                self.link_order.push(relative);
                self.skip_data(input, &entry)
            }
            EntryType::Link => {
                let target = match &entry.link {
                    Some(link) if !link.is_empty() => link,
                    _ => return Err(refuse("is a link without a target".into())),
                };
                let target_shown = || shown(target);
                let target =
                    normalized_relative(Path::new(OsStr::from_bytes(target))).map_err(|_| {
                        refuse(format!(
                            "is a hard link to {} outside the app folder",
                            target_shown()
                        ))
                    })?;
                // Only files are linked to: a hard link to a symbolic link
                // would be a copy of it, resolved from another folder.
                if !self.files.contains(&target) {
                    return Err(refuse(format!(
                        "is a hard link to {}, which is not an earlier file of the tarball",
                        target_shown()
                    )));
                }
                let root = &self.root;
                replacing(root, &relative, || {
                    rustix::fs::linkat(root, &target, root, &relative, AtFlags::empty())
                })
                .map_err(cannot_write)?;
                self.files.insert(relative);
                self.skip_data(input, &entry)
            }
            _ => {
                // Created with its final mode: the descriptor that creates
                // a file may write it whatever the mode says.
                let mode = tamed_mode(entry.mode);
                let root = &self.root;
                let file = replacing(root, &relative, || {
                    rustix::fs::openat(
                        root,
                        &relative,
                        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                        Mode::from_raw_mode(mode),
                    )
                })
                .map_err(cannot_write)?;
                let file = File::from(file);
                if self.masked(mode) {
                    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                        .map_err(|errno| cannot_write(errno.into()))?;
                }
                self.files.insert(relative);
                self.write_file(input, &entry, file)
            }
        }
    }

    /// Creates the folder of a folder entry (its parent exists), or finds
    /// it made already, and gives it its mode: the owner's, whatever the
    /// tarball says, so that sarge can always fill and remove it.
    fn make_dir(&mut self, relative: &Path) -> std::io::Result<()> {
        let mode = Mode::from_raw_mode(DIR_MODE);
        if !self.dirs.contains(relative) {
            let made = match rustix::fs::mkdirat(&self.root, relative, mode) {
                Ok(()) => true,
                Err(rustix::io::Errno::EXIST) => {
                    self.existing_dir(relative)?;
                    false
                }
                Err(errno) => return Err(errno.into()),
            };
            self.dirs.insert(relative.to_owned());
            if made && !self.masked(DIR_MODE) {
                return Ok(());
            }
        }
        // Made earlier as the parent of an entry, or the umask is unknown.
        rustix::fs::chmodat(&self.root, relative, mode, AtFlags::empty())?;
        Ok(())
    }

    /// Creates `relative` and its missing parents; none of them is a link,
    /// since entries through links are refused before this.
    fn make_dirs(&mut self, relative: &Path) -> std::io::Result<()> {
        if self.dirs.contains(relative) {
            return Ok(());
        }
        // The deepest folder known to exist, then down from it: no
        // recursion, however deep the tarball nests.
        let missing: Vec<&Path> = relative
            .ancestors()
            .take_while(|ancestor| !self.dirs.contains(*ancestor))
            .collect();
        for folder in missing.into_iter().rev() {
            match rustix::fs::mkdirat(&self.root, folder, Mode::from_raw_mode(0o777)) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => self.existing_dir(folder)?,
                Err(errno) => return Err(errno.into()),
            }
            self.files.remove(folder);
            self.dirs.insert(folder.to_owned());
        }
        Ok(())
    }

    /// Something is at `relative` already although no folder was made
    /// there: an earlier entry's file or link. Say what the system would
    /// say when writing beneath it.
    fn existing_dir(&self, relative: &Path) -> std::io::Result<()> {
        let stat = rustix::fs::statat(&self.root, relative, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
            return Err(rustix::io::Errno::NOTDIR.into());
        }
        Ok(())
    }

    fn skip_data(&self, input: &mut impl Read, entry: &Entry) -> Result<()> {
        match skip(input, entry.size + padding(entry.size)) {
            Ok(()) => Ok(()),
            Err(Stop::End) => {
                Err(self.truncated(format_args!("it ends inside entry {}", shown(&entry.name))))
            }
            Err(Stop::Failed(source)) => Err(self.failed(source)),
        }
    }

    fn write_file(&mut self, input: &mut impl Read, entry: &Entry, mut file: File) -> Result<()> {
        let cannot_write = |source: std::io::Error| Error::TarEntry {
            entry: shown(&entry.name),
            problem: format!("cannot be written: {source}"),
        };
        let ends_inside = |this: &Self| {
            this.truncated(format_args!("it ends inside entry {}", shown(&entry.name)))
        };
        let mut left = entry.size;
        while left > 0 {
            let want = self
                .buffer
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let read = match input.read(&mut self.buffer[..want]) {
                Ok(0) => return Err(ends_inside(self)),
                Ok(read) => read,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Err(match Stop::from(error) {
                        Stop::End => ends_inside(self),
                        Stop::Failed(source) => self.failed(source),
                    })
                }
            };
            file.write_all(&self.buffer[..read]).map_err(cannot_write)?;
            left -= read as u64;
        }
        match skip(input, padding(entry.size)) {
            Ok(()) => {}
            Err(Stop::End) => return Err(ends_inside(self)),
            Err(Stop::Failed(source)) => return Err(self.failed(source)),
        }
        if let Some(mtime) = entry.mtime {
            // Python compares a module's mtime with its cached bytecode.
            let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
            file.set_modified(modified).map_err(cannot_write)?;
        }
        Ok(())
    }

    /// Checks every link against the finished tree and returns the entry
    /// count.
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
        if self.count == 0 {
            return Err(Error::Tarball {
                problem: "it has no files".into(),
            });
        }
        Ok(self.count)
    }
}

/// Runs `create`; if something is already at `relative` (an earlier entry
/// of the same name), removes it and tries once more. A folder is never
/// removed: that fails with "Is a directory".
fn replacing<T>(
    root: &OwnedFd,
    relative: &Path,
    create: impl Fn() -> rustix::io::Result<T>,
) -> std::io::Result<T> {
    match create() {
        Err(rustix::io::Errno::EXIST) => {
            rustix::fs::unlinkat(root, relative, AtFlags::empty())?;
            Ok(create()?)
        }
        result => Ok(result?),
    }
}

/// The process's umask from `/proc/self/status` (Linux 4.7 and later).
/// Reading it there, rather than setting it and back, leaves it alone for
/// the other threads of an embedder.
fn umask() -> Option<u32> {
    // `Umask:` is the second line; one read of the first kilobyte has it.
    let mut head = [0u8; 1024];
    let read = File::open("/proc/self/status").ok()?.read(&mut head).ok()?;
    // Bytes, not text: the `Name:` line before it need not be UTF-8.
    let line = head[..read]
        .split(|byte| *byte == b'\n')
        .find_map(|line| line.strip_prefix(b"Umask:"))?;
    u32::from_str_radix(std::str::from_utf8(line).ok()?.trim(), 8).ok()
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
