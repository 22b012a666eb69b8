//! A rollout's new instances: their folder, port, launcher and supervisord
//! program, and their removal if the rollout never commits.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::DirBuilderExt;
use std::time::SystemTime;

use camino::Utf8Path;
use sarge_supervisor::{Client, Program};

use super::ProcessRollout;
use crate::error::{Error, Result};
use crate::launcher::{launcher_path, write_launcher};
use crate::release::{ProcessSpec, Release, ReleaseId};
use crate::state::InstanceRecord;
use crate::timestamp::rfc3339;
use crate::{ProcessName, Sarge};

/// The environment variable that holds an instance's id.
pub const INSTANCE_VARIABLE: &str = "SARGE_INSTANCE";

/// Six random hex digits, for instance and upload folder names.
pub(crate) fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS: a cheap, dependency-free source
    // of unique names.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0),
    );
    format!("{:06x}", hasher.finish() & 0xff_ffff)
}

/// Removes the instances of a rollout that never became current, unless
/// the rollout committed (it then empties the list).
pub(super) struct PendingInstances<'a> {
    pub(super) sarge: &'a Sarge,
    pub(super) supervisor: &'a Client,
    pub(super) ids: Vec<String>,
}

impl Drop for PendingInstances<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.sarge.remove_instance(self.supervisor, id);
        }
    }
}

impl Sarge {
    /// A new instance of `process` running `spec` with `env`: its folder,
    /// port, record, launcher and supervisord program, listed in `pending`
    /// from the moment its folder exists. supervisord takes it at its next
    /// `reloadConfig`.
    pub(super) fn create_instance(
        &self,
        release: ReleaseId,
        process: &ProcessName,
        spec: &ProcessSpec,
        env: &BTreeMap<String, String>,
        pending: &mut PendingInstances<'_>,
    ) -> Result<InstanceRecord> {
        let port = self.allocate_port()?;
        let id = self.claim_instance_dir(process)?;
        pending.ids.push(id.clone());
        let record = InstanceRecord {
            id: id.clone(),
            process: process.clone(),
            port,
            created: rfc3339(SystemTime::now()),
            command: spec.command.clone(),
            venv: spec.venv.clone(),
            release: Some(release),
        };
        record.save(&self.home)?;
        let mut instance_env = env.clone();
        instance_env.insert("PORT".to_owned(), port.to_string());
        // Which instance this is, as Heroku's DYNO says: also how
        // `bin/supervisord` names what a killed supervisord left.
        instance_env.insert(INSTANCE_VARIABLE.to_owned(), id.clone());
        let venv_bin = spec
            .venv
            .as_ref()
            .map(|venv| self.home.venvs_dir().join(venv).join("bin"));
        let app_dir = Release::app_dir(&self.home, spec);
        write_launcher(
            &self.home.instance_dir(&id),
            &app_dir,
            &instance_env,
            venv_bin.as_deref(),
            &spec.command,
        )?;
        self.write_program(&id, &app_dir)?;
        Ok(record)
    }

    /// A new, empty instance folder; created here so two rollouts never
    /// share an id.
    fn claim_instance_dir(&self, process: &str) -> Result<String> {
        crate::privacy::create_private_dir(&self.home.instances_dir())?;
        loop {
            let id = format!("{process}-{}", random_hex());
            match std::fs::DirBuilder::new()
                .mode(crate::privacy::PRIVATE_DIR)
                .create(self.home.instance_dir(&id))
            {
                Ok(()) => return Ok(id),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Writes the supervisord program file of instance `id`.
    fn write_program(&self, id: &str, app_dir: &Utf8Path) -> Result<()> {
        let program = Program {
            name: id.to_owned(),
            command: vec![launcher_path(&self.home.instance_dir(id)).to_string()],
            directory: app_dir.to_owned(),
            log_file: self.home.program_log(id),
            autostart: true,
            autorestart: true,
            start_secs: 1,
            start_retries: 3,
            stop_wait_secs: 10,
            stop_as_group: true,
            log_max_bytes: self.config.log_max_bytes,
            log_backups: self.config.log_backups,
        };
        crate::state::write_atomic(
            &self.home.program_file(id),
            program.render()?.as_bytes(),
            crate::privacy::PRIVATE_FILE,
        )
    }

    /// Fails, naming the processes, if `port_range` has fewer ports no
    /// instance holds than the plans start instances.
    pub(super) fn check_port_capacity(&self, plans: &[ProcessRollout]) -> Result<()> {
        let needed: usize = plans.iter().map(|plan| plan.to_start).sum();
        if needed == 0 {
            return Ok(());
        }
        let used = self.used_ports()?;
        let range = self.config.port_range.as_range();
        let free = range.filter(|port| !used.contains(port)).count();
        if free >= needed {
            return Ok(());
        }
        Err(Error::PortsTooFew {
            needed,
            free,
            first: self.config.port_range.first,
            last: self.config.port_range.last,
            processes: plans
                .iter()
                .map(|plan| plan.process.clone())
                .collect::<Vec<_>>()
                .join(", "),
            config: self.home.config_file(),
        })
    }

    /// The ports every instance folder's record holds.
    fn used_ports(&self) -> Result<BTreeSet<u16>> {
        Ok(self
            .instance_ids()?
            .iter()
            .filter_map(|id| InstanceRecord::load(&self.home, id).ok())
            .map(|record| record.port)
            .collect())
    }

    pub(crate) fn allocate_port(&self) -> Result<u16> {
        let used = self.used_ports()?;
        let allocator = sarge_ports::PortAllocator::new(
            self.home.ports_file(),
            self.config.port_range.as_range(),
        );
        let last = allocator.last_allocated()?;
        sarge_ports::next_free_port(self.config.port_range.as_range(), last, |port| {
            used.contains(&port) || !sarge_ports::port_is_bindable(port)
        })
        .ok_or(Error::Ports(sarge_ports::Error::Exhausted {
            first: self.config.port_range.first,
            last: self.config.port_range.last,
        }))
    }

    pub(crate) fn record_port(&self, port: u16) -> Result<()> {
        let allocator = sarge_ports::PortAllocator::new(
            self.home.ports_file(),
            self.config.port_range.as_range(),
        );
        allocator.record(port)?;
        Ok(())
    }
}
