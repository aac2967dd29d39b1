//! One shard's hand-off state: its key and frame opener, its view of the
//! alternate (heartbeat), its counters, and the synchronous sends the
//! request path needs (hand a datagram off, answer a handed-off client,
//! forward a relayed answer). Shard-local (`Cell`/`RefCell`), no locks.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::frame::{self, Frame, FrameDrop, FrameType, Key, Opener, ServiceKind};
use super::liveness::{Liveness, Transition};
use super::policy::{Admission, Alternate, Decision, HandoffReason, Request};
use super::raw::RawSender;
use super::replay::ReplayTable;
use super::worker::{GateLink, WorkerGate};
use crate::config::handoff::{HandoffConfig, ReplyMode};
use crate::metrics::local::bump;

/// Hand-off running totals of one shard; published by
/// `shard::meter::ShardMetrics::publish_handoff`. All zero until hand-off is configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffCounts {
    pub cold: u64,
    pub overloaded: u64,
    pub frames_received: u64,
    pub dropped_bad_mac: u64,
    pub dropped_stale: u64,
    pub dropped_wrong_source: u64,
    pub dropped_malformed: u64,
    pub dropped_replayed: u64,
    pub dropped_guard_full: u64,
    pub bad_hop_tokens: u64,
    pub replies_direct: u64,
    pub replies_relay: u64,
    pub overload_rejects: u64,
    pub alternate_up: bool,
    /// Handed-off share of the last window, parts per million.
    pub share_ppm: u32,
    /// The alternate's reported busy percent (None: reports none).
    pub alternate_busy_percent: Option<u8>,
    pub alternate_saturated: bool,
    /// This shard's busy percent as reported to the alternate.
    pub busy_percent: u8,
}

/// Shard-local running totals.
#[derive(Debug, Default)]
pub struct Counters {
    pub cold: Cell<u64>,
    pub overloaded: Cell<u64>,
    pub received: Cell<u64>,
    pub bad_mac: Cell<u64>,
    pub stale: Cell<u64>,
    pub replayed: Cell<u64>,
    pub guard_full: Cell<u64>,
    /// HTTP requests whose `handoff=` hop token did not verify (treated as
    /// first-hop requests).
    pub bad_hop_token: Cell<u64>,
    /// Direct replies refused for a source address that is not the
    /// alternate's (relayed instead).
    pub direct_refused: Cell<u64>,
    pub wrong_source: Cell<u64>,
    pub malformed: Cell<u64>,
    /// Replies sent for handed-off requests, by mode (on the answering node).
    pub direct: Cell<u64>,
    pub relay: Cell<u64>,
    /// Relayed answers forwarded to clients (on the first node).
    pub forwarded: Cell<u64>,
    pub rejects: Cell<u64>,
    /// Hand-offs that could not be sent (served here instead).
    pub send_failed: Cell<u64>,
}

/// Current time, microseconds since the Unix epoch (frame timestamps).
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One shard's hand-off state; shared as `Rc` by the shard's UDP handlers,
/// the HTTP gate, the hand-off receive task and the heartbeat task.
pub struct HandoffShard {
    index: usize,
    cfg: HandoffConfig,
    alternate: SocketAddr,
    key: Key,
    /// The alternate's sending key (checks its HTTP hop tokens).
    peer_key: Key,
    opener: RefCell<Opener>,
    liveness: RefCell<Liveness>,
    up: Cell<bool>,
    nonce: Cell<u64>,
    pub counts: Counters,
    /// A duplicate of the hand-off socket's fd, for synchronous sends.
    tx: RefCell<Option<UdpSocket>>,
    /// Duplicates of this shard's DNS and function UDP sockets, by local
    /// address: relayed answers leave from the address the client used.
    services: RefCell<Vec<(SocketAddr, UdpSocket)>>,
    raw: RefCell<Option<RawSender>>,
    reply: Cell<ReplyMode>,
    buf: RefCell<Vec<u8>>,
    /// The work-conserving admission of this shard's executor (every gate
    /// on it shares it: one core, one virtual queue).
    admission: RefCell<Admission>,
    /// Monotonic origin of the admission's clock.
    epoch: Instant,
    /// Busy time of this shard's request work (gates, hand-off port), ns:
    /// what the heartbeat reports to the alternate as our load.
    busy_ns: Cell<u64>,
    /// (wall ns, busy ns) at the last load sample, and the busy percent
    /// measured between the two last samples.
    load_sample: Cell<(u64, u64)>,
    load_percent: Cell<u8>,
    /// The alternate's busy percent from its last pong (None: it sent none).
    alternate_busy: Cell<Option<u8>>,
    /// Shared with this shard's DNS worker threads (see `super::worker`).
    link: Arc<GateLink>,
    /// The workers' busy ns already charged to this shard's admission.
    worker_seen_ns: Cell<u64>,
    /// Offered and handed-off totals at the last [`HandoffShard::share_ppm`].
    share_seen: Cell<(u64, u64)>,
}

