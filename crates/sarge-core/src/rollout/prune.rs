//! Releases beyond `keep_releases`, and folders no kept release runs.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::release::{Release, ReleaseId};
use crate::state::CurrentInstances;
use crate::Sarge;

impl Sarge {
    /// Keeps the newest `keep_releases` releases of the history (the
    /// current one always) and the folders whose code a kept release
    /// runs; removes the rest.
    pub(crate) fn prune_releases(&self, current: &mut CurrentInstances) -> Result<()> {
        let keep = usize::try_from(self.config.keep_releases.max(1)).unwrap_or(usize::MAX);
        if current.history.len() > keep {
            let cut = current.history.len() - keep;
            current.history.drain(..cut);
            current.save(&self.home)?;
        }
        self.remove_unkept_releases(current).map(drop)
    }

    /// Removes every release folder neither in the history nor holding
    /// code a release of the history runs (abandoned deploys, pruned
    /// releases), except uploads still being read.
    pub(crate) fn remove_unkept_releases(&self, current: &CurrentInstances) -> Result<Vec<String>> {
        let mut kept: BTreeSet<ReleaseId> = current.history.iter().copied().collect();
        kept.extend(current.prepared.as_ref().map(|prepared| prepared.release));
        for id in kept.clone().iter() {
            if let Ok(release) = Release::load(&self.home, *id) {
                kept.extend(release.processes.values().map(|spec| spec.code));
            }
        }
        let mut removed = Vec::new();
        let dir = self.home.releases_dir();
        if !dir.is_dir() {
            return Ok(removed);
        }
        for entry in fs_err::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let path = dir.join(&name);
            let keep = match name.parse::<ReleaseId>() {
                Ok(id) => kept.contains(&id),
                // An upload another deploy is still reading, or claiming.
                Err(_) => {
                    crate::lock::UploadMark::is_held(&path)
                        || crate::lock::UploadMark::is_being_claimed(&path)
                }
            };
            if !keep {
                sarge_venv::remove_tree(&path)?;
                if let Ok(id) = name.parse::<ReleaseId>() {
                    if !current.history.contains(&id) {
                        let _ = fs_err::remove_file(self.home.release_output(id));
                    }
                }
                removed.push(name);
            }
        }
        Ok(removed)
    }
}
