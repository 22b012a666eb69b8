#![allow(clippy::unwrap_used)]
//! Day-two operations end to end: env changes and restarts, each a new
//! release rolled out with no failed request.

mod common;

use common::*;

#[test]
fn config_set_and_unset_roll_out_the_env_with_no_failed_request() {
    let home = TestHome::new("config", "  MESSAGE: from yaml\n  KEEP: kept");
    home.deploy_ok(&hello_app(), "web");

    // Values reach the app byte for byte, from a file only the owner reads.
    let tricky = "new 100% ; #x 'q' \"d\" $HOME \\ ünï";
    let load = Load::start(home.stable);
    let out = home.sarge(&["config", "set", &format!("MESSAGE={tricky}"), "EXTRA=1"]);
    let (fresh, kept) = load.finish();
    assert!(out.status.success(), "config set failed: {}", stderr(&out));
    assert!(!stderr(&out).contains(tricky), "a value was printed");
    assert_eq!(fresh.failed + kept.failed, 0, "{fresh:?} {kept:?}");
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, format!("{tricky}\n"))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.root.join("etc/env.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = home.sarge(&["config", "get", "MESSAGE"]);
    assert_eq!(stdout(&out), format!("{tricky}\n"));
    let out = home.sarge(&["config"]);
    assert_eq!(
        stdout(&out),
        format!("EXTRA=1\nKEEP=kept\nMESSAGE={tricky}\n")
    );
    let out = home.sarge(&["config", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["env"]["EXTRA"], "1");
    assert_eq!(
        home.releases()[0]["description"],
        "config set MESSAGE, EXTRA"
    );

    // Unset falls back to nothing, even for a name sarge.yaml sets.
    let out = home.sarge(&["config", "unset", "MESSAGE"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(http_get(home.stable, "/").unwrap().1, "hello web!\n");
    let out = home.sarge(&["config", "get", "MESSAGE"]);
    assert!(!out.status.success());

    // --no-restart records it for the next release only.
    let before = home.instance_of("web")["id"].clone();
    let out = home.sarge(&["config", "set", "--no-restart", "MESSAGE=later"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(home.instance_of("web")["id"], before);
    assert_eq!(http_get(home.stable, "/").unwrap().1, "hello web!\n");
    home.deploy_ok(&hello_app(), "web");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "later\n");

    // Bad names and arguments change nothing.
    let snapshot = home.snapshot();
    for (args, says) in [
        (
            vec!["config", "set", "1X=a"],
            "\"1X\" cannot be an env name: it starts with a digit",
        ),
        (
            vec!["config", "set", "A-B=a"],
            "\"A-B\" cannot be an env name",
        ),
        (
            vec!["config", "set", "=a"],
            "\"\" cannot be an env name: it is empty",
        ),
        (
            vec!["config", "set", "PORT=1"],
            "\"PORT\" cannot be an env name: it is set by sarge",
        ),
        (
            vec!["config", "set", "NOEQUALS"],
            "\"NOEQUALS\" is not NAME=VALUE",
        ),
        (
            vec!["config", "unset", "A B"],
            "\"A B\" cannot be an env name",
        ),
    ] {
        let out = home.sarge(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert_unchanged(&home, &snapshot, &format!("{args:?}"));
    }
}

#[test]
fn restart_replaces_instances_with_no_failed_request() {
    let home = TestHome::new("restart", "  MESSAGE: same");
    home.deploy_ok(&hello_app(), "web");
    let before = home.instance_of("web")["id"].clone();
    let load = Load::start(home.stable);
    let out = home.sarge(&["restart"]);
    let (fresh, kept) = load.finish();
    assert!(out.status.success(), "restart failed: {}", stderr(&out));
    assert!(!stderr(&out).contains("installed"), "{}", stderr(&out));
    assert_eq!(fresh.failed + kept.failed, 0, "{fresh:?} {kept:?}");
    let after = home.instance_of("web");
    assert_ne!(after["id"], before);
    assert_eq!(after["release"], "v2");
    // list says what runs and what haproxy routes, asked of the live worker.
    assert_eq!(after["routed"], true, "{after}");
    assert!(after["pid"].as_u64().unwrap() > 0, "{after}");
    assert!(after["uptime"].as_u64().unwrap() < 60, "{after}");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "same\n");
    assert_eq!(home.releases()[0]["description"], "restart");

    let out = home.sarge(&["restart", "nosuch"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("release v2 has no process \"nosuch\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn logs_print_the_last_lines_and_follow_across_a_deploy() {
    use std::io::BufRead;
    let home = TestHome::new("logs", "  MESSAGE: hi");
    home.deploy_ok(&hello_app(), "web");
    for _ in 0..3 {
        http_get(home.stable, "/before").unwrap();
    }
    let mut last = String::new();
    wait_for(
        std::time::Duration::from_secs(5),
        || {
            last = stdout(&home.sarge(&["logs", "-n", "2"]));
            last.contains("/before")
        },
        "the requests in the log",
    );
    let lines: Vec<&str> = last.lines().collect();
    assert_eq!(lines.len(), 2, "{last}");
    assert!(
        lines.iter().all(|line| line.starts_with("web.1 | ")),
        "{last}"
    );

    // Following goes on across a deploy: the new instance's output comes
    // in the same stream.
    let mut follower = home
        .command(&["logs", "-f", "-n", "0", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    let follower_out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(follower_out)
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    home.deploy_ok(&hello_app(), "web");
    http_get(home.stable, "/after-deploy").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|line: &String| line.contains("/after-deploy"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("logs -f did not show the new instance's request: {seen:?}"),
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        !seen.iter().any(|line| line.contains("/before")),
        "-n 0 printed old lines: {seen:?}"
    );
    assert!(
        seen.iter().all(|line| line.starts_with("web.1 | ")),
        "{seen:?}"
    );

    // The replaced instance is gone, but its release is kept: its lines
    // are still there under --release, and no longer in the current logs.
    let first = home.releases().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = home.sarge(&["logs", "--release", &first, "-n", "50"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("/before"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("/after-deploy"), "{}", stdout(&out));
    assert!(!stdout(&home.sarge(&["logs", "-n", "50"])).contains("/before"));
    let out = home.sarge(&["logs", "--release", "v99"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("v99"), "{}", stderr(&out));

    let out = home.sarge(&["logs", "nosuch"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no instance or process named \"nosuch\""),
        "{}",
        stderr(&out)
    );
}