/// Shortest interval between two load samples, ns.
const LOAD_SAMPLE_NS: u64 = 50_000_000;

/// A random 64-bit value from the kernel (nonce base).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        unix_us().rotate_left(17) ^ u64::from(std::process::id())
    }
}

/// Duplicate a socket's fd into a std socket (shares the socket, owns the
/// duplicate).
pub fn dup_udp(fd: &impl AsRawFd) -> std::io::Result<UdpSocket> {
    // SAFETY: the fd is open for the duration of this call (borrowed from
    // a live socket); try_clone_to_owned duplicates it.
    let owned = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) }.try_clone_to_owned()?;
    Ok(UdpSocket::from(owned))
}

impl HandoffShard {
    /// State for shard `index`. `cfg.alternate` must be set (validated).
    /// `replay` is the node's replay guard, shared by every shard.
    pub fn new(
        index: usize,
        cfg: HandoffConfig,
        key: Key,
        replay: Arc<ReplayTable>,
    ) -> HandoffShard {
        let alternate = cfg
            .alternate
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8055)));
        let window_us = cfg.window_ms.saturating_mul(1000);
        let reply = cfg.reply;
        let raw = if reply == ReplyMode::Direct {
            match RawSender::open() {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(
                        shard = index,
                        "handoff.reply = \"direct\" needs a raw socket, which is not permitted here ({e}); \
                         replying in relay mode instead (grant CAP_NET_RAW to reply directly)"
                    );
                    None
                }
            }
        } else {
            None
        };
        HandoffShard {
            index,
            opener: RefCell::new(Opener::new(
                key.for_sender(alternate),
                alternate,
                window_us,
                replay,
            )),
            liveness: RefCell::new(Liveness::new(cfg.heartbeat_misses)),
            up: Cell::new(false),
            nonce: Cell::new(random_u64()),
            counts: Counters::default(),
            tx: RefCell::new(None),
            services: RefCell::new(Vec::new()),
            reply: Cell::new(if raw.is_some() {
                ReplyMode::Direct
            } else {
                ReplyMode::Relay
            }),
            raw: RefCell::new(raw),
            buf: RefCell::new(Vec::with_capacity(2048)),
            admission: RefCell::new(Admission::new(&cfg.thresholds())),
            epoch: Instant::now(),
            busy_ns: Cell::new(0),
            load_sample: Cell::new((0, 0)),
            load_percent: Cell::new(0),
            alternate_busy: Cell::new(None),
            link: Arc::new(GateLink::default()),
            worker_seen_ns: Cell::new(0),
            share_seen: Cell::new((0, 0)),
            alternate,
            peer_key: key.for_sender(alternate),
            key: key.for_sender(cfg.listen),
            cfg,
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn config(&self) -> &HandoffConfig {
        &self.cfg
    }

    pub fn alternate(&self) -> SocketAddr {
        self.alternate
    }

    /// This node's sending key (seals frames and HTTP hop tokens).
    pub fn sending_key(&self) -> &Key {
        &self.key
    }

    /// The alternate's sending key.
    pub fn peer_key(&self) -> &Key {
        &self.peer_key
    }

    /// Count an HTTP hop token that did not verify.
    pub fn count_bad_hop_token(&self) {
        bump(&self.counts.bad_hop_token);
    }

    /// The heartbeat's view of the alternate.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.get()
    }

    /// Nanoseconds on the admission's monotonic clock.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The alternate as the admission sees it.
    fn alternate_state(&self) -> Alternate {
        if self.up.get() {
            Alternate::Up {
                busy_percent: self.alternate_busy.get(),
            }
        } else {
            Alternate::Down
        }
    }

    /// The admission's decision for one request at `now_ns`.
    pub fn decide(&self, now_ns: u64, req: &Request) -> Decision {
        self.admission
            .borrow_mut()
            .decide(now_ns, req, self.alternate_state())
    }

    /// A locally served request took `ns`.
    pub fn served(&self, ns: u64) {
        self.admission.borrow_mut().served(ns);
        self.add_busy(ns);
    }

    /// Other work of this shard took `ns` (a hand-off's send, a loop's
    /// receive and send, serving a handed-in request).
    pub fn charge(&self, ns: u64) {
        self.admission.borrow_mut().charge(ns);
        self.add_busy(ns);
    }

    fn add_busy(&self, ns: u64) {
        let busy = self.busy_ns.get() + ns;
        self.busy_ns.set(busy);
        self.link.executor_busy_ns.store(busy, Ordering::Relaxed);
    }

    /// Charge what this shard's DNS worker threads did on the core since
    /// the last call (foreign work to the executor's admission). Called
    /// once per receive batch of the executor's gates.
    pub fn absorb_worker_busy(&self) {
        let worker = self.link.worker_busy_ns.load(Ordering::Relaxed);
        let new = worker.saturating_sub(self.worker_seen_ns.get());
        if new > 0 {
            self.worker_seen_ns.set(worker);
            self.admission.borrow_mut().charge(new);
        }
    }

    /// The gate for a DNS worker thread serving `service` (see
    /// `super::worker`): its own admission and sending socket.
    pub fn worker_gate(&self, service: SocketAddr) -> std::io::Result<WorkerGate> {
        WorkerGate::new(
            self.link.clone(),
            &self.cfg.thresholds(),
            self.key.clone(),
            self.alternate,
            self.cfg.listen.ip(),
            service,
            random_u64(),
        )
    }

    /// Handed-off share (overload) since the previous call, parts per
    /// million: the executor's and this shard's DNS workers' requests
    /// together (called once per metrics publish). No request since: 0.
    pub fn share_ppm(&self) -> u32 {
        let (o1, h1) = self.admission.borrow().totals();
        let offered = o1 + self.link.offered.load(Ordering::Relaxed);
        let handed = h1 + self.link.handed.load(Ordering::Relaxed);
        let (o0, h0) = self.share_seen.replace((offered, handed));
        (handed.saturating_sub(h0) * 1_000_000)
            .checked_div(offered.saturating_sub(o0))
            .unwrap_or(0)
            .min(1_000_000) as u32
    }

    /// The alternate's last reported busy percent.
    pub fn alternate_busy(&self) -> Option<u8> {
        self.alternate_busy.get()
    }

    /// Whether the alternate reports saturation (our share is frozen).
    pub fn alternate_saturated(&self) -> bool {
        self.admission.borrow().alternate_saturated()
    }

    /// This shard's busy percent over the last sample interval (what our
    /// pongs report).
    pub fn load_percent(&self) -> u8 {
        let now = self.now_ns();
        let (t0, b0) = self.load_sample.get();
        if now.saturating_sub(t0) >= LOAD_SAMPLE_NS {
            let busy = self.busy_ns.get() + self.link.worker_busy_ns.load(Ordering::Relaxed);
            let pct = (busy.saturating_sub(b0) * 100 / now.saturating_sub(t0).max(1)).min(100);
            self.load_percent.set(pct as u8);
            self.load_sample.set((now, busy));
        }
        self.load_percent.get()
    }

    pub fn next_nonce(&self) -> u64 {
        let n = self.nonce.get().wrapping_add(1);
        self.nonce.set(n);
        n
    }

    /// Open this shard's own sending socket: bound to the hand-off
    /// address's IP with a port of its own, so that frames from different
    /// shards are different flows and spread over the alternate's shards
    /// (its SO_REUSEPORT hash and SO_INCOMING_CPU steering). Nonblocking:
    /// a full send buffer fails the hand-off, which is then served here.
    pub fn open_tx(&self) -> std::io::Result<()> {
        let sock = UdpSocket::bind(SocketAddr::new(self.cfg.listen.ip(), 0))?;
        sock.set_nonblocking(true)?;
        *self.tx.borrow_mut() = Some(sock);
        Ok(())
    }

    /// Register a service socket (bound to `addr`) relayed answers may
    /// leave from.
    pub fn attach_service(&self, addr: SocketAddr, sock: &impl AsRawFd) -> std::io::Result<()> {
        self.services.borrow_mut().push((addr, dup_udp(sock)?));
        Ok(())
    }

    /// Close the duplicated fds (at shutdown).
    pub fn detach(&self) {
        self.tx.borrow_mut().take();
        self.services.borrow_mut().clear();
    }

    pub fn count_handoff(&self, reason: HandoffReason) {
        match reason {
            HandoffReason::Cold => bump(&self.counts.cold),
            HandoffReason::Overloaded => bump(&self.counts.overloaded),
        }
    }

    pub fn count_reject(&self) {
        bump(&self.counts.rejects);
    }

    /// Seal a frame into the scratch buffer and send it to `to` from the
    /// hand-off socket. False when it could not be sent.
    fn send_frame(&self, f: &Frame<'_>, to: SocketAddr) -> bool {
        let mut buf = self.buf.borrow_mut();
        if frame::seal(&self.key, f, &mut buf).is_err() {
            return false;
        }
        let tx = self.tx.borrow();
        let Some(tx) = tx.as_ref() else {
            return false;
        };
        match tx.send_to(&buf, to) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(shard = self.index, "hand-off send to {to}: {e}");
                false
            }
        }
    }

    /// Hand `datagram` (sent by `client` to our `service` address) to the
    /// alternate. False when it could not be sent: serve it here then.
    pub fn hand_off(
        &self,
        kind: ServiceKind,
        client: SocketAddr,
        service: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        let f = Frame {
            ty: FrameType::Request,
            hop: true,
            service: kind,
            timestamp_us: unix_us(),
            nonce: self.next_nonce(),
            client,
            service_addr: service,
            payload: datagram,
        };
        let ok = self.send_frame(&f, self.alternate);
        if !ok {
            bump(&self.counts.send_failed);
        }
        ok
    }

    /// Verify a received datagram; counts it and, when dropped, why.
    pub fn open<'a>(&self, d: &'a [u8], from: SocketAddr) -> Option<Frame<'a>> {
        bump(&self.counts.received);
        match self.opener.borrow_mut().open(d, from, unix_us()) {
            Ok(f) => Some(f),
            Err(why) => {
                let c = &self.counts;
                bump(match why {
                    FrameDrop::Malformed(_) => &c.malformed,
                    FrameDrop::WrongSource => &c.wrong_source,
                    FrameDrop::BadMac => &c.bad_mac,
                    FrameDrop::Stale => &c.stale,
                    FrameDrop::Replayed => &c.replayed,
                    FrameDrop::GuardFull => &c.guard_full,
                });
                tracing::debug!(shard = self.index, %from, reason = why.as_str(), detail = ?why, "hand-off frame dropped");
                None
            }
        }
    }

    /// Answer a handed-off request (`req`): straight to the client from
    /// the original service address (direct), or back to the first node in
    /// a reply frame (relay). Direct falls back to relay for IPv6 and, for
    /// good, when the kernel refuses the raw send.
    pub fn send_reply(&self, req: &Frame<'_>, reply: &[u8]) {
        let can_send = |raw: &Option<RawSender>| {
            raw.as_ref()
                .is_some_and(|r| r.can_send(&req.service_addr, &req.client))
        };
        let allowed = self.cfg.direct_source_allowed(&req.service_addr);
        if self.reply.get() == ReplyMode::Direct && !allowed {
            bump(&self.counts.direct_refused);
            if self.counts.direct_refused.get() == 1 {
                tracing::warn!(
                    shard = self.index,
                    source = %req.service_addr,
                    "a handed-off request names a service address that is not the alternate's \
                     (handoff.alternate's IP or handoff.alternate_service_ips): answered in relay \
                     mode instead of sending from that source; list the alternate's service IPs \
                     in handoff.alternate_service_ips"
                );
            }
        }
        if self.reply.get() == ReplyMode::Direct && allowed && can_send(&self.raw.borrow()) {
            let sent = self
                .raw
                .borrow_mut()
                .as_mut()
                .map(|raw| raw.send(req.service_addr, req.client, reply));
            match sent {
                Some(Ok(())) => {
                    bump(&self.counts.direct);
                    return;
                }
                Some(Err(e)) if e.raw_os_error() == Some(libc::EPERM) => {
                    tracing::warn!(
                        shard = self.index,
                        "direct reply refused ({e}); replying in relay mode from now on"
                    );
                    self.reply.set(ReplyMode::Relay);
                    self.raw.borrow_mut().take();
                }
                Some(Err(e)) => {
                    tracing::debug!(shard = self.index, "direct reply: {e}; relaying this one");
                }
                None => {}
            }
        }
        let f = Frame {
            ty: FrameType::Reply,
            hop: true,
            service: req.service,
            timestamp_us: unix_us(),
            nonce: self.next_nonce(),
            client: req.client,
            service_addr: req.service_addr,
            payload: reply,
        };
        if self.send_frame(&f, self.alternate) {
            bump(&self.counts.relay);
        } else {
            bump(&self.counts.send_failed);
        }
    }

    /// Forward a relayed answer to its client from the service socket the
    /// client used. False when that address is not one of ours.
    pub fn forward(&self, reply: &Frame<'_>) -> bool {
        let services = self.services.borrow();
        let Some((_, sock)) = services.iter().find(|(a, _)| *a == reply.service_addr) else {
            bump(&self.counts.malformed);
            tracing::debug!(shard = self.index, service = %reply.service_addr, "relayed answer for an address this node does not serve");
            return false;
        };
        match sock.send_to(reply.payload, reply.client) {
            Ok(_) => {
                bump(&self.counts.forwarded);
                true
            }
            Err(e) => {
                tracing::debug!(shard = self.index, "forwarding a relayed answer: {e}");
                bump(&self.counts.send_failed);
                false
            }
        }
    }

    /// Seal a heartbeat frame (ping, or a pong echoing `nonce`) into `out`.
    pub fn heartbeat_frame(&self, ty: FrameType, nonce: u64, out: &mut Vec<u8>) {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        // A pong carries this shard's busy percent (one byte); a ping
        // carries nothing.
        let load = [self.load_percent()];
        let payload: &[u8] = if ty == FrameType::Pong { &load } else { &[] };
        let f = Frame {
            ty,
            hop: false,
            service: ServiceKind::None,
            timestamp_us: unix_us(),
            nonce,
            client: unspecified,
            service_addr: unspecified,
            payload,
        };
        let _ = frame::seal(&self.key, &f, out);
    }

    /// Answer a ping (from the pair's IP) with a pong to its source.
    pub fn pong(&self, ping: &Frame<'_>, from: SocketAddr) {
        let mut out = Vec::with_capacity(frame::OVERHEAD);
        self.heartbeat_frame(FrameType::Pong, ping.nonce, &mut out);
        if let Some(tx) = self.tx.borrow().as_ref() {
            let _ = tx.send_to(&out, from);
        }
    }

    /// A heartbeat period passed; returns the ping nonce to send.
    pub fn tick(&self) -> u64 {
        let nonce = self.next_nonce();
        let t = self.liveness.borrow_mut().tick(nonce);
        self.transition(t);
        nonce
    }

    /// An authenticated pong arrived; `payload` is the alternate's busy
    /// percent (empty from a node that reports none).
    pub fn on_pong(&self, nonce: u64, now_ms: u64, payload: &[u8]) {
        let t = self.liveness.borrow_mut().pong(nonce, now_ms);
        self.transition(t);
        self.alternate_busy
            .set(payload.first().map(|&b| b.min(100)));
        self.admission
            .borrow_mut()
            .alternate_report(self.alternate_state());
        self.link.set_alternate(self.alternate_state());
    }

    fn transition(&self, t: Option<Transition>) {
        match t {
            Some(Transition::WentUp) => {
                self.up.set(true);
                self.link.set_alternate(self.alternate_state());
                tracing::info!(shard = self.index, alternate = %self.alternate, "hand-off alternate up");
            }
            Some(Transition::WentDown) => {
                self.up.set(false);
                self.link.set_alternate(Alternate::Down);
                tracing::warn!(
                    shard = self.index,
                    alternate = %self.alternate,
                    misses = self.cfg.heartbeat_misses,
                    "hand-off alternate down (no heartbeat answer); serving locally"
                );
            }
            None => {}
        }
    }

    /// The totals in the metrics' shape.
    pub fn snapshot(&self) -> HandoffCounts {
        let c = &self.counts;
        let w = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        HandoffCounts {
            cold: c.cold.get(),
            overloaded: c.overloaded.get() + w(&self.link.overloaded),
            frames_received: c.received.get(),
            dropped_bad_mac: c.bad_mac.get(),
            dropped_stale: c.stale.get(),
            dropped_replayed: c.replayed.get(),
            dropped_guard_full: c.guard_full.get(),
            bad_hop_tokens: c.bad_hop_token.get(),
            dropped_wrong_source: c.wrong_source.get(),
            dropped_malformed: c.malformed.get(),
            replies_direct: c.direct.get(),
            replies_relay: c.relay.get(),
            overload_rejects: c.rejects.get() + w(&self.link.rejects),
            alternate_up: self.is_up(),
            share_ppm: self.share_ppm(),
            alternate_busy_percent: self.alternate_busy(),
            alternate_saturated: self.alternate_saturated(),
            busy_percent: self.load_percent(),
        }
    }
}
