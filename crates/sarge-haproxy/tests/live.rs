//! Real haproxy in master-worker mode, real HTTP backends: a switch over the
//! admin socket and a master reload must not fail a single request.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use common::{haproxy_bin, random_listener, random_port, TempDir};
use sarge_haproxy::{AdminClient, Error, HaproxyConfig, Route, Server};

/// Answers every request with `body`, keeping connections alive.
fn serve_fixed(listener: TcpListener, body: &'static str) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || serve_connection(stream, body));
        }
    });
}

fn serve_connection(stream: TcpStream, body: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        // Requests here are bodiless GETs: the head ends at the blank line.
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A keep-alive HTTP/1.1 client connection.
struct Client(BufReader<TcpStream>);

impl Client {
    fn connect(port: u16) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client(BufReader::new(stream)))
    }

    /// Status code and body of one `GET /`.
    fn get(&mut self) -> std::io::Result<(u16, String)> {
        self.0
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")?;
        let mut status_line = String::new();
        self.0.read_line(&mut status_line)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            if self.0.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("connection closed in headers"));
            }
            if line == "\r\n" {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.0.read_exact(&mut body)?;
        Ok((status, String::from_utf8(body).unwrap()))
    }
}

fn get_once(port: u16) -> std::io::Result<(u16, String)> {
    Client::connect(port)?.get()
}

/// haproxy's master process, stopped (with its worker) on drop.
struct Haproxy {
    child: Child,
    log: Utf8PathBuf,
}

impl Haproxy {
    fn start(config: &Utf8Path, log: Utf8PathBuf) -> Self {
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(haproxy_bin())
            .args(["-W", "-db", "-f"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        Haproxy { child, log }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SIGTERM to the master stops the worker too; SIGKILL only as a
        // last resort, since it could leave the worker behind.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- haproxy log ---\n{}", self.log());
        }
    }
}

fn wait_for(what: &str, haproxy: &Haproxy, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n--- haproxy log ---\n{}",
            haproxy.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn worker_pid(admin: &AdminClient) -> Option<String> {
    let info = admin.command("show info").ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("Pid: "))
        .map(str::to_owned)
}

/// Fresh connections and one kept-alive connection, requesting in a loop
/// until stopped; every answer must be a 200 from one of the backends.
struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<Vec<String>>>,
    requests: Arc<AtomicU32>,
}

