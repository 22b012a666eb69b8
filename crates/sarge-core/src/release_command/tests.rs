use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};

use super::*;

struct TempDir(Utf8PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sarge-release-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(Utf8PathBuf::from_path_buf(dir).unwrap())
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one run gave: its result, the lines in the order `on_line` saw
/// them with when each arrived, and the output file's path.
struct Outcome {
    result: Result<ReleaseRan>,
    lines: Vec<(String, Duration)>,
    output_file: Utf8PathBuf,
    took: Duration,
}

fn run_in(dir: &TempDir, command: &str, timeout: Duration) -> Outcome {
    run_with(dir, command, timeout, &BTreeMap::new(), None)
}

fn run_with(
    dir: &TempDir,
    command: &str,
    timeout: Duration,
    env: &BTreeMap<String, String>,
    venv_bin: Option<&Utf8Path>,
) -> Outcome {
    let output_file = dir.0.join("release.log");
    let release = ReleaseCommand {
        command,
        app_dir: &dir.0,
        env,
        venv_bin,
        timeout,
        output_file: &output_file,
        release: ReleaseId::new(1),
        group_file: &dir.0.join("group.json"),
    };
    let started = Instant::now();
    let mut lines = Vec::new();
    let result = release.run(&mut |line| lines.push((line.to_owned(), started.elapsed())));
    Outcome {
        result,
        lines,
        output_file,
        took: started.elapsed(),
    }
}

fn texts(outcome: &Outcome) -> Vec<&str> {
    outcome
        .lines
        .iter()
        .map(|(line, _)| line.as_str())
        .collect()
}

/// A pid that is gone: absent from /proc, or a zombie waiting for init.
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pid: u32) -> bool {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if is_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn release_command_streams_stdout_and_stderr_in_order_and_keeps_them_private() {
    let dir = TempDir::new("stream");
    // A file left by an earlier attempt, readable by all and longer than
    // the new output: it must come out private and hold only this run.
    let stale = dir.0.join("release.log");
    std::fs::write(&stale, "stale output\n".repeat(100)).unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();

    let outcome = run_in(
        &dir,
        "echo out1; echo err1 >&2; echo out2; sleep 0.6; echo err2 >&2; printf 'no newline'",
        Duration::from_secs(20),
    );
    let ran = outcome.result.as_ref().unwrap();
    assert_eq!(
        texts(&outcome),
        ["out1", "err1", "out2", "err2", "no newline"]
    );
    assert_eq!(ran.lines, 5);
    // Lines arrive as they are written, not when the command ends.
    let gap = outcome.lines[3].1 - outcome.lines[2].1;
    assert!(gap >= Duration::from_millis(400), "{gap:?}");
    assert!(
        outcome.lines[2].1 < Duration::from_millis(500),
        "{:?}",
        outcome.lines
    );
    assert!(ran.elapsed >= Duration::from_millis(600));

    let kept = std::fs::read_to_string(&outcome.output_file).unwrap();
    assert_eq!(kept, "out1\nerr1\nout2\nerr2\nno newline");
    let mode = std::fs::metadata(&outcome.output_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn release_command_gets_the_release_env_and_the_venv_but_no_port() {
    let dir = TempDir::new("env");
    let venv_bin = dir.0.join("venv/bin");
    std::fs::create_dir_all(&venv_bin).unwrap();
    std::fs::write(venv_bin.join("python"), "#!/bin/sh\necho venv python\n").unwrap();
    std::fs::set_permissions(
        venv_bin.join("python"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let env = BTreeMap::from([
        (
            "DATABASE".to_owned(),
            "postgresql://u:p%40ss@db/x 'q'".to_owned(),
        ),
        ("PORT".to_owned(), "5000".to_owned()),
    ]);
    let outcome = run_with(
        &dir,
        // CARGO_MANIFEST_DIR is in the test's environment, as anything in
        // the deploying user's shell would be; it must not leak through.
        r#"echo "DATABASE=$DATABASE"; echo "PORT=${PORT-unset}"; echo "VIRTUAL_ENV=$VIRTUAL_ENV"; echo "CARGO_MANIFEST_DIR=${CARGO_MANIFEST_DIR-unset}"; echo "PATH1=${PATH%%:*}"; echo "HOME=${HOME-unset}"; python; pwd"#,
        Duration::from_secs(20),
        &env,
        Some(&venv_bin),
    );
    outcome.result.as_ref().unwrap();
    let home = std::env::var("HOME").unwrap_or_else(|_| "unset".to_owned());
    assert_eq!(
        texts(&outcome),
        [
            "DATABASE=postgresql://u:p%40ss@db/x 'q'".to_owned(),
            "PORT=unset".to_owned(),
            format!("VIRTUAL_ENV={}/venv", dir.0),
            "CARGO_MANIFEST_DIR=unset".to_owned(),
            format!("PATH1={venv_bin}"),
            format!("HOME={home}"),
            "venv python".to_owned(),
            dir.0.to_string(),
        ]
    );
}

#[test]
fn release_command_exit_1_fails_naming_the_status_and_last_lines() {
    let dir = TempDir::new("exit1");
    let outcome = run_in(
        &dir,
        "for i in $(seq 1 20); do echo \"migrating $i\"; done; echo 'boom' >&2; exit 1",
        Duration::from_secs(20),
    );
    let error = outcome.result.unwrap_err();
    let Error::ReleaseCommandFailed { ref status, .. } = error else {
        panic!("{error:?}");
    };
    assert_eq!(status, "exited with status 1");
    let expected_tail: Vec<String> = (7..=20)
        .map(|i| format!("  migrating {i}"))
        .chain(["  boom".to_owned()])
        .collect();
    assert_eq!(
        error.to_string(),
        format!(
            "the release command `for i in $(seq 1 20); do echo \"migrating $i\"; done; echo 'boom' >&2; exit 1` exited with status 1, so the new release was not started; last lines of its output (all of it is in {}):\n{}",
            outcome.output_file,
            expected_tail.join("\n")
        )
    );
    assert_eq!(outcome.lines.len(), 21);
}

#[test]
fn release_command_killed_by_a_signal_names_it() {
    let dir = TempDir::new("signal");
    let outcome = run_in(&dir, "kill -TERM $$", Duration::from_secs(20));
    let error = outcome.result.unwrap_err().to_string();
    assert!(
        error.contains("` was killed by signal 15, so the new release was not started")
            && error.ends_with(":\n  (it printed nothing)"),
        "{error}"
    );
}

#[test]
fn release_command_past_its_timeout_is_killed_with_its_whole_group() {
    let dir = TempDir::new("timeout");
    let outcome = run_in(
        &dir,
        "sleep 100 & echo \"grandchild $!\"; echo waiting; sleep 100",
        Duration::from_secs(1),
    );
    assert!(
        outcome.took < Duration::from_secs(3),
        "took {:?}",
        outcome.took
    );
    let grandchild: u32 = outcome.lines[0]
        .0
        .strip_prefix("grandchild ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait_gone(grandchild), "pid {grandchild} still runs");
    let error = outcome.result.unwrap_err();
    assert!(matches!(error, Error::ReleaseCommandTimedOut { .. }));
    assert_eq!(
        error.to_string(),
        format!(
            "the release command `sleep 100 & echo \"grandchild $!\"; echo waiting; sleep 100` ran past release_timeout (1 s) and was killed, so the new release was not started; raise release_timeout in sarge.yaml if it needs longer. Last lines of its output (all of it is in {}):\n  grandchild {grandchild}\n  waiting",
            outcome.output_file
        )
    );
}

#[test]
fn release_command_leaving_a_background_process_returns_at_once() {
    let dir = TempDir::new("background");
    let outcome = run_in(
        &dir,
        "(sleep 100 & echo \"background $!\"); echo done; exit 0",
        Duration::from_secs(30),
    );
    assert!(
        outcome.took < Duration::from_secs(3),
        "took {:?}",
        outcome.took
    );
    let ran = outcome.result.as_ref().unwrap();
    assert_eq!(ran.lines, 2);
    let background: u32 = outcome.lines[0]
        .0
        .strip_prefix("background ")
        .unwrap()
        .parse()
        .unwrap();
    // It would have been an orphan outside supervisord's reach.
    assert!(wait_gone(background), "pid {background} still runs");
}

#[test]
fn release_command_brief_form_with_background_subshell_succeeds_promptly() {
    let dir = TempDir::new("brief");
    let outcome = run_in(&dir, "(sleep 100 &) ; exit 0", Duration::from_secs(30));
    // Well under DRAIN_GRACE: the group kill ended the pipe, not the wait.
    assert!(
        outcome.took < Duration::from_millis(800),
        "took {:?}",
        outcome.took
    );
    assert_eq!(outcome.result.unwrap().lines, 0);
}

#[test]
fn release_command_that_closes_its_output_is_still_waited_for() {
    let dir = TempDir::new("closed");
    let outcome = run_in(
        &dir,
        "echo bye; exec >&- 2>&-; sleep 0.5; exit 4",
        Duration::from_secs(20),
    );
    let error = outcome.result.unwrap_err().to_string();
    assert!(error.contains("exited with status 4"), "{error}");
    assert!(outcome.took >= Duration::from_millis(500));
}

#[test]
fn release_command_one_megabyte_line_is_cut_in_memory_but_kept_in_the_file() {
    let dir = TempDir::new("long");
    let outcome = run_in(
        &dir,
        "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo after",
        Duration::from_secs(20),
    );
    outcome.result.as_ref().unwrap();
    let lines = texts(&outcome);
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        format!(
            "{} [line cut: {} more bytes are in the output file]",
            "x".repeat(MAX_LINE_BYTES),
            1_000_000 - MAX_LINE_BYTES
        )
    );
    assert_eq!(lines[1], "after");
    let kept = std::fs::metadata(&outcome.output_file).unwrap().len();
    assert_eq!(kept, 1_000_000 + "\nafter\n".len() as u64);
}

#[test]
fn release_command_output_is_lossy_utf8_and_errors_escape_control_characters() {
    let dir = TempDir::new("bytes");
    let outcome = run_in(
        &dir,
        r"printf 'caf\xc3\xa9 \xff\r\n'; printf '\033[2Jerror: forged\n'; exit 2",
        Duration::from_secs(20),
    );
    assert_eq!(texts(&outcome)[0], "café \u{fffd}");
    let error = outcome.result.unwrap_err().to_string();
    assert!(
        error.ends_with(":\n  café \u{fffd}\n  \\u{1b}[2Jerror: forged"),
        "{error}"
    );
}

#[test]
fn release_command_that_cannot_start_names_the_folder_problem() {
    let dir = TempDir::new("nofolder");
    let missing = dir.0.join("gone");
    let output_file = dir.0.join("release.log");
    let env = BTreeMap::new();
    let release = ReleaseCommand {
        command: "true",
        app_dir: &missing,
        env: &env,
        venv_bin: None,
        timeout: Duration::from_secs(5),
        output_file: &output_file,
        release: ReleaseId::new(1),
        group_file: &dir.0.join("group.json"),
    };
    let error = release.run(&mut |_| {}).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "cannot run the release command `true` (bash -c, in {missing}): "
        )),
        "{error}"
    );
}

#[test]
fn release_command_escaped_into_its_own_session_does_not_hold_the_deploy() {
    let dir = TempDir::new("setsid");
    // setsid leaves the group, so the kill cannot reach it and it keeps
    // the pipe open; its output is given up after DRAIN_GRACE. (A short
    // sleep, so the test leaves nothing behind for long.)
    let outcome = run_in(
        &dir,
        "setsid sleep 4 & echo started; exit 0",
        Duration::from_secs(30),
    );
    assert!(
        outcome.took < DRAIN_GRACE + Duration::from_secs(1),
        "took {:?}",
        outcome.took
    );
    assert_eq!(texts(&outcome), ["started"]);
    outcome.result.unwrap();
}

#[test]
fn release_command_flooding_its_output_still_meets_the_timeout() {
    let dir = TempDir::new("flood");
    let output_file = dir.0.join("release.log");
    let env = BTreeMap::new();
    let release = ReleaseCommand {
        command: "yes flood",
        app_dir: &dir.0,
        env: &env,
        venv_bin: None,
        timeout: Duration::from_secs(1),
        output_file: &output_file,
        release: ReleaseId::new(1),
        group_file: &dir.0.join("group.json"),
    };
    let started = Instant::now();
    let mut count = 0_usize;
    let error = release.run(&mut |_| count += 1).unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(
        matches!(error, Error::ReleaseCommandTimedOut { .. }),
        "{error}"
    );
    assert!(count > 0);
    assert!(error.to_string().ends_with("\n  flood"), "{error}");
}

#[test]
fn release_command_records_its_marked_group_while_it_runs_and_only_then() {
    let dir = TempDir::new("record");
    let outcome = run_in(
        &dir,
        // The record is written just after the spawn: wait for it.
        "echo $$; echo \"$SARGE_RELEASE_COMMAND\"; until [ -e group.json ]; do sleep 0.01; done; cat group.json",
        Duration::from_secs(20),
    );
    outcome.result.as_ref().unwrap();
    let lines = texts(&outcome);
    let group: u32 = lines[0].parse().unwrap();
    assert_eq!(lines[1], "v1");
    let recorded: serde_json::Value = serde_json::from_str(&lines[2..].join("\n")).unwrap();
    assert_eq!(
        recorded,
        serde_json::json!({"release": "v1", "group": group})
    );
    assert!(
        !dir.0.join("group.json").exists(),
        "the record outlived the run"
    );
}

/// Starts `script` under bash as the leader of its own process group,
/// with `env`, and waits until the pid it prints first is up; the leader
/// and that pid.
fn group_running(script: &str, env: &[(&str, &str)]) -> (std::process::Child, u32) {
    use std::io::BufRead;
    let mut child = std::process::Command::new("bash")
        .args(["-c", script])
        .envs(env.iter().copied())
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().unwrap())
}

fn record_group(file: &Utf8Path, release: &str, group: u32) {
    std::fs::write(
        file,
        format!("{{\"release\": \"{release}\", \"group\": {group}}}"),
    )
    .unwrap();
}

#[test]
fn a_release_command_left_running_by_a_killed_deploy_is_killed_with_its_group() {
    let dir = TempDir::new("leftbehind");
    let file = dir.0.join("group.json");
    // What a SIGKILLed deploy leaves: the command and a child it started.
    let (mut leader, child) = group_running("sleep 60 & echo $!; wait", &[(MARK_VARIABLE, "v5")]);
    record_group(&file, "v5", leader.id());
    let left = kill_left_behind(&file).unwrap();
    let _ = leader.wait();
    assert_eq!(
        left,
        Some(LeftBehind {
            release: ReleaseId::new(5),
            processes: 2
        })
    );
    assert!(wait_gone(child), "pid {child} still runs");
    assert!(!file.exists());
    // Nothing recorded, nothing to do.
    assert_eq!(kill_left_behind(&file).unwrap(), None);
}

#[test]
fn a_recorded_group_that_is_no_longer_the_release_commands_is_left_alone() {
    let dir = TempDir::new("reused");
    let file = dir.0.join("group.json");
    // The group id now names processes that do not carry the mark of the
    // recorded release (another release's, or none at all).
    let (mut leader, child) = group_running("sleep 60 & echo $!; wait", &[(MARK_VARIABLE, "v4")]);
    record_group(&file, "v5", leader.id());
    assert_eq!(kill_left_behind(&file).unwrap(), None);
    assert!(!is_gone(child), "an unmarked group was killed");
    assert!(!file.exists(), "the stale record was kept");
    let group = rustix::process::Pid::from_raw(i32::try_from(leader.id()).unwrap()).unwrap();
    rustix::process::kill_process_group(group, rustix::process::Signal::KILL).unwrap();
    let _ = leader.wait();
    assert!(wait_gone(child));
}
