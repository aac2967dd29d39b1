//! Socket construction for shards: socket2 sockets with `SO_REUSEPORT` (every
//! shard binds the same address), `SO_INCOMING_CPU` (the kernel hands a flow
//! to the socket of the CPU that received it, i.e. to that CPU's shard) and
//! `IPV6_V6ONLY` for IPv6, converted into glommio sockets by raw fd.
//!
//! Must be called on the glommio executor thread that will own the socket.
//! UDP buffer sizes from the config are applied by [`set_udp_buffers`],
//! which refuses a size the kernel would silently cap.

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

/// The receive buffer of a UDP socket whose config leaves it unset: 1 MiB,
/// about 5 ms of queries at 200k QPS on one socket, so that a shard that
/// is briefly not scheduled (another thread on its CPU, an interrupt
/// storm) loses nothing. The kernel's default (`net.core.rmem_default`,
/// usually 208 KiB) held under 1 ms of that load, and a one-shard
/// benchmark dropped queries at 30% CPU (`scripts/bench-dns.sh --sweep`).
/// Capped silently at `net.core.rmem_max`: a default must not stop a
/// host with a small limit from starting.
pub const DEFAULT_UDP_RCVBUF: u32 = 1 << 20;

/// The socket buffers a UDP service asks for (bytes; 0 = the kernel's
/// default; an unset receive buffer is [`DEFAULT_UDP_RCVBUF`]) and the
/// config keys they come from, for its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpBuffers {
    pub rcvbuf: Option<u32>,
    pub sndbuf: u32,
    /// e.g. `dns.udp_rcvbuf`.
    pub rcvbuf_key: &'static str,
    pub sndbuf_key: &'static str,
}

/// Set the buffers of UDP socket `fd`. The kernel caps `SO_RCVBUF` at
/// `net.core.rmem_max` and `SO_SNDBUF` at `net.core.wmem_max` without an
/// error; a capped size is an error here that names the limit, so an
/// operator never runs with less buffer than the config says. An unset
/// receive buffer is [`DEFAULT_UDP_RCVBUF`], capped without an error.
pub fn set_udp_buffers(fd: std::os::fd::RawFd, b: &UdpBuffers) -> anyhow::Result<()> {
    match b.rcvbuf {
        Some(bytes) => set_buffer(fd, libc::SO_RCVBUF, bytes, b.rcvbuf_key, "rmem_max")?,
        None => {
            let want = DEFAULT_UDP_RCVBUF as libc::c_int;
            // SAFETY: setsockopt reads one int of a live local.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&want as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                tracing::debug!(
                    "{} unset: SO_RCVBUF {want} refused ({}); the kernel's default stays",
                    b.rcvbuf_key,
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    set_buffer(fd, libc::SO_SNDBUF, b.sndbuf, b.sndbuf_key, "wmem_max")
}

fn set_buffer(
    fd: std::os::fd::RawFd,
    option: libc::c_int,
    bytes: u32,
    key: &str,
    limit: &str,
) -> anyhow::Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt reads and getsockopt writes one int of live locals.
    let ok = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&want as *const libc::c_int).cast(),
            len,
        ) == 0
            && libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&mut got as *mut libc::c_int).cast(),
                &mut len,
            ) == 0
    };
    if !ok {
        anyhow::bail!(
            "cannot set {key} = {bytes} bytes: {}",
            std::io::Error::last_os_error()
        );
    }
    // The kernel stores twice the size asked for (room for its own
    // bookkeeping), capped at twice the limit.
    let granted = i64::from(got) / 2;
    if granted < i64::from(want) {
        let sysctl = format!("/proc/sys/net/core/{limit}");
        let max = std::fs::read_to_string(&sysctl)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        anyhow::bail!(
            "{key} = {bytes} bytes is above the kernel's limit net.core.{limit} = {max}, which caps \
             the socket at {granted} bytes: raise the limit (sysctl -w net.core.{limit}={bytes}; \
             see deploy/tuning.md) or lower {key}"
        );
    }
    Ok(())
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

