//! haproxy's master CLI (`haproxy -W -S SOCKET`): which worker process is
//! the live one, reloads whose outcome is known, and admin commands sent to
//! one chosen worker.
//!
//! The stats socket alone cannot say which process answers: right after a
//! reload the old worker and the new one both hold it, so a command meant
//! for the new worker may land on the old one, and a refused reload leaves
//! the old worker answering as if nothing happened. The master knows both:
//! `show proc` lists the current worker and counts reloads and failed
//! reloads, and `@!PID command` reaches exactly the worker `PID`.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};

use crate::admin::AdminClient;
use crate::error::{Error, Result};

/// A client for haproxy's master CLI socket.
#[derive(Debug, Clone)]
pub struct MasterClient {
    socket: Utf8PathBuf,
    timeout: Duration,
}

/// What `show proc` reports: the master's reload counters and its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Processes {
    /// The master's pid (it keeps it across reloads).
    pub master_pid: u32,
    /// Reloads the master has done, successful or not.
    pub reloads: u32,
    /// Reloads that failed (config refused, an address that cannot be bound).
    pub failed_reloads: u32,
    /// The current worker(s), which serve new connections.
    pub workers: Vec<u32>,
    /// Workers of earlier configs, finishing their open connections.
    pub old_workers: Vec<u32>,
}

impl Processes {
    /// The one current worker (sarge runs haproxy with a single worker).
    pub fn current_worker(&self) -> Option<u32> {
        match self.workers.as_slice() {
            [pid] => Some(*pid),
            _ => None,
        }
    }
}

impl MasterClient {
    /// A client for the master CLI at `socket`; nothing is opened yet.
    pub fn new(socket: impl Into<Utf8PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Rejects a socket path haproxy would refuse or misread (relative,
    /// too long for a unix socket, with a `$`).
    pub fn validate(&self) -> Result<()> {
        crate::model::validate_socket_path("master socket path", &self.socket)
    }

    /// The master socket path.
    pub fn socket(&self) -> &Utf8Path {
        &self.socket
    }

    /// An [`AdminClient`] whose commands reach worker `pid` only, through
    /// the master (`@!PID command`).
    pub fn worker(&self, pid: u32) -> AdminClient {
        AdminClient::through_master(self.socket.clone(), pid)
    }

    /// The master's processes and reload counters (`show proc`).
    pub fn processes(&self) -> Result<Processes> {
        let response = self.command("show proc")?;
        parse_show_proc(&response).map_err(|problem| Error::Unexpected {
            command: "show proc".to_owned(),
            problem: problem.to_owned(),
        })
    }

    /// Reloads haproxy with the config file as it is now, and waits until
    /// the master reports the outcome: the pid of the new worker, or
    /// [`Error::ReloadFailed`] if haproxy refused the config (the old
    /// worker then keeps serving the old config).
    pub fn reload(&self, limit: Duration) -> Result<u32> {
        let before = self.processes()?;
        // The master re-executes itself to reload and closes this
        // connection; there is no answer to read.
        let _ = self.command("reload");
        let started = Instant::now();
        loop {
            // While the master re-executes, its socket may not answer.
            if let Ok(now) = self.processes() {
                if now.failed_reloads > before.failed_reloads {
                    return Err(Error::ReloadFailed {
                        socket: self.socket.clone(),
                    });
                }
                if now.reloads > before.reloads {
                    if let Some(pid) = now
                        .current_worker()
                        .filter(|pid| !before.workers.contains(pid))
                    {
                        return Ok(pid);
                    }
                }
            }
            if started.elapsed() >= limit {
                return Err(Error::Unexpected {
                    command: "reload".to_owned(),
                    problem: format!("no new worker within {} s of the reload", limit.as_secs()),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends one master command and returns its answer.
    fn command(&self, line: &str) -> Result<String> {
        send(&self.socket, line, self.timeout)
    }
}

/// Sends `line` on a CLI socket and reads the answer to the end. The write
/// side is shut after the line: the master CLI answers only once it sees
/// the end of input, and the stats socket does not mind.
pub(crate) fn send(socket: &Utf8Path, line: &str, timeout: Duration) -> Result<String> {
    // A signal (SIGCHLD of a child sarge started, say) must not fail a
    // command: each retry connects a fresh socket, so none is half-open.
    // The reads and writes below already retry what a signal interrupts.
    let mut stream = loop {
        match UnixStream::connect(socket) {
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            connected => {
                break connected.map_err(|source| Error::Connect {
                    socket: socket.to_owned(),
                    source,
                })?
            }
        }
    };
    let io_err = |source| Error::Io {
        socket: socket.to_owned(),
        command: line.to_owned(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(io_err)?;
    stream.shutdown(std::net::Shutdown::Write).map_err(io_err)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io_err)?;
    Ok(response)
}

/// Reads `show proc`:
///
/// ```text
/// #<PID>          <type>          <reloads>       <uptime>        <version>
/// 1162            master          5 [failed: 1]   0d00h02m07s     2.6.12
/// # workers
/// 1271            worker          0               0d00h00m00s     2.6.12
/// # old workers
/// 1233            worker          3               0d00h00m43s     2.6.12
/// # programs
/// ```
fn parse_show_proc(text: &str) -> Result<Processes, &'static str> {
    let mut master = None;
    let mut workers = Vec::new();
    let mut old_workers = Vec::new();
    let mut section = "";
    for line in text.lines() {
        let line = line.trim();
        if let Some(heading) = line.strip_prefix('#') {
            section = heading.trim();
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(pid), Some(kind)) = (fields.first(), fields.get(1)) else {
            continue;
        };
        let pid: u32 = pid.parse().map_err(|_| "a pid is not a number")?;
        match (*kind, section) {
            ("master", _) => {
                let reloads = fields
                    .get(2)
                    .and_then(|n| n.parse().ok())
                    .ok_or("the master's reload count is missing")?;
                let failed = line
                    .split_once("[failed:")
                    .and_then(|(_, rest)| rest.split(']').next())
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                master = Some((pid, reloads, failed));
            }
            ("worker", "workers") => workers.push(pid),
            ("worker", "old workers") => old_workers.push(pid),
            _ => {}
        }
    }
    let (master_pid, reloads, failed_reloads) = master.ok_or("no master line")?;
    Ok(Processes {
        master_pid,
        reloads,
        failed_reloads,
        workers,
        old_workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from haproxy 2.6.12 during a reload.
    const SHOW_PROC: &str =
        "#<PID>          <type>          <reloads>       <uptime>        <version>      
31066           master          3 [failed: 2]   0d00h10m29s     2.6.12-1+deb12u4
# workers
2758            worker          0               0d00h00m07s     2.6.12-1+deb12u4
# old workers
2701            worker          2               0d00h03m07s     2.6.12-1+deb12u4
# programs

";

    #[test]
    fn show_proc_gives_counters_and_workers_by_section() {
        let processes = parse_show_proc(SHOW_PROC).unwrap();
        assert_eq!(
            processes,
            Processes {
                master_pid: 31066,
                reloads: 3,
                failed_reloads: 2,
                workers: vec![2758],
                old_workers: vec![2701],
            }
        );
        assert_eq!(processes.current_worker(), Some(2758));
        assert!(parse_show_proc("Unknown command").is_err());
    }
}
