#![allow(clippy::unwrap_used)]
//! `sarge push` end to end: a real OpenSSH server on loopback, sarge homes
//! on this machine as the targets (`localhost:HOME1`, `127.0.0.1:HOME2`),
//! and an app committed in a temp git repository.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::ssh::Sshd;
use common::*;

/// A copy of the hello app committed in a fresh git repository, `.env`
/// ignored.
struct Repo {
    dir: PathBuf,
}

impl Repo {
    fn new(name: &str) -> Self {
        let dir = app_copy(&format!("push-{name}"));
        std::fs::write(dir.join(".gitignore"), ".env\n").unwrap();
        let repo = Self { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.commit("the hello app");
        repo
    }

    /// A folder that is a git repository with no commit.
    fn empty(name: &str) -> Self {
        let dir = app_copy(&format!("push-{name}"));
        let repo = Self { dir };
        repo.git(&["init", "-q"]);
        repo
    }

    fn git(&self, args: &[&str]) -> Output {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args([
                "-c",
                "user.name=sarge test",
                "-c",
                "user.email=test@sarge.invalid",
            ])
            .args(args)
            .output()
            .expect("git is not installed: run `scripts/setup`");
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
        out
    }

    fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.dir.join(file), text).unwrap();
    }

    /// `sarge push ARGS` in the repository, through `sshd`.
    fn push(&self, sshd: &Sshd, args: &[&str]) -> Output {
        push_in(&self.dir, &sshd.ssh_command(), args)
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn push_in(dir: &Path, ssh: &str, args: &[&str]) -> Output {
    Command::new(SARGE)
        .arg("push")
        .args(args)
        .current_dir(dir)
        .env("SARGE_SSH", ssh)
        .env_remove("SARGE_HOME")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn target(host: &str, home: &TestHome) -> String {
    format!("{host}:{}", home.root.display())
}

/// The summary row of `target`.
fn summary_row<'a>(output: &'a str, target: &str) -> &'a str {
    output
        .lines()
        .rev()
        .find(|line| line.starts_with(&format!("{target} ")))
        .unwrap_or_else(|| panic!("no summary row for {target}:\n{output}"))
}

/// A home whose python_dist is its own (empty) `dist/`, supervisord up.
fn home_with_own_dist(name: &str, message: &str) -> TestHome {
    let mut home = TestHome::initialised(name);
    let text = format!(
        "port_range: [{first}, {last}]\nport_map:\n  web: 127.0.0.1:{web}\nready_timeout: 20\ndrain_timeout: 5\nenv:\n  MESSAGE: {message}\n",
        first = home.first_port,
        last = home.last_port,
        web = home.stable,
    );
    std::fs::write(home.config_path(), text).unwrap();
    home.start_supervisord();
    home
}

