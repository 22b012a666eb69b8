//! `sarge push`: deploy the app's git HEAD from the dev machine to one or
//! many servers over the system `ssh`, sending the wheels they lack.
//!
//! The client needs no sarge home. It reads the repository (committed
//! files only: `git archive HEAD`), resolves the [`Target`]s (arguments,
//! or `TARGET` / `TARGET_<NAME>` from the `.env` at the repository root)
//! and talks to each target's `SARGE_HOME/bin/sarge` through `ssh` (or
//! `SARGE_SSH`, split into words like `GIT_SSH_COMMAND`), so the user's
//! `~/.ssh/config`, agent and jump hosts apply. No ssh library, no daemon.
//!
//! A push runs in two phases so the slow, failure-prone part happens on
//! every target before anything switches:
//!
//! 1. **prepare**, on every target, `parallel` at a time: compare versions,
//!    ask `sarge dist missing` what the server's `dist/` lacks for its
//!    Python, get those wheels here (`--wheels DIR`, else `pip download`
//!    for the server's platform) and send them with `sarge dist add`, then
//!    stream the tarball to `sarge deploy --prepare -`: unpack, install,
//!    release command (on the first target only), start, ready. Nothing
//!    switches.
//! 2. **switch**, `batch` targets at a time: `sarge switch RELEASE`, the
//!    haproxy switch, verify and drain, which take milliseconds.
//!
//! If any target fails to prepare, what the others prepared is discarded
//! (`sarge discard RELEASE`) and no target is switched; a target the
//! client never reaches again discards it by itself after its
//! `prepared_timeout`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use sarge_config::ProcessName;
use sarge_venv::{wheels_in, Requirement, WheelTag};
use serde::Deserialize;

use crate::error::{excerpt, Error, Result};
use crate::ssh::{cannot_run_ssh, shell_quote, ssh_failed, SshCommand, Target};

/// What `sarge --version` prints for this library's version: the default
/// [`PushOptions::client_version`].
pub const CLIENT_VERSION: &str = concat!("sarge ", env!("CARGO_PKG_VERSION"));

/// The `KEY=value` lines of a `.env` file (`export `, quotes and `#`
/// comments as shells and dotenv libraries read them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DotEnv {
    /// The file, for messages.
    pub path: Utf8PathBuf,
    /// Its variables.
    pub vars: BTreeMap<String, String>,
}

impl DotEnv {
    /// Reads `path`; a missing file has no variables.
    pub fn load(path: &Utf8Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(_) => fs_err::read_to_string(path)?,
        };
        Ok(Self::parse(path, &text))
    }

    /// The variables of `text`, read as the file `path`.
    pub fn parse(path: &Utf8Path, text: &str) -> Self {
        let mut vars = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            let value = if let Some(quoted) = value
                .strip_prefix('"')
                .and_then(|rest| rest.split_once('"'))
                .or_else(|| {
                    value
                        .strip_prefix('\'')
                        .and_then(|rest| rest.split_once('\''))
                }) {
                quoted.0
            } else {
                // An unquoted value ends at a ` #` comment.
                value.split(" #").next().unwrap_or("").trim_end()
            };
            vars.insert(key.trim().to_owned(), value.to_owned());
        }
        Self {
            path: path.to_owned(),
            vars,
        }
    }
}

