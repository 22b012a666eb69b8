//! [`ProcessName`]: the one rule for a process type's name, checked once
//! where the name enters sarge (a `sarge.yaml` key, a Procfile line, the
//! command line) and carried as a type after that.
//!
//! A process name is the root of every other name sarge makes for it, so
//! the rule is the strictest that keeps all of them valid:
//!
//! | derived name | where | longest |
//! |---|---|---|
//! | instance id `NAME-xxxxxx` | supervisord program name, `var/instances/ID` | 47 |
//! | `ID.conf`, `ID.log`, `ID.log.N` | `etc/supervisor.d`, `var/log` | 53 |
//! | `fe_NAME`, `be_NAME` | haproxy proxy names | 43 |
//!
//! Charset: supervisord program names and sarge's file names allow ASCII
//! letters, digits, `_`, `.` and `-` (haproxy also allows `:`); a leading
//! letter or digit keeps names from reading as options (`-x`) or hidden or
//! relative files (`.x`, `..`). Length: 40. sarge-supervisor takes program
//! names up to 64, so today's instance ids fit with 17 characters to spare
//! for a longer id suffix; file names (255 bytes) and haproxy (no limit) are
//! far off. 40 is also the limit deploys have always enforced, so no name
//! that ever deployed becomes invalid.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use crate::error::Error;

/// A valid process name: 1 to [`ProcessName::MAX_LEN`] ASCII letters,
/// digits, `_`, `.` or `-`, starting with a letter or digit (see
/// [`ProcessName::RULE`]).
///
/// Made only by parsing (`"web".parse::<ProcessName>()`), so holding one
/// means the name was checked. It derefs and [`Borrow`]s as `str`, so maps
/// keyed by it are looked up with a plain `&str`:
///
/// ```
/// use std::collections::BTreeMap;
/// use sarge_config::ProcessName;
///
/// let web: ProcessName = "web".parse()?;
/// let routes = BTreeMap::from([(web, 5000)]);
/// assert_eq!(routes.get("web"), Some(&5000));
///
/// let error = "w".repeat(41).parse::<ProcessName>().unwrap_err();
/// assert!(error.to_string().contains("it is 41 characters long"));
/// # Ok::<(), sarge_config::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessName(String);

impl ProcessName {
    /// The most characters a process name may have.
    pub const MAX_LEN: usize = 40;

    /// The rule in words, as error messages state it.
    pub const RULE: &'static str = "a process name is 1 to 40 characters: \
        ASCII letters, digits, '_', '.' or '-', starting with a letter or digit";

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Why `name` breaks the rule, or `None` if it keeps it.
fn problem(name: &str) -> Option<String> {
    let first = name.chars().next()?;
    if !first.is_ascii_alphanumeric() {
        return Some(format!("it starts with {first:?}"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Some(format!("it contains {bad:?}"));
    }
    // Only ASCII is left, so bytes are characters.
    (name.len() > ProcessName::MAX_LEN).then(|| format!("it is {} characters long", name.len()))
}

impl FromStr for ProcessName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        let problem = if name.is_empty() {
            Some("it is empty".to_owned())
        } else {
            problem(name)
        };
        match problem {
            None => Ok(ProcessName(name.to_owned())),
            Some(problem) => Err(Error::InvalidProcessName {
                name: name.to_owned(),
                problem,
            }),
        }
    }
}

impl fmt::Display for ProcessName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: a width in the format (a table column)
        // applies to the name.
        f.pad(&self.0)
    }
}

impl AsRef<str> for ProcessName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ProcessName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Read-only: no `DerefMut`, so the checked text cannot be changed.
impl Deref for ProcessName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ProcessName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ProcessName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<ProcessName> for str {
    fn eq(&self, other: &ProcessName) -> bool {
        self == other.0
    }
}

impl PartialEq<ProcessName> for &str {
    fn eq(&self, other: &ProcessName) -> bool {
        *self == other.0
    }
}

impl From<ProcessName> for String {
    fn from(name: ProcessName) -> String {
        name.0
    }
}

/// Written as the plain string, so a file that holds names reads the same
/// whether or not its writer knew this type.
#[cfg(feature = "serde")]
impl serde::Serialize for ProcessName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Read from a plain string through [`FromStr`]: a name that breaks the
/// rule fails with the rule's message, which the reader puts beside the
/// file's name.
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for ProcessName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl serde::de::Visitor<'_> for NameVisitor {
            type Value = ProcessName;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a process name")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<ProcessName, E> {
                name.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(name: &str) -> String {
        name.parse::<ProcessName>().unwrap_err().to_string()
    }

    #[test]
    fn a_width_pads_the_name_as_it_pads_a_str() {
        let web: ProcessName = "web".parse().unwrap();
        assert_eq!(format!("[{web:<6}]"), "[web   ]");
        assert_eq!(format!("[{web:>6}]"), "[   web]");
    }

    #[test]
    fn the_limit_is_40_characters() {
        let at_limit = "w".repeat(ProcessName::MAX_LEN);
        assert_eq!(ProcessName::MAX_LEN, 40);
        assert_eq!(at_limit.parse::<ProcessName>().unwrap(), at_limit.as_str());
        assert_eq!(
            error(&"w".repeat(41)),
            format!(
                "{:?} is not a valid process name: it is 41 characters long ({})",
                "w".repeat(41),
                ProcessName::RULE
            )
        );
        assert!(ProcessName::RULE.contains(&format!("1 to {} characters", ProcessName::MAX_LEN)));
    }

    #[test]
    fn every_derived_name_fits_the_limits_downstream() {
        let longest = "w".repeat(ProcessName::MAX_LEN);
        // The instance id deploys make: supervisord program name, folder.
        let id = format!("{longest}-0a1b2c");
        // sarge-supervisor's program-name limit.
        assert!(id.len() <= 64, "{id}");
        // The longest file name: a rotated log.
        assert!(format!("{id}.log.10").len() <= 255);
    }

    #[test]
    fn accepts_letters_digits_and_inner_punctuation() {
        for name in ["web", "9worker", "Web", "web-2.v_1", "a", "a..b", "web."] {
            assert_eq!(name.parse::<ProcessName>().unwrap().as_str(), name);
        }
    }

    #[test]
    fn refuses_naming_what_is_wrong() {
        for (name, problem) in [
            ("", "it is empty"),
            ("_web", "it starts with '_'"),
            ("-web", "it starts with '-'"),
            (".web", "it starts with '.'"),
            ("..", "it starts with '.'"),
            ("we b", "it contains ' '"),
            ("web/x", "it contains '/'"),
            ("web:1", "it contains ':'"),
            ("wéb", "it contains 'é'"),
            ("web\n", "it contains '\\n'"),
        ] {
            assert_eq!(
                error(name),
                format!(
                    "{name:?} is not a valid process name: {problem} ({})",
                    ProcessName::RULE
                )
            );
        }
    }

    #[test]
    fn long_names_are_echoed_cut_short() {
        let message = error(&"x".repeat(10_000));
        assert!(
            message.starts_with(&format!("\"{}...\" (10000 bytes) is not", "x".repeat(60))),
            "{message}"
        );
    }

    #[test]
    fn maps_keyed_by_name_are_looked_up_by_str() {
        let map = std::collections::BTreeMap::from([("web".parse::<ProcessName>().unwrap(), 1)]);
        assert_eq!(map.get("web"), Some(&1));
        assert!(!map.contains_key("api"));
    }
}
