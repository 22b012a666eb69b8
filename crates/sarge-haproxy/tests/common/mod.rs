//! Helpers shared by the integration tests: temp dirs, ports, the haproxy
//! binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use camino::{Utf8Path, Utf8PathBuf};

/// The haproxy the tests run; missing it is a setup error, not a skip.
pub fn haproxy_bin() -> Utf8PathBuf {
    let bin = Utf8PathBuf::from(
        std::env::var("SARGE_TEST_HAPROXY").unwrap_or_else(|_| "/usr/sbin/haproxy".to_owned()),
    );
    assert!(
        bin.exists(),
        "haproxy not found at {bin}; run `scripts/test` (it installs haproxy 2.6) \
         or set SARGE_TEST_HAPROXY"
    );
    bin
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(Utf8PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = Utf8PathBuf::try_from(std::env::temp_dir()).unwrap();
        let dir = base.join(format!("sarge-hap-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Utf8Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A listener on a random loopback port in 20000-40000, so parallel test
/// runs by other people on this machine rarely collide.
pub fn random_listener() -> TcpListener {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut state = u64::from(nanos)
        ^ (u64::from(std::process::id()) << 20)
        ^ (u64::from(SEQ.fetch_add(1, Ordering::Relaxed)) << 40)
        | 1;
    for _ in 0..200 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = 20000 + (state % 20000) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener;
        }
    }
    panic!("no free loopback port found in 20000-40000");
}

/// A random free port, released for someone else (haproxy) to bind.
pub fn random_port() -> u16 {
    random_listener().local_addr().unwrap().port()
}
