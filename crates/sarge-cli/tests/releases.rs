#![allow(clippy::unwrap_used)]
//! Releases end to end: one tarball deploys every process type, each
//! deploy and rollback is a release, a rollback is a switch (no unpack, no
//! install, zero failed requests), and disk stays bounded.

mod common;

use common::*;

/// The hello app plus a `worker` process type that serves nothing.
fn app_with_worker(name: &str) -> std::path::PathBuf {
    let dir = app_copy(name);
    std::fs::write(
        dir.join("Procfile"),
        "web: python app.py $PORT\nworker: python -c 'import time; time.sleep(100000)'\n",
    )
    .unwrap();
    dir
}

fn releases(home: &TestHome) -> Vec<serde_json::Value> {
    home.releases()
}

fn deploy_all(home: &TestHome, app: &std::path::Path) -> String {
    let out = home.deploy_processes(&tar_of(app), &[]);
    assert!(out.status.success(), "deploy failed:\n{}", stderr(&out));
    stderr(&out)
}

#[test]
fn one_tarball_deploys_every_process_type_as_one_release() {
    let home = TestHome::new("multi", "  MESSAGE: one");
    let app = app_with_worker("multi");
    let started = unix_now();
    let progress = deploy_all(&home, &app);
    assert_eq!(progress.matches("-----> unpack").count(), 1, "{progress}");
    assert!(progress.contains("deployed release v1"), "{progress}");
    // Exactly the documented keys; `created` is RFC 3339 and now.
    let listed = releases(&home);
    assert_eq!(listed.len(), 1);
    let keys: Vec<&String> = listed[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["created", "current", "description", "id", "processes"],
        "{}",
        listed[0]
    );
    assert_eq!(listed[0]["description"], "deploy web, worker");
    let created = rfc3339_seconds(listed[0]["created"].as_str().unwrap());
    assert!(
        (started - 1..=unix_now() + 1).contains(&created),
        "{}",
        listed[0]
    );

    let instances = home.instances();
    assert_eq!(instances.len(), 2, "{instances:?}");
    for instance in &instances {
        assert_eq!(instance["release"], "v1", "{instance}");
    }
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "one\n".to_owned())
    );
    // One app folder for both processes.
    let dirs: Vec<String> = std::fs::read_dir(home.root.join("var/releases"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, vec!["v1".to_owned()]);

    // Naming one process: only it gets the new code; the release keeps the
    // worker on v1's.
    home.write_config("  MESSAGE: two", "");
    home.deploy_ok(&app, "web");
    let listed = releases(&home);
    assert_eq!(listed[0]["id"], "v2");
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[0]["description"], "deploy web");
    assert_eq!(
        listed[0]["processes"],
        serde_json::json!({"web": 1, "worker": 1})
    );
    let worker = home.instance_of("worker");
    assert_eq!(worker["release"], "v1", "{worker}");
    assert_eq!(home.instance_of("web")["release"], "v2");

    // The text forms: `*` marks the current release, newest first, and
    // `list` has a RELEASE column.
    let out = home.sarge(&["releases"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("* v2 "), "{text}");
    assert!(lines[0].contains("deploy web "), "{text}");
    assert!(lines[0].ends_with("web=1 worker=1"), "{text}");
    assert!(lines[1].starts_with("  v1 "), "{text}");
    assert!(lines[1].contains("deploy web, worker"), "{text}");
    let out = home.sarge(&["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let columns =
        |line: &str| -> Vec<String> { line.split_whitespace().map(str::to_owned).collect() };
    let mut lines = text.lines();
    let header = columns(lines.next().unwrap());
    assert_eq!(
        header,
        ["ID", "PROCESS", "PORT", "STATE", "RELEASE", "CREATED"],
        "{text}"
    );
    let mut rows: Vec<(String, String)> = lines
        .map(|line| {
            let row = columns(line);
            (row[1].clone(), row[4].clone())
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("web".to_owned(), "v2".to_owned()),
            ("worker".to_owned(), "v1".to_owned())
        ],
        "{text}"
    );
    let _ = std::fs::remove_dir_all(app);
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Seconds since the epoch of an RFC 3339 time, checked by GNU date after
/// its shape (`date -d` alone accepts much more than RFC 3339).
fn rfc3339_seconds(time: &str) -> i64 {
    let bytes = time.as_bytes();
    let digits = |range: std::ops::Range<usize>| range.clone().all(|i| bytes[i].is_ascii_digit());
    let zone_ok = time.ends_with('Z')
        || time.len() >= 6 && {
            let zone = &bytes[bytes.len() - 6..];
            matches!(zone[0], b'+' | b'-') && zone[3] == b':'
        };
    assert!(
        bytes.len() >= 20
            && digits(0..4)
            && bytes[4] == b'-'
            && digits(5..7)
            && bytes[7] == b'-'
            && digits(8..10)
            && bytes[10] == b'T'
            && digits(11..13)
            && bytes[13] == b':'
            && digits(14..16)
            && bytes[16] == b':'
            && digits(17..19)
            && zone_ok,
        "not RFC 3339: {time:?}"
    );
    let out = std::process::Command::new("date")
        .args(["-u", "-d", time, "+%s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "date cannot read {time:?}");
    stdout(&out).trim().parse().unwrap()
}

#[test]
fn rollback_is_a_switch_with_no_failed_request_and_no_install() {
    let home = TestHome::new("rollback", "  MESSAGE: one");
    home.deploy_ok(&hello_app(), "web");
    home.write_config("  MESSAGE: two", "");
    home.deploy_ok(&hello_app(), "web");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "two\n");

    // No wheels, no network: a rollback never installs.
    let empty_dist = home.root.join("empty-dist");
    std::fs::create_dir_all(&empty_dist).unwrap();
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    let dist_line = config
        .lines()
        .find(|line| line.starts_with("python_dist:"))
        .unwrap()
        .to_owned();
    std::fs::write(
        home.config_path(),
        config.replace(
            &dist_line,
            &format!("python_dist: {}", empty_dist.display()),
        ),
    )
    .unwrap();

    let load = Load::start(home.stable);
    let out = home.sarge(&["rollback"]);
    let (fresh, kept) = load.finish();
    let text = stderr(&out);
    assert!(out.status.success(), "rollback failed:\n{text}");
    assert!(!text.contains("installed"), "{text}");
    assert!(!text.contains("unpack"), "{text}");
    // v1's env came back with its code, and sarge says which names differ.
    assert_eq!(http_get(home.stable, "/").unwrap().1, "one\n");
    assert!(
        text.contains("differ from etc/sarge.yaml now: MESSAGE"),
        "{text}"
    );
    assert!(!text.contains("one\n"), "a value was printed:\n{text}");
    assert!(text.contains("rolled back to v1 as release v3"), "{text}");
    assert_eq!(fresh.failed + kept.failed, 0, "{fresh:?} {kept:?}");
    assert!(fresh.served + kept.served > 0);

    let listed = releases(&home);
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["v3", "v2", "v1"]);
    assert_eq!(listed[0]["description"], "rollback to v1");
    assert_eq!(listed[0]["current"], true);

    // A named rollback; then ids that name nothing change nothing.
    let out = home.sarge(&["rollback", "v2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(http_get(home.stable, "/").unwrap().1, "two\n");
    let before = home.snapshot();
    for (bad, says) in [
        (
            "v99",
            "release v99 is not one you can roll back to (kept releases: v4, v3, v2, v1)",
        ),
        ("v4", "(it is the current release)"),
        ("latest", "\"latest\" is not a release id"),
    ] {
        let out = home.sarge(&["rollback", bad]);
        assert!(!out.status.success(), "{bad}: rollback succeeded");
        assert!(stderr(&out).contains(says), "{bad}: {}", stderr(&out));
        assert_unchanged(&home, &before, bad);
    }
    assert_eq!(http_get(home.stable, "/").unwrap().1, "two\n");
}

#[test]
fn only_the_newest_releases_keep_their_code_and_virtualenv() {
    let home = TestHome::new("prune", "  MESSAGE: v0");
    let app = app_copy("prune");
    let requirements = std::fs::read_to_string(app.join("requirements.txt")).unwrap();
    for round in 1..=7 {
        home.write_config(&format!("  MESSAGE: v{round}"), "");
        // A requirements file of its own gives each release a virtualenv
        // of its own (the key hashes the file's bytes), and a release
        // command its own output file: both must be pruned with it.
        std::fs::write(
            app.join("requirements.txt"),
            format!("{requirements}# round {round}\n"),
        )
        .unwrap();
        std::fs::write(
            app.join("Procfile"),
            format!("web: python app.py $PORT\nrelease: echo round {round}\n"),
        )
        .unwrap();
        let progress = home.deploy_ok(&app, "web");
        assert!(progress.contains("release | round"), "{progress}");
    }
    let listed = releases(&home);
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["v7", "v6", "v5", "v4", "v3"]);
    assert_eq!(release_dirs(&home), ["v3", "v4", "v5", "v6", "v7"]);
    // Seven virtualenvs were built; the kept releases' five are left.
    let kept_venvs = venvs_of(&home, &ids);
    assert_eq!(kept_venvs.len(), 5, "{kept_venvs:?}");
    assert_eq!(dir_names(&home.root.join("var/venvs")), kept_venvs);
    assert_eq!(
        release_outputs(&home),
        [
            "release-v3.log",
            "release-v4.log",
            "release-v5.log",
            "release-v6.log",
            "release-v7.log"
        ]
    );
    // The oldest kept one still rolls back; a pruned one is refused by name.
    let out = home.sarge(&["rollback", "v2"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("release v2 is not one you can roll back to"));
    let out = home.sarge(&["rollback", "v3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(http_get(home.stable, "/").unwrap().1, "v3\n");
    // v3's folder is kept for the code the new v8 runs, and its
    // virtualenv for v8 to run in; v3's output goes with v3.
    let listed = releases(&home);
    assert_eq!(listed[0]["id"], "v8");
    assert_eq!(listed.len(), 5);
    assert!(home.root.join("var/releases/v3/app/app.py").is_file());
    assert_eq!(release_dirs(&home), ["v3", "v4", "v5", "v6", "v7", "v8"]);
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let kept_venvs = venvs_of(&home, &ids);
    assert_eq!(kept_venvs, venvs_of(&home, &["v3", "v4", "v5", "v6", "v7"]));
    assert_eq!(dir_names(&home.root.join("var/venvs")), kept_venvs);
    let out = home.sarge(&["recover"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        release_outputs(&home),
        [
            "release-v4.log",
            "release-v5.log",
            "release-v6.log",
            "release-v7.log"
        ]
    );
    let _ = std::fs::remove_dir_all(app);
}

fn dir_names(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The release folders, sorted.
fn release_dirs(home: &TestHome) -> Vec<String> {
    dir_names(&home.root.join("var/releases"))
        .into_iter()
        .collect()
}

/// The release command outputs in var/log, sorted.
fn release_outputs(home: &TestHome) -> Vec<String> {
    dir_names(&home.root.join("var/log"))
        .into_iter()
        .filter(|name| name.starts_with("release-"))
        .collect()
}

/// The virtualenvs the processes of releases `ids` run in, as their
/// records say.
fn venvs_of(home: &TestHome, ids: &[&str]) -> std::collections::BTreeSet<String> {
    ids.iter()
        .flat_map(|id| {
            let path = home.root.join("var/releases").join(id).join("release.json");
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            record["processes"]
                .as_object()
                .unwrap()
                .values()
                .map(|spec| spec["venv"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_release_command_runs_once_before_the_switch_and_gates_it() {
    let home = TestHome::new("relcmd", "  MESSAGE: one");
    home.deploy_ok(&hello_app(), "web");
    let app = app_with_worker("relcmd");
    let procfile = std::fs::read_to_string(app.join("Procfile")).unwrap();
    std::fs::write(
        app.join("Procfile"),
        format!(
            "{procfile}release: echo \"migrating with $MESSAGE\" && python -c 'import importlib.metadata as m; print(\"flask\", m.version(\"flask\"))' && echo \"port=${{PORT:-none}}\"\n"
        ),
    )
    .unwrap();
    let progress = deploy_all(&home, &app);
    // Once for the release, not per process; with the env and the venv.
    assert_eq!(
        progress.matches("release | migrating with one").count(),
        1,
        "{progress}"
    );
    assert!(progress.contains("release | flask 3."), "{progress}");
    assert!(progress.contains("release | port=none"), "{progress}");
    let out = home.sarge(&["releases", "--output", "v2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("migrating with one\nflask 3."),
        "{}",
        stdout(&out)
    );

    // Rolling back across it says the migration was not undone.
    let out = home.sarge(&["rollback", "v1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the release command of v2 ran after v1"),
        "{}",
        stderr(&out)
    );

    // A release command that fails, or runs too long, fails the deploy:
    // nothing switches and no release is made.
    for (command, extra, says) in [
        ("echo boom; exit 3", "", "exited with status 3"),
        (
            "echo slow; sleep 30",
            "release_timeout: 1",
            "ran past release_timeout (1 s)",
        ),
    ] {
        home.write_config("  MESSAGE: two", extra);
        std::fs::write(
            app.join("Procfile"),
            format!("{procfile}release: {command}\n"),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let out = home.deploy_processes(&tar_of(&app), &[]);
        let text = stderr(&out);
        assert!(
            !out.status.success(),
            "{command}: deploy succeeded:\n{text}"
        );
        assert!(text.contains(says), "{command}:\n{text}");
        assert!(
            text.contains("boom") || text.contains("slow"),
            "{command}:\n{text}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(http_get(home.stable, "/").unwrap().1, "one\n", "{command}");
        assert_eq!(releases(&home)[0]["id"], "v3", "{command}");
        assert_eq!(home.instances().len(), 2);
    }
    let _ = std::fs::remove_dir_all(app);
}

/// Starts `sarge deploy -` of `app` and SIGKILLs it once its progress
/// shows the `nth` line starting with `-----> {step}`.
fn deploy_killed_at(home: &TestHome, app: &std::path::Path, step: &str, nth: usize) -> String {
    killed_at(home, &["deploy", "-"], &tar_of(app), step, nth)
}

/// Runs sarge with `args` and `input` on stdin, and SIGKILLs it once its
/// progress shows the `nth` line starting with `-----> {step}`.
fn killed_at(home: &TestHome, args: &[&str], input: &[u8], step: &str, nth: usize) -> String {
    home.killed_at_line(args, input, &format!("-----> {step}"), nth)
        .1
}

#[test]
fn a_multi_process_deploy_killed_at_any_step_leaves_each_process_on_one_release() {
    let home = TestHome::new("relkill", "  MESSAGE: one");
    let app = app_with_worker("relkill");
    let procfile = std::fs::read_to_string(app.join("Procfile")).unwrap();
    std::fs::write(
        app.join("Procfile"),
        format!("{procfile}release: echo migrating\n"),
    )
    .unwrap();
    deploy_all(&home, &app);
    for (round, (step, nth)) in [
        ("release |", 1),
        ("release ", 1),
        ("start", 1),
        ("start", 2),
        ("ready", 1),
        ("ready", 2),
        ("switch", 1),
    ]
    .into_iter()
    .enumerate()
    {
        let case = format!("killed at {step} #{nth}");
        home.write_config(&format!("  MESSAGE: r{round}"), "");
        let _ = deploy_killed_at(&home, &app, step, nth);
        // `list` and `releases` read only, and right after the kill they
        // already show both processes on one (committed) release, the
        // stable address answering.
        let instances = home.instances();
        assert_eq!(instances.len(), 2, "{case}: {instances:?}");
        assert_eq!(
            instances[0]["release"], instances[1]["release"],
            "{case}: the processes run different releases: {instances:?}"
        );
        let current = releases(&home);
        assert_eq!(current[0]["id"], instances[0]["release"], "{case}");
        assert_eq!(http_get(home.stable, "/").unwrap().0, 200, "{case}");
        // Once a recovery ran (as every changing command does first), only
        // kept releases are on disk.
        let out = home.sarge(&["recover"]);
        assert!(out.status.success(), "{case}: recover: {}", stderr(&out));
        assert_eq!(
            releases(&home),
            current,
            "{case}: recover changed the releases"
        );
        let kept: std::collections::BTreeSet<String> = current
            .iter()
            .map(|release| release["id"].as_str().unwrap().to_owned())
            .collect();
        let on_disk: std::collections::BTreeSet<String> =
            std::fs::read_dir(home.root.join("var/releases"))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
        assert_eq!(on_disk, kept, "{case}: release folders");
        let progress = deploy_all(&home, &app);
        assert!(progress.contains("deployed release"), "{case}: {progress}");
        assert_eq!(
            http_get(home.stable, "/").unwrap().1,
            format!("r{round}\n"),
            "{case}"
        );
        assert_eq!(home.instances().len(), 2, "{case}");
    }
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn a_rollback_killed_at_any_step_leaves_each_process_on_one_release() {
    let home = TestHome::new("rbkill", "  MESSAGE: one");
    let app = app_with_worker("rbkill");
    deploy_all(&home, &app);
    home.write_config("  MESSAGE: two", "");
    deploy_all(&home, &app);
    for (step, nth) in [
        ("release", 1),
        ("start", 1),
        ("start", 2),
        ("ready", 1),
        ("switch", 1),
    ] {
        let case = format!("rollback killed at {step} #{nth}");
        let _ = killed_at(&home, &["rollback"], b"", step, nth);
        // Killed between the switch and the commit, haproxy still reaches
        // the uncommitted instance: the next command (here the explicit
        // recovery) routes back. Then each process is wholly on the release
        // `releases` calls current, and the stable address serves its env.
        let out = home.sarge(&["recover"]);
        assert!(out.status.success(), "{case}: recover: {}", stderr(&out));
        let instances = home.instances();
        assert_eq!(instances.len(), 2, "{case}: {instances:?}");
        let current = releases(&home);
        let id = current[0]["id"].clone();
        assert_eq!(current[0]["current"], true, "{case}");
        for instance in &instances {
            assert_eq!(instance["release"], id, "{case}: {instances:?}");
        }
        let served = http_get(home.stable, "/").unwrap();
        assert_eq!(served.0, 200, "{case}");
        let env = stdout(&home.sarge(&["config", "get", "MESSAGE"]));
        assert_eq!(
            served.1, env,
            "{case}: served {served:?}, release env {env}"
        );
        // The next command recovers, and a rollback completes.
        let out = home.sarge(&["rollback"]);
        assert!(out.status.success(), "{case}: {}", stderr(&out));
    }
    let _ = std::fs::remove_dir_all(app);
}

/// The process group of `pid`, while it runs (a zombie does not).
fn group_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    let group = fields.nth(1)?.parse().ok()?;
    (state != "Z").then_some(group)
}

/// The running processes of process group `group`.
fn members_of(group: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| group_of(*pid) == Some(group))
        .collect()
}

#[test]
fn a_release_command_left_running_by_a_killed_deploy_is_killed_by_the_next_command() {
    let home = TestHome::new("relorphan", "  MESSAGE: one");
    home.deploy_ok(&hello_app(), "web");
    let app = app_copy("relorphan");
    // The command waits on a child: killing the command alone would leave
    // the child running.
    std::fs::write(
        app.join("Procfile"),
        "web: python app.py $PORT\nrelease: sleep 60 & echo \"start $!\"; wait\n",
    )
    .unwrap();
    let line = deploy_killed_at(&home, &app, "release | start", 1);
    let child: u32 = line
        .rsplit_once("start ")
        .and_then(|(_, pid)| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    let group = group_of(child).expect("the release command's child died with the deploy");
    assert_ne!(group, child, "the child leads its own group");
    assert_eq!(members_of(group).len(), 2, "the command and its child run");

    // Reads change nothing: the command runs on, its release folder stays.
    let before = home.snapshot();
    assert!(home.root.join("var/releases/v2").is_dir());
    run_every_read(&home);
    assert_unchanged(&home, &before, "list and releases");
    assert_eq!(members_of(group).len(), 2, "a read killed the command");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "one\n");

    // The next deploy kills the whole group first, and says so.
    std::fs::write(
        app.join("Procfile"),
        "web: python app.py $PORT\nrelease: echo migrated\n",
    )
    .unwrap();
    home.write_config("  MESSAGE: two", "");
    let progress = home.deploy_ok(&app, "web");
    assert!(
        progress.contains("killed the release command of v2 (2 processes still running)"),
        "{progress}"
    );
    assert_eq!(members_of(group), Vec::<u32>::new());
    assert!(group_of(child).is_none(), "pid {child} still runs");
    assert!(!home.root.join("var/state/release-command.json").exists());
    // v2 wrote output: its id is not given again.
    assert_eq!(releases(&home)[0]["id"], "v3");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "two\n");
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn a_failed_deploys_release_id_and_output_are_not_given_again() {
    let home = TestHome::new("relretry", "  MESSAGE: one");
    home.write_config("  MESSAGE: one", "keep_releases: 2");
    let app = app_copy("relretry");
    let procfile = |release: &str| {
        std::fs::write(
            app.join("Procfile"),
            format!("web: python app.py $PORT\nrelease: {release}\n"),
        )
        .unwrap();
    };
    procfile("echo migrated v1");
    home.deploy_ok(&app, "web");
    procfile("echo broken; exit 1");
    let out = home.deploy(&app, "web");
    let text = stderr(&out);
    assert!(!out.status.success(), "{text}");
    let log = home.root.join("var/log/release-v2.log");
    assert!(
        text.contains(&format!("all of it is in {}", log.display())),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "broken\n");

    // The fix is a new id; the output the error pointed to is still there.
    procfile("echo migrated v3");
    let progress = home.deploy_ok(&app, "web");
    assert!(progress.contains("deployed release v3"), "{progress}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "broken\n");
    // The failed attempt's output, as its error pointed to it.
    let out = home.sarge(&["releases", "--output", "v2"]);
    assert_eq!(stdout(&out), "broken\n", "{}", stderr(&out));
    let out = home.sarge(&["releases", "--output", "v3"]);
    assert_eq!(stdout(&out), "migrated v3\n", "{}", stderr(&out));
    let ids: Vec<String> = releases(&home)
        .iter()
        .map(|release| release["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["v3", "v1"]);

    // Once older than every kept release, the failed output goes too.
    procfile("echo migrated v4");
    home.deploy_ok(&app, "web");
    let out = home.sarge(&["recover"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(release_outputs(&home), ["release-v3.log", "release-v4.log"]);
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn rollback_never_runs_the_release_command() {
    let home = TestHome::new("rbnorel", "  MESSAGE: one");
    let app = app_copy("rbnorel");
    std::fs::write(
        app.join("Procfile"),
        "web: python app.py $PORT\nrelease: echo migrating\n",
    )
    .unwrap();
    let progress = home.deploy_ok(&app, "web");
    assert!(progress.contains("release | migrating"), "{progress}");
    home.write_config("  MESSAGE: two", "");
    home.deploy_ok(&app, "web");

    let out = home.sarge(&["rollback", "v1"]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("release |"), "{text}");
    assert!(!text.contains("migrating"), "{text}");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "one\n");
    let listed = releases(&home);
    assert_eq!(listed[0]["id"], "v3");
    assert_eq!(listed[0]["description"], "rollback to v1");
    // v3 ran no release command, so it has no output of its own.
    assert!(!home.root.join("var/log/release-v3.log").exists());
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn list_and_releases_leave_what_a_killed_deploy_left_for_the_next_command() {
    let home = TestHome::new("readonly", "  MESSAGE: one");
    let app = app_with_worker("readonly");
    deploy_all(&home, &app);
    home.write_config("  MESSAGE: two", "");
    // Killed once the first new instance is ready: it runs, uncommitted.
    let _ = deploy_killed_at(&home, &app, "ready", 1);
    let committed: Vec<String> = home
        .instances()
        .iter()
        .map(|instance| instance["id"].as_str().unwrap().to_owned())
        .collect();
    let leftovers: Vec<String> = dir_names(&home.root.join("var/instances"))
        .into_iter()
        .filter(|id| !committed.contains(id))
        .collect();
    assert!(!leftovers.is_empty(), "the kill left no instance behind");

    let before = home.snapshot();
    let listed_before = releases(&home);
    run_every_read(&home);
    assert_unchanged(&home, &before, "list and releases");
    for id in &leftovers {
        assert!(home.root.join("var/instances").join(id).is_dir(), "{id}");
    }
    assert_eq!(releases(&home), listed_before);

    // The next command that changes state removes them.
    let out = home.sarge(&["recover"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for id in &leftovers {
        assert!(!home.root.join("var/instances").join(id).exists(), "{id}");
    }
    assert_eq!(http_get(home.stable, "/").unwrap().1, "one\n");
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn a_multi_process_deploy_whose_worker_exits_leaves_both_on_the_old_release() {
    let home = TestHome::new("workerdies", "  MESSAGE: one");
    let app = app_with_worker("workerdies");
    deploy_all(&home, &app);
    let listed = releases(&home);
    let old_ids = instance_releases(&home);

    // web becomes ready; worker exits at once.
    let good_procfile = std::fs::read_to_string(app.join("Procfile")).unwrap();
    std::fs::write(
        app.join("Procfile"),
        "web: python app.py $PORT\nworker: python -c 'import sys; print(\"worker gives up\"); sys.exit(3)'\n",
    )
    .unwrap();
    home.write_config("  MESSAGE: two", "");
    let load = Load::start(home.stable);
    let out = home.deploy_processes(&tar_of(&app), &[]);
    let (fresh, kept) = load.finish();
    let text = stderr(&out);
    assert!(!out.status.success(), "the deploy succeeded:\n{text}");
    assert!(text.contains("worker"), "{text}");
    assert_eq!(fresh.failed + kept.failed, 0, "{fresh:?} {kept:?}");
    assert!(fresh.served + kept.served > 0);
    assert_eq!(http_get(home.stable, "/").unwrap().1, "one\n");
    let now = instance_releases(&home);
    assert_eq!(now, old_ids, "a process left the old release");
    assert_eq!(releases(&home), listed);

    std::fs::write(app.join("Procfile"), good_procfile).unwrap();
    let progress = deploy_all(&home, &app);
    assert!(progress.contains("deployed release"), "{progress}");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "two\n");
    for instance in home.instances() {
        assert_eq!(instance["release"], releases(&home)[0]["id"], "{instance}");
    }
    let _ = std::fs::remove_dir_all(app);
}

/// `list` and `releases`, as text and as JSON: each succeeds.
fn run_every_read(home: &TestHome) {
    for args in [
        &["list", "--json"][..],
        &["releases", "--json"],
        &["list"],
        &["releases"],
    ] {
        let out = home.sarge(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
}

/// Each instance's id and release, as `list --json` shows them.
fn instance_releases(home: &TestHome) -> Vec<(String, String)> {
    home.instances()
        .iter()
        .map(|instance| {
            (
                instance["id"].as_str().unwrap().to_owned(),
                instance["release"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_release_whose_virtualenv_or_code_changed_is_never_rolled_back_to() {
    let home = TestHome::new("intact", "  MESSAGE: one");
    home.deploy_ok(&hello_app(), "web");
    // v2 gets its own virtualenv (the key covers requirements.txt's bytes).
    let requirements = std::fs::read_to_string(hello_app().join("requirements.txt")).unwrap();
    let two = app_with(
        "intact-two",
        &[("requirements.txt", &format!("{requirements}# two\n"))],
    );
    home.write_config("  MESSAGE: two", "");
    home.deploy_ok(&two, "web");
    let v1: serde_json::Value = serde_json::from_slice(
        &std::fs::read(home.root.join("var/releases/v1/release.json")).unwrap(),
    )
    .unwrap();
    let venv = home
        .root
        .join("var/venvs")
        .join(v1["processes"]["web"]["venv"].as_str().unwrap());

    // Something planted in v1's sealed virtualenv: v1 never runs again.
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages");
    std::fs::set_permissions(&site, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(site.join("planted.pth"), "import os\n").unwrap();
    let before = home.snapshot();
    let out = home.sarge(&["rollback", "v1"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("release v1 (its virtualenv: files in it changed after it was built")
            && text.contains("planted.pth"),
        "{text}"
    );
    assert_unchanged(&home, &before, "rollback to a changed virtualenv");

    // Its code gone: named, and nothing changes either.
    std::fs::remove_dir_all(home.root.join("var/releases/v1/app")).unwrap();
    let before = home.snapshot();
    let out = home.sarge(&["rollback", "v1"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("release v1 (its code in "), "{text}");
    assert!(text.contains("is gone)"), "{text}");
    assert_unchanged(&home, &before, "rollback to a release whose code is gone");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "two\n");
}
