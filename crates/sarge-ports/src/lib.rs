//! Hands out TCP ports to new deployments.
//!
//! Each deploy needs a fresh port for every process it starts.
//! [`PortAllocator`] hands them out from a range in turn, remembering the
//! last one in a one-line state file, so a port an old deployment just gave
//! up is not reused straight away. [`next_free_port`] is the pure search
//! behind it, and [`port_is_bindable`] tells whether some other program
//! already holds a port. Errors are an [`Error`].
//!
//! ```no_run
//! use sarge_ports::{port_is_bindable, PortAllocator};
//!
//! let allocator = PortAllocator::new("/srv/sarge/var/ports", 5010..=5099);
//! let in_use_by_sarge = [5010, 5011];
//! let port = allocator.allocate(|port| in_use_by_sarge.contains(&port) || !port_is_bindable(port))?;
//! println!("next instance listens on {port}");
//! # Ok::<(), sarge_ports::Error>(())
//! ```
//!
//! # Stability
//!
//! sarge is before 1.0: a minor release (0.x to 0.(x+1)) may change this API, a patch release does not, and every change is in the changelog. The state file's one-line format is read by every later release.
//! [`Error`] is `#[non_exhaustive]`: match it with a `_` arm.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod allocator;
mod error;
mod pick;

pub use allocator::PortAllocator;
pub use error::{Error, Result};
pub use pick::{next_free_port, port_is_bindable};
