//! `sarge setup`: make a server's sarge home from the dev machine, or
//! upgrade the sarge in it, over the system `ssh` (the [`Target`] and
//! [`SshCommand`] rules of `sarge push`).
//!
//! The steps are [`setup`]'s: ask the server what it is, send this
//! binary if it lacks it and can run it, run `init` there.

use std::io::Write;
use std::process::{Output, Stdio};

use camino::Utf8PathBuf;

use crate::error::{excerpt, Error, Result};
use crate::push::CLIENT_VERSION;
use crate::ssh::{cannot_run_ssh, shell_quote, ssh_failed, SshCommand, Target};

/// How [`setup`] runs. Fields are added in minor releases: fill in what
/// you need and end with `..SetupOptions::default()`.
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// Start supervisord (`bin/supervisord`) if it is not running.
    pub start: bool,
    /// The ssh command (default: [`SshCommand::from_env`]).
    pub ssh: Option<SshCommand>,
    /// The sarge binary to install (default: the running executable, right
    /// for the `sarge` CLI). It must be built for the platform the running
    /// program is built for: that is the platform checked against the
    /// server's.
    pub binary: Option<Utf8PathBuf>,
    /// What that binary's `--version` prints (default: [`CLIENT_VERSION`]):
    /// a server whose own build prints the same is left with it when this
    /// binary cannot run there.
    pub client_version: Option<String>,
}

/// The C library of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Libc {
    /// GNU libc, with its version (`2.36`).
    Glibc {
        /// What `getconf GNU_LIBC_VERSION` says after `glibc `.
        version: String,
    },
    /// musl libc.
    Musl,
    /// Neither could be found.
    Unknown,
}

impl std::fmt::Display for Libc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Libc::Glibc { version } => write!(f, "glibc {version}"),
            Libc::Musl => f.write_str("musl"),
            Libc::Unknown => f.write_str("an unknown C library"),
        }
    }
}

/// What a server says about itself, in one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// `uname -s`: `Linux`.
    pub os: String,
    /// `uname -m`: `x86_64`, `aarch64`.
    pub arch: String,
    /// Its C library.
    pub libc: Libc,
    /// What `SARGE_HOME/bin/sarge --version` prints, if it runs.
    pub sarge_version: Option<String>,
    /// `cksum` of `SARGE_HOME/opt/sarge`, if there is one.
    checksum: Option<Checksum>,
}

/// Why [`setup`] uploaded its binary.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upload {
    /// The home had no sarge.
    NoSarge,
    /// The home ran another version (what it printed; empty if it did not
    /// run).
    OtherVersion(String),
    /// The home ran another build of this version.
    OtherBuild,
}

/// Whether [`SetupOptions::start`] had to start supervisord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Supervisord {
    /// It was not running; now it is.
    Started,
    /// It was running already (untouched).
    AlreadyRunning,
}

/// What [`setup`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SetupReport {
    /// The target.
    pub target: Target,
    /// What the server said about itself before anything changed.
    pub server: ServerInfo,
    /// Why the binary was uploaded; `None` if the home kept its own.
    pub upload: Option<Upload>,
    /// What the home's `bin/sarge --version` prints now.
    pub version: String,
    /// How `init` says to start supervisord now.
    pub start_command: Option<String>,
    /// The line `init` gives for starting supervisord at boot.
    pub boot_line: Option<String>,
    /// With [`SetupOptions::start`]: whether supervisord was started.
    pub supervisord: Option<Supervisord>,
}

/// What happens during a setup, for a reporter to show.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupEvent<'a> {
    /// The server answered what it is.
    Server {
        /// The target.
        target: &'a Target,
        /// Its answer.
        server: &'a ServerInfo,
    },
    /// The binary is being uploaded.
    Uploading {
        /// The target.
        target: &'a Target,
        /// Why.
        why: &'a Upload,
        /// Its size.
        bytes: u64,
    },
    /// A line a command on the server printed (`init`'s).
    Remote {
        /// The target.
        target: &'a Target,
        /// The line.
        line: &'a str,
    },
}

