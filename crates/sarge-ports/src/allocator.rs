//! Remembering the last port handed out, across runs of sarge.

use std::io::{ErrorKind, Write};
use std::ops::RangeInclusive;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};
use crate::pick::next_free_port;

const KEY: &str = "last_port";

/// Hands out ports from a range in turn, remembering the last one in a
/// small state file (`last_port = 5012`).
///
/// It does no locking: the caller must hold sarge's lock so that two
/// deploys never allocate at the same time.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    state_file: Utf8PathBuf,
    range: RangeInclusive<u16>,
}

impl PortAllocator {
    /// An allocator for `range` whose state lives in `state_file`. The file
    /// need not exist yet, but its folder must.
    pub fn new(state_file: impl Into<Utf8PathBuf>, range: RangeInclusive<u16>) -> Self {
        PortAllocator {
            state_file: state_file.into(),
            range,
        }
    }

    /// The state file this allocator reads and writes.
    pub fn state_file(&self) -> &Utf8Path {
        &self.state_file
    }

    /// The range ports are handed out from.
    pub fn range(&self) -> RangeInclusive<u16> {
        self.range.clone()
    }

    /// Picks the next port after the last one handed out for which
    /// `is_taken` is false, records it, and returns it.
    ///
    /// A missing state file means nothing was handed out yet; a recorded
    /// port outside the range (the range changed since) restarts the search
    /// at the range's first port. The state file is replaced atomically, so
    /// a crash leaves either the old or the new port recorded.
    pub fn allocate(&self, is_taken: impl FnMut(u16) -> bool) -> Result<u16> {
        let last = self.last_allocated()?;
        let port = next_free_port(self.range.clone(), last, is_taken).ok_or(Error::Exhausted {
            first: *self.range.start(),
            last: *self.range.end(),
        })?;
        self.record(port)?;
        Ok(port)
    }

    /// The port recorded in the state file, or `None` if it does not exist.
    pub fn last_allocated(&self) -> Result<Option<u16>> {
        let text = match std::fs::read_to_string(&self.state_file) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::ReadState {
                    path: self.state_file.clone(),
                    source,
                })
            }
        };
        parse_state(&text)
            .map(Some)
            .map_err(|problem| Error::CorruptState {
                path: self.state_file.clone(),
                problem,
            })
    }

    /// Records `port` as the last one handed out, replacing the state file
    /// atomically. For callers that pick with [`next_free_port`] themselves
    /// and save the choice only once it is in use.
    pub fn record(&self, port: u16) -> Result<()> {
        let file_name = self.state_file.file_name().unwrap_or("ports");
        // Same folder as the state file, so the rename cannot cross file
        // systems and is atomic.
        let temp = self
            .state_file
            .with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
        let written = std::fs::File::create(&temp).and_then(|mut file| {
            file.write_all(format!("{KEY} = {port}\n").as_bytes())?;
            file.sync_all()
        });
        // On failure, removing the temp file is best effort: the original
        // error is the one worth reporting.
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(Error::WriteState { path: temp, source });
        }
        if let Err(source) = std::fs::rename(&temp, &self.state_file) {
            let _ = std::fs::remove_file(&temp);
            return Err(Error::WriteState {
                path: self.state_file.clone(),
                source,
            });
        }
        Ok(())
    }
}

