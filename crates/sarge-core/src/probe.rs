//! Asking an instance whether it is ready: does it accept connections on
//! its port, and what does its health check path answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Whether something listens on `address`. A connect to a loopback port
/// nobody listens on can succeed by connecting to itself, when the kernel
/// picks that very port as the ephemeral source port (TCP simultaneous
/// open); that would pass a dead instance as ready, so it does not count.
pub(crate) fn accepts_connections(address: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&address, Duration::from_millis(250)) {
        Ok(stream) => stream.local_addr().ok() != stream.peer_addr().ok(),
        Err(_) => false,
    }
}

/// The status code of `GET path` on `address`, asking for `host` (the
/// app may check it, as Django's `ALLOWED_HOSTS` does).
pub(crate) fn http_status(address: SocketAddr, host: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    // One write: several small ones would wait on Nagle and delayed ACKs.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: sarge\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut head = [0u8; 32];
    let mut filled = 0;
    while filled < 12 {
        // A signal landing mid-read says nothing about the instance.
        let read = match stream.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        filled += read;
    }
    let head = String::from_utf8_lossy(&head[..filled]);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))
}
