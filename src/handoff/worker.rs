//! The hand-off gate of a shard's DNS UDP worker thread: the same
//! work-conserving admission as the executor's gates, with state of its own
//! (the worker runs on the shard's core but on its own thread, so nothing
//! here is shared on the request path).
//!
//! What the worker owns: its [`Admission`], its own sending socket (a port
//! of its own, so its frames are a flow of their own at the alternate), its
//! nonce counter and a copy of the shard's sending key. Frames only go out
//! from here; handed-in frames, relayed answers and heartbeats stay on the
//! executor's hand-off port. Frames are stateless, so no replay state is
//! needed on this side.
//!
//! What crosses threads, through [`GateLink`] (atomics, each written by one
//! side only, read once per batch or per publish): the alternate's state as
//! the executor's heartbeat sees it, each side's busy time (so each
//! admission charges the other's work on the core as foreign), and the
//! worker's hand-off counters for the metrics.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::frame::{self, Frame, FrameType, Key, ServiceKind};
use super::per_shard::unix_us;
use super::policy::{Admission, Alternate, Decision, HandoffReason, Request, Thresholds};
use super::reject;
use crate::runtime::screen::Screen;
use crate::runtime::udp::realtime_ns;

/// The executor side's and the worker side's shared facts (see the
/// module docs).
#[derive(Debug, Default)]
pub struct GateLink {
    /// 0: alternate down; 1..=101: up, reporting busy percent + 1; 255: up,
    /// reporting nothing. Written by the heartbeat.
    alternate: AtomicU8,
    /// Busy ns of the executor's request work (written by the executor).
    pub executor_busy_ns: AtomicU64,
    /// Busy ns of the workers' request work (each worker of the shard
    /// adds its own, once per batch).
    pub worker_busy_ns: AtomicU64,
    /// The worker's DNS queries handed off for overload, refused
    /// (alternate down or saturated), and hand-offs that could not be sent.
    pub overloaded: AtomicU64,
    pub rejects: AtomicU64,
    pub send_failed: AtomicU64,
    /// Requests the workers' admissions were offered and handed off for
    /// overload (every worker of the shard adds its own, once per batch).
    pub offered: AtomicU64,
    pub handed: AtomicU64,
}

impl GateLink {
    pub fn set_alternate(&self, alt: Alternate) {
        let v = match alt {
            Alternate::Down => 0,
            Alternate::Up {
                busy_percent: Some(b),
            } => b.min(100) + 1,
            Alternate::Up { busy_percent: None } => 255,
        };
        self.alternate.store(v, Ordering::Relaxed);
    }

    pub fn alternate(&self) -> Alternate {
        match self.alternate.load(Ordering::Relaxed) {
            0 => Alternate::Down,
            255 => Alternate::Up { busy_percent: None },
            v => Alternate::Up {
                busy_percent: Some(v - 1),
            },
        }
    }
}

/// One DNS worker's gate.
pub struct WorkerGate {
    link: Arc<GateLink>,
    admission: Admission,
    key: Key,
    alternate: SocketAddr,
    tx: UdpSocket,
    /// The worker's service address (the frames' original service address).
    service: SocketAddr,
    nonce: u64,
    frame_buf: Vec<u8>,
    epoch: Instant,
    alt: Alternate,
    /// Clock reading ending the previous request's cost, and whether that
    /// request was served here.
    last_ns: u64,
    previous_local: Option<bool>,
    /// CLOCK_REALTIME minus our clock at the batch's start, and the kernel
    /// receive time of the datagram about to be screened (0: none).
    realtime_offset_ns: u64,
    rx_ns: u64,
    /// Busy ns of this worker (published to the link per batch), and the
    /// executor's busy ns seen at the last batch (the delta is foreign).
    busy_ns: u64,
    executor_seen_ns: u64,
    /// What this worker already added to the link: busy ns, offered and
    /// handed-off requests.
    reported: (u64, u64, u64),
}

