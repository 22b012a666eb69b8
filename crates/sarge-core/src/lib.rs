//! The sarge deploy engine: the API the `sarge` CLI and embedders call.
//!
//! A [`Sarge`] is opened on a [`Home`] (a `$SARGE_HOME` made by [`init`])
//! and runs the other crates in order:
//! [`sarge_config`] reads `etc/sarge.yaml`, [`sarge_ports`] picks a port,
//! [`sarge_venv`] provides the virtualenv, [`sarge_supervisor`] runs the
//! process and [`sarge_haproxy`] routes its stable address to it.
//!
//! Every change is a [`Release`] (`v1`, `v2`, ...): what each process type
//! runs (code, virtualenv, command, instances) and the env. A deploy
//! ([`Sarge::deploy`]) unpacks the app once, reads its `Procfile`, installs
//! `requirements.txt` offline from `dist/` and makes a release of it; a
//! rollback ([`Sarge::rollback`]) makes a release of an older one's parts,
//! with no unpack and no install. One rollout engine takes either live:
//! new instances under supervisord with `$PORT` and the release's env,
//! ready, haproxy switched without a restart and the end state verified,
//! then the old instances drained and stopped. Until the switch nothing
//! the old instances need is touched, so any failure leaves them serving.
//! The last `keep_releases` releases keep their code and virtualenv;
//! [`Sarge::releases`] lists them. The engine itself is public: describe
//! any change as a [`RolloutPlan`] (a kept release's code, an env, counts,
//! some processes, [`Rollout::Replace`] or [`Rollout::Resize`]) and
//! [`Sarge::roll_out`] makes it a release and rolls it out the same way;
//! [`Sarge::restart`], [`Sarge::scale`], [`Sarge::set_env`] and
//! [`Sarge::rollback`] are such plans (see `examples/rollout.rs`).
//!
//! Reads only read: [`Sarge::list`], [`Sarge::releases`] and
//! [`Sarge::release_output`] show what `var/state/current.json` committed
//! and change nothing, so a leftover of a killed deploy is never shown.
//! Recovery is its own step, [`Sarge::recover`]: under the home's lock it
//! routes haproxy back to the committed instances and removes what never
//! became current. Every command that changes state (deploy, rollback,
//! destroy, start, stop) runs it first; call it yourself only to tidy a
//! home without changing anything else.
//!
//! The wheel folder answers clients: [`Sarge::dist_missing`] says which
//! requirement lines it cannot satisfy for this home's Python, and
//! [`Sarge::dist_add`] lands wheels in it atomically. On the dev machine,
//! [`push()`] deploys a git repository's HEAD to [`Target`]s over the system
//! `ssh`, sending the wheels each lacks: prepare everywhere, then switch.
//! [`setup()`] makes a server's home the same way, or upgrades the sarge in
//! it in place: it sends its own binary when the server can run it and
//! runs `init` there.
//!
//! Before `bin/supervisord` starts supervisord, [`Sarge::stop_orphans`]
//! stops the programs a supervisord that was killed left holding the ports.
//!
//! ```no_run
//! use sarge_core::{init, Home, InitOptions, Sarge, Silent};
//!
//! # fn main() -> Result<(), sarge_core::Error> {
//! let home = Home::new("/var/local/myapp");
//! init(&home, &InitOptions::default())?;
//! // ... edit etc/sarge.yaml, start bin/supervisord ...
//! let sarge = Sarge::open(home)?;
//! let tarball = std::fs::File::open("app.tar")?;
//! // Every process type of the Procfile (or name some:
//! // &["web".parse()?], a checked `ProcessName`).
//! let deployed = sarge.deploy(tarball, &[], &mut Silent)?;
//! for (instance, address) in &deployed.rolled_out.instances {
//!     println!("{} listens on {} ({address:?})", instance.id, instance.port);
//! }
//! for release in sarge.releases()? {
//!     println!("{} {}", release.id, release.description);
//! }
//! // Back to the release before, as a new release: no unpack, no install.
//! let rolled_back = sarge.rollback(None, &mut Silent)?;
//! println!("now {}", rolled_back.rolled_out.release);
//! # Ok(())
//! # }
//! ```
//!
//! # Stability
//!
//! sarge is before 1.0: a minor release (0.x to 0.(x+1)) may change this API, a patch release does not, and every change is in the changelog. What embedders may rely on: the operations of [`Sarge`] and what
//! they promise (reads only read; a failed rollout leaves the old instances
//! serving); a home made by an older release keeps working (its
//! `var/state/current.json` and `var/releases/` are read by every later
//! release, and are sarge's files, not an API to write); and the JSON shape
//! of [`InstanceStatus`] and [`ReleaseSummary`], which `sarge list --json`
//! and `sarge releases --json` print. Result and state types
//! ([`Deployed`], [`RolledOut`], [`InstanceStatus`], [`InstanceState`],
//! [`CurrentInstances`], [`Error`], ...) are `#[non_exhaustive]`: they grow
//! in minor releases, so match with `..` and `_`. Options are set through
//! [`SargeBuilder`] and [`InitOptions`] methods. The [`Progress`] lines and
//! error messages are for people.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod app_logs;
mod deploy;
mod dist;
mod durability;
mod error;
mod home;
mod init;
mod instances;
mod launcher;
mod lock;
mod logs;
mod operations;
mod orphans;
mod prepared;
mod privacy;
mod probe;
mod procfile;
mod progress;
mod push;
mod release;
mod release_command;
mod rollback;
mod rollout;
mod routing;
mod scale;
mod setup;
mod ssh;
mod state;
mod timestamp;
mod unpack;