/// Receives [`SetupEvent`]s.
pub trait SetupProgress {
    /// One event; the default ignores it.
    fn event(&self, event: &SetupEvent<'_>) {
        let _ = event;
    }
}

/// Sets up sarge in `target`'s home over ssh, or upgrades it in place,
/// in three ssh round trips at most:
///
/// 1. **ask**: the server's OS, architecture and C library, and the
///    version and checksum of the sarge in the home.
/// 2. **install**, only when the home has no sarge or other bytes: the
///    binary goes up to a temp file next to `opt/sarge` (which `bin/sarge`
///    runs), is checked (its checksum, and that it runs there) and renamed
///    over it, so a running supervisord, the instances and a `sarge`
///    command running meanwhile never see a half-written binary. It goes
///    only when the server has the binary's architecture and a C library
///    it runs on; otherwise [`Error::SetupNeedsBuild`] says what to build
///    there (unless the server runs its own build of this version).
/// 3. **init**: `init` on the home, which on an existing one refreshes
///    sarge's own files and leaves the apps running; with
///    [`SetupOptions::start`], `bin/supervisord` if it is not running.
///
/// Running it again on a set-up home upgrades the binary if it differs
/// and leaves supervisord and the apps running.
pub fn setup(
    target: &Target,
    options: &SetupOptions,
    progress: &dyn SetupProgress,
) -> Result<SetupReport> {
    let ssh = match &options.ssh {
        Some(ssh) => ssh.clone(),
        None => SshCommand::from_env()?,
    };
    let run = Run {
        target,
        ssh: &ssh,
        progress,
    };
    let binary = match &options.binary {
        Some(path) => path.clone(),
        None => current_exe()?,
    };
    let server = run.ask()?;
    progress.event(&SetupEvent::Server {
        target,
        server: &server,
    });
    let bytes = fs_err::read(&binary)?;
    let checksum = Checksum::of(&bytes);
    let client_version = options.client_version.as_deref().unwrap_or(CLIENT_VERSION);
    let upload = match plan(&server, checksum, client_version) {
        Plan::Keep => None,
        Plan::Upload(why) => {
            if let Err(why) = Client::running(&bytes).can_run_on(&server) {
                let built_there = server.sarge_version.as_deref() == Some(client_version);
                if !built_there {
                    return Err(Error::SetupNeedsBuild {
                        target: target.to_string(),
                        home: target.home.clone(),
                        why,
                    });
                }
                None
            } else {
                progress.event(&SetupEvent::Uploading {
                    target,
                    why: &why,
                    bytes: bytes.len() as u64,
                });
                run.install(&bytes, checksum)?;
                Some(why)
            }
        }
    };
    let done = run.init(options.start)?;
    Ok(SetupReport {
        target: target.clone(),
        server,
        upload,
        version: done.version,
        start_command: done.start_command,
        boot_line: done.boot_line,
        supervisord: done.supervisord,
    })
}

/// The path of the running executable.
pub(crate) fn current_exe() -> Result<Utf8PathBuf> {
    let exe = std::env::current_exe().map_err(|source| Error::Spawn {
        program: "sarge (finding its own executable)".into(),
        source,
    })?;
    Utf8PathBuf::from_path_buf(exe).map_err(|path| {
        Error::Io(std::io::Error::other(format!(
            "the sarge executable's path {} is not UTF-8",
            path.display()
        )))
    })
}

/// Whether the binary must go up, and why.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Keep,
    Upload(Upload),
}

fn plan(server: &ServerInfo, checksum: Checksum, client_version: &str) -> Plan {
    match (&server.checksum, &server.sarge_version) {
        (Some(theirs), _) if *theirs == checksum => Plan::Keep,
        (None, None) => Plan::Upload(Upload::NoSarge),
        (_, Some(version)) if version == client_version => Plan::Upload(Upload::OtherBuild),
        (_, version) => Plan::Upload(Upload::OtherVersion(version.clone().unwrap_or_default())),
    }
}

/// What one setup talks to.
struct Run<'a> {
    target: &'a Target,
    ssh: &'a SshCommand,
    progress: &'a dyn SetupProgress,
}

