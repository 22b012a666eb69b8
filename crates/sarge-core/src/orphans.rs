//! Processes a dead supervisord left behind.
//!
//! supervisord stops its programs when it is asked to exit, but a SIGKILL
//! (the OOM killer, `kill -9`, a crashed VM agent) gives it no chance: its
//! haproxy and app instances live on, reparented to init, and keep their
//! ports. The next supervisord's haproxy and instances then fail to bind
//! and go FATAL, and every deploy fails until someone finds and kills them.
//! supervisord cannot adopt a running process, so `bin/supervisord` stops
//! them first ([`Sarge::stop_orphans`]); the new supervisord then starts
//! every program from its file, and the routes come back.
//!
//! Which processes are this home's: the supervisord that `bin/supervisord`
//! starts carries [`SUPERVISORD_MARKER`] in its environment, and every
//! program inherits it (haproxy, the launchers, what the apps spawn). A
//! supervisord started by an older sarge set no marker; its programs are
//! found by their session (supervisord runs in its own session, its
//! programs stay in it) together with what they run (this home's haproxy
//! config, or an instance folder as working directory).
//!
//! Nothing is touched while a supervisord for this home is alive: its
//! socket answers, or a process of this home runs supervisord.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use rustix::process::{Pid, Signal};
use sarge_supervisor::Client;

use crate::error::{Error, Result};
use crate::home::Home;
use crate::Sarge;

/// The environment variable `bin/supervisord` sets on supervisord (and so
/// on every program it runs) to the canonical path of the home: a process
/// that carries it with this home's path was started by this home's
/// supervisord.
pub const SUPERVISORD_MARKER: &str = "SARGE_SUPERVISORD_HOME";

/// How long the orphans get to exit after SIGTERM before SIGKILL: as long
/// as supervisord itself gives a program (`stopwaitsecs`).
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long SIGKILL gets to take effect.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long supervisord's socket gets to answer whether it is alive.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(2);

/// What [`Sarge::stop_orphans`] stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoppedOrphans {
    /// One entry per program the dead supervisord ran (a process whose
    /// parent was not itself an orphan), in pid order.
    pub programs: Vec<Orphan>,
    /// Every process stopped, the programs' children included.
    pub processes: usize,
    /// Processes that had to be SIGKILLed (they ignored SIGTERM for 10
    /// seconds).
    pub killed: Vec<u32>,
    /// Processes still running after SIGKILL (stuck in the kernel); their
    /// ports may still be taken.
    pub survivors: Vec<u32>,
}

impl StoppedOrphans {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.processes == 0
    }
}

/// One program of a dead supervisord.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Orphan {
    /// Its pid.
    pub pid: u32,
    /// Its supervisord program name (`haproxy`, an instance id), or the
    /// process's command name when it is neither.
    pub name: String,
    /// How many of its descendants were stopped with it.
    pub children: usize,
}

impl Sarge {
    /// Stops the processes a supervisord of this home left running when it
    /// died, so that the supervisord about to start can run its programs
    /// on their ports. Does nothing while a supervisord of this home is
    /// alive. Each program's process group gets SIGTERM, then SIGKILL
    /// after 10 seconds if it has not exited.
    pub fn stop_orphans(&self) -> Result<StoppedOrphans> {
        if supervisord_answers(&self.home) {
            return Ok(StoppedOrphans::default());
        }
        let scan = Scan::new(&self.home);
        let processes = scan.processes()?;
        if processes.iter().any(|process| scan.is_supervisord(process)) {
            return Ok(StoppedOrphans::default());
        }
        let orphans: BTreeMap<u32, &Process> = processes
            .iter()
            .filter(|process| scan.is_orphan(process, &processes))
            .map(|process| (process.pid, process))
            .collect();
        Ok(stop(&scan, &orphans, STOP_WAIT))
    }

    /// The marker value for this home (see [`SUPERVISORD_MARKER`]).
    pub(crate) fn supervisord_marker(&self) -> Utf8PathBuf {
        canonical(self.home.root())
    }
}