#[test]
fn push_deploys_head_to_the_env_target_without_uncommitted_changes() {
    let sshd = Sshd::start("env-target");
    let home = TestHome::new("push-env", "  MESSAGE: pushed");
    let repo = Repo::new("env-target");
    let destination = target("localhost", &home);
    repo.write(
        ".env",
        &format!("# where to deploy\nTARGET={destination}\n"),
    );
    // A change not committed: HEAD is deployed, and the push says so.
    let app = std::fs::read_to_string(repo.dir.join("app.py")).unwrap();
    repo.write(
        "app.py",
        &app.replace(
            "return os.environ.get(\"MESSAGE\", \"hello web!\") + \"\\n\"",
            "return \"uncommitted\\n\"",
        ),
    );

    let out = repo.push(&sshd, &[]);
    let err = stderr(&out);
    eprintln!("DEBUG\n{err}");
    assert!(out.status.success(), "push failed:\n{err}");
    assert!(
        err.contains("note: 1 uncommitted or untracked files are not deployed; deploying HEAD"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{destination} | -----> ready")),
        "progress lines are prefixed with the target:\n{err}"
    );
    assert!(
        !err.contains("warning:"),
        "the same sarge on both sides is no mismatch:\n{err}"
    );
    let row = summary_row(&err, &destination);
    assert!(row.contains(" v1 ") && row.ends_with("deployed"), "{row}");
    assert_eq!(
        http_get(home.stable, "/").unwrap(),
        (200, "pushed\n".to_owned())
    );
    assert_eq!(home.releases().len(), 1);
}

#[test]
fn missing_wheels_go_from_the_wheels_folder_once() {
    let sshd = Sshd::start("wheels");
    let home = home_with_own_dist("push-wheels", "wheels");
    // The server has three of the app's seven wheels.
    let dist = home.root.join("dist");
    let mut have = Vec::new();
    for entry in std::fs::read_dir(test_wheels()).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        if ["blinker-", "click-", "itsdangerous-"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            std::fs::copy(entry.path(), dist.join(&name)).unwrap();
            have.push(name);
        }
    }
    assert_eq!(have.len(), 3);

    // The server-side command alone: the lines it lacks, for its Python.
    let requirements = std::fs::read(hello_app().join("requirements.txt")).unwrap();
    let missing = run_with_stdin(home.command(&["dist", "missing", "-"]), &requirements);
    assert!(missing.status.success(), "{}", stderr(&missing));
    assert_eq!(
        stdout(&missing),
        "Flask==3.1.3\nJinja2==3.1.6\nMarkupSafe==3.0.4\nWerkzeug==3.1.9\n"
    );
    let json = run_with_stdin(
        home.command(&["dist", "missing", "--json", "-"]),
        &requirements,
    );
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(json["python_version"].as_str().unwrap().starts_with("3."));
    assert!(json["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|tag| tag == "py3-none-any"));

    // Two of the lines in a file requirements.txt includes: sent too.
    let repo = Repo::new("wheels");
    let text = String::from_utf8(requirements.clone()).unwrap();
    let (base, top): (Vec<&str>, Vec<&str>) = text
        .lines()
        .partition(|line| line.starts_with("MarkupSafe") || line.starts_with("Werkzeug"));
    std::fs::create_dir_all(repo.dir.join("deps")).unwrap();
    repo.write("deps/base.txt", &format!("{}\n", base.join("\n")));
    repo.write(
        "requirements.txt",
        &format!("-r deps/base.txt\n{}\n", top.join("\n")),
    );
    repo.commit("requirements split in two files");
    let destination = target("127.0.0.1", &home);
    let wheels = test_wheels();
    let wheels = wheels.to_str().unwrap();
    let out = repo.push(&sshd, &[&destination, "--wheels", wheels]);
    let err = stderr(&out);
    assert!(out.status.success(), "push failed:\n{err}");
    assert!(
        err.contains(&format!("{destination} | sent 4 wheels: ")),
        "{err}"
    );
    let mut landed: Vec<String> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    landed.sort();
    assert_eq!(landed.len(), 7, "{landed:?}");
    assert!(
        landed.iter().all(|name| name.ends_with(".whl")),
        "{landed:?}"
    );
    assert_eq!(http_get(home.stable, "/").unwrap().1, "wheels\n");

    // Nothing is missing now: nothing is sent again.
    let out = repo.push(&sshd, &[&destination, "--wheels", wheels]);
    let err = stderr(&out);
    assert!(out.status.success(), "second push failed:\n{err}");
    assert!(!err.contains("sent "), "{err}");
    assert!(summary_row(&err, &destination).contains(" v2 "), "{err}");

    // `dist add` refuses a path trick, naming the entry, and adds nothing.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    let name = "../evil-1.0-py3-none-any.whl";
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(4);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &b"PK\x03\x04"[..]).unwrap();
    let out = run_with_stdin(
        home.command(&["dist", "add", "-"]),
        &builder.into_inner().unwrap(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "error: wheel archive entry ../evil-1.0-py3-none-any.whl is not a file name at the top"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&dist).unwrap().count(), 7);
}

#[test]
fn two_targets_both_switch_with_no_failed_request() {
    let sshd = Sshd::start("two");
    let first = TestHome::new("push-two-a", "  MESSAGE: two");
    let second = TestHome::new("push-two-b", "  MESSAGE: two");
    first.deploy_ok(&hello_app(), "web");
    second.deploy_ok(&hello_app(), "web");
    let repo = Repo::new("two");
    let (a, b) = (target("localhost", &first), target("127.0.0.1", &second));
    repo.write(".env", &format!("TARGET_BOTH={a}, {b}\n"));

    let loads = [Load::start(first.stable), Load::start(second.stable)];
    let out = repo.push(&sshd, &["both", "--process", "web", "--parallel", "2"]);
    let err = stderr(&out);
    assert!(out.status.success(), "push failed:\n{err}");
    for (load, home) in loads.into_iter().zip([&first, &second]) {
        let (fresh, kept) = load.finish();
        let total = fresh.merge(kept);
        assert_eq!(total.failed, 0, "{}: {:?}", home.stable, total.failures);
        assert!(total.served > 0);
    }
    for (destination, home) in [(&a, &first), (&b, &second)] {
        let row = summary_row(&err, destination);
        assert!(row.contains(" v2 ") && row.ends_with("deployed"), "{row}");
        assert_eq!(home.releases().len(), 2);
    }
}

#[test]
fn a_target_that_fails_to_prepare_switches_no_target() {
    let sshd = Sshd::start("one-fails");
    let home = TestHome::new("push-fails", "  MESSAGE: old");
    home.deploy_ok(&hello_app(), "web");
    let before = home.snapshot();
    let repo = Repo::new("one-fails");
    let good = target("localhost", &home);
    let bad = "127.0.0.1:/nonexistent/sarge-home";
    let out = repo.push(&sshd, &[&good, bad]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "error: 127.0.0.1:/nonexistent/sarge-home: no sarge home at /nonexistent/sarge-home"
        ),
        "{err}"
    );
    let row = summary_row(&err, &good);
    assert!(
        row.contains("not deployed (127.0.0.1:/nonexistent/sarge-home failed to prepare; nothing was switched anywhere)"),
        "{row}"
    );
    assert!(summary_row(&err, bad).ends_with("failed"), "{err}");
    assert!(err.contains("error: 1 of 2 targets failed"), "{err}");
    assert_eq!(home.releases().len(), 1, "the good target switched");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "old\n");
    // What the good target prepared is gone; only the state remembers the
    // release id it gave, so that it is never given again.
    let state = |files: &[(String, Vec<u8>)]| -> serde_json::Value {
        let (_, bytes) = files
            .iter()
            .find(|(name, _)| name == "var/state/current.json")
            .unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        value.as_object_mut().unwrap().remove("last_prepared");
        value
    };
    let after = home.snapshot();
    assert_eq!(state(&after), state(&before));
    let others = |files: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        files
            .into_iter()
            .filter(|(name, _)| name != "var/state/current.json")
            .collect()
    };
    assert_eq!(
        others(after).iter().map(|f| &f.0).collect::<Vec<_>>(),
        others(before).iter().map(|f| &f.0).collect::<Vec<_>>(),
        "a push that failed to prepare elsewhere left files behind"
    );
}

