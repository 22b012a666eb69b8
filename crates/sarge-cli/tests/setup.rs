#![allow(clippy::unwrap_used)]
//! `sarge setup` end to end: a real OpenSSH server on loopback and a
//! folder on this machine as the server's sarge home. The binary that goes
//! up is the one under test, so the server ends up running the same
//! bytes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::ssh::Sshd;
use common::*;

/// `sarge setup ARGS` on the dev machine, with `ssh` as SARGE_SSH.
fn setup(ssh: &str, args: &[&str]) -> Output {
    Command::new(SARGE)
        .arg("setup")
        .args(args)
        .env("SARGE_SSH", ssh)
        .env_remove("SARGE_HOME")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn target(home: &Path) -> String {
    format!("localhost:{}", home.display())
}

fn same_bytes_as_this_sarge(binary: &Path) -> bool {
    std::fs::read(binary).unwrap() == std::fs::read(SARGE).unwrap()
}

/// The pid of the supervisord a home's pid file names, once it names one
/// of a live process.
fn supervisord_pid(home: &Path) -> Option<u32> {
    let started = Instant::now();
    loop {
        let pid = std::fs::read_to_string(home.join("var/run/supervisord.pid"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if pid.is_some() || started.elapsed() > Duration::from_secs(5) {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A folder that `sarge setup` makes a home in; on drop, the supervisord it
/// may have started is stopped and the folder removed.
struct ServerHome {
    root: PathBuf,
}

impl ServerHome {
    fn new(name: &str) -> Self {
        require_tools();
        let root = std::env::temp_dir().join(format!("sarge-setup-{name}-{}", std::process::id()));
        remove_home_dir(&root);
        Self { root }
    }
}

impl Drop for ServerHome {
    fn drop(&mut self) {
        if let Some(pid) = supervisord_pid(&self.root) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let started = Instant::now();
            while proc.exists() && started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !std::thread::panicking() {
            remove_home_dir(&self.root);
        }
    }
}

#[test]
fn setup_installs_this_sarge_runs_init_and_starts_supervisord() {
    let sshd = Sshd::start("setup-fresh");
    let home = ServerHome::new("fresh");
    let destination = target(&home.root);

    let out = setup(&sshd.ssh_command(), &[&destination, "--start"]);
    let err = stderr(&out);
    assert!(out.status.success(), "setup failed:\n{err}");
    assert!(
        same_bytes_as_this_sarge(&home.root.join("opt/sarge")),
        "opt/sarge is not this sarge"
    );
    assert!(
        home.root.join("etc/sarge.yaml").is_file(),
        "init did not run:\n{err}"
    );
    assert!(home.root.join("bin/supervisord").is_file(), "{err}");
    assert!(
        err.contains(&format!("{destination} | uploading sarge"))
            && err.contains("the home has none"),
        "{err}"
    );
    // init's own lines, shown with the target, and the boot line again at
    // the end.
    assert!(
        err.contains(&format!("{destination} | sarge home ready at")),
        "{err}"
    );
    let boot = format!("{}/bin/supervisord", home.root.display());
    assert!(
        err.lines()
            .any(|line| line.starts_with("at boot, on the server") && line.contains(&boot)),
        "no boot line:\n{err}"
    );
    assert!(
        err.contains(&format!("{destination} | supervisord started")),
        "{err}"
    );
    let supervisord = supervisord_pid(&home.root).expect("supervisord is not running");
    let leftovers: Vec<_> = std::fs::read_dir(home.root.join("opt"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .filter(|name| name != "sarge")
        .collect();
    assert!(leftovers.is_empty(), "left in opt/: {leftovers:?}");

    // Again: the same bytes are there, nothing goes up, supervisord stays.
    let again = setup(&sshd.ssh_command(), &[&destination, "--start"]);
    let err = stderr(&again);
    assert!(again.status.success(), "second setup failed:\n{err}");
    assert!(!err.contains("uploading"), "{err}");
    assert!(err.contains("already there"), "{err}");
    assert!(err.contains("supervisord was running"), "{err}");
    assert_eq!(supervisord_pid(&home.root), Some(supervisord));
}

#[test]
fn setup_again_upgrades_sarge_in_place_while_the_app_serves() {
    let sshd = Sshd::start("setup-upgrade");
    let home = TestHome::new("setup-upgrade", "  MESSAGE: served");
    home.deploy_ok(&hello_app(), "web");
    // The home runs an older sarge: a wrapper that says so and runs the
    // real one, as bin/sarge and bin/supervisord would.
    let opt = home.root.join("opt");
    std::fs::rename(opt.join("sarge"), opt.join("sarge-old")).unwrap();
    std::fs::write(
        opt.join("sarge"),
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" --version \"*) echo 'sarge 0.0.9 (0000000)'; exit 0;; esac\nexec {}/sarge-old \"$@\"\n",
            opt.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        opt.join("sarge"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let instance = home.instance_of("web");
    let supervisord = supervisord_pid(&home.root).expect("supervisord is not running");
    let config = std::fs::read(home.config_path()).unwrap();

    let load = Load::start(home.stable);
    std::thread::sleep(Duration::from_millis(200));
    let destination = target(&home.root);
    let out = setup(&sshd.ssh_command(), &[&destination, "--start"]);
    std::thread::sleep(Duration::from_millis(200));
    let (fresh, kept_alive) = load.finish();
    let load = fresh.merge(kept_alive);

    let err = stderr(&out);
    assert!(out.status.success(), "setup failed:\n{err}");
    assert!(
        err.contains("uploading sarge") && err.contains("the home runs sarge 0.0.9 (0000000)"),
        "{err}"
    );
    assert!(same_bytes_as_this_sarge(&opt.join("sarge")), "not upgraded");
    assert!(err.contains("supervisord was running"), "{err}");
    assert_eq!(load.failed, 0, "failed requests: {:?}", load.failures);
    assert!(load.served > 0, "no request was served");
    assert_eq!(
        load.bodies
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        1,
        "{:?}",
        load.bodies
    );
    // The same instance and supervisord, and the user's config untouched.
    let after = home.instance_of("web");
    assert_eq!(after["id"], instance["id"]);
    assert!(instance["pid"].as_u64().is_some(), "{instance}");
    assert_eq!(after["pid"], instance["pid"], "the instance was restarted");
    assert_eq!(supervisord_pid(&home.root), Some(supervisord));
    assert_eq!(std::fs::read(home.config_path()).unwrap(), config);
    // The upgraded bin/sarge works on the running app.
    let listed = Command::new(home.root.join("bin/sarge"))
        .args(["list", "--json"])
        .env_remove("SARGE_HOME")
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains(instance["id"].as_str().unwrap()));
}

/// A SARGE_SSH that reaches `sshd` with `fake` first on the server's PATH,
/// so the server's own `uname` or `getconf` answers are replaced.
fn ssh_with_fake_tools(sshd: &Sshd, name: &str, tools: &[(&str, &str)]) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("sarge-setup-fake-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let executable = |path: &Path, text: &str| {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    };
    for (tool, script) in tools {
        executable(&dir.join(tool), &format!("#!/bin/sh\n{script}\n"));
    }
    let wrapper = dir.join("ssh");
    executable(
        &wrapper,
        &format!(
            "#!/bin/bash\n# The last word is the remote command: run it with the fakes first on PATH.\nexec {ssh} \"${{@:1:$#-1}}\" \"PATH={dir}:\\$PATH; export PATH; ${{@: -1}}\"\n",
            ssh = sshd.ssh_command(),
            dir = dir.display()
        ),
    );
    (dir, wrapper.display().to_string())
}

#[test]
fn a_server_sarge_cannot_run_on_gets_what_to_build_there_and_keeps_a_build_of_its_own() {
    let sshd = Sshd::start("setup-foreign");
    let home = ServerHome::new("foreign");
    let destination = target(&home.root);

    let uname = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|dir| dir.join("uname"))
        .find(|path| path.is_file())
        .expect("uname is not on PATH");
    let (fakes, ssh) = ssh_with_fake_tools(
        &sshd,
        "riscv",
        &[(
            "uname",
            &format!(
                "if [ \"$1\" = -m ]; then echo riscv64; else exec {} \"$@\"; fi",
                uname.display()
            ),
        )],
    );
    let out = setup(&ssh, &[&destination, "--start"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{destination} | server: Linux riscv64")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "error: {destination}: this sarge cannot run there: the server is riscv64 and this sarge is built for {}",
            std::env::consts::ARCH
        )),
        "{err}"
    );
    assert!(
        err.contains("cargo install --path crates/sarge-cli"),
        "{err}"
    );
    assert!(err.contains("haproxy supervisor python3-venv"), "{err}");
    assert!(!err.contains("uploading"), "{err}");
    assert!(!home.root.exists(), "something was written on the server");

    // Built there, as the error says: a build of this same version (other
    // bytes) is left in place, and init runs with it.
    std::fs::create_dir_all(home.root.join("opt")).unwrap();
    let mut built = std::fs::read(SARGE).unwrap();
    built.extend_from_slice(b"built on the server");
    let binary = home.root.join("opt/sarge");
    std::fs::write(&binary, &built).unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let init = Command::new(&binary)
        .arg("--home")
        .arg(&home.root)
        .arg("init")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    let out = setup(&ssh, &[&destination]);
    let err = stderr(&out);
    assert!(out.status.success(), "setup failed:\n{err}");
    assert!(!err.contains("uploading"), "{err}");
    assert!(
        err.contains(&format!("{destination} | sarge home ready at")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        built,
        "the server's build was replaced"
    );
    remove_home_dir(&home.root);
    let _ = std::fs::remove_dir_all(fakes);

    // The same architecture with a glibc older than this sarge needs.
    if std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .is_ok_and(|out| out.status.success())
    {
        let (fakes, ssh) =
            ssh_with_fake_tools(&sshd, "old-glibc", &[("getconf", "echo 'glibc 2.3'")]);
        let out = setup(&ssh, &[&destination]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("this sarge cannot run there: the server has glibc 2.3 and this sarge needs glibc 2."),
            "{err}"
        );
        assert!(!home.root.exists(), "something was written on the server");
        let _ = std::fs::remove_dir_all(fakes);
    }
}

#[test]
fn setup_errors_name_the_target() {
    let home = ServerHome::new("unreachable");
    let destination = target(&home.root);
    // Nothing listens on port 1.
    let ssh = "ssh -p 1 -F /dev/null -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null";
    let out = setup(ssh, &[&destination]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("error: {destination}: ssh failed: ")) && err.contains("port 1"),
        "{err}"
    );

    let out = setup("/nonexistent/ssh -p 22", &[&destination]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "error: {destination}: ssh failed: cannot run /nonexistent/ssh"
        )),
        "{err}"
    );

    let out = setup("ssh", &["web1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("target \"web1\" is not [user@]host:SARGE_HOME"),
        "{}",
        stderr(&out)
    );
    assert!(!home.root.exists());
}