/// The targets a push goes to: each of `given` that is
/// `[user@]host:SARGE_HOME`, or a name read as `TARGET_<NAME>` from `env`;
/// with none given, `TARGET` from `env`. A value may list several targets,
/// separated by commas or spaces.
pub fn resolve_targets(given: &[String], env: &DotEnv) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    let split = |value: &str| -> Vec<String> {
        value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let given: Vec<String> = if given.is_empty() {
        match env.vars.get("TARGET") {
            Some(value) if !split(value).is_empty() => split(value),
            _ => {
                return Err(Error::NoTargets {
                    env_file: env.path.clone(),
                })
            }
        }
    } else {
        given.iter().flat_map(|value| split(value)).collect()
    };
    for spec in given {
        if spec.contains(':') {
            targets.push(spec.parse()?);
            continue;
        }
        let key = format!("TARGET_{}", spec.to_ascii_uppercase().replace('-', "_"));
        let Some(value) = env.vars.get(&key) else {
            return Err(Error::BadTarget {
                target: excerpt(&spec),
                problem: format!(
                    "is not [user@]host:SARGE_HOME, and {} sets no {key}",
                    env.path
                ),
            });
        };
        let listed = split(value);
        if listed.is_empty() {
            return Err(Error::BadTarget {
                target: excerpt(&spec),
                problem: format!("is set to nothing by {key} in {}", env.path),
            });
        }
        for target in listed {
            targets.push(target.parse()?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    targets.retain(|target: &Target| seen.insert(target.clone()));
    Ok(targets)
}

/// What to push and how: [`push`]'s options. Fields are added in minor
/// releases: fill in what you need and end with `..PushOptions::default()`.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// A folder in the app's git repository (the CLI: the current one).
    pub repo_dir: Utf8PathBuf,
    /// Targets or names as given (empty: `TARGET` from `.env`).
    pub targets: Vec<String>,
    /// The processes that get the new code (empty: every one).
    pub processes: Vec<ProcessName>,
    /// Take missing wheels from this folder instead of `pip download`.
    pub wheels: Option<Utf8PathBuf>,
    /// Targets prepared at once (default: all).
    pub parallel: Option<usize>,
    /// Targets switched at once (default: 1).
    pub batch: Option<usize>,
    /// The ssh command (default: [`SshCommand::from_env`]).
    pub ssh: Option<SshCommand>,
    /// What the client's `sarge --version` prints, compared with each
    /// server's (default: [`CLIENT_VERSION`]).
    pub client_version: Option<String>,
}

/// What happens during a push, for a reporter to show.
#[derive(Debug)]
#[non_exhaustive]
pub enum PushEvent<'a> {
    /// The work tree has changes that are not deployed.
    Uncommitted {
        /// How many files differ from HEAD (untracked ones included).
        files: usize,
    },
    /// A phase starts.
    Phase {
        /// `prepare` or `switch`.
        name: &'static str,
        /// The targets it runs on.
        targets: &'a [Target],
    },
    /// The server runs another sarge version.
    VersionMismatch {
        /// The target.
        target: &'a Target,
        /// What it runs (`sarge --version`).
        server: &'a str,
        /// What this client is.
        client: &'a str,
    },
    /// What the server's `dist/` lacks, before it is sent.
    WheelsMissing {
        /// The target.
        target: &'a Target,
        /// The requirement lines.
        requirements: &'a [String],
    },
    /// Wheels were uploaded to the server's `dist/`.
    WheelsSent {
        /// The target.
        target: &'a Target,
        /// Their file names.
        wheels: &'a [String],
    },
    /// A line the server printed (its deploy progress).
    Remote {
        /// The target.
        target: &'a Target,
        /// The line.
        line: &'a str,
    },
    /// A target failed; the summary has it too.
    Failed {
        /// The target.
        target: &'a Target,
        /// Why.
        error: &'a Error,
    },
}

/// Receives [`PushEvent`]s, from several threads at once.
pub trait PushProgress: Sync {
    /// One event; the default ignores it.
    fn event(&self, event: &PushEvent<'_>) {
        let _ = event;
    }
}

/// How one target's push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetOutcome {
    /// Deployed.
    Deployed,
    /// It failed, with the error's message.
    Failed(String),
    /// Not switched, because another target failed (named here).
    NotDeployed(String),
}

impl fmt::Display for TargetOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetOutcome::Deployed => f.write_str("deployed"),
            TargetOutcome::Failed(_) => f.write_str("failed"),
            TargetOutcome::NotDeployed(why) => write!(f, "not deployed ({why})"),
        }
    }
}

/// One row of the summary.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TargetReport {
    /// The target.
    pub target: Target,
    /// The release it deployed (`v7`), if it did.
    pub release: Option<String>,
    /// How it ended.
    pub outcome: TargetOutcome,
    /// Time spent on it.
    pub elapsed: Duration,
}

/// What [`push`] did, target by target, in the order given.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PushReport {
    /// One row per target.
    pub targets: Vec<TargetReport>,
}

impl PushReport {
    /// Whether every target deployed.
    pub fn succeeded(&self) -> bool {
        self.targets
            .iter()
            .all(|report| report.outcome == TargetOutcome::Deployed)
    }
}