/// Reads `last_port = N`, the whole content of a state file.
fn parse_state(text: &str) -> Result<u16, String> {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let line = lines
        .next()
        .ok_or_else(|| format!("it is empty, expected \"{KEY} = PORT\""))?;
    if let Some(extra) = lines.next() {
        return Err(format!("unexpected second line {extra:?}"));
    }
    let value = line
        .split_once('=')
        .filter(|(key, _)| key.trim() == KEY)
        .map(|(_, value)| value.trim())
        .ok_or_else(|| format!("expected \"{KEY} = PORT\", found {line:?}"))?;
    value
        .parse()
        .map_err(|_| format!("{value:?} is not a port number"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A fresh folder under the system temp dir, removed on drop.
    struct TempDir(Utf8PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "sarge-ports-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = Utf8PathBuf::try_from(std::env::temp_dir().join(name)).unwrap();
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn file_names(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn allocates_in_turn_and_wraps() {
        let dir = TempDir::new();
        let allocator = PortAllocator::new(dir.0.join("ports"), 5010..=5012);
        let ports: Vec<u16> = (0..4)
            .map(|_| allocator.allocate(|_| false).unwrap())
            .collect();
        assert_eq!(ports, [5010, 5011, 5012, 5010]);
    }

    #[test]
    fn skips_taken_ports() {
        let dir = TempDir::new();
        let allocator = PortAllocator::new(dir.0.join("ports"), 5010..=5019);
        assert_eq!(allocator.allocate(|p| p < 5013).unwrap(), 5013);
        assert_eq!(allocator.allocate(|p| p == 5014).unwrap(), 5015);
    }

    #[test]
    fn state_file_round_trip() {
        let dir = TempDir::new();
        let path = dir.0.join("ports");
        let allocator = PortAllocator::new(&path, 5010..=5099);
        assert_eq!(allocator.last_allocated().unwrap(), None);
        assert_eq!(allocator.allocate(|_| false).unwrap(), 5010);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "last_port = 5010\n"
        );
        assert_eq!(allocator.last_allocated().unwrap(), Some(5010));

        // A later run, with a new allocator, carries on from the file.
        std::fs::write(&path, "last_port = 5050\n").unwrap();
        let next_run = PortAllocator::new(&path, 5010..=5099);
        assert_eq!(next_run.allocate(|_| false).unwrap(), 5051);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "last_port = 5051\n"
        );
    }

    #[test]
    fn record_saves_a_port_picked_elsewhere() {
        let dir = TempDir::new();
        let allocator = PortAllocator::new(dir.0.join("ports"), 5010..=5099);
        allocator.record(5042).unwrap();
        assert_eq!(allocator.last_allocated().unwrap(), Some(5042));
        assert_eq!(allocator.allocate(|_| false).unwrap(), 5043);
        assert_eq!(dir.file_names(), ["ports"]);
    }

    #[test]
    fn range_changed_between_runs_restarts_at_first_port() {
        let dir = TempDir::new();
        let path = dir.0.join("ports");
        PortAllocator::new(&path, 5010..=5099)
            .allocate(|_| false)
            .unwrap();
        let moved = PortAllocator::new(&path, 7010..=7099);
        assert_eq!(moved.last_allocated().unwrap(), Some(5010));
        assert_eq!(moved.allocate(|_| false).unwrap(), 7010);
        assert_eq!(moved.allocate(|_| false).unwrap(), 7011);
    }

    #[test]
    fn exhaustion_names_the_range_and_keeps_the_state() {
        let dir = TempDir::new();
        let path = dir.0.join("ports");
        std::fs::write(&path, "last_port = 5011\n").unwrap();
        let allocator = PortAllocator::new(&path, 5010..=5012);
        let error = allocator.allocate(|_| true).unwrap_err();
        assert_eq!(error.to_string(), "no free port left in range 5010..=5012");
        assert!(matches!(
            error,
            Error::Exhausted {
                first: 5010,
                last: 5012
            }
        ));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "last_port = 5011\n"
        );
    }

    #[test]
    fn tolerant_of_whitespace_in_state_file() {
        let dir = TempDir::new();
        let path = dir.0.join("ports");
        std::fs::write(&path, "\n  last_port=5020  \n\n").unwrap();
        let allocator = PortAllocator::new(&path, 5010..=5099);
        assert_eq!(allocator.last_allocated().unwrap(), Some(5020));
    }

    #[test]
    fn corrupt_state_file_is_an_error_naming_file_and_problem() {
        let dir = TempDir::new();
        let path = dir.0.join("ports");
        let allocator = PortAllocator::new(&path, 5010..=5099);
        let cases = [
            ("", "it is empty, expected \"last_port = PORT\""),
            ("5012\n", "expected \"last_port = PORT\", found \"5012\""),
            (
                "next_port = 5012\n",
                "expected \"last_port = PORT\", found \"next_port = 5012\"",
            ),
            ("last_port = 70000\n", "\"70000\" is not a port number"),
            ("last_port = abc\n", "\"abc\" is not a port number"),
            (
                "last_port = 5012\nlast_port = 5013\n",
                "unexpected second line \"last_port = 5013\"",
            ),
        ];
        for (content, problem) in cases {
            std::fs::write(&path, content).unwrap();
            assert_eq!(
                allocator.last_allocated().unwrap_err().to_string(),
                format!("port state file {path} is corrupt: {problem}"),
                "{content:?}"
            );
            assert!(allocator.allocate(|_| false).is_err());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        }
    }

    #[test]
    fn atomic_write_leaves_no_temp_file_behind() {
        let dir = TempDir::new();
        let allocator = PortAllocator::new(dir.0.join("ports"), 5010..=5099);
        allocator.allocate(|_| false).unwrap();
        allocator.allocate(|_| false).unwrap();
        assert_eq!(dir.file_names(), ["ports"]);
    }

    #[test]
    fn missing_folder_is_a_write_error_naming_the_file() {
        let dir = TempDir::new();
        let allocator = PortAllocator::new(dir.0.join("no-such-dir/ports"), 5010..=5099);
        let error = allocator.allocate(|_| false).unwrap_err();
        let temp = dir
            .0
            .join(format!("no-such-dir/.ports.{}.tmp", std::process::id()));
        assert_eq!(
            error.to_string(),
            format!("cannot write port state file {temp}")
        );
        assert_eq!(dir.file_names(), Vec::<String>::new());
    }

    #[test]
    fn unreadable_state_is_a_read_error_naming_the_file() {
        let dir = TempDir::new();
        // A folder where the file should be: reading fails with something
        // other than "not found".
        let path = dir.0.join("ports");
        std::fs::create_dir(&path).unwrap();
        let error = PortAllocator::new(&path, 5010..=5099)
            .last_allocated()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("cannot read port state file {path}")
        );
    }
}
