//! A shard's meter: handles registered once per shard and kept,
//! request timing into shard-local histograms, and the periodic publish that
//! copies a shard's local counts into those handles.
//!
//! Request path: [`ShardMetrics::start`] before the work, [`ShardMetrics::finish`]
//! after it (two clock reads and two `Cell` adds; nothing at all when metrics
//! are disabled). Publish path (a low-priority task, about once a second):
//! [`ShardMetrics::publish_dns`] with the runtime's counter snapshot,
//! [`ShardMetrics::publish_function`] per function, [`ShardMetrics::publish_handoff`],
//! then [`ShardMetrics::publish_latency`]. Counters are set with
//! `Counter::absolute` from the shard's running totals, so a publish is
//! idempotent and a missed one loses nothing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, gauge, Counter, Gauge};

use super::stats::{StatsSnapshot, RCODE_SLOTS};
use crate::addrmap::AddressMap;
use crate::dns::{self, Outcome, Transport};
use crate::handoff::per_shard::HandoffCounts;
use crate::metrics::histogram::SharedHistogram;
use crate::metrics::local::{labels_of, RequestTimer, StatusCounts};
use crate::metrics::{names, Registry, Surface};
use crate::runtime::udp::{DropKind, DROP_KINDS};

/// DNS rcode mnemonics for the `rcode` label, by rcode; the last slot of
/// the runtime's counters (any rcode above 15) renders as `other`.
const RCODE_NAMES: [&str; 16] = [
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "DSOTYPENI",
    "RCODE12",
    "RCODE13",
    "RCODE14",
    "RCODE15",
];

/// Rcodes whose series exist from the start (at zero); the others appear
/// the first time they are counted.
const RCODES_ALWAYS: [usize; 6] = [0, 1, 2, 3, 4, 5];

/// `reason` label of the runtime's drop kinds, indexed by [`DropKind`].
fn drop_reason(kind: usize) -> &'static str {
    const KINDS: [(DropKind, &str); DROP_KINDS] = [
        (DropKind::TooShort, "too_short"),
        (DropKind::NotAQuery, "not_a_query"),
        (DropKind::Oversized, "oversized"),
        (DropKind::SendFailed, "send_failed"),
        (DropKind::BadSource, "bad_source"),
        (DropKind::RateLimited, "rate_limited"),
    ];
    KINDS
        .iter()
        .find(|(k, _)| *k as usize == kind)
        .map(|(_, name)| *name)
        .unwrap_or("other")
}

/// Per-function running totals of one shard, as the function runtime keeps
/// them; published by [`ShardMetrics::publish_function`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunctionCounts {
    pub ok: u64,
    pub trap: u64,
    /// Deadline hits.
    pub deadline: u64,
    /// Memory over the function's limit.
    pub memory_limit: u64,
    /// Bad output pointer or oversized output.
    pub bad_output: u64,
    /// Input over the function's limit (refused before running).
    pub input_too_large: u64,
    pub ring_misses: u64,
    pub resets: u64,
    pub instantiations: u64,
    pub warmups: u64,
    /// Ready instances in the ring now (a gauge).
    pub ready: u64,
}

/// Handles of one function on one shard.
struct FunctionHandles {
    ok: Counter,
    trap: Counter,
    deadline: Counter,
    memory_limit: Counter,
    bad_output: Counter,
    input_too_large: Counter,
    ring_misses: Counter,
    resets: Counter,
    instantiations: Counter,
    warmups: Counter,
    ready: Gauge,
}

struct HandoffHandles {
    cold: Counter,
    overloaded: Counter,
    received: Counter,
    bad_mac: Counter,
    stale: Counter,
    wrong_source: Counter,
    malformed: Counter,
    replayed: Counter,
    guard_full: Counter,
    bad_hop_tokens: Counter,
    direct: Counter,
    relay: Counter,
    rejects: Counter,
    alternate_up: Gauge,
    share: Gauge,
    alternate_busy: Gauge,
    alternate_saturated: Gauge,
    busy: Gauge,
}

