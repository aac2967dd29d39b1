//! The hand-off I/O layer of a shard's executor: the gated function UDP
//! handler that consults the admission in front of the answer path (DNS
//! UDP is gated on the shard's worker thread, see [`super::worker`]), the hand-off
//! port's receive task (serve handed-off requests, forward relayed answers,
//! answer pings), the heartbeat task, and the HTTP gate (307 / 503).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::UdpSocket;

use super::frame::{self, FrameType, Key, ServiceKind};
use super::policy::{self, Decision};
use super::reject;
use super::shard::{unix_us, HandoffShard};
use crate::functions::frame::{self as fnframe, Decoded};
use crate::functions::outcome::Status;
use crate::functions::server::FunctionUdp;
use crate::functions::shard::{Lookup, Warmth};
use crate::functions::FunctionShard;
use crate::shard::context::ShardCtx;
use crate::shard::services::DnsUdp;
use crate::shard::stats::DropKind;
use crate::shard::stop::StopSignal;
use crate::shard::udp::{self, DatagramHandler};

/// Where a gated loop is in its batch: the clock reading that ends the
/// previous request's cost, and what that request was (served here or
/// not), so that each measured cost reaches the admission.
#[derive(Default)]
struct Meter {
    last_ns: u64,
    /// CLOCK_REALTIME minus the admission's clock at the batch's start (to
    /// turn the kernel's receive timestamps into waiting times).
    realtime_offset_ns: u64,
    /// Kernel receive time of the datagram about to be handled (0: none).
    rx_ns: u64,
    /// The request before: `Some(true)` served here, `Some(false)` handed
    /// off or refused, `None` none yet in this batch.
    previous_local: Option<bool>,
}

impl Meter {
    /// How long the datagram about to be handled waited before `now_ns`.
    fn waited_ns(&self, now_ns: u64) -> u64 {
        if self.rx_ns == 0 {
            return 0;
        }
        (now_ns + self.realtime_offset_ns).saturating_sub(self.rx_ns)
    }

    /// Charge the time since the last reading to what ran in it.
    fn settle(&mut self, h: &HandoffShard, now_ns: u64) {
        let spent = now_ns.saturating_sub(self.last_ns);
        match self.previous_local.take() {
            Some(true) => h.served(spent),
            _ => h.charge(spent),
        }
        self.last_ns = now_ns;
    }
}

/// What the hand-off policy made of one request.
enum Verdict {
    /// Serve it here: the wrapped handler answers.
    Local,
    /// Sent to the alternate (or dropped there): no local reply.
    HandedOff,
    /// Overloaded with the alternate down or saturated: refuse it with the
    /// service's overload reply.
    Reject,
}

/// Consult the admission for request `req` of `kind` at `now_ns` and
/// carry out a hand-off. A hand-off that cannot be sent is served locally.
fn consult(
    h: &HandoffShard,
    kind: ServiceKind,
    req: &policy::Request,
    now_ns: u64,
    from: SocketAddr,
    service: SocketAddr,
    d: &[u8],
) -> Verdict {
    match h.decide(now_ns, req) {
        Decision::Handoff(reason) if h.hand_off(kind, from, service, d) => {
            h.count_handoff(reason);
            Verdict::HandedOff
        }
        Decision::Handoff(_) | Decision::Local(_) => Verdict::Local,
        Decision::RejectOverloaded => {
            h.count_reject();
            Verdict::Reject
        }
    }
}

/// A UDP answer path the hand-off [`Gate`] can stand in front of.
pub trait Gated: DatagramHandler {
    /// Screen one datagram under `load`: `None` lets the wrapped handler
    /// answer it; `Some(send)` means the gate dealt with it (`send`: a
    /// reply was written into `out`).
    fn screen(
        &mut self,
        d: &[u8],
        from: SocketAddr,
        now_ns: u64,
        waited_ns: u64,
        gate: &GateCtx,
        out: &mut Vec<u8>,
    ) -> Option<bool>;
}

/// What a gated handler needs to hand a request off.
pub struct GateCtx {
    h: Rc<HandoffShard>,
    /// The local service address the requests arrived on.
    service: SocketAddr,
}

