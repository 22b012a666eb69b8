#![allow(clippy::unwrap_used)]
//! `sarge scale` end to end: instances added to and taken out of haproxy's
//! round-robin at runtime, deploys and rollbacks at scale, each with no
//! failed request, and every bad argument refused with nothing changed.

mod common;

use std::collections::BTreeSet;

use common::*;

/// The hello app, answering `/` with the port it listens on, so a client
/// of the stable address can tell the instances apart.
fn port_app(name: &str) -> std::path::PathBuf {
    let app = std::fs::read_to_string(hello_app().join("app.py"))
        .unwrap()
        .replace(
            "return os.environ.get(\"MESSAGE\", \"hello web!\") + \"\\n\"",
            "return os.environ[\"PORT\"] + \"\\n\"",
        );
    assert!(app.contains("os.environ[\"PORT\"] + "), "app.py changed");
    app_with(name, &[("app.py", &app)])
}

/// The ports of the listed `web` instances.
fn web_ports(home: &TestHome) -> BTreeSet<String> {
    home.instances()
        .iter()
        .filter(|instance| instance["process"] == "web")
        .map(|instance| instance["port"].to_string())
        .collect()
}

/// The ports that answer on the stable address over `tries` new connections.
fn answering_ports(home: &TestHome, tries: usize) -> BTreeSet<String> {
    (0..tries)
        .map(|_| {
            let (status, body) = http_get(home.stable, "/").unwrap();
            assert_eq!(status, 200, "{body}");
            body.trim().to_owned()
        })
        .collect()
}

fn scale(home: &TestHome, arg: &str) -> String {
    let load = Load::start(home.stable);
    let out = home.sarge(&["scale", arg]);
    let (fresh, kept) = load.finish();
    assert!(out.status.success(), "scale {arg} failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("scaled {arg} as release")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fresh.failed + kept.failed,
        0,
        "scale {arg}: {fresh:?} {kept:?}"
    );
    assert!(fresh.served > 0 && kept.served > 0, "scale {arg}: no load");
    stderr(&out)
}

