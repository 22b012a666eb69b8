//! The `sarge` command: parses arguments, calls one `sarge-core` operation
//! per command, and prints. All deploy logic lives in `sarge-core`.
//!
//! # Stability
//!
//! sarge is before 1.0, but scripts may rely on the commands, their
//! arguments, the exit status (0 on success, 1 on an error; `run` exits as
//! its command does) and the `--json` output of `list` and `releases`
//! (fields and `state` values are only added). The text output, the
//! progress lines on stderr and the error messages are for people and may
//! be reworded in any release. This crate has no library API; embed
//! `sarge-core` instead.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::Duration;

use camino::Utf8PathBuf;
use clap::{CommandFactory, Parser, Subcommand};
use sarge_core::{
    Event, Home, InitOptions, Progress, PushEvent, PushOptions, PushProgress, Retirement, Sarge,
    SetupEvent, SetupOptions, SetupProgress, TargetOutcome, Upload,
};

#[derive(Subcommand)]
enum DistAction {
    /// Print the requirement lines (read from REQUIREMENTS, `-` for stdin)
    /// that no wheel in dist/ satisfies for this home's Python and platform.
    #[command(
        after_help = "Examples:\n  sarge dist missing - < requirements.txt\n  ssh server /var/local/my_awesome_app/bin/sarge dist missing --json - < requirements.txt"
    )]
    Missing {
        /// A requirements file, or `-` for standard input.
        requirements: String,
        /// Print JSON: {"missing": [...], "python_version", "tags": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Add the wheels of a tar (`-` reads stdin) to dist/, each atomically;
    /// wheels already there are skipped.
    #[command(
        after_help = "Example:\n  tar -cf - *.whl | ssh server /var/local/my_awesome_app/bin/sarge dist add -"
    )]
    Add {
        /// A tar of `*.whl` files, or `-` for standard input.
        tarball: String,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print one value (exit 1 if it is not set).
    #[command(after_help = "Example:\n  sarge config get DATABASE_URL")]
    Get {
        /// The env name.
        name: String,
    },
    /// Set NAME=VALUE pairs and roll out a release with them.
    #[command(
        after_help = "Examples:\n  sarge config set DATABASE_URL='postgresql://user:pw@localhost/db' DEBUG=0\n  sarge config set --no-restart FEATURE=on   # for the next release only"
    )]
    Set {
        /// NAME=VALUE, each one argument (quote it for the shell).
        #[arg(required = true, value_name = "NAME=VALUE")]
        values: Vec<String>,
        /// Record the change for the next release only.
        #[arg(long)]
        no_restart: bool,
    },
    /// Unset NAMEs and roll out a release without them.
    #[command(after_help = "Example:\n  sarge config unset DEBUG")]
    Unset {
        /// The env names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Record the change for the next release only.
        #[arg(long)]
        no_restart: bool,
    },
}

