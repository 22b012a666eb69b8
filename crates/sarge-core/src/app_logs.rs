//! `sarge logs`: the output of the app's instances, each line prefixed
//! with where it came from (`web.1 | ...`, as honcho and heroku print it),
//! and a follower that keeps the stream going across deploys, restarts and
//! rollbacks: when an instance is replaced, the new one's output continues
//! in the same stream. Reads only.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

use camino::Utf8PathBuf;

use crate::error::{Error, Result};
use crate::release::{ReleaseId, ServedBy};
use crate::state::CurrentInstances;
use crate::Sarge;

/// One line of an instance's output.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogLine {
    /// Where it came from: `web.1`.
    pub source: String,
    /// The instance id.
    pub instance: String,
    /// The line, without its newline.
    pub text: String,
}

/// Follows the logs of the current instances of some processes; see
/// [`Sarge::follow_logs`]. Each [`LogFollower::poll`] returns what was
/// written since the last one.
#[derive(Debug)]
pub struct LogFollower<'a> {
    sarge: &'a Sarge,
    target: Option<String>,
    /// Per instance followed: its source name, log file and read offset.
    followed: BTreeMap<String, (String, Utf8PathBuf, u64)>,
    /// Bytes of a line not yet ended, per instance.
    partial: BTreeMap<String, Vec<u8>>,
}

/// Most bytes kept of one log line (a line longer than that is cut).
const MAX_LINE: usize = 16 * 1024;

impl Sarge {
    /// The last `lines` lines of each current instance's output, for every
    /// process (or the process or instance `target` names). Reads only.
    pub fn logs(&self, target: Option<&str>, lines: usize) -> Result<Vec<LogLine>> {
        let mut out = Vec::new();
        for (id, source) in self.log_sources(target)? {
            out.extend(self.last_lines(&id, &source, lines)?.0);
        }
        Ok(out)
    }

