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
//! with two server slots ([`Slot::A`], [`Slot::B`]); one slot serves, the other sits
//! in maintenance. A deploy starts the new instance, then:
//!
//! 1. [`AdminClient::switch`] points the idle slot at the new port, makes it
//!    ready and puts the old slot in maintenance, over the admin socket;
//! 2. [`Route::switch_to`] records the same in the [`HaproxyConfig`], which
//!    is [checked and written](HaproxyConfig::write_checked) (see also
//!    [`check_config`]) so a later reload or restart comes back in the same
//!    state;
//! 3. [`AdminClient::sessions`] reaches zero on the old slot, and the old
//!    instance can stop.
//!
//! After a crash between steps 1 and 2, [`AdminClient::apply`] puts the
//! runtime back in line with the config.
//!
//! ```no_run
//! use sarge_haproxy::{AdminClient, HaproxyConfig, Route};
//! use camino::Utf8Path;
//!
//! # fn main() -> sarge_haproxy::Result<()> {
//! let mut config = HaproxyConfig {
//!     admin_socket: "/srv/sarge/haproxy.sock".into(),
//!     routes: vec![Route::new("web", "127.0.0.1:5000")],
//! };
//! config.validate()?;
//!
//! // The new instance of `web` is listening on port 8001 and passed
//! // sarge's readiness check.
//! let admin = AdminClient::new(config.admin_socket.clone());
//! let route = config.route_mut("web").expect("route was just added");
//! let slot = route.idle_slot();
//! admin.switch("web", slot, 8001)?;
//! route.switch_to(slot, 8001);
//!
//! let haproxy = Utf8Path::new("/usr/sbin/haproxy");
//! let path = Utf8Path::new("/srv/sarge/haproxy.cfg");
//! config.write_checked(path, haproxy)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Stability
//!
//! sarge is before 1.0: a minor release (0.x to 0.(x+1)) may change this API, a patch release does not, and every change is in the changelog. [`Processes`] and [`Error`] are `#[non_exhaustive]` and grow in
//! minor releases. [`HaproxyConfig`] and [`Route`] are built by callers
//! with struct literals and [`Slot`] is the two servers of the blue/green
//! scheme, so those stay exhaustive: a new field or slot is a breaking
//! change. The rendered config is haproxy's to read, not a format to parse.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod admin;
mod check;
mod error;
mod master;
mod model;
mod render;

pub use admin::AdminClient;
pub use check::{check_config, spawn_check, PendingCheck};
pub use error::{Error, Result};
pub use master::{MasterClient, Processes};
pub use model::{HaproxyConfig, Route, Slot};
