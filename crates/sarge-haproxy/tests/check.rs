//! Rendered configs must pass the real haproxy's own check.
#![allow(clippy::unwrap_used)]

mod common;

use camino::Utf8Path;
use common::{haproxy_bin, TempDir};
use sarge_haproxy::{check_config, Error, HaproxyConfig, Route, Server};

fn check_rendered(config: &HaproxyConfig) {
    config.validate().unwrap();
    let dir = TempDir::new("check");
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config.render()).unwrap();
    if let Err(err) = check_config(&haproxy_bin(), &path) {
        panic!("{err}\n--- config ---\n{}", config.render());
    }
}

fn config(routes: Vec<Route>) -> HaproxyConfig {
    HaproxyConfig {
        admin_socket: "/run/sarge-test/haproxy.sock".into(),
        routes,
    }
}

#[test]
fn haproxy_accepts_config_without_routes() {
    check_rendered(&config(vec![]));
}

#[test]
fn haproxy_accepts_route_with_nothing_deployed() {
    check_rendered(&config(vec![Route::new("web", "127.0.0.1:5000")]));
}

#[test]
fn haproxy_accepts_route_with_one_server() {
    let route = Route::new("web", "*:5000").with_servers([Server::new("web-0a1b2c", 8001)]);
    check_rendered(&config(vec![route]));
}

#[test]
fn haproxy_accepts_two_routes_with_ipv6_bind() {
    let web = Route::new("web", "127.0.0.1:5000").with_servers([
        Server::new("web-0a1b2c", 8001),
        Server::new("web-3d4e5f", 8002),
    ]);
    let worker = Route::new("worker", "[::1]:5001").with_servers([Server::new("worker-1", 8003)]);
    check_rendered(&config(vec![web, worker]));
}

#[test]
fn haproxy_accepts_quoted_socket_path_with_space_and_quote() {
    let cfg = HaproxyConfig {
        admin_socket: "/run/it's my dir/#haproxy.sock".into(),
        routes: vec![Route::new("web", "127.0.0.1:5000")],
    };
    check_rendered(&cfg);
}

#[test]
fn rejected_config_carries_haproxy_messages() {
    let dir = TempDir::new("reject");
    let path = dir.path().join("bad.cfg");
    std::fs::write(&path, "global\n    no-such-keyword\n").unwrap();
    match check_config(&haproxy_bin(), &path) {
        Err(Error::ConfigRejected { config, output }) => {
            assert_eq!(config, path);
            assert!(output.contains("no-such-keyword"), "{output}");
        }
        other => panic!("expected ConfigRejected, got {other:?}"),
    }
}

#[test]
fn missing_binary_is_named_and_called_not_found() {
    let err = check_config(
        Utf8Path::new("/nonexistent/haproxy"),
        Utf8Path::new("/dev/null"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "run haproxy binary /nonexistent/haproxy (not found; is haproxy installed?)"
    );
}

#[test]
fn write_checked_keeps_old_file_when_haproxy_rejects_new_one() {
    let dir = TempDir::new("write");
    let path = dir.path().join("haproxy.cfg");
    let good = config(vec![Route::new("web", "127.0.0.1:5000")]);
    good.write_checked(&path, &haproxy_bin()).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good.render());

    // Unvalidated on purpose: haproxy itself must catch it.
    let bad = config(vec![Route::new("web", "127.0.0.1:notaport")]);
    let err = bad.write_checked(&path, &haproxy_bin()).unwrap_err();
    assert!(matches!(err, Error::ConfigRejected { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good.render());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temp file left behind: {leftovers:?}");
}
