//! systemd readiness notification (`sd_notify` plain socket protocol).
//!
//! With `Type=notify`, systemd passes a datagram socket path in
//! `NOTIFY_SOCKET`; shardgate sends `READY=1` once every shard serves its
//! sockets, `RELOADING=1`/`READY=1` around a reload and `STOPPING=1` when it
//! starts shutting down. Without `NOTIFY_SOCKET` every call is a no-op.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Send one notification message (e.g. `"READY=1"`). Returns `Ok(false)` when
/// no `NOTIFY_SOCKET` is set (not started by systemd).
pub fn notify(message: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
        socket.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        socket.send_to(message.as_bytes(), path)?;
    }
    Ok(true)
}

/// Tell systemd every shard is serving.
pub fn ready() {
    send_logged("READY=1");
}

/// Tell systemd a reload started (answer with [`ready`] when done).
pub fn reloading() {
    send_logged("RELOADING=1");
}

/// Tell systemd shutdown started.
pub fn stopping() {
    send_logged("STOPPING=1");
}

fn send_logged(message: &str) {
    if let Err(err) = notify(message) {
        tracing::warn!(%err, message, "could not notify systemd (NOTIFY_SOCKET)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        // Only this test touches NOTIFY_SOCKET in the unit-test binary.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1").unwrap());
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!notify("READY=1").unwrap());
    }
}