/// Deploy an app on this server: unpack, install, start under supervisord,
/// route its stable address through haproxy.
#[derive(Parser)]
#[command(name = "sarge", version = env!("SARGE_BUILD_VERSION"), about)]
struct Cli {
    /// The sarge home (default: $SARGE_HOME).
    #[arg(long, env = "SARGE_HOME", value_name = "DIR", global = true)]
    home: Option<Utf8PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the home (or refresh sarge's own files in it).
    #[command(after_help = "Example:\n  SARGE_HOME=/var/local/my_awesome_app sarge init")]
    Init,
    /// Deploy PROCESS of the app in TARBALL (tar or tar.gz; `-` reads stdin).
    #[command(
        after_help = "Examples:\n  git archive HEAD | ssh server /var/local/my_awesome_app/bin/sarge deploy -\n  sarge deploy app.tar.gz web   # only web gets the new code\n  sarge deploy --prepare app.tar.gz   # prints e.g. v8; then `sarge switch v8`"
    )]
    Deploy {
        /// Path of the tarball, or `-` for standard input.
        tarball: String,
        /// The Procfile process types that get the new code (default: all
        /// but `release`); the release keeps the others on their code.
        processes: Vec<String>,
        /// Stop once the new instances are ready, with nothing switched;
        /// print the release id for `sarge switch` or `sarge discard`.
        #[arg(long)]
        prepare: bool,
        /// With --prepare: skip the Procfile's release command (it ran on
        /// another server of the same deploy).
        #[arg(long, requires = "prepare")]
        no_release_command: bool,
    },
    /// Switch to RELEASE, prepared by `deploy --prepare`, with no failed request.
    #[command(after_help = "Example:\n  sarge switch v8")]
    Switch {
        /// The prepared release, e.g. `v8`.
        release: String,
    },
    /// Remove RELEASE, prepared by `deploy --prepare` and not switched to.
    #[command(after_help = "Example:\n  sarge discard v8")]
    Discard {
        /// The prepared release, e.g. `v8`.
        release: String,
    },
    /// Deploy the git HEAD of the app in the current folder to servers over
    /// ssh, sending the wheels they lack (run on the dev machine).
    ///
    /// Every target is prepared first (version check, missing wheels
    /// sent), then switched `--batch` at a time; if one fails to prepare,
    /// none is switched. SARGE_SSH overrides the ssh command.
    #[command(
        after_help = "Examples:\n  sarge push                          # TARGET from .env at the repository root\n  sarge push staging                  # TARGET_STAGING from .env\n  sarge push deploy@web1:/var/local/my_awesome_app deploy@web2:/var/local/my_awesome_app\n  SARGE_SSH='ssh -p 2222' sarge push --process web --wheels wheels/"
    )]
    Push {
        /// `[user@]host:SARGE_HOME`, or NAME for TARGET_NAME in .env
        /// (default: TARGET in .env at the repository root).
        targets: Vec<String>,
        /// A process type that gets the new code (repeat; default: all).
        #[arg(long = "process", value_name = "PROCESS")]
        processes: Vec<String>,
        /// Take the wheels servers lack from DIR instead of `pip download`.
        #[arg(long, value_name = "DIR")]
        wheels: Option<Utf8PathBuf>,
        /// Prepare N targets at a time (default: all).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        parallel: Option<u16>,
        /// Switch N targets at a time.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        batch: u16,
    },
    /// Set up sarge in a server's home over ssh, or upgrade it in place
    /// (run on the dev machine).
    ///
    /// Asks the server for its architecture, C library and sarge version;
    /// copies this sarge binary there when it has none or another one and
    /// the binary runs there (else says what to build there), then runs
    /// `init` there. Running apps and supervisord keep running.
    /// SARGE_SSH overrides the ssh command, as for push.
    #[command(
        after_help = "Examples:\n  sarge setup deploy@web1:/var/local/my_awesome_app --start\n  SARGE_SSH='ssh -p 2222' sarge setup web1:/var/local/my_awesome_app   # again later: upgrades sarge there"
    )]
    Setup {
        /// `[user@]host:SARGE_HOME`.
        target: String,
        /// Start supervisord there if it is not running.
        #[arg(long)]
        start: bool,
    },
    /// The wheel folder: what it lacks, adding to it (what `push` runs).
    #[command(
        after_help = "Examples:\n  sarge dist missing - < requirements.txt\n  tar -cf - *.whl | sarge dist add -"
    )]
    Dist {
        #[command(subcommand)]
        action: DistAction,
    },
    /// List the releases you can roll back to, newest first.
    #[command(
        after_help = "Examples:\n  sarge releases\n  sarge releases --output v7   # what v7's release command printed"
    )]
    Releases {
        /// Print JSON: {"releases": [{id, created, current, description, processes}]}.
        #[arg(long)]
        json: bool,
        /// Print what the release command of RELEASE printed.
        #[arg(long, value_name = "RELEASE", conflicts_with = "json")]
        output: Option<String>,
    },
    /// Roll back to RELEASE (default: the one before the current one).
    #[command(
        after_help = "Examples:\n  sarge rollback      # to the release before the current one\n  sarge rollback v5"
    )]
    Rollback {
        /// A release id, e.g. `v6`.
        release: Option<String>,
    },
    /// Show or change the env of the app (each change is a new release).
    #[command(after_help = "Examples:\n  sarge config\n  sarge config set DEBUG=0")]
    Config {
        #[command(subcommand)]
        action: Option<ConfigAction>,
        /// Print JSON: {"env": {"NAME": "value"}}.
        #[arg(long)]
        json: bool,
    },
    /// Print the app's output, each line prefixed with its instance.
    #[command(
        after_help = "Examples:\n  sarge logs web -n 20\n  sarge logs -f\n  sarge logs --release v6   # a kept release's instances, after they are gone"
    )]
    Logs {
        /// A process name, `PROCESS.N` or an instance id (default: every process).
        target: Option<String>,
        /// How many of the last lines of each instance.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Keep printing what the instances write, across deploys.
        #[arg(short, long)]
        follow: bool,
        /// The instances that served RELEASE (a kept one), not the current ones.
        #[arg(long, value_name = "RELEASE", conflicts_with = "follow")]
        release: Option<String>,
    },
    /// New instances of the current release, with no failed request.
    #[command(after_help = "Examples:\n  sarge restart\n  sarge restart web")]
    Restart {
        /// The process types to restart (default: all).
        processes: Vec<String>,
    },
    /// Run COUNT instances of PROCESS (0 stops it), with no failed request.
    #[command(
        after_help = "Examples:\n  sarge scale web=3\n  sarge scale web=1 worker=0   # worker stops; it stays in the release"
    )]
    Scale {
        /// PROCESS=COUNT, e.g. `web=3 worker=0`.
        #[arg(required = true, value_name = "PROCESS=COUNT")]
        scales: Vec<String>,
    },
    /// List the current instances.
    #[command(after_help = "Examples:\n  sarge list\n  sarge list --json")]
    List {
        /// Print JSON: {"instances": [{id, process, port, state, created}]}.
        #[arg(long)]
        json: bool,
    },
    /// Run a command (default: an interactive bash) in an instance's folder
    /// with its env, PORT and virtualenv.
    ///
    /// Each word after TARGET is one argument, as written:
    /// `sarge run web python -c 'print(1)'`; for shell syntax, run a shell:
    /// `sarge run web sh -c 'echo $PORT'`.
    #[command(
        after_help = "Examples:\n  sarge run web python manage.py shell\n  sarge run web   # an interactive bash"
    )]
    Run {
        /// An instance id, or a process name for its current instance.
        target: String,
        /// The program and its arguments; flags here belong to the program.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Start an instance's process.
    #[command(after_help = "Example:\n  sarge start web")]
    Start {
        /// An instance id or a process name.
        target: String,
    },
    /// Stop an instance's process (it stays deployed).
    #[command(after_help = "Example:\n  sarge stop web")]
    Stop {
        /// An instance id or a process name.
        target: String,
    },
    /// Stop and remove an instance (on a terminal, asks first).
    #[command(
        after_help = "Examples:\n  sarge destroy worker\n  sarge destroy -y web-3fa9c1   # no question"
    )]
    Destroy {
        /// An instance id or a process name.
        target: String,
        /// Do not ask (without a terminal on stdin sarge never asks).
        #[arg(short, long)]
        yes: bool,
    },
    /// Clean up what a killed or failed command left (instances that never
    /// became current, their routes, unused releases and virtualenvs).
    ///
    /// Every command that changes state does this first; `list` and
    /// `releases` only read, so run this to tidy the home without deploying.
    #[command(after_help = "Example:\n  sarge recover")]
    Recover,
    /// Print the tab-completion script for SHELL.
    #[command(
        after_help = "Examples:\n  sarge completions bash > ~/.local/share/bash-completion/completions/sarge\n  sarge completions fish > ~/.config/fish/completions/sarge.fish"
    )]
    Completions {
        /// The shell the script is for.
        shell: clap_complete::Shell,
    },
    /// Print sarge's man page (roff).
    #[command(
        after_help = "Examples:\n  sarge man | man -l -\n  sarge man > ~/.local/share/man/man1/sarge.1"
    )]
    Man,
    /// Run supervisord with this home's config (what bin/supervisord does).
    #[command(hide = true)]
    Supervisord {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run supervisorctl against this home (what bin/supervisorctl does).
    #[command(hide = true)]
    Supervisorctl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Drain, stop and remove INSTANCES a rollout replaced, then prune: what
    /// a deploy starts in the background once the new release serves.
    #[command(hide = true)]
    Retire {
        /// The instance ids.
        instances: Vec<String>,
    },
}

