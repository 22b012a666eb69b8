//! The range of ports that new deployments draw from.

use std::fmt;
use std::ops::RangeInclusive;

/// Inclusive range of ports handed to new deployments (`port_range` key).
///
/// Parsed configs always have `first <= last`, both within `1024..=65535`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (inclusive).
    pub last: u16,
}

impl PortRange {
    /// True if `port` lies within the range.
    pub fn contains(&self, port: u16) -> bool {
        self.as_range().contains(&port)
    }

    /// Number of ports in the range.
    pub fn len(&self) -> usize {
        // usize because a hand-built 0..=65535 holds 65536 ports.
        (usize::from(self.last) + 1).saturating_sub(usize::from(self.first))
    }

    /// True if the range holds no port (only possible when built by hand
    /// with `first > last`).
    pub fn is_empty(&self) -> bool {
        self.first > self.last
    }

    /// The same range as a standard [`RangeInclusive`].
    pub fn as_range(&self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

/// Written the way it appears in `sarge.yaml`: `[5010, 5099]`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_len_and_display() {
        let range = PortRange {
            first: 5010,
            last: 5099,
        };
        assert!(range.contains(5010));
        assert!(range.contains(5099));
        assert!(!range.contains(5009));
        assert!(!range.contains(5100));
        assert_eq!(range.len(), 90);
        assert!(!range.is_empty());
        assert_eq!(range.as_range(), 5010..=5099);
        assert_eq!(range.to_string(), "[5010, 5099]");
    }

    #[test]
    fn full_and_inverted_ranges_do_not_overflow() {
        let full = PortRange {
            first: 0,
            last: u16::MAX,
        };
        assert_eq!(full.len(), 65536);
        let inverted = PortRange { first: 10, last: 9 };
        assert_eq!(inverted.len(), 0);
        assert!(inverted.is_empty());
    }
}
