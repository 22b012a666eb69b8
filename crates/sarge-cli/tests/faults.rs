//! Nothing lost: every bad input and every fault around sarge leaves the
//! running version serving, no half-made instance behind, and `$SARGE_HOME`
//! as it was (apart from logs), with an error that names the culprit.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tar::EntryType;

#[test]
fn bad_tarballs_are_refused_whole_naming_the_entry() {
    let home = TestHome::new("badtar", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    let before = home.snapshot();
    let outside = home.root.join("escaped");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot-dot entry",
            app_tarball_with(&[("../../../escaped", EntryType::Regular, b"x", "")]),
            "tarball entry ../../../escaped climbs out of the app folder with `..`",
        ),
        (
            "absolute entry",
            app_tarball_with(&[("/tmp/sarge-escaped", EntryType::Regular, b"x", "")]),
            "tarball entry /tmp/sarge-escaped has an absolute path",
        ),
        (
            "symlink outside",
            app_tarball_with(&[("etc", EntryType::Symlink, b"", "/etc")]),
            "tarball entry etc is a link to /etc outside the app folder",
        ),
        (
            "relative symlink outside",
            app_tarball_with(&[("up", EntryType::Symlink, b"", "../../..")]),
            "tarball entry up is a link to ../../.. outside the app folder",
        ),
        (
            "hard link outside",
            app_tarball_with(&[("passwd", EntryType::Link, b"", "../../../etc/sarge.yaml")]),
            "tarball entry passwd is a hard link to ../../../etc/sarge.yaml outside the app folder",
        ),
        (
            "file through a link",
            app_tarball_with(&[
                ("sub/", EntryType::Directory, b"", ""),
                ("here", EntryType::Symlink, b"", "sub"),
                ("here/file", EntryType::Regular, b"x", ""),
            ]),
            "tarball entry here/file would be written through the link here",
        ),
        (
            "device entry",
            app_tarball_with(&[("disk", EntryType::Block, b"", "")]),
            "tarball entry disk is a device file",
        ),
        (
            "fifo entry",
            app_tarball_with(&[("pipe", EntryType::Fifo, b"", "")]),
            "tarball entry pipe is a fifo",
        ),
        (
            "not an archive",
            b"Procfile: this is plain text, not a tarball, and long enough to fill a header?"
                .repeat(10),
            "cannot unpack the tarball: it is not a tar or gzip archive",
        ),
        (
            "gzip of garbage",
            vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7],
            "cannot unpack the tarball:",
        ),
        (
            "empty input",
            Vec::new(),
            "cannot unpack the tarball: it is empty",
        ),
        (
            "truncated tarball",
            {
                let full =
                    app_tarball_with(&[("big.bin", EntryType::Regular, &[b'x'; 60_000], "")]);
                full[..full.len() - 40_000].to_vec()
            },
            "cannot unpack the tarball: it is truncated",
        ),
    ];
    for (case, bytes, expected) in cases {
        let output = home.deploy_bytes(&bytes, "web");
        assert_refused(
            &home,
            &before,
            Refusal {
                case,
                output,
                expected,
            },
        );
        assert!(!outside.exists(), "{case}: wrote outside the instance");
        assert!(
            !std::path::Path::new("/tmp/sarge-escaped").exists(),
            "{case}: wrote /tmp"
        );
    }
}

