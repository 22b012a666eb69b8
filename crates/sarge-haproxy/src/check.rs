//! Asking the real haproxy whether a config file is acceptable.

use std::process::{Child, Command, Stdio};

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};

/// Run `haproxy_bin -c -f config` and fail with haproxy's own messages if it
/// rejects the file.
///
/// Errors: [`Error::ConfigRejected`] carrying haproxy's output, or
/// [`Error::Binary`] if `haproxy_bin` cannot be run at all.
pub fn check_config(haproxy_bin: &Utf8Path, config: &Utf8Path) -> Result<()> {
    spawn_check(haproxy_bin, config)?.wait()
}

/// Starts `haproxy_bin -c -f config` without waiting for it, so the check
/// (tens of milliseconds) can overlap other work, such as waiting for a new
/// instance to listen. [`PendingCheck::wait`] gives the verdict.
pub fn spawn_check(haproxy_bin: &Utf8Path, config: &Utf8Path) -> Result<PendingCheck> {
    let child = Command::new(haproxy_bin)
        .arg("-c")
        .arg("-f")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Binary {
            bin: haproxy_bin.to_owned(),
            source,
        })?;
    Ok(PendingCheck {
        child: Some(child),
        haproxy_bin: haproxy_bin.to_owned(),
        config: config.to_owned(),
    })
}

/// A running `haproxy -c`; dropping it without [`wait`](Self::wait) kills it.
#[derive(Debug)]
pub struct PendingCheck {
    child: Option<Child>,
    haproxy_bin: Utf8PathBuf,
    config: Utf8PathBuf,
}

impl PendingCheck {
    /// Waits for the check; [`Error::ConfigRejected`] carries haproxy's
    /// own messages.
    pub fn wait(mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let output = child.wait_with_output().map_err(|source| Error::Binary {
            bin: self.haproxy_bin.clone(),
            source,
        })?;
        if output.status.success() {
            return Ok(());
        }
        let mut report = String::from_utf8_lossy(&output.stdout).into_owned();
        report.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(Error::ConfigRejected {
            config: self.config.clone(),
            output: report.trim_end().to_owned(),
        })
    }
}

impl Drop for PendingCheck {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