#[test]
fn scale_up_to_three_and_down_to_one_with_no_failed_request() {
    let home = TestHome::new("scale-updown", "");
    let app = port_app("scale-updown");
    home.deploy_ok(&app, "web");
    let first = web_ports(&home);
    assert_eq!(first.len(), 1);

    let said = scale(&home, "web=3");
    assert!(said.starts_with("Scaling web from 1 to 3\n"), "{said}");
    let ports = web_ports(&home);
    assert_eq!(ports.len(), 3, "{:?}", home.instances());
    // The first instance kept running; requests reach every instance.
    assert!(ports.is_superset(&first));
    assert_eq!(answering_ports(&home, 12), ports);
    for instance in home.instances() {
        assert_eq!(instance["state"], "running", "{instance}");
        assert_eq!(instance["routed"], true, "{instance}");
    }
    let release = &home.releases()[0];
    assert_eq!(release["description"], "scale web=3");
    assert_eq!(release["processes"]["web"], 3);
    // Each instance is its own supervisord program with its own port.
    let config = std::fs::read_to_string(home.root.join("etc/haproxy.cfg")).unwrap();
    assert_eq!(config.matches("    server web-").count(), 3, "{config}");

    // A log source per instance.
    let out = home.sarge(&["logs", "-n", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for label in ["web.1 |", "web.2 |", "web.3 |"] {
        assert!(stdout(&out).contains(label), "{label}: {}", stdout(&out));
    }

    let said = scale(&home, "web=1");
    assert!(said.starts_with("Scaling web from 3 to 1\n"), "{said}");
    let ports = web_ports(&home);
    assert_eq!(ports, first, "scaling down keeps the oldest instance");
    assert_eq!(answering_ports(&home, 6), first);
    let config = std::fs::read_to_string(home.root.join("etc/haproxy.cfg")).unwrap();
    assert_eq!(config.matches("    server web-").count(), 1, "{config}");
    assert_eq!(home.releases()[0]["processes"]["web"], 1);
}

#[test]
fn a_deploy_and_a_rollback_at_scale_three_keep_three_serving() {
    let home = TestHome::new("scale-deploy", "");
    let app = port_app("scale-deploy");
    home.deploy_ok(&app, "web");
    scale(&home, "web=3");
    let before = web_ports(&home);

    // A deploy keeps the count and replaces every instance.
    let load = Load::start(home.stable);
    let out = home.deploy(&app, "web");
    let (fresh, kept) = load.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fresh.failed + kept.failed, 0, "{fresh:?} {kept:?}");
    let after = web_ports(&home);
    assert_eq!(after.len(), 3);
    assert!(after.is_disjoint(&before), "{before:?} {after:?}");
    assert_eq!(answering_ports(&home, 12), after);
    assert_eq!(home.releases()[0]["processes"]["web"], 3);

    // A rollback to the release before the scale keeps today's count.
    let v1 = home.releases().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let load = Load::start(home.stable);
    let out = home.sarge(&["rollback", &v1]);
    let (fresh, kept) = load.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fresh.failed + kept.failed, 0, "{fresh:?} {kept:?}");
    assert_eq!(web_ports(&home).len(), 3);
    assert_eq!(home.releases()[0]["processes"]["web"], 3);

    // Scaled to 0 the process stays in the release, and comes back.
    let out = home.sarge(&["scale", "web=0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(web_ports(&home).is_empty());
    assert_eq!(home.releases()[0]["processes"]["web"], 0);
    assert_eq!(http_get(home.stable, "/").unwrap().0, 503);
    scale_from_zero(&home);
}

fn scale_from_zero(home: &TestHome) {
    let out = home.sarge(&["scale", "web=2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ports = web_ports(home);
    assert_eq!(ports.len(), 2);
    assert_eq!(answering_ports(home, 8), ports);
}

#[test]
fn bad_scale_arguments_change_nothing() {
    let mut home = TestHome::new("scale-bad", "");
    home.deploy_ok(&hello_app(), "web");
    let before = home.snapshot();
    for (arg, expected) in [
        (
            "web=x",
            "\"web=x\": the count of web must be a whole number",
        ),
        (
            "web=-1",
            "\"web=-1\": the count of web must be a whole number",
        ),
        ("web", "\"web\" is not PROCESS=COUNT"),
        ("api=2", "has no process \"api\""),
    ] {
        let output = home.sarge(&["scale", arg]);
        assert_refused(
            &home,
            &before,
            Refusal {
                case: arg,
                output,
                expected,
            },
        );
    }
    // More instances than port_range has free ports.
    let ports = home.last_port - home.first_port + 1;
    let arg = format!("web={}", ports + 1);
    let output = home.sarge(&["scale", &arg]);
    let expected = format!(
        "web need {ports} more port(s) but port_range {}-{} has {} free",
        home.first_port,
        home.last_port,
        ports - 1
    );
    assert_refused(
        &home,
        &before,
        Refusal {
            case: &arg,
            output,
            expected: &expected,
        },
    );
    assert_eq!(http_get(home.stable, "/").unwrap().0, 200);
    home.stop_supervisord();
}

#[test]
fn destroying_one_instance_of_a_scaled_process_leaves_the_others_serving() {
    let home = TestHome::new("scale-destroy", "");
    let app = port_app("scale-destroy");
    home.deploy_ok(&app, "web");
    scale(&home, "web=2");
    let ports = web_ports(&home);
    // `list` shows a process's instances in order: web.1, web.2.
    let second = home.instances()[1]["id"].as_str().unwrap().to_owned();
    let load = Load::start(home.stable);
    let out = home.sarge(&["destroy", "--yes", "web.2"]);
    let (fresh, kept) = load.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fresh.failed + kept.failed, 0, "{fresh:?} {kept:?}");
    let left = web_ports(&home);
    assert_eq!(left.len(), 1);
    assert!(left.is_subset(&ports));
    assert!(home
        .instances()
        .iter()
        .all(|instance| instance["id"] != second.as_str()));
    assert_eq!(answering_ports(&home, 4), left);
    let config = std::fs::read_to_string(home.root.join("etc/haproxy.cfg")).unwrap();
    assert!(!config.contains(&second), "{config}");
}
