//! One process-name rule, from `sarge.yaml` to haproxy: a name the config
//! accepts deploys and routes, and a name that could not deploy is refused
//! when the config is read, naming the key and the limit.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// The longest process name sarge takes.
const LIMIT: usize = sarge_core::ProcessName::MAX_LEN;

/// A name of `len` characters that uses the whole character set.
fn name_of_len(len: usize) -> String {
    let stem = "w9_.-";
    let mut name = stem.to_owned();
    name.extend(std::iter::repeat_n('x', len - stem.len()));
    name
}

/// `sarge.yaml` for `home` with one stable address, for `process`.
fn write_config(home: &TestHome, process: &str) {
    home.write_config_with_port_map(
        &format!("  {process}: 127.0.0.1:{}", home.stable),
        "  {}",
        "",
    );
}

#[test]
fn a_port_map_key_over_the_limit_is_refused_by_the_config_naming_key_and_limit() {
    let mut home = TestHome::initialised("name-over");
    write_config(&home, "web");
    home.start_supervisord();
    let long = name_of_len(LIMIT + 1);
    write_config(&home, &long);
    let app = app_with(
        "name-over",
        &[("Procfile", &format!("{long}: python app.py $PORT\n"))],
    );
    for (command, out) in [
        ("list", home.sarge(&["list"])),
        ("deploy", home.deploy(&app, &long)),
    ] {
        let message = stderr(&out);
        assert!(!out.status.success(), "{command} accepted {long:?}");
        assert!(
            message.contains(&format!("port_map: {long:?}"))
                && message.contains(&format!("1 to {LIMIT} characters")),
            "{command} does not name the key and the limit:\n{message}"
        );
    }
}

#[test]
fn a_process_name_at_the_limit_deploys_and_answers_on_its_stable_port() {
    let mut home = TestHome::initialised("name-limit");
    let name = name_of_len(LIMIT);
    write_config(&home, &name);
    home.start_supervisord();
    let app = app_with(
        "name-limit",
        &[("Procfile", &format!("{name}: python app.py $PORT\n"))],
    );

    home.deploy_ok(&app, &name);

    let (status, body) = http_get(home.stable, "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "hello web!\n"));
    let instance = home.instance_of(&name);
    let id = instance["id"].as_str().unwrap();
    assert!(id.starts_with(&format!("{name}-")), "{id}");
    assert!(home.root.join(format!("var/log/{id}.log")).exists());
}

#[test]
fn a_bad_name_or_the_release_command_on_the_command_line_is_refused_before_the_upload_is_read() {
    // No supervisord, and a "tarball" that is not one: the names are
    // refused before either is looked at.
    let home = TestHome::initialised("name-cli");
    write_config(&home, "web");
    let not_a_tarball = hello_app().join("Procfile");
    let before = home.snapshot();
    let long = name_of_len(LIMIT + 1);
    for (name, expected) in [
        (
            "web/x",
            "\"web/x\" is not a valid process name: it contains '/'".to_owned(),
        ),
        (
            long.as_str(),
            format!("{long:?} is not a valid process name: it is 41 characters long"),
        ),
        (
            "release",
            "\"release\" is the Procfile's release command, not a process to deploy".to_owned(),
        ),
    ] {
        for prepare in [false, true] {
            let mut args = vec!["deploy"];
            if prepare {
                args.push("--prepare");
            }
            args.extend([not_a_tarball.to_str().unwrap(), name]);
            let out = home.sarge(&args);
            let message = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{name} {args:?}:\n{message}");
            assert!(
                message.starts_with(&format!("error: {expected}")),
                "{name} {args:?}:\n{message}"
            );
            assert_eq!(message.lines().count(), 1, "{name}:\n{message}");
        }
    }
    assert_unchanged(&home, &before, "refused names");
}
