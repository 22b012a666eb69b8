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
