//! Stable addresses: where haproxy listens for one process type.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use crate::error::Error;

/// A `host:port` that haproxy listens on for one process type (a
/// `port_map` value). It stays the same across deployments.
///
/// `"127.0.0.1:5000"` has host `Some("127.0.0.1")`, `"*:5000"` has host
/// `None` (all interfaces), `"[::1]:5000"` has host `Some("::1")`.
/// [`Display`](fmt::Display) writes the same forms back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StableAddress {
    /// Host name or IP address; `None` means every interface (`*`).
    /// IPv6 addresses are stored without brackets.
    pub host: Option<String>,
    /// TCP port, never 0.
    pub port: u16,
}

impl StableAddress {
    /// True if haproxy binding both addresses would collide: same port and
    /// either the same host or one of them listening on every interface.
    pub fn overlaps(&self, other: &StableAddress) -> bool {
        if self.port != other.port {
            return false;
        }
        match (self.host.as_deref(), other.host.as_deref()) {
            (Some(a), Some(b)) => {
                a.eq_ignore_ascii_case(b) || is_wildcard_host(a) || is_wildcard_host(b)
            }
            _ => true,
        }
    }
}

/// Binding `0.0.0.0` or `::` takes the port on every interface, just like `*`.
fn is_wildcard_host(host: &str) -> bool {
    host == "0.0.0.0" || host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_unspecified())
}

impl fmt::Display for StableAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            None => write!(f, "*:{}", self.port),
            Some(host) if host.contains(':') => write!(f, "[{host}]:{}", self.port),
            Some(host) => write!(f, "{host}:{}", self.port),
        }
    }
}

impl FromStr for StableAddress {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = |reason| Error::BadAddress {
            address: text.to_owned(),
            reason,
        };
        let (host_text, port_text) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port, e.g. 127.0.0.1:5000 or *:5000"))?;
        let host = if host_text == "*" {
            None
        } else if let Some(bracketed) = host_text.strip_prefix('[') {
            let inner = bracketed
                .strip_suffix(']')
                .ok_or_else(|| bad("missing ']' after the IPv6 address"))?;
            inner
                .parse::<Ipv6Addr>()
                .map_err(|_| bad("not a valid IPv6 address inside [ ]"))?;
            Some(inner.to_owned())
        } else if host_text.is_empty() {
            return Err(bad("the host is empty; use * for every interface"));
        } else if host_text.contains(':') {
            return Err(bad("IPv6 addresses need brackets, e.g. [::1]:5000"));
        } else if !host_text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            // The host ends up verbatim in haproxy.cfg, so anything beyond
            // host-name characters could change its meaning.
            return Err(bad(
                "the host may only contain letters, digits, '.', '-' and '_'",
            ));
        } else {
            Some(host_text.to_owned())
        };
        let port = port_text
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| port_text.parse::<u16>().ok())
            .flatten()
            .filter(|port| *port != 0)
            .ok_or_else(|| bad("the port must be a number in 1..=65535"))?;
        Ok(StableAddress { host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> StableAddress {
        text.parse().unwrap()
    }

    fn parse_err(text: &str) -> String {
        text.parse::<StableAddress>().unwrap_err().to_string()
    }

    #[test]
    fn parses_host_port_forms_and_displays_them_back() {
        let cases = [
            ("127.0.0.1:5000", Some("127.0.0.1"), 5000),
            ("*:5000", None, 5000),
            ("[::1]:5000", Some("::1"), 5000),
            ("localhost:65535", Some("localhost"), 65535),
            ("my-host.example_1:1", Some("my-host.example_1"), 1),
        ];
        for (text, host, port) in cases {
            let address = parse(text);
            assert_eq!(address.host.as_deref(), host, "{text}");
            assert_eq!(address.port, port, "{text}");
            assert_eq!(address.to_string(), text);
        }
    }

    #[test]
    fn rejects_text_that_is_not_host_port() {
        let cases = [
            (
                "foo",
                r#""foo" is not host:port (expected host:port, e.g. 127.0.0.1:5000 or *:5000)"#,
            ),
            (
                "5000",
                r#""5000" is not host:port (expected host:port, e.g. 127.0.0.1:5000 or *:5000)"#,
            ),
            (
                ":5000",
                r#"":5000" is not host:port (the host is empty; use * for every interface)"#,
            ),
            (
                "::1:5000",
                r#""::1:5000" is not host:port (IPv6 addresses need brackets, e.g. [::1]:5000)"#,
            ),
            (
                "[::1:5000",
                r#""[::1:5000" is not host:port (missing ']' after the IPv6 address)"#,
            ),
            (
                "[zz]:5000",
                r#""[zz]:5000" is not host:port (not a valid IPv6 address inside [ ])"#,
            ),
            (
                "a b:5000",
                r#""a b:5000" is not host:port (the host may only contain letters, digits, '.', '-' and '_')"#,
            ),
            (
                "h:0",
                r#""h:0" is not host:port (the port must be a number in 1..=65535)"#,
            ),
            (
                "h:65536",
                r#""h:65536" is not host:port (the port must be a number in 1..=65535)"#,
            ),
            (
                "h:+50",
                r#""h:+50" is not host:port (the port must be a number in 1..=65535)"#,
            ),
            (
                "h:",
                r#""h:" is not host:port (the port must be a number in 1..=65535)"#,
            ),
        ];
        for (text, message) in cases {
            assert_eq!(parse_err(text), message);
        }
    }

    #[test]
    fn overlap_means_same_port_and_same_or_wildcard_host() {
        let overlapping = [
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("*:5000", "127.0.0.1:5000"),
            ("127.0.0.1:5000", "*:5000"),
            ("0.0.0.0:5000", "10.0.0.1:5000"),
            ("[::]:5000", "[::1]:5000"),
            ("LOCALHOST:5000", "localhost:5000"),
        ];
        for (a, b) in overlapping {
            assert!(parse(a).overlaps(&parse(b)), "{a} vs {b}");
        }
        let separate = [
            ("127.0.0.1:5000", "127.0.0.1:5001"),
            ("127.0.0.1:5000", "10.0.0.1:5000"),
            ("*:5000", "*:5001"),
        ];
        for (a, b) in separate {
            assert!(!parse(a).overlaps(&parse(b)), "{a} vs {b}");
        }
    }
}