/// A UDP answer path with the hand-off policy in front: it measures what
/// each request cost (charged to the shard's admission) and lets the
/// wrapped handler screen each datagram before answering it.
pub struct Gate<S> {
    inner: S,
    ctx: GateCtx,
    meter: Meter,
}

impl<S: Gated> DatagramHandler for Gate<S> {
    fn begin_batch(&mut self) {
        self.ctx.h.absorb_worker_busy();
        self.meter.last_ns = self.ctx.h.now_ns();
        self.meter.realtime_offset_ns = udp::realtime_ns().saturating_sub(self.meter.last_ns);
        self.meter.previous_local = None;
        self.inner.begin_batch();
    }

    fn handle(&mut self, d: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> bool {
        let now = self.ctx.h.now_ns();
        self.meter.settle(&self.ctx.h, now);
        let waited = self.meter.waited_ns(now);
        match self.inner.screen(d, from, now, waited, &self.ctx, out) {
            Some(send) => {
                self.meter.previous_local = Some(false);
                send
            }
            None => {
                self.meter.previous_local = Some(true);
                self.inner.handle(d, from, out)
            }
        }
    }

    fn dropped(&mut self, why: DropKind) {
        self.inner.dropped(why);
    }

    fn wants_timestamps(&self) -> bool {
        true
    }

    fn received_at(&mut self, realtime_ns: u64) {
        self.meter.rx_ns = realtime_ns;
    }

    /// After the replies went out: the last request's cost, then the
    /// send time (charged as loop overhead).
    fn end_batch(&mut self) {
        let h = &self.ctx.h;
        let now = h.now_ns();
        if self.meter.previous_local.is_some() {
            // The last request ran until its reply was queued; the send
            // that followed is loop overhead. Without a finer reading,
            // split at the batch's end: the request gets the time.
            self.meter.settle(h, now);
        } else {
            h.charge(now.saturating_sub(self.meter.last_ns));
        }
        self.meter.last_ns = now;
        self.inner.end_batch();
    }
}

impl Gated for FunctionUdp {
    fn screen(
        &mut self,
        d: &[u8],
        from: SocketAddr,
        now_ns: u64,
        waited_ns: u64,
        gate: &GateCtx,
        out: &mut Vec<u8>,
    ) -> Option<bool> {
        let Decoded::Request(r) = fnframe::decode_request(d) else {
            return None;
        };
        let fs = &self.shard;
        let (index, cold) = match fs.lookup(r.name) {
            Lookup::Found(i, _) => (Some(i), fs.warmth(i) != Warmth::Warm),
            _ => (None, false),
        };
        let req = policy::Request {
            handed_off: false,
            cold,
            waited_ns,
        };
        let kind = ServiceKind::Function;
        match consult(&gate.h, kind, &req, now_ns, from, gate.service, d) {
            Verdict::Local => None,
            Verdict::HandedOff => {
                if let (Some(i), true) = (index, cold) {
                    fs.start_warmup(i);
                }
                Some(false)
            }
            Verdict::Reject => {
                fs.surface
                    .udp_status
                    .record(Status::Unavailable.http_code());
                fnframe::encode_error(out, r.id, Status::Unavailable, reject::FUNCTION_OVERLOADED);
                Some(true)
            }
        }
    }
}

/// Serve `sock` with `inner` behind the hand-off gate, in batches of
/// `batch` without receive coalescing (a coalescing wait would be queueing
/// delay the admission does not see).
async fn serve_gated<S: Gated>(
    inner: S,
    h: Rc<HandoffShard>,
    sock: UdpSocket,
    stop: &StopSignal,
    batch: usize,
    drops: &mut udp::KernelDrops,
) {
    let service = match sock.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("UDP socket has no local address: {e}");
            return;
        }
    };
    let mut gate = Gate {
        inner,
        ctx: GateCtx { h, service },
        meter: Meter::default(),
    };
    let settings = udp::LoopSettings::batch_only(batch);
    udp::serve_batched(&sock, &mut gate, stop, settings, drops).await;
}

