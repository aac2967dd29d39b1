//! The per-shard part of the function service: one arena ring per function,
//! name lookup, the invocation entry point used by both surfaces, and the
//! low-priority upkeep task that releases used instances and refills rings.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use futures_lite::future;

use super::arena::{Ring, RingCounts};
use super::compile::LoadedFunction;
use super::node::FunctionNode;
use super::outcome::InvokeError;
use crate::metrics::local::bump;
use crate::runtime::stop::StopSignal;

/// Wakes the upkeep task from the request path (single-threaded, no locks).
#[derive(Default)]
struct LocalNotify {
    pending: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl LocalNotify {
    fn notify(&self) {
        self.pending.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        poll_fn(|cx| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// Shard-local counters of the invocation surfaces (per-function counters
/// are in each ring's `RingStats`).
#[derive(Debug, Default)]
pub struct SurfaceStats {
    /// Datagrams that decoded as invocation requests.
    pub udp_requests: Cell<u64>,
    /// Datagrams answered with an error before invoking (bad frame, version).
    pub udp_rejected: Cell<u64>,
    /// Datagrams ignored (no magic, a reply, too short).
    pub udp_ignored: Cell<u64>,
    /// Replies replaced by `OutputTooLarge` because they do not fit a datagram.
    pub udp_oversized_replies: Cell<u64>,
    pub http_requests: Cell<u64>,
    /// Responses other than 200.
    pub http_errors: Cell<u64>,
    pub http_open: Cell<u64>,
    pub http_accepted: Cell<u64>,
    /// Connections closed at once because the shard was at its cap.
    pub http_refused: Cell<u64>,
    /// Connections closed at once because their client held its share
    /// (`functions.http_max_connections_per_client`).
    pub http_client_refused: Cell<u64>,
    /// Open connections per client.
    pub http_clients: crate::runtime::client_cap::ClientCounts,
    pub http_idle_closed: Cell<u64>,
    /// Replies by status (its HTTP equivalent), for the metrics.
    pub udp_status: crate::metrics::local::StatusCounts,
    pub http_status: crate::metrics::local::StatusCounts,
    /// Invocation latency per surface, for the metrics.
    pub udp_latency: crate::metrics::local::RequestTimer,
    pub http_latency: crate::metrics::local::RequestTimer,
}

/// Whether a function's arenas are built on this shard (see
/// [`FunctionShard::new_on_demand`]; hand-off treats anything but `Warm`
/// as cold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmth {
    /// Not built, and nobody asked yet: upkeep leaves it alone.
    Cold,
    /// Asked for: upkeep is building its ring.
    Warming,
    /// Its ring has ready instances.
    Warm,
}

/// Result of looking a function up by name.
pub enum Lookup<'a> {
    /// Index for [`FunctionShard::invoke_index`] and the function.
    Found(usize, &'a Arc<LoadedFunction>),
    /// Configured but failed to load: the reason.
    Failed(&'a str),
    NotFound,
}

/// One shard's function service state. Build one per shard with
/// [`FunctionShard::new`], share it as `Rc` between the servers and the
/// upkeep task.
pub struct FunctionShard {
    /// The shard's number (logs, the `X-Shardgate-Shard` HTTP header).
    index: usize,
    node: Arc<FunctionNode>,
    /// Parallel to `node.functions()` (sorted by name).
    rings: Vec<RefCell<Ring>>,
    /// Parallel to `rings`.
    warmth: Vec<Cell<Warmth>>,
    /// Warm-ups completed, parallel to `rings` (for the metrics).
    warmups: Vec<Cell<u64>>,
    upkeep: LocalNotify,
    pub surface: SurfaceStats,
    /// The shard's hand-off state, for the HTTP gate (when configured).
    handoff: std::cell::OnceCell<Rc<crate::handoff::HandoffShard>>,
}

impl FunctionShard {
    /// One ring per loaded function, filled now.
    pub fn new(node: &Arc<FunctionNode>) -> FunctionShard {
        let rings = node
            .functions()
            .iter()
            .map(|f| {
                let mut ring = Ring::new(f.clone());
                if let Err(e) = ring.fill() {
                    tracing::warn!(function = %f.name, "cannot fill the arena ring: {e}; requests will instantiate inline");
                }
                RefCell::new(ring)
            })
            .collect();
        let n = node.functions().len();
        FunctionShard {
            index: 0,
            node: node.clone(),
            rings,
            warmth: (0..n).map(|_| Cell::new(Warmth::Warm)).collect(),
            warmups: (0..n).map(|_| Cell::new(0)).collect(),
            upkeep: LocalNotify::default(),
            surface: SurfaceStats::default(),
            handoff: std::cell::OnceCell::new(),
        }
    }

    /// Rings left empty: each function is cold on this shard until a
    /// request names it ([`FunctionShard::start_warmup`] or an invocation),
    /// then the upkeep task builds its ring in the background.
    pub fn new_on_demand(node: &Arc<FunctionNode>) -> FunctionShard {
        let n = node.functions().len();
        FunctionShard {
            index: 0,
            node: node.clone(),
            rings: node
                .functions()
                .iter()
                .map(|f| RefCell::new(Ring::new(f.clone())))
                .collect(),
            warmth: (0..n).map(|_| Cell::new(Warmth::Cold)).collect(),
            warmups: (0..n).map(|_| Cell::new(0)).collect(),
            upkeep: LocalNotify::default(),
            surface: SurfaceStats::default(),
            handoff: std::cell::OnceCell::new(),
        }
    }

    /// Put the HTTP surface behind the hand-off gate (once).
    pub fn set_handoff(&self, h: Rc<crate::handoff::HandoffShard>) {
        let _ = self.handoff.set(h);
    }

    /// The shard's hand-off state, when configured.
    pub fn handoff(&self) -> Option<&Rc<crate::handoff::HandoffShard>> {
        self.handoff.get()
    }

    /// The warm state of the function at `index`.
    pub fn warmth(&self, index: usize) -> Warmth {
        self.warmth.get(index).map_or(Warmth::Warm, Cell::get)
    }

    /// Start building the ring of a cold function in the background (the
    /// upkeep task, low priority). Returns whether it was cold.
    pub fn start_warmup(&self, index: usize) -> bool {
        match self.warmth.get(index) {
            Some(w) if w.get() == Warmth::Cold => {
                w.set(Warmth::Warming);
                self.upkeep.notify();
                true
            }
            _ => false,
        }
    }

    /// Warm-ups completed per function, parallel to [`Self::stats`].
    pub fn warmups(&self) -> Vec<u64> {
        self.warmups.iter().map(Cell::get).collect()
    }

    /// Set the shard number (default 0).
    pub fn with_index(mut self, index: usize) -> FunctionShard {
        self.index = index;
        self
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn node(&self) -> &Arc<FunctionNode> {
        &self.node
    }

    /// Find a function by its name bytes.
    pub fn lookup(&self, name: &[u8]) -> Lookup<'_> {
        let fs = self.node.functions();
        if let Ok(i) = fs.binary_search_by(|f| f.name.as_bytes().cmp(name)) {
            return Lookup::Found(i, &fs[i]);
        }
        match self
            .node
            .failures()
            .iter()
            .find(|f| f.name.as_bytes() == name)
        {
            Some(f) => Lookup::Failed(&f.reason),
            None => Lookup::NotFound,
        }
    }

    /// Invoke the function named `name`; the output is appended to `out`.
    pub fn invoke(&self, name: &[u8], input: &[u8], out: &mut Vec<u8>) -> Result<(), InvokeError> {
        match self.lookup(name) {
            Lookup::Found(i, _) => self.invoke_index(i, input, out),
            Lookup::Failed(why) => Err(InvokeError::Unavailable(format!("failed to load: {why}"))),
            Lookup::NotFound => Err(InvokeError::NotFound),
        }
    }

    /// Invoke the function at `index` (from [`FunctionShard::lookup`]).
    pub fn invoke_index(
        &self,
        index: usize,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), InvokeError> {
        let Some(ring) = self.rings.get(index) else {
            return Err(InvokeError::NotFound);
        };
        // A cold function runs in an instance built inline (a ring miss)
        // and starts warming.
        self.start_warmup(index);
        let r = ring.borrow_mut().invoke(input, out);
        self.upkeep.notify();
        r
    }

    /// Counters per function: (name, snapshot).
    pub fn stats(&self) -> Vec<(String, RingCounts)> {
        self.rings
            .iter()
            .map(|r| {
                let r = r.borrow();
                (r.function().name.clone(), r.stats.snapshot())
            })
            .collect()
    }

    /// Ready instances in each function's ring, parallel to [`Self::stats`]
    /// (for the metrics publish task).
    pub fn ready_instances(&self) -> Vec<usize> {
        self.rings.iter().map(|r| r.borrow().ready_len()).collect()
    }

    /// All functions' counters added up.
    pub fn totals(&self) -> RingCounts {
        let mut t = RingCounts::default();
        for r in &self.rings {
            t += r.borrow().stats.snapshot();
        }
        t
    }

    /// Do all pending upkeep now (for callers without an executor, e.g.
    /// tests and benches). Returns the number of steps done.
    pub fn upkeep_now(&self) -> usize {
        let mut steps = 0;
        for r in &self.rings {
            while r.borrow_mut().upkeep_step() {
                steps += 1;
            }
        }
        steps
    }

    /// The upkeep loop: release used instances and refill rings, one step
    /// at a time, yielding to requests; sleeps when there is nothing to do;
    /// returns once `stop` fires. Spawn it in a low-priority task queue
    /// ([`FunctionShard::spawn_upkeep`]).
    pub async fn run_upkeep(self: Rc<Self>, stop: StopSignal) {
        while !stop.is_stopped() {
            let mut did = false;
            for (i, r) in self.rings.iter().enumerate() {
                let warmth = self.warmth(i);
                if warmth == Warmth::Cold {
                    // Nobody asked for it: only release used batches.
                    let mut ring = r.borrow_mut();
                    if ring.retired_len() > 0 {
                        did |= ring.upkeep_step();
                    }
                    continue;
                }
                did |= r.borrow_mut().upkeep_step();
                if warmth == Warmth::Warming && r.borrow().ready_len() > 0 {
                    self.warmth[i].set(Warmth::Warm);
                    bump(&self.warmups[i]);
                    tracing::debug!(shard = self.index, function = %r.borrow().function().name, "function warm");
                }
                glommio::yield_if_needed().await;
            }
            if !did {
                future::or(self.upkeep.wait(), stop.stopped()).await;
            }
        }
        let t = self.totals();
        let s = &self.surface;
        tracing::info!(
            shard = self.index,
            invocations = t.invocations,
            ok = t.ok,
            traps = t.traps,
            timeouts = t.timeouts,
            memory_limits = t.memory_limits,
            ring_misses = t.ring_misses,
            resets = t.resets,
            instantiations = t.instantiations,
            udp_requests = s.udp_requests.get(),
            http_requests = s.http_requests.get(),
            "functions stopped"
        );
    }

    /// Spawn [`FunctionShard::run_upkeep`] into `queue`, which should be a
    /// `Latency::NotImportant` task queue with a small share so resets never
    /// run ahead of requests. The task returns once `stop` fires.
    pub fn spawn_upkeep(
        self: &Rc<Self>,
        queue: glommio::TaskQueueHandle,
        stop: StopSignal,
    ) -> Result<glommio::Task<()>, String> {
        glommio::spawn_local_into(self.clone().run_upkeep(stop), queue)
            .map_err(|e| format!("cannot spawn the function upkeep task: {e}"))
    }
}
