use std::collections::BTreeMap;
use std::time::Duration;

use camino::Utf8Path;

use super::*;

const ORIGIN: &str = "/h/etc/sarge.yaml";
const RANGE: &str = "port_range: [5010, 5099]\n";

fn parse(text: &str) -> Config {
    Config::from_yaml_str(text, Utf8Path::new(ORIGIN)).unwrap()
}

fn name(text: &str) -> ProcessName {
    text.parse().unwrap()
}

fn error(text: &str) -> String {
    Config::from_yaml_str(text, Utf8Path::new(ORIGIN))
        .unwrap_err()
        .to_string()
}

/// Parses `RANGE` followed by `rest` and returns the error message.
fn error_with_range(rest: &str) -> String {
    error(&format!("{RANGE}{rest}"))
}

fn address(host: Option<&str>, port: u16) -> StableAddress {
    StableAddress {
        host: host.map(str::to_owned),
        port,
    }
}

#[test]
fn minimal_file_gets_defaults() {
    let config = parse(RANGE);
    assert_eq!(
        config,
        Config {
            port_range: PortRange {
                first: 5010,
                last: 5099
            },
            port_map: BTreeMap::new(),
            env: BTreeMap::new(),
            haproxy_bin: "haproxy".into(),
            supervisord_bin: "supervisord".into(),
            supervisorctl_bin: "supervisorctl".into(),
            python_bin: "python3".into(),
            python_dist: None,
            healthcheck: BTreeMap::new(),
            ready_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            max_unpacked_bytes: 2147483648,
            log_max_bytes: 52428800,
            log_backups: 5,
            keep_releases: 5,
            release_timeout: Duration::from_secs(300),
            prepared_timeout: Duration::from_secs(600),
        }
    );
}

#[test]
fn log_rotation_keys_are_read_and_bounded() {
    let config = parse(&format!("{RANGE}log_max_bytes: 1048576\nlog_backups: 0\n"));
    assert_eq!((config.log_max_bytes, config.log_backups), (1048576, 0));
    for (text, key) in [
        ("log_max_bytes: 10", "log_max_bytes"),
        ("log_max_bytes: 10MB", "log_max_bytes"),
        ("log_backups: -1", "log_backups"),
        ("log_backups: 5000", "log_backups"),
    ] {
        let error = error_with_range(&format!("{text}\n"));
        assert!(error.contains(key), "{text}: {error}");
    }
}

#[test]
fn every_key_is_read() {
    let config = parse(
        r#"
port_range: [20010, 20099]
port_map:
  web: 127.0.0.1:20000
  api: "*:20001"
  admin: "[::1]:20002"
env:
  MESSAGE: "hello sarge!"
  DATABASE: postgresql://user:pw@localhost:5432/db_name
haproxy_bin: /usr/sbin/haproxy
supervisord_bin: /usr/bin/supervisord
supervisorctl_bin: /usr/bin/supervisorctl
python_bin: /usr/bin/python3.11
python_dist: /srv/dist
healthcheck:
  web: {path: /up, timeout: 5}
  api:
    path: /health?full=1
    host: app.example.com:8000
ready_timeout: 2.5
drain_timeout: 0
keep_releases: 3
release_timeout: 600
"#,
    );
    assert_eq!(
        config.port_range,
        PortRange {
            first: 20010,
            last: 20099
        }
    );
    assert_eq!(
        config.port_map,
        BTreeMap::from([
            (name("web"), address(Some("127.0.0.1"), 20000)),
            (name("api"), address(None, 20001)),
            (name("admin"), address(Some("::1"), 20002)),
        ])
    );
    assert_eq!(
        config.env,
        BTreeMap::from([
            ("MESSAGE".to_owned(), "hello sarge!".to_owned()),
            (
                "DATABASE".to_owned(),
                "postgresql://user:pw@localhost:5432/db_name".to_owned()
            ),
        ])
    );
    assert_eq!(config.haproxy_bin, "/usr/sbin/haproxy");
    assert_eq!(config.supervisord_bin, "/usr/bin/supervisord");
    assert_eq!(config.supervisorctl_bin, "/usr/bin/supervisorctl");
    assert_eq!(config.python_bin, "/usr/bin/python3.11");
    assert_eq!(
        config.python_dist.as_deref(),
        Some(Utf8Path::new("/srv/dist"))
    );
    assert_eq!(
        config.healthcheck,
        BTreeMap::from([
            (
                name("web"),
                HealthCheck {
                    path: "/up".to_owned(),
                    host: "localhost".to_owned(),
                    timeout: Some(Duration::from_secs(5))
                }
            ),
            (
                name("api"),
                HealthCheck {
                    path: "/health?full=1".to_owned(),
                    host: "app.example.com:8000".to_owned(),
                    timeout: None
                }
            ),
        ])
    );
    assert_eq!(config.ready_timeout, Duration::from_millis(2500));
    assert_eq!(config.drain_timeout, Duration::ZERO);
    assert_eq!(config.keep_releases, 3);
    assert_eq!(config.release_timeout, Duration::from_secs(600));
}

