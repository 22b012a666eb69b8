//! A sarge home in a temp folder with its own supervisord, driven through
//! the real `sarge` binary. Every test gets its own home and ports.

#![allow(dead_code)]

pub mod ssh;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const SARGE: &str = env!("CARGO_BIN_EXE_sarge");

/// The example app the demo deploys.
pub fn hello_app() -> PathBuf {
    workspace().join("examples/hello")
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The wheels of the example app, fetched once by `scripts/test`.
pub fn test_wheels() -> PathBuf {
    let dir = std::env::var_os("SARGE_TEST_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/test-wheels"));
    let has_flask = std::fs::read_dir(&dir)
        .map(|entries| {
            entries.flatten().any(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .to_lowercase()
                    .starts_with("flask-")
            })
        })
        .unwrap_or(false);
    assert!(
        has_flask,
        "no Flask wheels in {}: run `scripts/test` (it downloads them with pip)",
        dir.display()
    );
    dir
}

/// Fails, naming the set-up command, if a tool the tests need is missing.
pub fn require_tools() {
    for tool in ["supervisord", "haproxy", "python3", "tar"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|out| out.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is not installed: run `scripts/test`, which installs haproxy, supervisor and python3-venv"
        );
    }
}

/// The user the unprivileged tests run sarge as when the suite runs as
/// root; `scripts/setup` creates it.
pub const TEST_USER: &str = "sarge-test";

/// `Some((uid, gid))` of [`TEST_USER`] when the suite runs as root, `None`
/// when it runs as another user (and is unprivileged already). Fails,
/// naming `scripts/setup`, when root has no such user: these tests must
/// never pass by quietly running as root, where permissions mean nothing.
pub fn unprivileged_user() -> Option<(u32, u32)> {
    let euid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&euid.stdout).trim() != "0" {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(TEST_USER).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Some((uid, gid)),
        _ => panic!(
            "the tests run as root but user {TEST_USER} does not exist: run `scripts/setup` (it creates it) or `scripts/test`"
        ),
    }
}

static NEXT_BLOCK: AtomicU16 = AtomicU16::new(0);

/// A block of 100 ports reserved for one test home across all test
/// processes (nextest runs each test in its own): a marker file created
/// with O_EXCL claims it. Two homes must never share a stable port, since
/// haproxy binds with SO_REUSEPORT and the kernel would split connections
/// between them. The blocks lie below Linux's ephemeral ports
/// (32768-60999), so no outgoing connection takes an instance's port
/// between the check that it is free and the app binding it.
struct PortBlock {
    base: u16,
    marker: PathBuf,
}

impl PortBlock {
    const COUNT: u16 = 220;

    fn claim() -> Self {
        let dir = std::env::temp_dir().join("sarge-e2e-ports");
        std::fs::create_dir_all(&dir).unwrap();
        let start =
            std::process::id() as u16 % Self::COUNT + NEXT_BLOCK.fetch_add(1, Ordering::SeqCst);
        for offset in 0..Self::COUNT {
            let base = 10_000 + (start + offset) % Self::COUNT * 100;
            let marker = dir.join(base.to_string());
            if let Ok(owner) = std::fs::read_to_string(&marker) {
                // A block whose owner died is free again.
                if Path::new(&format!("/proc/{}", owner.trim())).exists() {
                    continue;
                }
                let _ = std::fs::remove_file(&marker);
            }
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker);
            if let Ok(mut file) = created {
                file.write_all(std::process::id().to_string().as_bytes())
                    .unwrap();
                return Self { base, marker };
            }
        }
        panic!("no free block of test ports in 10000-31999");
    }
}

impl Drop for PortBlock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.marker);
    }
}

pub struct TestHome {
    pub root: PathBuf,
    /// The stable port of `web`; `api` is `stable + 1`.
    pub stable: u16,
    pub first_port: u16,
    pub last_port: u16,
    supervisord_started: bool,
    /// `Some((uid, gid))` when every command runs as [`TEST_USER`].
    user: Option<(u32, u32)>,
    _ports: PortBlock,
}

