//! How operations report what they are doing: typed [`Event`]s delivered
//! to a [`Progress`], so an embedder matches on what happened instead of
//! parsing text. The CLI prints each event's [`Event::step`] name, the
//! time it took and its [`Display`](std::fmt::Display) text.

use std::fmt;
use std::time::{Duration, Instant};

use camino::Utf8Path;

use crate::release::ReleaseId;
use crate::state::InstanceRecord;
use crate::ProcessName;

/// Something an operation did or saw. New kinds of events come in minor
/// versions (`#[non_exhaustive]`): match with a `_` arm.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The tarball was unpacked into `folder`.
    Unpacked {
        /// Tar entries written.
        entries: usize,
        /// Where.
        folder: &'a Utf8Path,
    },
    /// The Procfile was read: the processes that get the new code, each
    /// with its command.
    Procfile {
        /// `(process, command)` pairs.
        processes: &'a [(ProcessName, String)],
    },
    /// The app needs no virtualenv (it has no requirements.txt).
    NoVirtualenv,
    /// The virtualenv is ready at `path`: reused as it was, or installed
    /// from `dist`.
    Virtualenv {
        /// The virtualenv.
        path: &'a Utf8Path,
        /// Whether it existed already (no installer ran).
        reused: bool,
        /// The wheel folder it was installed from.
        dist: &'a Utf8Path,
        /// For one built now: compiled files taken from earlier
        /// environments, and sources compiled.
        bytecode: Option<(usize, usize)>,
    },
    /// One line the release command printed, as it came.
    ReleaseOutput {
        /// The line, without its newline.
        line: &'a str,
    },
    /// The release command ran to success.
    ReleaseCommand {
        /// The command.
        command: &'a str,
        /// Lines it printed.
        lines: usize,
    },
    /// A rollback made `release` from the parts of `from`.
    ReleaseMade {
        /// The new release.
        release: ReleaseId,
        /// The release whose code, virtualenv and env it runs.
        from: ReleaseId,
    },
    /// A new instance was started under supervisord.
    Started {
        /// The instance.
        instance: &'a InstanceRecord,
    },
    /// A new instance is ready: it answers on its port (and its health
    /// check) when `answers` is true, else supervisord runs it.
    Ready {
        /// The instance.
        instance: &'a InstanceRecord,
        /// Whether its port (and health check) answered.
        answers: bool,
    },
    /// A stable address now reaches `instance` (checked through the live
    /// haproxy worker).
    Switched {
        /// The address, as `sarge.yaml` writes it.
        address: &'a str,
        /// The instance it reaches.
        instance: &'a InstanceRecord,
    },
    /// The release is current: the commit point of a rollout.
    Committed {
        /// The release.
        release: ReleaseId,
    },
    /// The release's instances are ready and wait for `sarge switch`.
    Prepared {
        /// The release.
        release: ReleaseId,
    },
    /// A prepared release was removed, never switched to.
    Discarded {
        /// The release.
        release: ReleaseId,
    },
    /// An old instance's open requests finished, or the drain timed out.
    Drained {
        /// The instance id.
        instance: &'a str,
        /// How long it waited.
        waited: Duration,
    },
    /// The replaced instances are retired by a process of their own
    /// ([`crate::Retirement::Detached`]), which holds the home lock.
    RetiringDetached {
        /// Their ids.
        instances: &'a [String],
        /// Where that process writes what it does.
        log: &'a camino::Utf8Path,
    },
    /// An old instance was stopped and removed.
    Removed {
        /// The instance id.
        instance: &'a str,
    },
    /// A process was taken out of routing (`destroy`).
    Unrouted {
        /// The process.
        process: &'a ProcessName,
    },
    /// An instance was destroyed.
    Destroyed {
        /// The instance id.
        instance: &'a str,
    },
    /// What an interrupted command left behind was removed.
    Recovered {
        /// What: instance ids, or release ids.
        removed: &'a [String],
        /// `instances` or `releases`.
        what: &'a str,
    },
    /// Another command holds the home's lock; this one waits for it.
    WaitingForLock {
        /// The lock file.
        lock: &'a Utf8Path,
    },
    /// Something the user should know that did not stop the operation
    /// (a cleanup that failed and will be retried, a rebuilt virtualenv).
    Warning {
        /// What happened.
        message: &'a str,
    },
}

