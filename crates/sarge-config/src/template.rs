//! The text of a fresh `sarge.yaml`, written once by `sarge init`.

use crate::config::Config;

impl Config {
    /// Text of a fresh `sarge.yaml`: deployments get ports
    /// `port_base + 10 ..= port_base + 99`, the `web` process is reachable
    /// at `127.0.0.1:port_base`, and every optional key is shown commented
    /// out with its default.
    ///
    /// `port_base` should lie within `1024..=65436` so the range fits.
    pub fn default_yaml(port_base: u16) -> String {
        let first = port_base.saturating_add(10);
        let last = port_base.saturating_add(99);
        format!(
            r#"# sarge settings. Changes take effect at the next deploy.

# Ports handed to new deployments, [first, last]. Every process of a new
# deployment listens on a fresh port from this range.
port_range: [{first}, {last}]

# The stable address haproxy listens on for each process type, routed to
# whichever deployment is live. Must lie outside port_range. Keys are
# Procfile process names: 1 to 40 letters, digits, '_', '.' or '-'.
# Use "*:PORT" to listen on every interface.
port_map:
  web: 127.0.0.1:{port_base}

# Environment variables given to every process, for example:
#   env:
#     DATABASE: "postgresql://user:pw@localhost:5432/db_name"
env: {{}}

# Optional settings, shown with their defaults.
# Programs sarge runs (looked up on $PATH unless given as a full path):
# haproxy_bin: haproxy
# supervisord_bin: supervisord
# supervisorctl_bin: supervisorctl
# python_bin: python3
# Folder of package archives to install from (default: $SARGE_HOME/dist):
# python_dist: /path/to/dist
# Seconds a new instance may take to start listening:
# ready_timeout: 30
# Seconds old instances get to finish open requests after the switch:
# drain_timeout: 10
# Bytes an app tarball may unpack to (also bounded by the free disk space):
# max_unpacked_bytes: 2147483648
# Each program's log rotates at this size, keeping log_backups old files:
# log_max_bytes: 52428800
# log_backups: 5
# Releases that keep their app folder and virtualenv for rollback:
# keep_releases: 5
# Seconds the Procfile's release: command may run:
# release_timeout: 300
# Seconds a release prepared by `deploy --prepare` waits for `sarge switch`:
# prepared_timeout: 600
# HTTP check a new instance must pass (a 2xx answer) before it gets traffic;
# add host: NAME to send that Host header instead of localhost:
# healthcheck:
#   web: {{path: /up, timeout: 30}}
"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_yaml_exact_text() {
        let expected = r#"# sarge settings. Changes take effect at the next deploy.

# Ports handed to new deployments, [first, last]. Every process of a new
# deployment listens on a fresh port from this range.
port_range: [7010, 7099]

# The stable address haproxy listens on for each process type, routed to
# whichever deployment is live. Must lie outside port_range. Keys are
# Procfile process names: 1 to 40 letters, digits, '_', '.' or '-'.
# Use "*:PORT" to listen on every interface.
port_map:
  web: 127.0.0.1:7000

# Environment variables given to every process, for example:
#   env:
#     DATABASE: "postgresql://user:pw@localhost:5432/db_name"
env: {}

# Optional settings, shown with their defaults.
# Programs sarge runs (looked up on $PATH unless given as a full path):
# haproxy_bin: haproxy
# supervisord_bin: supervisord
# supervisorctl_bin: supervisorctl
# python_bin: python3
# Folder of package archives to install from (default: $SARGE_HOME/dist):
# python_dist: /path/to/dist
# Seconds a new instance may take to start listening:
# ready_timeout: 30
# Seconds old instances get to finish open requests after the switch:
# drain_timeout: 10
# Bytes an app tarball may unpack to (also bounded by the free disk space):
# max_unpacked_bytes: 2147483648
# Each program's log rotates at this size, keeping log_backups old files:
# log_max_bytes: 52428800
# log_backups: 5
# Releases that keep their app folder and virtualenv for rollback:
# keep_releases: 5
# Seconds the Procfile's release: command may run:
# release_timeout: 300
# Seconds a release prepared by `deploy --prepare` waits for `sarge switch`:
# prepared_timeout: 600
# HTTP check a new instance must pass (a 2xx answer) before it gets traffic;
# add host: NAME to send that Host header instead of localhost:
# healthcheck:
#   web: {path: /up, timeout: 30}
"#;
        assert_eq!(Config::default_yaml(7000), expected);
    }
}
