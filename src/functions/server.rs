//! The per-shard invocation servers: UDP frames through the shard's batched
//! datagram loop, and HTTP/1.1 connections (keep-alive, pipelining, idle
//! timeout, per-shard connection cap). Thin I/O around [`super::frame`],
//! [`super::http`] and [`FunctionShard::invoke`].

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream, UdpSocket};
use glommio::sync::Gate;

use super::frame::{self, Decoded};
use super::http::{self, HttpLimits, Step};
use super::outcome::Status;
use super::per_shard::{FunctionShard, Lookup};
use crate::metrics::local::bump;
use crate::runtime::stop::StopSignal;
use crate::runtime::tcp::{read_bounded, write_bounded, Read};
use crate::runtime::udp::{self, DatagramHandler};

/// Datagrams per receive batch: invocations run synchronously, so a small
/// batch keeps a slow function from delaying many replies.
pub const UDP_BATCH: usize = 8;
/// Largest UDP payload a reply may have (IPv4: 65535 - 8 - 20).
pub const MAX_UDP_REPLY: usize = 65_507;
/// Bytes read from a connection per read call.
const READ_CHUNK: usize = 16 * 1024;

/// The invocation path behind a UDP loop.
pub struct FunctionUdp {
    pub shard: Rc<FunctionShard>,
}

impl DatagramHandler for FunctionUdp {
    fn handle(&mut self, datagram: &[u8], _from: SocketAddr, out: &mut Vec<u8>) -> bool {
        let stats = &self.shard.surface;
        match frame::decode_request(datagram) {
            Decoded::Drop => {
                bump(&stats.udp_ignored);
                false
            }
            Decoded::Reject { id, status, why } => {
                bump(&stats.udp_rejected);
                stats.udp_status.record(status.http_code());
                frame::encode_error(out, id, status, why);
                true
            }
            Decoded::Request(r) => {
                bump(&stats.udp_requests);
                let t0 = stats.udp_latency.start();
                frame::begin_reply(out, r.id, Status::Ok);
                match self.shard.invoke(r.name, r.payload, out) {
                    Ok(()) if out.len() > MAX_UDP_REPLY => {
                        bump(&stats.udp_oversized_replies);
                        let text = format!(
                            "output of {} bytes does not fit in a datagram (max {}): invoke over HTTP",
                            out.len() - frame::REPLY_HEADER_LEN,
                            MAX_UDP_REPLY - frame::REPLY_HEADER_LEN
                        );
                        frame::encode_error(out, r.id, Status::OutputTooLarge, &text);
                        stats.udp_status.record(Status::OutputTooLarge.http_code());
                    }
                    Ok(()) => stats.udp_status.record(Status::Ok.http_code()),
                    Err(e) => {
                        stats.udp_status.record(e.status().http_code());
                        frame::encode_error(out, r.id, e.status(), &e.to_string());
                    }
                }
                stats.udp_latency.finish(t0);
                true
            }
        }
    }
}

/// Serve invocation frames on `sock` until `stop`. Frames up to
/// [`udp::RX_SLOT`] bytes are received; larger ones are dropped.
/// The socket's kernel drops go to `drops`.
pub async fn serve_udp(
    shard: Rc<FunctionShard>,
    sock: UdpSocket,
    stop: StopSignal,
    mut drops: udp::KernelDrops,
) {
    let mut handler = FunctionUdp { shard };
    udp::serve_batched(
        &sock,
        &mut handler,
        &stop,
        udp::LoopSettings::batch_only(UDP_BATCH),
        &mut drops,
    )
    .await;
}