/// The app as committed: what every target gets.
struct App {
    repo: Utf8PathBuf,
    /// `git archive HEAD`, written once to a temp file and streamed from
    /// it to each target: a large app is never all in memory.
    tarball: Utf8PathBuf,
    requirements: Option<String>,
    /// Holds the tarball; removed with it.
    _scratch: TempDir,
}

impl App {
    fn read(dir: &Utf8Path, progress: &dyn PushProgress) -> Result<Self> {
        let git = |args: &[&str]| -> Result<Output> {
            Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|source| Error::Spawn {
                    program: "git".to_owned(),
                    source,
                })
        };
        let toplevel = git(&["rev-parse", "--show-toplevel"])?;
        if !toplevel.status.success() {
            return Err(Error::NotAGitRepository {
                dir: dir.to_owned(),
                detail: String::from_utf8_lossy(&toplevel.stderr).trim().to_owned(),
            });
        }
        let repo = Utf8PathBuf::from(String::from_utf8_lossy(&toplevel.stdout).trim());
        if !git(&["rev-parse", "--verify", "--quiet", "HEAD^{commit}"])?
            .status
            .success()
        {
            return Err(Error::NoCommits { repo });
        }
        if !git(&["cat-file", "-e", "HEAD:Procfile"])?.status.success() {
            return Err(Error::NoProcfileInHead { repo });
        }
        let checked = |args: &[&str]| -> Result<Vec<u8>> {
            let out = git(args)?;
            if !out.status.success() {
                return Err(Error::Git {
                    command: format!("git {}", args.join(" ")),
                    repo: repo.clone(),
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            Ok(out.stdout)
        };
        let status = checked(&["status", "--porcelain"])?;
        let changed = status
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        if changed > 0 {
            progress.event(&PushEvent::Uncommitted { files: changed });
        }
        // requirements.txt with the files it includes (`-r`) appended, as
        // committed: the installer on the server reads them all.
        let show = |path: &str| -> Result<Option<String>> {
            let object = format!("HEAD:{path}");
            if !git(&["cat-file", "-e", &object])?.status.success() {
                return Ok(None);
            }
            Ok(Some(
                String::from_utf8_lossy(&checked(&["show", &object])?).into_owned(),
            ))
        };
        let requirements = match show("requirements.txt")? {
            None => None,
            Some(top) => {
                let mut text = String::new();
                let mut queue = vec![("requirements.txt".to_owned(), top)];
                let mut seen = vec!["requirements.txt".to_owned()];
                while let Some((path, body)) = queue.pop() {
                    for include in includes(&path, &body) {
                        if seen.len() < MAX_INCLUDES && !seen.contains(&include) {
                            if let Some(included) = show(&include)? {
                                queue.push((include.clone(), included));
                            }
                            seen.push(include);
                        }
                    }
                    text.push_str(&body);
                    text.push('\n');
                }
                Some(text)
            }
        };
        let scratch = TempDir::new("sarge-push")?;
        let tarball = scratch.0.join("app.tar");
        checked(&["archive", "--format=tar", "-o", tarball.as_str(), "HEAD"])?;
        Ok(Self {
            repo,
            tarball,
            requirements,
            _scratch: scratch,
        })
    }
}

/// Most requirement files read for one push (the top one included).
const MAX_INCLUDES: usize = 64;

/// The repository paths of the files that `-r FILE` / `--requirement FILE`
/// lines of the requirements file at `path` include (relative to its
/// folder, as installers resolve them); a path that leaves the repository
/// is left out (the server refuses it).
fn includes(path: &str, text: &str) -> Vec<String> {
    let folder = path.rsplit_once('/').map_or("", |(folder, _)| folder);
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // `-r FILE`, `-rFILE`, `--requirement FILE`, `--requirement=FILE`.
        let rest = line
            .strip_prefix("--requirement")
            .filter(|rest| rest.starts_with([' ', '\t', '=']))
            .or_else(|| {
                line.strip_prefix("-r")
                    .filter(|rest| !rest.starts_with('-'))
            });
        let Some(rest) = rest else { continue };
        let file = rest.trim_start_matches(['=', ' ', '\t']);
        let file = file.split(" #").next().unwrap_or("").trim();
        if file.is_empty() || file.starts_with('/') {
            continue;
        }
        let mut parts: Vec<&str> = folder.split('/').filter(|p| !p.is_empty()).collect();
        let mut inside = true;
        for part in file.split('/') {
            match part {
                "" | "." => {}
                ".." => inside &= parts.pop().is_some(),
                part => parts.push(part),
            }
        }
        if inside && !parts.is_empty() {
            found.push(parts.join("/"));
        }
    }
    found
}

/// What `sarge dist missing --json` answers.
#[derive(Deserialize)]
struct RemoteMissing {
    missing: Vec<String>,
    python_version: String,
    tags: Vec<String>,
}

/// Deploys the app's HEAD to every target: prepare on all, then switch
/// `batch` at a time. Errors before any target is contacted (not a git
/// repository, no targets) are returned; what happens on each target is
/// in the [`PushReport`].
pub fn push(options: &PushOptions, progress: &dyn PushProgress) -> Result<PushReport> {
    let app = App::read(&options.repo_dir, progress)?;
    let env = DotEnv::load(&app.repo.join(".env"))?;
    let targets = resolve_targets(&options.targets, &env)?;
    let ssh = match &options.ssh {
        Some(ssh) => ssh.clone(),
        None => SshCommand::from_env()?,
    };
    let runs: Vec<TargetRun<'_>> = targets
        .iter()
        .enumerate()
        .map(|(index, target)| TargetRun {
            target,
            ssh: &ssh,
            app: &app,
            options,
            progress,
            elapsed: Mutex::new(Duration::ZERO),
            runs_release_command: index == 0,
            prepared: Mutex::new(None),
        })
        .collect();
    let mut reports: Vec<TargetReport> = targets
        .iter()
        .map(|target| TargetReport {
            target: target.clone(),
            release: None,
            outcome: TargetOutcome::NotDeployed("not reached".to_owned()),
            elapsed: Duration::ZERO,
        })
        .collect();

    progress.event(&PushEvent::Phase {
        name: "prepare",
        targets: &targets,
    });
    let parallel = options.parallel.unwrap_or(runs.len()).max(1);
    let prepared = run_parallel(&runs, parallel, |run| run.step(|| run.prepare()));
    let mut failed_prepare = Vec::new();
    for (index, result) in prepared.into_iter().enumerate() {
        if let Err(error) = result {
            reports[index].outcome = TargetOutcome::Failed(error.to_string());
            failed_prepare.push(targets[index].to_string());
        }
    }
    if !failed_prepare.is_empty() {
        // Every target keeps serving its current release: what was
        // prepared anywhere is discarded.
        run_parallel(&runs, parallel, TargetRun::discard);
        let why = format!(
            "{} failed to prepare; nothing was switched anywhere",
            failed_prepare.join(", ")
        );
        return Ok(finish(reports, &runs, &why));
    }

    progress.event(&PushEvent::Phase {
        name: "switch",
        targets: &targets,
    });
    let batch = options.batch.unwrap_or(1).max(1);
    for (batch_index, chunk) in runs.chunks(batch).enumerate() {
        let switched = run_parallel(chunk, chunk.len(), |run| run.step(|| run.switch()));
        let mut failed = Vec::new();
        for (offset, result) in switched.into_iter().enumerate() {
            let index = batch_index * batch + offset;
            match result {
                Ok(release) => {
                    reports[index].release = release;
                    reports[index].outcome = TargetOutcome::Deployed;
                }
                Err(error) => {
                    reports[index].outcome = TargetOutcome::Failed(error.to_string());
                    failed.push(targets[index].to_string());
                }
            }
        }
        if !failed.is_empty() {
            // The targets not reached stay on their release; what they
            // prepared goes.
            let rest = &runs[(batch_index + 1) * batch..];
            run_parallel(rest, rest.len().max(1), TargetRun::discard);
            let why = format!("the rollout stopped after {} failed", failed.join(", "));
            return Ok(finish(reports, &runs, &why));
        }
    }
    Ok(finish(reports, &runs, ""))
}

/// The reports with each target's time, and `why` for those not reached.
fn finish(mut reports: Vec<TargetReport>, runs: &[TargetRun<'_>], why: &str) -> PushReport {
    for (report, run) in reports.iter_mut().zip(runs) {
        report.elapsed = *run.elapsed.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(report.outcome, TargetOutcome::NotDeployed(_)) {
            report.outcome = TargetOutcome::NotDeployed(why.to_owned());
        }
    }
    PushReport { targets: reports }
}

/// `work` on each of `items`, `at_once` at a time; results in item order.
fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    at_once: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..at_once.min(items.len()) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(index) else {
                    break;
                };
                let result = work(item);
                results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// Everything done on one target, step by step.
struct TargetRun<'a> {
    target: &'a Target,
    ssh: &'a SshCommand,
    app: &'a App,
    options: &'a PushOptions,
    progress: &'a dyn PushProgress,
    /// Time spent on this target so far.
    elapsed: Mutex<Duration>,
    /// Whether this target runs the Procfile's release command: the
    /// first one only, so migrations run once.
    runs_release_command: bool,
    /// The release prepared on this target, once it is.
    prepared: Mutex<Option<String>>,
}

impl TargetRun<'_> {
    /// Runs one phase's `work` on this target, adding up its time and
    /// saying at once when it fails (other targets may still be running).
    fn step<R>(&self, work: impl FnOnce() -> Result<R>) -> Result<R> {
        let start = Instant::now();
        let result = work();
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner()) += start.elapsed();
        if let Err(error) = &result {
            self.progress.event(&PushEvent::Failed {
                target: self.target,
                error,
            });
        }
        result
    }

    /// Phase 1: everything that may fail slowly, changing no release.
    fn prepare(&self) -> Result<()> {
        // One connection asks both: each costs a round trip and a login.
        let requirements = self.app.requirements.as_deref();
        let mut invocations: Vec<&[&str]> = vec![&["--version"]];
        if requirements.is_some() {
            invocations.push(&["dist", "missing", "--json", "-"]);
        }
        let output = self.remote_output(&invocations, |stdin| {
            stdin.write_all(requirements.unwrap_or("").as_bytes())
        })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (version, missing) = stdout.split_once('\n').unwrap_or((&stdout, ""));
        if !version.trim().is_empty() {
            self.check_version(version.trim());
        }
        self.checked(output)?;
        if requirements.is_some() {
            self.send_missing_wheels(missing)?;
        }
        let processes: Vec<&str> = self
            .options
            .processes
            .iter()
            .map(ProcessName::as_str)
            .collect();
        let mut args = vec!["deploy", "--prepare"];
        if !self.runs_release_command {
            args.push("--no-release-command");
        }
        args.push("-");
        args.extend(processes);
        let printed = self.stream(&args, Some(&self.app.tarball))?;
        let release = last_word_after(&printed, "prepared release ")
            .ok_or_else(|| self.remote_error("it did not say which release it prepared"))?;
        *self.prepared.lock().unwrap_or_else(|e| e.into_inner()) = Some(release);
        Ok(())
    }

    /// Phase 2: the switch to the prepared release; the release id.
    fn switch(&self) -> Result<Option<String>> {
        let Some(release) = self.prepared_release() else {
            return Err(self.remote_error("nothing was prepared on it"));
        };
        let printed = self.stream(&["switch", &release], None)?;
        Ok(last_word_after(&printed, "switched to release ").or(Some(release)))
    }

    /// Discards what phase 1 prepared here, if anything. Best effort: it
    /// runs after another failure, and the target discards a prepared
    /// release by itself after `prepared_timeout`.
    fn discard(&self) {
        let Some(release) = self.prepared_release() else {
            return;
        };
        let discarded = self.stream(&["discard", &release], None);
        if discarded.is_ok() {
            *self.prepared.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    fn prepared_release(&self) -> Option<String> {
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn target_name(&self) -> String {
        self.target.to_string()
    }

    /// The ssh command that runs `bin/sarge ARGS` on the target for each
    /// ARGS of `invocations` in turn, while they succeed.
    fn command(&self, invocations: &[&[&str]], merge_stderr: bool) -> Command {
        let sarge = shell_quote(self.target.home.join("bin/sarge").as_str());
        let mut remote = String::new();
        for (index, args) in invocations.iter().enumerate() {
            if index + 1 == invocations.len() {
                remote.push_str("exec ");
            }
            remote.push_str(&sarge);
            for arg in *args {
                remote.push(' ');
                remote.push_str(&shell_quote(arg));
            }
            if index + 1 < invocations.len() {
                remote.push_str(" && ");
            }
        }
        if merge_stderr {
            remote.push_str(" 2>&1");
        }
        self.ssh.remote(self.target, &remote)
    }

    /// Runs `bin/sarge ARGS` on the target with `input` on its stdin; an
    /// error if it fails.
    fn remote(
        &self,
        args: &[&str],
        feed: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    ) -> Result<Output> {
        let output = self.remote_output(&[args], feed)?;
        self.checked(output)
    }

    /// `output` if its command succeeded, else the error it shows.
    fn checked(&self, output: Output) -> Result<Output> {
        if output.status.success() {
            return Ok(output);
        }
        Err(self.failure(
            output.status.code(),
            &String::from_utf8_lossy(&output.stderr),
        ))
    }

    /// Runs [`TargetRun::command`] of `invocations` with what `feed`
    /// writes on its stdin (streamed, never all in memory), whatever its
    /// status. An error of `feed` itself (a local file that cannot be
    /// read) is returned; the remote closing its stdin early is not: its
    /// own message says why.
    fn remote_output(
        &self,
        invocations: &[&[&str]],
        feed: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    ) -> Result<Output> {
        let mut child = self
            .command(invocations, false)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.cannot_run_ssh(&source))?;
        let stdin = child.stdin.take();
        let (output, fed) = std::thread::scope(|scope| {
            let feeding = scope.spawn(move || match stdin {
                // Dropped at the end: the remote sees end of input.
                Some(mut stdin) => feed(&mut stdin),
                None => Ok(()),
            });
            let output = child.wait_with_output();
            (output, feeding.join())
        });
        let output = output?;
        match fed {
            Ok(Err(error)) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
            _ => Ok(output),
        }
    }

    /// The error for an ssh command that could not be started (a wrong
    /// `SARGE_SSH`), naming the target like ssh's own failures.
    fn cannot_run_ssh(&self, source: &std::io::Error) -> Error {
        cannot_run_ssh(self.target, self.ssh, source)
    }

    /// The error for a remote command that exited with `code`, printing
    /// `stderr`.
    /// An error of this target that sarge found, not one it printed.
    fn remote_error(&self, message: &str) -> Error {
        Error::Remote {
            target: self.target_name(),
            message: message.to_owned(),
        }
    }

    fn failure(&self, code: Option<i32>, stderr: &str) -> Error {
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = lines.last().map_or(String::new(), |l| excerpt(l.trim()));
        match code {
            Some(255) => ssh_failed(self.target, stderr),
            Some(126 | 127) => Error::NoRemoteHome {
                target: self.target_name(),
                home: self.target.home.clone(),
                detail: last,
            },
            _ => {
                // The remote `error:` line and what is indented under it.
                // A line that starts with it: progress lines (`release |
                // ...`) may contain the words.
                let error_line = if stderr.starts_with("error: ") {
                    Some(0)
                } else {
                    stderr.find("\nerror: ").map(|at| at + 1)
                };
                let message = match error_line {
                    Some(at) => stderr[at + "error: ".len()..].trim_end().to_owned(),
                    None if last.is_empty() => match code {
                        Some(code) => format!("remote sarge exited with status {code}"),
                        None => "remote sarge was killed by a signal".to_owned(),
                    },
                    None => last,
                };
                Error::Remote {
                    target: self.target_name(),
                    message,
                }
            }
        }
    }

    /// Warns when the server's `sarge --version` is not this client's.
    fn check_version(&self, server: &str) {
        let client = self
            .options
            .client_version
            .as_deref()
            .unwrap_or(CLIENT_VERSION);
        if server != client {
            self.progress.event(&PushEvent::VersionMismatch {
                target: self.target,
                server,
                client,
            });
        }
    }

    /// Sends the wheels that `missing` (what `sarge dist missing --json`
    /// printed) says the server lacks.
    fn send_missing_wheels(&self, missing: &str) -> Result<()> {
        let answer: RemoteMissing =
            serde_json::from_str(missing).map_err(|error| Error::Remote {
                target: self.target_name(),
                message: format!(
                    "`sarge dist missing --json` answered something else than its JSON ({error})"
                ),
            })?;
        if answer.missing.is_empty() {
            return Ok(());
        }
        self.progress.event(&PushEvent::WheelsMissing {
            target: self.target,
            requirements: &answer.missing,
        });
        let supported = answer
            .tags
            .iter()
            .filter_map(|tag| tag.parse::<WheelTag>().ok())
            .collect();
        let download;
        let dir = match &self.options.wheels {
            Some(dir) => dir.as_path(),
            None => {
                download = TempDir::new("sarge-push-wheels")?;
                self.pip_download(&answer, &download.0)?;
                download.0.as_path()
            }
        };
        let available = wheels_in(dir)?;
        let mut chosen: Vec<&Utf8Path> = Vec::new();
        for line in &answer.missing {
            let Some(requirement) = Requirement::parse(line) else {
                continue;
            };
            let Some((path, _)) = available
                .iter()
                .find(|(_, wheel)| requirement.is_satisfied_by(wheel, &supported))
            else {
                return Err(Error::WheelNotInDir {
                    target: self.target_name(),
                    requirement: line.clone(),
                    dir: dir.to_owned(),
                    python_version: answer.python_version.clone(),
                });
            };
            if !chosen.contains(&path.as_path()) {
                chosen.push(path);
            }
        }
        self.remote(&["dist", "add", "-"], |stdin| {
            let mut builder = tar::Builder::new(stdin);
            for path in &chosen {
                let mut file = fs_err::File::open(path)?;
                let name = path.file_name().unwrap_or_default();
                builder.append_file(name, file.file_mut())?;
            }
            builder.finish()
        })?;
        let sent: Vec<String> = chosen
            .iter()
            .map(|path| path.file_name().unwrap_or_default().to_owned())
            .collect();
        self.progress.event(&PushEvent::WheelsSent {
            target: self.target,
            wheels: &sent,
        });
        Ok(())
    }

    /// `pip download`s a wheel of each missing line for the server's
    /// Python and platform into `dir`.
    fn pip_download(&self, answer: &RemoteMissing, dir: &Utf8Path) -> Result<()> {
        let tags: Vec<WheelTag> = answer.tags.iter().filter_map(|t| t.parse().ok()).collect();
        let mut platforms: Vec<&str> = Vec::new();
        let mut abis: Vec<&str> = Vec::new();
        for tag in &tags {
            if tag.platform != "any" && !platforms.contains(&tag.platform.as_str()) {
                platforms.push(&tag.platform);
            }
            if !abis.contains(&tag.abi.as_str()) {
                abis.push(&tag.abi);
            }
        }
        let implementation = tags.first().map_or("cp", |tag| {
            if tag.interpreter.starts_with("cp") {
                "cp"
            } else {
                "py"
            }
        });
        for line in &answer.missing {
            let Some(requirement) = Requirement::parse(line) else {
                continue;
            };
            let spec = requirement.line.split(';').next().unwrap_or("").trim();
            let mut command = Command::new("python3");
            command
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--only-binary=:all:",
                    "--no-deps",
                ])
                .args(["--python-version", &answer.python_version])
                .args(["--implementation", implementation])
                .arg("--dest")
                .arg(dir);
            for abi in &abis {
                command.args(["--abi", abi]);
            }
            for platform in &platforms {
                command.args(["--platform", platform]);
            }
            let output = command
                .arg(spec)
                .stdin(Stdio::null())
                .output()
                .map_err(|source| Error::Spawn {
                    program: "python3 -m pip download".to_owned(),
                    source,
                })?;
            if !output.status.success() {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let detail = stderr
                    .lines()
                    .rfind(|l| l.contains("ERROR") || !l.trim().is_empty())
                    .map_or("pip download failed".to_owned(), |l| excerpt(l.trim()));
                return Err(Error::NoWheel {
                    target: self.target_name(),
                    requirement: line.clone(),
                    python_version: answer.python_version.clone(),
                    detail,
                });
            }
        }
        Ok(())
    }

    /// Runs `bin/sarge ARGS` on the target with the file `input` (if
    /// any) streamed to its stdin, showing each line it prints as this
    /// target's progress; what it printed, or the error it shows.
    fn stream(&self, args: &[&str], input: Option<&Utf8Path>) -> Result<String> {
        let mut child = self
            .command(&[args], true)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.cannot_run_ssh(&source))?;
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut input = input.map(fs_err::File::open).transpose()?;
        let (printed, ssh_said) = std::thread::scope(|scope| {
            scope.spawn(move || {
                if let (Some(stdin), Some(input)) = (stdin.as_mut(), input.as_mut()) {
                    // A remote that stops reading says why on its output.
                    let _ = std::io::copy(input, stdin);
                }
            });
            let ssh_said = scope.spawn(move || {
                let mut text = String::new();
                if let Some(mut stderr) = stderr {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
                }
                text
            });
            let mut printed = String::new();
            if let Some(stdout) = stdout {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    self.progress.event(&PushEvent::Remote {
                        target: self.target,
                        line: &line,
                    });
                    printed.push_str(&line);
                    printed.push('\n');
                }
            }
            (printed, ssh_said.join().unwrap_or_default())
        });
        let status = child.wait()?;
        if !status.success() {
            let said = if status.code() == Some(255) {
                ssh_said
            } else {
                format!("{ssh_said}{printed}")
            };
            return Err(self.failure(status.code(), &said));
        }
        Ok(printed)
    }
}

