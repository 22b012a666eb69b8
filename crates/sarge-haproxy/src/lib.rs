//! haproxy in front of sarge's processes: each process keeps a stable
//! address while deploys move it between instances, with no restart of
//! haproxy and no dropped request.
//!
//! haproxy runs under supervisord as `haproxy -W -db -S MASTER -f CONFIG`.
//! The [`MasterClient`] speaks to its master process: which worker is the
//! live one ([`MasterClient::processes`]), reloads whose outcome is known
//! ([`MasterClient::reload`] waits for the new worker, or fails when
//! haproxy refused the config), and an [`AdminClient`] bound to one worker
//! ([`MasterClient::worker`]), so no command lands on a worker on its way
//! out.
//!
//! Every [`Route`] becomes a frontend on the stable address and a backend
//! with one [`Server`] per ready instance, balanced round-robin. A deploy
//! starts the new instances, then, with no reload:
//!
//! 1. [`AdminClient::add_server`] adds each new instance to the backend,
//!    ready, over the admin socket;
//! 2. [`AdminClient::disable_server`] puts each old instance in
//!    maintenance: new requests go to the new ones only;
//! 3. the [`HaproxyConfig`] with the new servers is
//!    [written](HaproxyConfig::write) so a later reload or restart comes
//!    back in the same state (a config whose frontends and backends
//!    change, see [`HaproxyConfig::same_structure`], is
//!    [checked](HaproxyConfig::write_checked) and needs a reload);
//! 4. [`AdminClient::sessions`] reaches zero on each old server, and
//!    [`AdminClient::delete_server`] removes it before its instance stops.
//!
//! After a crash between these steps, [`AdminClient::apply`] puts the
//! runtime back in line with the config.
//!
//! ```no_run
//! use sarge_haproxy::{AdminClient, HaproxyConfig, Route, Server};
//! use camino::Utf8Path;
//!
//! # fn main() -> sarge_haproxy::Result<()> {
//! let old = Server::new("web-0a1b2c", 8000);
//! let mut config = HaproxyConfig {
//!     admin_socket: "/srv/sarge/haproxy.sock".into(),
//!     routes: vec![Route::new("web", "127.0.0.1:5000").with_servers([old.clone()])],
//! };
//! config.validate()?;
//!
//! // The new instance of `web` is listening on port 8001 and passed
//! // sarge's readiness check.
//! let new = Server::new("web-3d4e5f", 8001);
//! let admin = AdminClient::new(config.admin_socket.clone());
//! admin.add_server("web", &new)?;
//! admin.disable_server("web", &old.name)?;
//! config.routes[0].servers = vec![new];
//! config.write(Utf8Path::new("/srv/sarge/haproxy.cfg"))?;
//!
//! while admin.sessions("web", &old.name)? > 0 {
//!     std::thread::sleep(std::time::Duration::from_millis(20));
//! }
//! admin.delete_server("web", &old.name)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Stability
//!
//! sarge is before 1.0: a minor release (0.x to 0.(x+1)) may change this API, a patch release does not, and every change is in the changelog. [`Processes`] and [`Error`] are `#[non_exhaustive]` and grow in
//! minor releases. [`HaproxyConfig`] and [`Route`] are built by callers
//! with struct literals, so those stay exhaustive: a new field is a
//! breaking change. Earlier versions had two fixed server slots (`Slot::A`,
//! `Slot::B`); a server per instance replaced them, for scaling. The rendered config is haproxy's to read, not a format to parse.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod admin;
mod check;
mod error;
mod master;
mod model;
mod render;

pub use admin::{AdminClient, ServerStatus};
pub use check::{check_config, spawn_check, PendingCheck};
pub use error::{Error, Result};
pub use master::{MasterClient, Processes};
pub use model::{HaproxyConfig, Route, Server};