/// One shard's metric handles and latency histograms. Lives on its shard
/// (not `Sync`); registered once when the shard starts.
pub struct ShardMetrics {
    shard: String,
    enabled: bool,
    /// DNS query timers, by [`Transport`].
    dns: [RequestTimer; 2],
    /// Times the current UDP receive batch (see [`Self::begin_batch`]).
    batch: BatchClock,
    published: [Arc<SharedHistogram>; 4],
    requests: [Counter; 4],
    /// `[dns-udp, dns-tcp][rcode slot]`, registered lazily for rare rcodes.
    responses: RefCell<[[Option<Counter>; RCODE_SLOTS]; 2]>,
    truncated: Counter,
    dropped: [Counter; DROP_KINDS],
    /// DNS TCP refusals: `[shard_cap, client_cap]`.
    tcp_refused: [Counter; 2],
    /// Function HTTP refusals: `[shard_cap, client_cap]`.
    http_refused: [Counter; 2],
    udp_batches: Counter,
    udp_coalescing_waits: Counter,
    rrl_limited: Counter,
    rrl_slipped: Counter,
    in_flight: [Gauge; 4],
    up: Gauge,
    map_version: Gauge,
    last_publish: Gauge,
    functions: RefCell<HashMap<String, FunctionHandles>>,
    view_hits: RefCell<ViewHits>,
    /// View totals counted by the shard's DNS worker threads (see
    /// [`WorkerMeter`]), added to `view_hits` when publishing.
    worker_views: RefCell<HashMap<String, u64>>,
    /// A DNS worker thread times the UDP queries and publishes their
    /// histogram itself; the shard's own UDP timer is then not published.
    udp_latency_by_worker: Cell<bool>,
    handoff: HandoffHandles,
}

impl ShardMetrics {
    /// Register shard `shard`'s series with the installed registry (see
    /// [`super::install`]). Without one, or when metrics are disabled, the
    /// handles are still valid but timing is off.
    pub fn register(shard: usize) -> ShardMetrics {
        Self::register_with(crate::metrics::global(), shard)
    }

