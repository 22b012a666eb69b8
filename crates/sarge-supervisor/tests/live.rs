//! Drives a real supervisord (daemonized, in a temp dir) through the
//! rendered config files and the XML-RPC client.
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use sarge_supervisor::{Client, DaemonState, Error, ProcessState, Program, SupervisordConfig};

const SUPERVISORD: &str = "/usr/bin/supervisord";

fn unique_temp_dir(label: &str) -> Utf8PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("sarge-sup-{label}-{}-{n}", std::process::id()));
    let dir = Utf8PathBuf::try_from(dir).unwrap();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A daemonized supervisord that is shut down (or killed) and whose temp dir
/// is removed when the guard drops, also when a test panics.
struct Daemon {
    dir: Utf8PathBuf,
    config: SupervisordConfig,
    client: Client,
}

impl Daemon {
    fn start(label: &str) -> Self {
        assert!(
            Utf8Path::new(SUPERVISORD).exists(),
            "{SUPERVISORD} is missing; run scripts/test (it installs supervisor 4.2.5) \
             or `apt-get install supervisor`"
        );
        let dir = unique_temp_dir(label);
        for sub in ["run", "log", "etc/supervisor.d"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let config = SupervisordConfig {
            socket: dir.join("run/supervisor.sock"),
            pidfile: dir.join("run/supervisord.pid"),
            logfile: dir.join("log/supervisord.log"),
            child_log_dir: dir.join("log"),
            include_glob: dir.join("etc/supervisor.d/*.conf"),
            directory: dir.clone(),
        };
        let config_file = dir.join("etc/supervisord.conf");
        std::fs::write(&config_file, config.render().unwrap()).unwrap();
        let client = Client::new(config.socket.clone()).with_timeout(Duration::from_secs(30));
        let daemon = Daemon {
            dir,
            config,
            client,
        };
        // supervisord forks and the foreground process exits once the
        // daemon is set up.
        let status = Command::new(SUPERVISORD)
            .arg("-c")
            .arg(&config_file)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "supervisord -c {config_file} failed: {status}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match daemon.client.state() {
                Ok(DaemonState::Running) => break,
                Ok(_) | Err(Error::NotRunning { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => panic!("supervisord did not come up: {other:?}"),
            }
        }
        daemon
    }

    fn write_program(&self, program: &Program) {
        let path = self
            .dir
            .join(format!("etc/supervisor.d/{}.conf", program.name));
        std::fs::write(path, program.render().unwrap()).unwrap();
    }

    fn pid_from_file(&self) -> Option<u32> {
        std::fs::read_to_string(&self.config.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Waits until the process `pid` is gone (a zombie counts as gone: it
    /// is init's to reap). The pidfile alone is not enough: supervisord
    /// removes it a moment before it exits.
    fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !is_alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = self.pid_from_file() {
            if self.client.shutdown().is_err() || !Self::wait_for_exit(pid, Duration::from_secs(15))
            {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

fn wait_for_state(
    client: &Client,
    name: &str,
    wanted: ProcessState,
    timeout: Duration,
) -> ProcessState {
    let deadline = Instant::now() + timeout;
    loop {
        let state = client.process_info(name).unwrap().state;
        if state == wanted || Instant::now() >= deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_log(path: &Utf8Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if content.contains(needle) || Instant::now() >= deadline {
            return content;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn programs_are_added_started_signalled_stopped_and_removed() {
    let daemon = Daemon::start("lifecycle");
    let client = &daemon.client;
    assert_eq!(client.pid().unwrap(), daemon.pid_from_file().unwrap());

    let hello = Program {
        name: "hello".into(),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo hi; exec sleep 30".into(),
        ],
        directory: daemon.dir.clone(),
        log_file: daemon.dir.join("log/hello.log"),
        autostart: true,
        autorestart: false,
        start_secs: 2,
        start_retries: 0,
        stop_wait_secs: 5,
        stop_as_group: true,
        log_max_bytes: 1024 * 1024,
        log_backups: 1,
    };
    // Directory and log path with `%` and a space; arguments that a naive
    // renderer would turn into comments, interpolations or broken quotes.
    let odd_dir = daemon.dir.join("100% sure dir");
    std::fs::create_dir_all(&odd_dir).unwrap();
    let odd_script = "trap 'echo got-usr2' USR2; printf '[%s]\\n' \"$@\"; pwd; \
                      while :; do sleep 1 & wait $!; done";
    let odd_args = ["a ;b", "#c", "it's 100%", "", "tab\t#d", "%(here)x"];
    let odd = Program {
        name: "odd".into(),
        command: ["/bin/sh", "-c", odd_script, "sh"]
            .into_iter()
            .chain(odd_args)
            .map(String::from)
            .collect(),
        directory: odd_dir.clone(),
        log_file: daemon.dir.join("log/odd 50%.log"),
        autostart: false,
        autorestart: false,
        start_secs: 1,
        start_retries: 0,
        stop_wait_secs: 5,
        stop_as_group: true,
        log_max_bytes: 1024 * 1024,
        log_backups: 1,
    };
    daemon.write_program(&hello);
    daemon.write_program(&odd);

    let changes = client.reload_config().unwrap();
    assert_eq!(changes.added, ["hello", "odd"]);
    assert!(
        changes.changed.is_empty() && changes.removed.is_empty(),
        "{changes:?}"
    );

    // An autostart program starts on add, without start_process. It is
    // STARTING at once, so start_process(wait) answers ALREADY_STARTED
    // immediately instead of waiting out startsecs (2 s here).
    client.add_process_group("hello").unwrap();
    client.start_process("hello", true).unwrap();
    assert_eq!(
        client.process_info("hello").unwrap().state,
        ProcessState::Starting
    );
    let state = wait_for_state(
        client,
        "hello",
        ProcessState::Running,
        Duration::from_secs(5),
    );
    assert_eq!(
        state,
        ProcessState::Running,
        "autostart did not start hello"
    );
    let info = client.process_info("hello").unwrap();
    assert_eq!(
        (info.name.as_str(), info.group.as_str()),
        ("hello", "hello")
    );
    assert!(info.pid > 0, "{info:?}");
    assert_eq!(info.log_file, hello.log_file.as_str());
    assert_eq!(std::fs::read_to_string(&hello.log_file).unwrap(), "hi\n");

    client.add_process_group("odd").unwrap();
    client.add_process_group("odd").unwrap(); // ALREADY_ADDED is fine
    assert_eq!(
        client.process_info("odd").unwrap().state,
        ProcessState::Stopped
    );
    client.start_process("odd", true).unwrap();
    let info = client.process_info("odd").unwrap();
    assert_eq!(info.state, ProcessState::Running);
    assert_eq!(info.log_file, odd.log_file.as_str());
    let expected_args: String = odd_args.iter().map(|a| format!("[{a}]\n")).collect();
    let expected = format!("{expected_args}{odd_dir}\n");
    assert_eq!(wait_for_log(&odd.log_file, &expected), expected);

    client.signal_process("odd", "USR2").unwrap();
    let log = wait_for_log(&odd.log_file, "got-usr2");
    assert_eq!(log, format!("{expected}got-usr2\n"));

    let all: Vec<_> = client
        .all_process_info()
        .unwrap()
        .into_iter()
        .map(|info| (info.name, info.state))
        .collect();
    assert_eq!(
        all,
        [
            ("hello".to_owned(), ProcessState::Running),
            ("odd".to_owned(), ProcessState::Running)
        ]
    );

    // Removing a running group is refused; the fault says so.
    match client.remove_process_group("odd") {
        Err(Error::Fault {
            method,
            code,
            message,
        }) => {
            assert_eq!(
                (method.as_str(), code, message.as_str()),
                ("supervisor.removeProcessGroup", 91, "STILL_RUNNING: odd")
            );
        }
        other => panic!("expected STILL_RUNNING, got {other:?}"),
    }

    client.stop_process("odd", true).unwrap();
    assert_eq!(
        client.process_info("odd").unwrap().state,
        ProcessState::Stopped
    );
    client.stop_process("odd", true).unwrap(); // NOT_RUNNING is fine
    client.remove_process_group("odd").unwrap();
    client.remove_process_group("odd").unwrap(); // already gone is fine
    assert!(matches!(
        client.process_info("odd"),
        Err(Error::NoSuchProgram { name }) if name == "odd"
    ));
    assert!(matches!(
        client.start_process("nope", false),
        Err(Error::NoSuchProgram { .. })
    ));

    // Signalling a stopped process is an error, not silently ignored.
    client.stop_process("hello", true).unwrap();
    let info = client.process_info("hello").unwrap();
    assert_eq!((info.state, info.pid), (ProcessState::Stopped, 0));
    assert!(matches!(
        client.signal_process("hello", "USR2"),
        Err(Error::Fault { code: 70, .. })
    ));

    // reread reports changed and removed groups without applying them.
    daemon.write_program(&Program {
        start_secs: 3,
        ..hello.clone()
    });
    std::fs::remove_file(daemon.dir.join("etc/supervisor.d/odd.conf")).unwrap();
    let changes = client.reload_config().unwrap();
    assert_eq!(
        (
            changes.added.as_slice(),
            changes.changed.as_slice(),
            changes.removed.as_slice()
        ),
        (&[][..], &["hello".to_owned()][..], &[][..])
    );

    let rounds = 100;
    let started = Instant::now();
    for _ in 0..rounds {
        assert_eq!(client.state().unwrap(), DaemonState::Running);
    }
    let per_call = started.elapsed() / rounds;
    eprintln!("supervisor.getState round trip: {per_call:?} per call over {rounds} calls");

    let supervisord = daemon.pid_from_file().unwrap();
    client.shutdown().unwrap();
    assert!(
        Daemon::wait_for_exit(supervisord, Duration::from_secs(15)),
        "supervisord did not exit"
    );
    assert!(matches!(client.state(), Err(Error::NotRunning { .. })));
}

#[test]
fn guard_stops_supervisord_and_its_children_when_a_test_panics() {
    let seen = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let daemon = Daemon::start("panic");
        let sleeper = Program {
            name: "sleeper".into(),
            command: vec!["/bin/sleep".into(), "30".into()],
            directory: daemon.dir.clone(),
            log_file: daemon.dir.join("log/sleeper.log"),
            autostart: true,
            stop_wait_secs: 5,
            ..Program::default()
        };
        daemon.write_program(&sleeper);
        daemon.client.reload_config().unwrap();
        daemon.client.add_process_group("sleeper").unwrap();
        let child = daemon.client.process_info("sleeper").unwrap().pid;
        *seen.lock().unwrap() = Some((daemon.pid_from_file().unwrap(), child, daemon.dir.clone()));
        panic!("deliberate failure mid-test");
    }));
    assert!(outcome.is_err());
    let (supervisord, child, dir) = seen.into_inner().unwrap().unwrap();
    for pid in [supervisord, child] {
        assert!(pid > 0 && !is_alive(pid), "pid {pid} survived the guard");
    }
    assert!(!dir.exists(), "{dir} was not removed");
}

#[test]
fn new_programs_are_loaded_and_started_in_one_round_trip() {
    let daemon = Daemon::start("multicall");
    let client = &daemon.client;
    let program = |name: &str| Program {
        name: name.into(),
        command: vec!["/bin/sh".into(), "-c".into(), "exec sleep 30".into()],
        directory: daemon.dir.clone(),
        log_file: daemon.dir.join(format!("log/{name}.log")),
        autostart: true,
        autorestart: false,
        start_secs: 1,
        start_retries: 0,
        stop_wait_secs: 5,
        stop_as_group: true,
        log_max_bytes: 1024 * 1024,
        log_backups: 1,
    };
    daemon.write_program(&program("one"));
    daemon.write_program(&program("two"));

    let changes = client.reload_and_add(&["one", "two"]).unwrap();
    assert_eq!(changes.added, ["one", "two"]);
    for name in ["one", "two"] {
        // autostart: starting as soon as it is added, with no start_process.
        let state = client.process_info(name).unwrap().state;
        assert!(
            matches!(state, ProcessState::Starting | ProcessState::Running),
            "{name} is {state:?}"
        );
    }
    // Added again: nothing to do, no error.
    let changes = client.reload_and_add(&["one"]).unwrap();
    assert!(changes.added.is_empty(), "{changes:?}");
    // A name no program file gives: the error names it.
    match client.reload_and_add(&["three"]) {
        Err(sarge_supervisor::Error::NoSuchProgram { name }) => assert_eq!(name, "three"),
        other => panic!("expected NoSuchProgram for three, got {other:?}"),
    }
    for name in ["one", "two"] {
        client.stop_process(name, true).unwrap();
        client.remove_process_group(name).unwrap();
    }
}
