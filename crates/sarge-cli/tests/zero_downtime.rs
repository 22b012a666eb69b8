//! Redeploys drop nothing: under continuous load, with requests in flight,
//! and gated by health checks. Asserts failures, never timings.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn twenty_redeploys_under_load_fail_no_request() {
    let home = TestHome::new("twenty", "  MESSAGE: v0");
    home.deploy_ok(&hello_app(), "web");
    let load = Load::start(home.stable);
    let mut slowest_switch = Duration::ZERO;
    for round in 1..=20 {
        home.write_config(&format!("  MESSAGE: v{round}"), "");
        home.deploy_ok(&hello_app(), "web");
        let returned = Instant::now();
        let expected = format!("v{round}\n");
        loop {
            if let Ok((200, body)) = http_get(home.stable, "/") {
                if body == expected {
                    break;
                }
            }
            assert!(
                returned.elapsed() < Duration::from_secs(1),
                "round {round}: the new version was not served within 1 s of deploy returning"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        slowest_switch = slowest_switch.max(returned.elapsed());
    }
    let (fresh, kept) = load.finish();
    eprintln!(
        "served {} new-connection and {} keep-alive requests; slowest new version after return: {slowest_switch:?}",
        fresh.served, kept.served
    );
    assert_eq!(
        fresh.failed, 0,
        "new-connection failures: {:?}",
        fresh.failures
    );
    assert_eq!(kept.failed, 0, "keep-alive failures: {:?}", kept.failures);
    assert!(fresh.served > 20 && kept.served > 20);
    assert_eq!(home.instances().len(), 1);
    assert_eq!(
        std::fs::read_dir(home.root.join("var/instances"))
            .unwrap()
            .count(),
        1
    );
}

/// The hello app with a `/slow` page that takes 3 s to answer.
fn slow_app(name: &str) -> std::path::PathBuf {
    let app = app_copy(name);
    let source = std::fs::read_to_string(app.join("app.py")).unwrap().replace(
        "@app.route(\"/up\")",
        "@app.route(\"/slow\")\ndef slow():\n    import time\n    time.sleep(3)\n    return \"slow done\\n\"\n\n\n@app.route(\"/up\")",
    );
    std::fs::write(app.join("app.py"), source).unwrap();
    app
}

/// A redeploy made while a slow request was open on the old instance.
struct SlowRedeploy {
    /// The old instance's id.
    old: String,
    /// The slow request, still open when the redeploy returned (or not).
    slow: std::thread::JoinHandle<std::io::Result<(u16, String)>>,
    /// The redeploy's stderr.
    progress: String,
    /// How long the redeploy took.
    took: Duration,
}

/// Deploys the slow app, opens a slow request on its instance, then
/// redeploys it.
fn redeploy_with_a_slow_request_open(home: &TestHome, app: &std::path::Path) -> SlowRedeploy {
    home.deploy_ok(app, "web");
    let old = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    let stable = home.stable;
    let slow = std::thread::spawn(move || http_get(stable, "/slow"));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let out = run_with_stdin(home.command(&["deploy", "-", "web"]), &tar_of(app));
    let took = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    SlowRedeploy {
        old,
        slow,
        progress: stderr(&out),
        took,
    }
}

#[test]
fn the_old_instance_finishes_open_requests_before_it_stops() {
    let home = TestHome::new("drain", "  MESSAGE: hi");
    let app = slow_app("drain");
    let SlowRedeploy {
        old,
        slow,
        progress,
        took: returned,
    } = redeploy_with_a_slow_request_open(&home, &app);
    // The deploy returned once the new instance served, not after the
    // slow request: the old instance is retired in the background.
    assert!(
        progress.contains("-----> retire") && progress.contains(&old),
        "{progress}"
    );
    assert!(
        !slow.is_finished(),
        "the slow request ended before the deploy returned ({returned:?})"
    );
    assert!(home.root.join("var/instances").join(&old).exists());
    assert_eq!(
        slow.join().unwrap().unwrap(),
        (200, "slow done\n".to_owned())
    );
    // The next command waits for the retirement; then the old one is gone.
    home.wait_unlocked();
    assert!(!home.root.join("var/instances").join(&old).exists());
    // It waited for the open request before stopping the old one.
    let log = std::fs::read_to_string(home.root.join("var/log/sarge-retire.log")).unwrap();
    let drain = log
        .lines()
        .find(|line| line.starts_with("-----> drain"))
        .unwrap_or_else(|| panic!("no drain in the retirement's log:\n{log}"));
    let waited: u64 = drain
        .split(" after ")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches(" ms").parse().ok())
        .unwrap_or_else(|| panic!("no drain time in {drain:?}"));
    // Had the old instance stopped without waiting, the slow request
    // above would have failed; the drain step says it waited.
    assert!(waited >= 100, "drained after only {waited} ms: {drain}");
    let _ = std::fs::remove_dir_all(app);
}

