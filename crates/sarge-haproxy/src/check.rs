//! Asking the real haproxy whether a config file is acceptable.

use std::process::Command;

use camino::Utf8Path;

use crate::error::{Error, Result};

/// Run `haproxy_bin -c -f config` and fail with haproxy's own messages if it
/// rejects the file.
///
/// Errors: [`Error::ConfigRejected`] carrying haproxy's output, or
/// [`Error::Binary`] if `haproxy_bin` cannot be run at all.
pub fn check_config(haproxy_bin: &Utf8Path, config: &Utf8Path) -> Result<()> {
    let output = Command::new(haproxy_bin)
        .arg("-c")
        .arg("-f")
        .arg(config)
        .output()
        .map_err(|source| Error::Binary {
            bin: haproxy_bin.to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut report = String::from_utf8_lossy(&output.stdout).into_owned();
    report.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(Error::ConfigRejected {
        config: config.to_owned(),
        output: report.trim_end().to_owned(),
    })
}
