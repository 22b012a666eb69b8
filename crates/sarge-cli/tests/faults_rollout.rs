#![allow(clippy::unwrap_used)]
//! Faults in the rollout itself: haproxy reloads (one haproxy refuses), a
//! haproxy binary that cannot run, failed state writes around the commit
//! point, a file the unpack cannot create, a stalled upload, and a
//! supervisord killed under its programs. Each case checks the end state a
//! user would: what answers on the stable addresses, what `list` says, and
//! that the next deploy works.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// sarge.yaml with `port_map` as given (the body of the key).
fn write_config(home: &TestHome, port_map: &str, message: &str, extra: &str) {
    home.write_config_with_port_map(port_map, &format!("  MESSAGE: {message}"), extra);
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

/// A stand-in haproxy that answers `-v` and `-c` like the real one but
/// cannot serve: the worst kind of `haproxy_bin`, since only starting it
/// shows the problem.
fn haproxy_that_cannot_start(dir: &std::path::Path) -> std::path::PathBuf {
    let real = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("haproxy is not installed: run `scripts/test`");
    let script = dir.join("haproxy-broken");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in -v|-c) exec {real} \"$@\";; esac\necho broken >&2\nexit 1\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn a_haproxy_bin_that_cannot_run_never_takes_the_stable_address_down() {
    let home = TestHome::new("haproxybin", "  MESSAGE: old");
    let map = format!("  web: 127.0.0.1:{}", home.stable);
    write_config(&home, &map, "old", "");
    home.deploy_ok(&hello_app(), "web");
    let broken = haproxy_that_cannot_start(&home.root);

    for (bin, named) in [
        ("/bin/false".to_owned(), "/bin/false"),
        (broken.display().to_string(), "haproxy"),
    ] {
        let load = Load::start(home.stable);
        write_config(&home, &map, "new", &format!("haproxy_bin: {bin}"));
        let out = home.deploy(&hello_app(), "web");
        let text = stderr(&out);
        assert!(!out.status.success(), "{bin}: deploy succeeded:\n{text}");
        assert!(
            text.contains(named),
            "{bin}: the error does not name it:\n{text}"
        );
        // The haproxy that ran before is back (or was never stopped).
        wait_for(
            std::time::Duration::from_secs(10),
            || matches!(http_get(home.stable, "/"), Ok((200, body)) if body == "old\n"),
            &format!("the old instance to answer on the stable port after {bin}"),
        );
        let (fresh, kept) = load.finish();
        if bin == "/bin/false" {
            // Refused before anything was touched: not one request failed.
            assert_eq!(fresh.failed + kept.failed, 0, "{bin}: {fresh:?} {kept:?}");
        }

        // With the config put back, the next deploy works.
        write_config(&home, &map, "old", "");
        home.deploy_ok(&hello_app(), "web");
        assert_eq!(
            http_get(home.stable, "/").unwrap(),
            (200, "old\n".to_owned())
        );
    }
}

/// Runs `sarge deploy - web` of `tarball` under `strace` with `args`
/// (which syscalls to trace and what to inject into them).
fn deploy_under_strace(home: &TestHome, tarball: &[u8], args: &[String]) -> std::process::Output {
    sarge_under_strace(home, args, &["deploy", "-", "web"], tarball)
}

