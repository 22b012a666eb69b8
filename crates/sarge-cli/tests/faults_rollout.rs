#![allow(clippy::unwrap_used)]
//! Faults in the rollout itself: haproxy reloads, a haproxy binary that
//! cannot run, failed state writes around the commit point, and a
//! supervisord killed under its programs. Each case checks the end state a
//! user would: what answers on the stable addresses, what `list` says, and
//! that the next deploy works.

mod common;

use common::*;

/// sarge.yaml with `port_map` as given (the body of the key).
fn write_config(home: &TestHome, port_map: &str, message: &str, extra: &str) {
    let text = format!(
        "port_range: [{first}, {last}]\nport_map:\n{port_map}\npython_dist: {dist}\nready_timeout: 20\ndrain_timeout: 5\nenv:\n  MESSAGE: {message}\n{extra}\n",
        first = home.first_port,
        last = home.last_port,
        dist = test_wheels().display(),
    );
    std::fs::write(home.config_path(), text).unwrap();
}

#[test]
fn deploys_that_reload_haproxy_report_success_only_when_every_stable_address_answers() {
    let home = TestHome::new("reload", "  MESSAGE: v0");
    let (web, api) = (home.stable, home.stable + 1);
    let maps = [
        format!("  web: 127.0.0.1:{web}"),
        format!("  web: \"*:{web}\""),
        format!("  web: \"*:{web}\"\n  api: 127.0.0.1:{api}"),
        format!("  web: 127.0.0.1:{web}\n  api: 127.0.0.1:{api}"),
        format!("  web: 127.0.0.1:{web}"),
    ];
    for round in 0..20 {
        let map = &maps[round % maps.len()];
        let message = format!("v{round}");
        write_config(&home, map, &message, "");
        let out = home.deploy(&hello_app(), "web");
        assert!(
            out.status.success(),
            "round {round} ({map}): deploy failed:\n{}",
            stderr(&out)
        );
        // Right after the deploy says so, the stable address serves the
        // new instance, and a route without an instance answers haproxy's 503.
        let answer = http_get(web, "/");
        assert!(
            matches!(&answer, Ok((200, body)) if *body == format!("{message}\n")),
            "round {round} ({map}): web answered {answer:?} after:\n{}",
            stderr(&out)
        );
        if map.contains("api") {
            let answer = http_get(api, "/");
            assert!(
                matches!(answer, Ok((503, _))),
                "round {round} ({map}): api answered {answer:?}"
            );
        } else {
            assert!(
                http_get(api, "/").is_err(),
                "round {round} ({map}): api still answers after its route was removed"
            );
        }
    }
}