    /// Register with `registry` (tests pass a local one); counters and gauges
    /// go to the current recorder.
    pub fn register_with(registry: Option<&Registry>, shard: usize) -> ShardMetrics {
        let label = shard.to_string();
        let s = || ("shard", label.clone());
        let c = |name: &'static str, extra: &[(&'static str, &'static str)]| -> Counter {
            let mut labels = vec![s()];
            labels.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
            counter!(name, labels_of(&labels))
        };
        let g = |name: &'static str, extra: &[(&'static str, &'static str)]| -> Gauge {
            let mut labels = vec![s()];
            labels.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
            gauge!(name, labels_of(&labels))
        };
        let per_protocol_c = |name| Surface::ALL.map(|p| c(name, &[("protocol", p.label())]));
        let per_protocol_g = |name| Surface::ALL.map(|p| g(name, &[("protocol", p.label())]));

        let published: [Arc<SharedHistogram>; 4] = Default::default();
        if let Some(registry) = registry {
            for p in Surface::ALL {
                registry.add_histogram(
                    names::REQUEST_DURATION,
                    &[("shard", &label), ("protocol", p.label())],
                    published[p as usize].clone(),
                );
            }
        }

        let metrics = ShardMetrics {
            enabled: registry.is_some_and(Registry::enabled),
            dns: {
                let enabled = registry.is_some_and(Registry::enabled);
                [RequestTimer::new(enabled), RequestTimer::new(enabled)]
            },
            published,
            requests: per_protocol_c(names::REQUESTS),
            responses: RefCell::new(Default::default()),
            truncated: c(names::DNS_TRUNCATED, &[]),
            dropped: std::array::from_fn(|k| {
                c(
                    names::DROPPED,
                    &[("protocol", "dns"), ("reason", drop_reason(k))],
                )
            }),
            tcp_refused: ["shard_cap", "client_cap"].map(|reason| {
                c(
                    names::TCP_REFUSED,
                    &[("protocol", Surface::DnsTcp.label()), ("reason", reason)],
                )
            }),
            http_refused: ["shard_cap", "client_cap"].map(|reason| {
                c(
                    names::TCP_REFUSED,
                    &[("protocol", Surface::FnHttp.label()), ("reason", reason)],
                )
            }),
            udp_batches: c(names::UDP_BATCHES, &[("protocol", Surface::DnsUdp.label())]),
            udp_coalescing_waits: c(
                names::UDP_COALESCING_WAITS,
                &[("protocol", Surface::DnsUdp.label())],
            ),
            rrl_limited: c(names::RRL_LIMITED, &[("protocol", Surface::DnsUdp.label())]),
            rrl_slipped: c(names::RRL_SLIPPED, &[("protocol", Surface::DnsUdp.label())]),
            in_flight: per_protocol_g(names::IN_FLIGHT),
            up: g(names::SHARD_UP, &[]),
            map_version: g(names::SHARD_MAP_VERSION, &[]),
            last_publish: g(names::LAST_PUBLISH, &[]),
            functions: RefCell::new(HashMap::new()),
            view_hits: RefCell::new(ViewHits::default()),
            worker_views: RefCell::new(HashMap::new()),
            udp_latency_by_worker: Cell::new(false),
            batch: BatchClock::default(),
            handoff: HandoffHandles {
                cold: c(names::HANDOFFS, &[("reason", "cold")]),
                overloaded: c(names::HANDOFFS, &[("reason", "overloaded")]),
                received: c(names::HANDOFF_RECEIVED, &[]),
                bad_mac: c(names::HANDOFF_DROPPED, &[("reason", "bad_mac")]),
                stale: c(names::HANDOFF_DROPPED, &[("reason", "stale")]),
                wrong_source: c(names::HANDOFF_DROPPED, &[("reason", "wrong_source")]),
                malformed: c(names::HANDOFF_DROPPED, &[("reason", "malformed")]),
                replayed: c(names::HANDOFF_DROPPED, &[("reason", "replayed")]),
                guard_full: c(names::HANDOFF_DROPPED, &[("reason", "replay_guard_full")]),
                bad_hop_tokens: c(names::HANDOFF_BAD_HOP_TOKENS, &[]),
                direct: c(names::HANDOFF_REPLIES, &[("mode", "direct")]),
                relay: c(names::HANDOFF_REPLIES, &[("mode", "relay")]),
                rejects: c(names::OVERLOAD_REJECTS, &[]),
                alternate_up: g(names::HANDOFF_ALTERNATE_UP, &[]),
                share: g(names::HANDOFF_SHARE, &[]),
                alternate_busy: g(names::HANDOFF_ALTERNATE_BUSY, &[]),
                alternate_saturated: g(names::HANDOFF_ALTERNATE_SATURATED, &[]),
                busy: g(names::HANDOFF_SHARD_BUSY, &[]),
            },
            shard: label,
        };
        {
            let mut responses = metrics.responses.borrow_mut();
            for (proto, slots) in responses.iter_mut().enumerate() {
                for rcode in RCODES_ALWAYS {
                    slots[rcode] = Some(metrics.response_counter(proto, rcode));
                }
            }
        }
        for counter in &metrics.requests {
            counter.absolute(0);
        }
        metrics
    }

    fn response_counter(&self, proto: usize, slot: usize) -> Counter {
        let protocol = if proto == Transport::Udp as usize {
            Surface::DnsUdp
        } else {
            Surface::DnsTcp
        };
        let rcode = RCODE_NAMES.get(slot).copied().unwrap_or("other");
        counter!(names::RESPONSES, "shard" => self.shard.clone(), "protocol" => protocol.label(), "rcode" => rcode)
    }

    /// Whether requests are timed.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Start timing a DNS query: `None` (no clock read) when disabled.
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        self.dns[0].start()
    }

    /// Finish timing a DNS query started with [`start`](Self::start).
    /// (Function invocations are timed by their surfaces' own
    /// [`RequestTimer`]s, see [`Self::publish_functions`].)
    #[inline]
    pub fn finish(&self, transport: Transport, started: Option<Instant>) {
        self.dns[transport as usize].finish(started);
    }

    /// A UDP receive batch arrived (one clock read when enabled).
    #[inline]
    pub fn begin_batch(&self) {
        self.batch.begin(&self.dns[Transport::Udp as usize]);
    }

    /// One query of the current batch was handled (no clock read).
    #[inline]
    pub fn answered_in_batch(&self) {
        self.batch.answered();
    }

    /// The replies of the batch were sent: every query of the batch waited
    /// from its arrival (the batch's receipt) until now, since the replies
    /// of a batch leave together; record that time once per query. Two
    /// clock reads per batch instead of two per query.
    #[inline]
    pub fn end_batch(&self) {
        self.batch.end(&self.dns[Transport::Udp as usize]);
    }

    /// Record an already measured DNS latency; ignored when disabled.
    #[inline]
    pub fn record_ns(&self, transport: Transport, ns: u64) {
        self.dns[transport as usize].record_ns(ns);
    }

    /// The views of the map this shard now answers from, in map order (at
    /// start and after every map swap). Hits counted so far are kept under
    /// the names of the map they were counted with.
    pub fn set_views<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        self.view_hits.borrow_mut().set_names(names);
    }

    /// Count the view a DNS answer came from, by the querier's address:
    /// only answers about the zones (NOERROR, NXDOMAIN) and only when
    /// metrics are enabled (it costs one more prefix lookup).
    #[inline]
    pub fn count_view(
        &self,
        map: &AddressMap,
        client: IpAddr,
        outcome: Outcome,
        seen: dns::ClientView,
    ) {
        if !self.enabled {
            return;
        }
        if let Some(view) = counted_view(map, client, outcome, seen) {
            if let Ok(mut v) = self.view_hits.try_borrow_mut() {
                v.count(view);
            }
        }
    }

    /// A meter for a DNS worker thread of this shard. Once the worker runs
    /// ([`Self::udp_latency_published_by_worker`]) it publishes the
    /// `dns-udp` latency histogram, and its view counts reach the shard
    /// through [`Self::set_worker_views`].
    pub fn worker_meter(&self) -> WorkerMeter {
        WorkerMeter {
            timer: RequestTimer::new(self.enabled),
            batch: BatchClock::default(),
            views: ViewHits::default(),
            published: self.published[Surface::DnsUdp as usize].clone(),
        }
    }

    /// A DNS worker thread serves this shard's UDP queries and publishes
    /// their latency: the shard stops publishing its own (idle) UDP timer.
    pub fn udp_latency_published_by_worker(&self) {
        self.udp_latency_by_worker.set(true);
    }

    /// The view totals the shard's DNS workers reported last (summed over
    /// workers); published with the shard's own at the next publish.
    pub fn set_worker_views(&self, totals: HashMap<String, u64>) {
        *self.worker_views.borrow_mut() = totals;
    }

    fn publish_views(&self) {
        let mut v = self.view_hits.borrow_mut();
        v.fold();
        let ViewHits {
            totals, handles, ..
        } = &mut *v;
        let worker = self.worker_views.borrow();
        let names = totals
            .keys()
            .chain(worker.keys().filter(|name| !totals.contains_key(*name)));
        for name in names {
            let total =
                totals.get(name).copied().unwrap_or(0) + worker.get(name).copied().unwrap_or(0);
            let counter = handles.entry(name.clone()).or_insert_with(|| {
                counter!(names::VIEW_HITS, "shard" => self.shard.clone(), "view" => name.clone())
            });
            counter.absolute(total);
        }
    }

    /// The shard serves its sockets (1) or stopped (0).
    pub fn set_up(&self, up: bool) {
        self.up.set(if up { 1.0 } else { 0.0 });
    }

    /// Publish the DNS counters from the runtime's running totals.
    pub fn publish_dns(&self, snap: &StatsSnapshot) {
        self.publish_views();
        let mut responses = self.responses.borrow_mut();
        for (proto, slots) in snap.answered.iter().enumerate() {
            for (slot, &value) in slots.iter().enumerate() {
                let entry = &mut responses[proto][slot];
                if entry.is_none() && value > 0 {
                    *entry = Some(self.response_counter(proto, slot));
                }
                if let Some(counter) = entry {
                    counter.absolute(value);
                }
            }
        }
        // Every drop the runtime counts before answering is a received query;
        // a failed send was answered (counted above) and is not added again.
        let dropped_unanswered: u64 = snap
            .dropped
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != DropKind::SendFailed as usize)
            .map(|(_, v)| v)
            .sum();
        let udp: u64 = snap.answered[Transport::Udp as usize].iter().sum();
        let tcp: u64 = snap.answered[Transport::Tcp as usize].iter().sum();
        self.requests[Surface::DnsUdp as usize].absolute(udp + dropped_unanswered);
        self.requests[Surface::DnsTcp as usize].absolute(tcp);
        self.truncated.absolute(snap.truncated);
        for (counter, &value) in self.dropped.iter().zip(snap.dropped.iter()) {
            counter.absolute(value);
        }
        self.in_flight[Surface::DnsTcp as usize].set(snap.tcp_open as f64);
        self.tcp_refused[0].absolute(snap.tcp_refused);
        self.tcp_refused[1].absolute(snap.tcp_client_refused);
        self.udp_batches.absolute(snap.udp_batches);
        self.udp_coalescing_waits
            .absolute(snap.udp_coalescing_waits);
        self.rrl_limited.absolute(snap.rrl_limited);
        self.rrl_slipped.absolute(snap.rrl_slipped);
        self.map_version.set(snap.map_version as f64);
    }

    /// Publish a function surface (`protocol` fn-udp or fn-http):
    /// `requests` received, `responses` by status, and `open` connections
    /// (its in-flight figure; 0 for datagrams).
    pub fn publish_function_surface(
        &self,
        protocol: Surface,
        requests: u64,
        responses: &StatusCounts,
        open: u64,
    ) {
        self.requests[protocol as usize].absolute(requests);
        self.in_flight[protocol as usize].set(open as f64);
        for (outcome, value) in responses.seen() {
            // Publish path only: the lookup is ~70 ns, a few per second.
            counter!(names::RESPONSES, "shard" => self.shard.clone(), "protocol" => protocol.label(), "outcome" => outcome)
                .absolute(value);
        }
    }

    /// Publish one function's running totals on this shard.
    pub fn publish_function(&self, name: &str, counts: &FunctionCounts) {
        let mut functions = self.functions.borrow_mut();
        let handles = functions
            .entry(name.to_owned())
            .or_insert_with(|| self.function_handles(name));
        handles.ok.absolute(counts.ok);
        handles.trap.absolute(counts.trap);
        handles.deadline.absolute(counts.deadline);
        handles.memory_limit.absolute(counts.memory_limit);
        handles.bad_output.absolute(counts.bad_output);
        handles.input_too_large.absolute(counts.input_too_large);
        handles.ring_misses.absolute(counts.ring_misses);
        handles.resets.absolute(counts.resets);
        handles.instantiations.absolute(counts.instantiations);
        handles.warmups.absolute(counts.warmups);
        handles.ready.set(counts.ready as f64);
    }

    fn function_handles(&self, name: &str) -> FunctionHandles {
        let shard = self.shard.clone();
        let function = name.to_owned();
        let inv = |outcome: &'static str| counter!(names::FN_INVOCATIONS, "shard" => shard.clone(), "function" => function.clone(), "outcome" => outcome);
        let per_fn = |metric: &'static str| counter!(metric, "shard" => shard.clone(), "function" => function.clone());
        FunctionHandles {
            ok: inv("ok"),
            trap: inv("trap"),
            deadline: inv("deadline"),
            memory_limit: inv("memory-limit"),
            bad_output: inv("bad-output"),
            input_too_large: inv("input-too-large"),
            ring_misses: per_fn(names::FN_RING_MISSES),
            resets: per_fn(names::FN_RESETS),
            instantiations: per_fn(names::FN_INSTANTIATIONS),
            warmups: per_fn(names::FN_WARMUPS),
            ready: gauge!(names::FN_READY, "shard" => shard.clone(), "function" => function.clone()),
        }
    }

    /// Publish the hand-off totals of this shard.
    pub fn publish_handoff(&self, h: &HandoffCounts) {
        let x = &self.handoff;
        x.cold.absolute(h.cold);
        x.overloaded.absolute(h.overloaded);
        x.received.absolute(h.frames_received);
        x.bad_mac.absolute(h.dropped_bad_mac);
        x.stale.absolute(h.dropped_stale);
        x.wrong_source.absolute(h.dropped_wrong_source);
        x.malformed.absolute(h.dropped_malformed);
        x.replayed.absolute(h.dropped_replayed);
        x.guard_full.absolute(h.dropped_guard_full);
        x.bad_hop_tokens.absolute(h.bad_hop_tokens);
        x.direct.absolute(h.replies_direct);
        x.relay.absolute(h.replies_relay);
        x.rejects.absolute(h.overload_rejects);
        x.alternate_up.set(if h.alternate_up { 1.0 } else { 0.0 });
        x.share.set(f64::from(h.share_ppm) / 1e6);
        x.alternate_busy.set(
            h.alternate_busy_percent
                .map_or(-1.0, |b| f64::from(b) / 100.0),
        );
        x.alternate_saturated
            .set(if h.alternate_saturated { 1.0 } else { 0.0 });
        x.busy.set(f64::from(h.busy_percent) / 100.0);
    }

    /// Publish the DNS latency histograms and stamp the publish time.
    pub fn publish_latency(&self) {
        if !self.udp_latency_by_worker.get() {
            self.dns[Transport::Udp as usize].publish(&self.published[Surface::DnsUdp as usize]);
        }
        self.dns[Transport::Tcp as usize].publish(&self.published[Surface::DnsTcp as usize]);
        self.last_publish.set(crate::metrics::unix_now());
    }

    /// Publish this shard's function service: every function's totals, and
    /// both surfaces' requests, responses by status, connections and
    /// latency.
    pub fn publish_functions(&self, fs: &crate::functions::FunctionShard) {
        let ready = fs.ready_instances();
        let warmups = fs.warmups();
        for (i, (name, s)) in fs.stats().into_iter().enumerate() {
            self.publish_function(
                &name,
                &FunctionCounts {
                    ok: s.ok,
                    trap: s.traps,
                    deadline: s.timeouts,
                    memory_limit: s.memory_limits,
                    bad_output: s.bad_outputs,
                    input_too_large: s.rejected_inputs,
                    ring_misses: s.ring_misses,
                    resets: s.resets,
                    instantiations: s.instantiations,
                    warmups: warmups.get(i).copied().unwrap_or(0),
                    ready: ready.get(i).copied().unwrap_or(0) as u64,
                },
            );
        }
        let surface = &fs.surface;
        self.publish_function_surface(
            Surface::FnUdp,
            surface.udp_requests.get() + surface.udp_rejected.get() + surface.udp_ignored.get(),
            &surface.udp_status,
            0,
        );
        self.publish_function_surface(
            Surface::FnHttp,
            surface.http_requests.get(),
            &surface.http_status,
            surface.http_open.get(),
        );
        self.http_refused[0].absolute(surface.http_refused.get());
        self.http_refused[1].absolute(surface.http_client_refused.get());
        surface
            .udp_latency
            .publish(&self.published[Surface::FnUdp as usize]);
        surface
            .http_latency
            .publish(&self.published[Surface::FnHttp as usize]);
    }
}