#[test]
fn bad_apps_are_refused_and_the_old_version_keeps_serving() {
    let mut home = TestHome::new("badapp", "  MESSAGE: old");
    home.write_config("  MESSAGE: old", "ready_timeout: 3");
    home.deploy_ok(&hello_app(), "web");
    let before = home.snapshot();
    let cases: Vec<(&str, std::path::PathBuf, &str, &str)> = vec![
        (
            "no Procfile",
            app_with("noprocfile", &[("Procfile", "")]),
            "web",
            "the app has no Procfile at its root",
        ),
        (
            "malformed Procfile",
            app_with(
                "badprocfile",
                &[("Procfile", "# processes\nweb python app.py\n")],
            ),
            "web",
            "Procfile line 2: expected `name: command`, found \"web python app.py\"",
        ),
        (
            "process not in Procfile",
            hello_app(),
            "worker",
            "process \"worker\" is not in the Procfile (it has: web)",
        ),
        (
            "invalid process name",
            hello_app(),
            "../web",
            "\"../web\" is not a valid process name",
        ),
        (
            "requirement not in dist",
            app_with(
                "missingreq",
                &[("requirements.txt", "Flask==3.1.3\nnosuchpkg==1.0\n")],
            ),
            "web",
            "nosuchpkg",
        ),
        (
            "version not in dist",
            app_with("missingversion", &[("requirements.txt", "Flask==0.9\n")]),
            "web",
            "flask",
        ),
        (
            "app exits at start",
            app_with(
                "exits",
                &[("Procfile", "web: echo 'fatal: no database' >&2; exit 1\n")],
            ),
            "web",
            "fatal: no database",
        ),
        (
            "app never listens",
            app_with(
                "neverlistens",
                &[("Procfile", "web: echo 'listening soon' && sleep 600\n")],
            ),
            "web",
            "was not ready within 3 s (waiting for it to listen on port",
        ),
    ];
    for (case, app, process, expected) in cases {
        let output = home.deploy(&app, process);
        assert_refused(
            &home,
            &before,
            Refusal {
                case,
                output,
                expected,
            },
        );
    }
    // The log tail is part of the error when the app fails.
    let app = app_with(
        "neverlistens2",
        &[("Procfile", "web: echo 'listening soon' && sleep 600\n")],
    );
    let output = home.deploy(&app, "web");
    assert!(
        stderr(&output).contains("listening soon"),
        "{}",
        stderr(&output)
    );

    // The interpreter: missing, or without venv support.
    let fake = home.root.join("no-venv-python");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'Error: Command -m venv returned non-zero exit status 1. ensurepip is not available.' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for (case, python, expected) in [
        (
            "python_bin missing",
            "/nonexistent/python3".to_owned(),
            "/nonexistent/python3 not found",
        ),
        (
            "python_bin without venv",
            fake.display().to_string(),
            "no-venv-python",
        ),
    ] {
        home.write_config(
            "  MESSAGE: old",
            &format!("ready_timeout: 3\npython_bin: {python}"),
        );
        let before = home.snapshot();
        // A changed requirements.txt, so the environment is not reused.
        let app = app_with(
            "python",
            &[("requirements.txt", "Flask==3.1.3\n# python\n")],
        );
        let output = home.deploy(&app, "web");
        assert_refused(
            &home,
            &before,
            Refusal {
                case,
                output,
                expected,
            },
        );
    }
    home.stop_supervisord();
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let home = TestHome::new("badconfig", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    let good = std::fs::read_to_string(home.config_path()).unwrap();
    let web = format!("127.0.0.1:{}", home.stable);
    let cases: Vec<(&str, String, String)> = vec![
        (
            "yaml syntax",
            good.replace("port_map:", "port_map: [oops"),
            "invalid YAML".into(),
        ),
        (
            "yaml syntax has a line and column",
            good.replace("port_map:", "port_map: [oops"),
            "at line".into(),
        ),
        (
            "port_range reversed",
            good.replace(
                &format!("[{}, {}]", home.first_port, home.last_port),
                &format!("[{}, {}]", home.last_port, home.first_port),
            ),
            "port_range".into(),
        ),
        (
            "port_range below 1024",
            good.replace(&format!("[{}, ", home.first_port), "[80, "),
            "port_range".into(),
        ),
        (
            "port_map not host:port",
            good.replace(&web, "localhost"),
            "port_map.web: \"localhost\" is not host:port".into(),
        ),
        (
            "stable port inside port_range",
            good.replace(&web, &format!("127.0.0.1:{}", home.first_port + 1)),
            "port_map.web".into(),
        ),
        (
            "two processes on one address",
            good.replace(&format!("127.0.0.1:{}", home.stable + 1), &web),
            "clashes with".into(),
        ),
        (
            "unknown key",
            format!("{good}haproxy_binary: /usr/sbin/haproxy\n"),
            "unknown key \"haproxy_binary\"".into(),
        ),
        (
            "non-scalar env value",
            good.replace("  MESSAGE: old", "  MESSAGE: [a, b]"),
            "env.MESSAGE".into(),
        ),
    ];
    for (case, config, expected) in cases {
        std::fs::write(home.config_path(), &config).unwrap();
        let before = home.snapshot();
        let output = home.deploy(&hello_app(), "web");
        let message = stderr(&output);
        assert_refused(
            &home,
            &before,
            Refusal {
                case,
                output,
                expected: &expected,
            },
        );
        assert!(
            message.contains("etc/sarge.yaml"),
            "{case}: error does not name the file: {message}"
        );
    }
}

#[test]
fn unknown_targets_are_refused() {
    let home = TestHome::new("targets", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    let before = home.snapshot();
    let id = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    for command in ["run", "start", "stop", "destroy"] {
        for target in ["nope", "web-000000", "../web"] {
            let output = home.sarge(&[command, target]);
            let expected = format!(
                "no instance or process named \"{target}\" (current instances: {id} (web))"
            );
            assert_refused(
                &home,
                &before,
                Refusal {
                    case: &format!("{command} {target}"),
                    output,
                    expected: &expected,
                },
            );
        }
    }
}

#[test]
fn supervisord_not_running_fails_before_changing_anything() {
    let mut home = TestHome::new("nosupervisord", "  MESSAGE: old");
    home.stop_supervisord();
    let before = home.snapshot();
    let output = home.deploy(&hello_app(), "web");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!(
            "error: supervisord is not running for {0}: start it with {0}/bin/supervisord\n",
            home.root.display()
        )
    );
    assert_unchanged(&home, &before, "after the refused deploy");
}

#[test]
fn haproxy_missing_or_refusing_keeps_the_routing() {
    let home = TestHome::new("haproxyfault", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    let good = std::fs::read_to_string(home.config_path()).unwrap();

    std::fs::write(
        home.config_path(),
        format!("{good}haproxy_bin: /nonexistent/haproxy\n"),
    )
    .unwrap();
    let before = home.snapshot();
    let output = home.deploy(&hello_app(), "web");
    let expected = "haproxy binary \"/nonexistent/haproxy\" not found";
    assert_refused(
        &home,
        &before,
        Refusal {
            case: "haproxy missing",
            output,
            expected,
        },
    );

    // A new stable address haproxy cannot bind: `haproxy -c` refuses it.
    let refused = good.replace(
        &format!("api: 127.0.0.1:{}", home.stable + 1),
        &format!("api: nosuchhost.invalid:{}", home.stable + 1),
    );
    std::fs::write(home.config_path(), refused).unwrap();
    let before = home.snapshot();
    let output = home.deploy(&hello_app(), "web");
    assert_refused(
        &home,
        &before,
        Refusal {
            case: "haproxy refuses",
            output,
            expected: "nosuchhost.invalid",
        },
    );
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "old\n".to_owned())
    );
}

