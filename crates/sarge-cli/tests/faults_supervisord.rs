//! supervisord dying without stopping its programs (SIGKILL, the OOM
//! killer): its haproxy and apps live on and keep their ports. The next
//! `bin/supervisord` must clear them so the programs it starts can bind,
//! and must never touch the programs of a supervisord that is alive.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;

/// `(ppid, state)` of every process, by pid, from `/proc/*/stat`.
fn process_table() -> BTreeMap<u32, (u32, char)> {
    let mut table = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name, in parentheses, may hold spaces: parse after it.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields[0].chars().next().unwrap_or('?');
        let ppid = fields[1].parse().unwrap_or(0);
        table.insert(pid, (ppid, state));
    }
    table
}

/// Every live descendant of `root`.
fn descendants(root: u32) -> BTreeSet<u32> {
    let table = process_table();
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (&pid, &(ppid, state)) in &table {
            if ppid == parent && state != 'Z' && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found
}

/// Whether `pid` runs (a zombie no longer holds ports or files).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

fn supervisord_pid(home: &TestHome) -> u32 {
    let pidfile = home.root.join("var/run/supervisord.pid");
    let mut pid = None;
    wait_for(
        Duration::from_secs(10),
        || {
            pid = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
                .filter(|pid| alive(*pid));
            pid.is_some()
        },
        "supervisord's pid file",
    );
    pid.unwrap()
}

/// The pid supervisord reports for `program`.
fn program_pid(home: &TestHome, program: &str) -> u32 {
    let out = home
        .as_user(home.root.join("bin/supervisorctl"))
        .arg("pid")
        .arg(program)
        .output()
        .unwrap();
    stdout(&out)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid for {program}: {}", stdout(&out)))
}

/// SIGKILLs the processes it holds when dropped, so a failing test leaves
/// no process of its home behind.
struct KillOnDrop(BTreeSet<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = std::process::Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

fn answers(port: u16, body: &str) -> bool {
    matches!(http_get(port, "/"), Ok((200, ref got)) if got == body)
}

#[test]
fn a_sigkilled_supervisord_leaves_no_orphans_and_the_next_deploy_serves() {
    sigkill_restart_and_deploy(TestHome::new("orphans", "  MESSAGE: first"));
}

/// sarge's documented set-up: an unprivileged user, who can read the
/// `/proc` entries of its own processes only.
#[test]
fn a_sigkilled_supervisord_of_an_unprivileged_user_leaves_no_orphans() {
    sigkill_restart_and_deploy(TestHome::new_unprivileged(
        "orphansuser",
        "  MESSAGE: first",
    ));
}

fn sigkill_restart_and_deploy(home: TestHome) {
    home.deploy_ok(&hello_app(), "web");
    let old_instance = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    let supervisord = supervisord_pid(&home);
    let old_generation = descendants(supervisord);
    let _cleanup = KillOnDrop(old_generation.clone());
    let old_haproxy = program_pid(&home, "haproxy");
    let old_app = program_pid(&home, &old_instance);
    assert!(old_generation.contains(&old_haproxy) && old_generation.contains(&old_app));

    let killed = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(supervisord.to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for(
        Duration::from_secs(10),
        || !alive(supervisord),
        "supervisord to die",
    );
    // What the issue reports: the orphans keep serving (and so keep the ports).
    assert!(
        old_generation.iter().all(|pid| alive(*pid)),
        "the orphans died with supervisord, so this test no longer shows the fault"
    );

    let restart = std::time::Instant::now();
    let out = home
        .as_user(home.root.join("bin/supervisord"))
        .output()
        .unwrap();
    let message = stderr(&out);
    eprintln!("bin/supervisord took {:?}: {message}", restart.elapsed());
    assert!(out.status.success(), "bin/supervisord failed: {message}");
    let left: Vec<u32> = old_generation
        .iter()
        .copied()
        .filter(|pid| alive(*pid))
        .collect();
    assert!(
        left.is_empty(),
        "processes of the dead supervisord still run: {left:?}; bin/supervisord said: {message}"
    );
    assert!(
        message.contains("left by a supervisord that died")
            && message.contains(&format!("haproxy (pid {old_haproxy}"))
            && message.contains(&format!("{old_instance} (pid {old_app}")),
        "bin/supervisord does not name what it stopped: {message}"
    );

    // supervisord starts haproxy and the instance from their program files.
    wait_for(
        Duration::from_secs(30),
        || answers(home.stable, "first\n"),
        "the stable address after the restart",
    );
    let new_supervisord = supervisord_pid(&home);
    assert_ne!(new_supervisord, supervisord);
    assert_eq!(home.instance_of("web")["id"], old_instance.as_str());
    wait_for(
        Duration::from_secs(10),
        || home.instance_of("web")["state"] == "running",
        "sarge list to show web running",
    );
    assert!(descendants(new_supervisord).contains(&program_pid(&home, "haproxy")));

    // And deploys work again.
    home.write_config("  MESSAGE: second", "");
    home.deploy_ok(&hello_app(), "web");
    assert!(
        answers(home.stable, "second\n"),
        "the new deploy does not serve"
    );
    assert_ne!(home.instance_of("web")["id"], old_instance.as_str());
}

#[test]
fn starting_bin_supervisord_while_it_runs_kills_nothing() {
    let home = TestHome::new("orphansalive", "  MESSAGE: still");
    home.deploy_ok(&hello_app(), "web");
    let instance = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    let supervisord = supervisord_pid(&home);
    let before = descendants(supervisord);
    let app = program_pid(&home, &instance);
    let haproxy = program_pid(&home, "haproxy");

    // A second start (a boot script run twice, an operator unsure whether
    // it runs): supervisord refuses to start twice; nothing may be killed.
    let out = home
        .as_user(home.root.join("bin/supervisord"))
        .output()
        .unwrap();
    let message = stderr(&out);
    assert!(
        !message.contains("left by a supervisord that died"),
        "bin/supervisord took a live supervisord's programs for orphans: {message}"
    );
    assert!(alive(supervisord), "supervisord died: {message}");
    assert!(
        before.iter().all(|pid| alive(*pid)),
        "a process of the live supervisord died: {message}"
    );
    assert_eq!(program_pid(&home, &instance), app);
    assert_eq!(program_pid(&home, "haproxy"), haproxy);
    assert!(answers(home.stable, "still\n"));
    wait_for(
        Duration::from_secs(10),
        || home.instance_of("web")["state"] == "running",
        "sarge list to show web running",
    );
}

#[test]
fn orphans_of_a_supervisord_without_the_marker_are_stopped_and_a_deploy_right_after_serves() {
    // A supervisord started before sarge marked its programs (an older
    // sarge's bin/supervisord, or by hand on the home's config).
    let mut home = TestHome::initialised("orphansold");
    home.write_config("  MESSAGE: old", "");
    let started = std::process::Command::new("supervisord")
        .arg("-c")
        .arg(home.root.join("etc/supervisord.conf"))
        .env_remove("SARGE_SUPERVISORD_HOME")
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", stderr(&started));
    home.deploy_ok(&hello_app(), "web");
    let old_instance = home.instance_of("web")["id"].as_str().unwrap().to_owned();
    let supervisord = supervisord_pid(&home);
    let old_generation = descendants(supervisord);
    let _cleanup = KillOnDrop(old_generation.clone());
    let old_app = program_pid(&home, &old_instance);
    assert!(old_generation.contains(&old_app));
    let killed = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(supervisord.to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for(
        Duration::from_secs(10),
        || !alive(supervisord),
        "supervisord to die",
    );

    home.start_supervisord();
    let left: Vec<u32> = old_generation
        .iter()
        .copied()
        .filter(|pid| alive(*pid))
        .collect();
    assert!(
        left.is_empty(),
        "processes of the dead supervisord still run: {left:?}"
    );
    // At once: haproxy is still starting, and the killed one's master and
    // admin socket files are still there until it replaces them.
    home.write_config("  MESSAGE: new", "");
    home.deploy_ok(&hello_app(), "web");
    assert!(
        answers(home.stable, "new\n"),
        "the new deploy does not serve"
    );
    wait_for(
        Duration::from_secs(10),
        || home.instance_of("web")["state"] == "running",
        "sarge list to show web running",
    );
}