/// Views counted one by one in `shardgate_view_hits_total`; views past
/// this many (in map order) are counted together as `view="other"`.
pub const MAX_VIEW_SERIES: usize = 1000;

/// Per-view answer counts of one shard.
#[derive(Default)]
struct ViewHits {
    /// View names of the map `counts` is indexed by.
    names: Vec<String>,
    /// Hits since the last fold, by view index; the last slot is `other`.
    counts: Vec<u64>,
    /// Running totals by view name.
    totals: HashMap<String, u64>,
    handles: HashMap<String, Counter>,
}

impl ViewHits {
    /// Count one hit for view `view` (views past the series limit count
    /// as `other`, the last slot).
    fn count(&mut self, view: usize) {
        let last = self.counts.len().saturating_sub(1);
        if let Some(c) = self.counts.get_mut(view.min(last)) {
            *c += 1;
        }
    }

    /// Name the views of a new map (hits so far are folded under the names
    /// they were counted with).
    fn set_names<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.fold();
        self.names = names
            .into_iter()
            .take(MAX_VIEW_SERIES)
            .map(str::to_owned)
            .collect();
        self.counts = vec![0; self.names.len() + 1];
    }

    /// Move `counts` into `totals` (by the names they were counted under).
    fn fold(&mut self) {
        for (i, c) in self.counts.iter_mut().enumerate() {
            if *c == 0 {
                continue;
            }
            let name = self.names.get(i).map_or("other", String::as_str);
            *self.totals.entry(name.to_owned()).or_default() += *c;
            *c = 0;
        }
    }
}

