//! Asking an instance whether it is ready: does it accept connections on
//! its port, and what does its health check path answer; and the wait
//! for a new instance to be ready, which asks both.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sarge_supervisor::ProcessState;

use crate::error::{Error, Result};
use crate::logs::log_tail;
use crate::state::InstanceRecord;
use crate::Sarge;

/// A connection to `address` within `timeout`, tried again when a signal
/// (SIGCHLD of a child sarge started, say) interrupts the attempt.
pub(crate) fn connect(address: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    loop {
        match TcpStream::connect_timeout(&address, timeout) {
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Whether something listens on `address`. A connect to a loopback port
/// nobody listens on can succeed by connecting to itself, when the kernel
/// picks that very port as the ephemeral source port (TCP simultaneous
/// open); that would pass a dead instance as ready, so it does not count.
pub(crate) fn accepts_connections(address: SocketAddr) -> bool {
    match connect(address, Duration::from_millis(250)) {
        Ok(stream) => stream.local_addr().ok() != stream.peer_addr().ok(),
        Err(_) => false,
    }
}

/// The status code of `GET path` on `address`, asking for `host` (the
/// app may check it, as Django's `ALLOWED_HOSTS` does).
pub(crate) fn http_status(address: SocketAddr, host: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = connect(address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    // One write: several small ones would wait on Nagle and delayed ACKs.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: sarge\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut head = [0u8; 32];
    let mut filled = 0;
    while filled < 12 {
        // A signal landing mid-read says nothing about the instance.
        let read = match stream.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        filled += read;
    }
    let head = String::from_utf8_lossy(&head[..filled]);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))
}

impl Sarge {
    /// Polls until the instance listens on its port (and answers its health
    /// check, if one is set), or fails as soon as its process exits.
    pub(crate) fn wait_ready(
        &self,
        supervisor: &sarge_supervisor::Client,
        record: &InstanceRecord,
        needs_port: bool,
    ) -> Result<()> {
        let health = self.config.healthcheck.get(record.process.as_str());
        let limit = health
            .and_then(|health| health.timeout)
            .unwrap_or(self.config.ready_timeout);
        let address = SocketAddr::from(([127, 0, 0, 1], record.port));
        let log = self.home.program_log(&record.id);
        let started = Instant::now();
        let mut waiting_for = if needs_port {
            format!("waiting for it to listen on port {}", record.port)
        } else {
            "waiting for supervisord to report it running".to_owned()
        };
        let mut polls: u32 = 0;
        loop {
            // The port is polled every millisecond (a connect is
            // cheap); supervisord is asked how the process is doing once
            // the port opens, and every 16th poll meanwhile (every poll
            // once they slow down), so a crash still fails the wait at once.
            let listening = needs_port && accepts_connections(address);
            let slow = started.elapsed() >= Duration::from_secs(2);
            if !needs_port || listening || slow || polls.is_multiple_of(16) {
                let info = supervisor.process_info(&record.id)?;
                match info.state {
                    ProcessState::Exited | ProcessState::Fatal | ProcessState::Backoff => {
                        return Err(self.exited(record, &info));
                    }
                    ProcessState::Running if !needs_port => return Ok(()),
                    ProcessState::Running | ProcessState::Starting if listening => match health {
                        None => return Ok(()),
                        Some(health) => match http_status(address, &health.host, &health.path) {
                            // Only 2xx: a redirect is often to a login page
                            // of an app that is not working.
                            Ok(status) if (200..300).contains(&status) => return Ok(()),
                            Ok(status) => {
                                waiting_for = format!("GET {} answered {status}", health.path)
                            }
                            Err(error) => {
                                waiting_for = format!("GET {} failed: {error}", health.path)
                            }
                        },
                    },
                    _ => {}
                }
            }
            polls = polls.wrapping_add(1);
            if started.elapsed() >= limit {
                return Err(Error::InstanceNotReady {
                    id: record.id.clone(),
                    seconds: limit.as_secs_f64(),
                    what: waiting_for,
                    log_tail: log_tail(&log),
                    log,
                });
            }
            // Poll fast at first: most apps are up within a few hundred ms.
            let pause = if !slow {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(50)
            };
            std::thread::sleep(pause);
        }
    }

    /// Fails if the instance's process is no longer starting or running;
    /// its pid if it is.
    pub(crate) fn confirm_alive(
        &self,
        supervisor: &sarge_supervisor::Client,
        record: &InstanceRecord,
    ) -> Result<u32> {
        let info = supervisor.process_info(&record.id)?;
        if matches!(info.state, ProcessState::Running | ProcessState::Starting) {
            return Ok(info.pid);
        }
        Err(self.exited(record, &info))
    }

    /// The error for an instance whose process is no longer up.
    fn exited(&self, record: &InstanceRecord, info: &sarge_supervisor::ProcessInfo) -> Error {
        let log = self.home.program_log(&record.id);
        Error::InstanceExited {
            id: record.id.clone(),
            state: format!(
                "{}: {}",
                info.state.name().to_ascii_lowercase(),
                info.description
            ),
            log_tail: log_tail(&log),
            log,
        }
    }
}