/// What the init step learned.
struct InitDone {
    version: String,
    start_command: Option<String>,
    boot_line: Option<String>,
    supervisord: Option<Supervisord>,
}

/// The prefix of the lines the setup scripts print for sarge to read.
const MARK: &str = "sarge-setup: ";

impl Run<'_> {
    fn home(&self) -> String {
        shell_quote(self.target.home.as_str())
    }

    /// Step 1: the server's platform and the home's sarge, in one round
    /// trip; the script never fails on its own.
    fn ask(&self) -> Result<ServerInfo> {
        let script = format!(
            r#"h={home}
printf 'os %s\n' "$(uname -s)"
printf 'arch %s\n' "$(uname -m)"
if v=$(getconf GNU_LIBC_VERSION 2>/dev/null); then printf 'libc %s\n' "$v"
elif ls /lib/ld-musl-* >/dev/null 2>&1 || ldd --version 2>&1 | grep -qi musl; then echo 'libc musl'
else echo 'libc unknown'; fi
if [ -x "$h/bin/sarge" ] && v=$("$h/bin/sarge" --version 2>/dev/null); then printf 'sarge %s\n' "$v"; fi
if [ -f "$h/opt/sarge" ]; then printf 'cksum %s\n' "$(cksum < "$h/opt/sarge")"; fi
"#,
            home = self.home()
        );
        const STEP: &str = "asking the server about itself";
        let output = self.run(&script, None)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(self.step_failed(STEP, &output, &stdout));
        }
        parse_server_info(&stdout).ok_or_else(|| Error::SetupStep {
            target: self.target.to_string(),
            step: STEP.to_owned(),
            message: format!(
                "it did not answer what `uname` and `getconf` say (it printed {:?})",
                excerpt(stdout.trim())
            ),
        })
    }

    /// Step 2: the binary lands as `opt/sarge` atomically, once it is
    /// whole and runs there.
    fn install(&self, bytes: &[u8], checksum: Checksum) -> Result<()> {
        let script = format!(
            r#"set -e
h={home}
mkdir -p "$h/opt"
tmp="$h/opt/.sarge.upload-$$"
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
sum=$(cksum < "$tmp")
if [ "$sum" != '{expected}' ]; then echo "error: the upload arrived damaged or cut short (cksum $sum, sent {expected})" >&2; exit 1; fi
chmod 755 "$tmp"
if ! out=$("$tmp" --version 2>&1); then echo "error: the uploaded sarge does not run there: $out" >&2; exit 1; fi
mv -f "$tmp" "$h/opt/sarge"
"#,
            home = self.home(),
            expected = checksum,
        );
        let output = self.run(&script, Some(bytes))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(self.step_failed("installing the sarge binary", &output, &stderr));
        }
        Ok(())
    }

    /// Step 3: `init`, and supervisord if asked and not running.
    fn init(&self, start: bool) -> Result<InitDone> {
        let mut script = format!(
            r#"exec 2>&1
h={home}
if [ ! -x "$h/opt/sarge" ]; then echo "error: $h/opt/sarge is missing"; exit 1; fi
"$h/opt/sarge" --home "$h" init || exit $?
echo '{MARK}init done'
"#,
            home = self.home()
        );
        if start {
            script.push_str(&format!(
                r#"running() {{ p=$("$h/bin/supervisorctl" pid 2>/dev/null) && case $p in ''|*[!0-9]*) return 1;; esac; }}
if running; then echo '{MARK}supervisord running'
else
  "$h/bin/supervisord" </dev/null || exit $?
  i=0
  while ! running; do
    i=$((i+1))
    if [ $i -gt 100 ]; then echo "error: supervisord did not answer within 10 s; see $h/var/log/supervisord.log"; exit 1; fi
    sleep 0.1
  done
  echo '{MARK}supervisord started'
fi
"#
            ));
        }
        script.push_str(&format!(
            r#"printf '{MARK}version %s\n' "$("$h/bin/sarge" --version)""#
        ));
        let output = self.run(&script, None)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut done = InitDone {
            version: String::new(),
            start_command: None,
            boot_line: None,
            supervisord: None,
        };
        let mut init_done = false;
        for line in stdout.lines() {
            let Some(mark) = line.strip_prefix(MARK) else {
                self.progress.event(&SetupEvent::Remote {
                    target: self.target,
                    line,
                });
                // What `init` prints for people; this binary's own words.
                if let Some(command) = line.strip_prefix("start supervisord now:") {
                    done.start_command = Some(command.trim().to_owned());
                }
                if let Some(boot) = line.strip_prefix("and at boot (e.g. in /etc/rc.local):") {
                    done.boot_line = Some(boot.trim().to_owned());
                }
                continue;
            };
            match mark {
                "init done" => init_done = true,
                "supervisord running" => done.supervisord = Some(Supervisord::AlreadyRunning),
                "supervisord started" => done.supervisord = Some(Supervisord::Started),
                _ => {
                    if let Some(version) = mark.strip_prefix("version ") {
                        done.version = version.trim().to_owned();
                    }
                }
            }
        }
        if !output.status.success() {
            let step = if init_done {
                "starting supervisord"
            } else {
                "sarge init"
            };
            return Err(self.step_failed(step, &output, &stdout));
        }
        Ok(done)
    }

    /// Runs `script` on the target with `input` on its stdin (none: an
    /// empty stdin); its output, whatever its status.
    fn run(&self, script: &str, input: Option<&[u8]>) -> Result<Output> {
        let mut child = self
            .ssh
            .remote(self.target, script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| cannot_run_ssh(self.target, self.ssh, &source))?;
        let stdin = child.stdin.take();
        let output = std::thread::scope(|scope| {
            scope.spawn(move || {
                if let (Some(mut stdin), Some(input)) = (stdin, input) {
                    // A remote that stops reading says why on its output.
                    let _ = stdin.write_all(input);
                }
            });
            child.wait_with_output()
        })?;
        if output.status.code() == Some(255) {
            return Err(ssh_failed(
                self.target,
                &String::from_utf8_lossy(&output.stderr),
            ));
        }
        Ok(output)
    }

    /// The error of `step`, which exited as `output` says, printing
    /// `printed`: its `error:` line, else its last line, else its status.
    fn step_failed(&self, step: &str, output: &Output, printed: &str) -> Error {
        let lines: Vec<&str> = printed.lines().filter(|l| !l.trim().is_empty()).collect();
        let message = match lines.iter().rev().find_map(|l| l.strip_prefix("error: ")) {
            Some(error) => excerpt(error.trim()),
            None => match (lines.last(), output.status.code()) {
                (Some(last), _) => excerpt(last.trim()),
                (None, Some(code)) => format!("exited with status {code}"),
                (None, None) => "killed by a signal".to_owned(),
            },
        };
        Error::SetupStep {
            target: self.target.to_string(),
            step: step.to_owned(),
            message,
        }
    }
}

