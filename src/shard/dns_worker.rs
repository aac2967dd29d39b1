//! A shard's DNS UDP worker thread: every DNS UDP socket of a shard is
//! served by one, hand-off included (the hand-off gate runs here, as a
//! [`Screen`] with state of its own).
//!
//! The worker is part of its shard: it is pinned to the shard's CPU and
//! serves one of the shard's DNS UDP sockets (bound by the shard, with the
//! same SO_REUSEPORT + SO_INCOMING_CPU steering) with the same batched loop
//! and the same sans-IO answer path as the executor would
//! ([`udp::serve_blocking`], [`dns::answer`]). What differs is the wait: the
//! thread blocks in `recvmmsg`, so waking for a query costs one system call
//! and one context switch instead of the glommio executor's park and
//! unpark (several `io_uring_enter` calls, timers and a `membarrier` per
//! sleep), which at moderate rates doubled the shard's CPU time per query
//! and added to every query's latency.
//!
//! State stays with the thread: its own handle to the served map
//! (refreshed once per batch, as [`super::context::ShardCtx::refresh`]
//! does, so a query sees one generation), its own counters and latency
//! histogram. Nothing is shared on the request path. About four times a
//! second, at a timeout and at exit, the worker copies its running totals
//! into its [`WorkerLink`]; the shard adds them to its own when it
//! publishes. The latency histogram it publishes itself into the shard's
//! `dns-udp` series.
//!
//! Stop: the shard sets the link's flag; the worker sees it at its next
//! receive timeout ([`RECV_TIMEOUT`]) at the latest, reports once more and
//! returns; the shard's supervising task waits for that before the shard
//! exits. A panic in the loop (a bug) is logged and the loop
//! restarts on the same socket, so the shard keeps serving.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::context::ShardCtx;
use super::state::{Served, Shared};
use super::stats::{ShardStats, StatsSnapshot};
use crate::dns::{self, Transport};
use crate::runtime::screen::Screen;
use crate::runtime::stop::StopSignal;
use crate::runtime::udp::DropKind;
use crate::runtime::udp::{self, DatagramHandler, LoopSettings};
use crate::shard::meter::WorkerMeter;

/// How long the worker blocks in one receive before it checks for stop and
/// reports; also the bound on how late it notices a stop.
pub const RECV_TIMEOUT: Duration = Duration::from_millis(50);
/// How long a reply may wait for room in a full send buffer.
const SEND_TIMEOUT: Duration = Duration::from_millis(200);
/// How often the worker copies its totals to its link (at most).
const REPORT_EVERY: Duration = Duration::from_millis(250);
/// Batches between two clock reads for [`REPORT_EVERY`].
const BATCHES_PER_CLOCK_CHECK: u32 = 64;

/// What a worker hands to its shard.
#[derive(Debug, Default, Clone)]
pub struct WorkerReport {
    /// Running totals of the worker's counters (answers, drops, batches).
    pub stats: StatsSnapshot,
    /// Running answer totals by view name.
    pub views: HashMap<String, u64>,
}

/// The shard's side of one worker: the stop flag and the last report.
#[derive(Debug, Default)]
pub struct WorkerLink {
    stop: AtomicBool,
    report: Mutex<WorkerReport>,
}

impl WorkerLink {
    /// The worker's last report (running totals).
    pub fn report(&self) -> WorkerReport {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn publish(&self, report: WorkerReport) {
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = report;
    }
}

/// A running worker thread.
pub struct DnsWorker {
    link: Arc<WorkerLink>,
    thread: JoinHandle<()>,
    /// The shard's own handle on the socket (the thread serves a clone):
    /// relayed hand-off answers leave from it.
    sock: UdpSocket,
    local: SocketAddr,
}

impl DnsWorker {
    /// Start a worker for `sock` (bound by shard `ctx`): switched to
    /// blocking mode with receive and send timeouts, served on a thread
    /// named `shard-<index>-dns` pinned to the shard's CPU. On failure the
    /// socket comes back (nonblocking again) with the error, so the shard
    /// can serve it itself.
    pub fn spawn(
        ctx: &ShardCtx,
        sock: UdpSocket,
        screen: Option<Box<dyn Screen>>,
    ) -> Result<DnsWorker, (std::io::Error, UdpSocket)> {
        let prepared = sock
            .set_nonblocking(false)
            .and_then(|()| sock.set_read_timeout(Some(RECV_TIMEOUT)))
            .and_then(|()| sock.set_write_timeout(Some(SEND_TIMEOUT)))
            .and_then(|()| sock.local_addr());
        let local = match prepared {
            Ok(local) => local,
            Err(e) => return Err((e, sock)),
        };
        // The thread gets its own handle on the socket so that a failed
        // spawn can hand the original back.
        let thread_sock = match sock.try_clone() {
            Ok(s) => s,
            Err(e) => return Err((e, sock)),
        };
        let link = Arc::new(WorkerLink::default());
        let served = ctx.shared.current();
        let mut worker = Worker {
            shared: ctx.shared.clone(),
            rrl: super::rrl::RrlGate::new(served.version, &served.dns.rrl),
            served,
            stats: ShardStats::default(),
            meter: ctx.metrics.worker_meter(),
            link: link.clone(),
            batches_unchecked: 0,
            dirty: false,
            last_report: Instant::now(),
            screen,
        };
        worker.views_changed();
        let settings = LoopSettings::for_dns(&ctx.shared.startup.dns);
        let (index, cpu) = (ctx.index, ctx.cpu);
        let mut drops = udp::KernelDrops::new(crate::metrics::udp_socket_drops(
            index,
            crate::metrics::Surface::DnsUdp.label(),
            local,
        ));
        let spawned = std::thread::Builder::new()
            .name(format!("shard-{index}-dns"))
            .spawn(move || {
                crate::metrics::process::register_shard_thread(index);
                if let Some(cpu) = cpu {
                    if let Err(e) = crate::runtime::sockets::pin_current_thread(cpu) {
                        tracing::warn!(shard = index, cpu, "DNS worker not pinned: {e}");
                    }
                }
                tracing::debug!(shard = index, %local, "DNS UDP worker serving");
                worker.run(&thread_sock, settings, index, local, &mut drops);
            });
        match spawned {
            Ok(thread) => Ok(DnsWorker {
                link,
                thread,
                sock,
                local,
            }),
            Err(e) => {
                let _ = sock.set_nonblocking(true);
                Err((e, sock))
            }
        }
    }