/// The view a DNS answer counts for in `shardgate_view_hits_total`: only
/// answers about the zones (NOERROR, NXDOMAIN) count, by the querier's
/// address (one more prefix lookup).
#[inline]
fn counted_view(
    map: &AddressMap,
    client: IpAddr,
    outcome: Outcome,
    seen: dns::ClientView,
) -> Option<usize> {
    match outcome {
        Outcome::Answered {
            rcode: dns::rcode::NOERROR | dns::rcode::NXDOMAIN,
            ..
        } => seen.unwrap_or_else(|| map.select_view(client).view),
        _ => None,
    }
}

/// Times UDP receive batches: the replies of a batch leave together, so
/// every query of it waited from the batch's receipt until its end; that
/// time is recorded once per query, with two clock reads per batch instead
/// of two per query (none when the timer is disabled).
#[derive(Debug, Default)]
struct BatchClock {
    /// When the current batch arrived.
    start: Cell<Option<Instant>>,
    /// Queries answered in the current batch.
    answers: Cell<u64>,
}

impl BatchClock {
    #[inline]
    fn begin(&self, timer: &RequestTimer) {
        self.start.set(timer.start());
        self.answers.set(0);
    }

    #[inline]
    fn answered(&self) {
        self.answers.set(self.answers.get() + 1);
    }

