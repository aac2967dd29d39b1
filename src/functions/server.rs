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
use super::shard::{bump, FunctionShard, Lookup};
use crate::shard::stop::StopSignal;
use crate::shard::tcp::{read_bounded, Read};
use crate::shard::udp::{self, DatagramHandler};

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
pub async fn serve_udp(shard: Rc<FunctionShard>, sock: UdpSocket, stop: StopSignal) {
    let mut handler = FunctionUdp { shard };
    udp::serve_batched(
        &sock,
        &mut handler,
        &stop,
        udp::LoopSettings::batch_only(UDP_BATCH),
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
        bump(&stats.http_accepted);
        stats.http_open.set(stats.http_open.get() + 1);
        let (conn_shard, conn_stop) = (shard.clone(), stop.clone());
        match gate.spawn(async move {
            serve_connection(&conn_shard, stream, &conn_stop).await;
            let open = &conn_shard.surface.http_open;
            open.set(open.get() - 1);
        }) {
            Ok(task) => {
                task.detach();
            }
            Err(_) => {
                stats.http_open.set(stats.http_open.get() - 1);
                break;
            }
        }
    }
}

/// Answer every complete request at the front of `rbuf` into `wbuf`;
/// returns (bytes consumed, close after writing, a `100 Continue` is due).
fn answer_buffered(
    shard: &FunctionShard,
    rbuf: &[u8],
    wbuf: &mut Vec<u8>,
    fn_out: &mut Vec<u8>,
    limits: &HttpLimits,
) -> (usize, bool, bool) {
    let stats = &shard.surface;
    let shard_no = Some(shard.index());
    let max_input = |name: &str| match shard.lookup(name.as_bytes()) {
        Lookup::Found(_, f) => Some(f.limits.max_input_bytes),
        // Let it through to answer 503 with the load failure.
        Lookup::Failed(_) => Some(limits.max_skip_body),
        Lookup::NotFound => None,
    };
    let mut pos = 0;
    loop {
        match http::next_request(&rbuf[pos..], limits, max_input) {
            Step::NeedMore { expects_continue } => return (pos, false, expects_continue),
            Step::Invoke {
                name,
                body,
                consumed,
                keep_alive,
            } => {
                bump(&stats.http_requests);
                if let Some(h) = shard.handoff() {
                    use crate::handoff::io::{write_http_verdict, HttpVerdict};
                    let verdict = h.http_verdict(shard, name, &rbuf[pos..]);
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
                            return (pos, true, false);
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
                    return (pos, true, false);
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
                    return (pos, true, false);
                }
            }
        }
    }
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
        let (consumed, close, wants_continue) =
            answer_buffered(shard, &rbuf, &mut wbuf, &mut fn_out, &limits);
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
            let write = async { stream.write_all(&wbuf).await.is_ok() };
            let written = future::or(write, async {
                glommio::timer::sleep(idle).await;
                false
            })
            .await;
            wbuf.clear();
            if !written {
                return;
            }
        }
        if close {
            let _ = stream.flush().await;
            return;
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
