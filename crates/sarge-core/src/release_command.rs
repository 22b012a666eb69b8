//! Runs the Procfile's `release:` command once per deploy, after the
//! install and before any instance of the new release starts (database
//! migrations, collecting static files).
//!
//! The command runs as `bash -c COMMAND` in the app folder, in its own
//! process group, with the environment an instance would get minus `PORT`.
//! Its stdout and stderr share one pipe, so their lines reach the caller
//! and the output file in the order they were written. Whatever happens,
//! nothing of the command outlives [`ReleaseCommand::run`] in its process
//! group: a timeout kills the whole group, and so does the end of the
//! command itself, because a background process left behind
//! (`(sleep 100 &)`) would hold the pipe open and the deploy with it.
//!
//! The pipe is read without blocking and polled: a blocking reader would
//! need a thread that stays stuck in `read` for as long as a process that
//! left the group (`setsid`) keeps the pipe open.
//!
//! A deploy that is itself killed (SIGKILL, a lost SSH session) cannot kill
//! the group, and the command lives on: it has a process group of its own,
//! so nothing reaches it. So the group is recorded in
//! `var/state/release-command.json` while the command runs, and the next
//! command's recovery kills it ([`kill_left_behind`]). Only the instant
//! between the spawn and the record's write is not covered.
//! `PR_SET_PDEATHSIG` would need `unsafe` (`pre_exec`), which sarge
//! forbids, and would only reach the first process, not what it started.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;

use fs_err::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use serde::{Deserialize, Serialize};

use crate::error::{excerpt, Error, Result};
use crate::home::Home;
use crate::release::ReleaseId;
use crate::state::{read_json, write_json};

/// Set on the release command, and so inherited by everything it starts,
/// to the release id: how the next sarge command tells that a recorded
/// process group is still the release command's before it kills it, and
/// not a group whose id the system has since given to something else.
pub(crate) const MARK_VARIABLE: &str = "SARGE_RELEASE_COMMAND";

/// How long [`kill_left_behind`] waits for a killed group to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Variables taken from sarge's own environment, as a process under
/// supervisord would find them. Anything else sarge was run with (an SSH
/// agent socket, `SARGE_HOME`, a developer's `PYTHONPATH`) stays out, so
/// the command behaves the same whoever runs the deploy.
const INHERITED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// `PATH` when sarge itself runs without one.
const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Longest line kept in memory; the rest of a longer line still goes to the
/// output file, but the caller and the error message see it cut.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// Lines of output an error message shows.
const TAIL_LINES: usize = 15;

/// How often the pipe and the child are looked at while nothing arrives:
/// short enough that output looks live, long enough to cost nothing.
const POLL: Duration = Duration::from_millis(10);

/// How long to wait for the end of the output once the command has exited
/// and its group has been killed. Only a process that left the group
/// (`setsid`, a double fork into a new session) can keep the pipe open past
/// that; its output is then no longer read.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from the pipe at a time.
const CHUNK: usize = 64 * 1024;

/// One run of the release command; see the module docs.
pub(crate) struct ReleaseCommand<'a> {
    /// The Procfile's `release:` command, run by `bash -c`.
    pub command: &'a str,
    /// The working directory: the release's app folder.
    pub app_dir: &'a Utf8Path,
    /// The release's environment (the config's `env`); `PORT` is dropped
    /// if present, since the command serves nothing.
    pub env: &'a BTreeMap<String, String>,
    /// The virtualenv's `bin` folder: put first on `PATH`, its parent set
    /// as `VIRTUAL_ENV`.
    pub venv_bin: Option<&'a Utf8Path>,
    /// How long the command may run (`release_timeout`).
    pub timeout: Duration,
    /// Where the whole output is kept, byte for byte (mode 0600: a
    /// migration may print secrets).
    pub output_file: &'a Utf8Path,
    /// The release it runs for: the value of [`MARK_VARIABLE`].
    pub release: ReleaseId,
    /// Where its process group is recorded while it runs
    /// ([`group_file`]), for [`kill_left_behind`].
    pub group_file: &'a Utf8Path,
}

/// The file that names the process group of a running release command.
pub(crate) fn group_file(home: &Home) -> Utf8PathBuf {
    home.state_dir().join("release-command.json")
}