#[test]
fn env_scalars_become_their_text() {
    let config = parse(&format!(
        "{RANGE}env:\n  PORT: 5432\n  DEBUG: true\n  RATE: 1.50\n  ZIP: '05432'\n  LEADING: 007\n  EMPTY: ''\n  NEG: -3\n"
    ));
    let env: Vec<(&str, &str)> = config
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("DEBUG", "true"),
            ("EMPTY", ""),
            ("LEADING", "007"),
            ("NEG", "-3"),
            ("PORT", "5432"),
            ("RATE", "1.50"),
            ("ZIP", "05432"),
        ]
    );
}

#[test]
fn env_values_arrive_exactly_as_written() {
    // Each of these used to change on the way: YAML resolved the plain
    // scalar to a number or boolean and sarge printed that back.
    let config = parse(&format!(
        "{RANGE}env:\n  VERSION: 1.10\n  HEX: 0x1F\n  OCT: 0o17\n  EXP: 1e3\n  YES: yes\n  NO: No\n  TRUE_: True\n  LEADING: 007\n  INF: .inf\n  NAN: .NaN\n  PLUS: +12\n  BIG: 123456789012345678901234567890\n  TIME: 12:30:00\n  DATE: 2001-12-14\n  SPACED: a  b   c\n"
    ));
    let env = |name: &str| config.env[name].as_str();
    assert_eq!(env("VERSION"), "1.10");
    assert_eq!(env("HEX"), "0x1F");
    assert_eq!(env("OCT"), "0o17");
    assert_eq!(env("EXP"), "1e3");
    assert_eq!(env("YES"), "yes");
    assert_eq!(env("NO"), "No");
    assert_eq!(env("TRUE_"), "True");
    assert_eq!(env("LEADING"), "007");
    assert_eq!(env("INF"), ".inf");
    assert_eq!(env("NAN"), ".NaN");
    assert_eq!(env("PLUS"), "+12");
    assert_eq!(env("BIG"), "123456789012345678901234567890");
    assert_eq!(env("TIME"), "12:30:00");
    assert_eq!(env("DATE"), "2001-12-14");
    assert_eq!(env("SPACED"), "a  b   c");
}

#[test]
fn env_quoted_and_block_values_keep_yaml_string_rules() {
    let config = parse(&format!(
        "{RANGE}env:\n  SINGLE: '1.10 it''s'\n  DOUBLE: \"tab\\there \\u00e9\"\n  TAGGED: !!str 0x1F\n  NULL_TEXT: 'null'\n  LITERAL: |\n    line one\n      indented\n    line three\n  FOLDED: >-\n    folded\n    text\n  PLAIN_LINES: first\n    second\n  KEY: -----BEGIN KEY-----\n"
    ));
    let env = |name: &str| config.env[name].as_str();
    assert_eq!(env("SINGLE"), "1.10 it's");
    assert_eq!(env("DOUBLE"), "tab\there \u{e9}");
    assert_eq!(env("TAGGED"), "0x1F");
    assert_eq!(env("NULL_TEXT"), "null");
    assert_eq!(env("LITERAL"), "line one\n  indented\nline three\n");
    assert_eq!(env("FOLDED"), "folded text");
    // A plain scalar over several lines is folded by YAML's rules: one
    // space per line break.
    assert_eq!(env("PLAIN_LINES"), "first second");
    assert_eq!(env("KEY"), "-----BEGIN KEY-----");
}