/// The pid of the process retiring `instance` (`sarge retire ... ID`).
fn retirer_of(instance: &str) -> Option<u32> {
    std::fs::read_dir("/proc").unwrap().find_map(|entry| {
        let entry = entry.ok()?;
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
        (args.contains(&&b"retire"[..]) && args.contains(&instance.as_bytes())).then_some(pid)
    })
}

#[test]
fn a_retirement_killed_midway_is_finished_by_the_next_command() {
    let home = TestHome::new("retirekill", "  MESSAGE: hi");
    let app = slow_app("retirekill");
    let SlowRedeploy { old, slow, .. } = redeploy_with_a_slow_request_open(&home, &app);
    // The retiring process waits for the slow request: SIGKILL it there.
    // (Found first: the harness's commands wait for it to finish.)
    let pid = retirer_of(&old).expect("no process retires the old instance");
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    // Its death released the home lock; the old instance is a leftover
    // that `list` does not show, still serving the slow request.
    home.wait_unlocked();
    assert!(home.root.join("var/instances").join(&old).exists());
    let new = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    let listed: Vec<String> = home
        .instances()
        .iter()
        .map(|instance| instance["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, [new]);
    // The next command finishes the retirement: it drains, then removes.
    let out = home.sarge(&["recover"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        slow.join().unwrap().unwrap(),
        (200, "slow done\n".to_owned())
    );
    assert!(!home.root.join("var/instances").join(&old).exists());
    assert!(!home
        .root
        .join(format!("etc/supervisor.d/{old}.conf"))
        .exists());
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "hi\n".to_owned())
    );
    let _ = std::fs::remove_dir_all(app);
}

#[test]
fn a_health_check_gates_the_switch() {
    let home = TestHome::new("health", "  MESSAGE: hi");
    home.write_config("  MESSAGE: hi", "healthcheck:\n  web: {path: /up}");
    let progress = home.deploy_ok(&hello_app(), "web");
    assert!(progress.contains("-----> ready"), "{progress}");
    assert_eq!(http_get(home.stable, "/").unwrap().0, 200);

    home.write_config(
        "  MESSAGE: hi",
        "healthcheck:\n  web: {path: /missing, timeout: 2}",
    );
    let before = home.snapshot();
    let out = home.deploy(&hello_app(), "web");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("was not ready within 2 s (GET /missing answered 404)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "hi\n".to_owned())
    );
    assert_unchanged(&home, &before, "after the refused deploy");
}

#[test]
fn every_step_reports_its_duration() {
    let home = TestHome::new("steps", "  MESSAGE: hi");
    home.deploy_ok(&hello_app(), "web");
    let progress = home.deploy_ok(&hello_app(), "web");
    // What the deploy did, then what the process it left did to retire
    // the old instance (the harness waited for it).
    let retirement = std::fs::read_to_string(home.root.join("var/log/sarge-retire.log")).unwrap();
    for (output, steps) in [
        (
            &progress,
            &[
                "unpack",
                "procfile",
                "virtualenv",
                "start",
                "ready",
                "switch",
                "commit",
                "retire",
            ][..],
        ),
        (&retirement, &["drain", "cleanup"][..]),
    ] {
        for step in steps {
            let line = output
                .lines()
                .find(|line| line.starts_with(&format!("-----> {step} ")))
                .unwrap_or_else(|| panic!("no {step} step in:\n{output}"));
            let millis = line.split_whitespace().nth(2).unwrap();
            assert!(
                millis.parse::<f64>().is_ok(),
                "{step} has no duration: {line}"
            );
        }
    }
    assert!(progress.contains("reused"), "{progress}");
}

/// Starts a deploy of `app` and SIGKILLs it as soon as it reports the
/// switch: the new instance takes the traffic, the old one is in
/// maintenance, and `current.json` still names the old one (the commit
/// comes next). The new instance's port, or `None` if the deploy got past
/// the commit before the kill.
fn deploy_killed_after_the_switch(home: &TestHome, app: &std::path::Path) -> Option<u16> {
    let before = home.instance_of("web")["id"].clone();
    let (seen, _) = home.killed_at_line(&["deploy", "-", "web"], &tar_of(app), "-----> switch ", 1);
    let port = seen
        .iter()
        .find_map(|line| {
            line.strip_prefix("-----> start")?
                .rsplit_once("port ")?
                .1
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no port in {seen:?}"));
    (home.instance_of("web")["id"] == before).then_some(port)
}

#[test]
fn recovery_drains_the_instance_a_killed_deploy_switched_to() {
    let home = TestHome::new("killdrain", "  MESSAGE: hi");
    // The slow page says which instance (by port) answered it: haproxy
    // retries a request whose server closed without answering on another
    // server, so only the port shows the request was not cut and replayed.
    let app = slow_app("killdrain");
    let source = std::fs::read_to_string(app.join("app.py")).unwrap();
    let source = source.replace(
        "return \"slow done\\n\"",
        "return \"slow done on \" + sys.argv[1] + \"\\n\"",
    );
    assert!(source.contains("slow done on"), "{source}");
    std::fs::write(app.join("app.py"), source).unwrap();
    home.deploy_ok(&app, "web");
    let stable = home.stable;
    let load = Load::start(stable);
    // The kill must land between the switch and the commit, a window of a
    // few milliseconds; one that lands after the commit leaves nothing to
    // recover, so the deploy is tried again.
    let abandoned = (0..5)
        .find_map(|_| {
            let port = deploy_killed_after_the_switch(&home, &app);
            if port.is_none() {
                let out = home.sarge(&["recover"]);
                assert!(out.status.success(), "recover failed: {}", stderr(&out));
            }
            port
        })
        .expect("5 kills after the switch all landed after the commit");
    // The abandoned instance serves the stable address; a slow request
    // goes to it and is still open when recovery puts the committed
    // instance back and stops the abandoned one.
    let slow = std::thread::spawn(move || http_get(stable, "/slow"));
    std::thread::sleep(Duration::from_millis(300));
    let out = home.sarge(&["recover"]);
    let progress = stderr(&out);
    assert!(out.status.success(), "recover failed: {progress}");
    assert_eq!(
        slow.join().unwrap().unwrap(),
        (200, format!("slow done on {abandoned}\n")),
        "the slow request on the abandoned instance was cut; recover said:\n{progress}"
    );
    let (fresh, kept) = load.finish();
    for count in [&fresh, &kept] {
        assert!(
            count.failed == 0 && count.served > 0,
            "{} of {} requests failed across the kill and the recovery (first: {:?}); recover said:\n{progress}",
            count.failed,
            count.failed + count.served,
            count.failures.first(),
        );
    }
    assert_eq!(home.instances().len(), 1);
    let dirs = std::fs::read_dir(home.root.join("var/instances"))
        .unwrap()
        .count();
    assert_eq!(dirs, 1, "the abandoned instance is still on disk");
    let _ = std::fs::remove_dir_all(app);
}
