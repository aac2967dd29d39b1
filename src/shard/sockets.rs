//! Socket construction for shards: socket2 sockets with `SO_REUSEPORT` (every
//! shard binds the same address), `SO_INCOMING_CPU` (the kernel hands a flow
//! to the socket of the CPU that received it, i.e. to that CPU's shard) and
//! `IPV6_V6ONLY` for IPv6, converted into glommio sockets by raw fd.
//!
//! Must be called on the glommio executor thread that will own the socket.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog of each shard's TCP listener.
pub const TCP_BACKLOG: i32 = 1024;

fn base_socket(
    addr: SocketAddr,
    ty: Type,
    proto: Protocol,
    cpu: Option<usize>,
) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_port(true)?;
    if let Some(cpu) = cpu {
        sock.set_cpu_affinity(cpu)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

fn explain(e: std::io::Error, what: &str, addr: SocketAddr) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process holds this port without SO_REUSEPORT: stop it or change dns.listen)"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            " (no local interface has this address: fix dns.listen)"
        }
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        }
        _ => "",
    };
    anyhow::anyhow!("cannot bind {what} socket on {addr}: {e}{hint}")
}

/// A UDP socket on `addr` for the calling shard, steered to `cpu`.
pub fn bind_udp(addr: SocketAddr, cpu: Option<usize>) -> anyhow::Result<glommio::net::UdpSocket> {
    bind_udp_std(addr, cpu).map(into_glommio_udp)
}

/// A UDP socket on `addr` for the calling shard, steered to `cpu`, as a
/// std socket (for a shard's DNS worker thread, see `super::dns_worker`).
pub fn bind_udp_std(addr: SocketAddr, cpu: Option<usize>) -> anyhow::Result<std::net::UdpSocket> {
    let sock =
        base_socket(addr, Type::DGRAM, Protocol::UDP, cpu).map_err(|e| explain(e, "UDP", addr))?;
    Ok(sock.into())
}

/// Hand a (nonblocking) std UDP socket to the calling shard's glommio
/// executor.
pub fn into_glommio_udp(sock: std::net::UdpSocket) -> glommio::net::UdpSocket {
    // SAFETY: the fd is owned by `sock`, which is consumed here; the glommio
    // socket takes ownership and closes it on drop.
    unsafe { glommio::net::UdpSocket::from_raw_fd(sock.into_raw_fd()) }
}

/// A listening TCP socket on `addr` for the calling shard, steered to `cpu`.
pub fn bind_tcp(addr: SocketAddr, cpu: Option<usize>) -> anyhow::Result<glommio::net::TcpListener> {
    let sock =
        base_socket(addr, Type::STREAM, Protocol::TCP, cpu).map_err(|e| explain(e, "TCP", addr))?;
    sock.set_tcp_nodelay(true)
        .and_then(|()| sock.listen(TCP_BACKLOG))
        .with_context(|| format!("cannot listen on TCP {addr}"))?;
    // SAFETY: as above; glommio's listener takes ownership of the fd.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(sock.into_raw_fd()) })
}

/// Pin the calling thread to `cpu` (a shard's DNS worker threads, next to
/// the shard's executor).
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: plain libc calls on a zeroed, properly sized cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPU the calling thread is pinned to, when it is pinned to exactly one.
pub fn pinned_cpu() -> Option<usize> {
    // SAFETY: plain libc calls on a zeroed, properly sized cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        if libc::CPU_COUNT(&set) != 1 {
            return None;
        }
        (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &set))
    }
}
