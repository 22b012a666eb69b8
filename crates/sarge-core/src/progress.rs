//! How operations report what they are doing.

use std::time::{Duration, Instant};

/// Receives progress of a long operation (a deploy), step by step. The CLI
/// prints it to stderr; embedders can log it or ignore it.
pub trait Progress {
    /// A step finished: its name, a short detail, and how long it took.
    fn step(&mut self, step: &str, detail: &str, elapsed: Duration);
    /// A note that is not a timed step (waiting for a lock, a warning).
    fn note(&mut self, message: &str);
}

/// Discards all progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn step(&mut self, _: &str, _: &str, _: Duration) {}
    fn note(&mut self, _: &str) {}
}

/// Times steps and forwards them to a [`Progress`].
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

    /// Reports the step that ran since the previous report.
    pub(crate) fn done(&mut self, step: &str, detail: impl AsRef<str>) {
        let now = Instant::now();
        self.progress
            .step(step, detail.as_ref(), now.duration_since(self.started));
        self.started = now;
    }

    pub(crate) fn note(&mut self, message: impl AsRef<str>) {
        self.progress.note(message.as_ref());
    }

    /// Restarts the clock without reporting (time spent elsewhere).
    pub(crate) fn restart(&mut self) {
        self.started = Instant::now();
    }
}