/// Whether supervisord's socket answers, or might (it accepted but did not
/// answer in time: a busy or stopped supervisord is still alive).
fn supervisord_answers(home: &Home) -> bool {
    let client = Client::new(home.supervisor_socket()).with_timeout(SOCKET_TIMEOUT);
    !matches!(
        client.state(),
        Err(sarge_supervisor::Error::NotRunning { .. })
    )
}

/// `path` with symlinks resolved, so that `/srv/app` and a symlink to it
/// name one home; `path` itself if it cannot be resolved.
fn canonical(path: &Utf8Path) -> Utf8PathBuf {
    fs_err::canonicalize(path)
        .ok()
        .and_then(|path| Utf8PathBuf::from_path_buf(path).ok())
        .unwrap_or_else(|| path.to_owned())
}

/// One process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Process {
    pid: u32,
    ppid: u32,
    pgrp: u32,
    session: u32,
    comm: String,
    cmdline: Vec<String>,
    /// `None` when unreadable (a process that made itself undumpable).
    environ: Option<Vec<String>>,
    cwd: Option<Utf8PathBuf>,
}

/// The fields of `/proc/PID/stat` sarge needs: `(comm, state, ppid, pgrp,
/// session)`. The command name is in parentheses and may itself hold
/// spaces and parentheses, so the fields are read after its last `)`.
fn parse_stat(stat: &str) -> Option<(String, char, u32, u32, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat.get(close + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some((comm, state, ppid, pgrp, session))
}

/// What identifies this home's processes, and the processes that must
/// never be touched (sarge itself and whatever started it).
struct Scan {
    marker: String,
    supervisord_config: String,
    haproxy_config: String,
    instances_dir: Utf8PathBuf,
    /// The pid in `var/run/supervisord.pid`: the session of the programs
    /// of the supervisord that wrote it.
    dead_session: Option<u32>,
    uid: u32,
    own_lineage: BTreeSet<u32>,
}

impl Scan {
    fn new(home: &Home) -> Self {
        let dead_session = fs_err::read_to_string(home.run_dir().join("supervisord.pid"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .filter(|pid| *pid > 1 && read_stat(*pid).is_none());
        let mut own_lineage = BTreeSet::new();
        let mut pid = std::process::id();
        while pid > 1 && own_lineage.insert(pid) {
            match read_stat(pid) {
                Some((_, _, ppid, _, _)) => pid = ppid,
                None => break,
            }
        }
        let root = canonical(home.root());
        Self {
            marker: format!("{SUPERVISORD_MARKER}={root}"),
            supervisord_config: home.supervisord_config().to_string(),
            haproxy_config: home.haproxy_config().to_string(),
            instances_dir: canonical(&home.instances_dir()),
            dead_session,
            uid: rustix::process::geteuid().as_raw(),
            own_lineage,
        }
    }

    /// This user's live processes, except sarge and its ancestors.
    fn processes(&self) -> Result<Vec<Process>> {
        let proc_dir = Utf8Path::new("/proc");
        let entries = std::fs::read_dir(proc_dir).map_err(|source| Error::ProcessScan {
            path: proc_dir.to_owned(),
            source,
        })?;
        let mut processes = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
            else {
                continue;
            };
            if pid <= 1 || self.own_lineage.contains(&pid) {
                continue;
            }
            // A process that exits during the scan is simply skipped.
            if !entry.metadata().is_ok_and(|meta| meta.uid() == self.uid) {
                continue;
            }
            let Some((comm, state, ppid, pgrp, session)) = read_stat(pid) else {
                continue;
            };
            if state == 'Z' {
                continue;
            }
            let dir = entry.path();
            let split = |bytes: Vec<u8>| -> Vec<String> {
                bytes
                    .split(|byte| *byte == 0)
                    .filter(|part| !part.is_empty())
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect()
            };
            processes.push(Process {
                pid,
                ppid,
                pgrp,
                session,
                comm,
                cmdline: std::fs::read(dir.join("cmdline"))
                    .map(split)
                    .unwrap_or_default(),
                environ: std::fs::read(dir.join("environ")).ok().map(split),
                cwd: std::fs::read_link(dir.join("cwd"))
                    .ok()
                    .and_then(|path| Utf8PathBuf::from_path_buf(path).ok()),
            });
        }
        Ok(processes)
    }

    fn is_marked(&self, process: &Process) -> bool {
        process
            .environ
            .as_ref()
            .is_some_and(|environ| environ.contains(&self.marker))
    }

    /// A supervisord of this home: one that carries the marker, or one
    /// started on this home's config (by an older sarge, or by hand).
    fn is_supervisord(&self, process: &Process) -> bool {
        let runs_supervisord = process.comm.contains("supervisord")
            || process
                .cmdline
                .iter()
                .take(2)
                .any(|arg| arg.rsplit('/').next() == Some("supervisord"));
        runs_supervisord
            && (self.is_marked(process) || process.cmdline.contains(&self.supervisord_config))
    }

    fn runs_this_homes_haproxy(&self, process: &Process) -> bool {
        process
            .cmdline
            .windows(2)
            .any(|pair| pair[0] == "-f" && pair[1] == self.haproxy_config)
    }

    /// The instance `process` belongs to, if any: the id in its
    /// environment, or (instances of an older sarge) the instance folder
    /// it works in.
    fn instance_of(&self, process: &Process) -> Option<String> {
        let prefix = format!("{}=", crate::rollout::INSTANCE_VARIABLE);
        if let Some(id) = process
            .environ
            .as_ref()
            .and_then(|environ| environ.iter().find_map(|entry| entry.strip_prefix(&prefix)))
        {
            return Some(id.to_owned());
        }
        let relative = process
            .cwd
            .as_ref()?
            .strip_prefix(&self.instances_dir)
            .ok()?;
        relative.components().next().map(|id| id.to_string())
    }

    /// Whether `process` was started by this home's supervisord, which is
    /// dead (the caller checked).
    fn is_orphan(&self, process: &Process, all: &[Process]) -> bool {
        if self.is_marked(process) {
            return true;
        }
        // An older sarge's supervisord set no marker. Its programs share
        // its session, whose leader is dead; a session id is also reused
        // by unrelated logins once the pid comes round again, so the
        // process must also run this home's haproxy or an instance.
        let Some(dead) = self.dead_session else {
            return false;
        };
        process.session == dead
            && !all.iter().any(|other| other.pid == dead)
            && (self.runs_this_homes_haproxy(process) || self.instance_of(process).is_some())
    }

    /// The supervisord program name of an orphan.
    fn name_of(&self, process: &Process) -> String {
        if self.runs_this_homes_haproxy(process) {
            "haproxy".to_owned()
        } else if let Some(id) = self.instance_of(process) {
            id
        } else {
            process.comm.clone()
        }
    }
}

fn read_stat(pid: u32) -> Option<(String, char, u32, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).filter(|(_, state, ..)| *state != 'Z')
}

/// SIGTERM, up to `stop_wait` for them to exit, SIGKILL, a wait.
fn stop(scan: &Scan, orphans: &BTreeMap<u32, &Process>, stop_wait: Duration) -> StoppedOrphans {
    if orphans.is_empty() {
        return StoppedOrphans::default();
    }
    // supervisord makes every program the leader of its own process group:
    // signalling the group also reaches a child that dropped the marker.
    // A group whose leader is not an orphan is never signalled as a whole.
    let groups: BTreeSet<u32> = orphans
        .values()
        .filter(|process| process.pgrp == process.pid)
        .map(|process| process.pid)
        .collect();
    let signal = |signal: Signal, pids: &BTreeSet<u32>| {
        for &pid in pids {
            let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
                continue;
            };
            // An error is a process that exited meanwhile (ESRCH); the
            // wait below sees whatever else stays.
            let _ = if groups.contains(&pid) {
                rustix::process::kill_process_group(target, signal)
            } else {
                rustix::process::kill_process(target, signal)
            };
        }
    };
    let pids: BTreeSet<u32> = orphans.keys().copied().collect();
    let individuals: BTreeSet<u32> = orphans
        .values()
        .filter(|process| !groups.contains(&process.pgrp))
        .map(|process| process.pid)
        .collect();
    let targets: BTreeSet<u32> = groups.union(&individuals).copied().collect();
    signal(Signal::TERM, &targets);
    let killed = wait_gone(&pids, stop_wait);
    if !killed.is_empty() {
        signal(Signal::KILL, &targets);
        // Also the stragglers themselves, in case one left its group.
        for &pid in &killed {
            if let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                let _ = rustix::process::kill_process(target, Signal::KILL);
            }
        }
    }
    let survivors = wait_gone(&killed.iter().copied().collect(), KILL_WAIT);
    let programs = orphans
        .values()
        .filter(|process| !orphans.contains_key(&process.ppid))
        .map(|process| Orphan {
            pid: process.pid,
            name: scan.name_of(process),
            children: descendants(process.pid, orphans),
        })
        .collect();
    StoppedOrphans {
        programs,
        processes: orphans.len(),
        killed,
        survivors,
    }
}