    /// The last `lines` lines of each instance that served release
    /// `release` (of the process or instance `target` names), while the
    /// release is kept: the logs of a release rolled back from, say, after
    /// its instances are gone. Reads only.
    pub fn release_logs(
        &self,
        release: ReleaseId,
        target: Option<&str>,
        lines: usize,
    ) -> Result<Vec<LogLine>> {
        CurrentInstances::load(&self.home)?.check_kept(release)?;
        let served = ServedBy::load(&self.home, release)?;
        let mut out = Vec::new();
        let mut matched = false;
        for (process, ids) in &served.processes {
            for (index, id) in ids.iter().enumerate() {
                let label = format!("{process}.{}", index + 1);
                if target.is_none_or(|target| target == process || target == id || target == label)
                {
                    matched = true;
                    out.extend(self.last_lines(id, &label, lines)?.0);
                }
            }
        }
        if let (Some(target), false) = (target, matched) {
            return Err(Error::UnknownTarget {
                target: crate::error::excerpt(target),
                known: served
                    .processes
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(out)
    }

    /// The last `lines` lines of instance `id`'s log as `source`, and the
    /// offset just after them.
    fn last_lines(&self, id: &str, source: &str, lines: usize) -> Result<(Vec<LogLine>, u64)> {
        let (text, end) = tail(&self.home.program_log(id), lines)?;
        let lines = text
            .into_iter()
            .map(|text| LogLine {
                source: source.to_owned(),
                instance: id.to_owned(),
                text,
            })
            .collect();
        Ok((lines, end))
    }

    /// The last `lines` lines, as [`Sarge::logs`] gives them, and a
    /// follower of what comes after them: nothing is lost or printed
    /// twice in between. Reads only.
    pub fn follow_logs(
        &self,
        target: Option<&str>,
        lines: usize,
    ) -> Result<(Vec<LogLine>, LogFollower<'_>)> {
        let mut follower = LogFollower {
            sarge: self,
            target: target.map(str::to_owned),
            followed: BTreeMap::new(),
            partial: BTreeMap::new(),
        };
        let mut out = Vec::new();
        for (id, source) in self.log_sources(target)? {
            let (last, end) = self.last_lines(&id, &source, lines)?;
            out.extend(last);
            let path = self.home.program_log(&id);
            follower.followed.insert(id, (source, path, end));
        }
        Ok((out, follower))
    }

    /// The current instances whose logs `target` asks for, with their
    /// source names. An unknown target is an error naming what exists.
    fn log_sources(&self, target: Option<&str>) -> Result<Vec<(String, String)>> {
        let current = CurrentInstances::load(&self.home)?;
        let mut sources = Vec::new();
        for (process, instances) in &current.processes {
            for (index, instance) in instances.iter().enumerate() {
                let label = format!("{process}.{}", index + 1);
                let matches = match target {
                    None => true,
                    Some(target) => target == process || target == instance.id || target == label,
                };
                if matches {
                    sources.push((instance.id.clone(), label));
                }
            }
        }
        if let (Some(target), true) = (target, sources.is_empty()) {
            return Err(Error::UnknownTarget {
                target: crate::error::excerpt(target),
                known: current
                    .processes
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(sources)
    }
}

impl LogFollower<'_> {
    /// What the followed instances wrote since the last call. An instance
    /// that became current meanwhile (a deploy replaced one) is followed
    /// from its first line; a replaced one is read to its end, then left.
    pub fn poll(&mut self) -> Result<Vec<LogLine>> {
        // Tolerant of an unknown target here: a process can go and come
        // back while a user follows.
        if let Ok(sources) = self.sarge.log_sources(self.target.as_deref()) {
            let current: Vec<String> = sources.iter().map(|(id, _)| id.clone()).collect();
            for (id, source) in sources {
                let path = self.sarge.home.program_log(&id);
                self.followed.entry(id).or_insert((source, path, 0));
            }
            let lines = self.read_new()?;
            self.followed.retain(|id, _| current.contains(id));
            self.partial.retain(|id, _| current.contains(id));
            return Ok(lines);
        }
        self.read_new()
    }

    fn read_new(&mut self) -> Result<Vec<LogLine>> {
        let mut lines = Vec::new();
        for (id, (source, path, offset)) in &mut self.followed {
            let Ok(mut file) = std::fs::File::open(&*path) else {
                continue;
            };
            let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
            if length < *offset {
                // Rotated: the file starts again.
                *offset = 0;
            }
            file.seek(SeekFrom::Start(*offset))?;
            let mut bytes = Vec::new();
            file.take(4 * 1024 * 1024).read_to_end(&mut bytes)?;
            *offset += bytes.len() as u64;
            let partial = self.partial.entry(id.clone()).or_default();
            partial.extend_from_slice(&bytes);
            while let Some(end) = partial.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                let text = &line[..line.len() - 1];
                let text = &text[..text.len().min(MAX_LINE)];
                lines.push(LogLine {
                    source: source.clone(),
                    instance: id.clone(),
                    text: String::from_utf8_lossy(text).into_owned(),
                });
            }
            if partial.len() > MAX_LINE {
                partial.truncate(MAX_LINE);
            }
        }
        Ok(lines)
    }
}

/// The last `lines` whole lines of the file at `path` (none if it is
/// missing), and the offset just after the last of them.
fn tail(path: &camino::Utf8Path, lines: usize) -> Result<(Vec<String>, u64)> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok((Vec::new(), 0));
    };
    let length = file.metadata()?.len();
    // Enough for `lines` lines of ordinary length; a longer file is read
    // from that far before its end.
    let window = (lines as u64 + 1).saturating_mul(512).max(64 * 1024);
    let start = length.saturating_sub(window);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    // A line still being written is left for the follower.
    let whole = bytes
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |end| end + 1);
    bytes.truncate(whole);
    let end = start + whole as u64;
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    if start > 0 && !all.is_empty() {
        // The first line read may be the end of a longer one.
        all.remove(0);
    }
    let last = all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| (*line).to_owned())
        .collect();
    Ok((last, end))
}