/// The answer of [`Run::ask`]'s script; `None` without `uname`'s lines.
fn parse_server_info(text: &str) -> Option<ServerInfo> {
    let mut os = None;
    let mut arch = None;
    let mut libc = Libc::Unknown;
    let mut sarge_version = None;
    let mut checksum = None;
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let value = value.trim();
        match key {
            "os" if !value.is_empty() => os = Some(value.to_owned()),
            "arch" if !value.is_empty() => arch = Some(value.to_owned()),
            "libc" => {
                libc = match value.split_once(' ') {
                    Some(("glibc", version)) => Libc::Glibc {
                        version: version.trim().to_owned(),
                    },
                    _ if value == "musl" => Libc::Musl,
                    _ => Libc::Unknown,
                }
            }
            "sarge" if !value.is_empty() => sarge_version = Some(value.to_owned()),
            "cksum" => checksum = value.parse().ok(),
            _ => {}
        }
    }
    Some(ServerInfo {
        os: os?,
        arch: arch?,
        libc,
        sarge_version,
        checksum,
    })
}

/// The POSIX `cksum` of a file: its CRC and length, as `cksum` prints
/// them. Present on every server (coreutils, busybox), unlike sha256sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checksum {
    crc: u32,
    len: u64,
}

impl Checksum {
    fn of(bytes: &[u8]) -> Self {
        const TABLE: [u32; 256] = {
            let mut table = [0u32; 256];
            let mut i = 0;
            while i < 256 {
                let mut c = (i as u32) << 24;
                let mut bit = 0;
                while bit < 8 {
                    c = if c & 0x8000_0000 != 0 {
                        (c << 1) ^ 0x04C1_1DB7
                    } else {
                        c << 1
                    };
                    bit += 1;
                }
                table[i] = c;
                i += 1;
            }
            table
        };
        let step = |crc: u32, byte: u8| (crc << 8) ^ TABLE[((crc >> 24) as u8 ^ byte) as usize];
        let mut crc = bytes.iter().fold(0, |crc, &byte| step(crc, byte));
        // Then the length, least significant byte first, without its
        // leading zero bytes.
        let mut len = bytes.len() as u64;
        while len != 0 {
            crc = step(crc, len as u8);
            len >>= 8;
        }
        Self {
            crc: !crc,
            len: bytes.len() as u64,
        }
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.crc, self.len)
    }
}