/// Accept HTTP connections on `listener` until `stop`; each connection runs
/// as its own task under `gate` (shutdown waits for them).
pub async fn serve_http(
    shard: Rc<FunctionShard>,
    listener: TcpListener,
    stop: StopSignal,
    gate: Gate,
) {
    let cap = u64::from(shard.node().settings().http_max_connections_per_shard);
    let per_client = shard.node().settings().http_max_connections_per_client;
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            stop.stopped().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!("function HTTP accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let stats = &shard.surface;
        if stats.http_open.get() >= cap {
            bump(&stats.http_refused);
            drop(stream);
            continue;
        }
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let client = peer.ip();
        if !stats.http_clients.try_open(client, per_client) {
            bump(&stats.http_client_refused);
            drop(stream);
            continue;
        }
        bump(&stats.http_accepted);
        stats.http_open.set(stats.http_open.get() + 1);
        let (conn_shard, conn_stop) = (shard.clone(), stop.clone());
        match gate.spawn(async move {
            serve_connection(&conn_shard, stream, &conn_stop).await;
            let open = &conn_shard.surface.http_open;
            open.set(open.get() - 1);
            conn_shard.surface.http_clients.close(client);
        }) {
            Ok(task) => {
                task.detach();
            }
            Err(_) => {
                stats.http_open.set(stats.http_open.get() - 1);
                stats.http_clients.close(client);
                break;
            }
        }
    }
}

/// Requests of one connection answered before its task yields to the
/// shard's other tasks: a read carrying hundreds of pipelined invocations
/// is served in turns of this many, so other connections and the DNS and
/// datagram loops of the shard run in between.
pub const MAX_REQUESTS_PER_TURN: usize = 16;

/// What [`answer_buffered`] did with the front of the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Turn {
    /// Bytes of `rbuf` answered.
    consumed: usize,
    /// Close after writing.
    close: bool,
    /// A `100 Continue` is due.
    wants_continue: bool,
    /// Stopped at `max_requests`: more complete requests may be buffered.
    more: bool,
}

/// Answer up to `max_requests` complete requests at the front of `rbuf`
/// into `wbuf`.
fn answer_buffered(
    shard: &FunctionShard,
    rbuf: &[u8],
    wbuf: &mut Vec<u8>,
    fn_out: &mut Vec<u8>,
    limits: &HttpLimits,
    max_requests: usize,
) -> Turn {
    let done = |consumed, close, wants_continue, more| Turn {
        consumed,
        close,
        wants_continue,
        more,
    };
    let stats = &shard.surface;
    let shard_no = Some(shard.index());
    let max_input = |name: &str| match shard.lookup(name.as_bytes()) {
        Lookup::Found(_, f) => Some(f.limits.max_input_bytes),
        // Let it through to answer 503 with the load failure.
        Lookup::Failed(_) => Some(limits.max_skip_body),
        Lookup::NotFound => None,
    };
    let mut pos = 0;
    for _ in 0..max_requests {
        match http::next_request(&rbuf[pos..], limits, max_input) {
            Step::NeedMore { expects_continue } => {
                return done(pos, false, expects_continue, false)
            }
            Step::Invoke {
                name,
                body,
                consumed,
                keep_alive,
            } => {
                bump(&stats.http_requests);
                if let Some(h) = shard.handoff() {
                    use super::handoff::{http_verdict, write_http_verdict};
                    use crate::handoff::policy::HttpVerdict;
                    let verdict = http_verdict(h, shard, name, &rbuf[pos..]);
                    if verdict != HttpVerdict::Serve {
                        let code = if verdict == HttpVerdict::Overloaded {
                            503
                        } else {
                            307
                        };
                        stats.http_status.record(code);
                        write_http_verdict(wbuf, &verdict, keep_alive, shard_no);
                        pos += consumed;
                        if !keep_alive {
                            return done(pos, true, false, false);
                        }
                        continue;
                    }
                }
                fn_out.clear();
                let t0 = stats.http_latency.start();
                match shard.invoke(name.as_bytes(), body, fn_out) {
                    Ok(()) => {
                        stats.http_status.record(200);
                        http::write_response_from(
                            wbuf,
                            200,
                            Status::Ok,
                            fn_out,
                            keep_alive,
                            shard_no,
                        )
                    }
                    Err(e) => {
                        bump(&stats.http_errors);
                        let status = e.status();
                        stats.http_status.record(status.http_code());
                        http::write_response_from(
                            wbuf,
                            status.http_code(),
                            status,
                            e.to_string().as_bytes(),
                            keep_alive,
                            shard_no,
                        );
                    }
                }
                stats.http_latency.finish(t0);
                pos += consumed;
                if !keep_alive {
                    return done(pos, true, false, false);
                }
            }
            Step::Respond {
                code,
                text,
                consumed,
                keep_alive,
            } => {
                bump(&stats.http_requests);
                bump(&stats.http_errors);
                stats.http_status.record(code);
                http::write_response_from(
                    wbuf,
                    code,
                    http::status_of_code(code),
                    text.as_bytes(),
                    keep_alive,
                    shard_no,
                );
                pos += consumed;
                if !keep_alive {
                    return done(pos, true, false, false);
                }
            }
        }
    }
    done(pos, false, false, pos < rbuf.len())
}