fn main() -> ExitCode {
    // Everything sarge and the programs it starts (uv, python, haproxy,
    // supervisord through bin/supervisord) create in the home is the
    // owner's alone: the env holds passwords and the logs what apps print.
    // The library writes its own files with explicit modes; this covers the
    // rest.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    // They describe the binary, not a home: they work without one; push
    // runs on the dev machine, which has no home.
    match cli.command {
        Command::Completions { shell } => return print_completions(shell),
        Command::Man => return print_man(),
        Command::Push { .. } => return report(run_push(cli.command)),
        Command::Setup { target, start } => return report(run_setup(&target, start)),
        _ => {}
    }
    let Some(root) = cli.home.clone() else {
        eprintln!("error: no sarge home: pass --home DIR or set SARGE_HOME");
        return ExitCode::FAILURE;
    };
    report(run(Home::new(root), cli.command))
}

/// The exit code, after printing an error as one `error:` line.
fn report(result: Result<ExitCode, sarge_core::Error>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            // One `error:` line; what follows it (an app's log tail, an
            // installer's output) is indented so it never reads as another.
            let message = describe(&error).replace('\n', "\n    ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_push(command: Command) -> Result<ExitCode, sarge_core::Error> {
    let Command::Push {
        targets,
        processes,
        wheels,
        parallel,
        batch,
    } = command
    else {
        return Ok(ExitCode::FAILURE);
    };
    let mut options = PushOptions {
        repo_dir: Utf8PathBuf::from("."),
        targets,
        wheels,
        parallel: parallel.map(usize::from),
        batch: Some(usize::from(batch)),
        // The commit too: a server built from other code is worth a warning.
        client_version: Some(format!("sarge {}", env!("SARGE_BUILD_VERSION"))),
        ..PushOptions::default()
    };
    for process in processes {
        options.processes.push(process.parse()?);
    }
    let report = sarge_core::push(&options, &StderrPushProgress)?;
    print_push_summary(&report);
    Ok(if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_setup(target: &str, start: bool) -> Result<ExitCode, sarge_core::Error> {
    let target: sarge_core::Target = target.parse()?;
    let options = SetupOptions {
        start,
        client_version: Some(format!("sarge {}", env!("SARGE_BUILD_VERSION"))),
        ..SetupOptions::default()
    };
    let done = sarge_core::setup(&target, &options, &StderrSetupProgress)?;
    match &done.upload {
        Some(_) => eprintln!("{target} | installed {}", done.version),
        None => eprintln!("{target} | kept {}, already there", done.version),
    }
    match done.supervisord {
        Some(sarge_core::Supervisord::Started) => eprintln!("{target} | supervisord started"),
        Some(sarge_core::Supervisord::AlreadyRunning) => {
            eprintln!("{target} | supervisord was running; it and the apps keep running")
        }
        Some(_) => {}
        None => {
            if let Some(command) = &done.start_command {
                eprintln!(
                    "start supervisord there:  ssh {} {command}",
                    target.destination
                );
            }
        }
    }
    if let Some(boot) = &done.boot_line {
        eprintln!("at boot, on the server (e.g. in /etc/rc.local):  {boot}");
    }
    eprintln!("sarge is set up on {target}");
    Ok(ExitCode::SUCCESS)
}

/// Setup progress on stderr, each line prefixed with the target.
struct StderrSetupProgress;

impl SetupProgress for StderrSetupProgress {
    fn event(&self, event: &SetupEvent<'_>) {
        match event {
            SetupEvent::Server { target, server } => eprintln!(
                "{target} | server: {} {}, {}, {}",
                server.os,
                server.arch,
                server.libc,
                server.sarge_version.as_deref().unwrap_or("no sarge")
            ),
            SetupEvent::Uploading { target, why, bytes } => {
                let why = match why {
                    Upload::NoSarge => "the home has none".to_owned(),
                    Upload::OtherVersion(version) if version.is_empty() => {
                        "the home's sarge does not run".to_owned()
                    }
                    Upload::OtherVersion(version) => format!("the home runs {version}"),
                    Upload::OtherBuild => "the home runs another build of this version".to_owned(),
                    _ => "it differs".to_owned(),
                };
                eprintln!(
                    "{target} | uploading sarge ({:.1} MB): {why}",
                    *bytes as f64 / 1e6
                )
            }
            SetupEvent::Remote { target, line } => eprintln!("{target} | {line}"),
            _ => {}
        }
    }
}

/// The summary table, and what to do about a partial rollout.
fn print_push_summary(report: &sarge_core::PushReport) {
    let width = report
        .targets
        .iter()
        .map(|row| row.target.to_string().len())
        .max()
        .unwrap_or(6)
        .max(6);
    eprintln!(
        "{:<width$}  {:<8} {:>8}  RESULT",
        "TARGET", "RELEASE", "SECONDS"
    );
    for row in &report.targets {
        eprintln!(
            "{:<width$}  {:<8} {:>8.1}  {}",
            row.target.to_string(),
            row.release.as_deref().unwrap_or("-"),
            row.elapsed.as_secs_f64(),
            row.outcome
        );
    }
    if report.succeeded() {
        return;
    }
    let deployed: Vec<&sarge_core::TargetReport> = report
        .targets
        .iter()
        .filter(|row| row.outcome == TargetOutcome::Deployed)
        .collect();
    if !deployed.is_empty() {
        eprintln!("these targets run the new release; to go back on each:");
        for row in deployed {
            eprintln!(
                "  ssh {} {}/bin/sarge rollback",
                row.target.destination, row.target.home
            );
        }
    }
    let failed = report
        .targets
        .iter()
        .filter(|row| matches!(row.outcome, TargetOutcome::Failed(_)))
        .count();
    eprintln!("error: {failed} of {} targets failed", report.targets.len());
}

/// Push progress on stderr, each line prefixed with its target.
struct StderrPushProgress;

impl PushProgress for StderrPushProgress {
    fn event(&self, event: &PushEvent<'_>) {
        let mut err = std::io::stderr().lock();
        let _ = match event {
            PushEvent::Uncommitted { files } => writeln!(
                err,
                "note: {files} uncommitted or untracked files are not deployed; deploying HEAD"
            ),
            PushEvent::Phase { name, targets } => writeln!(
                err,
                "-----> {name} on {}",
                targets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            PushEvent::VersionMismatch {
                target,
                server,
                client,
            } => writeln!(
                err,
                "{target} | warning: the server runs {server}, this client is {client}"
            ),
            PushEvent::WheelsMissing {
                target,
                requirements,
            } => writeln!(
                err,
                "{target} | dist/ lacks {}: {}",
                requirements.len(),
                requirements.join(", ")
            ),
            PushEvent::WheelsSent { target, wheels } => writeln!(
                err,
                "{target} | sent {} wheels: {}",
                wheels.len(),
                wheels.join(", ")
            ),
            PushEvent::Remote { target, line } => writeln!(err, "{target} | {line}"),
            PushEvent::Failed { target: _, error } => {
                let message = describe(error).replace('\n', "\n    ");
                writeln!(err, "error: {message}")
            }
            _ => Ok(()),
        };
    }
}

fn run(home: Home, command: Command) -> Result<ExitCode, sarge_core::Error> {
    // A rollout returns once the new release serves; a process of its own
    // retires what it replaced, holding the home lock meanwhile.
    let retirement = match std::env::current_exe() {
        Ok(program) => Retirement::Detached {
            program,
            args: vec![
                "--home".into(),
                home.root().as_os_str().to_owned(),
                "retire".into(),
            ],
        },
        Err(_) => Retirement::InCommand,
    };
    let open = || {
        Sarge::builder(home.clone())
            .retirement(retirement.clone())
            .open()
    };
    match command {
        Command::Init => {
            let done = sarge_core::init(&home, &InitOptions::default())?;
            let config = done.home.config_file();
            if done.wrote_config {
                eprintln!("wrote {config}: set port_range, port_map, env and haproxy_bin there");
            } else {
                eprintln!("kept the existing {config}");
            }
            if !done.made_private.is_empty() {
                eprintln!(
                    "made private (group and others can no longer read them): {} files and folders under etc/ and var/",
                    done.made_private.len()
                );
            }
            eprintln!("sarge home ready at {}", done.home.root());
            eprintln!("start supervisord now:  {}", done.start_command);
            eprintln!("and at boot (e.g. in /etc/rc.local):  {}", done.boot_line);
            eprintln!(
                "tab completion:  sarge completions bash > ~/.local/share/bash-completion/completions/sarge  (or zsh, fish; the man page: sarge man | man -l -)"
            );
        }
        Command::Deploy {
            tarball,
            processes,
            prepare: true,
            no_release_command,
        } => {
            let sarge = open()?;
            let processes = parse_process_names(&processes)?;
            let release_command = !no_release_command;
            let prepared = if tarball == "-" {
                let stdin = std::io::stdin().lock();
                sarge.prepare(stdin, &processes, release_command, &mut StderrProgress)?
            } else {
                let file = fs_err::File::open(&tarball)?;
                sarge.prepare(file, &processes, release_command, &mut StderrProgress)?
            };
            let release = prepared.prepared.release;
            eprintln!(
                "prepared release {release} [{}]; `sarge switch {release}` serves it",
                millis(prepared.elapsed)
            );
            println!("{release}");
        }
        Command::Switch { release } => {
            let rolled_out = open()?.switch(release.parse()?, &mut StderrProgress)?;
            print_rolled_out(&rolled_out);
            eprintln!("switched to release {}", rolled_out.release);
        }
        Command::Discard { release } => {
            let release: sarge_core::ReleaseId = release.parse()?;
            open()?.discard(release, &mut StderrProgress)?;
            eprintln!("discarded release {release}");
        }
        Command::Deploy {
            tarball, processes, ..
        } => {
            let sarge = open()?;
            let processes = parse_process_names(&processes)?;
            let mut progress = StderrProgress;
            let deployed = if tarball == "-" {
                sarge.deploy(std::io::stdin().lock(), &processes, &mut progress)?
            } else {
                let file = fs_err::File::open(&tarball)?;
                sarge.deploy(file, &processes, &mut progress)?
            };
            print_rolled_out(&deployed.rolled_out);
            eprintln!(
                "deployed release {} [{}]",
                deployed.rolled_out.release,
                millis(deployed.elapsed)
            );
        }
        Command::Push { .. } => return run_push(command),
        Command::Setup { target, start } => return run_setup(&target, start),
        Command::Dist { action } => {
            let sarge = open()?;
            match action {
                DistAction::Missing { requirements, json } => {
                    let text = if requirements == "-" {
                        std::io::read_to_string(std::io::stdin().lock())?
                    } else {
                        fs_err::read_to_string(&requirements)?
                    };
                    let missing = sarge.dist_missing(&text)?;
                    let mut out = std::io::stdout().lock();
                    if json {
                        writeln!(out, "{}", serde_json::json!(missing))?;
                    } else {
                        for line in &missing.missing {
                            writeln!(out, "{line}")?;
                        }
                    }
                }
                DistAction::Add { tarball } => {
                    let added = if tarball == "-" {
                        sarge.dist_add(std::io::stdin().lock())?
                    } else {
                        sarge.dist_add(fs_err::File::open(&tarball)?)?
                    };
                    for name in &added.added {
                        eprintln!("added {name}");
                    }
                    for name in &added.skipped {
                        eprintln!("skipped {name} (already in dist/)");
                    }
                }
            }
        }
        Command::Releases {
            output: Some(id), ..
        } => {
            let output = open()?.release_output(id.parse()?)?;
            std::io::stdout().lock().write_all(output.as_bytes())?;
        }
        Command::Releases { json, output: None } => {
            let releases = open()?.releases()?;
            let mut out = std::io::stdout().lock();
            if json {
                let value = serde_json::json!({ "releases": releases });
                writeln!(out, "{value}")?;
            } else if releases.is_empty() {
                writeln!(out, "no releases")?;
            } else {
                for release in releases {
                    let processes: Vec<String> = release
                        .processes
                        .iter()
                        .map(|(process, count)| format!("{process}={count}"))
                        .collect();
                    writeln!(
                        out,
                        "{} {:<5} {}  {:<30} {}",
                        if release.current { "*" } else { " " },
                        release.id.to_string(),
                        release.created,
                        release.description,
                        processes.join(" ")
                    )?;
                }
            }
        }
        Command::Config { action, json } => {
            let sarge = open()?;
            match action {
                None => {
                    let env = sarge.current_env()?;
                    let mut out = std::io::stdout().lock();
                    if json {
                        writeln!(out, "{}", serde_json::json!({ "env": env }))?;
                    } else {
                        for (name, value) in env {
                            writeln!(out, "{name}={value}")?;
                        }
                    }
                }
                Some(ConfigAction::Get { name }) => match sarge.current_env()?.get(&name) {
                    Some(value) => writeln!(std::io::stdout().lock(), "{value}")?,
                    None => {
                        eprintln!("error: {name} is not set");
                        return Ok(ExitCode::FAILURE);
                    }
                },
                Some(ConfigAction::Set { values, no_restart }) => {
                    let mut pairs = Vec::new();
                    for value in values {
                        let Some((name, value)) = value.split_once('=') else {
                            eprintln!(
                                "error: {:?} is not NAME=VALUE; nothing changed",
                                value.chars().take(200).collect::<String>()
                            );
                            return Ok(ExitCode::FAILURE);
                        };
                        pairs.push((name.to_owned(), value.to_owned()));
                    }
                    let changed = sarge.set_env(&pairs, !no_restart, &mut StderrProgress)?;
                    report_config_change(&changed);
                }
                Some(ConfigAction::Unset { names, no_restart }) => {
                    let changed = sarge.unset_env(&names, !no_restart, &mut StderrProgress)?;
                    report_config_change(&changed);
                }
            }
        }
        Command::Logs {
            target,
            lines,
            follow,
            release,
        } => {
            let sarge = open()?;
            let mut out = std::io::stdout().lock();
            let (last, mut follower) = if let Some(release) = release {
                let release = release.parse::<sarge_core::ReleaseId>()?;
                (sarge.release_logs(release, target.as_deref(), lines)?, None)
            } else if follow {
                let (last, follower) = sarge.follow_logs(target.as_deref(), lines)?;
                (last, Some(follower))
            } else {
                (sarge.logs(target.as_deref(), lines)?, None)
            };
            for line in last {
                writeln!(out, "{} | {}", line.source, line.text)?;
            }
            out.flush()?;
            if let Some(follower) = follower.as_mut() {
                loop {
                    for line in follower.poll()? {
                        writeln!(out, "{} | {}", line.source, line.text)?;
                    }
                    out.flush()?;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Command::Restart { processes } => {
            let processes = parse_process_names(&processes)?;
            let rolled_out = open()?.restart(&processes, &mut StderrProgress)?;
            print_rolled_out(&rolled_out);
            eprintln!("restarted as release {}", rolled_out.release);
        }
        Command::Scale { scales } => {
            let scales = scales
                .iter()
                .map(|scale| scale.parse::<sarge_core::Scale>())
                .collect::<Result<Vec<_>, _>>()?;
            let sarge = open()?;
            // One line first: what is about to change.
            let running = sarge
                .releases()?
                .into_iter()
                .find(|release| release.current)
                .map(|release| release.processes)
                .unwrap_or_default();
            let changes: Vec<String> = scales
                .iter()
                .map(|scale| match running.get(scale.process.as_str()) {
                    Some(count) => format!("{} from {count} to {}", scale.process, scale.count),
                    None => scale.to_string(),
                })
                .collect();
            eprintln!("Scaling {}", changes.join(", "));
            let rolled_out = sarge.scale(&scales, &mut StderrProgress)?;
            print_rolled_out(&rolled_out);
            let counts: Vec<String> = scales.iter().map(ToString::to_string).collect();
            eprintln!(
                "scaled {} as release {}",
                counts.join(", "),
                rolled_out.release
            );
        }
        Command::Rollback { release } => {
            let sarge = open()?;
            let target = release
                .as_deref()
                .map(str::parse::<sarge_core::ReleaseId>)
                .transpose()?;
            if let Some(plan) = sarge.rollback_plan(target)? {
                let from = plan
                    .from
                    .map_or_else(String::new, |from| format!(" from {from}"));
                eprintln!(
                    "Rolling back{from} to {} ({})",
                    plan.to,
                    plan.processes.join(", ")
                );
            }
            let rolled_back = sarge.rollback(target, &mut StderrProgress)?;
            print_rolled_out(&rolled_back.rolled_out);
            if !rolled_back.env_differs.is_empty() {
                eprintln!(
                    "note: {} runs with its own env; these names differ from etc/sarge.yaml now: {}",
                    rolled_back.target,
                    rolled_back.env_differs.join(", ")
                );
            }
            if !rolled_back.crossed_release_commands.is_empty() {
                eprintln!(
                    "warning: the release command of {} ran after {}; what it changed (a migration) was not undone",
                    rolled_back
                        .crossed_release_commands
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    rolled_back.target
                );
            }
            eprintln!(
                "rolled back to {} as release {} [{}]",
                rolled_back.target,
                rolled_back.rolled_out.release,
                millis(rolled_back.elapsed)
            );
        }
        Command::List { json } => {
            let instances = open()?.list()?;
            let mut out = std::io::stdout().lock();
            if json {
                let value = serde_json::json!({ "instances": instances });
                writeln!(out, "{value}")?;
            } else if instances.is_empty() {
                writeln!(out, "no instances")?;
            } else {
                writeln!(
                    out,
                    "{:<20} {:<12} {:>5}  {:<9} {:<8} CREATED",
                    "ID", "PROCESS", "PORT", "STATE", "RELEASE"
                )?;
                for instance in instances {
                    writeln!(
                        out,
                        "{:<20} {:<12} {:>5}  {:<9} {:<8} {}",
                        instance.id,
                        instance.process,
                        instance.port,
                        instance.state,
                        instance
                            .release
                            .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                        instance.created
                    )?;
                }
            }
        }
        Command::Run { target, command } => {
            let mut launcher = open()?.run_command(&target, &command)?;
            // exec: the command's exit status becomes sarge's, signals and
            // the terminal go straight to it.
            let error = launcher.exec();
            return Err(sarge_core::Error::Spawn {
                program: format!("the launcher of {target}"),
                source: error,
            });
        }
        Command::Start { target } => {
            let record = open()?.start(&target)?;
            eprintln!("started {}", record.id);
        }
        Command::Stop { target } => {
            let record = open()?.stop(&target)?;
            eprintln!("stopped {}", record.id);
        }
        Command::Destroy { target, yes } => {
            let sarge = open()?;
            // Scripts have no terminal and get no question, as before.
            if !yes && std::io::stdin().is_terminal() {
                let record = sarge.resolve(&target)?;
                let what = match sarge.config().port_map.get(record.process.as_str()) {
                    Some(address) => format!(
                        "Take {} ({}) off {address} and remove it?",
                        record.process, record.id
                    ),
                    None => format!("Stop {} ({}) and remove it?", record.process, record.id),
                };
                eprint!("{what} [y/N] ");
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
                    eprintln!("not destroyed: {} keeps running", record.id);
                    return Ok(ExitCode::FAILURE);
                }
            }
            let record = sarge.destroy(&target, &mut StderrProgress)?;
            eprintln!("destroyed {}", record.id);
        }
        Command::Retire { instances } => {
            let retired = open()?.retire(&instances, &mut StderrProgress)?;
            eprintln!("retired {}", retired.join(", "));
        }
        Command::Recover => {
            open()?.recover(&mut StderrProgress)?;
            eprintln!("recovered {}", home.root());
        }
        Command::Supervisord { args } => {
            let sarge = open()?;
            // Only a start clears what a dead supervisord left; asking
            // supervisord for its version or help must change nothing.
            let informational = args
                .iter()
                .any(|arg| matches!(arg.as_str(), "-h" | "--help" | "-v" | "--version"));
            if !informational {
                report_orphans(&sarge.stop_orphans()?);
            }
            let error = sarge.supervisord_command(&args).exec();
            return Err(sarge_core::Error::Spawn {
                program: sarge.config().supervisord_bin.to_string(),
                source: error,
            });
        }
        Command::Supervisorctl { args } => {
            let sarge = open()?;
            let error = sarge.supervisorctl_command(&args).exec();
            return Err(sarge_core::Error::Spawn {
                program: sarge.config().supervisorctl_bin.to_string(),
                source: error,
            });
        }
        Command::Completions { .. } | Command::Man => {
            unreachable!("main prints these before it needs a home")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The tab-completion script for `shell` on stdout.
fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    // Generated into memory first: clap_complete panics when a write
    // fails, and a closed pipe (`| head`) must be an error, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), "sarge", &mut script);
    write_or_report(&script, "the completions")
}

/// The man page, as roff, on stdout: one page with every command's help
/// and examples, since `sarge man` prints a single page.
fn print_man() -> ExitCode {
    use clap_mangen::roff::{roman, Roff};
    let mut command = visible_command();
    command.build();
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    let head = [
        clap_mangen::Man::render_title,
        clap_mangen::Man::render_name_section,
        clap_mangen::Man::render_synopsis_section,
        clap_mangen::Man::render_description_section,
        clap_mangen::Man::render_options_section,
    ];
    for section in head {
        if let Err(error) = section(&man, &mut page) {
            eprintln!("error: rendering the man page: {error}");
            return ExitCode::FAILURE;
        }
    }
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    let mut pending: Vec<clap::Command> = command.get_subcommands().cloned().collect();
    pending.reverse();
    while let Some(mut sub) = pending.pop() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_owned();
        roff.control("SS", [name.as_str()]);
        roff.control("nf", []);
        for line in sub.render_long_help().to_string().lines() {
            roff.text([roman(line)]);
        }
        roff.control("fi", []);
        // `config get/set/unset` follow `config`.
        let mut nested: Vec<clap::Command> = sub.get_subcommands().cloned().collect();
        nested.reverse();
        pending.extend(nested);
    }
    page.extend(roff.render().into_bytes());
    if let Err(error) = man.render_version_section(&mut page) {
        eprintln!("error: rendering the man page: {error}");
        return ExitCode::FAILURE;
    }
    write_or_report(&page, "the man page")
}

/// sarge's command as users see it: the hidden subcommands that
/// `bin/supervisord` and `bin/supervisorctl` run are left out, as they are
/// of `sarge --help`, so neither completion nor the man page offers them;
/// the value of `SARGE_HOME` is not shown.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let visible: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .cloned()
        .collect();
    let mut command = clap::Command::new("sarge")
        .version(env!("SARGE_BUILD_VERSION"))
        // A page installed from one shell must not carry its $SARGE_HOME.
        .args(
            full.get_arguments()
                .map(|arg| arg.clone().hide_env_values(true)),
        )
        .subcommands(visible);
    if let Some(about) = full.get_about() {
        command = command.about(about.clone());
    }
    command
}

/// Writes `bytes` to stdout; an error (a closed pipe) is one `error:` line.
fn write_or_report(bytes: &[u8], what: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: writing {what}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Says on stderr what [`Sarge::stop_orphans`] stopped, so an operator who
/// restarts supervisord learns that the last one died without stopping
/// its programs.
fn report_orphans(stopped: &sarge_core::StoppedOrphans) {
    if stopped.is_empty() {
        return;
    }
    let programs: Vec<String> = stopped
        .programs
        .iter()
        .map(|program| match program.children {
            0 => format!("{} (pid {})", program.name, program.pid),
            1 => format!("{} (pid {} and 1 child)", program.name, program.pid),
            n => format!("{} (pid {} and {n} children)", program.name, program.pid),
        })
        .collect();
    let plural = if stopped.processes == 1 { "" } else { "es" };
    eprintln!(
        "stopped {} process{plural} left by a supervisord that died: {}",
        stopped.processes,
        programs.join(", ")
    );
    if !stopped.killed.is_empty() {
        eprintln!(
            "warning: SIGKILLed after they ignored SIGTERM: pids {:?}",
            stopped.killed
        );
    }
    if !stopped.survivors.is_empty() {
        eprintln!(
            "warning: still running after SIGKILL, their ports may stay taken: pids {:?}",
            stopped.survivors
        );
    }
}

/// What a config change did: the release it rolled out, or that it waits
/// for the next one.
fn report_config_change(changed: &sarge_core::ConfigChanged) {
    match &changed.rolled_out {
        Some(rolled_out) => {
            print_rolled_out(rolled_out);
            eprintln!("config changed in release {}", rolled_out.release);
        }
        None => eprintln!("config changed; the next release (deploy or restart) runs with it"),
    }
}

/// One line per new instance of a rollout: what now serves where.
fn print_rolled_out(rolled_out: &sarge_core::RolledOut) {
    for (instance, address) in &rolled_out.instances {
        match address {
            Some(address) => eprintln!(
                "deployed {} ({}) on port {}, serving {address}",
                instance.id, instance.process, instance.port
            ),
            None => eprintln!(
                "deployed {} ({}) on port {}",
                instance.id, instance.process, instance.port
            ),
        }
    }
}

/// The error and its causes, each cause once.
fn describe(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

struct StderrProgress;

impl Progress for StderrProgress {
    fn event(&mut self, event: &Event<'_>, elapsed: Duration) {
        // One write per line: stderr is unbuffered, and formatting straight
        // into it costs a system call per piece.
        let line = match event.step() {
            Some(step) => format!("-----> {step:<10} {:>8}  {event}\n", millis(elapsed)),
            None => format!("-----> {event}\n"),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// The process names given on the command line, each checked once here;
/// the first bad one is the error.
fn parse_process_names(
    names: &[String],
) -> Result<Vec<sarge_core::ProcessName>, sarge_core::Error> {
    names
        .iter()
        .map(|name| name.parse::<sarge_core::ProcessName>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(sarge_core::Error::from)
}

fn millis(elapsed: Duration) -> String {
    format!("{:.1} ms", elapsed.as_secs_f64() * 1000.0)
}
