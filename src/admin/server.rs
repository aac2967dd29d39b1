//! The admin listener's I/O: a blocking `std` TCP listener on its own
//! thread, one short-lived thread per connection (a bounded number), each
//! moving bytes between its socket and the sans-IO [`super::http`] parser
//! and [`super::api::handle`].
//!
//! Why plain threads and not a glommio executor: admin traffic is a scrape
//! every few seconds and the odd API call, while a map change may build a
//! map with a million prefixes (a second of CPU). On threads the kernel
//! schedules that work like any other process thread, and no shard executor
//! ever runs, waits for, or shares a queue with it; a dedicated executor
//! would add an io_uring, memlock and a CPU placement to get the same
//! thing. The shards are never on this path.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::api::{self, Backend};
use super::http::{self, Parsed, Response};

/// Connections served at once; more get 503 and are closed.
const MAX_CONNECTIONS: usize = 64;
/// A connection idle (or a request trickling in) this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A response that cannot be written within this is abandoned.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve `listener` on a new thread until the process exits.
pub fn spawn(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    token: Option<String>,
) -> io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let token: Arc<Option<String>> = Arc::new(token);
    let active = Arc::new(AtomicUsize::new(0));
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
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    let busy = Response::error(503, "too many admin connections; retry shortly");
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = (&stream).write_all(&busy.to_bytes(false, false));
                    continue;
                }
                let (backend, token, active) = (backend.clone(), token.clone(), active.clone());
                let spawned =
                    std::thread::Builder::new()
                        .name("admin-conn".into())
                        .spawn(move || {
                            if let Err(e) = serve_connection(stream, &*backend, token.as_deref()) {
                                tracing::debug!("admin connection: {e}");
                            }
                            active.fetch_sub(1, Ordering::AcqRel);
                        });
                if let Err(e) = spawned {
                    tracing::warn!("admin listener: cannot start a connection thread: {e}");
                }
            }
        })?;
    Ok(addr)
}

/// Serve requests on one connection until it closes, asks to close, idles
/// out or sends something unparsable.
fn serve_connection(
    mut stream: TcpStream,
    backend: &dyn Backend,
    token: Option<&str>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match http::parse(&buf) {
            Parsed::Complete { request, consumed } => {
                let (response, route) = api::handle(&request, backend, token);
                crate::metrics::record_admin_request(route, response.status);
                let head_only = request.method == "HEAD";
                stream.write_all(&response.to_bytes(request.keep_alive, head_only))?;
                if !request.keep_alive {
                    return Ok(());
                }
                buf.drain(..consumed);
                continue;
            }
            Parsed::Invalid(response) => {
                crate::metrics::record_admin_request("invalid", response.status);
                stream.write_all(&response.to_bytes(false, false))?;
                return Ok(());
            }
            Parsed::Partial => {}
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