/// Serve function invocation datagrams on `sock` with the hand-off policy.
pub async fn serve_fn_udp(
    shard: Rc<FunctionShard>,
    h: Rc<HandoffShard>,
    sock: UdpSocket,
    stop: StopSignal,
    mut drops: udp::KernelDrops,
) {
    let batch = crate::functions::server::UDP_BATCH;
    serve_gated(FunctionUdp { shard }, h, sock, &stop, batch, &mut drops).await;
}

/// Largest hand-off datagram received.
const RX_BUF: usize = 65_536;

/// Rounds of a busy hand-off port between two reads of its drop count.
const DROPS_POLL_ROUNDS: u32 = 256;

/// Verified handed-off requests waiting to be served, at most (the rest
/// wait in the kernel's socket buffer).
const PENDING_CAP: usize = 1024;

/// The hand-off port of this shard: verify every frame as soon as it is
/// queued (so time spent waiting behind our own work does not make it
/// stale, and pings are answered at once); serve handed-off requests here,
/// one at a time (never handing them on), and answer them in the configured
/// reply mode; forward relayed answers to their clients.
pub async fn serve_port(ctx: Rc<ShardCtx>, h: Rc<HandoffShard>, sock: UdpSocket) {
    let rx = match super::shard::dup_udp(&sock).and_then(|s| {
        s.set_nonblocking(true)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                shard = h.index(),
                "hand-off port: cannot duplicate the socket: {e}"
            );
            return;
        }
    };
    let mut buf = vec![0u8; RX_BUF];
    let mut out = Vec::with_capacity(2048);
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    // Buffers of served requests, reused for the next queued ones (at most
    // PENDING_CAP exist): no allocation per handed-off request.
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut fn_handler = ctx.functions.clone().map(|shard| FunctionUdp { shard });
    let mut dns_handler = DnsUdp { ctx: ctx.clone() };
    // Verify a datagram: answer a ping, forward a relayed answer, queue a
    // request.
    let admit =
        |d: &[u8], from: SocketAddr, pending: &mut VecDeque<Vec<u8>>, spare: &mut Vec<Vec<u8>>| {
            let Some(f) = h.open(d, from) else {
                return;
            };
            match f.ty {
                FrameType::Request => {
                    let mut copy = spare.pop().unwrap_or_default();
                    copy.clear();
                    copy.extend_from_slice(d);
                    pending.push_back(copy);
                }
                FrameType::Reply => {
                    h.forward(&f);
                }
                FrameType::Ping => h.pong(&f, from),
                // Pongs go to the heartbeat socket; one here is stray.
                FrameType::Pong => {}
            }
        };
    // The port's kernel drops, read with SO_MEMINFO (glommio's receive
    // gives no control messages) whenever the port goes idle, and every
    // DROPS_POLL_ROUNDS rounds while it is busy.
    let mut drops = match sock.local_addr() {
        Ok(local) => udp::KernelDrops::new(crate::metrics::udp_socket_drops(
            h.index(),
            "handoff",
            local,
        )),
        Err(_) => udp::KernelDrops::unexported(),
    };
    let mut rounds = 0u32;
    while !ctx.stop.is_stopped() {
        rounds = rounds.wrapping_add(1);
        if pending.is_empty() || rounds.is_multiple_of(DROPS_POLL_ROUNDS) {
            if let Ok(count) = udp::drop_count_now(rx.as_raw_fd()) {
                drops.observe(count);
            }
        }
        if pending.is_empty() {
            let got = future::or(async { Some(sock.recv_from(&mut buf).await) }, async {
                ctx.stop.stopped().await;
                None
            })
            .await;
            match got {
                None => break,
                Some(Ok((n, from))) => admit(&buf[..n], from, &mut pending, &mut spare),
                Some(Err(e)) => {
                    tracing::debug!(shard = h.index(), "hand-off recv: {e}");
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            }
        }
        // Whatever else is queued, without waiting.
        while pending.len() < PENDING_CAP {
            match rx.recv_from(&mut buf) {
                Ok((n, from)) => admit(&buf[..n], from, &mut pending, &mut spare),
                Err(_) => break,
            }
        }
        if let Some(d) = pending.pop_front() {
            let started = h.now_ns();
            if let Ok(f) = frame::parse(&d) {
                out.clear();
                // Served here whatever our load or warmth: it was handed off
                // once already (policy: local, already handed off).
                let answered = match f.service {
                    ServiceKind::Function => match &mut fn_handler {
                        Some(fh) => fh.handle(f.payload, f.client, &mut out),
                        None => false,
                    },
                    ServiceKind::Dns => {
                        dns_handler.begin_batch();
                        let a = dns_handler.handle(f.payload, f.client, &mut out);
                        dns_handler.end_batch();
                        a
                    }
                    ServiceKind::None => false,
                };
                if answered {
                    h.send_reply(&f, &out);
                }
            }
            // Work done for the alternate: foreign to this shard's own
            // admission, and part of the load our pongs report.
            h.charge(h.now_ns().saturating_sub(started));
            spare.push(d);
        }
        glommio::yield_if_needed().await;
    }
    h.detach();
}

