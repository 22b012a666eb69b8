//! Choosing the next port: a pure search plus a probe of the real machine.

use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;

/// The next free port after `last` (sequential, wrapping from range end to
/// start), skipping ports for which `is_taken` is true. `None` if every port
/// is taken.
///
/// With `last` of `None`, or outside `range`, the search starts at the
/// range's first port. `last` itself is tried last, so a one-port range can
/// hand out the same port again once it is free.
///
/// Handing ports out in turn, rather than always the lowest free one, keeps
/// a just-stopped instance's port from being reused at once, while clients
/// may still hold connections to it.
pub fn next_free_port(
    range: RangeInclusive<u16>,
    last: Option<u16>,
    mut is_taken: impl FnMut(u16) -> bool,
) -> Option<u16> {
    let (first, end) = (u32::from(*range.start()), u32::from(*range.end()));
    if first > end {
        return None;
    }
    let size = end - first + 1;
    // Offset within the range of the first candidate.
    let start = match last.map(u32::from) {
        Some(last) if (first..=end).contains(&last) => last - first + 1,
        _ => 0,
    };
    (0..size)
        .map(|step| first + (start + step) % size)
        .filter_map(|port| u16::try_from(port).ok())
        .find(|port| !is_taken(*port))
}

/// True if nothing on this machine is listening on or bound to
/// `127.0.0.1:port` or `0.0.0.0:port`.
///
/// Each address is bound once and released at once. The answer can be out
/// of date by the time the port is used; it only steers allocation away
/// from ports some other program already holds.
pub fn port_is_bindable(port: u16) -> bool {
    [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED]
        .into_iter()
        .all(|ip| TcpListener::bind((ip, port)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_first_port_without_history() {
        assert_eq!(next_free_port(5010..=5019, None, |_| false), Some(5010));
    }

    #[test]
    fn hands_out_ports_in_turn() {
        let mut last = None;
        let mut handed_out = Vec::new();
        for _ in 0..4 {
            last = next_free_port(5010..=5012, last, |_| false);
            handed_out.push(last.unwrap());
        }
        assert_eq!(handed_out, [5010, 5011, 5012, 5010]);
    }

    #[test]
    fn wraps_from_range_end_to_start() {
        assert_eq!(
            next_free_port(5010..=5019, Some(5019), |_| false),
            Some(5010)
        );
    }

    #[test]
    fn skips_taken_ports_and_wraps_past_them() {
        let taken = [5018, 5019, 5010];
        assert_eq!(
            next_free_port(5010..=5019, Some(5017), |p| taken.contains(&p)),
            Some(5011)
        );
    }

    #[test]
    fn asks_about_every_port_once_in_order() {
        let mut asked = Vec::new();
        let found = next_free_port(5010..=5013, Some(5011), |p| {
            asked.push(p);
            true
        });
        assert_eq!(found, None);
        assert_eq!(asked, [5012, 5013, 5010, 5011]);
    }

    #[test]
    fn last_port_is_reused_when_it_is_the_only_free_one() {
        assert_eq!(
            next_free_port(5010..=5012, Some(5011), |p| p != 5011),
            Some(5011)
        );
        assert_eq!(
            next_free_port(5010..=5010, Some(5010), |_| false),
            Some(5010)
        );
    }

    #[test]
    fn last_port_outside_range_restarts_at_first() {
        assert_eq!(
            next_free_port(6000..=6009, Some(5015), |_| false),
            Some(6000)
        );
        assert_eq!(
            next_free_port(6000..=6009, Some(7000), |_| false),
            Some(6000)
        );
    }

    #[test]
    fn handles_range_at_the_top_of_the_port_space() {
        assert_eq!(
            next_free_port(65534..=65535, Some(65535), |_| false),
            Some(65534)
        );
        assert_eq!(
            next_free_port(65534..=65535, Some(65534), |_| false),
            Some(65535)
        );
    }

    #[test]
    #[allow(clippy::reversed_empty_ranges)]
    fn empty_range_has_no_port() {
        assert_eq!(next_free_port(5010..=5009, None, |_| false), None);
    }

    #[test]
    fn port_held_by_a_listener_is_not_bindable() {
        for ip in [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED] {
            let listener = TcpListener::bind((ip, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            assert!(!port_is_bindable(port), "{ip}:{port} is held");
            drop(listener);
            assert!(port_is_bindable(port), "{ip}:{port} was released");
        }
    }
}
