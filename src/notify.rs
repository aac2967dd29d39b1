//! systemd readiness notification (`sd_notify` plain socket protocol).
//!
//! With `Type=notify`, systemd passes a datagram socket path in
//! `NOTIFY_SOCKET`; shardgate sends `READY=1` once every shard serves its
//! sockets, `RELOADING=1`/`READY=1` around a reload and `STOPPING=1` when it
//! starts shutting down. Without `NOTIFY_SOCKET` every call is a no-op.
//!
//! `STATUS=` carries one line for `systemctl status` (what is served, how
//! many shards, which config generation). With `WatchdogSec=` in the unit,
//! [`watchdog_interval`] says how often to send `WATCHDOG=1`, and
//! [`WatchdogGate`] (pure) decides whether to: only while every shard keeps
//! publishing its counters, so a wedged shard gets the service restarted.

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

/// Set the status line `systemctl status` shows.
pub fn status(text: &str) {
    send_logged(&format!("STATUS={}", text.replace('\n', " ")));
}

/// Tell systemd's watchdog the service is alive.
pub fn watchdog() {
    send_logged("WATCHDOG=1");
}

/// How often to send `WATCHDOG=1` (half of `WATCHDOG_USEC`), when systemd
/// asked this process for watchdog keep-alives (sd_watchdog_enabled(3)).
pub fn watchdog_interval() -> Option<std::time::Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] on explicit values (pure, for tests).
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<std::time::Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    Some(std::time::Duration::from_micros(usec / 2))
}

/// Decides each watchdog period whether the service is alive: every shard's
/// publish counter must have moved since the previous period.
#[derive(Debug, Default)]
pub struct WatchdogGate {
    last: Vec<u64>,
}

impl WatchdogGate {
    /// `counts[i]` = how many times shard `i` has published so far. Returns
    /// the shards that did not publish since the last call (the first call
    /// only needs every shard to have published once); empty = alive.
    pub fn stalled(&mut self, counts: &[u64]) -> Vec<usize> {
        let stalled = counts
            .iter()
            .enumerate()
            .filter(|(i, &c)| c <= self.last.get(*i).copied().unwrap_or(0))
            .map(|(i, _)| i)
            .collect();
        self.last = counts.to_vec();
        stalled
    }
}

static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`stopping`] was sent (the watchdog then stops judging shards).
pub fn is_stopping() -> bool {
    STOPPING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Tell systemd shutdown started.
pub fn stopping() {
    STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
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

    #[test]
    fn watchdog_interval_is_half_of_usec_and_only_for_our_pid() {
        use std::time::Duration;
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
    }

    #[test]
    fn watchdog_gate_needs_every_shard_to_publish() {
        let mut gate = WatchdogGate::default();
        assert_eq!(gate.stalled(&[1, 0]), vec![1], "shard 1 never published");
        assert!(gate.stalled(&[2, 1]).is_empty());
        assert_eq!(gate.stalled(&[3, 1]), vec![1], "shard 1 stalled");
        assert!(gate.stalled(&[4, 2]).is_empty());
    }
}