/// Ping the alternate every `heartbeat_interval_ms` from this shard's own
/// socket and feed the pongs to the liveness state machine, until `stop`.
/// Runs in the shard's low-priority queue.
///
/// Pongs are read with nonblocking `recv_from` on a duplicate of the socket
/// and the task waits with glommio's `peek_from`: a wait cut short by the
/// timer then drops a peek, which consumes nothing (a dropped io_uring
/// `recv` may still take the next datagram and lose it).
pub async fn heartbeat(h: Rc<HandoffShard>, stop: StopSignal) {
    let local = SocketAddr::new(h.config().listen.ip(), 0);
    let opened = UdpSocket::bind(local).and_then(|sock| {
        let rx = super::shard::dup_udp(&sock)?;
        rx.set_nonblocking(true)?;
        Ok((sock, rx))
    });
    let (sock, rx) = match opened {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                shard = h.index(),
                "cannot open the hand-off heartbeat socket on {local}: {e}; the alternate stays marked down"
            );
            return;
        }
    };
    let interval = Duration::from_millis(h.config().heartbeat_interval_ms);
    let started = Instant::now();
    let mut buf = vec![0u8; 512];
    let mut probe = [0u8; 1];
    let mut out = Vec::with_capacity(128);
    while !stop.is_stopped() {
        let nonce = h.tick();
        h.heartbeat_frame(FrameType::Ping, nonce, &mut out);
        if let Err(e) = rx.send_to(&out, h.alternate()) {
            tracing::debug!(shard = h.index(), "heartbeat send: {e}");
        }
        let deadline = Instant::now() + interval;
        loop {
            while let Ok((n, from)) = rx.recv_from(&mut buf) {
                if let Some(f) = h.open(&buf[..n], from) {
                    if f.ty == FrameType::Pong {
                        h.on_pong(f.nonce, started.elapsed().as_millis() as u64, f.payload);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline || stop.is_stopped() {
                break;
            }
            let wait = deadline - now;
            future::or(
                async {
                    if sock.peek_from(&mut probe).await.is_err() {
                        // E.g. a queued ICMP error: do not spin on it.
                        glommio::timer::sleep(Duration::from_millis(5).min(wait)).await;
                    }
                },
                future::or(glommio::timer::sleep(wait), stop.stopped()),
            )
            .await;
        }
    }
}

/// What the HTTP surface does with one `POST /fn/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpVerdict {
    Serve,
    /// 307 to this URL.
    Redirect(String),
    /// 503 with Retry-After.
    Overloaded,
}

/// The value of the hop marker (`handoff=<token>` in the query string of
/// the request line at the front of `head`) that our redirects add; the
/// token is checked by [`HandoffShard::hop_token_is_valid`].
pub fn hop_marker(head: &[u8]) -> Option<&[u8]> {
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let line = &head[..line_end];
    let q = line.iter().position(|&b| b == b'?')?;
    let query_end = line[q..]
        .iter()
        .position(|&b| b == b' ')
        .map_or(line.len(), |p| q + p);
    line[q + 1..query_end]
        .split(|&b| b == b'&')
        .find_map(|kv| kv.strip_prefix(b"handoff="))
}

/// How long a redirect's hop token is honoured, seconds (the client
/// follows a 307 at once; the margin covers clock skew between the pair).
pub const HOP_TOKEN_TTL_S: u64 = 30;

fn hop_token_data(name: &str, ts_s: u64) -> Vec<u8> {
    let mut d = b"shardgate http hop ".to_vec();
    d.extend_from_slice(&ts_s.to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    d
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The hop token a node sealing with `key` puts on a redirect for function
/// `name` at `now_s` (Unix seconds): `<seconds>.<32 hex digits of MAC>`.
pub fn hop_token(key: &Key, name: &str, now_s: u64) -> String {
    let tag = key.tag(&hop_token_data(name, now_s));
    let mut t = format!("{now_s}.");
    for b in &tag[..16] {
        t.push_str(&format!("{b:02x}"));
    }
    t
}

/// Whether `token` was made by [`hop_token`] with `key` (the peer's sending
/// key) for `name`, at most [`HOP_TOKEN_TTL_S`] from `now_s`. Any client
/// can type `?handoff=1`; only the paired node can mint a valid token.
pub fn hop_token_is_valid(key: &Key, name: &str, token: &[u8], now_s: u64) -> bool {
    let Some(dot) = token.iter().position(|&b| b == b'.') else {
        return false;
    };
    let (ts, mac) = (&token[..dot], &token[dot + 1..]);
    let Some(ts_s) = std::str::from_utf8(ts)
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
    else {
        return false;
    };
    if ts_s.abs_diff(now_s) > HOP_TOKEN_TTL_S || mac.len() != 32 {
        return false;
    }
    let mut tag = [0u8; 16];
    for (i, pair) in mac.chunks(2).enumerate() {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(h), Some(l)) => tag[i] = (h << 4) | l,
            _ => return false,
        }
    }
    key.verify(&hop_token_data(name, ts_s), &tag)
}

impl HandoffShard {
    /// The policy for an HTTP request naming `name` (request head at the
    /// front of `head`): the shard's admission decides as for datagrams (a
    /// local decision commits the function's estimated service time); a
    /// cold function is redirected. Redirects need `alternate_http`;
    /// without it requests are served here.
    pub fn http_verdict(&self, fs: &FunctionShard, name: &str, head: &[u8]) -> HttpVerdict {
        let (index, cold) = match fs.lookup(name.as_bytes()) {
            Lookup::Found(i, _) => (Some(i), fs.warmth(i) != Warmth::Warm),
            _ => (None, false),
        };
        let req = policy::Request {
            handed_off: hop_marker(head).is_some_and(|t| {
                let ok = hop_token_is_valid(self.peer_key(), name, t, unix_us() / 1_000_000);
                if !ok {
                    self.count_bad_hop_token();
                }
                ok
            }),
            cold,
            waited_ns: 0,
        };
        match self.decide(self.now_ns(), &req) {
            Decision::Handoff(reason) => match &self.config().alternate_http {
                Some(base) => {
                    self.count_handoff(reason);
                    if let (Some(i), true) = (index, cold) {
                        fs.start_warmup(i);
                    }
                    HttpVerdict::Redirect(format!(
                        "{}/fn/{name}?handoff={}",
                        base.trim_end_matches('/'),
                        hop_token(self.sending_key(), name, unix_us() / 1_000_000)
                    ))
                }
                None => HttpVerdict::Serve,
            },
            Decision::RejectOverloaded => {
                self.count_reject();
                HttpVerdict::Overloaded
            }
            Decision::Local(_) => HttpVerdict::Serve,
        }
    }
}

/// Write the HTTP answer for a non-`Serve` verdict into `out`.
pub fn write_http_verdict(
    out: &mut Vec<u8>,
    verdict: &HttpVerdict,
    keep_alive: bool,
    shard: Option<usize>,
) {
    use std::io::Write;
    let (head, body): (String, &str) = match verdict {
        HttpVerdict::Serve => return,
        HttpVerdict::Redirect(url) => (
            format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {url}\r\n"),
            "handed off to the alternate node\n",
        ),
        HttpVerdict::Overloaded => (
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {}\r\n",
                reject::RETRY_AFTER_S
            ),
            "overloaded and the hand-off alternate is down: retry in a moment\n",
        ),
    };
    out.extend_from_slice(head.as_bytes());
    let status = match verdict {
        HttpVerdict::Overloaded => Status::Unavailable.as_str(),
        _ => "handoff",
    };
    let _ = write!(
        out,
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}: {status}\r\n",
        body.len(),
        crate::functions::http::STATUS_HEADER
    );
    if let Some(shard) = shard {
        let _ = write!(out, "{}: {shard}\r\n", crate::functions::http::SHARD_HEADER);
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_marker_is_read_from_the_query_string_only() {
        assert_eq!(
            hop_marker(b"POST /fn/echo?handoff=1 HTTP/1.1\r\nHost: x\r\n"),
            Some(&b"1"[..])
        );
        assert_eq!(
            hop_marker(b"POST /fn/echo?a=b&handoff=12.ab HTTP/1.1\r\n"),
            Some(&b"12.ab"[..])
        );
        assert_eq!(
            hop_marker(b"POST /fn/echo HTTP/1.1\r\nX: ?handoff=1\r\n"),
            None
        );
        assert_eq!(hop_marker(b""), None);
    }

    #[test]
    fn only_the_peer_can_mint_a_hop_token_and_only_for_a_while() {
        let shared = Key::new(&[7u8; 32]).unwrap();
        let a: SocketAddr = "127.0.0.2:8055".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:8055".parse().unwrap();
        // A mints with its sending key; B checks with A's sending key.
        let t = hop_token(&shared.for_sender(a), "echo", 1_000);
        let peer_key = shared.for_sender(a);
        assert!(hop_token_is_valid(&peer_key, "echo", t.as_bytes(), 1_000));
        assert!(hop_token_is_valid(
            &peer_key,
            "echo",
            t.as_bytes(),
            1_000 + HOP_TOKEN_TTL_S
        ));
        // Expired, for another function, typed by a client, or B's own.
        assert!(!hop_token_is_valid(&peer_key, "echo", t.as_bytes(), 1_031));
        assert!(!hop_token_is_valid(&peer_key, "other", t.as_bytes(), 1_000));
        assert!(!hop_token_is_valid(&peer_key, "echo", b"1", 1_000));
        let own = hop_token(&shared.for_sender(b), "echo", 1_000);
        assert!(!hop_token_is_valid(
            &peer_key,
            "echo",
            own.as_bytes(),
            1_000
        ));
        // A forged timestamp breaks the MAC; junk never panics.
        let forged = t.replacen("1000.", "1001.", 1);
        assert!(!hop_token_is_valid(
            &peer_key,
            "echo",
            forged.as_bytes(),
            1_000
        ));
        for junk in [
            &b"."[..],
            b"1.",
            b".ab",
            b"99999999999999999999999.00",
            b"1.zz",
        ] {
            assert!(!hop_token_is_valid(&peer_key, "echo", junk, 1_000));
        }
    }
    #[test]
    fn redirect_and_overload_answers() {
        let mut out = Vec::new();
        write_http_verdict(
            &mut out,
            &HttpVerdict::Redirect("http://127.0.0.3:8054/fn/echo?handoff=1.ab".into()),
            true,
            Some(0),
        );
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 307 "), "{text}");
        assert!(text.contains("\r\nLocation: http://127.0.0.3:8054/fn/echo?handoff=1.ab\r\n"));
        let body_at = text.find("\r\n\r\n").unwrap() + 4;
        let len: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(text.len() - body_at, len);
        out.clear();
        write_http_verdict(&mut out, &HttpVerdict::Overloaded, false, None);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("\r\nRetry-After: 1\r\n") && text.contains("Connection: close"));
    }
}