    #[inline]
    fn end(&self, timer: &RequestTimer) {
        let n = self.answers.replace(0);
        if let Some(t0) = self.start.take() {
            if n > 0 {
                let ns = t0.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                timer.record_n(ns, n);
            }
        }
    }
}

/// The metrics of one DNS worker thread of a shard (crate::shard::dns_worker),
/// made by [`ShardMetrics::worker_meter`]: the same batch timing as the
/// shard's UDP loop into its own histogram, which it publishes straight to
/// the shard's `dns-udp` series, and its own view counts, which it hands to
/// the shard ([`Self::view_totals`]) to publish. Lives on the worker
/// thread; nothing in it is shared on the request path.
pub struct WorkerMeter {
    timer: RequestTimer,
    batch: BatchClock,
    views: ViewHits,
    published: Arc<SharedHistogram>,
}

impl WorkerMeter {
    /// A receive batch arrived (one clock read when enabled).
    #[inline]
    pub fn begin_batch(&mut self) {
        self.batch.begin(&self.timer);
    }

    /// One query of the batch was answered: count it and its view.
    #[inline]
    pub fn answered(
        &mut self,
        map: &AddressMap,
        client: IpAddr,
        outcome: Outcome,
        seen: dns::ClientView,
    ) {
        if !self.timer.enabled() {
            return;
        }
        self.batch.answered();
        if let Some(view) = counted_view(map, client, outcome, seen) {
            self.views.count(view);
        }
    }

