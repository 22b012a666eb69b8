//! The layout of a `$SARGE_HOME` folder.

use camino::{Utf8Path, Utf8PathBuf};

/// A `$SARGE_HOME`: every path sarge reads or writes is under it.
///
/// ```text
/// bin/       sarge, supervisord, supervisorctl (scripts bound to this home)
/// opt/       the sarge binary the scripts run
/// dist/      wheels that requirements.txt installs from (offline)
/// etc/       sarge.yaml, supervisord.conf, supervisor.d/, haproxy.cfg
/// var/log/   supervisord's, haproxy's and every instance's log
/// var/run/   sockets and pid files
/// var/releases/vN/     one folder per kept release: app/, release.json, env.json
/// var/instances/<id>/   one folder per instance: instance.json, env.sh, run
/// var/venvs/<key>/      shared, immutable virtualenvs
/// var/state/            current instances, last allocated port
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: Utf8PathBuf,
}

impl Home {
    /// A home rooted at `root`. Relative roots are made absolute against the
    /// current directory, since the paths end up in config files read by
    /// daemons with another working directory.
    pub fn new(root: impl Into<Utf8PathBuf>) -> Self {
        let root = root.into();
        let root = if root.is_absolute() {
            root
        } else {
            match std::env::current_dir()
                .ok()
                .and_then(|dir| Utf8PathBuf::from_path_buf(dir).ok())
            {
                Some(cwd) => cwd.join(root),
                None => root,
            }
        };
        Self { root }
    }

    /// The home folder itself.
    pub fn root(&self) -> &Utf8Path {
        &self.root
    }
    /// `bin/`
    pub fn bin_dir(&self) -> Utf8PathBuf {
        self.root.join("bin")
    }
    /// `opt/sarge`: the binary the `bin/` scripts run.
    pub fn sarge_binary(&self) -> Utf8PathBuf {
        self.root.join("opt/sarge")
    }
    /// `dist/`: the default wheel folder.
    pub fn dist_dir(&self) -> Utf8PathBuf {
        self.root.join("dist")
    }
    /// `etc/`
    pub fn etc_dir(&self) -> Utf8PathBuf {
        self.root.join("etc")
    }
    /// `etc/sarge.yaml`
    pub fn config_file(&self) -> Utf8PathBuf {
        self.root.join("etc/sarge.yaml")
    }
    /// `etc/env.json`: env values set with `sarge config` (mode 0600).
    pub fn env_overlay_file(&self) -> Utf8PathBuf {
        self.root.join("etc/env.json")
    }
    /// `etc/supervisord.conf`
    pub fn supervisord_config(&self) -> Utf8PathBuf {
        self.root.join("etc/supervisord.conf")
    }
    /// `etc/supervisor.d/`: one file per supervisord program.
    pub fn programs_dir(&self) -> Utf8PathBuf {
        self.root.join("etc/supervisor.d")
    }
    /// The supervisord program file of `program`.
    pub fn program_file(&self, program: &str) -> Utf8PathBuf {
        self.programs_dir().join(format!("{program}.conf"))
    }
    /// `etc/haproxy.cfg`
    pub fn haproxy_config(&self) -> Utf8PathBuf {
        self.root.join("etc/haproxy.cfg")
    }
    /// `var/log/`
    pub fn log_dir(&self) -> Utf8PathBuf {
        self.root.join("var/log")
    }
    /// The log file of a supervisord program.
    pub fn program_log(&self, program: &str) -> Utf8PathBuf {
        self.log_dir().join(format!("{program}.log"))
    }
    /// `var/run/`
    pub fn run_dir(&self) -> Utf8PathBuf {
        self.root.join("var/run")
    }
    /// supervisord's XML-RPC unix socket.
    pub fn supervisor_socket(&self) -> Utf8PathBuf {
        self.root.join("var/run/supervisor.sock")
    }
    /// haproxy's admin socket.
    pub fn haproxy_socket(&self) -> Utf8PathBuf {
        self.root.join("var/run/haproxy.sock")
    }
    /// haproxy's master CLI socket (which worker is live, reloads).
    pub fn haproxy_master_socket(&self) -> Utf8PathBuf {
        self.root.join("var/run/haproxy-master.sock")
    }
    /// `var/instances/`
    pub fn instances_dir(&self) -> Utf8PathBuf {
        self.root.join("var/instances")
    }
    /// The folder of instance `id`.
    pub fn instance_dir(&self, id: &str) -> Utf8PathBuf {
        self.instances_dir().join(id)
    }
    /// `var/releases/`: one folder per kept release.
    pub fn releases_dir(&self) -> Utf8PathBuf {
        self.root.join("var/releases")
    }
    /// The folder of release `id`: `release.json`, `env.json`, `app/`.
    pub fn release_dir(&self, id: crate::ReleaseId) -> Utf8PathBuf {
        self.releases_dir().join(id.to_string())
    }
    /// The output of release `id`'s release command.
    pub fn release_output(&self, id: crate::ReleaseId) -> Utf8PathBuf {
        self.log_dir().join(format!("release-{id}.log"))
    }
    /// `var/venvs/`: the shared virtualenv store.
    pub fn venvs_dir(&self) -> Utf8PathBuf {
        self.root.join("var/venvs")
    }
    /// `var/cache/`: installer caches (copied from, never linked into the venvs).
    pub fn cache_dir(&self) -> Utf8PathBuf {
        self.root.join("var/cache")
    }
    /// `var/state/`
    pub fn state_dir(&self) -> Utf8PathBuf {
        self.root.join("var/state")
    }
    /// Which instance is current for each process.
    pub fn current_file(&self) -> Utf8PathBuf {
        self.root.join("var/state/current.json")
    }
    /// The port allocator's state.
    pub fn ports_file(&self) -> Utf8PathBuf {
        self.root.join("var/state/ports")
    }
    /// The per-home lock that serialises commands which change state.
    pub fn lock_file(&self) -> Utf8PathBuf {
        self.root.join("var/lock")
    }

    /// Every folder `sarge init` creates.
    pub(crate) fn folders(&self) -> Vec<Utf8PathBuf> {
        vec![
            self.bin_dir(),
            self.root.join("opt"),
            self.dist_dir(),
            self.etc_dir(),
            self.programs_dir(),
            self.log_dir(),
            self.run_dir(),
            self.instances_dir(),
            self.releases_dir(),
            self.venvs_dir(),
            self.cache_dir(),
            self.state_dir(),
        ]
    }
}
