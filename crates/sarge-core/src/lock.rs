//! The per-home lock: one command that changes state at a time.

use std::fs::TryLockError;

use crate::error::Result;
use crate::home::Home;
use crate::progress::{Event, Steps};

/// Held while a command changes state; released on drop (or when the
/// process dies, so a killed deploy never leaves the home locked).
pub(crate) struct HomeLock {
    _file: fs_err::File,
}

impl HomeLock {
    /// Takes the lock, waiting (and saying so) while another command holds it.
    pub(crate) fn acquire(home: &Home, steps: &mut Steps<'_>) -> Result<Self> {
        let file = open(home)?;
        match file.file().try_lock() {
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
        Ok(Self { _file: file })
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

    /// Removes the mark once the deploy holds the home lock.
    pub(crate) fn clear(self) -> Result<()> {
        let path = self.file.path().to_owned();
        drop(self.file);
        Ok(fs_err::remove_file(path)?)
    }
}
