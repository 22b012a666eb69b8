//! The per-home lock: one command that changes state at a time.

use std::fs::TryLockError;

use crate::error::Result;
use crate::home::Home;
use crate::progress::Steps;

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
                steps.note(format!(
                    "waiting for another sarge command on this home to finish (lock {})",
                    home.lock_file()
                ));
                file.file().lock()?;
                steps.restart();
            }
            Err(TryLockError::Error(source)) => return Err(source.into()),
        }
        Ok(Self { _file: file })
    }

    /// Takes the lock only if it is free right now.
    pub(crate) fn try_acquire(home: &Home) -> Result<Option<Self>> {
        let file = open(home)?;
        match file.file().try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(source.into()),
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