impl TestHome {
    /// An initialised home with `env` and a port map for web and api, and
    /// supervisord running.
    pub fn new(name: &str, env_yaml: &str) -> Self {
        let mut home = Self::initialised(name);
        home.write_config(env_yaml, "");
        home.start_supervisord();
        home
    }

    /// An initialised home with nothing started.
    pub fn initialised(name: &str) -> Self {
        Self::initialised_as(name, None)
    }

    /// Like [`TestHome::new`], but sarge, its supervisord and so the apps
    /// run as the unprivileged [`TEST_USER`] (when the suite runs as root;
    /// a suite run by another user is unprivileged already). Root ignores
    /// permission bits, so only such a home shows what a mode-000 folder
    /// or a read-only virtualenv does in sarge's documented set-up.
    pub fn new_unprivileged(name: &str, env_yaml: &str) -> Self {
        let mut home = Self::initialised_as(name, unprivileged_user());
        home.write_config(env_yaml, "");
        home.start_supervisord();
        home
    }

    fn initialised_as(name: &str, user: Option<(u32, u32)>) -> Self {
        require_tools();
        let ports = PortBlock::claim();
        let base = ports.base;
        let root = std::env::temp_dir().join(format!("sarge-e2e-{name}-{}", std::process::id()));
        remove_home_dir(&root);
        std::fs::create_dir_all(&root).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid)).unwrap();
        }
        let home = Self {
            root,
            stable: base,
            first_port: base + 10,
            last_port: base + 49,
            supervisord_started: false,
            user,
            _ports: ports,
        };
        let out = home.sarge(&["init"]);
        assert!(out.status.success(), "init failed: {}", stderr(&out));
        home
    }

    /// Writes sarge.yaml with `port_map` as given (the body of the key),
    /// for tests whose stable addresses are not this home's web and api.
    pub fn write_config_with_port_map(&self, port_map: &str, env_yaml: &str, extra: &str) {
        let text = format!(
            "port_range: [{first}, {last}]\nport_map:\n{port_map}\npython_dist: {dist}\nready_timeout: 20\ndrain_timeout: 5\nenv:\n{env_yaml}\n{extra}\n",
            first = self.first_port,
            last = self.last_port,
            dist = test_wheels().display(),
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("etc/sarge.yaml")
    }

    /// Writes sarge.yaml: this home's ports, the test wheels, `env_yaml`
    /// (the body of `env:`), and `extra` top-level lines.
    pub fn write_config(&self, env_yaml: &str, extra: &str) {
        let ready = if extra.contains("ready_timeout") {
            ""
        } else {
            "ready_timeout: 20\n"
        };
        // The unprivileged user cannot reach a python (or uv) under /root
        // (mode 0700, where pyenv lives); Debian's has venv and ensurepip.
        let python = if self.user.is_some() && !extra.contains("python_bin") {
            "python_bin: /usr/bin/python3\n"
        } else {
            ""
        };
        let text = format!(
            "port_range: [{first}, {last}]\nport_map:\n  web: 127.0.0.1:{web}\n  api: 127.0.0.1:{api}\npython_dist: {dist}\n{python}{ready}drain_timeout: 5\nenv:\n{env_yaml}\n{extra}\n",
            first = self.first_port,
            last = self.last_port,
            web = self.stable,
            api = self.stable + 1,
            dist = test_wheels().display(),
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn start_supervisord(&mut self) -> &mut Self {
        let out = self
            .as_user(self.root.join("bin/supervisord"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bin/supervisord failed: {}",
            stderr(&out)
        );
        self.supervisord_started = true;
        let socket = self.root.join("var/run/supervisor.sock");
        wait_for(
            Duration::from_secs(10),
            || socket.exists(),
            "supervisord's socket",
        );
        self
    }

    pub fn stop_supervisord(&mut self) {
        if !self.supervisord_started {
            return;
        }
        // supervisord rewrites its pid file while it starts: read until it
        // holds a pid.
        let pidfile = self.root.join("var/run/supervisord.pid");
        let started = Instant::now();
        let pid = loop {
            let pid = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok());
            if pid.is_some() || started.elapsed() > Duration::from_secs(5) {
                break pid;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match pid {
            Some(pid) => {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
                let proc = PathBuf::from(format!("/proc/{pid}"));
                wait_for(
                    Duration::from_secs(30),
                    || !proc.exists(),
                    "supervisord to exit",
                );
            }
            None => {
                let _ = Command::new(self.root.join("bin/supervisorctl"))
                    .arg("shutdown")
                    .output();
            }
        }
        self.supervisord_started = false;
    }

    /// A command for `program` that runs as this home's user.
    pub fn as_user(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let Some((uid, gid)) = self.user else {
            return Command::new(program);
        };
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            // Root's PATH leads to pyenv's shims under /root, which this
            // user cannot read: so sarge finds no uv and uses venv + pip.
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", &self.root)
            .env("USER", TEST_USER)
            .env_remove("PYENV_VERSION");
        command
    }

    /// Whether this home's commands run as the unprivileged [`TEST_USER`].
    pub fn is_unprivileged(&self) -> bool {
        self.user.is_some()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = self.as_user(SARGE);
        command.arg("--home").arg(&self.root).args(args);
        command.env_remove("SARGE_HOME");
        command
    }

    pub fn sarge(&self, args: &[&str]) -> Output {
        let output = self.command(args).output().unwrap();
        self.wait_unlocked();
        output
    }

    /// Waits until no sarge command holds the home lock. A rollout returns
    /// as soon as its new release serves; the process it leaves to retire
    /// the old instances holds the lock until they are gone, so a test
    /// that looks at the home afterwards sees it finished.
    pub fn wait_unlocked(&self) {
        if let Ok(lock) = std::fs::File::open(self.root.join("var/lock")) {
            let _ = lock.lock();
        }
    }

    /// Runs sarge with `args` and `input` on its stdin, and SIGKILLs it
    /// once its progress shows the `nth` line starting with `marker`. The
    /// lines before that one, and that line; the test fails if the command
    /// finished before the kill.
    pub fn killed_at_line(
        &self,
        args: &[&str],
        input: &[u8],
        marker: &str,
        nth: usize,
    ) -> (Vec<String>, String) {
        use std::io::BufRead;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let mut seen = 0;
        let mut before = Vec::new();
        let mut killed_at = String::new();
        for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            if line.starts_with(marker) {
                seen += 1;
                if seen == nth {
                    child.kill().unwrap();
                    killed_at = line;
                    break;
                }
            }
            before.push(line);
        }
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "{args:?} finished before the kill at {marker:?}: {before:?}"
        );
        (before, killed_at)
    }

    /// `tar -c` of `app_dir` piped into `sarge deploy - PROCESS`.
    pub fn deploy(&self, app_dir: &Path, process: &str) -> Output {
        let tarball = tar_of(app_dir);
        self.deploy_bytes(&tarball, process)
    }

    pub fn deploy_bytes(&self, tarball: &[u8], process: &str) -> Output {
        self.deploy_processes(tarball, &[process])
    }

    /// `sarge deploy - PROCESS...` of `tarball`; with no process, every
    /// process type of its Procfile.
    pub fn deploy_processes(&self, tarball: &[u8], processes: &[&str]) -> Output {
        let mut args = vec!["deploy", "-"];
        args.extend_from_slice(processes);
        let output = run_with_stdin(self.command(&args), tarball);
        self.wait_unlocked();
        output
    }

    pub fn deploy_ok(&self, app_dir: &Path, process: &str) -> String {
        let out = self.deploy(app_dir, process);
        assert!(out.status.success(), "deploy failed:\n{}", stderr(&out));
        stderr(&out)
    }

    /// `list --json`, parsed.
    pub fn instances(&self) -> Vec<serde_json::Value> {
        let out = self.sarge(&["list", "--json"]);
        assert!(out.status.success(), "list failed: {}", stderr(&out));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        value["instances"].as_array().unwrap().clone()
    }

    /// `releases --json`, parsed.
    pub fn releases(&self) -> Vec<serde_json::Value> {
        let out = self.sarge(&["releases", "--json"]);
        assert!(out.status.success(), "releases failed: {}", stderr(&out));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        value["releases"].as_array().unwrap().clone()
    }

    pub fn instance_of(&self, process: &str) -> serde_json::Value {
        self.instances()
            .into_iter()
            .find(|instance| instance["process"] == process)
            .unwrap_or_else(|| panic!("no {process} instance listed"))
    }

    /// Everything under the home except logs, sockets and pid files, with
    /// the content of each file: compared before and after a refused input.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        collect(&self.root, &self.root, &mut files);
        files.sort();
        files
    }
}

/// Fails, naming the files that differ, if the home is not as `before`.
pub fn assert_unchanged(home: &TestHome, before: &[(String, Vec<u8>)], case: &str) {
    let after = home.snapshot();
    if after != before {
        let added: Vec<&String> = after
            .iter()
            .filter(|f| !before.contains(f))
            .map(|f| &f.0)
            .collect();
        let removed: Vec<&String> = before
            .iter()
            .filter(|f| !after.contains(f))
            .map(|f| &f.0)
            .collect();
        panic!("{case}: the home changed: new or changed {added:?}, gone or changed {removed:?}");
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if relative.starts_with("var/log")
            || relative.starts_with("var/run")
            || relative.starts_with("var/cache")
            || relative == "var/lock"
        {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files.push((format!("{relative}/"), Vec::new()));
            collect(root, &path, files);
        } else if kind.is_file() {
            files.push((relative, std::fs::read(&path).unwrap_or_default()));
        } else {
            files.push((relative, b"(link or special)".to_vec()));
        }
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        self.wait_unlocked();
        if self.supervisord_started {
            self.stop_supervisord();
        }
        if !std::thread::panicking() {
            remove_home_dir(&self.root);
        } else {
            eprintln!("test home kept for inspection: {}", self.root.display());
        }
    }
}

/// Deletes a test home; its virtualenvs are read-only, which stops a
/// plain `remove_dir_all` run by a user other than root.
pub fn remove_home_dir(root: &Path) {
    if root.exists() {
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(root)
            .status();
        let _ = std::fs::remove_dir_all(root);
    }
}

/// Runs `command` with `input` on its stdin and waits for its output. A
/// command that closes stdin early (a refused tarball) is not a test
/// failure: what it printed says why.
pub fn run_with_stdin(mut command: Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A plain tar of `dir`'s content.
pub fn tar_of(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["--exclude=__pycache__", "-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success(), "tar failed: {}", stderr(&out));
    out.stdout
}

/// A copy of the hello app in a temp folder, for tests that change it.
pub fn app_copy(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sarge-app-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["app.py", "Procfile", "requirements.txt"] {
        std::fs::copy(hello_app().join(file), dir.join(file)).unwrap();
    }
    dir
}

/// `GET path` on 127.0.0.1:port; the status code and body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // One write: a request split over several small segments waits on
    // Nagle's algorithm and delayed ACKs (tens of ms each).
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Requests on the stable port from the background while a test redeploys:
/// one client opening a new connection per request, one keeping a single
/// connection alive across requests.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<std::thread::JoinHandle<LoadCount>>,
}

#[derive(Debug, Default, Clone)]
pub struct LoadCount {
    pub served: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    /// Bodies seen, in order, deduplicated consecutively.
    pub bodies: Vec<String>,
}

impl LoadCount {
    fn record(&mut self, result: std::io::Result<(u16, String)>) {
        match result {
            Ok((200, body)) => {
                self.served += 1;
                if self.bodies.last() != Some(&body) {
                    self.bodies.push(body);
                }
            }
            Ok((status, body)) => {
                self.failed += 1;
                self.failures.push(format!("{status}: {body}"));
            }
            Err(error) => {
                self.failed += 1;
                self.failures.push(error.to_string());
            }
        }
    }

    pub fn merge(mut self, other: LoadCount) -> LoadCount {
        self.served += other.served;
        self.failed += other.failed;
        self.failures.extend(other.failures);
        self.bodies.extend(other.bodies);
        self
    }
}

impl Load {
    pub fn start(port: u16) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fresh = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut count = LoadCount::default();
                while !stop.load(Ordering::Relaxed) {
                    count.record(http_get(port, "/"));
                }
                count
            })
        };
        let kept_alive = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut count = LoadCount::default();
                let mut connection = None;
                while !stop.load(Ordering::Relaxed) {
                    if connection.is_none() {
                        match TcpStream::connect(("127.0.0.1", port)) {
                            Ok(stream) => connection = Some(std::io::BufReader::new(stream)),
                            Err(error) => {
                                count.record(Err(error));
                                continue;
                            }
                        }
                    }
                    let Some(stream) = connection.as_mut() else {
                        continue;
                    };
                    let result = keep_alive_get(stream);
                    // A well-behaved client reconnects after an error or a
                    // `Connection: close` answer (haproxy's reload says so).
                    if !matches!(result, Ok((_, _, true))) {
                        connection = None;
                    }
                    count.record(result.map(|(status, body, _)| (status, body)));
                }
                count
            })
        };
        Self {
            stop,
            workers: vec![fresh, kept_alive],
        }
    }

    /// Stops the clients; the counts of the fresh-connection client and of
    /// the keep-alive client.
    pub fn finish(self) -> (LoadCount, LoadCount) {
        self.stop.store(true, Ordering::Relaxed);
        let mut counts = self
            .workers
            .into_iter()
            .map(|worker| worker.join().unwrap());
        (counts.next().unwrap(), counts.next().unwrap())
    }
}

