#![allow(clippy::unwrap_used)]
//! Faults of the config, privacy and CLI kind, end to end: env values that
//! YAML would reinterpret, health checks that an app's host check or a
//! redirect would fool, a home readable by other users, and `sarge run` with
//! a command of several words.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// Env values that a YAML parser resolving plain scalars changes on the way
/// (`1.10` -> `1.1`, `0x1F` -> `31`, `1e3` -> `1000.0`), each written
/// unquoted, with the text the app must see.
const AS_WRITTEN: &[(&str, &str, &str)] = &[
    ("VERSION", "1.10", "1.10"),
    ("HEX", "0x1F", "0x1F"),
    ("EXP", "1e3", "1e3"),
    ("YES", "yes", "yes"),
    ("BOOL", "True", "True"),
    ("LEADING", "007", "007"),
    ("INF", ".inf", ".inf"),
    ("OCT", "0o17", "0o17"),
    ("QUOTED", "\"1.10 'q' $HOME\"", "1.10 'q' $HOME"),
    (
        "MULTI",
        "|\n    line one\n      two\n    three",
        "line one\n  two\nthree\n",
    ),
];

/// The hello app with a homepage that answers the env values of
/// `AS_WRITTEN` as JSON.
fn env_echo_app() -> std::path::PathBuf {
    let dir = app_copy("envecho");
    let names: Vec<String> = AS_WRITTEN
        .iter()
        .map(|(name, _, _)| format!("{name:?}"))
        .collect();
    let app = std::fs::read_to_string(dir.join("app.py")).unwrap().replace(
        "@app.route(\"/up\")",
        &format!(
            "@app.route(\"/env\")\ndef env():\n    import json\n    return json.dumps({{n: os.environ.get(n) for n in [{}]}})\n\n\n@app.route(\"/up\")",
            names.join(", ")
        ),
    );
    std::fs::write(dir.join("app.py"), app).unwrap();
    dir
}