#[test]
fn an_exhausted_port_range_is_an_error_that_changes_nothing() {
    let home = TestHome::new("exhausted", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    let port = home.instance_of("web")["port"].as_u64().unwrap();
    let config = std::fs::read_to_string(home.config_path())
        .unwrap()
        .replace(
            &format!("[{}, {}]", home.first_port, home.last_port),
            &format!("[{port}, {port}]"),
        );
    std::fs::write(home.config_path(), config).unwrap();
    let before = home.snapshot();
    let output = home.deploy(&hello_app(), "web");
    let expected = format!("port_range {port}-{port} has 0 free");
    assert_refused(
        &home,
        &before,
        Refusal {
            case: "exhausted",
            output,
            expected: &expected,
        },
    );
}

#[test]
fn concurrent_deploys_wait_for_each_other() {
    let home = TestHome::new("concurrent", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    let load = Load::start(home.stable);
    let tarball = tar_of(&hello_app());
    let spawn = || {
        let mut child = home
            .command(&["deploy", "-", "web"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&tarball).unwrap();
        child
    };
    let (first, second) = (spawn(), spawn());
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    home.wait_unlocked();
    let (fresh, kept) = load.finish();
    for output in &outputs {
        assert!(output.status.success(), "{}", stderr(output));
    }
    assert!(
        outputs
            .iter()
            .any(|output| stderr(output).contains("waiting for another sarge command")),
        "neither deploy said it waited"
    );
    assert_eq!(
        fresh.failed + kept.failed,
        0,
        "{:?} {:?}",
        fresh.failures,
        kept.failures
    );
    let instances = home.instances();
    assert_eq!(instances.len(), 1);
    let dirs = std::fs::read_dir(home.root.join("var/instances"))
        .unwrap()
        .count();
    assert_eq!(dirs, 1, "an instance folder was left behind");
    assert_eq!(http_get(home.stable, "/").unwrap().0, 200);
}

/// Starts a deploy and SIGKILLs it once its progress shows `after`, i.e.
/// during the step that follows.
fn deploy_killed_after(home: &TestHome, app: &std::path::Path, after: &str) {
    if after == "mid-unpack" {
        // Half of a big file, then the kill while sarge waits for the rest.
        let mut child = home
            .command(&["deploy", "-", "web"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let tarball = app_tarball_with(&[("big.bin", EntryType::Regular, &[b'x'; 200_000], "")]);
        stdin
            .write_all(&tarball[..tarball.len() - 100_000])
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        child.kill().unwrap();
        child.wait().unwrap();
        return;
    }
    home.killed_at_line(
        &["deploy", "-", "web"],
        &tar_of(app),
        &format!("-----> {after} "),
        1,
    );
}

/// The virtualenvs the kept releases run.
fn kept_venvs(home: &TestHome) -> std::collections::BTreeSet<String> {
    let mut venvs = std::collections::BTreeSet::new();
    for release in home.releases() {
        let id = release["id"].as_str().unwrap();
        let path = home.root.join("var/releases").join(id).join("release.json");
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        for spec in record["processes"].as_object().unwrap().values() {
            if let Some(venv) = spec["venv"].as_str() {
                venvs.insert(venv.to_owned());
            }
        }
    }
    venvs
}

/// What `list` (which only reads) must show right after a kill, before
/// anything recovers: the one committed web instance, running and
/// answering, never the leftover the killed deploy may have left on disk.
/// Returns its id.
fn assert_listed_truthfully(home: &TestHome, phase: &str) -> String {
    let instances = home.instances();
    assert_eq!(instances.len(), 1, "after a kill {phase}: {instances:?}");
    let id = instances[0]["id"].as_str().unwrap().to_owned();
    let current: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.root.join("var/state/current.json")).unwrap())
            .unwrap();
    assert_eq!(
        current["processes"]["web"][0]["id"], id,
        "after a kill {phase}: list shows an instance that is not committed"
    );
    assert_eq!(
        instances[0]["state"], "running",
        "after a kill {phase}: {instances:?}"
    );
    let port = instances[0]["port"].as_u64().unwrap() as u16;
    assert_eq!(
        http_get(port, "/").unwrap().0,
        200,
        "after a kill {phase}: the listed instance does not answer"
    );
    assert_eq!(
        http_get(home.stable, "/").unwrap().0,
        200,
        "after a kill {phase}: the stable port does not answer"
    );
    id
}

/// `sarge recover`: what every changing command runs first.
fn recover(home: &TestHome) {
    let out = home.sarge(&["recover"]);
    assert!(out.status.success(), "recover failed: {}", stderr(&out));
}

/// What a truthful state looks like once a changing command (or `sarge
/// recover`) ran: one listed web instance that answers, no other instance
/// folder, no other program.
fn assert_truthful(home: &TestHome, phase: &str) {
    let id = assert_listed_truthfully(home, phase);
    let dirs: Vec<String> = std::fs::read_dir(home.root.join("var/instances"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        dirs,
        vec![id.clone()],
        "after a kill {phase}: ghosts in var/instances"
    );
    let mut programs: Vec<String> = std::fs::read_dir(home.root.join("etc/supervisor.d"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    programs.sort();
    let mut expected = vec![format!("{id}.conf"), "haproxy.conf".to_owned()];
    expected.sort();
    assert_eq!(programs, expected, "after a kill {phase}");
    let status = Command::new(home.root.join("bin/supervisorctl"))
        .arg("status")
        .output()
        .unwrap();
    let status = stdout(&status);
    assert_eq!(
        status.lines().count(),
        2,
        "after a kill {phase}: supervisord runs {status}"
    );
    // An installer orphaned by the kill may still be writing its
    // environment; once it is done, the next recovery removes it. What
    // stays is what a kept release runs (a rollback installs nothing).
    wait_for(
        Duration::from_secs(20),
        || {
            recover(home);
            let venvs: std::collections::BTreeSet<String> =
                std::fs::read_dir(home.root.join("var/venvs"))
                    .unwrap()
                    .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
            venvs == kept_venvs(home)
        },
        &format!("unused virtualenvs to be removed after a kill {phase}"),
    );
}

#[test]
fn a_deploy_killed_at_any_phase_leaves_a_truthful_state() {
    let home = TestHome::new("killed", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    // The kills after which a leftover instance was on disk while `list`
    // ran: it must have shown only the committed one.
    let mut left_a_leftover = Vec::new();
    // A changed requirements.txt makes the install step real (not reused).
    let mut variant = 0;
    for after in [
        "mid-unpack",
        "unpack",
        "procfile",
        "virtualenv",
        "start",
        "ready",
        "switch",
    ] {
        variant += 1;
        let app = app_with(
            &format!("killed{variant}"),
            &[(
                "requirements.txt",
                &format!("Flask==3.1.3\n# variant {variant}\n"),
            )],
        );
        deploy_killed_after(&home, &app, after);
        let phase = format!("after {after}");
        let folders = std::fs::read_dir(home.root.join("var/instances"))
            .unwrap()
            .count();
        if folders > 1 {
            left_a_leftover.push(after);
        }
        // `list` reads only: right after the kill it already tells the
        // truth, and the disk is clean once a recovery ran.
        assert_listed_truthfully(&home, &phase);
        recover(&home);
        assert_truthful(&home, &phase);
        let progress = home.deploy_ok(&hello_app(), "web");
        assert!(!progress.contains("error"), "{progress}");
        assert_truthful(&home, &format!("{phase}, then a deploy"));
        let _ = std::fs::remove_dir_all(app);
    }
    assert!(
        left_a_leftover.len() >= 3,
        "too few kills left a leftover for list to hide: {left_a_leftover:?}"
    );
}

#[test]
fn a_supervisord_restart_brings_back_instances_and_routes() {
    let mut home = TestHome::new("reboot", "  MESSAGE: back");
    let app = app_copy("reboot");
    std::fs::write(
        app.join("Procfile"),
        "web: python app.py $PORT\napi: python app.py $PORT\n",
    )
    .unwrap();
    home.deploy_ok(&app, "web");
    home.deploy_ok(&app, "web"); // the route now uses slot b
    home.deploy_ok(&app, "api");
    let before = home.instances();
    home.stop_supervisord();
    assert!(
        http_get(home.stable, "/").is_err(),
        "haproxy still up after supervisord stopped"
    );
    home.start_supervisord();
    for port in [home.stable, home.stable + 1] {
        wait_for(
            Duration::from_secs(20),
            || matches!(http_get(port, "/"), Ok((200, ref body)) if body == "back\n"),
            "the app on its stable port after the restart",
        );
    }
    let after = home.instances();
    let ids = |list: &[serde_json::Value]| list.iter().map(|i| i["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before));
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn secrets_stay_private() {
    let home = TestHome::new(
        "secrets",
        "  DATABASE_PASSWORD: \"s3cr3t-value\"\n  MESSAGE: hi",
    );
    let output = home.deploy(&hello_app(), "web");
    assert!(output.status.success());
    assert!(
        !stderr(&output).contains("s3cr3t-value"),
        "deploy printed a secret"
    );
    let id = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    let mode = |path: &str| {
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(home.root.join(path))
                .unwrap()
                .permissions(),
        ) & 0o777
    };
    assert_eq!(mode(&format!("var/instances/{id}/env.sh")), 0o600);
    assert_eq!(mode("var/releases/v1/env.json"), 0o600);
    assert_eq!(mode("var/run/supervisor.sock"), 0o700);
    assert_eq!(mode("var/run/haproxy.sock"), 0o600);
    // No other file in the home holds the secret.
    for (path, content) in home.snapshot() {
        if String::from_utf8_lossy(&content).contains("s3cr3t-value") {
            assert!(
                path == "etc/sarge.yaml"
                    || path.ends_with("/env.sh")
                    || (path.starts_with("var/releases/") && path.ends_with("/env.json")),
                "{path} holds the secret"
            );
        }
    }
    // An error never shows it either.
    let app = app_with("secretfail", &[("Procfile", "web: exit 1\n")]);
    let output = home.deploy(&app, "web");
    assert!(!output.status.success());
    assert!(!stderr(&output).contains("s3cr3t-value"));
}

#[test]
fn a_stable_address_taken_by_another_program_fails_the_deploy_naming_it() {
    let home = TestHome::new("taken", "  MESSAGE: hi");
    // Something else already listens on web's stable address.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", home.stable)).unwrap();
    let before = home.snapshot();
    let started = std::time::Instant::now();
    let output = home.deploy(&hello_app(), "web");
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("error: haproxy did not come up"),
        "{message}"
    );
    assert!(
        message.contains(&format!("127.0.0.1:{}", home.stable)),
        "the error does not name the address: {message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed only after the full wait"
    );
    // The virtualenv this first deploy built is complete: it stays for the
    // retry, and the next successful deploy removes it if unused.
    let without_venvs = |files: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        files
            .into_iter()
            .filter(|(path, _)| !path.starts_with("var/venvs/"))
            .collect()
    };
    let (after, before) = (without_venvs(home.snapshot()), without_venvs(before));
    let changed: Vec<&String> = after
        .iter()
        .filter(|f| !before.contains(f))
        .map(|f| &f.0)
        .collect();
    let gone: Vec<&String> = before
        .iter()
        .filter(|f| !after.contains(f))
        .map(|f| &f.0)
        .collect();
    assert!(
        changed.is_empty() && gone.is_empty(),
        "the home changed: {changed:?} {gone:?}"
    );
    assert!(home.instances().is_empty());

    // Once the address is free, the next deploy works.
    drop(squatter);
    home.deploy_ok(&hello_app(), "web");
    assert_eq!(http_get(home.stable, "/").unwrap().0, 200);
}