#[test]
fn bad_local_input_is_refused_before_any_target_is_reached() {
    // No sshd: nothing may be contacted.
    let no_ssh = "false";
    let plain = std::env::temp_dir().join(format!("sarge-push-plain-{}", std::process::id()));
    std::fs::create_dir_all(&plain).unwrap();
    let out = push_in(&plain, no_ssh, &["h:/srv/app"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not in a git repository: run sarge push in the app's repository"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&plain).unwrap();

    let empty = Repo::empty("no-commits");
    let out = push_in(&empty.dir, no_ssh, &["h:/srv/app"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has no commits yet"),
        "{}",
        stderr(&out)
    );

    let repo = Repo::new("bad-input");
    repo.git(&["rm", "-q", "Procfile"]);
    repo.commit("no Procfile");
    let out = push_in(&repo.dir, no_ssh, &["h:/srv/app"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("HEAD of ")
            && stderr(&out).contains("has no Procfile at the repository root"),
        "{}",
        stderr(&out)
    );
    repo.write("Procfile", "web: python app.py $PORT\n");
    repo.commit("Procfile back");

    // No target anywhere: the error says where it looked.
    let out = push_in(&repo.dir, no_ssh, &[]);
    assert_eq!(out.status.code(), Some(1));
    let env_file = repo.dir.canonicalize().unwrap().join(".env");
    assert!(
        stderr(&out).contains(&format!(
            "error: no target to push to: give [user@]host:SARGE_HOME or a name, or set TARGET in {}",
            env_file.display()
        )),
        "{}",
        stderr(&out)
    );

    // A name that .env does not define.
    repo.write(".env", "TARGET_STAGING=s:/srv/app\n");
    let out = push_in(&repo.dir, no_ssh, &["prod"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "error: target \"prod\" is not [user@]host:SARGE_HOME, and {} sets no TARGET_PROD",
            env_file.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ssh_and_remote_failures_name_the_target() {
    let sshd = Sshd::start("remote-errors");
    let home = TestHome::new("push-remote", "  MESSAGE: kept");
    home.deploy_ok(&hello_app(), "web");
    let before = home.snapshot();
    let repo = Repo::new("remote-errors");
    let destination = target("localhost", &home);

    // ssh's own message, with the target.
    let out = repo.push(&sshd, &["nosuchhost.invalid:/srv/app"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: nosuchhost.invalid:/srv/app: ssh failed: ")
            && err.contains("nosuchhost.invalid"),
        "{err}"
    );
    // An ssh command that does not exist.
    let out = push_in(&repo.dir, "/nonexistent/ssh -p 22", &[&destination]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "error: {destination}: ssh failed: cannot run /nonexistent/ssh: "
        )),
        "{err}"
    );
    // A key the server does not know.
    let stranger = sshd.dir.join("stranger_key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let out = push_in(
        &repo.dir,
        &sshd.ssh_command_with_key(&stranger),
        &[&destination],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("error: {destination}: ssh failed: "))
            && err.contains("Permission denied (publickey)"),
        "{err}"
    );

    // The remote `error:` line, with the target.
    let out = repo.push(&sshd, &[&destination, "--process", "worker"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "error: {destination}: process \"worker\" is not in the Procfile (it has: web)"
        )),
        "{err}"
    );
    assert!(summary_row(&err, &destination).ends_with("failed"), "{err}");
    assert_eq!(http_get(home.stable, "/").unwrap().1, "kept\n");
    assert_unchanged(&home, &before, "refused pushes");

    // A server running another sarge: a warning naming both versions.
    let fake = sshd.dir.join("old-home");
    std::fs::create_dir_all(fake.join("bin")).unwrap();
    let script = fake.join("bin/sarge");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$*\" in --version) echo 'sarge 0.0.9' ;; *) echo 'error: this old sarge has no dist command' >&2; exit 1 ;; esac\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let old = format!("localhost:{}", fake.display());
    let out = repo.push(&sshd, &[&old]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{old} | warning: the server runs sarge 0.0.9, this client is {}",
            stdout(&Command::new(SARGE).arg("--version").output().unwrap()).trim()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("error: {old}: this old sarge has no dist command")),
        "{err}"
    );
}

#[test]
fn a_failed_switch_stops_the_rollout_and_names_what_to_roll_back() {
    let sshd = Sshd::start("switch-fails");
    let first = TestHome::new("push-switch-a", "  MESSAGE: first");
    first.deploy_ok(&hello_app(), "web");
    // Prepares (its instance starts and answers on its own port) but
    // cannot switch: its stable address is taken, so haproxy cannot bind it.
    let second = TestHome::new("push-switch-b", "  MESSAGE: second");
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", second.stable)).unwrap();
    let repo = Repo::new("switch-fails");
    let (a, b) = (target("localhost", &first), target("127.0.0.1", &second));

    let out = repo.push(&sshd, &[&a, &b, "--batch", "1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("error: {b}: haproxy did not come up")),
        "{err}"
    );
    assert!(summary_row(&err, &a).ends_with(" deployed"), "{err}");
    assert!(summary_row(&err, &b).ends_with(" failed"), "{err}");
    assert!(
        err.contains(&format!(
            "these targets run the new release; to go back on each:\n  ssh localhost {}/bin/sarge rollback\n",
            first.root.display()
        )),
        "{err}"
    );
    assert_eq!(first.releases().len(), 2);

    // The other way round, the rollout stops before the good target.
    let out = repo.push(&sshd, &[&b, &a]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        summary_row(&err, &a).ends_with(&format!(
            "not deployed (the rollout stopped after {b} failed)"
        )),
        "{err}"
    );
    assert!(!err.contains("to go back on each"), "{err}");
    assert_eq!(first.releases().len(), 2);
    // What the target not reached had prepared is discarded.
    let instances = std::fs::read_dir(first.root.join("var/instances"))
        .unwrap()
        .count();
    assert_eq!(instances, 1);
}

/// A `python3` for the client only: `-m pip download` copies the named
/// wheel from the test wheels into `--dest` (or fails for `pycrypto`, as
/// pip does for an sdist-only package), logging its arguments.
const FAKE_PIP: &str = r#"#!/bin/sh
echo "$@" >> "$FAKE_PIP_LOG"
dest=""
last=""
while [ $# -gt 0 ]; do
  case "$1" in --dest) dest="$2"; shift ;; esac
  last="$1"
  shift
done
name=$(echo "$last" | sed 's/==.*//' | tr 'A-Z' 'a-z')
if [ "$name" = pycrypto ]; then
  echo "ERROR: Could not find a version that satisfies the requirement $last" >&2
  echo "ERROR: No matching distribution found for $last" >&2
  exit 1
fi
cp "$FAKE_PIP_WHEELS"/"$name"-*.whl "$dest"/
"#;

#[test]
fn without_a_wheels_folder_pip_downloads_for_the_servers_python_and_platform() {
    let sshd = Sshd::start("pip");
    let home = home_with_own_dist("push-pip", "pip");
    let repo = Repo::new("pip");
    let destination = target("localhost", &home);
    let bin = sshd.dir.join("client-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("python3"), FAKE_PIP).unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(bin.join("python3"))
        .status()
        .unwrap();
    let log = sshd.dir.join("pip.log");
    let push = |repo: &Repo| {
        Command::new(SARGE)
            .args(["push", &destination])
            .current_dir(&repo.dir)
            .env("SARGE_SSH", sshd.ssh_command())
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("FAKE_PIP_LOG", &log)
            .env("FAKE_PIP_WHEELS", test_wheels())
            .env_remove("SARGE_HOME")
            .output()
            .unwrap()
    };

    let out = push(&repo);
    let err = stderr(&out);
    assert!(out.status.success(), "push failed:\n{err}");
    assert!(
        err.contains(&format!("{destination} | sent 7 wheels: ")),
        "{err}"
    );
    assert_eq!(http_get(home.stable, "/").unwrap().1, "pip\n");
    // Asked for binary wheels only, for the server's Python and platform.
    let requirements = std::fs::read(hello_app().join("requirements.txt")).unwrap();
    let server = run_with_stdin(
        home.command(&["dist", "missing", "--json", "-"]),
        &requirements,
    );
    let server: serde_json::Value = serde_json::from_slice(&server.stdout).unwrap();
    let python_version = server["python_version"].as_str().unwrap();
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(calls.lines().count(), 7, "{calls}");
    let first = calls.lines().next().unwrap();
    for expected in [
        "-m pip download".to_owned(),
        "--only-binary=:all: --no-deps".to_owned(),
        format!("--python-version {python_version}"),
        "--implementation cp".to_owned(),
        format!(
            "--platform {}",
            server["tags"][0]
                .as_str()
                .unwrap()
                .rsplit('-')
                .next()
                .unwrap()
        ),
    ] {
        assert!(first.contains(&expected), "{expected:?} not in {first}");
    }

    // A requirement with no wheel at all: named, with how to build one.
    let text = String::from_utf8(requirements).unwrap();
    repo.write("requirements.txt", &format!("{text}pycrypto==2.6.1\n"));
    repo.commit("an sdist-only requirement");
    let before = home.snapshot();
    let out = push(&repo);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "error: {destination} needs pycrypto==2.6.1, which has no wheel for Python {python_version} on the server's platform (ERROR: No matching distribution found for pycrypto==2.6.1): build one with `pip wheel --no-deps -w wheels 'pycrypto==2.6.1'`"
        )),
        "{err}"
    );
    assert_unchanged(&home, &before, "a push with an sdist-only requirement");
}

#[test]
fn a_client_killed_between_the_phases_leaks_nothing() {
    let sshd = Sshd::start("killed-client");
    let home = TestHome::new("push-killed", "  MESSAGE: old");
    home.write_config("  MESSAGE: old", "prepared_timeout: 1\n");
    home.deploy_ok(&hello_app(), "web");
    let repo = Repo::new("killed-client");
    // An ssh that hangs on the switch, as a client whose laptop sleeps.
    let marker = sshd.dir.join("at-switch");
    let wrapper = sshd.dir.join("ssh-hangs-at-switch");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in *\" switch \"*) touch {}; exec sleep 60 ;; esac\nexec ssh \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .unwrap();
    let ssh = sshd
        .ssh_command()
        .replacen("ssh", wrapper.to_str().unwrap(), 1);
    let mut client = Command::new(SARGE)
        .args(["push", &target("localhost", &home)])
        .current_dir(&repo.dir)
        .env("SARGE_SSH", &ssh)
        .env_remove("SARGE_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    wait_for(
        std::time::Duration::from_secs(30),
        || marker.exists(),
        "the push to reach its switch",
    );
    // The client and its ssh die between the phases.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", client.id())])
        .status();
    let _ = client.wait();
    let instances = || {
        std::fs::read_dir(home.root.join("var/instances"))
            .unwrap()
            .count()
    };
    assert_eq!(
        instances(),
        2,
        "the prepared instance runs beside the old one"
    );
    assert_eq!(http_get(home.stable, "/").unwrap().1, "old\n");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The next command, whatever it is, discards it.
    let out = home.sarge(&["recover"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("was prepared but not switched"),
        "{}",
        stderr(&out)
    );
    assert_eq!(instances(), 1);
    assert_eq!(home.releases().len(), 1);
    assert_eq!(http_get(home.stable, "/").unwrap().1, "old\n");
}
