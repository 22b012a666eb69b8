//! A deploy in two phases, for several servers switched together (`sarge
//! push`): `sarge deploy --prepare` does the slow, failure-prone part
//! (upload, install, release command, start, ready) and leaves the new
//! instances running beside the old ones with nothing switched; `sarge
//! switch vN` then does what takes milliseconds (haproxy switch, verify,
//! commit, drain), or `sarge discard vN` removes them. A prepared release
//! nobody switches is discarded by the first command after
//! `prepared_timeout`, so a client that vanished leaks nothing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sarge_supervisor::Client;

use crate::error::{Error, Result};
use crate::lock::HomeLock;
use crate::progress::{Event, Progress, Steps};
use crate::release::{Release, ReleaseId};
use crate::rollout::RolledOut;
use crate::state::{CurrentInstances, PreparedRelease};
use crate::Sarge;

impl Sarge {
    /// Switches to release `release`, prepared by
    /// [`Sarge::prepare`](crate::Sarge::prepare): its running instances
    /// replace the current ones of their processes with the same
    /// zero-downtime switch as a deploy, verified. It must have been
    /// prepared on top of the release that is current now. On failure its
    /// instances are removed and the current release keeps serving.
    pub fn switch(&self, release: ReleaseId, progress: &mut dyn Progress) -> Result<RolledOut> {
        let mut steps = Steps::new(progress);
        let supervisor = self.supervisor_checked()?;
        let lock = HomeLock::acquire(&self.home, &mut steps)?;
        self.clean_leftovers(&supervisor, &mut steps)?;
        let mut current = CurrentInstances::load(&self.home)?;
        let prepared = Self::prepared_as(&current, release)?;
        if prepared.based_on != current.release {
            self.discard_prepared(&supervisor, &mut current)?;
            return Err(Error::PreparedStale {
                id: release,
                based_on: describe(prepared.based_on),
                current: describe(current.release),
            });
        }
        let switched = Release::load(&self.home, release).and_then(|made| {
            let started = self.resume_rollout(&supervisor, &prepared)?;
            self.finish_rollout(&lock, &supervisor, &made, started, &mut steps)
        });
        if switched.is_err() {
            // Its instances are gone with the failed rollout; so is it.
            let mut current = CurrentInstances::load(&self.home)?;
            if current.prepared.as_ref() == Some(&prepared) {
                let _ = self.discard_prepared(&supervisor, &mut current);
            }
        }
        switched
    }

    /// Removes release `release`, prepared and never switched: its
    /// instances and its folder. The current release is not touched.
    pub fn discard(&self, release: ReleaseId, progress: &mut dyn Progress) -> Result<()> {
        let mut steps = Steps::new(progress);
        let supervisor = self.supervisor_checked()?;
        let _lock = HomeLock::acquire(&self.home, &mut steps)?;
        self.clean_leftovers(&supervisor, &mut steps)?;
        let mut current = CurrentInstances::load(&self.home)?;
        Self::prepared_as(&current, release)?;
        self.discard_prepared(&supervisor, &mut current)?;
        steps.report(Event::Discarded { release });
        Ok(())
    }

    /// The prepared release, if it is `release`.
    fn prepared_as(current: &CurrentInstances, release: ReleaseId) -> Result<PreparedRelease> {
        match &current.prepared {
            Some(prepared) if prepared.release == release => Ok(prepared.clone()),
            other => Err(Error::NotPrepared {
                id: release,
                prepared: describe(other.as_ref().map(|prepared| prepared.release)),
            }),
        }
    }

    /// Takes the prepared release out of `current` (saved), then removes
    /// its instances and folder.
    pub(crate) fn discard_prepared(
        &self,
        supervisor: &Client,
        current: &mut CurrentInstances,
    ) -> Result<()> {
        let Some(prepared) = current.prepared.take() else {
            return Ok(());
        };
        current.save(&self.home)?;
        self.remove_prepared(supervisor, &prepared)
    }

    /// Removes the instances and folder of `prepared`, no longer named by
    /// the state (what is left is a leftover the next command removes).
    pub(crate) fn remove_prepared(
        &self,
        supervisor: &Client,
        prepared: &PreparedRelease,
    ) -> Result<()> {
        for id in prepared.instance_ids() {
            self.remove_instance(supervisor, id)?;
        }
        sarge_venv::remove_tree(&self.home.release_dir(prepared.release))?;
        Ok(())
    }

    /// When a release prepared now expires, in seconds since the epoch.
    pub(crate) fn prepared_expiry(&self) -> u64 {
        unix_seconds(SystemTime::now() + self.config.prepared_timeout)
    }
}

impl PreparedRelease {
    /// How long ago it expired, if it did.
    pub(crate) fn expired_for(&self) -> Option<Duration> {
        let now = unix_seconds(SystemTime::now());
        (now >= self.expires).then(|| Duration::from_secs(now - self.expires))
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn describe(release: Option<ReleaseId>) -> String {
    release.map_or_else(|| "none".to_owned(), |id| id.to_string())
}