impl Load {
    fn start(port: u16, keep_alive: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU32::new(0));
        let mut handles = Vec::new();
        for worker in 0..4 {
            let stop = stop.clone();
            let requests = requests.clone();
            let use_keep_alive = keep_alive && worker == 0;
            handles.push(thread::spawn(move || {
                let mut failures = Vec::new();
                let mut kept = None;
                while !stop.load(Ordering::Relaxed) {
                    let result = if use_keep_alive {
                        let client = match kept.as_mut() {
                            Some(client) => Ok(client),
                            None => Client::connect(port).map(|c| kept.insert(c)),
                        };
                        client.and_then(Client::get)
                    } else {
                        get_once(port)
                    };
                    requests.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok((200, body)) if body == "one" || body == "two" => {}
                        other => failures.push(format!("{other:?}")),
                    }
                }
                failures
            }));
        }
        Load {
            stop,
            handles,
            requests,
        }
    }

    /// Stop and return every failed request.
    fn finish(self) -> (u32, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (self.requests.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn switch_and_master_reload_fail_no_request() {
    let dir = TempDir::new("live");
    let one = random_listener();
    let two = random_listener();
    let (port_one, port_two) = (
        one.local_addr().unwrap().port(),
        two.local_addr().unwrap().port(),
    );
    serve_fixed(one, "one");
    serve_fixed(two, "two");
    let front = random_port();

    let mut config = HaproxyConfig {
        admin_socket: dir.path().join("admin.sock"),
        routes: vec![Route::new("web", format!("127.0.0.1:{front}"))],
    };
    config.validate().unwrap();
    let cfg_path = dir.path().join("haproxy.cfg");
    config.write_checked(&cfg_path, &haproxy_bin()).unwrap();
    let haproxy = Haproxy::start(&cfg_path, dir.path().join("haproxy.log"));
    let admin = AdminClient::new(config.admin_socket.clone());
    wait_for("admin socket", &haproxy, || admin.is_up());

    // Nothing deployed: the backend has no server.
    assert_eq!(get_once(front).unwrap().0, 503);

    // A server added at runtime comes up ready; applying twice is harmless.
    let one_server = Server::new("web-one", port_one);
    let first = config.routes[0].clone().with_servers([one_server.clone()]);
    admin.apply(&first).unwrap();
    admin.apply(&first).unwrap();
    assert!(admin.serves("web", &one_server).unwrap());
    assert_eq!(get_once(front).unwrap(), (200, "one".to_owned()));
    config.routes[0] = first;
    config.write_checked(&cfg_path, &haproxy_bin()).unwrap();

    let mut kept = Client::connect(front).unwrap();
    assert_eq!(kept.get().unwrap().1, "one");

    // The switch: the new server joins, the old one leaves, under load.
    let load = Load::start(front, true);
    thread::sleep(Duration::from_millis(200));
    let two_server = Server::new("web-two", port_two);
    admin.add_server("web", &two_server).unwrap();
    admin.disable_server("web", &one_server.name).unwrap();
    config.routes[0].servers = vec![two_server.clone()];
    thread::sleep(Duration::from_millis(200));
    let (requests, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(requests > 10, "load only made {requests} requests");

    // The connection opened before the switch is re-dispatched per request.
    assert_eq!(kept.get().unwrap(), (200, "two".to_owned()));
    for _ in 0..5 {
        assert_eq!(get_once(front).unwrap(), (200, "two".to_owned()));
    }
    wait_for("old server to drain", &haproxy, || {
        admin.sessions("web", &one_server.name).unwrap() == 0
    });
    drop(kept);
    wait_for("old server to be deleted", &haproxy, || {
        admin.delete_server("web", &one_server.name).unwrap()
    });
    let names: Vec<String> = admin
        .servers("web")
        .unwrap()
        .into_iter()
        .map(|server| server.name)
        .collect();
    assert_eq!(names, ["web-two"]);

    // The config now says what the runtime does, so a reload keeps it.
    config.write_checked(&cfg_path, &haproxy_bin()).unwrap();
    let old_worker = worker_pid(&admin).unwrap();
    let load = Load::start(front, false);
    thread::sleep(Duration::from_millis(100));
    haproxy.signal("USR2");
    wait_for("new worker on admin socket", &haproxy, || {
        worker_pid(&admin).is_some_and(|pid| pid != old_worker)
    });
    thread::sleep(Duration::from_millis(200));
    let (requests, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(requests > 10, "load only made {requests} requests");
    for _ in 0..5 {
        assert_eq!(get_once(front).unwrap(), (200, "two".to_owned()));
    }
    admin.apply(config.route("web").unwrap()).unwrap();
    assert_eq!(admin.sessions("web", "web-two").unwrap(), 0);
}

#[test]
fn round_robin_reaches_every_server() {
    let dir = TempDir::new("balance");
    let front = random_port();
    let mut servers = Vec::new();
    for name in ["one", "two", "three"] {
        let listener = random_listener();
        servers.push(Server::new(
            format!("web-{name}"),
            listener.local_addr().unwrap().port(),
        ));
        serve_fixed(listener, name);
    }
    let config = HaproxyConfig {
        admin_socket: dir.path().join("admin.sock"),
        routes: vec![
            Route::new("web", format!("127.0.0.1:{front}")).with_servers(servers[..1].to_vec())
        ],
    };
    let cfg_path = dir.path().join("haproxy.cfg");
    config.write_checked(&cfg_path, &haproxy_bin()).unwrap();
    let haproxy = Haproxy::start(&cfg_path, dir.path().join("haproxy.log"));
    let admin = AdminClient::new(config.admin_socket.clone());
    wait_for("admin socket", &haproxy, || admin.is_up());
    for server in &servers[1..] {
        admin.add_server("web", server).unwrap();
    }
    let answers: std::collections::BTreeSet<String> =
        (0..9).map(|_| get_once(front).unwrap().1).collect();
    assert_eq!(answers.len(), 3, "{answers:?}");
}

#[test]
fn admin_errors_carry_haproxy_message() {
    let dir = TempDir::new("errors");
    let config = HaproxyConfig {
        admin_socket: dir.path().join("admin.sock"),
        routes: vec![Route::new("web", format!("127.0.0.1:{}", random_port()))],
    };
    let cfg_path = dir.path().join("haproxy.cfg");
    config.write_checked(&cfg_path, &haproxy_bin()).unwrap();
    let haproxy = Haproxy::start(&cfg_path, dir.path().join("haproxy.log"));
    let admin = AdminClient::new(config.admin_socket.clone());
    wait_for("admin socket", &haproxy, || admin.is_up());

    match admin.command("set server be_web/zz state ready") {
        Err(Error::Command { command, response }) => {
            assert_eq!(command, "set server be_web/zz state ready");
            assert_eq!(response, "No such server.");
        }
        other => panic!("expected Error::Command, got {other:?}"),
    }
    let err = admin
        .add_server("api", &Server::new("api-1", 8000))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("haproxy admin command `add server be_api/api-1 127.0.0.1:8000`"),
        "{err}"
    );
    assert!(matches!(
        admin.sessions("api", "api-1"),
        Err(Error::Command { .. })
    ));
}

#[test]
fn master_worker_runs_with_no_routes() {
    let dir = TempDir::new("empty");
    let config = HaproxyConfig {
        admin_socket: dir.path().join("admin.sock"),
        routes: vec![],
    };
    let cfg_path = dir.path().join("haproxy.cfg");
    config.write_checked(&cfg_path, &haproxy_bin()).unwrap();
    let mut haproxy = Haproxy::start(&cfg_path, dir.path().join("haproxy.log"));
    let admin = AdminClient::new(config.admin_socket.clone());
    wait_for("admin socket", &haproxy, || admin.is_up());
    thread::sleep(Duration::from_millis(300));
    assert!(
        haproxy.child.try_wait().unwrap().is_none(),
        "haproxy exited:\n{}",
        haproxy.log()
    );
}
