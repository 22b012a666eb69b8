#![allow(clippy::unwrap_used)]
//! The quickstart, end to end: the real `sarge` binary, real supervisord
//! and haproxy, and the hello app installed offline from real wheels.

mod common;

use common::*;

/// An env value that supervisord's config parser would mangle.
const TRICKY: &str = "hello sarge! 100% ; #not-a-comment 'single' \"double\" $HOME";

fn tricky_env() -> String {
    format!(
        "  MESSAGE: {}\n  DATABASE: \"postgresql://u:p%40w@localhost/db\"",
        serde_json::to_string(TRICKY).unwrap()
    )
}

#[test]
fn deploy_from_stdin_answers_on_the_stable_port_with_the_env_byte_for_byte() {
    let home = TestHome::new("stdin", &tricky_env());
    let progress = home.deploy_ok(&hello_app(), "web");
    for step in [
        "unpack",
        "procfile",
        "virtualenv",
        "start",
        "ready",
        "switch",
    ] {
        assert!(progress.contains(step), "no {step} step in:\n{progress}");
    }
    assert!(
        !progress.contains("p%40w"),
        "progress printed an env value:\n{progress}"
    );

    let (status, body) = http_get(home.stable, "/").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, format!("{TRICKY}\n").as_str())
    );

    // supervisord calls a process running once it has stayed up 1 s.
    wait_for(
        std::time::Duration::from_secs(5),
        || home.instance_of("web")["state"] == "running",
        "state running",
    );
    let instances = home.instances();
    assert_eq!(instances.len(), 1);
    let web = &instances[0];
    assert_eq!(web["process"], "web");
    let port = web["port"].as_u64().unwrap() as u16;
    assert!((home.first_port..=home.last_port).contains(&port));
    assert!(web["id"].as_str().unwrap().starts_with("web-"));
    assert!(web["created"].as_str().unwrap().ends_with('Z'));
    // The instance also answers on its own port.
    assert_eq!(http_get(port, "/").unwrap().0, 200);

    // Logs land under var/log; the env file is private.
    let id = web["id"].as_str().unwrap();
    assert!(home.root.join(format!("var/log/{id}.log")).exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(home.root.join(format!("var/instances/{id}/env.sh")))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let table = stdout(&home.sarge(&["list"]));
    assert!(table.contains(id) && table.contains("running"), "{table}");
}

#[test]
fn run_executes_in_the_instance_with_env_port_and_virtualenv() {
    let home = TestHome::new("run", &tricky_env());
    home.deploy_ok(&hello_app(), "web");
    let web = home.instance_of("web");
    let out = home.sarge(&[
        "run",
        "web",
        "bash",
        "-c",
        "printf '%s|%s|' \"$PORT\" \"$MESSAGE\"; python -c 'import flask, sys; print(sys.prefix)'; pwd; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with(&format!("{}|{TRICKY}|", web["port"])),
        "{text}"
    );
    assert!(
        first.contains("/var/venvs/"),
        "python is not the instance's venv: {text}"
    );
    assert!(lines.next().unwrap().ends_with("/app"), "{text}");

    // By instance id too.
    let out = home.sarge(&["run", web["id"].as_str().unwrap(), "true"]);
    assert!(out.status.success());

    // A console script of the virtualenv runs: its `#!` names where the
    // virtualenv is (uv built it in a staging folder, then it was moved).
    let out = home.sarge(&["run", "web", "flask", "--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Flask 3.1.3"), "{}", stdout(&out));
}

#[test]
fn redeploy_moves_to_a_new_port_while_the_stable_port_keeps_answering() {
    let home = TestHome::new("redeploy", "  MESSAGE: one");
    home.deploy_ok(&hello_app(), "web");
    let first = home.instance_of("web");

    let load = Load::start(home.stable);
    std::thread::sleep(std::time::Duration::from_millis(300));
    home.write_config("  MESSAGE: two", "");
    let progress = home.deploy_ok(&hello_app(), "web");
    assert!(
        progress.contains("reused"),
        "unchanged requirements were installed again:\n{progress}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (fresh, kept) = load.finish();

    let second = home.instance_of("web");
    assert_ne!(first["id"], second["id"]);
    assert_ne!(first["port"], second["port"]);
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "two\n".to_owned())
    );
    assert_eq!(home.instances().len(), 1);
    let old_dir = home
        .root
        .join("var/instances")
        .join(first["id"].as_str().unwrap());
    assert!(!old_dir.exists(), "old instance folder left behind");
    assert!(
        http_get(first["port"].as_u64().unwrap() as u16, "/").is_err(),
        "old instance still runs"
    );

    for (client, count) in [("new-connection", &fresh), ("keep-alive", &kept)] {
        assert_eq!(
            count.failed, 0,
            "{client} client failed: {:?}",
            count.failures
        );
        assert!(count.served > 0, "{client} client made no requests");
        assert_eq!(
            count.bodies.last().map(String::as_str),
            Some("two\n"),
            "{client}: {:?}",
            count.bodies
        );
    }
}

