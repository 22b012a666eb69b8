//! `sarge init`: creating (or refreshing) a `$SARGE_HOME`.

use camino::{Utf8Path, Utf8PathBuf};
use sarge_config::Config;
use sarge_supervisor::SupervisordConfig;

use crate::error::Result;
use crate::home::Home;
use crate::launcher::shell_quote;
use crate::privacy::{create_private_dir, make_private, private_roots, PRIVATE_FILE};
use crate::state::write_atomic;

/// Options of [`init`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct InitOptions {
    /// The sarge binary to install as `opt/sarge`, which `bin/sarge` runs.
    /// Default: the running executable (right for the `sarge` CLI; an
    /// embedder passes the path of a `sarge` binary).
    pub sarge_binary: Option<Utf8PathBuf>,
}

impl InitOptions {
    /// Sets [`sarge_binary`](InitOptions::sarge_binary). Options grow in
    /// minor versions, so an embedder sets them through methods:
    /// `InitOptions::default().with_sarge_binary(path)`.
    pub fn with_sarge_binary(mut self, binary: impl Into<Utf8PathBuf>) -> Self {
        self.sarge_binary = Some(binary.into());
        self
    }
}

/// What [`init`] did, and how to start supervisord.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Initialised {
    /// The home.
    pub home: Home,
    /// Whether a fresh `etc/sarge.yaml` was written (an existing one is
    /// never overwritten).
    pub wrote_config: bool,
    /// Files and folders under `etc/` and `var/` that group or others
    /// could read (a home made by an older sarge) and that are now the
    /// owner's alone.
    pub made_private: Vec<Utf8PathBuf>,
    /// The command that starts supervisord for this home now.
    pub start_command: String,
    /// A line for `/etc/rc.local` that starts it at boot as this user.
    pub boot_line: String,
}

/// Creates `home`, or refreshes the files sarge owns in it. Idempotent; it
/// never overwrites `etc/sarge.yaml`. `etc/` and `var/` end up private to
/// the owner, also in a home an older sarge made readable by all.
pub fn init(home: &Home, options: &InitOptions) -> Result<Initialised> {
    let private = private_roots(home);
    for folder in home.folders() {
        if private.iter().any(|root| folder.starts_with(root)) {
            create_private_dir(&folder)?;
        } else {
            fs_err::create_dir_all(&folder)?;
        }
    }
    install_binary(home, options.sarge_binary.as_deref())?;
    write_scripts(home)?;

    let config_path = home.config_file();
    let wrote_config = !config_path.exists();
    if wrote_config {
        let yaml = Config::default_yaml(random_port_base());
        write_atomic(&config_path, yaml.as_bytes(), PRIVATE_FILE)?;
    }
    let supervisord = SupervisordConfig {
        socket: home.supervisor_socket(),
        pidfile: home.run_dir().join("supervisord.pid"),
        logfile: home.log_dir().join("supervisord.log"),
        child_log_dir: home.log_dir(),
        include_glob: home.programs_dir().join("*.conf"),
        directory: home.root().to_owned(),
    };
    write_atomic(
        &home.supervisord_config(),
        supervisord.render()?.as_bytes(),
        PRIVATE_FILE,
    )?;
    if !home.haproxy_config().exists() {
        // Until the first deploy the stable addresses answer 503; haproxy
        // itself is started by the first deploy that needs it.
        if let Ok(config) = Config::load(&config_path) {
            let rendered =
                crate::routing::render_config(home, &config, &Default::default()).render();
            write_atomic(&home.haproxy_config(), rendered.as_bytes(), PRIVATE_FILE)?;
        }
    }
    // Last, so that it also covers what this run found or wrote.
    let made_private = make_private(home)?;
    let start_command = home.bin_dir().join("supervisord").to_string();
    let user = current_user();
    let boot_line = format!("su {user} -c {}", shell_quote(&start_command));
    Ok(Initialised {
        home: home.clone(),
        wrote_config,
        made_private,
        start_command,
        boot_line,
    })
}

/// The name of the user running sarge, for the boot line: `$USER`, else
/// `$LOGNAME`, else what `id -un` says (cron and `su -c` may set neither).
fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|user| !user.is_empty())
        .or_else(|| {
            let output = std::process::Command::new("id").arg("-un").output().ok()?;
            let name = String::from_utf8(output.stdout).ok()?.trim().to_owned();
            (output.status.success() && !name.is_empty()).then_some(name)
        })
        .unwrap_or_else(|| "USERNAME".to_owned())
}

/// Copies the sarge binary into the home, so the home keeps working when
/// the build it came from is moved or cleaned.
fn install_binary(home: &Home, source: Option<&Utf8Path>) -> Result<()> {
    let source = match source {
        Some(path) => path.to_owned(),
        None => crate::setup::current_exe()?,
    };
    let target = home.sarge_binary();
    let same = match (fs_err::canonicalize(&source), fs_err::canonicalize(&target)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Ok(());
    }
    let staged = target.with_file_name(format!(".sarge.{}.tmp", std::process::id()));
    fs_err::copy(&source, &staged)?;
    fs_err::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    fs_err::rename(&staged, &target)?;
    Ok(())
}

fn write_scripts(home: &Home) -> Result<()> {
    let binary = shell_quote(home.sarge_binary().as_str());
    let root = shell_quote(home.root().as_str());
    let scripts = [
        ("sarge", String::new()),
        ("supervisord", " supervisord".to_owned()),
        ("supervisorctl", " supervisorctl".to_owned()),
    ];
    for (name, subcommand) in scripts {
        let text = format!(
            "#!/bin/sh\n# Written by `sarge init`: runs sarge{subcommand} for this home.\nexec {binary} --home {root}{subcommand} \"$@\"\n"
        );
        write_atomic(&home.bin_dir().join(name), text.as_bytes(), 0o755)?;
    }
    Ok(())
}

/// A random base for a fresh home's ports, as the original installer did:
/// a multiple of 100 from 10000 to 32500, so the whole range stays below
/// Linux's ephemeral ports (32768-60999), which outgoing connections take
/// and an instance could then not bind.
fn random_port_base() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    10_000 + (hasher.finish() % 226) as u16 * 100
}
