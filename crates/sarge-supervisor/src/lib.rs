//! Runs sarge's processes under supervisord: renders its config files and
//! drives a running supervisord over its XML-RPC API on a UNIX socket.
//!
//! - [`SupervisordConfig`] renders supervisord's main config file and
//!   [`Program`] one `[program:NAME]` include file. Both are pure; they
//!   escape values for supervisord's parser (`%` interpolation, inline
//!   comments, shell-style command splitting) and refuse values it would
//!   alter.
//! - [`Client`] talks to a running supervisord directly over its socket (no
//!   `supervisorctl`, whose Python start-up costs ~200 ms per call): reread
//!   config ([`Client::reload_config`]), add and remove groups, start, stop
//!   and signal processes, and read [`ProcessInfo`].
//!
//! Errors are one [`Error`] enum; [`Error::NotRunning`] means nothing
//! listens on the socket.
//!
//! # Example
//!
//! ```no_run
//! use sarge_supervisor::{Client, Program};
//!
//! # fn main() -> sarge_supervisor::Result<()> {
//! let program = Program {
//!     name: "web".into(),
//!     command: vec!["/srv/web/bin/run".into(), "--port".into(), "8000".into()],
//!     directory: "/srv/web".into(),
//!     log_file: "/srv/log/web.log".into(),
//!     autostart: true,
//!     autorestart: true,
//!     start_secs: 1,
//!     stop_wait_secs: 10,
//!     stop_as_group: true,
//!     log_max_bytes: 50 * 1024 * 1024,
//!     log_backups: 5,
//!     ..Program::default()
//! };
//! std::fs::write("/srv/etc/supervisor.d/web.conf", program.render()?).ok();
//!
//! let client = Client::new("/srv/run/supervisor.sock");
//! let changes = client.reload_config()?;
//! for name in &changes.added {
//!     client.add_process_group(name)?;
//! }
//! println!("web is {}", client.process_info("web")?.state);
//! # Ok(())
//! # }
//! ```
//!
//! # Stability
//!
//! sarge is before 1.0: a minor release (0.x to 0.(x+1)) may change this API, a patch release does not, and every change is in the changelog. [`ProcessInfo`], [`ConfigChanges`], [`DaemonState`] and [`Error`] are
//! `#[non_exhaustive]` and grow in minor releases. [`Program`] and
//! [`SupervisordConfig`] are built by callers with struct literals, and
//! [`ProcessState`] mirrors supervisord's fixed set of states (with
//! [`ProcessState::Unknown`] for anything else), so those stay exhaustive: a
//! new field or state is a breaking change. The rendered text is tested
//! byte for byte but is supervisord's to read, not a format to parse.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod client;
mod config;
mod error;
mod xmlrpc;

pub use client::{Client, ConfigChanges, DaemonState, ProcessInfo, ProcessState};
pub use config::{validate_program_name, Program, SupervisordConfig};
pub use error::{Error, Result};
