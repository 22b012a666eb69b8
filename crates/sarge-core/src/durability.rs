//! When the files a rollout writes reach the disk.
//!
//! Every state file is written atomically (temp file, rename), and its data
//! is flushed with `fdatasync` before anything may depend on it surviving
//! a crash. A flush costs from half a millisecond to several on a busy disk,
//! and a rollout writes half a dozen files before its new instances start:
//! the release, each instance's record, env, launcher and supervisord
//! program. None of them matters after a crash until the commit names the
//! instances in `current.json` (before it, they are leftovers the next
//! command removes). So inside a [`DeferredSyncs`] scope those writes leave
//! their data to the page cache, and the flushes run on a thread while the
//! apps start up; the rollout waits for them before its commit.

use std::cell::{Cell, RefCell};
use std::thread::JoinHandle;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Result;

thread_local! {
    /// Paths written since the outermost scope opened, to flush; `None`
    /// when no scope is open (writes flush at once).
    static DEFERRED: RefCell<Option<Vec<Utf8PathBuf>>> = const { RefCell::new(None) };
    /// Whether a [`FlushNow`] is open.
    static FLUSH_NOW: Cell<bool> = const { Cell::new(false) };
}

/// While alive, [`write_atomic`](crate::state::write_atomic) on this
/// thread defers its flush. Scopes nest; the outermost one, when dropped,
/// flushes whatever is still deferred.
pub(crate) struct DeferredSyncs {
    outermost: bool,
}

impl DeferredSyncs {
    pub(crate) fn open() -> Self {
        let outermost = DEFERRED.with(|deferred| {
            let mut deferred = deferred.borrow_mut();
            let outermost = deferred.is_none();
            if outermost {
                *deferred = Some(Vec::new());
            }
            outermost
        });
        Self { outermost }
    }
}

impl Drop for DeferredSyncs {
    fn drop(&mut self) {
        if self.outermost {
            let paths = DEFERRED.with(|deferred| deferred.borrow_mut().take());
            // A scope left early (an error, a panic): its files are
            // leftovers, but flush them anyway rather than lose track.
            let _ = sync_paths(paths.unwrap_or_default());
        }
    }
}

/// Whether a write to `path` on this thread should skip its flush: yes
/// inside a scope, which then owns the flush.
pub(crate) fn defer(path: &Utf8Path) -> bool {
    if FLUSH_NOW.with(Cell::get) {
        return false;
    }
    DEFERRED.with(|deferred| match deferred.borrow_mut().as_mut() {
        Some(paths) => {
            paths.push(path.to_owned());
            true
        }
        None => false,
    })
}

/// While alive, writes on this thread flush at once, in a deferring scope
/// or not: for the commit point, which must be on disk before anything
/// that relies on it happens.
pub(crate) struct FlushNow {
    was: bool,
}

impl FlushNow {
    pub(crate) fn open() -> Self {
        Self {
            was: FLUSH_NOW.with(|now| now.replace(true)),
        }
    }
}

impl Drop for FlushNow {
    fn drop(&mut self) {
        FLUSH_NOW.with(|now| now.set(self.was));
    }
}

/// Flushes on a thread the files deferred so far on this one.
pub(crate) fn sync_in_background() -> Syncing {
    let paths = take_deferred();
    Syncing {
        thread: (!paths.is_empty()).then(|| std::thread::spawn(move || sync_paths(paths))),
    }
}

/// Flushes running on a thread; see [`sync_in_background`].
#[must_use = "the files are not known to be on disk until `wait` returns"]
pub(crate) struct Syncing {
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Syncing {
    /// Returns once the thread's files and every file deferred on this
    /// thread since are on disk.
    pub(crate) fn wait(self) -> Result<()> {
        if let Some(thread) = self.thread {
            match thread.join() {
                Ok(result) => result?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        let rest = take_deferred();
        Ok(sync_paths(rest)?)
    }
}

/// The paths deferred so far on this thread, which are then no longer.
fn take_deferred() -> Vec<Utf8PathBuf> {
    DEFERRED.with(|deferred| {
        deferred
            .borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    })
}

fn sync_paths(paths: Vec<Utf8PathBuf>) -> std::io::Result<()> {
    for path in paths {
        match fs_err::File::open(&path) {
            Ok(file) => file.sync_data()?,
            // Replaced or removed since: whatever replaced it flushed itself.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_in_a_scope_are_deferred_and_flushed_by_wait() {
        let dir = std::env::temp_dir().join(format!("sarge-durability-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.join("state.json")).unwrap();
        assert!(!defer(&path), "no scope: flush at once");
        {
            let _scope = DeferredSyncs::open();
            let _now = FlushNow::open();
            assert!(!defer(&path), "the commit point flushes at once in a scope");
        }
        {
            let _outer = DeferredSyncs::open();
            {
                let _inner = DeferredSyncs::open();
                crate::state::write_atomic(&path, b"{}", 0o600).unwrap();
            }
            // The inner scope's end flushes nothing: the outer one owns it.
            let pending = DEFERRED.with(|deferred| deferred.borrow().clone().unwrap());
            assert_eq!(pending, vec![path.clone()]);
            sync_in_background().wait().unwrap();
            let pending = DEFERRED.with(|deferred| deferred.borrow().clone().unwrap());
            assert!(pending.is_empty());
        }
        assert!(DEFERRED.with(|deferred| deferred.borrow().is_none()));
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