impl WorkerGate {
    /// A gate sending from its own socket on `bind_ip` to `alternate`,
    /// sealing with `key` (the shard's sending key).
    pub fn new(
        link: Arc<GateLink>,
        thresholds: &Thresholds,
        key: Key,
        alternate: SocketAddr,
        bind_ip: std::net::IpAddr,
        service: SocketAddr,
        nonce_base: u64,
    ) -> std::io::Result<WorkerGate> {
        let tx = UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
        tx.set_nonblocking(true)?;
        let alt = link.alternate();
        Ok(WorkerGate {
            executor_seen_ns: link.executor_busy_ns.load(Ordering::Relaxed),
            link,
            admission: Admission::new(thresholds),
            key,
            alternate,
            tx,
            service,
            nonce: nonce_base,
            frame_buf: Vec::with_capacity(2048),
            epoch: Instant::now(),
            alt,
            last_ns: 0,
            previous_local: None,
            realtime_offset_ns: 0,
            rx_ns: 0,
            busy_ns: 0,
            reported: (0, 0, 0),
        })
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn settle(&mut self, now_ns: u64) {
        let spent = now_ns.saturating_sub(self.last_ns);
        match self.previous_local.take() {
            Some(true) => self.admission.served(spent),
            _ => self.admission.charge(spent),
        }
        self.busy_ns += spent;
        self.last_ns = now_ns;
    }
}

impl Screen for WorkerGate {
    /// A receive batch starts: pick up the alternate's state and the
    /// executor's work since the last batch.
    fn begin_batch(&mut self) {
        let alt = self.link.alternate();
        if alt != self.alt {
            self.alt = alt;
            self.admission.alternate_report(alt);
        }
        let executor = self.link.executor_busy_ns.load(Ordering::Relaxed);
        self.admission
            .charge(executor.saturating_sub(self.executor_seen_ns));
        self.executor_seen_ns = executor;
        self.last_ns = self.now_ns();
        self.realtime_offset_ns = realtime_ns().saturating_sub(self.last_ns);
        self.previous_local = None;
    }

    fn received_at(&mut self, realtime_ns: u64) {
        self.rx_ns = realtime_ns;
    }

    /// Screen one datagram: `None` lets the worker answer it; `Some(send)`
    /// means the gate dealt with it (`send`: a SERVFAIL was written into
    /// `out`).
    fn screen(&mut self, d: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> Option<bool> {
        let now = self.now_ns();
        self.settle(now);
        let is_query = d.len() >= 12 && d[2] & 0x80 == 0;
        if !is_query {
            self.previous_local = Some(true);
            return None;
        }
        let waited_ns = if self.rx_ns == 0 {
            0
        } else {
            (now + self.realtime_offset_ns).saturating_sub(self.rx_ns)
        };
        let req = Request {
            handed_off: false,
            cold: false,
            waited_ns,
        };
        match self.admission.decide(now, &req, self.alt) {
            Decision::Handoff(HandoffReason::Overloaded | HandoffReason::Cold) => {
                self.previous_local = Some(false);
                if self.send(from, d) {
                    self.link.overloaded.fetch_add(1, Ordering::Relaxed);
                    Some(false)
                } else {
                    self.link.send_failed.fetch_add(1, Ordering::Relaxed);
                    self.previous_local = Some(true);
                    None
                }
            }
            Decision::Local(_) => {
                self.previous_local = Some(true);
                None
            }
            Decision::RejectOverloaded => {
                self.previous_local = Some(false);
                self.link.rejects.fetch_add(1, Ordering::Relaxed);
                Some(reject::dns_servfail(d, out))
            }
        }
    }

    /// The batch's replies went out.
    fn end_batch(&mut self) {
        let now = self.now_ns();
        if self.previous_local.is_some() {
            self.settle(now);
        } else {
            let spent = now.saturating_sub(self.last_ns);
            self.admission.charge(spent);
            self.busy_ns += spent;
            self.last_ns = now;
        }
        let (offered, handed) = self.admission.totals();
        let (busy0, offered0, handed0) = self.reported;
        let l = &self.link;
        l.worker_busy_ns
            .fetch_add(self.busy_ns - busy0, Ordering::Relaxed);
        l.offered.fetch_add(offered - offered0, Ordering::Relaxed);
        l.handed.fetch_add(handed - handed0, Ordering::Relaxed);
        self.reported = (self.busy_ns, offered, handed);
    }
}

impl WorkerGate {
    fn send(&mut self, client: SocketAddr, datagram: &[u8]) -> bool {
        self.nonce = self.nonce.wrapping_add(1);
        let f = Frame {
            ty: FrameType::Request,
            hop: true,
            service: ServiceKind::Dns,
            timestamp_us: unix_us(),
            nonce: self.nonce,
            client,
            service_addr: self.service,
            payload: datagram,
        };
        if frame::seal(&self.key, &f, &mut self.frame_buf).is_err() {
            return false;
        }
        self.tx.send_to(&self.frame_buf, self.alternate).is_ok()
    }
}