use std::process::Command;

use camino::Utf8PathBuf;
use sarge_config::Config;
use sarge_supervisor::Client;
use sarge_venv::{Installer, VenvStore};

pub use app_logs::{LogFollower, LogLine};
pub use deploy::{Deployed, Prepared};
pub use dist::{DistAdded, DistMissing};
pub use error::{Error, Result};
pub use home::Home;
pub use init::{init, InitOptions, Initialised};
pub use instances::{InstanceState, InstanceStatus};
pub use operations::ConfigChanged;
pub use orphans::{Orphan, StoppedOrphans, SUPERVISORD_MARKER};
pub use procfile::{is_valid_process_name, Procfile};
pub use progress::{Event, Progress, Silent};
pub use push::{
    push, resolve_targets, DotEnv, PushEvent, PushOptions, PushProgress, PushReport, TargetOutcome,
    TargetReport, CLIENT_VERSION,
};
pub use release::{ProcessSpec, Release, ReleaseId, ReleaseSummary};
pub use rollback::{RollbackPlan, RolledBack};
pub use rollout::{Retirement, RolledOut, Rollout, RolloutPlan, INSTANCE_VARIABLE};
pub use sarge_config::ProcessName;
pub use scale::{Scale, MAX_INSTANCES};
pub use setup::{
    setup, Libc, ServerInfo, SetupEvent, SetupOptions, SetupProgress, SetupReport, Supervisord,
    Upload,
};
pub use ssh::{SshCommand, Target};

pub use state::{CurrentInstance, CurrentInstances, InstanceRecord, PreparedRelease};

/// An initialised `$SARGE_HOME` with its configuration loaded.
#[derive(Debug)]
pub struct Sarge {
    home: Home,
    config: Config,
    retirement: Retirement,
}

/// Opens a [`Sarge`] with options: [`Sarge::builder`], then
/// [`SargeBuilder::open`].
///
/// ```no_run
/// use sarge_core::{Home, Sarge};
/// use sarge_config::{Config, PortRange};
///
/// # fn main() -> Result<(), sarge_core::Error> {
/// let mut config = Config::new(PortRange { first: 5010, last: 5099 });
/// config.port_map.insert("web".parse()?, "127.0.0.1:5000".parse()?);
/// let sarge = Sarge::builder(Home::new("/var/local/myapp"))
///     .config(config)
///     .open()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "nothing is opened until `open` is called"]
pub struct SargeBuilder {
    home: Home,
    config: Option<Config>,
    retirement: Retirement,
}

impl SargeBuilder {
    /// Use `config` instead of reading `etc/sarge.yaml`. It is checked by
    /// the rules the file must pass ([`Config::check`]) when the builder
    /// opens.
    ///
    /// Only this [`Sarge`] uses it. Everything that runs the CLI reads
    /// the file: `bin/sarge` and `bin/supervisord` (its `supervisord_bin`,
    /// when the server boots). So either write the same settings to
    /// `etc/sarge.yaml` too, or start supervisord with this `Sarge`'s
    /// [`Sarge::supervisord_command`] and leave the CLI alone on this home.
    /// What a deploy already made (the supervisord program files, the
    /// haproxy config) does not depend on the file.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// How rollouts retire the instances they replace (default: in the
    /// command, which returns once they are gone).
    pub fn retirement(mut self, retirement: Retirement) -> Self {
        self.retirement = retirement;
        self
    }