impl std::str::FromStr for Checksum {
    type Err = ();

    /// `CRC LENGTH`, as `cksum < FILE` prints it.
    fn from_str(text: &str) -> std::result::Result<Self, ()> {
        let mut words = text.split_whitespace();
        let crc = words.next().and_then(|w| w.parse().ok()).ok_or(())?;
        let len = words.next().and_then(|w| w.parse().ok()).ok_or(())?;
        Ok(Self { crc, len })
    }
}

/// The platform of the binary that goes up: the running program's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Client {
    os: &'static str,
    /// As `uname -m` names it, normalised by [`machine`].
    arch: String,
    libc: ClientLibc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ClientLibc {
    /// Linked against glibc: the newest symbol version it needs.
    Glibc { needs: Option<Vec<u32>> },
    /// A static musl build: it runs on any Linux of its architecture.
    StaticMusl,
    /// Another C library, not checked on the server.
    Other(&'static str),
}

impl Client {
    /// This program's platform; `binary` (its bytes) tells which glibc
    /// version it needs.
    fn running(binary: &[u8]) -> Self {
        let arch = if std::env::consts::ARCH == "powerpc64" && cfg!(target_endian = "little") {
            "powerpc64le"
        } else {
            std::env::consts::ARCH
        };
        let libc = if cfg!(target_env = "gnu") {
            ClientLibc::Glibc {
                needs: glibc_needed(binary).or_else(local_glibc),
            }
        } else if cfg!(target_env = "musl") {
            ClientLibc::StaticMusl
        } else {
            ClientLibc::Other(std::env::consts::OS)
        };
        Self {
            os: std::env::consts::OS,
            arch: machine(arch).to_owned(),
            libc,
        }
    }

    /// Whether this binary runs on `server`; if not, why, for people.
    fn can_run_on(&self, server: &ServerInfo) -> std::result::Result<(), String> {
        if self.os != "linux" {
            return Err(format!(
                "this sarge is built for {}, and servers run Linux",
                self.os
            ));
        }
        if !server.os.eq_ignore_ascii_case("linux") {
            return Err(format!("the server runs {}, not Linux", server.os));
        }
        let arch = machine(&server.arch);
        if arch != self.arch {
            return Err(format!(
                "the server is {} and this sarge is built for {}",
                server.arch, self.arch
            ));
        }
        match (&self.libc, &server.libc) {
            (ClientLibc::StaticMusl, _) => Ok(()),
            (ClientLibc::Glibc { needs }, Libc::Glibc { version }) => {
                let have = parse_version(version);
                match (needs, have) {
                    (Some(needs), Some(have)) if have < *needs => Err(format!(
                        "the server has glibc {version} and this sarge needs glibc {} or newer",
                        show_version(needs)
                    )),
                    (_, None) => Err(format!(
                        "the server's glibc version {version:?} cannot be read"
                    )),
                    _ => Ok(()),
                }
            }
            (ClientLibc::Glibc { needs }, other) => Err(format!(
                "the server has {other} and this sarge needs glibc{}",
                needs
                    .as_ref()
                    .map(|v| format!(" {}", show_version(v)))
                    .unwrap_or_default()
            )),
            (ClientLibc::Other(os), _) => Err(format!(
                "this sarge is built with the C library of {os}, which cannot be checked on the server"
            )),
        }
    }
}

/// The architecture `uname -m` prints, named as Rust names it (`arm64`
/// and `aarch64` are one).
fn machine(uname: &str) -> &str {
    match uname {
        "amd64" | "x86_64" => "x86_64",
        "arm64" | "aarch64" => "aarch64",
        "i386" | "i486" | "i586" | "i686" | "x86" => "x86",
        "ppc64le" | "powerpc64le" => "powerpc64le",
        "ppc64" | "powerpc64" => "powerpc64",
        arm if arm.starts_with("armv") || arm == "arm" => "arm",
        other => other,
    }
}

/// The newest `GLIBC_x.y` symbol version `binary` names: the oldest
/// glibc it runs on. `None` if it names none.
fn glibc_needed(binary: &[u8]) -> Option<Vec<u32>> {
    const PREFIX: &[u8] = b"GLIBC_";
    let mut newest: Option<Vec<u32>> = None;
    let mut at = 0;
    while let Some(found) = binary[at..].iter().position(|&b| b == b'G') {
        let start = at + found;
        at = start + 1;
        if !binary[start..].starts_with(PREFIX) {
            continue;
        }
        let rest = &binary[start + PREFIX.len()..];
        let end = rest
            .iter()
            .position(|&b| !(b.is_ascii_digit() || b == b'.'))
            .unwrap_or(rest.len());
        let Some(version) = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(parse_version)
        else {
            continue;
        };
        if newest.as_ref().is_none_or(|newest| version > *newest) {
            newest = Some(version);
        }
    }
    newest
}

/// This machine's glibc version: a conservative bound for a binary that
/// names none.
fn local_glibc() -> Option<Vec<u32>> {
    let output = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    parse_version(text.trim().strip_prefix("glibc ")?)
}

/// `2.36` as `[2, 36]`; `None` unless it is numbers and dots.
fn parse_version(text: &str) -> Option<Vec<u32>> {
    let text = text.trim().trim_end_matches('.');
    if text.is_empty() {
        return None;
    }
    text.split('.').map(|part| part.parse().ok()).collect()
}

fn show_version(version: &[u32]) -> String {
    version
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(arch: &str, libc: Libc) -> ServerInfo {
        ServerInfo {
            os: "Linux".to_owned(),
            arch: arch.to_owned(),
            libc,
            sarge_version: None,
            checksum: None,
        }
    }

    fn glibc(version: &str) -> Libc {
        Libc::Glibc {
            version: version.to_owned(),
        }
    }

    #[test]
    fn the_checksum_is_what_cksum_prints() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for sample in [&b""[..], b"a", b"hello sarge\n", &data] {
            let mut child = std::process::Command::new("cksum")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(sample).unwrap();
            let printed = child.wait_with_output().unwrap();
            let printed = String::from_utf8(printed.stdout).unwrap();
            assert_eq!(Checksum::of(sample).to_string(), printed.trim());
            assert_eq!(printed.parse::<Checksum>(), Ok(Checksum::of(sample)));
        }
    }

    #[test]
    fn the_answer_names_platform_and_the_homes_sarge() {
        let info = parse_server_info(
            "os Linux\narch aarch64\nlibc glibc 2.36\nsarge sarge 0.1.0 (4b9ab51)\ncksum 123 456\n",
        )
        .unwrap();
        assert_eq!(info.arch, "aarch64");
        assert_eq!(info.libc, glibc("2.36"));
        assert_eq!(info.sarge_version.as_deref(), Some("sarge 0.1.0 (4b9ab51)"));
        assert_eq!(info.checksum, Some(Checksum { crc: 123, len: 456 }));

        let bare = parse_server_info("os Linux\narch x86_64\nlibc musl\n").unwrap();
        assert_eq!(bare.libc, Libc::Musl);
        assert_eq!((bare.sarge_version, bare.checksum), (None, None));
        assert!(parse_server_info("Welcome to the server!\n").is_none());
    }

    #[test]
    fn the_binary_goes_up_unless_the_home_has_the_same_bytes() {
        let ours = Checksum::of(b"sarge");
        let mut info = server("x86_64", glibc("2.36"));
        assert_eq!(plan(&info, ours, "sarge 1"), Plan::Upload(Upload::NoSarge));
        info.checksum = Some(Checksum::of(b"old"));
        info.sarge_version = Some("sarge 0".to_owned());
        assert_eq!(
            plan(&info, ours, "sarge 1"),
            Plan::Upload(Upload::OtherVersion("sarge 0".to_owned()))
        );
        info.sarge_version = Some("sarge 1".to_owned());
        assert_eq!(
            plan(&info, ours, "sarge 1"),
            Plan::Upload(Upload::OtherBuild)
        );
        info.checksum = Some(ours);
        assert_eq!(plan(&info, ours, "sarge 1"), Plan::Keep);
        // A binary that does not run there is another version.
        info.checksum = Some(Checksum::of(b"broken"));
        info.sarge_version = None;
        assert_eq!(
            plan(&info, ours, "sarge 1"),
            Plan::Upload(Upload::OtherVersion(String::new()))
        );
    }

    #[test]
    fn a_glibc_build_runs_on_the_same_arch_with_a_glibc_as_new() {
        let client = Client {
            os: "linux",
            arch: "x86_64".to_owned(),
            libc: ClientLibc::Glibc {
                needs: Some(vec![2, 34]),
            },
        };
        assert_eq!(client.can_run_on(&server("x86_64", glibc("2.36"))), Ok(()));
        assert_eq!(client.can_run_on(&server("amd64", glibc("2.34"))), Ok(()));
        for (info, why) in [
            (
                server("aarch64", glibc("2.36")),
                "the server is aarch64 and this sarge is built for x86_64",
            ),
            (
                server("x86_64", glibc("2.31")),
                "the server has glibc 2.31 and this sarge needs glibc 2.34 or newer",
            ),
            (
                server("x86_64", Libc::Musl),
                "the server has musl and this sarge needs glibc 2.34",
            ),
            (
                ServerInfo {
                    os: "FreeBSD".to_owned(),
                    ..server("x86_64", Libc::Unknown)
                },
                "the server runs FreeBSD, not Linux",
            ),
        ] {
            assert_eq!(client.can_run_on(&info), Err(why.to_owned()));
        }
        let musl = Client {
            libc: ClientLibc::StaticMusl,
            ..client
        };
        assert_eq!(musl.can_run_on(&server("x86_64", Libc::Unknown)), Ok(()));
        assert!(musl.can_run_on(&server("arm64", Libc::Musl)).is_err());
    }

    #[test]
    fn the_glibc_a_binary_needs_is_its_newest_symbol_version() {
        let binary = b"\0GLIBC_2.2.5\0GLIBC_PRIVATE\0GLIBC_2.34\0GLIBC_2.4\0Gx\0GLIBC_";
        assert_eq!(glibc_needed(binary), Some(vec![2, 34]));
        assert_eq!(glibc_needed(b"no versions here"), None);
        assert_eq!(machine("armv7l"), "arm");
        assert_eq!(machine("arm64"), machine("aarch64"));
    }

    #[test]
    fn this_test_binary_runs_here() {
        // The test binary stands for the sarge binary: built by the same
        // toolchain for this machine, so it must be found to run here.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let uname = |flag: &str| {
            let out = std::process::Command::new("uname")
                .arg(flag)
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        let libc = match local_glibc() {
            Some(version) => glibc(&show_version(&version)),
            None => Libc::Musl,
        };
        let here = ServerInfo {
            os: uname("-s"),
            ..server(&uname("-m"), libc)
        };
        assert_eq!(Client::running(&exe).can_run_on(&here), Ok(()));
    }
}
