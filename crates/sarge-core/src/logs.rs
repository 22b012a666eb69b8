//! Reading what programs wrote to their logs, for error messages.

use std::io::Read;

use camino::Utf8Path;

/// The last lines of a log file, for errors about an instance that failed.
pub(crate) fn log_tail(path: &Utf8Path) -> String {
    use std::io::{Seek, SeekFrom};
    const TAIL_BYTES: u64 = 4096;
    const TAIL_LINES: usize = 15;
    let Ok(mut file) = std::fs::File::open(path) else {
        return "(no log written)".to_owned();
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    if tail.trim().is_empty() {
        "(log is empty)".to_owned()
    } else {
        tail
    }
}