#[test]
fn env_null_is_an_error_not_a_guess() {
    // `~` and `null` mean "no value" in YAML; whether the user meant "" or
    // the word, guessing wrong would be silent, so sarge asks.
    assert_eq!(
        error_with_range("env:\n  A: ~\n"),
        format!(
            r#"{ORIGIN}: env.A: ~ means no value in YAML; write "" for an empty string or "~" for that text"#
        )
    );
    assert_eq!(
        error_with_range("env:\n  A: null\n"),
        format!(
            r#"{ORIGIN}: env.A: null means no value in YAML; write "" for an empty string or "null" for that text"#
        )
    );
    assert_eq!(
        error_with_range("env:\n  A: NULL\n"),
        format!(
            r#"{ORIGIN}: env.A: NULL means no value in YAML; write "" for an empty string or "NULL" for that text"#
        )
    );
}

#[test]
fn anchors_and_aliases_are_copied() {
    let config = parse(&format!(
        "{RANGE}env:\n  A: &shared 1.10\n  B: *shared\nhealthcheck:\n  web: &check {{path: /up, timeout: 3}}\n  api: *check\n"
    ));
    assert_eq!(config.env["B"], "1.10");
    assert_eq!(config.healthcheck["api"], config.healthcheck["web"]);
}

#[test]
fn only_one_document_is_read() {
    assert_eq!(
        error(&format!("{RANGE}---\n{RANGE}")),
        format!("{ORIGIN}: invalid YAML: a second document (`---`) is not supported; sarge.yaml holds one mapping at line 2 column 1")
    );
    // One explicit document is fine.
    assert_eq!(parse(&format!("---\n{RANGE}...\n")).port_range.first, 5010);
}

