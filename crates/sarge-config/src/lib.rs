//! Reads and checks sarge's settings file, `$SARGE_HOME/etc/sarge.yaml`.
//!
//! [`Config::load`] returns a [`Config`] whose values have all been checked:
//! the [`PortRange`] for new deployments, a [`StableAddress`] per
//! [`ProcessName`] (the one process-name rule, shared with the Procfile
//! reader and the rest of sarge), the environment for the application,
//! program paths, optional [`HealthCheck`]s and timeouts. Mistakes come back as an [`Error`] that
//! names the file and the dotted key (`port_map.web`), and unknown keys are
//! errors, so a typo never silently falls back to a default.
//! [`Config::default_yaml`] produces the commented file a new install starts
//! from.
//!
//! ```
//! use camino::Utf8Path;
//! use sarge_config::Config;
//!
//! let text = "port_range: [5010, 5099]\nport_map:\n  web: 127.0.0.1:5000\n";
//! let config = Config::from_yaml_str(text, Utf8Path::new("sarge.yaml"))?;
//! assert_eq!(config.port_range.len(), 90);
//! assert_eq!(config.port_map["web"].to_string(), "127.0.0.1:5000");
//! assert_eq!(config.haproxy_bin, "haproxy");
//!
//! let error = Config::from_yaml_str("port_range: [5010, 5099]\nport_mapp: {}\n", Utf8Path::new("sarge.yaml"))
//!     .unwrap_err();
//! assert!(error.to_string().starts_with("sarge.yaml: unknown key \"port_mapp\""));
//! # Ok::<(), sarge_config::Error>(())
//! ```
//!
//! # Stability
//!
//! sarge is before 1.0: a minor release (0.x to 0.(x+1)) may change this API, a patch release does not, and every change is in the changelog. The `sarge.yaml` format is the firmer promise: keys are only added,
//! and a renamed key keeps being read under its old name (as
//! `virtualenv_python_bin` is). [`Config`], [`HealthCheck`] and [`Error`] are
//! `#[non_exhaustive]`: new settings and error cases arrive in minor releases,
//! so build a config with [`Config::new`] (then [`Config::check`] it) and
//! match errors with a `_` arm. Error messages are for people and may be
//! reworded. [`PortRange`], [`StableAddress`] and [`ProcessName`] are whole
//! values and do not grow; [`ProcessName::RULE`] changes only in a major
//! release, since names already deployed must keep parsing.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod address;
mod config;
mod error;
mod port_range;
mod process_name;
mod template;
mod yaml;

pub use address::StableAddress;
pub use config::{Config, HealthCheck, DEFAULT_HEALTHCHECK_HOST};
pub use error::{Error, Result};
pub use port_range::PortRange;
pub use process_name::ProcessName;