#[test]
fn env_values_reach_the_app_exactly_as_written() {
    let env: String = AS_WRITTEN
        .iter()
        .map(|(name, yaml, _)| format!("  {name}: {yaml}\n"))
        .collect();
    let home = TestHome::new("envexact", &env);
    let app = env_echo_app();
    home.deploy_ok(&app, "web");
    let (status, body) = http_get(home.stable, "/env").unwrap();
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    for (name, yaml, expected) in AS_WRITTEN {
        assert_eq!(
            seen[name].as_str(),
            Some(*expected),
            "env {name} written as {yaml:?} arrived as {}",
            seen[name]
        );
    }

    // `~` means "no value" in YAML: refused with the key named, nothing
    // deployed.
    home.write_config("  MESSAGE: ~", "");
    let out = home.deploy(&app, "web");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "sarge.yaml: env.MESSAGE: ~ means no value in YAML; write \"\" for an empty string or \"~\" for that text"
        ),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn run_passes_each_word_as_one_argument() {
    let home = TestHome::new("runargv", "  MESSAGE: \"two  spaces; $HOME\"");
    home.deploy_ok(&hello_app(), "web");
    let web = home.instance_of("web");

    let out = home.sarge(&["run", "web", "python", "-c", "print(1)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1\n");

    // A shell command is just another program with arguments.
    let out = home.sarge(&["run", "web", "sh", "-c", "echo $PORT; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n", web["port"]));

    // Each word arrives as one argument, spaces, quotes and `$` untouched;
    // flags after the target belong to the command, not to sarge.
    let out = home.sarge(&[
        "run",
        web["id"].as_str().unwrap(),
        "python",
        "-c",
        "import os, sys; print(repr(sys.argv[1:])); print(os.environ['MESSAGE'])",
        "a b",
        "'c'",
        "$HOME",
        "--help",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "['a b', \"'c'\", '$HOME', '--help']\ntwo  spaces; $HOME\n"
    );

    // A program that does not exist: the launcher's exec says so.
    let out = home.sarge(&["run", "web", "no-such-program-here"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
}

/// The hello app whose `/up` answers 400 unless the request's Host is
/// `$WANT_HOST` (as Django's ALLOWED_HOSTS does), or redirects to a login
/// page when `$UP_REDIRECTS` is set.
fn host_checking_app() -> std::path::PathBuf {
    let dir = app_copy("hostcheck");
    let app = std::fs::read_to_string(dir.join("app.py"))
        .unwrap()
        .replace(
            "from flask import Flask",
            "from flask import Flask, abort, redirect, request",
        )
        .replace(
            "def up():\n",
            "def up():\n    if os.environ.get(\"UP_REDIRECTS\"):\n        return redirect(\"/login\")\n    if request.headers.get(\"Host\") != os.environ[\"WANT_HOST\"]:\n        abort(400)\n",
        );
    std::fs::write(dir.join("app.py"), app).unwrap();
    dir
}

#[test]
fn health_check_sends_the_configured_host_and_wants_2xx() {
    let home = TestHome::new("hosthealth", "  WANT_HOST: localhost");
    let app = host_checking_app();

    // Default host: localhost.
    home.write_config(
        "  WANT_HOST: localhost",
        "healthcheck:\n  web: {path: /up, timeout: 5}",
    );
    let progress = home.deploy_ok(&app, "web");
    assert!(progress.contains("-----> ready"), "{progress}");

    // A host of the user's choosing.
    home.write_config(
        "  WANT_HOST: app.example.com",
        "healthcheck:\n  web: {path: /up, host: app.example.com, timeout: 5}",
    );
    home.deploy_ok(&app, "web");
    let serving = home.instance_of("web");

    // A redirect (to a login page) is not healthy: the deploy fails and
    // the old instance keeps serving.
    home.write_config(
        "  WANT_HOST: app.example.com\n  UP_REDIRECTS: 1",
        "healthcheck:\n  web: {path: /up, host: app.example.com, timeout: 2}",
    );
    let out = home.deploy(&app, "web");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("was not ready within 2 s (GET /up answered 302)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(home.instance_of("web")["id"], serving["id"]);
    assert_eq!(http_get(home.stable, "/").unwrap().0, 200);

    // A host with a space would break the request: refused naming the key.
    home.write_config(
        "  WANT_HOST: x",
        "healthcheck:\n  web: {path: /up, host: a b}",
    );
    let out = home.deploy(&app, "web");
    assert!(
        stderr(&out).contains("healthcheck.web.host: \"a b\" is not a host name"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(app);
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Files and folders under `dir` that group or others can use, with their
/// modes; symlinks are skipped (their own mode means nothing).
fn open_to_others(dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            continue;
        }
        let mode = mode_of(&path);
        if kind.is_dir() {
            // 0700, or 0500 for a sealed virtualenv's folders.
            if mode & 0o077 != 0 || mode & 0o500 != 0o500 {
                found.push(format!("{} {mode:o}", path.display()));
            }
            open_to_others(&path, found);
        } else if mode & 0o077 != 0 {
            found.push(format!("{} {mode:o}", path.display()));
        }
    }
}

#[test]
fn etc_and_var_are_private_to_the_owner() {
    let home = TestHome::new("private", "  DATABASE_PASSWORD: s3cr3t");
    home.deploy_ok(&hello_app(), "web");
    // A second deploy writes logs of a fresh instance and drains the old.
    home.deploy_ok(&hello_app(), "web");

    let mut found = Vec::new();
    for dir in ["etc", "var"] {
        let dir = home.root.join(dir);
        assert_eq!(mode_of(&dir), 0o700, "{}", dir.display());
        open_to_others(&dir, &mut found);
    }
    assert!(
        found.is_empty(),
        "readable by others:\n{}",
        found.join("\n")
    );
    // The sockets are the owner's alone too.
    assert_eq!(
        mode_of(&home.root.join("var/run/supervisor.sock")) & 0o077,
        0
    );
    assert_eq!(mode_of(&home.root.join("var/run/haproxy.sock")) & 0o077, 0);
    // The scripts and the binary stay runnable.
    for program in [
        "bin/sarge",
        "bin/supervisord",
        "bin/supervisorctl",
        "opt/sarge",
    ] {
        assert_eq!(
            mode_of(&home.root.join(program)) & 0o700,
            0o700,
            "{program}"
        );
    }

    // A home from an older sarge: everything 0644 and 0755. `init` makes
    // it private again and says what it did.
    let id = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    let instance_dir = format!("var/instances/{id}");
    let instance_log = format!("var/log/{id}.log");
    let loosened = [
        ("etc", 0o755),
        ("etc/sarge.yaml", 0o644),
        ("var", 0o755),
        ("var/log", 0o755),
        ("var/instances", 0o755),
        (instance_dir.as_str(), 0o755),
        (instance_log.as_str(), 0o644),
    ];
    for (path, mode) in &loosened {
        std::fs::set_permissions(home.root.join(path), PermissionsExt::from_mode(*mode)).unwrap();
    }
    let out = home.sarge(&["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("made private (group and others can no longer read them): 7 files and folders under etc/ and var/"),
        "{}",
        stderr(&out)
    );
    let mut found = Vec::new();
    open_to_others(&home.root.join("etc"), &mut found);
    open_to_others(&home.root.join("var"), &mut found);
    assert!(
        found.is_empty(),
        "still readable by others:\n{}",
        found.join("\n")
    );
    // Nothing to fix the second time, and nothing said.
    let out = home.sarge(&["init"]);
    assert!(!stderr(&out).contains("made private"), "{}", stderr(&out));
    // The app still serves after its home was fixed.
    assert_eq!(http_get(home.stable, "/").unwrap().0, 200);
}
