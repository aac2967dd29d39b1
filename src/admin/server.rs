//! The admin listener's I/O: a blocking `std` TCP listener on its own
//! thread, one short-lived thread per connection (a bounded number, see
//! [`super::slots`]), each moving bytes between its socket and the sans-IO
//! [`super::http`] parser, [`super::access`] (browser defence) and
//! [`super::api::handle`]. Every request has two deadlines: its head, then
//! the whole request, counted from when the connection started waiting for
//! it (not per read, so a byte now and then cannot hold a slot).
//!
//! Why plain threads and not a glommio executor: admin traffic is a scrape
//! every few seconds and the odd API call, while a map change may build a
//! map with a million prefixes (a second of CPU). On threads the kernel
//! schedules that work like any other process thread, and no shard executor
//! ever runs, waits for, or shares a queue with it; a dedicated executor
//! would add an io_uring, memlock and a CPU placement to get the same
//! thing. The shards are never on this path.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::access;
use super::api::{self, Backend};
use super::http::{self, Parsed, Response};
use super::slots::{Admit, Slots};

/// Connections served at once; see [`super::slots`] for who gets a slot.
pub const MAX_CONNECTIONS: usize = crate::config::MAX_ADMIN_CONNECTIONS;
/// A response that cannot be written within this is abandoned.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The listener's limits and browser defence, from `[server]`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Bearer token required on everything but the probes.
    pub token: Option<String>,
    /// Names accepted in `Host` besides IP literals and localhost
    /// (`server.admin_hosts`).
    pub hosts: Vec<String>,
    /// A request head must arrive within this of the connection opening
    /// or the previous response (`server.admin_header_timeout_ms`).
    pub header_timeout: Duration,
    /// The whole request (head and body) must arrive within this
    /// (`server.admin_request_timeout_ms`), however it trickles in.
    pub request_timeout: Duration,
    /// Connections per source address (`server.admin_connections_per_client`).
    pub per_client: usize,
}

/// Open connections: the slot table and a handle on each socket (to close
/// an idle one whose slot a new connection takes). Admin threads only.
struct Registry {
    slots: Slots,
    streams: HashMap<u64, TcpStream>,
}

type Shared = Arc<Mutex<Registry>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serve `listener` on a new thread until the process exits.
pub fn spawn(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    policy: Policy,
) -> io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let policy = Arc::new(policy);
    let registry: Shared = Arc::new(Mutex::new(Registry {
        slots: Slots::new(MAX_CONNECTIONS, policy.per_client),
        streams: HashMap::new(),
    }));
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let stream = match conn {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("admin listener: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                let id = {
                    let mut reg = lock(&registry);
                    match reg.slots.admit(peer.ip()) {
                        Admit::Refuse => None,
                        Admit::Accept { id, evict } => {
                            if let Some(victim) = evict.and_then(|v| reg.streams.remove(&v)) {
                                // Its thread sees end of stream and exits.
                                let _ = victim.shutdown(Shutdown::Both);
                                crate::metrics::record_admin_request("evicted_idle", 408);
                            }
                            match stream.try_clone() {
                                Ok(handle) => {
                                    reg.streams.insert(id, handle);
                                    Some(id)
                                }
                                Err(_) => {
                                    reg.slots.release(id);
                                    None
                                }
                            }
                        }
                    }
                };
                let Some(id) = id else {
                    let busy = Response::error(
                        503,
                        "too many admin connections busy (from your address, or in all); retry shortly",
                    );
                    crate::metrics::record_admin_request("refused", 503);
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = (&stream).write_all(&busy.to_bytes(false, false));
                    continue;
                };
                let (backend, policy, reg) = (backend.clone(), policy.clone(), registry.clone());
                let spawned = std::thread::Builder::new()
                    .name("admin-conn".into())
                    .spawn(move || {
                        if let Err(e) = serve_connection(stream, &*backend, &policy, &reg, id) {
                            tracing::debug!("admin connection: {e}");
                        }
                        let mut r = lock(&reg);
                        r.slots.release(id);
                        r.streams.remove(&id);
                    });
                if let Err(e) = spawned {
                    tracing::warn!("admin listener: cannot start a connection thread: {e}");
                    let mut r = lock(&registry);
                    r.slots.release(id);
                    r.streams.remove(&id);
                }
            }
        })?;
    Ok(addr)
}

/// Serve requests on one connection until it closes, asks to close, misses
/// a deadline or sends something unparsable.
fn serve_connection(
    mut stream: TcpStream,
    backend: &dyn Backend,
    policy: &Policy,
    reg: &Shared,
    id: u64,
) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    // Deadlines of the request being waited for: its head, and all of it.
    let mut waiting_since = Instant::now();
    let mut busy = false;
    loop {
        match http::parse(&buf) {
            Parsed::Complete { request, consumed } => {
                if !busy {
                    lock(reg).slots.set_busy(id, true);
                }
                let (response, route) = match access::check(&request, &policy.hosts) {
                    Ok(()) => api::handle(&request, backend, policy.token.as_deref()),
                    Err(refusal) => {
                        tracing::debug!("admin request refused: {refusal:?}");
                        (refusal.response(), "refused")
                    }
                };
                crate::metrics::record_admin_request(route, response.status);
                let head_only = request.method == "HEAD";
                let keep_alive = request.keep_alive && response.status != 403;
                stream.write_all(&response.to_bytes(keep_alive, head_only))?;
                if !keep_alive {
                    return Ok(());
                }
                buf.drain(..consumed);
                lock(reg).slots.set_busy(id, false);
                busy = false;
                waiting_since = Instant::now();
                continue;
            }
            Parsed::Invalid(response) => {
                crate::metrics::record_admin_request("invalid", response.status);
                stream.write_all(&response.to_bytes(false, false))?;
                return Ok(());
            }
            Parsed::Partial => {
                if !busy && http::head_complete(&buf) {
                    lock(reg).slots.set_busy(id, true);
                    busy = true;
                }
            }
        }
        let limit = if busy {
            policy.request_timeout
        } else {
            policy.header_timeout
        };
        let left = limit.saturating_sub(waiting_since.elapsed());
        if left.is_zero() {
            return timed_out(&mut stream, busy, buf.is_empty());
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return timed_out(&mut stream, busy, buf.is_empty());
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A deadline passed: 408 when part of a request came, silence when the
/// connection idled between requests.
fn timed_out(stream: &mut TcpStream, busy: bool, nothing: bool) -> io::Result<()> {
    if nothing && !busy {
        return Ok(());
    }
    let what = if busy { "request" } else { "request head" };
    crate::metrics::record_admin_request("timeout", 408);
    let r = Response::error(
        408,
        &format!("the {what} did not arrive in time; send it whole, then wait for the answer"),
    );
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    stream.write_all(&r.to_bytes(false, false))
}