/// Polls until none of `pids` runs or `limit` passes; the ones still running.
fn wait_gone(pids: &BTreeSet<u32>, limit: Duration) -> Vec<u32> {
    let started = Instant::now();
    loop {
        let running: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|pid| read_stat(*pid).is_some())
            .collect();
        if running.is_empty() || started.elapsed() >= limit {
            return running;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn descendants(root: u32, orphans: &BTreeMap<u32, &Process>) -> usize {
    let mut count = 0;
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for process in orphans.values().filter(|process| process.ppid == parent) {
            count += 1;
            frontier.push(process.pid);
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, cmdline: &[&str], environ: &[&str], cwd: &str) -> Process {
        Process {
            pid,
            ppid: 1,
            pgrp: pid,
            session: 500,
            comm: cmdline[0].rsplit('/').next().unwrap().to_owned(),
            cmdline: cmdline.iter().map(|arg| arg.to_string()).collect(),
            environ: Some(environ.iter().map(|entry| entry.to_string()).collect()),
            cwd: Some(cwd.into()),
        }
    }

    fn scan() -> Scan {
        Scan {
            marker: format!("{SUPERVISORD_MARKER}=/srv/app"),
            supervisord_config: "/srv/app/etc/supervisord.conf".into(),
            haproxy_config: "/srv/app/etc/haproxy.cfg".into(),
            instances_dir: "/srv/app/var/instances".into(),
            dead_session: Some(500),
            uid: rustix::process::geteuid().as_raw(),
            own_lineage: BTreeSet::new(),
        }
    }

    #[test]
    fn stat_fields_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) name) S 1 4242 4100 0 -1 4194560 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(("my (odd) name".to_owned(), 'S', 1, 4242, 4100))
        );
        assert_eq!(parse_stat("4242 (truncated"), None);
    }

    #[test]
    fn a_marked_process_is_an_orphan_only_with_this_homes_exact_path() {
        let scan = scan();
        let ours = process(10, &["python3"], &["SARGE_SUPERVISORD_HOME=/srv/app"], "/");
        let other = process(11, &["python3"], &["SARGE_SUPERVISORD_HOME=/srv/app2"], "/");
        let mut unrelated = other.clone();
        unrelated.session = 77;
        let all = vec![ours.clone(), other.clone(), unrelated.clone()];
        assert!(scan.is_orphan(&ours, &all));
        // /srv/app2 is another home; and its session is not enough either,
        // since it runs neither this home's haproxy nor an instance.
        assert!(!scan.is_orphan(&other, &all));
        assert!(!scan.is_orphan(&unrelated, &all));
    }

    #[test]
    fn an_older_sarges_programs_are_found_by_session_and_what_they_run() {
        let scan = scan();
        let haproxy = process(
            20,
            &["/usr/sbin/haproxy", "-W", "-f", "/srv/app/etc/haproxy.cfg"],
            &[],
            "/srv/app",
        );
        let app = process(
            21,
            &["python", "app.py"],
            &[],
            "/srv/app/var/instances/web-abc123/app",
        );
        let mut shell_elsewhere = app.clone();
        shell_elsewhere.pid = 22;
        shell_elsewhere.session = 900; // `sarge run web` from a login shell
        let all = vec![haproxy.clone(), app.clone(), shell_elsewhere.clone()];
        assert!(scan.is_orphan(&haproxy, &all));
        assert!(scan.is_orphan(&app, &all));
        assert!(!scan.is_orphan(&shell_elsewhere, &all));
        assert_eq!(scan.name_of(&haproxy), "haproxy");
        assert_eq!(scan.name_of(&app), "web-abc123");
        // While the session's leader lives, it is not a dead supervisord's.
        let mut leader = process(500, &["bash"], &[], "/");
        leader.session = 500;
        let with_leader = vec![haproxy.clone(), leader];
        assert!(!scan.is_orphan(&haproxy, &with_leader));
    }

    #[test]
    fn a_supervisord_of_this_home_is_recognised_with_or_without_the_marker() {
        let scan = scan();
        let marked = process(
            30,
            &[
                "/usr/bin/python3",
                "/usr/bin/supervisord",
                "-c",
                "/elsewhere.conf",
            ],
            &["SARGE_SUPERVISORD_HOME=/srv/app"],
            "/",
        );
        let by_config = process(
            31,
            &[
                "/usr/bin/python3",
                "/usr/bin/supervisord",
                "-c",
                "/srv/app/etc/supervisord.conf",
            ],
            &[],
            "/",
        );
        let other_home = process(
            32,
            &[
                "/usr/bin/python3",
                "/usr/bin/supervisord",
                "-c",
                "/srv/b/etc/supervisord.conf",
            ],
            &[],
            "/",
        );
        let marked_app = process(
            33,
            &["python3", "app.py"],
            &["SARGE_SUPERVISORD_HOME=/srv/app"],
            "/",
        );
        assert!(scan.is_supervisord(&marked));
        assert!(scan.is_supervisord(&by_config));
        assert!(!scan.is_supervisord(&other_home));
        assert!(!scan.is_supervisord(&marked_app));
    }

    /// Starts `script` under `sh` as the leader of a new session (and so
    /// process group), waits until it and one child run; the group's
    /// processes, by pid.
    fn group_of(script: &str) -> (std::process::Child, Vec<Process>) {
        let child = std::process::Command::new("setsid")
            .args(["sh", "-c", script])
            .spawn()
            .unwrap();
        let leader = child.id();
        let mut found = Vec::new();
        let started = Instant::now();
        while found.len() < 2 && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
            found = scan()
                .processes()
                .unwrap()
                .into_iter()
                .filter(|process| process.pgrp == leader)
                .collect();
        }
        assert_eq!(found.len(), 2, "{found:?}");
        (child, found)
    }

    #[test]
    fn stopping_a_real_process_group_reports_the_program_and_its_child() {
        let (mut child, found) = group_of("sleep 30 & wait");
        let orphans: BTreeMap<u32, &Process> =
            found.iter().map(|process| (process.pid, process)).collect();
        let stopped = stop(&scan(), &orphans, STOP_WAIT);
        let _ = child.wait();
        assert_eq!(stopped.processes, 2);
        assert_eq!(stopped.programs.len(), 1, "{stopped:?}");
        assert_eq!(stopped.programs[0].pid, child.id());
        assert_eq!(stopped.programs[0].children, 1);
        assert!(stopped.killed.is_empty(), "{stopped:?}");
        assert!(stopped.survivors.is_empty());
        assert!(orphans.keys().all(|pid| read_stat(*pid).is_none()));
    }

    #[test]
    fn a_group_that_ignores_sigterm_is_sigkilled() {
        // An ignored signal stays ignored across fork and exec: both do.
        let (mut child, found) = group_of("trap '' TERM; sleep 30 & wait");
        let orphans: BTreeMap<u32, &Process> =
            found.iter().map(|process| (process.pid, process)).collect();
        let stopped = stop(&scan(), &orphans, Duration::from_millis(300));
        let _ = child.wait();
        let mut killed = stopped.killed.clone();
        killed.sort_unstable();
        assert_eq!(killed, orphans.keys().copied().collect::<Vec<_>>());
        assert!(stopped.survivors.is_empty(), "{stopped:?}");
        assert!(orphans.keys().all(|pid| read_stat(*pid).is_none()));
    }
}