    /// The batch's replies left: every query of it waited from the
    /// batch's receipt until now (as [`ShardMetrics::end_batch`]).
    #[inline]
    pub fn end_batch(&mut self) {
        self.batch.end(&self.timer);
    }

    /// The views of the map the worker now answers from.
    pub fn set_views<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.views.set_names(names);
    }

    /// Running view totals, by view name.
    pub fn view_totals(&mut self) -> HashMap<String, u64> {
        self.views.fold();
        self.views.totals.clone()
    }

    /// Copy the latency counts into the shard's `dns-udp` histogram.
    pub fn publish_latency(&self) {
        self.timer.publish(&self.published);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{DropReason, Outcome};
    use crate::shard::stats::ShardStats;

    #[test]
    fn publishes_counts_latency_and_functions_with_shard_labels() {
        let (registry, recorder) = Registry::local(true);
        let m = metrics::with_local_recorder(&recorder, || {
            ShardMetrics::register_with(Some(&registry), 1)
        });
        assert!(m.enabled());
        let stats = ShardStats::default();
        for _ in 0..3 {
            let t = m.start();
            stats.record(
                Transport::Udp,
                Outcome::Answered {
                    rcode: 0,
                    truncated: false,
                },
            );
            m.finish(Transport::Udp, t);
        }
        stats.record(
            Transport::Tcp,
            Outcome::Answered {
                rcode: 3,
                truncated: false,
            },
        );
        stats.record(
            Transport::Udp,
            Outcome::Answered {
                rcode: 9,
                truncated: true,
            },
        );
        stats.record(Transport::Udp, Outcome::Dropped(DropReason::TooShort));
        m.record_ns(Transport::Tcp, 30_000);
        m.publish_latency();
        // Rare rcodes and functions register on first publish, through the
        // current recorder (the global one in the binary).
        metrics::with_local_recorder(&recorder, || {
            m.publish_dns(&stats.snapshot());
            m.publish_function(
                "classify",
                &FunctionCounts {
                    ok: 5,
                    trap: 1,
                    ready: 4,
                    ..Default::default()
                },
            );
            let http = StatusCounts::default();
            for code in [200, 200, 200, 200, 200, 500, 999] {
                http.record(code);
            }
            assert_eq!(http.total(), 7);
            m.publish_function_surface(Surface::FnHttp, 7, &http, 2);
        });
        m.publish_handoff(&HandoffCounts {
            cold: 2,
            ..Default::default()
        });

        let text = registry.render();
        let has = |line: &str| assert!(text.contains(line), "missing {line:?} in\n{text}");
        has("shardgate_requests_total{shard=\"1\",protocol=\"dns-udp\"} 5\n");
        has("shardgate_requests_total{shard=\"1\",protocol=\"dns-tcp\"} 1\n");
        has("shardgate_requests_total{shard=\"1\",protocol=\"fn-http\"} 7\n");
        has("shardgate_responses_total{shard=\"1\",protocol=\"fn-http\",outcome=\"200\"} 5\n");
        has("shardgate_responses_total{shard=\"1\",protocol=\"fn-http\",outcome=\"other\"} 1\n");
        has("shardgate_in_flight_requests{shard=\"1\",protocol=\"fn-http\"} 2\n");
        has("shardgate_requests_total{shard=\"1\",protocol=\"fn-udp\"} 0\n");
        has("shardgate_responses_total{shard=\"1\",protocol=\"dns-udp\",rcode=\"NOERROR\"} 3\n");
        has("shardgate_responses_total{shard=\"1\",protocol=\"dns-udp\",rcode=\"NOTAUTH\"} 1\n");
        has("shardgate_responses_total{shard=\"1\",protocol=\"dns-tcp\",rcode=\"NXDOMAIN\"} 1\n");
        has("shardgate_responses_total{shard=\"1\",protocol=\"dns-tcp\",rcode=\"SERVFAIL\"} 0\n");
        has("shardgate_responses_total{shard=\"1\",protocol=\"fn-http\",outcome=\"500\"} 1\n");
        has("shardgate_dns_truncated_total{shard=\"1\"} 1\n");
        has("shardgate_dropped_total{shard=\"1\",protocol=\"dns\",reason=\"too_short\"} 1\n");
        has("shardgate_request_duration_seconds_count{shard=\"1\",protocol=\"dns-udp\"} 3\n");
        has("shardgate_request_duration_seconds_bucket{shard=\"1\",protocol=\"dns-tcp\",le=\"0.00005\"} 1\n");
        has("shardgate_request_duration_seconds_bucket{shard=\"1\",protocol=\"dns-tcp\",le=\"0.000025\"} 0\n");
        has("shardgate_function_invocations_total{shard=\"1\",function=\"classify\",outcome=\"trap\"} 1\n");
        has("shardgate_function_ready_instances{shard=\"1\",function=\"classify\"} 4\n");
        has("shardgate_handoffs_total{shard=\"1\",reason=\"cold\"} 2\n");
        has("shardgate_handoff_frames_dropped_total{shard=\"1\",reason=\"bad_mac\"} 0\n");
        // No series without a shard label.
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            assert!(line.contains("shard=\""), "unlabelled series: {line}");
        }
    }

    #[test]
    fn view_hits_keep_their_names_across_map_swaps() {
        let (registry, recorder) = Registry::local(true);
        let m = metrics::with_local_recorder(&recorder, || {
            ShardMetrics::register_with(Some(&registry), 0)
        });
        let map = crate::addrmap::load_embedded().unwrap().map;
        m.set_views(map.views().iter().map(|v| v.name.as_str()));
        let noerror = Outcome::Answered {
            rcode: 0,
            truncated: false,
        };
        let refused = Outcome::Answered {
            rcode: 5,
            truncated: false,
        };
        let site_a: IpAddr = "127.0.0.5".parse().unwrap();
        let site_b: IpAddr = "127.0.0.200".parse().unwrap();
        m.count_view(&map, site_a, noerror, None);
        m.count_view(&map, site_a, noerror, None);
        m.count_view(&map, site_a, refused, None); // not about the zones: not counted
        m.count_view(&map, site_b, noerror, None);
        // A new map with the views in another order: earlier hits keep
        // their names, later ones go by the new indices.
        let mut reversed: Vec<&str> = map.views().iter().map(|v| v.name.as_str()).collect();
        reversed.reverse();
        m.set_views(reversed.iter().copied());
        let a_index = reversed.iter().position(|n| *n == "site-a").unwrap();
        let b_index = map.view_index("site-a").unwrap();
        assert_ne!(a_index, b_index);
        metrics::with_local_recorder(&recorder, || m.publish_dns(&Default::default()));
        let text = registry.render();
        assert!(
            text.contains("shardgate_view_hits_total{shard=\"0\",view=\"site-a\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("shardgate_view_hits_total{shard=\"0\",view=\"site-b\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn a_udp_batch_times_every_query_with_two_clock_reads() {
        let (registry, recorder) = Registry::local(true);
        let m = metrics::with_local_recorder(&recorder, || {
            ShardMetrics::register_with(Some(&registry), 0)
        });
        m.begin_batch();
        for _ in 0..3 {
            m.answered_in_batch();
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
        m.end_batch();
        // A batch with nothing answered records nothing; end without begin
        // neither.
        m.begin_batch();
        m.end_batch();
        m.end_batch();
        m.publish_latency();
        let text = registry.render();
        let udp = "{shard=\"0\",protocol=\"dns-udp\"";
        assert!(
            text.contains(&format!(
                "shardgate_request_duration_seconds_count{udp}}} 3\n"
            )),
            "{text}"
        );
        // All three waited at least the 200 us: none in the buckets below.
        assert!(
            text.contains(&format!(
                "shardgate_request_duration_seconds_bucket{udp},le=\"0.0001\"}} 0\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "shardgate_request_duration_seconds_bucket{udp},le=\"+Inf\"}} 3\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn disabled_metrics_do_not_time() {
        let (registry, recorder) = Registry::local(false);
        let m = metrics::with_local_recorder(&recorder, || {
            ShardMetrics::register_with(Some(&registry), 0)
        });
        assert!(m.start().is_none());
        m.record_ns(Transport::Udp, 10);
        m.publish_latency();
        let text = registry.render();
        assert!(text.contains(
            "shardgate_request_duration_seconds_count{shard=\"0\",protocol=\"dns-udp\"} 0\n"
        ));
    }
}
