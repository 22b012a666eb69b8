//! Redeploys drop nothing: under continuous load, with requests in flight,
//! and gated by health checks. Asserts failures, never timings.

#![allow(clippy::unwrap_used)]

mod common;

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

#[test]
fn the_old_instance_finishes_open_requests_before_it_stops() {
    let home = TestHome::new("drain", "  MESSAGE: hi");
    let app = slow_app("drain");
    home.deploy_ok(&app, "web");
    let stable = home.stable;
    let slow = std::thread::spawn(move || http_get(stable, "/slow"));
    std::thread::sleep(Duration::from_millis(300));
    let progress = home.deploy_ok(&app, "web");
    assert_eq!(
        slow.join().unwrap().unwrap(),
        (200, "slow done\n".to_owned())
    );
    // The deploy waited for the open request before stopping the old one.
    let drain = progress
        .lines()
        .find(|line| line.starts_with("-----> drain"))
        .unwrap();
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
    for step in [
        "unpack",
        "procfile",
        "virtualenv",
        "start",
        "ready",
        "switch",
        "drain",
        "cleanup",
    ] {
        let line = progress
            .lines()
            .find(|line| line.starts_with(&format!("-----> {step} ")))
            .unwrap_or_else(|| panic!("no {step} step in:\n{progress}"));
        let millis = line.split_whitespace().nth(2).unwrap();
        assert!(
            millis.parse::<f64>().is_ok(),
            "{step} has no duration: {line}"
        );
    }
    assert!(progress.contains("reused"), "{progress}");
}