/// What the group file holds.
#[derive(Debug, Serialize, Deserialize)]
struct RecordedGroup {
    /// The release the command ran for.
    release: ReleaseId,
    /// Its process group id (the pid of `bash`).
    group: u32,
}

/// A release command that [`kill_left_behind`] killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeftBehind {
    /// The release it ran for.
    pub release: ReleaseId,
    /// How many of its processes were running.
    pub processes: usize,
}

/// Kills the release command of a deploy that was killed while it ran,
/// with every process of its group, waits for them to be gone, and
/// removes the record. `None` if no release command was left running. The
/// caller holds the home lock, so no deploy's own command is running.
///
/// A group is killed only if one of its processes still carries
/// [`MARK_VARIABLE`] with the recorded release: once every process of the
/// group has exited, the system may give its id to an unrelated group.
pub(crate) fn kill_left_behind(group_file: &Utf8Path) -> Result<Option<LeftBehind>> {
    if !group_file.exists() {
        return Ok(None);
    }
    let recorded: RecordedGroup = match read_json(group_file) {
        Ok(recorded) => recorded,
        // Written atomically, so never half; one that is not sarge's names
        // nothing sarge may kill.
        Err(Error::StateFile { .. }) => {
            fs_err::remove_file(group_file)?;
            return Ok(None);
        }
        Err(other) => return Err(other),
    };
    let mark = format!("{MARK_VARIABLE}={}", recorded.release);
    let members = group_members(recorded.group);
    let left = members
        .iter()
        .any(|pid| carries(*pid, &mark))
        .then_some(LeftBehind {
            release: recorded.release,
            processes: members.len(),
        });
    if left.is_some() {
        if let Some(group) = i32::try_from(recorded.group).ok().and_then(Pid::from_raw) {
            // ESRCH: it ended meanwhile, which is what was wanted.
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
        }
        let started = Instant::now();
        while !group_members(recorded.group).is_empty() && started.elapsed() < KILL_WAIT {
            std::thread::sleep(POLL);
        }
    }
    fs_err::remove_file(group_file)?;
    Ok(left)
}

/// The live (not zombie) processes whose process group is `group`.
fn group_members(group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // The command name is in parentheses and may hold anything:
            // the fields that matter come after the last `)`.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, fields)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = fields.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|pgrp| pgrp.parse::<u32>().ok());
            state != Some("Z") && pgrp == Some(group)
        })
        .collect()
}

/// Whether process `pid` has `entry` (`NAME=value`) in its environment.
fn carries(pid: u32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        environ
            .split(|byte| *byte == 0)
            .any(|variable| variable == entry.as_bytes())
    })
}

/// What a successful release command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReleaseRan {
    /// From the start until its output was read to the end.
    pub elapsed: Duration,
    /// Lines of output it printed.
    pub lines: usize,
}

