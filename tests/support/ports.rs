//! Ports for servers under test, handed out below the kernel's ephemeral
//! range (32768..60999 on Linux by default) so that no socket bound to port
//! 0 (a client, a server's own listener, another test) can be given the same
//! port between the moment a test picks it and the moment the server binds
//! it. Each test process takes ports from its own stride of 10000..32767,
//! skipping any port something already holds (TCP or UDP, IPv4 or IPv6).

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

const LOW: u32 = 10_000;
const SPAN: u32 = 22_000;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A port free on 127.0.0.1 and ::1, for both TCP and UDP, right now, and
/// never returned twice by this process.
pub fn free_port() -> u16 {
    next_free(|port| {
        TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("::1", port)).is_ok()
            && UdpSocket::bind(("::1", port)).is_ok()
    })
}

/// A port free for TCP and UDP on every address of `ips` (e.g. the
/// 127.0.0.x addresses of a node pair), never returned twice.
pub fn free_port_on(ips: &[Ipv4Addr]) -> u16 {
    next_free(|port| {
        ips.iter()
            .all(|&ip| TcpListener::bind((ip, port)).is_ok() && UdpSocket::bind((ip, port)).is_ok())
    })
}

fn next_free(free: impl Fn(u16) -> bool) -> u16 {
    // Start each process at a spot of its own (test binaries may run at
    // the same time as other tools on the machine).
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919) ^ nanos()) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if free(port) {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
