//! A real OpenSSH server on loopback for the `sarge push` tests: its own
//! host key, client key and config in a temp folder, never the machine's
//! `/etc/ssh` or `~/.ssh`. Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// An `sshd -D` accepting the generated client key for the current user.
pub struct Sshd {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

fn require(tool: &str) -> PathBuf {
    let path = if tool == "sshd" {
        Some(PathBuf::from(SSHD))
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(tool))
                .find(|candidate| candidate.is_file())
        })
    };
    match path {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "{tool} is not installed: run `scripts/setup` (it installs openssh-server and openssh-client)"
        ),
    }
}

fn keygen(path: &Path) {
    let out = Command::new(require("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "sarge-test", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Sshd {
    pub fn start(name: &str) -> Self {
        require("ssh");
        require("sshd");
        let dir = std::env::temp_dir().join(format!("sarge-sshd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        // sshd refuses to start without its privilege-separation folder.
        if !Path::new("/run/sshd").exists() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        // Ports below Linux's ephemeral range (32768 up), above the test
        // homes' blocks (10000-31999); several tries in case one is taken.
        let mut tries = 0;
        loop {
            let port = 32_000 + ((std::process::id() as u16).wrapping_add(tries * 37)) % 760;
            tries += 1;
            assert!(tries <= 20, "sshd did not start on any of 20 ports");
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            if let Some(sshd) = Self::try_port(&dir, port) {
                return sshd;
            }
        }
    }

    fn try_port(dir: &Path, port: u16) -> Option<Self> {
        let config = dir.join("sshd_config");
        // The sessions get this test's PATH, so the targets' bin/sarge
        // finds the same python3 and uv as the other tests' homes.
        let path = std::env::var("PATH").unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/client_key.pub\nPidFile {dir}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nSetEnv PATH={path}\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                // Lost the port to someone else, or a bad config.
                let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
                assert!(
                    log.contains("Address already in use") || log.contains("Cannot bind"),
                    "sshd exited: {log}"
                );
                return None;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self {
                    port,
                    dir: dir.to_owned(),
                    child,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("sshd did not listen on port {port} within 10 s");
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    /// The `SARGE_SSH` that reaches this server with the client key `key`.
    pub fn ssh_command_with_key(&self, key: &Path) -> String {
        format!(
            "ssh -p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -F /dev/null -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=10",
            self.port,
            key.display()
        )
    }

    /// The `SARGE_SSH` that reaches this server.
    pub fn ssh_command(&self) -> String {
        self.ssh_command_with_key(&self.client_key())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