impl Event<'_> {
    /// The short name of the step this event ends (`unpack`, `ready`,
    /// `switch`, ...), or `None` for an event that is not a timed step (a
    /// line of output, a warning).
    pub fn step(&self) -> Option<&'static str> {
        Some(match self {
            Event::Unpacked { .. } => "unpack",
            Event::Procfile { .. } => "procfile",
            Event::NoVirtualenv | Event::Virtualenv { .. } => "virtualenv",
            Event::ReleaseCommand { .. } | Event::ReleaseMade { .. } => "release",
            Event::Started { .. } => "start",
            Event::Ready { .. } => "ready",
            Event::Switched { .. } => "switch",
            Event::Committed { .. } => "commit",
            Event::Prepared { .. } => "prepared",
            Event::Discarded { .. } => "discard",
            Event::Drained { .. } => "drain",
            Event::Removed { .. } => "cleanup",
            Event::RetiringDetached { .. } => "retire",
            Event::Unrouted { .. } => "unroute",
            Event::Destroyed { .. } => "destroy",
            Event::Recovered { .. } => "recover",
            Event::ReleaseOutput { .. } | Event::WaitingForLock { .. } | Event::Warning { .. } => {
                return None
            }
        })
    }
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Unpacked { entries, folder } => write!(f, "{entries} entries into {folder}"),
            Event::Procfile { processes } => {
                for (index, (process, command)) in processes.iter().enumerate() {
                    let separator = if index == 0 { "" } else { "; " };
                    write!(f, "{separator}{process}: {command}")?;
                }
                Ok(())
            }
            Event::NoVirtualenv => f.write_str("no requirements.txt, none needed"),
            Event::Virtualenv {
                path, reused: true, ..
            } => write!(f, "reused {path}"),
            Event::Virtualenv {
                path,
                dist,
                bytecode,
                ..
            } => {
                write!(f, "installed requirements.txt from {dist}")?;
                if let Some((reused, compiled)) = bytecode {
                    write!(
                        f,
                        " ({compiled} files compiled, {reused} taken from earlier environments)"
                    )?;
                }
                // The path last: scripts read it from the end of the line.
                write!(f, " into {path}")
            }
            Event::ReleaseOutput { line } => write!(f, "release | {line}"),
            Event::ReleaseCommand { command, lines } => {
                write!(f, "`{command}` ran ({lines} lines of output)")
            }
            Event::ReleaseMade { release, from } => {
                write!(f, "{release}: the code, virtualenv and env of {from}")
            }
            Event::Started { instance } => write!(
                f,
                "supervisord program {}, port {}",
                instance.id, instance.port
            ),
            Event::Ready {
                instance,
                answers: true,
            } => write!(f, "{} answers on port {}", instance.id, instance.port),
            Event::Ready { instance, .. } => {
                write!(f, "{} is running under supervisord", instance.id)
            }
            Event::Switched { address, instance } => {
                write!(f, "{address} -> 127.0.0.1:{}", instance.port)
            }
            Event::Committed { release } => write!(f, "release {release}"),
            Event::Prepared { release } => {
                write!(f, "release {release}, ready; nothing switched")
            }
            Event::Discarded { release } => write!(f, "release {release}, never switched"),
            Event::Drained { instance, waited } => {
                write!(f, "{instance} after {} ms", waited.as_millis())
            }
            Event::Removed { instance } => write!(f, "removed {instance}"),
            Event::RetiringDetached { instances, log } => {
                write!(f, "{} in the background (log: {log})", instances.join(", "))
            }
            Event::Unrouted { process } => write!(f, "{process} no longer routed"),
            Event::Destroyed { instance } => write!(f, "removed {instance}"),
            Event::Recovered { removed, what } => write!(
                f,
                "removed {what} of an interrupted deploy: {}",
                removed.join(", ")
            ),
            Event::WaitingForLock { lock } => write!(
                f,
                "waiting for another sarge command on this home to finish (lock {lock})"
            ),
            Event::Warning { message } => f.write_str(message),
        }
    }
}

/// Receives the [`Event`]s of a long operation (a deploy, a rollback).
/// Every method has a default, so an implementation overrides only what
/// it wants and new methods break nobody.
pub trait Progress {
    /// An event; for a step ([`Event::step`]), `elapsed` is how long it
    /// took since the step before, else the time since then so far.
    fn event(&mut self, event: &Event<'_>, elapsed: Duration) {
        let _ = (event, elapsed);
    }
}

/// Discards all progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}

/// Times steps and forwards events to a [`Progress`].
pub(crate) struct Steps<'a> {
    progress: &'a mut dyn Progress,
    started: Instant,
}

impl<'a> Steps<'a> {
    pub(crate) fn new(progress: &'a mut dyn Progress) -> Self {
        Self {
            progress,
            started: Instant::now(),
        }
    }

    /// Reports `event`; a step's clock restarts after it.
    pub(crate) fn report(&mut self, event: Event<'_>) {
        let now = Instant::now();
        self.progress
            .event(&event, now.duration_since(self.started));
        if event.step().is_some() {
            self.started = now;
        }
    }

    /// Reports a [`Event::Warning`].
    pub(crate) fn warn(&mut self, message: impl AsRef<str>) {
        self.report(Event::Warning {
            message: message.as_ref(),
        });
    }

    /// Restarts the clock without reporting (time spent elsewhere).
    pub(crate) fn restart(&mut self) {
        self.started = Instant::now();
    }
}
