//! The per-instance launcher script. supervisord runs it to start the
//! process, and `sarge run` runs it to open a shell in the same world.
//!
//! The app's env never travels through supervisord's config parser, which
//! mangles `%`, quotes, `;` and `#`: it is written, single-quoted, to
//! `env.sh` (mode 0600) and sourced by the launcher, so every value reaches
//! the app byte for byte.

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Result;
use crate::state::write_atomic;

/// The launcher of the instance in `instance_dir`.
pub(crate) fn launcher_path(instance_dir: &Utf8Path) -> Utf8PathBuf {
    instance_dir.join("run")
}

/// Writes `env.sh` (0600) and the launcher `run` (0700) into `instance_dir`.
pub(crate) fn write_launcher(
    instance_dir: &Utf8Path,
    app_dir: &Utf8Path,
    env: &BTreeMap<String, String>,
    venv_bin: Option<&Utf8Path>,
    command: &str,
) -> Result<()> {
    let env_file = instance_dir.join("env.sh");
    write_atomic(&env_file, render_env(env).as_bytes(), 0o600)?;
    let mut script = String::from(
        "#!/bin/sh\n\
         # Written by sarge. Without arguments runs the Procfile command;\n\
         # with arguments runs them, in the instance's environment.\n\
         set -a\n",
    );
    script.push_str(&format!(". {}\n", shell_quote(env_file.as_str())));
    script.push_str("set +a\n");
    if let Some(bin) = venv_bin {
        let venv = bin.parent().unwrap_or(bin);
        script.push_str(&format!(
            "VIRTUAL_ENV={}\nPATH={}:\"$PATH\"\nexport VIRTUAL_ENV PATH\n",
            shell_quote(venv.as_str()),
            shell_quote(bin.as_str())
        ));
    }
    script.push_str(&format!("cd {} || exit 1\n", shell_quote(app_dir.as_str())));
    script.push_str(&format!(
        "if [ \"$#\" -eq 0 ]; then set -- bash -c {}; fi\nexec \"$@\"\n",
        shell_quote(command)
    ));
    write_atomic(&launcher_path(instance_dir), script.as_bytes(), 0o700)
}

/// `NAME='value'` lines that a POSIX shell reads back to the exact bytes.
fn render_env(env: &BTreeMap<String, String>) -> String {
    env.iter()
        .map(|(name, value)| format!("{name}={}\n", shell_quote(value)))
        .collect()
}

/// Single-quotes `value` for a POSIX shell: inside single quotes every byte
/// is literal except `'`, which is closed, escaped and reopened.
pub(crate) fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_survives_a_shell_byte_for_byte() {
        let tricky = "p%40ss;word # not a comment 'quoted' \"double\" $HOME `id` \\n\nline2";
        let env = BTreeMap::from([("SECRET".to_owned(), tricky.to_owned())]);
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{}printf %s \"$SECRET\"", render_env(&env)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(output.stdout).unwrap(), tricky);
    }

    #[test]
    fn quotes_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