/// Runs `sarge COMMAND...` with `input` on its stdin under `strace` with
/// `strace_args`.
fn sarge_under_strace(
    home: &TestHome,
    strace_args: &[String],
    command: &[&str],
    input: &[u8],
) -> std::process::Output {
    let mut child = Command::new("strace")
        .args(["-qq", "-o", "/dev/null"])
        .args(strace_args)
        .arg("--")
        .arg(SARGE)
        .arg("--home")
        .arg(&home.root)
        .args(command)
        .env_remove("SARGE_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace is not installed: run `scripts/test`, which installs it");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Runs `sarge deploy` under strace, failing the `nth` rename (the commit
/// step of every atomic write sarge makes) with ENOSPC.
fn deploy_with_failed_rename(home: &TestHome, nth: usize) -> std::process::Output {
    deploy_under_strace(
        home,
        &tar_of(&hello_app()),
        &[
            "-e".to_owned(),
            "trace=rename,renameat,renameat2".to_owned(),
            "-e".to_owned(),
            format!("inject=rename,renameat,renameat2:error=ENOSPC:when={nth}"),
        ],
    )
}

#[test]
fn a_failed_state_write_at_any_step_leaves_a_serving_home_that_the_next_deploy_repairs() {
    let home = TestHome::new("statewrite", "  MESSAGE: v0");
    let map = format!("  web: 127.0.0.1:{}", home.stable);
    write_config(&home, &map, "v0", "");
    home.deploy_ok(&hello_app(), "web");
    let mut failures = 0;
    let mut previous = "v0".to_owned();
    for nth in 1.. {
        let message = format!("n{nth}");
        write_config(&home, &map, &message, "");
        let out = deploy_with_failed_rename(&home, nth);
        let text = stderr(&out);
        // What answers now is what sarge said: the new instance after a
        // success, the one before after a failure.
        let answer = http_get(home.stable, "/");
        let serving = if out.status.success() {
            message.clone()
        } else {
            failures += 1;
            assert!(
                text.contains("No space left on device"),
                "rename {nth}: the error does not give the reason:\n{text}"
            );
            assert_eq!(
                text.matches("error:").count(),
                1,
                "rename {nth}: not one error line:\n{text}"
            );
            previous.clone()
        };
        assert!(
            matches!(&answer, Ok((200, body)) if *body == format!("{serving}\n")),
            "rename {nth}: the stable port answered {answer:?} after:\n{text}"
        );
        // Every later command works, and the next deploy leaves one instance.
        let listed = home.instances();
        assert_eq!(listed.len(), 1, "rename {nth}: {listed:?}");
        let out = home.deploy(&hello_app(), "web");
        assert!(
            out.status.success(),
            "rename {nth}: the deploy after failed:\n{}",
            stderr(&out)
        );
        assert_eq!(
            http_get(home.stable, "/").unwrap(),
            (200, format!("{message}\n")),
            "rename {nth}: after the next deploy"
        );
        previous = message;
        let dirs = std::fs::read_dir(home.root.join("var/instances"))
            .unwrap()
            .count();
        assert_eq!(dirs, 1, "rename {nth}: leftovers after the next deploy");
        if !text.contains("error:") && !text.contains("could not") {
            // The injection came after the last rename of a deploy: done.
            assert!(failures >= 5, "only {failures} renames failed a deploy");
            break;
        }
    }
}

#[test]
fn list_tells_the_truth_and_a_state_file_naming_a_lost_instance_blocks_nothing() {
    let mut home = TestHome::new("listtruth", "  MESSAGE: hi");
    home.deploy_ok(&hello_app(), "web");
    // Well within supervisord's 1 s start-up grace, sarge has seen it answer.
    let web = home.instance_of("web");
    assert_eq!(web["state"], "running", "{web}");

    // The current instance's record is lost: the next commands say so and
    // carry on; nothing needs editing by hand.
    let id = web["id"].as_str().unwrap().to_owned();
    std::fs::remove_file(
        home.root
            .join("var/instances")
            .join(&id)
            .join("instance.json"),
    )
    .unwrap();
    let out = home.sarge(&["list"]);
    assert!(out.status.success(), "list failed: {}", stderr(&out));
    let out = home.deploy(&hello_app(), "web");
    assert!(out.status.success(), "deploy failed: {}", stderr(&out));
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "hi\n".to_owned())
    );
    assert_eq!(home.instances().len(), 1);

    // With supervisord down, `list` cannot know what runs: it says so.
    home.stop_supervisord();
    let out = home.sarge(&["list"]);
    assert!(!out.status.success(), "list succeeded without supervisord");
    assert!(
        stderr(&out).contains("supervisord is not running"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_stalled_upload_blocks_no_other_command() {
    let home = TestHome::new("stalled", "  MESSAGE: hi");
    home.deploy_ok(&hello_app(), "web");
    // A client that sends the start of its tarball, then stalls.
    let tarball = tar_of(&hello_app());
    let mut stalled = home
        .command(&["deploy", "-", "web"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut upload = stalled.stdin.take().unwrap();
    upload.write_all(&tarball[..700]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));

    // Meanwhile every other command runs at once, another deploy and a
    // destroy included, and none of them takes the stalled upload's folder
    // for a leftover.
    let started = std::time::Instant::now();
    home.deploy_ok(&hello_app(), "web");
    for args in [
        &["stop", "web"][..],
        &["start", "web"],
        &["destroy", "--yes", "web"],
    ] {
        let out = home.sarge(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(
        home.instances().len(),
        0,
        "web is still listed after destroy"
    );
    home.deploy_ok(&hello_app(), "web");
    assert_eq!(home.instances().len(), 1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "commands waited for the stalled upload: {:?}",
        started.elapsed()
    );

    // The client resumes: its deploy completes.
    let resumed = upload.write_all(&tarball[700..]);
    drop(upload);
    let out = stalled.wait_with_output().unwrap();
    home.wait_unlocked();
    assert!(
        resumed.is_ok(),
        "the stalled deploy gave up: {}",
        stderr(&out)
    );
    assert!(
        out.status.success(),
        "the resumed deploy failed: {}",
        stderr(&out)
    );
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "hi\n".to_owned())
    );
    let dirs = std::fs::read_dir(home.root.join("var/instances"))
        .unwrap()
        .count();
    assert_eq!(dirs, 1, "leftovers after the resumed deploy");
}

/// The pids haproxy's master lists as its current workers (`show proc`,
/// the rows under `# workers`), asked the way sarge asks: one line on the
/// master CLI socket, then the end of input.
fn haproxy_workers(home: &TestHome) -> Vec<u32> {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let mut socket = UnixStream::connect(home.root.join("var/run/haproxy-master.sock")).unwrap();
    socket.write_all(b"show proc\n").unwrap();
    socket.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    answer
        .lines()
        .skip_while(|line| !line.starts_with("# workers"))
        .skip(1)
        .take_while(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn a_reload_that_haproxy_refuses_is_an_error_with_the_old_routes_back() {
    let home = TestHome::new("refusedreload", "  MESSAGE: v0");
    let (web, api) = (home.stable, home.stable + 1);
    let web_only = format!("  web: 127.0.0.1:{web}");
    let with_api = format!("  web: 127.0.0.1:{web}\n  api: 127.0.0.1:{api}");
    write_config(&home, &web_only, "v0", "");
    home.deploy_ok(&hello_app(), "web");
    let config_before = std::fs::read(home.root.join("etc/haproxy.cfg")).unwrap();
    let workers_before = haproxy_workers(&home);
    assert_eq!(workers_before.len(), 1, "{workers_before:?}");

    // Another program holds api's address. `haproxy -c` does not bind, so
    // the config passes its check; only the new worker finds the address
    // taken, and the master counts a failed reload.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", api)).unwrap();
    let load = Load::start(web);
    write_config(&home, &with_api, "v1", "");
    let out = home.deploy(&hello_app(), "web");
    let (fresh, kept) = load.finish();
    let text = stderr(&out);
    assert!(!out.status.success(), "deploy succeeded:\n{text}");
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "not one `error:` line:\n{text}");
    let error = &text[text.find("error:").unwrap()..];
    assert!(
        error.contains(&format!("127.0.0.1:{api}")),
        "the error does not name the address:\n{text}"
    );
    for count in [&fresh, &kept] {
        assert!(
            count.failed == 0 && count.served > 0,
            "web failed {} of {} requests during the refused reload (first: {:?}); after the deploy web answers {:?}:\n{text}",
            count.failed,
            count.failed + count.served,
            count.failures.first(),
            http_get(web, "/"),
        );
    }
    // The old routes are back: the same file and the same worker.
    assert_eq!(
        std::fs::read(home.root.join("etc/haproxy.cfg")).unwrap(),
        config_before,
        "haproxy.cfg changed after the refused reload"
    );
    assert_eq!(haproxy_workers(&home), workers_before);
    assert_eq!(http_get(web, "/").unwrap(), (200, "v0\n".to_owned()));

    // With the address free, the same deploy goes through and api's
    // stable address answers (haproxy's 503: no api instance yet).
    drop(squatter);
    home.deploy_ok(&hello_app(), "web");
    assert_eq!(http_get(web, "/").unwrap(), (200, "v1\n".to_owned()));
    assert!(
        matches!(http_get(api, "/"), Ok((503, _))),
        "api answered {:?}",
        http_get(api, "/")
    );

    // A bind sarge cannot check beforehand, since the running haproxy holds
    // the port itself: web moves from 127.0.0.1 to every interface while
    // another program listens on 127.0.0.2 with the same port. Here haproxy
    // itself refuses the reload (its master counts a failed one). Its new
    // worker pauses the old one's listeners while it retries the bind, so
    // requests may be refused for that second; the old routes come back.
    let config_before = std::fs::read(home.root.join("etc/haproxy.cfg")).unwrap();
    let workers_before = haproxy_workers(&home);
    let squatter = std::net::TcpListener::bind(("127.0.0.2", web)).unwrap();
    write_config(
        &home,
        &format!("  web: \"*:{web}\"\n  api: 127.0.0.1:{api}"),
        "v2",
        "",
    );
    let out = home.deploy(&hello_app(), "web");
    let text = stderr(&out);
    assert!(!out.status.success(), "deploy succeeded:\n{text}");
    assert_eq!(
        text.lines()
            .filter(|line| line.starts_with("error:"))
            .count(),
        1,
        "not one `error:` line:\n{text}"
    );
    assert!(
        text.contains("haproxy refused to reload") && text.contains(&format!(":{web}]")),
        "the error does not say haproxy refused the address:\n{text}"
    );
    assert_eq!(
        std::fs::read(home.root.join("etc/haproxy.cfg")).unwrap(),
        config_before,
        "haproxy.cfg changed after the refused reload"
    );
    assert_eq!(haproxy_workers(&home), workers_before);
    assert_eq!(http_get(web, "/").unwrap(), (200, "v1\n".to_owned()));
    assert!(matches!(http_get(api, "/"), Ok((503, _))));
    drop(squatter);
    home.deploy_ok(&hello_app(), "web");
    assert_eq!(http_get(web, "/").unwrap(), (200, "v2\n".to_owned()));
}

#[test]
fn a_file_the_unpack_cannot_create_is_refused_with_the_reason_from_the_system() {
    let home = TestHome::new("unpackerrno", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    // The unpacker creates each file with `openat` relative to the app
    // folder, so the path it passes is the entry's own: strace's `-P`
    // matches it there (and nowhere else: no other file has this name),
    // and the kernel's answer for that one file is the injected error.
    let entry = "data/sarge-unwritable.bin";
    let tarball = app_tarball_with(&[(entry, tar::EntryType::Regular, b"payload", "")]);
    for (errno, reason) in [
        ("EACCES", "Permission denied"),
        ("ENOSPC", "No space left on device"),
    ] {
        let before = home.snapshot();
        let out = deploy_under_strace(
            &home,
            &tarball,
            &[
                // Any thread of sarge's may be the one that unpacks.
                "-f".to_owned(),
                "-P".to_owned(),
                entry.to_owned(),
                "-e".to_owned(),
                "trace=openat".to_owned(),
                "-e".to_owned(),
                format!("inject=openat:error={errno}"),
            ],
        );
        assert_refused(
            &home,
            &before,
            Refusal {
                case: errno,
                output: out,
                expected: &format!("tarball entry {entry} cannot be written: {reason}"),
            },
        );
        assert_eq!(
            http_get(home.stable, "/").unwrap(),
            (200, "old\n".to_owned())
        );
    }
    // Without the fault the same tarball deploys.
    let out = home.deploy_bytes(&tarball, "web");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn signals_that_interrupt_socket_calls_fail_no_command() {
    let home = TestHome::new("eintr", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    // Every other read on a socket (std reads one with recvfrom) fails with
    // EINTR, as when a signal lands while sarge waits for supervisord's
    // answer or an instance's: each retry is the next call, which goes
    // through. So does every other `connect`: to supervisord, to haproxy's
    // sockets, to the instance and the stable address. strace writes what
    // it injected to `log` (a later `-o` wins).
    let log = std::env::temp_dir().join(format!("sarge-eintr-{}.strace", std::process::id()));
    let interrupted = |syscalls: &str, command: &[&str], input: &[u8]| {
        let _ = std::fs::remove_file(&log);
        let out = sarge_under_strace(
            &home,
            &[
                "-f".to_owned(),
                "-o".to_owned(),
                log.display().to_string(),
                "-e".to_owned(),
                format!("trace={syscalls}"),
                "-e".to_owned(),
                format!("inject={syscalls}:error=EINTR:when=1+2"),
            ],
            command,
            input,
        );
        let trace = std::fs::read_to_string(&log).unwrap_or_default();
        let injected = trace
            .lines()
            .filter(|line| line.contains("(INJECTED)"))
            .count();
        (out, injected)
    };

    let (out, injected) = interrupted("recvfrom,connect", &["list"], b"");
    assert!(out.status.success(), "list failed: {}", stderr(&out));
    assert!(stdout(&out).contains("web"), "{}", stdout(&out));
    assert!(injected >= 2, "list: only {injected} calls interrupted");

    home.write_config("  MESSAGE: new", "");
    let (out, injected) = interrupted(
        "recvfrom,connect",
        &["deploy", "-", "web"],
        &tar_of(&hello_app()),
    );
    assert!(out.status.success(), "deploy failed: {}", stderr(&out));
    assert!(injected >= 10, "deploy: only {injected} calls interrupted");
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "new\n".to_owned())
    );
    let _ = std::fs::remove_file(&log);
}

#[test]
fn every_file_the_commit_names_is_flushed_before_the_commit() {
    let home = TestHome::new("flushed", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    home.write_config("  MESSAGE: new", "");
    // `-y` prints the path of each file descriptor, so a flush names its file.
    let log = std::env::temp_dir().join(format!("sarge-flushed-{}.strace", std::process::id()));
    let out = sarge_under_strace(
        &home,
        &[
            "-f".to_owned(),
            "-y".to_owned(),
            "-o".to_owned(),
            log.display().to_string(),
            "-e".to_owned(),
            "trace=fdatasync,fsync,rename,renameat,renameat2".to_owned(),
        ],
        &["deploy", "-", "web"],
        &tar_of(&hello_app()),
    );
    assert!(out.status.success(), "deploy failed: {}", stderr(&out));
    let trace = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let lines: Vec<&str> = trace.lines().collect();
    let web = home.instance_of("web");
    let id = web["id"].as_str().unwrap();
    let release = web["release"].as_str().unwrap();
    let root = home.root.display().to_string();
    let files = [
        format!("{root}/var/instances/{id}/instance.json"),
        format!("{root}/var/instances/{id}/env.sh"),
        format!("{root}/var/instances/{id}/run"),
        format!("{root}/etc/supervisor.d/{id}.conf"),
        format!("{root}/var/releases/{release}/release.json"),
        format!("{root}/var/releases/{release}/env.json"),
    ];
    // The commit: the first rename onto current.json after the new
    // instance's record landed.
    let record_landed = lines
        .iter()
        .position(|line| line.contains("rename") && line.contains(&format!("\"{}\"", files[0])))
        .unwrap_or_else(|| panic!("no rename onto {}:\n{trace}", files[0]));
    let commit = lines
        .iter()
        .enumerate()
        .skip(record_landed)
        .find(|(_, line)| {
            line.contains("rename") && line.ends_with("/var/state/current.json\") = 0")
        })
        .map(|(index, _)| index)
        .unwrap_or_else(|| panic!("no commit after the record:\n{trace}"));
    for file in &files {
        // Flushed under its own name, or as the temp file renamed onto it.
        let path = std::path::Path::new(file);
        let temp = format!(
            "{}/.{}.",
            path.parent().unwrap().display(),
            path.file_name().unwrap().to_string_lossy()
        );
        let flushed = lines[..commit].iter().any(|line| {
            (line.contains("fdatasync(") || line.contains("fsync("))
                && (line.contains(&format!("<{file}>")) || line.contains(&temp))
        });
        assert!(
            flushed,
            "{file} was not flushed before the commit:\n{trace}"
        );
    }
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "new\n".to_owned())
    );
}
