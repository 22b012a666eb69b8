//! `sarge scale web=3`: how many instances each process runs, changed as
//! a release like every other change. The running instances stay; new
//! ones join the stable address once ready, retired ones leave it and
//! drain before they stop.

use std::fmt;
use std::str::FromStr;

use crate::error::{excerpt, Error, Result};
use crate::progress::Progress;
use crate::rollout::{RolledOut, Rollout, RolloutPlan};
use crate::{ProcessName, Sarge};

/// The most instances one process may run: far more than one server
/// needs, and a typo (`web=300000`) is refused before any port is looked at.
pub const MAX_INSTANCES: u32 = 1000;

/// How many instances a process runs: the `PROCESS=COUNT` argument of
/// `sarge scale`.
///
/// ```
/// use sarge_core::Scale;
///
/// let scale: Scale = "web=3".parse().unwrap();
/// assert_eq!((scale.process.as_str(), scale.count), ("web", 3));
/// assert!("web=-1".parse::<Scale>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scale {
    /// The process type.
    pub process: ProcessName,
    /// How many instances it runs; 0 stops it, and it stays in the release.
    pub count: u32,
}

impl Scale {
    /// `process` at `count` instances.
    pub fn new(process: ProcessName, count: u32) -> Self {
        Scale { process, count }
    }
}

impl FromStr for Scale {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |problem: String| Error::BadScale { problem };
        let Some((process, count)) = text.split_once('=') else {
            return Err(bad(format!(
                "{:?} is not PROCESS=COUNT: write e.g. web=3",
                excerpt(text)
            )));
        };
        let process: ProcessName = process
            .parse()
            .map_err(|error| bad(format!("{:?}: {error}", excerpt(text))))?;
        let count = count
            .parse::<u32>()
            .ok()
            .filter(|count| *count <= MAX_INSTANCES)
            .ok_or_else(|| {
                bad(format!(
                    "{:?}: the count of {process} must be a whole number from 0 to {MAX_INSTANCES}",
                    excerpt(text)
                ))
            })?;
        Ok(Scale { process, count })
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.process, self.count)
    }
}

impl Sarge {
    /// Runs each process of `scales` at its count, as a new release with
    /// the same code, virtualenv and env, with no failed request: new
    /// instances are started and join the stable address once ready; the
    /// newest instances beyond a lower count leave it, drain, and stop.
    /// The others keep running untouched. Nothing changes if any process
    /// is not in the current release, is named twice, or `port_range`
    /// cannot hold the new instances.
    pub fn scale(&self, scales: &[Scale], progress: &mut dyn Progress) -> Result<RolledOut> {
        if scales.is_empty() {
            return Err(Error::BadScale {
                problem: "nothing to scale: give PROCESS=COUNT, e.g. web=3".to_owned(),
            });
        }
        let mut plan = RolloutPlan::new(format!(
            "scale {}",
            scales
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .how(Rollout::Resize);
        for scale in scales {
            if plan.counts.contains_key(&scale.process) {
                return Err(Error::BadScale {
                    problem: format!("{} is named twice", scale.process),
                });
            }
            plan = plan.count(scale.process.clone(), scale.count);
        }
        // The env the running instances have (the plan's default), so kept
        // and new instances of the release run alike (a `config set
        // --no-restart` waits for the next restart or deploy).
        plan.processes = plan.counts.keys().cloned().collect();
        self.roll_out(&plan, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_process_equals_count() {
        let scale: Scale = "worker=0".parse().unwrap();
        assert_eq!(scale.to_string(), "worker=0");
        assert_eq!("web=1000".parse::<Scale>().unwrap().count, 1000);
    }

    #[test]
    fn refuses_each_bad_argument_naming_it() {
        for (text, expected) in [
            ("web", "\"web\" is not PROCESS=COUNT"),
            (
                "web=x",
                "\"web=x\": the count of web must be a whole number",
            ),
            (
                "web=-1",
                "\"web=-1\": the count of web must be a whole number",
            ),
            ("web=", "\"web=\": the count of web"),
            ("web=1001", "from 0 to 1000"),
            ("=3", "\"=3\""),
            ("w b=3", "\"w b=3\""),
        ] {
            let error = text.parse::<Scale>().unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
