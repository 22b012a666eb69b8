use camino::Utf8PathBuf;

/// Everything that can go wrong in a sarge operation. Messages name what
/// failed: the file, the line, the tar entry, the process, the instance.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The home folder has not been initialised.
    #[error(
        "{home} is not a sarge home (no etc/sarge.yaml): run `sarge --home {home} init` first"
    )]
    NotInitialised {
        /// The home folder.
        home: Utf8PathBuf,
    },
    /// `etc/sarge.yaml` is invalid.
    #[error(transparent)]
    Config(#[from] sarge_config::Error),
    /// Port allocation failed.
    #[error(transparent)]
    Ports(#[from] sarge_ports::Error),
    /// Creating the virtualenv or installing requirements failed.
    #[error(transparent)]
    Venv(#[from] sarge_venv::Error),
    /// supervisord refused or failed a request.
    #[error(transparent)]
    Supervisor(#[from] sarge_supervisor::Error),
    /// supervisord is not running for this home.
    #[error("supervisord is not running for {home}: start it with {home}/bin/supervisord")]
    SupervisordNotRunning {
        /// The home folder.
        home: Utf8PathBuf,
    },
    /// `/proc` could not be read to look for the processes a dead
    /// supervisord left running.
    #[error("cannot look for processes left by a supervisord that died: reading {path} failed")]
    ProcessScan {
        /// What could not be read.
        path: Utf8PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// haproxy refused a config or a command.
    #[error(transparent)]
    Haproxy(#[from] sarge_haproxy::Error),
    /// The haproxy binary could not be found.
    #[error("haproxy binary {bin:?} not found: install haproxy or set haproxy_bin in {config}")]
    HaproxyNotFound {
        /// What was looked for.
        bin: Utf8PathBuf,
        /// The sarge.yaml to fix.
        config: Utf8PathBuf,
    },
    /// haproxy did not come up with every route after it was started or
    /// reloaded (it exited, or never answered on its admin socket).
    #[error(
        "haproxy did not come up with the new config ({problem}); last lines of {log}:\n{log_tail}"
    )]
    HaproxyNotUp {
        /// What sarge saw.
        problem: String,
        /// haproxy's log file.
        log: Utf8PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// A stable address new to haproxy's config is held by another
    /// program; haproxy was not reloaded, so every other address kept
    /// serving.
    #[error("the stable address {address} of {process} is taken by another program ({source}): free it or change port_map in {config}")]
    StableAddressTaken {
        /// The process it is for.
        process: String,
        /// The address, as written in `port_map`.
        address: String,
        /// The sarge.yaml that names it.
        config: Utf8PathBuf,
        /// What binding it returned.
        #[source]
        source: std::io::Error,
    },
    /// A new `haproxy_bin` is not a haproxy that can run the current
    /// config; the running haproxy was left alone.
    #[error("haproxy_bin {bin} (set in {config}) cannot replace the running haproxy: {problem}")]
    HaproxyBinaryRefused {
        /// The binary.
        bin: Utf8PathBuf,
        /// The sarge.yaml that names it.
        config: Utf8PathBuf,
        /// What it did instead.
        problem: String,
    },
    /// After a switch, the end state could not be confirmed; the old
    /// routes were put back.
    #[error("the switch of {process} could not be confirmed, so the old instance keeps serving: {problem}")]
    SwitchNotVerified {
        /// The process being switched.
        process: String,
        /// What the check saw.
        problem: String,
    },
    /// The tarball as a whole could not be read.
    #[error("cannot unpack the tarball: {problem}")]
    Tarball {
        /// What is wrong with it.
        problem: String,
    },
    /// One tarball entry was refused; the whole tarball is refused with it.
    #[error("tarball entry {entry} {problem}")]
    TarEntry {
        /// The entry's path as written in the tarball.
        entry: String,
        /// Why it was refused.
        problem: String,
    },
    /// A file sarge reads from the app (`Procfile`, `requirements.txt`)
    /// is a folder, a link to nothing, or anything else but a file.
    #[error("{path} is not a regular file (it is {kind})")]
    AppFileKind {
        /// The file, relative to the app folder.
        path: Utf8PathBuf,
        /// What it is instead.
        kind: String,
    },
    /// A file sarge reads from the app is larger than sarge reads.
    #[error("{path} is larger than {limit} bytes ({size} bytes)")]
    AppFileTooLarge {
        /// The file, relative to the app folder.
        path: Utf8PathBuf,
        /// The most sarge reads.
        limit: u64,
        /// Its size.
        size: u64,
    },
    /// The app has no Procfile.
    #[error("the app has no Procfile at its root (looked for {path})")]
    ProcfileMissing {
        /// Where it was looked for.
        path: Utf8PathBuf,
    },
    /// A Procfile line is malformed.
    #[error("{path} line {line}: {problem}")]
    Procfile {
        /// The Procfile.
        path: Utf8PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        problem: String,
    },
    /// The requested process type is not in the Procfile.
    #[error("process {process:?} is not in the Procfile (it has: {available})")]
    ProcessNotInProcfile {
        /// The requested process.
        process: String,
        /// The processes the Procfile declares, comma-separated.
        available: String,
    },
    /// `release` named as a process to deploy: in a Procfile it is the
    /// release command, which a deploy runs before its instances start. (A
    /// name that breaks [`ProcessName`](crate::ProcessName)'s rule never
    /// gets this far: parsing it fails, with an [`Error::Config`].)
    #[error("\"release\" is the Procfile's release command, not a process to deploy: every deploy runs it before the new instances start")]
    ReleaseIsNotAProcess,
    /// The new instance's process exited while starting.
    #[error("instance {id} exited while starting ({state}); last lines of {log}:\n{log_tail}")]
    InstanceExited {
        /// The instance id.
        id: String,
        /// supervisord's description of the process state.
        state: String,
        /// The instance's log file.
        log: Utf8PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// The new instance never became ready.
    #[error(
        "instance {id} was not ready within {seconds} s ({what}); last lines of {log}:\n{log_tail}"
    )]
    InstanceNotReady {
        /// The instance id.
        id: String,
        /// The bound that ran out.
        seconds: f64,
        /// What sarge was waiting for.
        what: String,
        /// The instance's log file.
        log: Utf8PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// Text that is not a release id.
    #[error("{id:?} is not a release id: release ids are v1, v2, ...")]
    BadReleaseId {
        /// What was given.
        id: String,
    },
    /// A release that is not kept (never made, or pruned).
    #[error("release {id} is not one you can roll back to (kept releases: {known})")]
    UnknownRelease {
        /// The release asked for.
        id: String,
        /// The kept releases, newest first.
        known: String,
    },
    /// `sarge switch` or `sarge discard` of a release that is not the
    /// prepared one.
    #[error("release {id} is not prepared (prepared: {prepared}); prepare it with `sarge deploy --prepare`")]
    NotPrepared {
        /// The release asked for.
        id: crate::ReleaseId,
        /// The release that is prepared, or `none`.
        prepared: String,
    },
    /// The current release changed since the prepared one was prepared.
    #[error("release {id} was prepared on top of {based_on}, but {current} is current now; it was discarded, prepare again")]
    PreparedStale {
        /// The prepared release.
        id: crate::ReleaseId,
        /// The release current when it was prepared, or `none`.
        based_on: String,
        /// The release current now, or `none`.
        current: String,
    },
    /// A release whose deploy ran no release command.
    #[error("release {id} ran no release command (its Procfile has no release: line)")]
    NoReleaseOutput {
        /// The release.
        id: crate::ReleaseId,
    },
    /// A name that cannot be an app's environment variable.
    #[error("{name:?} cannot be an env name: it {problem}")]
    BadEnvName {
        /// The name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A command that needs a release before the first deploy.
    #[error("nothing is deployed in {home} yet: deploy first")]
    NothingDeployed {
        /// The home.
        home: Utf8PathBuf,
    },
    /// Nothing to roll back to.
    #[error("there is no release before {current} to roll back to")]
    NothingToRollBackTo {
        /// The current release, or `none`.
        current: String,
    },
    /// A rollout was asked for a process its release does not run.
    #[error("release {release} has no process {process:?}")]
    ProcessNotInRelease {
        /// The process.
        process: String,
        /// The release.
        release: crate::ReleaseId,
    },
    /// `port_range` cannot hold the instances a rollout would start.
    #[error("{processes} need {needed} more port(s) but port_range {first}-{last} has {free} free; widen port_range in {config}")]
    PortsTooFew {
        /// Ports the new instances need.
        needed: usize,
        /// Ports of the range no instance holds.
        free: usize,
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
        /// The processes being rolled out.
        processes: String,
        /// The config file that sets `port_range`.
        config: Utf8PathBuf,
    },
    /// A scale request that cannot be carried out as written.
    #[error("{problem}")]
    BadScale {
        /// What is wrong, naming the argument.
        problem: String,
    },
    /// A target names no instance.
    #[error("no instance or process named {target:?} (current instances: {known})")]
    UnknownTarget {
        /// What the user asked for.
        target: String,
        /// What exists, comma-separated.
        known: String,
    },
    /// A state file under `var/` is unreadable.
    #[error("state file {path} is corrupt: {problem}")]
    StateFile {
        /// The file.
        path: Utf8PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A program sarge runs could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file system operation failed (the message names the path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The Procfile's `release:` command exited non-zero or was killed by
    /// a signal; no instance of the new release was started.
    #[error("the release command `{command}` {status}, so the new release was not started; last lines of its output (all of it is in {output_file}):\n{last_lines}")]
    ReleaseCommandFailed {
        /// The command, as in the Procfile (cut if long).
        command: String,
        /// `exited with status 3` or `was killed by signal 9`.
        status: String,
        /// The file that holds the whole output.
        output_file: Utf8PathBuf,
        /// The last lines, indented, one per line.
        last_lines: String,
    },
    /// The Procfile's `release:` command ran past `release_timeout`; it and
    /// every process it started in its group were killed.
    #[error("the release command `{command}` ran past release_timeout ({seconds} s) and was killed, so the new release was not started; raise release_timeout in sarge.yaml if it needs longer. Last lines of its output (all of it is in {output_file}):\n{last_lines}")]
    ReleaseCommandTimedOut {
        /// The command, as in the Procfile (cut if long).
        command: String,
        /// `release_timeout`, in seconds.
        seconds: f64,
        /// The file that holds the whole output.
        output_file: Utf8PathBuf,
        /// The last lines, indented, one per line.
        last_lines: String,
    },
    /// An entry of a wheel archive given to `sarge dist add` was refused;
    /// nothing of the archive was added.
    #[error("wheel archive entry {entry} {problem}; no wheel of the archive was added")]
    DistEntry {
        /// The entry's path as written in the archive.
        entry: String,
        /// Why it was refused.
        problem: String,
    },
    /// A wheel could not be written into the wheel folder.
    #[error("cannot write wheel {path}")]
    DistWrite {
        /// The file being written or renamed.
        path: Utf8PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `sarge push` was run outside a git repository.
    #[error("{dir} is not in a git repository: run sarge push in the app's repository ({detail})")]
    NotAGitRepository {
        /// Where sarge looked.
        dir: Utf8PathBuf,
        /// What git said.
        detail: String,
    },
    /// The repository has no commit to deploy.
    #[error("the repository {repo} has no commits yet: commit the app, sarge push deploys HEAD")]
    NoCommits {
        /// The repository root.
        repo: Utf8PathBuf,
    },
    /// HEAD has no Procfile at the repository root.
    #[error("HEAD of {repo} has no Procfile at the repository root: commit one (e.g. `web: python app.py $PORT`)")]
    NoProcfileInHead {
        /// The repository root.
        repo: Utf8PathBuf,
    },
    /// A git command failed.
    #[error("`{command}` failed in {repo}: {detail}")]
    Git {
        /// The command.
        command: String,
        /// The repository.
        repo: Utf8PathBuf,
        /// What git printed.
        detail: String,
    },
    /// No target was given and none is configured.
    #[error(
        "no target to push to: give [user@]host:SARGE_HOME or a name, or set TARGET in {env_file}"
    )]
    NoTargets {
        /// The `.env` file looked at.
        env_file: Utf8PathBuf,
    },
    /// A target that is neither `[user@]host:SARGE_HOME` nor a name set in `.env`.
    #[error("target {target:?} {problem}")]
    BadTarget {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `SARGE_SSH` is set but names no command.
    #[error("SARGE_SSH is set but names no command (it is {value:?})")]
    BadSshCommand {
        /// Its value.
        value: String,
    },
    /// ssh itself failed to reach a target (exit status 255).
    #[error("{target}: ssh failed: {message}")]
    Ssh {
        /// The target.
        target: String,
        /// ssh's own message.
        message: String,
    },
    /// The target path holds no sarge home.
    #[error("{target}: no sarge home at {home} ({detail}): run `sarge init` there first")]
    NoRemoteHome {
        /// The target.
        target: String,
        /// The path.
        home: Utf8PathBuf,
        /// What the server said.
        detail: String,
    },
    /// `sarge setup` cannot copy this sarge to the server: it would not
    /// run there (another architecture, C library or an older glibc).
    #[error("{target}: this sarge cannot run there: {why}\nbuild sarge on the server instead, from a checkout of sarge with Rust 1.89+:\n  cargo install --path crates/sarge-cli\n  ~/.cargo/bin/sarge --home {home} init   # installs itself as {home}/opt/sarge\nand install what it runs (Debian: apt-get install haproxy supervisor python3-venv); `sarge setup` from a sarge of the same version then leaves that build in place")]
    SetupNeedsBuild {
        /// The target.
        target: String,
        /// Its sarge home.
        home: Utf8PathBuf,
        /// How the server differs from what this sarge needs.
        why: String,
    },
    /// A step of `sarge setup` failed on the server.
    #[error("{target}: {step} failed: {message}")]
    SetupStep {
        /// The target.
        target: String,
        /// The step: `asking the server about itself`, `installing the
        /// sarge binary`, `sarge init`, `starting supervisord`.
        step: String,
        /// What the server printed (its `error:` line), or its status.
        message: String,
    },
    /// A sarge command on a target failed; its `error:` line is shown.
    #[error("{target}: {message}")]
    Remote {
        /// The target.
        target: String,
        /// What sarge printed on the target (its `error:` line), or its status.
        message: String,
    },
    /// A missing requirement has no wheel in `--wheels DIR`.
    #[error("{target} needs {requirement} and {dir} has no wheel of it for Python {python_version} on the server's platform: add one (`pip wheel --no-deps -w {dir} '{requirement}'` builds one from source for this machine's platform)")]
    WheelNotInDir {
        /// The target.
        target: String,
        /// The requirement line.
        requirement: String,
        /// The `--wheels` folder.
        dir: Utf8PathBuf,
        /// The server's Python version.
        python_version: String,
    },
    /// pip found no wheel of a requirement for the target's platform
    /// (an sdist-only package, or a version without such a wheel).
    #[error("{target} needs {requirement}, which has no wheel for Python {python_version} on the server's platform ({detail}): build one with `pip wheel --no-deps -w wheels '{requirement}'` on a machine like the server and push with --wheels wheels")]
    NoWheel {
        /// The target.
        target: String,
        /// The requirement line.
        requirement: String,
        /// The server's Python version.
        python_version: String,
        /// pip's last line.
        detail: String,
    },
}

/// `Result` with sarge-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Most characters of a name or line echoed in an error message.
const EXCERPT_CHARS: usize = 200;

/// `text` fit for one line of an error message: control characters
/// escaped (a name with a line break must not forge a second `error:`
/// line) and, past 200 characters, cut with its full length in bytes, so
/// that a hostile 256 MB name gives a short message.
pub(crate) fn excerpt(text: &str) -> String {
    let mut shown = String::new();
    for (index, c) in text.chars().enumerate() {
        if index == EXCERPT_CHARS {
            shown.push_str(&format!("... ({} bytes)", text.len()));
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_debug());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_one_line() {
        assert_eq!(excerpt("app.py"), "app.py");
        assert_eq!(excerpt("a\nerror: b\u{1b}[2J"), "a\\nerror: b\\u{1b}[2J");
        let long = "é".repeat(300);
        assert_eq!(
            excerpt(&long),
            format!("{}... (600 bytes)", "é".repeat(200))
        );
        assert_eq!(excerpt(&"x".repeat(200)), "x".repeat(200));
    }
}
