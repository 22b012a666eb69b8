#![allow(clippy::unwrap_used)]
//! The shell around sarge, through the real binary: tab completion and the
//! man page (no home needed), `--version` naming the commit, `destroy`
//! asking on a terminal only, and `rollback` saying what it changes first.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;

/// `sarge ARGS` with no home at all: what describes the binary needs none.
fn sarge_without_home(args: &[&str]) -> Output {
    Command::new(SARGE)
        .args(args)
        .env_remove("SARGE_HOME")
        .output()
        .unwrap()
}

/// `sarge --home HOME ARGS` on a terminal (a pty from util-linux `script`)
/// whose keyboard types `typed`: what the terminal showed and the exit
/// status of sarge.
fn on_a_terminal(home: &TestHome, args: &[&str], typed: &str) -> (String, Option<i32>) {
    let mut line = format!("'{SARGE}' --home '{}'", home.root.display());
    for arg in args {
        line.push_str(&format!(" '{arg}'"));
    }
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("SARGE_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` gives sarge a terminal: run `scripts/setup`");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(typed.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    (shown, out.status.code())
}

#[test]
fn completions_generate_for_each_shell_without_the_hidden_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = sarge_without_home(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for command in ["deploy", "rollback", "destroy", "releases", "config"] {
            assert!(
                script.contains(command),
                "{shell} completion lacks {command}:\n{script}"
            );
        }
        // bin/supervisord's subcommands stay out of sight, as in --help;
        // `setup --start`'s help may name supervisord, as it starts it.
        let script = script.replace("Start supervisord there if it is not running", "");
        assert!(
            !script.contains("supervisor"),
            "{shell} completion offers the hidden subcommands"
        );
    }

    let out = sarge_without_home(&["completions", "bash"]);
    let file = std::env::temp_dir().join(format!("sarge-completion-{}.bash", std::process::id()));
    std::fs::write(&file, &out.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n refuses the script: {}",
        stderr(&check)
    );
    // And bash completes with it, as after a Tab: a command, then a flag.
    let complete = |words: &str, current: usize| -> String {
        let script = format!(
            "source '{}'; COMP_WORDS=({words}); COMP_CWORD={current}; \
             _sarge sarge \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
             echo \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_owned()
    };
    assert_eq!(complete("sarge rol", 1), "rollback");
    assert_eq!(complete("sarge destroy --y", 2), "--yes");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn init_says_where_to_put_the_tab_completion() {
    let home = TestHome::initialised("init-shell");
    let out = home.sarge(&["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    let line = text
        .lines()
        .find(|line| line.starts_with("tab completion:"))
        .unwrap_or_else(|| panic!("no tab completion line:\n{text}"));
    assert!(line.contains("sarge completions bash > "), "{line}");
    assert!(line.contains("sarge man"), "{line}");
}

#[test]
fn man_page_renders_every_command_with_its_examples() {
    let found = Command::new("sh")
        .args(["-c", "command -v man"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "man is not installed: run `scripts/setup`, which installs man-db"
    );
    let page = sarge_without_home(&["man"]);
    assert!(page.status.success(), "{}", stderr(&page));
    assert!(
        stdout(&page).starts_with(".ie"),
        "not roff:\n{}",
        stdout(&page)
    );

    let mut man = Command::new("man")
        .args(["-l", "-"])
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    man.stdin.take().unwrap().write_all(&page.stdout).unwrap();
    let rendered = man.wait_with_output().unwrap();
    assert!(rendered.status.success(), "man -l -: {}", stderr(&rendered));
    assert_eq!(stderr(&rendered), "", "man warned");
    // Plain text out of a pipe, with no backspace overstriking.
    let text = stdout(&rendered).replace("\u{8}", "");
    for expected in [
        "NAME",
        "SYNOPSIS",
        "COMMANDS",
        "sarge deploy",
        "sarge rollback",
        "sarge config set",
        "sarge destroy",
        "git archive HEAD | ssh server",
        "sarge completions bash >",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert!(!text.contains("supervisorctl"), "{text}");

    // The page is the same whatever home the shell that made it had.
    let elsewhere = Command::new(SARGE)
        .arg("man")
        .env("SARGE_HOME", "/var/local/some_home")
        .output()
        .unwrap();
    assert!(elsewhere.status.success(), "{}", stderr(&elsewhere));
    assert_eq!(stdout(&elsewhere), stdout(&page));
}

#[test]
fn every_command_help_ends_with_examples_and_the_bare_usage_hides_supervisord() {
    // Every command `sarge --help` lists, and those of `config`: a
    // command added later is held to the same rule.
    let listed = |args: &[&str]| -> Vec<String> {
        let help = stdout(&sarge_without_home(args));
        help.lines()
            .skip_while(|line| *line != "Commands:")
            .skip(1)
            .take_while(|line| line.starts_with("  "))
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| *name != "help")
            .map(str::to_owned)
            .collect()
    };
    let mut commands: Vec<Vec<String>> = listed(&["--help"])
        .into_iter()
        .map(|name| vec![name])
        .collect();
    assert!(commands.len() >= 15, "{commands:?}");
    for action in listed(&["config", "--help"]) {
        commands.push(vec!["config".to_owned(), action]);
    }
    assert!(
        commands.contains(&vec!["config".to_owned(), "set".to_owned()]),
        "{commands:?}"
    );
    for command in commands {
        let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
        args.push("--help");
        let out = sarge_without_home(&args);
        assert!(out.status.success(), "{command:?}: {}", stderr(&out));
        let help = stdout(&out);
        let (_, examples) = help
            .rsplit_once("\nExample")
            .unwrap_or_else(|| panic!("no examples in sarge {command:?} --help:\n{help}"));
        let example_lines: Vec<&str> = examples.lines().skip(1).collect();
        assert!(
            !example_lines.is_empty() && example_lines.iter().all(|line| line.contains("sarge ")),
            "sarge {command:?} --help does not end with examples:\n{help}"
        );
    }

    // No arguments: the usage on stderr lists the commands but not the
    // two that bin/supervisord and bin/supervisorctl run.
    let bare = sarge_without_home(&[]);
    assert_eq!(bare.status.code(), Some(2));
    let usage = stderr(&bare);
    assert!(
        usage.contains("deploy") && usage.contains("rollback"),
        "{usage}"
    );
    assert!(!usage.contains("supervisor"), "{usage}");
    let help = stdout(&sarge_without_home(&["--help"]));
    assert!(
        help.contains("completions") && help.contains("man"),
        "{help}"
    );
    assert!(!help.contains("supervisor"), "{help}");
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = sarge_without_home(&["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let version = env!("CARGO_PKG_VERSION");
    let head = Command::new("git")
        .arg("-C")
        .arg(workspace())
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success());
    match head {
        Some(head) => assert_eq!(
            stdout(&out),
            format!("sarge {version} ({})\n", stdout(&head).trim())
        ),
        // Outside a checkout (a crate tarball): the version alone.
        None => assert_eq!(stdout(&out), format!("sarge {version}\n")),
    }
}

#[test]
fn destroy_without_a_terminal_or_with_yes_proceeds_without_asking() {
    let home = TestHome::new("destroy-script", "  MESSAGE: scripted");
    home.deploy_ok(&hello_app(), "web");
    let out = home
        .command(&["destroy", "web"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("[y/N]"), "{}", stderr(&out));
    assert!(home.instances().is_empty());
    assert_eq!(http_get(home.stable, "/").unwrap().0, 503);

    // On a terminal, --yes skips the question.
    home.deploy_ok(&hello_app(), "web");
    let (shown, code) = on_a_terminal(&home, &["destroy", "--yes", "web"], "");
    assert_eq!(code, Some(0), "{shown}");
    assert!(!shown.contains("[y/N]"), "{shown}");
    assert!(shown.contains("destroyed web-"), "{shown}");
    assert!(home.instances().is_empty());
    assert_eq!(http_get(home.stable, "/").unwrap().0, 503);
}

#[test]
fn destroy_on_a_terminal_asks_and_no_keeps_the_process_served() {
    let home = TestHome::new("destroy-ask", "  MESSAGE: still here");
    home.deploy_ok(&hello_app(), "web");
    let id = home.instance_of("web")["id"].as_str().unwrap().to_owned();

    let (shown, code) = on_a_terminal(&home, &["destroy", "web"], "n\n");
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains(&format!(
            "Take web ({id}) off 127.0.0.1:{} and remove it? [y/N]",
            home.stable
        )),
        "{shown}"
    );
    assert!(shown.contains(&format!("not destroyed: {id}")), "{shown}");
    assert_eq!(home.instance_of("web")["id"], id.as_str());
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "still here\n".to_owned())
    );

    let (shown, code) = on_a_terminal(&home, &["destroy", "web"], "y\n");
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains(&format!("destroyed {id}")), "{shown}");
    assert!(home.instances().is_empty());
    assert_eq!(http_get(home.stable, "/").unwrap().0, 503);
}

#[test]
fn rollback_says_what_it_changes_in_one_line_first() {
    let home = TestHome::new("rollback-notice", "  MESSAGE: one");
    home.deploy_ok(&hello_app(), "web");
    home.write_config("  MESSAGE: two", "");
    home.deploy_ok(&hello_app(), "web");

    let out = home.sarge(&["rollback"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    assert_eq!(
        text.lines().next(),
        Some("Rolling back from v2 to v1 (web)"),
        "{text}"
    );
    assert_eq!(http_get(home.stable, "/").unwrap().1, "one\n");

    let out = home.sarge(&["rollback", "v2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().next(),
        Some("Rolling back from v3 to v2 (web)"),
        "{}",
        stderr(&out)
    );

    // A refused rollback announces nothing: its error is the one line.
    let out = home.sarge(&["rollback", "v9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Rolling back"), "{}", stderr(&out));
}