/// The first word after `prefix` on the last line of `printed` that
/// starts with it: the release id in `switched to release v8 [...]`.
fn last_word_after(printed: &str, prefix: &str) -> Option<String> {
    printed
        .lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|rest| rest.split_whitespace().next())
        .next_back()
        .map(|word| word.trim_end_matches(';').to_owned())
}

/// A temp folder removed on drop.
struct TempDir(Utf8PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let dir = Utf8PathBuf::from_path_buf(dir).map_err(|dir| {
            std::io::Error::other(format!("temp folder {} is not UTF-8", dir.display()))
        })?;
        let _ = std::fs::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str) -> DotEnv {
        DotEnv::parse(Utf8Path::new("/app/.env"), text)
    }

    #[test]
    fn dot_env_reads_exports_quotes_and_comments() {
        let vars = env("# deploy\nexport TARGET=\"a:/x, b:/y\"\nTARGET_STAGING='s:/app' # one\nTARGET_QA=q:/app # comment\nnot a line\n").vars;
        assert_eq!(vars["TARGET"], "a:/x, b:/y");
        assert_eq!(vars["TARGET_STAGING"], "s:/app");
        assert_eq!(vars["TARGET_QA"], "q:/app");
        assert_eq!(vars.len(), 3);
    }

    #[test]
    fn targets_come_from_arguments_names_or_target() {
        let env = env("TARGET=a:/x,b:/y c:/z\nTARGET_STAGING=s:/app\nTARGET_EU_WEST=e1:/a e2:/a\n");
        let names = |given: &[&str]| -> Vec<String> {
            let given: Vec<String> = given.iter().map(|s| (*s).to_owned()).collect();
            resolve_targets(&given, &env)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(names(&[]), ["a:/x", "b:/y", "c:/z"]);
        assert_eq!(names(&["staging", "h:/srv"]), ["s:/app", "h:/srv"]);
        assert_eq!(names(&["eu-west", "e1:/a"]), ["e1:/a", "e2:/a"]);

        let error = resolve_targets(&["prod".to_owned()], &env).unwrap_err();
        assert_eq!(
            error.to_string(),
            "target \"prod\" is not [user@]host:SARGE_HOME, and /app/.env sets no TARGET_PROD"
        );
        let error =
            resolve_targets(&[], &DotEnv::parse(Utf8Path::new("/app/.env"), "")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no target to push to: give [user@]host:SARGE_HOME or a name, or set TARGET in /app/.env"
        );
    }

    #[test]
    fn includes_resolve_from_the_including_files_folder_inside_the_repository() {
        let text = "flask==3.1.3\n-r base.txt\n--requirement=deps/extra.txt  # more\n-r ../../outside.txt\n-r /etc/passwd\n-rfoo\n";
        assert_eq!(
            includes("requirements.txt", text),
            ["base.txt", "deps/extra.txt", "foo"]
        );
        assert_eq!(
            includes("deps/extra.txt", "-r ../base.txt\n-r ./more.txt\n"),
            ["base.txt", "deps/more.txt"]
        );
    }

    #[test]
    fn parallel_work_keeps_item_order() {
        let items: Vec<u64> = (0..7).collect();
        let results = run_parallel(&items, 3, |n| {
            std::thread::sleep(Duration::from_millis(7 - n));
            n * 10
        });
        assert_eq!(results, [0, 10, 20, 30, 40, 50, 60]);
    }
}