    /// Opens the home: a home [`init`] made (else
    /// [`Error::NotInitialised`]), with the config given to
    /// [`SargeBuilder::config`] once checked, or else `etc/sarge.yaml`.
    pub fn open(self) -> Result<Sarge> {
        let Self {
            home,
            config,
            retirement,
        } = self;
        let path = home.config_file();
        // `init` always writes the file, so it marks an initialised home
        // even when the config comes from the embedder.
        if !path.exists() {
            return Err(Error::NotInitialised {
                home: home.root().to_owned(),
            });
        }
        let config = match config {
            Some(config) => {
                config.check(camino::Utf8Path::new("the config given to Sarge::builder"))?;
                config
            }
            None => Config::load(&path)?,
        };
        Ok(Sarge {
            home,
            config,
            retirement,
        })
    }
}

impl Sarge {
    /// Opens `home`, reading `etc/sarge.yaml`: the same as
    /// `Sarge::builder(home).open()`.
    pub fn open(home: Home) -> Result<Self> {
        Self::builder(home).open()
    }

    /// A builder to open `home` with options, such as a [`Config`] made in
    /// code rather than read from `etc/sarge.yaml`.
    pub fn builder(home: Home) -> SargeBuilder {
        SargeBuilder {
            home,
            config: None,
            retirement: Retirement::default(),
        }
    }

    /// The home.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The loaded `etc/sarge.yaml`.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The command that starts supervisord for this home (what
    /// `bin/supervisord` runs), with extra `args`. Run
    /// [`Sarge::stop_orphans`] first: a supervisord that died may have left
    /// programs holding the ports.
    pub fn supervisord_command(&self, args: &[String]) -> Command {
        let mut command = Command::new(self.config.supervisord_bin.as_std_path());
        command
            .arg("-c")
            .arg(self.home.supervisord_config())
            .args(args)
            // Every program inherits it: how the next start tells this
            // supervisord's processes from anyone else's once it is dead.
            .env(SUPERVISORD_MARKER, self.supervisord_marker());
        command
    }

    /// The command that runs supervisorctl against this home's supervisord
    /// (what `bin/supervisorctl` runs), with extra `args`.
    pub fn supervisorctl_command(&self, args: &[String]) -> Command {
        let mut command = Command::new(self.config.supervisorctl_bin.as_std_path());
        command
            .arg("-c")
            .arg(self.home.supervisord_config())
            .args(args);
        command
    }

    /// A supervisord client, after checking that supervisord answers.
    fn supervisor_checked(&self) -> Result<Client> {
        let client = Client::new(self.home.supervisor_socket());
        match client.state() {
            Ok(_) => Ok(client),
            Err(sarge_supervisor::Error::NotRunning { .. }) => Err(Error::SupervisordNotRunning {
                home: self.home.root().to_owned(),
            }),
            Err(other) => Err(other.into()),
        }
    }

    /// The wheel folder requirements install from.
    fn python_dist(&self) -> Utf8PathBuf {
        match &self.config.python_dist {
            Some(dist) if dist.is_absolute() => dist.clone(),
            Some(dist) => self.home.root().join(dist),
            None => self.home.dist_dir(),
        }
    }

    fn venv_store(&self) -> VenvStore {
        VenvStore::new(
            self.home.venvs_dir(),
            self.home.cache_dir(),
            Installer::detect(),
        )
        // Private like the rest of var/, done by the seal itself: a chmod
        // after the build would break its fingerprint.
        .owner_only(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sarge_config::PortRange;

    #[test]
    fn a_builder_config_replaces_the_file_and_is_checked_like_it() {
        let root = std::env::temp_dir().join(format!("sarge-builder-{}", std::process::id()));
        let root = Utf8PathBuf::from_path_buf(root).unwrap();
        let _ = std::fs::remove_dir_all(&root);
        let home = Home::new(&root);

        // Not initialised: no etc/sarge.yaml, with a config or without.
        let config = Config::new(PortRange {
            first: 5010,
            last: 5099,
        });
        let error = Sarge::builder(home.clone())
            .config(config.clone())
            .open()
            .unwrap_err();
        assert!(matches!(error, Error::NotInitialised { .. }), "{error}");

        // A file that would not load: the given config is used, unread.
        std::fs::create_dir_all(home.etc_dir()).unwrap();
        std::fs::write(home.config_file(), "port_range: nonsense\n").unwrap();
        assert!(Sarge::open(home.clone()).is_err());
        let sarge = Sarge::builder(home.clone())
            .config(config.clone())
            .open()
            .unwrap();
        assert_eq!(sarge.config(), &config);

        let mut broken = config;
        broken.keep_releases = 0;
        let error = Sarge::builder(home).config(broken).open().unwrap_err();
        assert_eq!(
            error.to_string(),
            "the config given to Sarge::builder: keep_releases: 0; expected 1 or more (the live release is always kept)"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
