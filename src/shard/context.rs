//! The per-shard context: everything one shard owns (its index and CPU, its
//! handle to the served address map, its counters, its stop signal, the gate
//! its connection tasks run under, its background task queue).
//!
//! Shard-local by construction (`Rc`, `Cell`, `RefCell`): handed to every
//! task of the shard, never to another thread. New per-shard state for new
//! services (e.g. function arenas) belongs here too.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use glommio::sync::Gate;
use glommio::TaskQueueHandle;

use super::dns_worker::WorkerLink;
use super::state::{Served, Shared};
use super::stats::ShardStats;
use crate::runtime::stop::StopSignal;
use crate::shard::meter::ShardMetrics;

/// One shard's state.
pub struct ShardCtx {
    /// 0-based shard number (also the slot on the stats board).
    pub index: usize,
    /// The CPU this shard's executor is pinned to.
    pub cpu: Option<usize>,
    pub shared: Arc<Shared>,
    served: RefCell<Arc<Served>>,
    seen_version: Cell<u64>,
    pub stats: ShardStats,
    /// This shard's metric handles and latency histograms (crate::metrics).
    pub metrics: ShardMetrics,
    /// Stop accepting / serving new work.
    pub stop: StopSignal,
    /// Tasks that must finish before the shard exits (in-flight TCP work).
    pub gate: Gate,
    /// Low-priority queue for upkeep (stats publishing, arena resets and warm-ups).
    pub background: TaskQueueHandle,
    /// This shard's function arenas and counters, when functions are served.
    pub functions: Option<std::rc::Rc<crate::functions::FunctionShard>>,
    /// This shard's hand-off state, when `[handoff]` is configured and its
    /// key could be read (`services::bind_services` refuses to start if not).
    pub handoff: Option<std::rc::Rc<crate::handoff::HandoffShard>>,
    /// This shard's DNS UDP worker threads , whose
    /// reports are added to the shard's own counters when it publishes.
    pub udp_workers: RefCell<Vec<Arc<WorkerLink>>>,
    /// Response rate limiting of the executor's DNS UDP answers.
    pub rrl: RefCell<super::rrl::RrlGate>,
}

impl ShardCtx {
    pub fn new(
        index: usize,
        cpu: Option<usize>,
        shared: Arc<Shared>,
        background: TaskQueueHandle,
    ) -> ShardCtx {
        let handoff = shared.startup.handoff.as_ref().and_then(|cfg| {
            match cfg.read_key(&shared.base_dir()) {
                Ok(key) => Some(std::rc::Rc::new(crate::handoff::HandoffShard::new(
                    index,
                    cfg.clone(),
                    key,
                    shared.handoff_replay.clone().unwrap_or_else(|| {
                        Arc::new(crate::handoff::replay::ReplayTable::new(
                            crate::handoff::replay::SLOT_BITS,
                            crate::handoff::per_shard::unix_us(),
                        ))
                    }),
                ))),
                Err(e) => {
                    tracing::error!(shard = index, "{e}");
                    None
                }
            }
        });
        let on_demand = shared
            .startup
            .handoff
            .as_ref()
            .is_some_and(|h| h.warm_on_demand);
        let functions = shared.functions.as_ref().map(|node| {
            let fs = if on_demand {
                crate::functions::FunctionShard::new_on_demand(node)
            } else {
                crate::functions::FunctionShard::new(node)
            };
            let fs = fs.with_index(index);
            if let Some(h) = &handoff {
                fs.set_handoff(h.clone());
            }
            std::rc::Rc::new(fs)
        });
        let served = shared.current();
        let (version, rrl) = (served.version, served.dns.rrl.clone());
        let stats = ShardStats::default();
        stats.reloaded(served.version);
        let metrics = ShardMetrics::register(index);
        metrics.set_views(served.map.views().iter().map(|v| v.name.as_str()));
        metrics.set_up(true);
        ShardCtx {
            index,
            cpu,
            seen_version: Cell::new(served.version),
            served: RefCell::new(served),
            shared,
            stats,
            metrics,
            stop: StopSignal::new(),
            gate: Gate::new(),
            background,
            functions,
            handoff,
            udp_workers: RefCell::new(Vec::new()),
            rrl: RefCell::new(super::rrl::RrlGate::new(version, &rrl)),
        }
    }

    /// Pick up a new generation of the served map if one was published.
    /// One atomic load when nothing changed; call once per receive batch.
    #[inline]
    pub fn refresh(&self) {
        if self.shared.version() != self.seen_version.get() {
            self.swap_in();
        }
    }

    #[cold]
    fn swap_in(&self) {
        let next = self.shared.current();
        self.seen_version.set(next.version);
        self.stats.reloaded(next.version);
        self.metrics
            .set_views(next.map.views().iter().map(|v| v.name.as_str()));
        tracing::debug!(
            shard = self.index,
            version = next.version,
            "shard serves new map"
        );
        *self.served.borrow_mut() = next;
    }

    /// Run `f` on the current generation. `f` is synchronous, so no borrow
    /// outlives an await point and a refresh can never observe one.
    #[inline]
    pub fn with_served<R>(&self, f: impl FnOnce(&Served) -> R) -> R {
        f(&self.served.borrow())
    }

    /// The version this shard currently serves.
    pub fn served_version(&self) -> u64 {
        self.seen_version.get()
    }

    /// Publish this shard's counters to the stats board.
    pub fn publish_stats(&self) {
        let mut snapshot = self.stats.snapshot();
        let workers = self.udp_workers.borrow();
        if !workers.is_empty() {
            let mut views: HashMap<String, u64> = HashMap::new();
            for link in workers.iter() {
                let report = link.report();
                snapshot.add(&report.stats);
                for (name, n) in report.views {
                    *views.entry(name).or_default() += n;
                }
            }
            self.metrics.set_worker_views(views);
        }
        if self.metrics.enabled() {
            self.metrics.publish_dns(&snapshot);
            if let Some(functions) = &self.functions {
                self.metrics.publish_functions(functions);
            }
            if let Some(h) = &self.handoff {
                self.metrics.publish_handoff(&h.snapshot());
            }
            self.metrics.publish_latency();
        }
        self.shared.stats.publish(self.index, snapshot);
    }

    /// The shutdown grace period (fixed at start).
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shared.startup.server.shutdown_grace_ms)
    }
}