    /// The address the worker serves.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The served socket (shared with the thread).
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// The shard's handle on the worker's reports.
    pub fn link(&self) -> Arc<WorkerLink> {
        self.link.clone()
    }

    /// Wait (on the shard's executor) until the shard stops, then stop the
    /// worker and wait until its thread has returned and reported.
    pub async fn supervise(self, stop: StopSignal) {
        stop.stopped().await;
        self.link.stop.store(true, Ordering::Relaxed);
        while !self.thread.is_finished() {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        if self.thread.join().is_err() {
            tracing::error!("a DNS UDP worker thread ended in a panic");
        }
    }
}

/// The worker's own state: everything its request path touches.
struct Worker {
    shared: Arc<Shared>,
    served: Arc<Served>,
    /// Response rate limiting of this worker's answers (its own table).
    rrl: super::rrl::RrlGate,
    stats: ShardStats,
    meter: WorkerMeter,
    link: Arc<WorkerLink>,
    /// Batches since the last clock check.
    batches_unchecked: u32,
    /// Batches were served since the last report.
    dirty: bool,
    last_report: Instant,
    screen: Option<Box<dyn Screen>>,
}

impl Worker {
    fn run(
        &mut self,
        sock: &UdpSocket,
        settings: LoopSettings,
        index: usize,
        local: SocketAddr,
        drops: &mut udp::KernelDrops,
    ) {
        let fd = sock.as_raw_fd();
        loop {
            let link = self.link.clone();
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                udp::serve_blocking(fd, self, &link.stop, settings, drops)
            }));
            if served.is_ok() {
                break;
            }
            tracing::error!(
                shard = index,
                %local,
                "the DNS UDP worker loop panicked (a bug: please report it); restarting it"
            );
        }
        self.report();
        tracing::debug!(shard = index, %local, "DNS UDP worker stopped");
    }

    /// Pick up a new generation of the served map if one was published.
    #[inline]
    fn refresh(&mut self) {
        if self.shared.version() != self.served.version {
            self.served = self.shared.current();
            self.views_changed();
        }
    }

    fn views_changed(&mut self) {
        let served = self.served.clone();
        self.meter
            .set_views(served.map.views().iter().map(|v| v.name.as_str()));
    }

    fn report(&mut self) {
        self.last_report = Instant::now();
        self.dirty = false;
        self.meter.publish_latency();
        self.link.publish(WorkerReport {
            stats: self.stats.snapshot(),
            views: self.meter.view_totals(),
        });
    }
}

impl DatagramHandler for Worker {
    #[inline]
    fn begin_batch(&mut self) {
        self.refresh();
        self.meter.begin_batch();
        self.stats.udp_batch();
        self.rrl
            .begin_batch(self.served.version, &self.served.dns.rrl);
        if let Some(s) = &mut self.screen {
            s.begin_batch();
        }
    }

    #[inline]
    fn handle(&mut self, datagram: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> bool {
        if let Some(s) = &mut self.screen {
            if let Some(send) = s.screen(datagram, from, out) {
                return send;
            }
        }
        let map = &self.served.map;
        let (outcome, seen) =
            dns::answer_with_client_view(map, datagram, from.ip(), Transport::Udp, out);
        self.meter.answered(map, from.ip(), outcome, seen);
        let Some(outcome) = self.rrl.filter(from.ip(), outcome, out, &self.stats) else {
            return false;
        };
        self.stats.record(Transport::Udp, outcome);
        matches!(outcome, dns::Outcome::Answered { .. })
    }

    fn dropped(&mut self, why: DropKind) {
        self.stats.dropped(why);
    }

    fn coalescing(&mut self) {
        self.stats.udp_coalescing_wait();
    }

    fn wants_timestamps(&self) -> bool {
        self.screen.is_some()
    }

    fn received_at(&mut self, realtime_ns: u64) {
        if let Some(s) = &mut self.screen {
            s.received_at(realtime_ns);
        }
    }

    #[inline]
    fn end_batch(&mut self) {
        if let Some(s) = &mut self.screen {
            s.end_batch();
        }
        self.meter.end_batch();
        self.dirty = true;
        self.batches_unchecked += 1;
        if self.batches_unchecked >= BATCHES_PER_CLOCK_CHECK {
            self.batches_unchecked = 0;
            if self.last_report.elapsed() >= REPORT_EVERY {
                self.report();
            }
        }
    }

    fn idle(&mut self) {
        // A quiet socket: refresh now so an idle worker does not hold an
        // old map's memory, and report what the last batches did.
        self.refresh();
        if self.dirty {
            self.report();
        }
    }
}