/// Check, on a scratch thread, that a thread of this process may be pinned
/// to each of `cpus` (what glommio does first for every shard). The error
/// names the CPU, the system call, the cause and what to change, because a
/// shard executor that cannot pin exits before it can report anything.
pub fn check_pinning(cpus: &[usize]) -> anyhow::Result<()> {
    let cpus = cpus.to_vec();
    let probe = std::thread::Builder::new()
        .name("pin-probe".into())
        .spawn(move || {
            for cpu in cpus {
                if let Err(e) = pin_current_thread(cpu) {
                    return Err((cpu, e));
                }
            }
            Ok(())
        })
        .context("cannot start a thread to check CPU pinning")?;
    match probe.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err((cpu, e))) => Err(anyhow::anyhow!(
            "pinning shards to CPU {cpu}: sched_setaffinity: {e} — {}",
            pin_error_cause(&e, seccomp_mode())
        )),
        Err(_) => anyhow::bail!("the CPU pinning check panicked"),
    }
}

/// Why pinning failed and what to change, from the error and the process's
/// seccomp mode (`Seccomp:` of /proc/self/status; 2 = filter).
pub fn pin_error_cause(e: &std::io::Error, seccomp: Option<u8>) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) if seccomp == Some(2) => {
            "a seccomp filter denies it; under systemd the service's SystemCallFilter= does \
             (allow sched_setaffinity: drop @resources from the `SystemCallFilter=~` deny line \
             or add `SystemCallFilter=sched_setaffinity` in a drop-in)"
        }
        Some(libc::EPERM) => {
            "the kernel refused it (a security module or container policy): allow \
             sched_setaffinity for this process, or run with fewer restrictions"
        }
        Some(libc::EINVAL) => {
            "that CPU is not in the set this process may use (cgroup cpuset, CPUAffinity=): \
             start with fewer shards (--shards / server.shards) or allow the CPU"
        }
        _ => "allow sched_setaffinity for this process",
    }
}

/// The calling process's seccomp mode (0 off, 1 strict, 2 filter).
pub fn seccomp_mode() -> Option<u8> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .and_then(|v| v.trim().parse().ok())
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_errors_name_the_cause() {
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
        assert!(pin_error_cause(&eperm, Some(2)).contains("SystemCallFilter"));
        assert!(!pin_error_cause(&eperm, Some(0)).contains("SystemCallFilter"));
        let einval = std::io::Error::from_raw_os_error(libc::EINVAL);
        assert!(pin_error_cause(&einval, Some(2)).contains("--shards"));
    }

    #[test]
    fn pinning_to_an_allowed_cpu_passes_and_to_a_missing_one_fails() {
        // The process may run on some CPU: pinning to the first allowed works.
        let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| {
                // SAFETY: plain libc calls on a zeroed, properly sized cpu_set_t.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
                        == 0
                        && libc::CPU_ISSET(c, &set)
                }
            })
            .collect();
        check_pinning(&allowed[..1]).unwrap();
        let err = check_pinning(&[libc::CPU_SETSIZE as usize - 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("pinning shards to CPU"), "{err}");
    }

    fn rcvbuf_of(sock: &std::net::UdpSocket) -> i64 {
        use std::os::fd::AsRawFd;
        let mut got: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes one int into a live local.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut got as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        i64::from(got)
    }

    /// An unset receive buffer is 1 MiB, or as much of it as rmem_max
    /// allows, and never an error; 0 keeps the kernel's default.
    #[test]
    fn an_unset_receive_buffer_asks_for_the_default_capped_at_the_limit() {
        let rmem_max: i64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let rmem_default: i64 = std::fs::read_to_string("/proc/sys/net/core/rmem_default")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let buffers = |rcvbuf| UdpBuffers {
            rcvbuf,
            sndbuf: 0,
            rcvbuf_key: "dns.udp_rcvbuf",
            sndbuf_key: "dns.udp_sndbuf",
        };
        use std::os::fd::AsRawFd;
        let unset = bind_udp_std("127.0.0.1:0".parse().unwrap(), None).unwrap();
        set_udp_buffers(unset.as_raw_fd(), &buffers(None)).unwrap();
        // The kernel keeps twice what was asked for (its bookkeeping).
        assert_eq!(
            rcvbuf_of(&unset),
            2 * i64::from(DEFAULT_UDP_RCVBUF).min(rmem_max),
            "unset: 1 MiB capped at net.core.rmem_max = {rmem_max}"
        );
        let kernel = bind_udp_std("127.0.0.1:0".parse().unwrap(), None).unwrap();
        set_udp_buffers(kernel.as_raw_fd(), &buffers(Some(0))).unwrap();
        assert_eq!(rcvbuf_of(&kernel), rmem_default, "0: the kernel's default");
    }
}