impl ReleaseCommand<'_> {
    /// Runs `bash -c COMMAND`; each line of stdout and stderr (interleaved
    /// as they come, lossy UTF-8, cut past 8 KiB) goes to `on_line` as it
    /// arrives, and every byte into `output_file`.
    ///
    /// Fails if the command exits non-zero, dies by a signal or runs past
    /// the timeout; the error shows its last lines.
    pub(crate) fn run(&self, on_line: &mut dyn FnMut(&str)) -> Result<ReleaseRan> {
        let mut output = fs_err::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.output_file)?;
        // `mode` only applies when the file is created; a file left by an
        // earlier attempt keeps its bits unless they are set again.
        output.set_permissions(std::fs::Permissions::from_mode(0o600))?;

        let (mut reader, writer) = io::pipe().map_err(|e| self.spawn_error(e))?;
        rustix::fs::fcntl_setfl(&reader, rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| self.spawn_error(e.into()))?;
        let mut command = self.command();
        command
            .stdout(writer.try_clone().map_err(|e| self.spawn_error(e))?)
            .stderr(writer);
        let started = Instant::now();
        let child = command.spawn().map_err(|e| self.spawn_error(e))?;
        // The command keeps its copies of the write end; unless they are
        // closed here, the pipe never reports its end.
        drop(command);
        let mut running = Running::new(child, self.group_file);
        // Should sarge be killed from here on, the next command finds the
        // group and kills it. Without the record, the command is killed now.
        write_json(
            self.group_file,
            &RecordedGroup {
                release: self.release,
                group: running.child.id(),
            },
            crate::privacy::PRIVATE_FILE,
        )?;

        let mut lines = Lines::default();
        let mut buffer = vec![0; CHUNK];
        let deadline = started + self.timeout;
        let mut pipe_open = true;
        let mut timed_out = false;
        // Set once the command is over: its status, and when to stop
        // waiting for the rest of its output.
        let mut ended: Option<(ExitStatus, Instant)> = None;
        let status = loop {
            // The clocks below are looked at after every read, not only
            // when the pipe is empty: a command that writes faster than
            // this loop reads (`yes`) must still meet its timeout.
            let mut got_output = false;
            if pipe_open {
                match reader.read(&mut buffer) {
                    // Every writer is gone; a command that closed its
                    // output may still be running, so keep watching it.
                    Ok(0) => pipe_open = false,
                    Ok(read) => {
                        output.write_all(&buffer[..read])?;
                        lines.push(&buffer[..read], on_line);
                        got_output = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.output_error(e)),
                }
            }
            let now = Instant::now();
            match ended {
                Some((status, give_up)) => {
                    if !pipe_open || now >= give_up {
                        break status;
                    }
                }
                None => {
                    if let Some(status) = running.exit_and_kill_group()? {
                        ended = Some((status, now + DRAIN_GRACE));
                        continue;
                    }
                    if now >= deadline {
                        timed_out = true;
                        let status = running.kill_group_and_reap()?;
                        // What it wrote before the kill is still in the
                        // pipe, and says where it hung.
                        ended = Some((status, now + DRAIN_GRACE));
                        continue;
                    }
                }
            }
            if !got_output {
                std::thread::sleep(POLL);
            }
        };
        lines.finish(on_line);
        output.flush()?;
        let elapsed = started.elapsed();

        if timed_out {
            return Err(Error::ReleaseCommandTimedOut {
                command: excerpt(self.command),
                seconds: self.timeout.as_secs_f64(),
                output_file: self.output_file.to_owned(),
                last_lines: lines.tail(),
            });
        }
        if !status.success() {
            return Err(Error::ReleaseCommandFailed {
                command: excerpt(self.command),
                status: describe_status(status),
                output_file: self.output_file.to_owned(),
                last_lines: lines.tail(),
            });
        }
        Ok(ReleaseRan {
            elapsed,
            lines: lines.count,
        })
    }

    /// `bash -c COMMAND` with the release's environment, in its own process
    /// group so that it and everything it starts can be killed at once.
    fn command(&self) -> Command {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(self.command)
            .current_dir(self.app_dir)
            .env_clear()
            .envs(self.environment())
            .stdin(Stdio::null())
            .process_group(0);
        command
    }

    /// The environment of the command: [`INHERITED`], the release's env,
    /// then the virtualenv, as the launcher builds it for an instance.
    fn environment(&self) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = INHERITED
            .iter()
            .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
            .collect();
        env.entry("PATH".to_owned())
            .or_insert_with(|| FALLBACK_PATH.to_owned());
        // Python buffers a pipe in 8 KiB blocks: without this a migration's
        // progress arrives all at once at the end, and a killed one loses
        // exactly the lines that say where it hung. The release env may
        // still turn it off.
        env.insert("PYTHONUNBUFFERED".to_owned(), "1".to_owned());
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        // Instances get a port; the release command serves nothing.
        env.remove("PORT");
        // After the release env, which must not be able to unset it.
        env.insert(MARK_VARIABLE.to_owned(), self.release.to_string());
        if let Some(bin) = self.venv_bin {
            let venv = bin.parent().unwrap_or(bin);
            env.insert("VIRTUAL_ENV".to_owned(), venv.to_string());
            let path = env.get("PATH").map(String::as_str).unwrap_or_default();
            let path = if path.is_empty() {
                bin.to_string()
            } else {
                format!("{bin}:{path}")
            };
            env.insert("PATH".to_owned(), path);
        }
        env
    }

    /// std cannot tell a missing `bash` from a missing working directory
    /// (both are ENOENT), so the message names both.
    fn spawn_error(&self, source: io::Error) -> Error {
        Error::Spawn {
            program: format!(
                "the release command `{}` (bash -c, in {})",
                excerpt(self.command),
                self.app_dir
            ),
            source,
        }
    }

    fn output_error(&self, source: io::Error) -> Error {
        Error::Spawn {
            program: format!(
                "the release command `{}` (reading its output failed)",
                excerpt(self.command)
            ),
            source,
        }
    }
}