/// One HTTP/1.1 request on a kept-alive connection; reads exactly one
/// response (by Content-Length) so the connection can be reused. Returns
/// the status, the body, and whether the connection may be reused.
fn keep_alive_get(
    stream: &mut std::io::BufReader<TcpStream>,
) -> std::io::Result<(u16, String, bool)> {
    use std::io::BufRead;
    stream
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))?;
    stream
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")?;
    let mut status_line = String::new();
    if stream.read_line(&mut status_line)? == 0 {
        return Err(std::io::Error::other(
            "keep-alive connection closed before a response",
        ));
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut length = 0usize;
    let mut reusable = true;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close")
            {
                reusable = false;
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    Ok((
        status,
        String::from_utf8_lossy(&body).into_owned(),
        reusable,
    ))
}

/// A tarball of the hello app followed by `extra` raw entries.
pub fn app_tarball_with(extra: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_dir_all(".", hello_app()).unwrap();
    for (name, entry_type, data, link) in extra {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(*entry_type);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        if !link.is_empty() {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// An app folder: the hello app with `files` replaced (empty content
/// removes the file).
pub fn app_with(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = app_copy(name);
    for (file, content) in files {
        if content.is_empty() {
            std::fs::remove_file(dir.join(file)).unwrap();
        } else {
            std::fs::write(dir.join(file), content).unwrap();
        }
    }
    dir
}

pub struct Refusal<'a> {
    pub case: &'a str,
    pub output: std::process::Output,
    pub expected: &'a str,
}

/// The checks every refused input must pass.
pub fn assert_refused(home: &TestHome, before: &[(String, Vec<u8>)], refusal: Refusal<'_>) {
    let Refusal {
        case,
        output,
        expected,
    } = refusal;
    let message = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{case}: exit code; stderr:\n{message}"
    );
    // Progress lines may come first; then one `error:` line (followed, for
    // an app that failed, by the last lines of its log).
    let errors: Vec<&str> = message
        .lines()
        .filter(|line| line.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{case}: not one `error:` line:\n{message}");
    let error = &message[message.find("error: ").unwrap()..];
    assert!(
        error.contains(expected),
        "{case}: error does not say {expected:?}:\n{message}"
    );
    assert_eq!(
        http_get(home.stable, "/").map(|(status, _)| status).ok(),
        Some(200),
        "{case}: the old version stopped serving"
    );
    assert_unchanged(home, before, case);
}
