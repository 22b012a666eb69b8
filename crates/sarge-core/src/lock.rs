//! The per-home lock: one command that changes state at a time.

use std::fs::TryLockError;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::home::Home;
use crate::progress::{Event, Steps};

/// Held while a command changes state; released on drop (or when the
/// process dies, so a killed deploy never leaves the home locked).
pub(crate) struct HomeLock {
    file: fs_err::File,
}

impl HomeLock {
    /// Takes the lock, waiting (and saying so) while another command holds it.
    pub(crate) fn acquire(home: &Home, steps: &mut Steps<'_>) -> Result<Self> {
        let file = open(home)?;
        match try_lock_for(&file, QUIET_WAIT) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                steps.report(Event::WaitingForLock {
                    lock: &home.lock_file(),
                });
                file.file().lock()?;
                steps.restart();
            }
            Err(TryLockError::Error(source)) => return Err(source.into()),
        }
        Ok(Self { file })
    }

    /// The lock a command handed to this process as its standard input
    /// (see [`crate::Retirement::Detached`]), or else the lock taken as
    /// [`HomeLock::acquire`] takes it.
    pub(crate) fn handed_over_or_acquire(home: &Home, steps: &mut Steps<'_>) -> Result<Self> {
        match handed_over(home) {
            Some(file) => Ok(Self { file }),
            None => Self::acquire(home, steps),
        }
    }

    /// An open file sharing this lock, for a child process's standard
    /// input: the lock is held until the child exits too.
    pub(crate) fn share(&self) -> Result<std::fs::File> {
        Ok(self.file.file().try_clone()?)
    }
}

/// The home's lock file as this process's standard input, with the lock
/// held through it.
fn handed_over(home: &Home) -> Option<fs_err::File> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned().ok()?);
    let given = stdin.metadata().ok()?;
    let lock = std::fs::metadata(home.lock_file()).ok()?;
    if (given.dev(), given.ino()) != (lock.dev(), lock.ino()) {
        return None;
    }
    // Locked through this open file (inherited), the lock is granted again
    // at once; locked by another command, it is not the handed-over one.
    stdin.try_lock().ok()?;
    Some(fs_err::File::from_parts(stdin, home.lock_file()))
}

/// How long a command waits for the lock before it says it is waiting:
/// the retirement a deploy leaves running usually ends well within it.
const QUIET_WAIT: Duration = Duration::from_millis(100);

/// `try_lock`, tried again every millisecond for up to `limit`.
fn try_lock_for(file: &fs_err::File, limit: Duration) -> Result<(), TryLockError> {
    let started = Instant::now();
    loop {
        match file.file().try_lock() {
            Err(TryLockError::WouldBlock) if started.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

fn open(home: &Home) -> Result<fs_err::File> {
    Ok(fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.lock_file())?)
}

/// Marks an instance folder whose tarball is still being read: a deploy
/// reads its upload before it takes the [`HomeLock`], so that a slow or
/// stalled client never blocks other commands, and their leftover cleanup
/// must leave that folder alone. The mark is a locked file in the folder;
/// a deploy killed mid-upload releases the lock with its death, and the
/// folder becomes an ordinary leftover.
pub(crate) struct UploadMark {
    file: fs_err::File,
}

impl UploadMark {
    const NAME: &'static str = ".uploading";

    /// Marks `instance_dir`, which the caller has just created.
    pub(crate) fn new(instance_dir: &camino::Utf8Path) -> Result<Self> {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(instance_dir.join(Self::NAME))?;
        file.file().lock()?;
        Ok(Self { file })
    }

    /// Whether a live deploy is still reading the upload of `instance_dir`.
    pub(crate) fn is_held(instance_dir: &camino::Utf8Path) -> bool {
        match std::fs::File::open(instance_dir.join(Self::NAME)) {
            Ok(file) => matches!(file.try_lock(), Err(TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    /// Whether `dir` may be an upload folder a deploy has just made and not
    /// yet marked: it has no mark and is less than a minute old. A deploy
    /// claims its folder without the home lock, so the command that holds
    /// the lock can see the folder in the instant before the mark is in it;
    /// one killed in that instant leaves a folder the first command a
    /// minute later removes.
    pub(crate) fn is_being_claimed(dir: &camino::Utf8Path) -> bool {
        const CLAIM_TIME: std::time::Duration = std::time::Duration::from_secs(60);
        if dir.join(Self::NAME).exists() {
            return false;
        }
        std::fs::metadata(dir)
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| modified.elapsed().unwrap_or_default() < CLAIM_TIME)
    }

    /// Removes the mark, once the deploy holds the home lock and has moved
    /// the folder it marked to `dir`: moved while marked, an upload folder
    /// is never without its mark (a folder without one is spared for a
    /// minute as one being claimed, so a deploy killed between the two
    /// would leave it that long).
    pub(crate) fn clear_in(self, dir: &camino::Utf8Path) -> Result<()> {
        drop(self.file);
        Ok(fs_err::remove_file(dir.join(Self::NAME))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmarked_upload_folder_is_spared_only_while_it_can_be_being_claimed() {
        let dir = std::env::temp_dir().join(format!("sarge-claim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = camino::Utf8PathBuf::from_path_buf(dir).unwrap();
        assert!(
            UploadMark::is_being_claimed(&dir),
            "a new folder, no mark yet"
        );
        let mark = UploadMark::new(&dir).unwrap();
        assert!(UploadMark::is_held(&dir));
        assert!(!UploadMark::is_being_claimed(&dir), "marked: the lock says");
        drop(mark);
        assert!(!UploadMark::is_held(&dir), "its deploy is gone");
        std::fs::remove_file(dir.join(UploadMark::NAME)).unwrap();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        assert!(!UploadMark::is_being_claimed(&dir), "unmarked for minutes");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
