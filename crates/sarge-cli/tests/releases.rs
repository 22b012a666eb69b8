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
    let progress = deploy_all(&home, &app);
    assert_eq!(progress.matches("-----> unpack").count(), 1, "{progress}");
    assert!(progress.contains("deployed release v1"), "{progress}");

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
    let _ = std::fs::remove_dir_all(app);
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
    for round in 1..=7 {
        home.write_config(&format!("  MESSAGE: v{round}"), "");
        home.deploy_ok(&hello_app(), "web");
    }
    let listed = releases(&home);
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["v7", "v6", "v5", "v4", "v3"]);
    let mut dirs: Vec<String> = std::fs::read_dir(home.root.join("var/releases"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["v3", "v4", "v5", "v6", "v7"]);
    // The oldest kept one still rolls back; a pruned one is refused by name.
    let out = home.sarge(&["rollback", "v2"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("release v2 is not one you can roll back to"));
    let out = home.sarge(&["rollback", "v3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(http_get(home.stable, "/").unwrap().1, "v3\n");
    // v3's folder is kept for the code the new v8 runs.
    let listed = releases(&home);
    assert_eq!(listed[0]["id"], "v8");
    assert_eq!(listed.len(), 5);
    assert!(home.root.join("var/releases/v3/app/app.py").is_file());
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
fn deploy_killed_at(home: &TestHome, app: &std::path::Path, step: &str, nth: usize) {
    killed_at(home, &["deploy", "-"], &tar_of(app), step, nth);
}

/// Runs sarge with `args` and `input` on stdin, and SIGKILLs it once its
/// progress shows the `nth` line starting with `-----> {step}`.
fn killed_at(home: &TestHome, args: &[&str], input: &[u8], step: &str, nth: usize) {
    use std::io::{BufRead, Write};
    let mut child = home
        .command(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let marker = format!("-----> {step}");
    let mut seen = 0;
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with(&marker) {
            seen += 1;
            if seen == nth {
                child.kill().unwrap();
                break;
            }
        }
        lines.push(line);
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "{args:?} finished before the kill at {step}: {lines:?}"
    );
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
        ("commit", 1),
        ("drain", 1),
    ]
    .into_iter()
    .enumerate()
    {
        let case = format!("killed at {step} #{nth}");
        home.write_config(&format!("  MESSAGE: r{round}"), "");
        deploy_killed_at(&home, &app, step, nth);
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
        ("commit", 1),
        ("drain", 1),
    ] {
        let case = format!("rollback killed at {step} #{nth}");
        killed_at(&home, &["rollback"], b"", step, nth);
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