/// Serve one connection until the peer closes, it idles out, a request
/// forces a close, or the shard stops (after answering what was in flight).
async fn serve_connection(shard: &FunctionShard, mut stream: TcpStream, stop: &StopSignal) {
    let _ = stream.set_nodelay(true);
    let settings = shard.node().settings();
    let idle = Duration::from_millis(settings.http_idle_timeout_ms);
    let max_skip_body = shard
        .node()
        .functions()
        .iter()
        .map(|f| f.limits.max_input_bytes)
        .max()
        .unwrap_or(0)
        .max(65_536);
    let limits = HttpLimits {
        max_header_bytes: settings.http_max_header_bytes as usize,
        max_skip_body,
    };
    let mut rbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut wbuf: Vec<u8> = Vec::new();
    let mut fn_out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut continue_sent = false;
    let mut deadline = Instant::now() + idle;
    loop {
        let Turn {
            consumed,
            close,
            wants_continue,
            more,
        } = answer_buffered(
            shard,
            &rbuf,
            &mut wbuf,
            &mut fn_out,
            &limits,
            MAX_REQUESTS_PER_TURN,
        );
        if consumed > 0 {
            rbuf.drain(..consumed);
            continue_sent = false;
            deadline = Instant::now() + idle;
        }
        if wants_continue && !continue_sent && !close {
            wbuf.extend_from_slice(http::CONTINUE);
            continue_sent = true;
        }
        if !wbuf.is_empty() {
            let written = write_bounded(&mut stream, &wbuf, idle).await;
            wbuf.clear();
            if !written {
                return;
            }
        }
        if close {
            let _ = stream.flush().await;
            return;
        }
        if more {
            // Let the shard's other tasks run before the next turn.
            future::yield_now().await;
            continue;
        }
        let stopping = stop.is_stopped();
        if stopping && rbuf.is_empty() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            bump(&shard.surface.http_idle_closed);
            return;
        }
        let wait = deadline - now;
        let got = read_bounded(
            &mut stream,
            &mut chunk,
            wait,
            stop,
            stopping || !rbuf.is_empty(),
        )
        .await;
        match got {
            Read::Data(n) => rbuf.extend_from_slice(&chunk[..n]),
            Read::Closed | Read::Stop => return,
            Read::Deadline => {
                bump(&shard.surface.http_idle_closed);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::functions::{FunctionSpec, FunctionsConfig, Limits};
    use crate::functions::FunctionNode;

    /// A shard serving the example `checksum` function (compiled into a
    /// fresh cache directory, kept alive with the shard).
    fn checksum_shard() -> (FunctionShard, tempfile::TempDir) {
        let cache = tempfile::tempdir().unwrap();
        let settings = FunctionsConfig {
            cache_dir: cache.path().to_path_buf(),
            ..FunctionsConfig::default()
        };
        let spec = FunctionSpec {
            name: "checksum".into(),
            module: Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/checksum.wat"),
            limits: Limits::default(),
        };
        let node = FunctionNode::start(&settings, vec![spec], 1).unwrap();
        (FunctionShard::new(&node), cache)
    }

    const LIMITS: HttpLimits = HttpLimits {
        max_header_bytes: 8192,
        max_skip_body: 65_536,
    };

    /// One turn over `rbuf`: the turn and the bytes written (as text; a
    /// binary body is replaced by its length, `<N bytes>`).
    fn turn(shard: &FunctionShard, rbuf: &[u8]) -> (Turn, String) {
        let (mut wbuf, mut out) = (Vec::new(), Vec::new());
        let t = answer_buffered(
            shard,
            rbuf,
            &mut wbuf,
            &mut out,
            &LIMITS,
            MAX_REQUESTS_PER_TURN,
        );
        let text = match wbuf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => match std::str::from_utf8(&wbuf[end + 4..]) {
                Ok(_) => String::from_utf8(wbuf).unwrap(),
                Err(_) => format!(
                    "{}\r\n\r\n<{} bytes>",
                    std::str::from_utf8(&wbuf[..end]).unwrap(),
                    wbuf.len() - end - 4
                ),
            },
            None => String::from_utf8(wbuf).unwrap(),
        };
        (t, text)
    }

    #[test]
    fn answers_are_exact_bytes_and_a_turn_says_what_to_do_next() {
        let (shard, _cache) = checksum_shard();
        // An unknown function: 404 with its reason, the connection kept.
        let req = b"POST /fn/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
        let (t, out) = turn(&shard, req);
        assert_eq!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 30\r\nX-Shardgate-Status: not-found\r\nX-Shardgate-Shard: 0\r\n\r\n\
             no such function on this node\n"
        );
        assert_eq!(
            (t.consumed, t.close, t.wants_continue, t.more),
            (req.len(), false, false, false)
        );
        // Not a POST: 405 naming the method to use.
        let (t, out) = turn(&shard, b"GET /fn/checksum HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            out.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nAllow: POST\r\n") && !t.close, "{out}");
        // A head asking for 100-continue: nothing consumed, the caller
        // sends the interim response and reads on.
        let (t, out) = turn(
            &shard,
            b"POST /fn/checksum HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!((t.consumed, t.wants_continue, out.as_str()), (0, true, ""));
        // Half a head: read more.
        let (t, out) = turn(&shard, b"POST /fn/checksum HTTP/1.1\r\nConte");
        assert_eq!(
            (t.consumed, t.close, t.wants_continue, out.as_str()),
            (0, false, false, "")
        );
        // A bad length: 400, then close (the rest cannot be trusted).
        let (t, out) = turn(
            &shard,
            b"POST /fn/checksum HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        );
        assert!(
            out.starts_with("HTTP/1.1 400 Bad Request\r\n")
                && out.contains("Connection: close\r\n"),
            "{out}"
        );
        assert!(t.close);
        // An invocation: 200 with the output as the body, its length exact.
        let (t, out) = turn(
            &shard,
            b"POST /fn/checksum HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
        );
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"),
            "{head}"
        );
        // The example checksum is two bytes (binary: shown as their count).
        assert_eq!(body, "<2 bytes>");
        assert!(head.contains("\r\nContent-Length: 2\r\n"), "{head}");
        assert!(
            head.contains("\r\nX-Shardgate-Status: ok\r\n") && !t.close,
            "{head}"
        );
    }

    #[test]
    fn pipelined_requests_are_answered_in_bounded_turns() {
        let (shard, _cache) = checksum_shard();
        let one = b"POST /fn/checksum HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab";
        let n = 3 * MAX_REQUESTS_PER_TURN + 5;
        let rbuf: Vec<u8> = one.iter().copied().cycle().take(one.len() * n).collect();
        let limits = LIMITS;
        let (mut wbuf, mut out) = (Vec::new(), Vec::new());
        let mut pos = 0;
        let mut turns = Vec::new();
        for _ in 0..10 {
            let t = answer_buffered(
                &shard,
                &rbuf[pos..],
                &mut wbuf,
                &mut out,
                &limits,
                MAX_REQUESTS_PER_TURN,
            );
            turns.push((t.consumed / one.len(), t.more));
            pos += t.consumed;
            if !t.more {
                break;
            }
        }
        assert_eq!(
            turns,
            vec![(16, true), (16, true), (16, true), (5, false)],
            "a read of {n} pipelined requests is served 16 at a time"
        );
        assert_eq!(pos, rbuf.len());
        let answers = wbuf.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
        assert_eq!(answers, n);
    }
}