#[test]
fn a_second_process_type_does_not_disturb_the_first() {
    let home = TestHome::new("two", "  MESSAGE: both");
    let app = app_copy("two");
    std::fs::write(
        app.join("Procfile"),
        "web: python app.py $PORT\napi: python app.py $PORT\n",
    )
    .unwrap();
    home.deploy_ok(&app, "web");
    let web = home.instance_of("web");
    let load = Load::start(home.stable);
    home.deploy_ok(&app, "api");
    let (fresh, kept) = load.finish();
    assert_eq!(
        fresh.failed + kept.failed,
        0,
        "{:?} {:?}",
        fresh.failures,
        kept.failures
    );

    assert_eq!(home.instance_of("web")["id"], web["id"]);
    let api = home.instance_of("api");
    assert_ne!(api["port"], web["port"]);
    assert_eq!(http_get(home.stable, "/").unwrap().0, 200);
    assert_eq!(http_get(home.stable + 1, "/").unwrap().0, 200);
    assert_eq!(home.instances().len(), 2);
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn destroy_removes_the_instance_and_its_route() {
    let home = TestHome::new("destroy", "  MESSAGE: bye");
    home.deploy_ok(&hello_app(), "web");
    let web = home.instance_of("web");
    let out = home.sarge(&["destroy", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(home.instances().is_empty());
    let id = web["id"].as_str().unwrap();
    assert!(!home.root.join("var/instances").join(id).exists());
    assert!(!home
        .root
        .join(format!("etc/supervisor.d/{id}.conf"))
        .exists());
    // haproxy still listens but has nothing to route to.
    assert_eq!(http_get(home.stable, "/").unwrap().0, 503);
    // And the next deploy works.
    home.deploy_ok(&hello_app(), "web");
    assert_eq!(http_get(home.stable, "/").unwrap().0, 200);
}

#[test]
fn stop_and_start_a_process() {
    let home = TestHome::new("stopstart", "  MESSAGE: hi");
    home.deploy_ok(&hello_app(), "web");
    let out = home.sarge(&["stop", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(home.instance_of("web")["state"], "stopped");
    let out = home.sarge(&["start", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(
        std::time::Duration::from_secs(5),
        || home.instance_of("web")["state"] == "running",
        "state running",
    );
    let port = home.instance_of("web")["port"].as_u64().unwrap() as u16;
    wait_for(
        std::time::Duration::from_secs(10),
        || http_get(port, "/").is_ok(),
        "the app after start",
    );
}

#[test]
fn deploys_a_gzip_tarball_from_a_file() {
    let home = TestHome::new("gzip", "  MESSAGE: gz");
    let tarball = home.root.join("app.tar.gz.notaname");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' --exclude=__pycache__ -czf '{}' .",
            hello_app().display(),
            tarball.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let out = home.sarge(&["deploy", tarball.to_str().unwrap(), "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "gz\n".to_owned())
    );
}

#[test]
fn init_is_idempotent_and_keeps_the_config() {
    let home = TestHome::initialised("init");
    for path in [
        "bin/sarge",
        "bin/supervisord",
        "bin/supervisorctl",
        "dist",
        "etc/supervisord.conf",
        "etc/haproxy.cfg",
        "var/log",
        "var/run",
        "var/instances",
    ] {
        assert!(home.root.join(path).exists(), "init did not create {path}");
    }
    let default = std::fs::read_to_string(home.config_path()).unwrap();
    assert!(
        default.contains("port_range")
            && default.contains("port_map")
            && default.contains("web: 127.0.0.1:"),
        "{default}"
    );
    std::fs::write(home.config_path(), "port_range: [40010, 40099]\n").unwrap();
    let out = home.sarge(&["init"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("su "),
        "no boot line: {}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(home.config_path()).unwrap(),
        "port_range: [40010, 40099]\n"
    );

    // bin/sarge is sarge bound to this home (whose supervisord is not
    // started, which `list` says rather than guess what runs).
    let out = std::process::Command::new(home.root.join("bin/sarge"))
        .args(["list", "--json"])
        .env_remove("SARGE_HOME")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!(
            "supervisord is not running for {}",
            home.root.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_home_is_an_error() {
    let out = std::process::Command::new(SARGE)
        .arg("list")
        .env_remove("SARGE_HOME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: no sarge home: pass --home DIR or set SARGE_HOME\n"
    );
}

#[test]
fn an_app_that_exits_fails_the_deploy_and_the_old_one_keeps_serving() {
    let home = TestHome::new("exits", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    let before = home.snapshot();
    let app = app_copy("exits");
    std::fs::write(
        app.join("Procfile"),
        "web: echo 'boom: cannot start' >&2; exit 3\n",
    )
    .unwrap();
    let out = home.deploy(&app, "web");
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("error: instance web-") && message.contains("exited while starting"),
        "{message}"
    );
    assert!(
        message.contains("boom: cannot start"),
        "log tail missing: {message}"
    );
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "old\n".to_owned())
    );
    assert_unchanged(&home, &before, "after the refused deploy");
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn a_process_without_a_stable_address_runs_unrouted() {
    let home = TestHome::new("worker", "  MESSAGE: hi");
    let app = app_copy("worker");
    std::fs::write(
        app.join("Procfile"),
        "web: python app.py $PORT\nworker: python -c 'import time, flask; print(\"working\", flush=True); time.sleep(600)'\n",
    )
    .unwrap();
    home.deploy_ok(&app, "web");
    let web = home.instance_of("web");
    let progress = home.deploy_ok(&app, "worker");
    assert!(!progress.contains("-----> switch"), "{progress}");
    let worker = home.instance_of("worker");
    // Nothing listens on the port it was given: the progress says what is
    // true, that supervisord runs it, and claims no port.
    let id = worker["id"].as_str().unwrap();
    assert!(!progress.contains("answers on port"), "{progress}");
    assert!(
        progress.contains("-----> ready")
            && progress.contains(&format!("{id} is running under supervisord")),
        "{progress}"
    );
    assert_eq!(worker["state"], "running");
    assert_eq!(home.instance_of("web")["id"], web["id"]);
    assert_eq!(http_get(home.stable, "/").unwrap().0, 200);
    let log = std::fs::read_to_string(home.root.join(format!("var/log/{id}.log"))).unwrap();
    assert_eq!(log, "working\n");
    // Redeploying it replaces it.
    home.deploy_ok(&app, "worker");
    assert_ne!(home.instance_of("worker")["id"], worker["id"]);
    assert_eq!(home.instances().len(), 2);
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn a_new_stable_address_is_routed_after_a_reload_without_dropping_the_others() {
    let home = TestHome::new("newaddress", "  MESSAGE: hi");
    let app = app_copy("newaddress");
    std::fs::write(
        app.join("Procfile"),
        "web: python app.py $PORT\nadmin: python app.py $PORT\n",
    )
    .unwrap();
    home.deploy_ok(&app, "web");
    // A third stable address appears in port_map: haproxy reloads to bind it.
    home.write_config(
        "  MESSAGE: hi",
        &format!(
            "port_map:\n  web: 127.0.0.1:{}\n  admin: 127.0.0.1:{}",
            home.stable,
            home.stable + 2
        ),
    );
    let config = std::fs::read_to_string(home.config_path()).unwrap();
    // write_config put a port_map first; keep only the extra one.
    let config = config.replacen(
        &format!(
            "port_map:\n  web: 127.0.0.1:{}\n  api: 127.0.0.1:{}\n",
            home.stable,
            home.stable + 1
        ),
        "",
        1,
    );
    std::fs::write(home.config_path(), config).unwrap();
    let load = Load::start(home.stable);
    home.deploy_ok(&app, "admin");
    let (fresh, kept) = load.finish();
    assert_eq!(
        fresh.failed + kept.failed,
        0,
        "{:?} {:?}",
        fresh.failures,
        kept.failures
    );
    assert_eq!(http_get(home.stable + 2, "/").unwrap().0, 200);
    assert_eq!(http_get(home.stable, "/").unwrap().0, 200);
    let _ = std::fs::remove_dir_all(app);
}