#[test]
fn numbers_for_settings_follow_the_yaml_core_schema() {
    let config =
        parse("port_range: [0x1400, !!int 0o12000]\nready_timeout: 1e1\ndrain_timeout: .5\n");
    assert_eq!(config.port_range.first, 5120);
    assert_eq!(config.port_range.last, 5120);
    assert_eq!(config.ready_timeout, Duration::from_secs(10));
    assert_eq!(config.drain_timeout, Duration::from_millis(500));
    // A quoted number is a string, as before.
    assert_eq!(
        error("port_range: ['5010', 5099]\n"),
        format!(r#"{ORIGIN}: port_range: "5010" is not a port number"#)
    );
}

#[test]
fn legacy_virtualenv_python_bin_is_accepted() {
    let config = parse(&format!(
        "{RANGE}virtualenv_python_bin: /opt/py/bin/python\n"
    ));
    assert_eq!(config.python_bin, "/opt/py/bin/python");
}

#[test]
fn empty_maps_may_be_left_without_value() {
    let config = parse(&format!("{RANGE}port_map:\nenv:\n  # A: 1\nhealthcheck:\n"));
    assert!(config.port_map.is_empty());
    assert!(config.env.is_empty());
    assert!(config.healthcheck.is_empty());
}

#[test]
fn default_yaml_parses_to_the_documented_values() {
    let config = parse(&Config::default_yaml(7000));
    let mut expected = Config::new(PortRange {
        first: 7010,
        last: 7099,
    });
    expected
        .port_map
        .insert(name("web"), address(Some("127.0.0.1"), 7000));
    assert_eq!(config, expected);
}

#[test]
fn default_yaml_optional_keys_are_valid_when_uncommented() {
    // Uncommenting every "# key: value" line must give a valid file, or the
    // template would teach people broken syntax.
    let uncommented: String = Config::default_yaml(7000)
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(setting)
                if TOP_LEVEL_KEYS
                    .iter()
                    .any(|key| setting.starts_with(&format!("{key}:")))
                    || setting.starts_with("  web: ") =>
            {
                setting
            }
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(uncommented.contains("\nhealthcheck:\n  web: {path: /up, timeout: 30}\n"));
    let config = parse(&uncommented);
    assert_eq!(
        config.python_dist.as_deref(),
        Some(Utf8Path::new("/path/to/dist"))
    );
    assert_eq!(config.healthcheck["web"].path, "/up");
    assert_eq!(config.ready_timeout, Duration::from_secs(30));
    assert_eq!(config.keep_releases, 5);
    assert_eq!(config.release_timeout, Duration::from_secs(300));
}

#[test]
fn load_reads_the_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("sarge-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = camino::Utf8PathBuf::try_from(dir).unwrap();
    let path = dir.join("sarge.yaml");
    std::fs::write(&path, Config::default_yaml(7000)).unwrap();
    assert_eq!(Config::load(&path).unwrap().port_range.first, 7010);

    std::fs::write(&path, "port_range: [5010]\n").unwrap();
    assert_eq!(
        Config::load(&path).unwrap_err().to_string(),
        format!("{path}: port_range: expected exactly two ports [first, last], found 1 items")
    );

    let missing = dir.join("missing.yaml");
    let err = Config::load(&missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot read config file {missing}")
    );
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(source.to_string(), "No such file or directory (os error 2)");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn syntax_errors_give_line_and_column() {
    let err = Config::from_yaml_str(
        "port_range: [5010, 5099]\nport_map: web: 1\n",
        Utf8Path::new(ORIGIN),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/h/etc/sarge.yaml: invalid YAML: mapping values are not allowed in this context at line 2 column 14"
    );
    let Error::Syntax { line, column, .. } = err else {
        panic!("not a syntax error: {err:?}");
    };
    assert_eq!((line, column), (Some(2), Some(14)));

    assert_eq!(
        error("port_range: [5010, 5099\n"),
        "/h/etc/sarge.yaml: invalid YAML: while parsing a flow sequence, expected ',' or ']' at line 2 column 1"
    );
}

#[test]
fn duplicate_keys_are_syntax_errors() {
    assert_eq!(
        error_with_range("env:\n  A: 1\n  A: 2\n"),
        "/h/etc/sarge.yaml: invalid YAML: env: duplicate entry with key \"A\" at line 4 column 3"
    );
}

#[test]
fn empty_or_comment_only_file_needs_port_range() {
    for text in ["", "\n", "# nothing here\n# at all\n"] {
        assert_eq!(error(text), "/h/etc/sarge.yaml: port_range is required");
    }
    assert_eq!(
        error("env: {}\n"),
        "/h/etc/sarge.yaml: port_range is required"
    );
}

#[test]
fn top_level_must_be_a_mapping() {
    assert_eq!(
        error("- 5010\n- 5099\n"),
        "/h/etc/sarge.yaml: top level: expected a mapping of settings, found a list"
    );
}

#[test]
fn unknown_keys_are_named() {
    let known = "port_range, port_map, env, haproxy_bin, supervisord_bin, supervisorctl_bin, python_bin, virtualenv_python_bin, python_dist, healthcheck, ready_timeout, drain_timeout, max_unpacked_bytes, log_max_bytes, log_backups, keep_releases, release_timeout, prepared_timeout";
    assert_eq!(
        error_with_range("haproxy_binn: /usr/sbin/haproxy\n"),
        format!("/h/etc/sarge.yaml: unknown key \"haproxy_binn\" (known keys here: {known})")
    );
    assert_eq!(
        error_with_range("7: x\n"),
        format!("/h/etc/sarge.yaml: unknown key \"7\" (known keys here: {known})")
    );
    assert_eq!(
        error_with_range("healthcheck:\n  web: {pth: /up}\n"),
        "/h/etc/sarge.yaml: unknown key \"healthcheck.web.pth\" (known keys here: path, host, timeout)"
    );
}

#[test]
fn port_range_errors() {
    let cases = [
        (
            "port_range: 5010-5099\n",
            "port_range: expected [first, last], found \"5010-5099\"",
        ),
        (
            "port_range:\n",
            "port_range: expected [first, last], found nothing",
        ),
        (
            "port_range: [5010]\n",
            "port_range: expected exactly two ports [first, last], found 1 items",
        ),
        (
            "port_range: [5010, 5020, 5030]\n",
            "port_range: expected exactly two ports [first, last], found 3 items",
        ),
        (
            "port_range: [5010, x]\n",
            "port_range: \"x\" is not a port number",
        ),
        (
            "port_range: [5010.5, 5020]\n",
            "port_range: 5010.5 is not a port number",
        ),
        (
            "port_range: [80, 5020]\n",
            "port_range: 80 is outside 1024..=65535",
        ),
        (
            "port_range: [5010, 65536]\n",
            "port_range: 65536 is outside 1024..=65535",
        ),
        (
            "port_range: [-1, 5020]\n",
            "port_range: -1 is outside 1024..=65535",
        ),
        (
            "port_range: [5099, 5010]\n",
            "port_range: first port 5099 is greater than last port 5010",
        ),
    ];
    for (text, problem) in cases {
        assert_eq!(error(text), format!("{ORIGIN}: {problem}"), "{text}");
    }
    let single = parse("port_range: [1024, 1024]\n");
    assert_eq!(single.port_range.len(), 1);
    let top = parse("port_range: [65535, 65535]\n");
    assert_eq!(top.port_range.first, 65535);
}

#[test]
fn port_map_errors() {
    let cases = [
        (
            "port_map:\n  web: foo\n",
            r#"port_map.web: "foo" is not host:port (expected host:port, e.g. 127.0.0.1:5000 or *:5000)"#,
        ),
        (
            "port_map:\n  web: 5000\n",
            "port_map.web: 5000 is not host:port, e.g. 127.0.0.1:5000",
        ),
        (
            "port_map:\n  web: 127.0.0.1:0\n",
            r#"port_map.web: "127.0.0.1:0" is not host:port (the port must be a number in 1..=65535)"#,
        ),
        (
            "port_map:\n  web: 127.0.0.1:70000\n",
            r#"port_map.web: "127.0.0.1:70000" is not host:port (the port must be a number in 1..=65535)"#,
        ),
        (
            "port_map:\n  web: 127.0.0.1:5050\n",
            "port_map.web: port 5050 is inside port_range [5010, 5099]",
        ),
        (
            "port_map:\n  web: \"*:5010\"\n",
            "port_map.web: port 5010 is inside port_range [5010, 5099]",
        ),
        (
            "port_map:\n  web: 127.0.0.1:5000\n  api: 127.0.0.1:5000\n",
            "port_map.api: 127.0.0.1:5000 clashes with port_map.web (127.0.0.1:5000)",
        ),
        (
            "port_map:\n  web: 127.0.0.1:5000\n  api: \"*:5000\"\n",
            "port_map.api: *:5000 clashes with port_map.web (127.0.0.1:5000)",
        ),
        (
            "port_map:\n  web: \"*:5000\"\n  api: 10.1.2.3:5000\n",
            "port_map.api: 10.1.2.3:5000 clashes with port_map.web (*:5000)",
        ),
        (
            "port_map:\n  web app: 127.0.0.1:5000\n",
            r#"port_map: "web app" is not a valid process name: it contains ' ' (a process name is 1 to 40 characters: ASCII letters, digits, '_', '.' or '-', starting with a letter or digit)"#,
        ),
        (
            "port_map:\n  _web: 127.0.0.1:5000\n",
            r#"port_map: "_web" is not a valid process name: it starts with '_' (a process name is 1 to 40 characters: ASCII letters, digits, '_', '.' or '-', starting with a letter or digit)"#,
        ),
        (
            "port_map:\n  web/x: 127.0.0.1:5000\n",
            r#"port_map: "web/x" is not a valid process name: it contains '/' (a process name is 1 to 40 characters: ASCII letters, digits, '_', '.' or '-', starting with a letter or digit)"#,
        ),
        (
            "port_map:\n  ~: 127.0.0.1:5000\n",
            "port_map: nothing is not a name",
        ),
        (
            "port_map: [web]\n",
            "port_map: expected a mapping of names, found a list",
        ),
    ];
    for (text, problem) in cases {
        assert_eq!(
            error_with_range(text),
            format!("{ORIGIN}: {problem}"),
            "{text}"
        );
    }
}

#[test]
fn port_map_and_healthcheck_keys_are_process_names_of_at_most_40_characters() {
    let at_limit = "w".repeat(40);
    let config = parse(&format!(
        "{RANGE}port_map:\n  {at_limit}: 127.0.0.1:5000\nhealthcheck:\n  {at_limit}: {{path: /up}}\n"
    ));
    assert!(config.port_map.contains_key(at_limit.as_str()));
    assert!(config.healthcheck.contains_key(at_limit.as_str()));
    let over = "w".repeat(41);
    for key in ["port_map", "healthcheck"] {
        let value = if key == "port_map" {
            "127.0.0.1:5000"
        } else {
            "{path: /up}"
        };
        assert_eq!(
            error_with_range(&format!("{key}:\n  {over}: {value}\n")),
            format!(
                "{ORIGIN}: {key}: {over:?} is not a valid process name: it is 41 characters long (a process name is 1 to 40 characters: ASCII letters, digits, '_', '.' or '-', starting with a letter or digit)"
            )
        );
    }
}

#[test]
fn port_map_accepts_process_names_with_dots_dashes_underscores() {
    let config = parse(&format!(
        "{RANGE}port_map:\n  web-2.v_1: 127.0.0.1:5000\n  9worker: 127.0.0.1:5001\n  other: 127.0.0.2:5000\n"
    ));
    assert_eq!(
        config.port_map.keys().collect::<Vec<_>>(),
        ["9worker", "other", "web-2.v_1"]
    );
}

#[test]
fn env_errors() {
    let cases = [
        (
            "env:\n  A:\n",
            r#"env.A: has no value; write "" for an empty string"#,
        ),
        (
            "env:\n  A: [1, 2]\n",
            "env.A: expected a string, number or boolean, found a list",
        ),
        (
            "env:\n  A: {b: 1}\n",
            "env.A: expected a string, number or boolean, found a mapping",
        ),
        (
            "env:\n  A: !secret x\n",
            "env.A: expected a string, number or boolean, found a value tagged !secret",
        ),
        ("env:\n  A: \"x\\0y\"\n", "env.A: contains a NUL character"),
        (
            "env:\n  1A: x\n",
            r#"env: "1A" is not a valid environment variable name (letters, digits, '_'; not starting with a digit)"#,
        ),
        (
            "env:\n  MY-VAR: x\n",
            r#"env: "MY-VAR" is not a valid environment variable name (letters, digits, '_'; not starting with a digit)"#,
        ),
        (
            "env:\n  \"\": x\n",
            r#"env: "" is not a valid environment variable name (letters, digits, '_'; not starting with a digit)"#,
        ),
        (
            "env: [A]\n",
            "env: expected a mapping of names, found a list",
        ),
    ];
    for (text, problem) in cases {
        assert_eq!(
            error_with_range(text),
            format!("{ORIGIN}: {problem}"),
            "{text}"
        );
    }
    let config = parse(&format!("{RANGE}env:\n  _private_1: x\n"));
    assert_eq!(config.env["_private_1"], "x");
}

#[test]
fn program_path_errors() {
    let cases = [
        ("haproxy_bin:\n", "haproxy_bin: expected a path, found nothing"),
        ("haproxy_bin: ''\n", "haproxy_bin: expected a path, found \"\""),
        ("supervisord_bin: 5\n", "supervisord_bin: expected a path, found 5"),
        ("supervisorctl_bin: [a]\n", "supervisorctl_bin: expected a path, found a list"),
        ("python_dist: {a: 1}\n", "python_dist: expected a path, found a mapping"),
        ("virtualenv_python_bin: true\n", "virtualenv_python_bin: expected a path, found true"),
        (
            "python_bin: python3\nvirtualenv_python_bin: python3\n",
            "virtualenv_python_bin: is the old name of python_bin, which is also set; keep only python_bin",
        ),
    ];
    for (text, problem) in cases {
        assert_eq!(
            error_with_range(text),
            format!("{ORIGIN}: {problem}"),
            "{text}"
        );
    }
}

#[test]
fn healthcheck_errors() {
    let cases = [
        (
            "healthcheck:\n  web: /up\n",
            r#"healthcheck.web: expected a mapping like {path: /up, timeout: 30}, found "/up""#,
        ),
        (
            "healthcheck:\n  web: {timeout: 3}\n",
            "healthcheck.web.path is required",
        ),
        (
            "healthcheck:\n  web: {path: up}\n",
            r#"healthcheck.web.path: "up" is not a URL path starting with '/' (no spaces)"#,
        ),
        (
            "healthcheck:\n  web: {path: /a b}\n",
            r#"healthcheck.web.path: "/a b" is not a URL path starting with '/' (no spaces)"#,
        ),
        (
            "healthcheck:\n  web: {path: 5}\n",
            "healthcheck.web.path: 5 is not a URL path starting with '/' (no spaces)",
        ),
        (
            "healthcheck:\n  web: {path: /up, timeout: -1}\n",
            "healthcheck.web.timeout: -1 is negative; expected seconds >= 0",
        ),
        (
            "healthcheck:\n  web: {path: /up, timeout: 30s}\n",
            r#"healthcheck.web.timeout: expected a number of seconds, found "30s""#,
        ),
        (
            "healthcheck:\n  -web: {path: /up}\n",
            r#"healthcheck: "-web" is not a valid process name: it starts with '-' (a process name is 1 to 40 characters: ASCII letters, digits, '_', '.' or '-', starting with a letter or digit)"#,
        ),
        (
            "healthcheck: [web]\n",
            "healthcheck: expected a mapping of names, found a list",
        ),
        (
            "healthcheck:\n  web: {path: /up, host: a b}\n",
            r#"healthcheck.web.host: "a b" is not a host name (e.g. localhost or app.example.com; no spaces)"#,
        ),
        (
            "healthcheck:\n  web: {path: /up, host: }\n",
            "healthcheck.web.host: nothing is not a host name (e.g. localhost or app.example.com; no spaces)",
        ),
        (
            "healthcheck:\n  web: {path: /up, host: [a]}\n",
            "healthcheck.web.host: a list is not a host name (e.g. localhost or app.example.com; no spaces)",
        ),
    ];
    for (text, problem) in cases {
        assert_eq!(
            error_with_range(text),
            format!("{ORIGIN}: {problem}"),
            "{text}"
        );
    }
}

#[test]
fn timeout_errors() {
    let cases = [
        (
            "ready_timeout: -5\n",
            "ready_timeout: -5 is negative; expected seconds >= 0",
        ),
        (
            "ready_timeout: -0.5\n",
            "ready_timeout: -0.5 is negative; expected seconds >= 0",
        ),
        (
            "drain_timeout: .nan\n",
            "drain_timeout: .nan is not a number of seconds",
        ),
        (
            "drain_timeout: .inf\n",
            "drain_timeout: .inf seconds is too long",
        ),
        (
            "drain_timeout: 1e300\n",
            "drain_timeout: 1e300 seconds is too long",
        ),
        (
            "ready_timeout: \"30\"\n",
            r#"ready_timeout: expected a number of seconds, found "30""#,
        ),
        (
            "ready_timeout:\n",
            "ready_timeout: expected a number of seconds, found nothing",
        ),
    ];
    for (text, problem) in cases {
        assert_eq!(
            error_with_range(text),
            format!("{ORIGIN}: {problem}"),
            "{text}"
        );
    }
}

#[test]
fn max_unpacked_bytes_is_a_positive_number_of_bytes() {
    assert_eq!(parse(RANGE).max_unpacked_bytes, 2 * 1024 * 1024 * 1024);
    assert_eq!(
        parse(&format!("{RANGE}max_unpacked_bytes: 1000000\n")).max_unpacked_bytes,
        1_000_000
    );
    for (text, found) in [
        ("max_unpacked_bytes: 0\n", "0"),
        ("max_unpacked_bytes: -1\n", "-1"),
        ("max_unpacked_bytes: 1.5\n", "1.5"),
        ("max_unpacked_bytes: 2GB\n", "\"2GB\""),
        ("max_unpacked_bytes:\n", "nothing"),
    ] {
        assert_eq!(
            error_with_range(text),
            format!("/h/etc/sarge.yaml: max_unpacked_bytes: expected a number of bytes above 0, found {found}"),
            "{text}"
        );
    }
}

#[test]
fn keep_releases_is_a_count_of_one_or_more() {
    assert_eq!(parse(RANGE).keep_releases, 5);
    assert_eq!(
        parse(&format!("{RANGE}keep_releases: 1\n")).keep_releases,
        1
    );
    assert_eq!(
        parse(&format!("{RANGE}keep_releases: 40\n")).keep_releases,
        40
    );
    for (text, found) in [
        ("keep_releases: 0\n", "0"),
        ("keep_releases: -2\n", "-2"),
        ("keep_releases: 2.5\n", "2.5"),
        ("keep_releases: five\n", "\"five\""),
        ("keep_releases: \"5\"\n", "\"5\""),
        ("keep_releases:\n", "nothing"),
    ] {
        assert_eq!(
            error_with_range(text),
            format!("{ORIGIN}: keep_releases: expected a number of releases of 1 or more (the live one is always kept), found {found}"),
            "{text}"
        );
    }
    assert_eq!(
        error_with_range("keep_releases: 5000000000\n"),
        format!("{ORIGIN}: keep_releases: 5000000000 releases is more than sarge can count")
    );
}

#[test]
fn release_timeout_is_seconds_like_the_other_timeouts() {
    assert_eq!(parse(RANGE).release_timeout, Duration::from_secs(300));
    assert_eq!(
        parse(&format!("{RANGE}release_timeout: 900\n")).release_timeout,
        Duration::from_secs(900)
    );
    assert_eq!(
        parse(&format!("{RANGE}release_timeout: 1.5\n")).release_timeout,
        Duration::from_millis(1500)
    );
    for (text, problem) in [
        (
            "release_timeout: 0\n",
            "release_timeout: 0 would kill the release command before it runs; expected seconds above 0",
        ),
        (
            "release_timeout: 0.0\n",
            "release_timeout: 0 would kill the release command before it runs; expected seconds above 0",
        ),
        (
            "release_timeout: -1\n",
            "release_timeout: -1 is negative; expected seconds >= 0",
        ),
        (
            "release_timeout: ten\n",
            r#"release_timeout: expected a number of seconds, found "ten""#,
        ),
        (
            "release_timeout: .nan\n",
            "release_timeout: .nan is not a number of seconds",
        ),
        (
            "release_timeout:\n",
            "release_timeout: expected a number of seconds, found nothing",
        ),
    ] {
        assert_eq!(
            error_with_range(text),
            format!("{ORIGIN}: {problem}"),
            "{text}"
        );
    }
}

#[test]
fn a_config_built_in_code_is_checked_by_the_rules_of_the_file() {
    let origin = Utf8Path::new("built");
    let mut config = Config::new(PortRange {
        first: 5010,
        last: 5099,
    });
    config
        .port_map
        .insert("web".parse().unwrap(), "127.0.0.1:5000".parse().unwrap());
    config
        .healthcheck
        .insert("web".parse().unwrap(), HealthCheck::new("/up"));
    config.check(origin).unwrap();
    // What a file with these values would have said.
    let from_file = parse(&format!(
        "{RANGE}port_map:\n  web: 127.0.0.1:5000\nhealthcheck:\n  web: {{path: /up}}\n"
    ));
    assert_eq!(config, from_file);
    from_file.check(origin).unwrap();

    let broken = |change: &dyn Fn(&mut Config)| {
        let mut broken = config.clone();
        change(&mut broken);
        broken.check(origin).unwrap_err().to_string()
    };
    assert_eq!(
        broken(&|c| c.keep_releases = 0),
        "built: keep_releases: 0; expected 1 or more (the live release is always kept)"
    );
    assert!(
        broken(&|c| c.release_timeout = Duration::ZERO).starts_with("built: release_timeout: 0")
    );
    assert_eq!(
        broken(&|c| {
            c.port_map
                .insert("api".parse().unwrap(), "127.0.0.1:5020".parse().unwrap());
        }),
        "built: port_map.api: port 5020 is inside port_range [5010, 5099]"
    );
    assert_eq!(
        broken(&|c| {
            c.port_map
                .insert("api".parse().unwrap(), "0.0.0.0:5000".parse().unwrap());
        }),
        "built: port_map.web: 127.0.0.1:5000 clashes with port_map.api (0.0.0.0:5000)"
    );
    assert!(broken(&|c| {
        c.env.insert("NOT OK".into(), "x".into());
    })
    .starts_with("built: env.NOT OK: "));
    assert!(broken(&|c| {
        c.healthcheck
            .insert("web".parse().unwrap(), HealthCheck::new("up"));
    })
    .starts_with("built: healthcheck.web.path: "));
    assert!(broken(&|c| c.port_range = PortRange {
        first: 80,
        last: 90
    })
    .starts_with("built: port_range: "));
}

#[test]
fn prepared_timeout_is_seconds_above_zero() {
    assert_eq!(parse(RANGE).prepared_timeout, Duration::from_secs(600));
    assert_eq!(
        parse(&format!("{RANGE}prepared_timeout: 60\n")).prepared_timeout,
        Duration::from_secs(60)
    );
    let message = error_with_range("prepared_timeout: 0\n");
    assert!(
        message.contains("prepared_timeout: 0 would discard a prepared release"),
        "{message}"
    );
}