/// The running command. Dropping it before it was reaped (an error while
/// copying its output) kills its group and reaps it, so no error path
/// leaves a migration running behind the deploy's back. Once reaped, the
/// record of its group is removed.
struct Running<'a> {
    child: Child,
    group: Pid,
    group_file: &'a Utf8Path,
    reaped: bool,
}

impl Running<'_> {
    fn new(child: Child, group_file: &Utf8Path) -> Running<'_> {
        Running {
            group: Pid::from_child(&child),
            child,
            group_file,
            reaped: false,
        }
    }

    /// The group is gone: its record goes too. One left behind (this
    /// fails, or sarge is killed first) names no marked process, and the
    /// next command only removes it.
    fn forget_group(&self) {
        let _ = fs_err::remove_file(self.group_file);
    }

    /// `None` while the command runs. Once it has exited: kills what is
    /// left of its group, then reaps it. The order matters: until reaped,
    /// the exited command keeps its pid, so the group id cannot have been
    /// handed to an unrelated process when the kill is sent.
    fn exit_and_kill_group(&mut self) -> Result<Option<ExitStatus>> {
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        match rustix::process::waitid(WaitId::Pid(self.group), options) {
            Ok(Some(_)) => self.kill_group_and_reap().map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(Error::Spawn {
                program: "waitid on the release command".to_owned(),
                source: e.into(),
            }),
        }
    }

    /// Sends SIGKILL to the whole group (the command too, unless it has
    /// exited already) and reaps the command.
    fn kill_group_and_reap(&mut self) -> Result<ExitStatus> {
        // ESRCH: the group is already empty, which is what was wanted.
        let _ = rustix::process::kill_process_group(self.group, Signal::KILL);
        let status = self.child.wait().map_err(|source| Error::Spawn {
            program: "waiting for the release command".to_owned(),
            source,
        })?;
        self.reaped = true;
        self.forget_group();
        Ok(status)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = rustix::process::kill_process_group(self.group, Signal::KILL);
            let _ = self.child.wait();
            self.forget_group();
        }
    }
}

/// Splits the byte stream into lines with bounded memory: a line longer
/// than [`MAX_LINE_BYTES`] keeps its start and a count of the rest.
#[derive(Default)]
struct Lines {
    /// The line so far, at most [`MAX_LINE_BYTES`].
    current: Vec<u8>,
    /// Bytes of the current line beyond `current`.
    dropped: usize,
    /// Lines delivered.
    count: usize,
    /// The last [`TAIL_LINES`] lines, fit for an error message.
    tail: VecDeque<String>,
}

impl Lines {
    fn push(&mut self, mut bytes: &[u8], on_line: &mut dyn FnMut(&str)) {
        while !bytes.is_empty() {
            let (part, rest, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => (&bytes[..end], &bytes[end + 1..], true),
                None => (bytes, &[][..], false),
            };
            let room = MAX_LINE_BYTES - self.current.len();
            let kept = part.len().min(room);
            self.current.extend_from_slice(&part[..kept]);
            self.dropped += part.len() - kept;
            if ended {
                self.emit(on_line);
            }
            bytes = rest;
        }
    }

    /// Delivers a last line that had no line break.
    fn finish(&mut self, on_line: &mut dyn FnMut(&str)) {
        if !self.current.is_empty() || self.dropped > 0 {
            self.emit(on_line);
        }
    }

    fn emit(&mut self, on_line: &mut dyn FnMut(&str)) {
        let bytes = self.current.strip_suffix(b"\r").unwrap_or(&self.current);
        let mut line = String::from_utf8_lossy(bytes).into_owned();
        if self.dropped > 0 {
            line.push_str(&format!(
                " [line cut: {} more bytes are in the output file]",
                self.dropped
            ));
        }
        on_line(&line);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(excerpt(&line));
        self.current.clear();
        self.dropped = 0;
        self.count += 1;
    }

    /// The last lines, indented, for an error message.
    fn tail(&self) -> String {
        if self.tail.is_empty() {
            return "  (it printed nothing)".to_owned();
        }
        self.tail
            .iter()
            .map(|line| format!("  {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `exited with status 3` or `was killed by signal 9`.
fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

#[cfg(test)]
mod tests;
