//! The hand-off gate of a shard's executor: a UDP answer path with the
//! admission in front ([`HandoffGate`] over any [`Gated`] handler; DNS UDP
//! is gated on the shard's worker thread instead, see [`super::worker`]),
//! and the heartbeat task that keeps the alternate's liveness.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::UdpSocket;

use super::frame::{FrameType, ServiceKind};
use super::per_shard::HandoffShard;
use super::policy::{self, Decision};
use crate::runtime::stop::StopSignal;
use crate::runtime::udp::{self, DatagramHandler, DropKind};

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
pub enum Verdict {
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
pub fn consult(
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

/// A UDP answer path the hand-off [`HandoffGate`] can stand in front of.
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
    pub h: Rc<HandoffShard>,
    /// The local service address the requests arrived on.
    pub service: SocketAddr,
}

/// A UDP answer path with the hand-off policy in front: it measures what
/// each request cost (charged to the shard's admission) and lets the
/// wrapped handler screen each datagram before answering it.
pub struct HandoffGate<S> {
    inner: S,
    ctx: GateCtx,
    meter: Meter,
}

impl<S: Gated> DatagramHandler for HandoffGate<S> {
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

/// Serve `sock` with `inner` behind the hand-off gate, in batches of
/// `batch` without receive coalescing (a coalescing wait would be queueing
/// delay the admission does not see).
pub async fn serve_gated<S: Gated>(
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
    let mut gate = HandoffGate {
        inner,
        ctx: GateCtx { h, service },
        meter: Meter::default(),
    };
    let settings = udp::LoopSettings::batch_only(batch);
    udp::serve_batched(&sock, &mut gate, stop, settings, drops).await;
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
        let rx = super::per_shard::dup_udp(&sock)?;
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
