//! The shard side of metrics: handles registered once per shard and kept,
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

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, gauge, Counter, Gauge};

use super::histogram::{LocalHistogram, SharedHistogram};
use super::{names, Protocol, Registry};
use crate::shard::stats::{DropKind, Proto, StatsSnapshot, DROP_KINDS, RCODE_SLOTS};

/// DNS rcode mnemonics for the `outcome` label, by rcode; the last slot of
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
    pub timeout: u64,
    /// Memory over the function's limit.
    pub memory: u64,
    /// Bad output pointer or oversized output.
    pub bad_output: u64,
    pub ring_misses: u64,
    pub resets: u64,
    pub instantiations: u64,
    pub warmups: u64,
    /// Ready instances in the ring now (a gauge).
    pub ready: u64,
}

/// Hand-off running totals of one shard; published by
/// [`ShardMetrics::publish_handoff`]. All zero until hand-off is configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffCounts {
    pub cold: u64,
    pub overloaded: u64,
    pub frames_received: u64,
    pub dropped_bad_mac: u64,
    pub dropped_stale: u64,
    pub dropped_wrong_source: u64,
    pub dropped_malformed: u64,
    pub replies_direct: u64,
    pub replies_relay: u64,
    pub overload_rejects: u64,
    pub alternate_up: bool,
}

/// Handles of one function on one shard.
struct FunctionHandles {
    ok: Counter,
    trap: Counter,
    timeout: Counter,
    memory: Counter,
    bad_output: Counter,
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
    direct: Counter,
    relay: Counter,
    rejects: Counter,
    alternate_up: Gauge,
}

/// One shard's metric handles and latency histograms. Lives on its shard
/// (not `Sync`); registered once when the shard starts.
pub struct ShardMetrics {
    shard: String,
    enabled: bool,
    latency: [LocalHistogram; 4],
    published: [Arc<SharedHistogram>; 4],
    requests: [Counter; 4],
    /// `[dns-udp, dns-tcp][rcode slot]`, registered lazily for rare rcodes.
    responses: RefCell<[[Option<Counter>; RCODE_SLOTS]; 2]>,
    truncated: Counter,
    dropped: [Counter; DROP_KINDS],
    tcp_connections: Gauge,
    tcp_refused: Counter,
    in_flight: [Gauge; 4],
    up: Gauge,
    map_version: Gauge,
    last_publish: Gauge,
    functions: RefCell<HashMap<String, FunctionHandles>>,
    handoff: HandoffHandles,
}

impl ShardMetrics {
    /// Register shard `shard`'s series with the installed registry (see
    /// [`super::install`]). Without one, or when metrics are disabled, the
    /// handles are still valid but timing is off.
    pub fn register(shard: usize) -> ShardMetrics {
        Self::register_with(super::global(), shard)
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
        let per_protocol_c = |name| Protocol::ALL.map(|p| c(name, &[("protocol", p.label())]));
        let per_protocol_g = |name| Protocol::ALL.map(|p| g(name, &[("protocol", p.label())]));

        let published: [Arc<SharedHistogram>; 4] = Default::default();
        if let Some(registry) = registry {
            for p in Protocol::ALL {
                registry.add_histogram(
                    names::REQUEST_DURATION,
                    &[("shard", &label), ("protocol", p.label())],
                    published[p as usize].clone(),
                );
            }
        }

        let metrics = ShardMetrics {
            enabled: registry.is_some_and(Registry::enabled),
            latency: Default::default(),
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
            tcp_connections: g(
                names::TCP_CONNECTIONS,
                &[("protocol", Protocol::DnsTcp.label())],
            ),
            tcp_refused: c(
                names::TCP_REFUSED,
                &[("protocol", Protocol::DnsTcp.label())],
            ),
            in_flight: per_protocol_g(names::IN_FLIGHT),
            up: g(names::SHARD_UP, &[]),
            map_version: g(names::SHARD_MAP_VERSION, &[]),
            last_publish: g(names::LAST_PUBLISH, &[]),
            functions: RefCell::new(HashMap::new()),
            handoff: HandoffHandles {
                cold: c(names::HANDOFFS, &[("reason", "cold")]),
                overloaded: c(names::HANDOFFS, &[("reason", "overloaded")]),
                received: c(names::HANDOFF_RECEIVED, &[]),
                bad_mac: c(names::HANDOFF_DROPPED, &[("reason", "bad_mac")]),
                stale: c(names::HANDOFF_DROPPED, &[("reason", "stale")]),
                wrong_source: c(names::HANDOFF_DROPPED, &[("reason", "wrong_source")]),
                malformed: c(names::HANDOFF_DROPPED, &[("reason", "malformed")]),
                direct: c(names::HANDOFF_REPLIES, &[("mode", "direct")]),
                relay: c(names::HANDOFF_REPLIES, &[("mode", "relay")]),
                rejects: c(names::OVERLOAD_REJECTS, &[]),
                alternate_up: g(names::HANDOFF_ALTERNATE_UP, &[]),
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
        let protocol = if proto == Proto::Udp as usize {
            Protocol::DnsUdp
        } else {
            Protocol::DnsTcp
        };
        let outcome = RCODE_NAMES.get(slot).copied().unwrap_or("other");
        counter!(names::RESPONSES, "shard" => self.shard.clone(), "protocol" => protocol.label(), "outcome" => outcome)
    }

    /// Whether requests are timed.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The `shard` label value.
    pub fn shard_label(&self) -> &str {
        &self.shard
    }

    /// Start timing a request: `None` (no clock read) when disabled.
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        if self.enabled {
            Some(Instant::now())
        } else {
            None
        }
    }

    /// Finish timing a request started with [`start`](Self::start).
    #[inline]
    pub fn finish(&self, protocol: Protocol, started: Option<Instant>) {
        if let Some(t0) = started {
            let ns = t0.elapsed().as_nanos().min(u64::MAX as u128) as u64;
            self.latency[protocol as usize].record_ns(ns);
        }
    }

    /// Record an already measured latency (e.g. a batch receive time to
    /// each reply); ignored when disabled.
    #[inline]
    pub fn record_ns(&self, protocol: Protocol, ns: u64) {
        if self.enabled {
            self.latency[protocol as usize].record_ns(ns);
        }
    }

    /// The shard serves its sockets (1) or stopped (0).
    pub fn set_up(&self, up: bool) {
        self.up.set(if up { 1.0 } else { 0.0 });
    }

    /// Publish the DNS counters from the runtime's running totals.
    pub fn publish_dns(&self, snap: &StatsSnapshot) {
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
        let udp: u64 = snap.answered[Proto::Udp as usize].iter().sum();
        let tcp: u64 = snap.answered[Proto::Tcp as usize].iter().sum();
        self.requests[Protocol::DnsUdp as usize].absolute(udp + dropped_unanswered);
        self.requests[Protocol::DnsTcp as usize].absolute(tcp);
        self.truncated.absolute(snap.truncated);
        for (counter, &value) in self.dropped.iter().zip(snap.dropped.iter()) {
            counter.absolute(value);
        }
        self.tcp_connections.set(snap.tcp_open as f64);
        self.tcp_refused.absolute(snap.tcp_refused);
        self.map_version.set(snap.map_version as f64);
    }

    /// Publish function-surface request totals: `requests` received and
    /// `responses` by status, for `protocol` (fn-udp or fn-http), plus the
    /// requests being served now.
    pub fn publish_function_surface(
        &self,
        protocol: Protocol,
        requests: u64,
        responses: &[(u16, u64)],
        in_flight: u64,
    ) {
        self.requests[protocol as usize].absolute(requests);
        self.in_flight[protocol as usize].set(in_flight as f64);
        for &(status, value) in responses {
            // Publish path only: the lookup is ~70 ns, once a second.
            counter!(names::RESPONSES, "shard" => self.shard.clone(), "protocol" => protocol.label(), "outcome" => status.to_string())
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
        handles.timeout.absolute(counts.timeout);
        handles.memory.absolute(counts.memory);
        handles.bad_output.absolute(counts.bad_output);
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
            timeout: inv("timeout"),
            memory: inv("memory"),
            bad_output: inv("bad_output"),
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
        x.direct.absolute(h.replies_direct);
        x.relay.absolute(h.replies_relay);
        x.rejects.absolute(h.overload_rejects);
        x.alternate_up.set(if h.alternate_up { 1.0 } else { 0.0 });
    }

    /// Publish the latency histograms and stamp the publish time.
    pub fn publish_latency(&self) {
        for (local, shared) in self.latency.iter().zip(self.published.iter()) {
            local.publish(shared);
        }
        self.last_publish.set(super::unix_now());
    }
}

/// `(key, value)` pairs as `metrics` labels.
fn labels_of(pairs: &[(&'static str, String)]) -> Vec<metrics::Label> {
    pairs
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect()
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
                Proto::Udp,
                Outcome::Answered {
                    rcode: 0,
                    truncated: false,
                },
            );
            m.finish(Protocol::DnsUdp, t);
        }
        stats.record(
            Proto::Tcp,
            Outcome::Answered {
                rcode: 3,
                truncated: false,
            },
        );
        stats.record(
            Proto::Udp,
            Outcome::Answered {
                rcode: 9,
                truncated: true,
            },
        );
        stats.record(Proto::Udp, Outcome::Dropped(DropReason::TooShort));
        m.record_ns(Protocol::DnsTcp, 30_000);
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
            m.publish_function_surface(Protocol::FnHttp, 6, &[(200, 5), (500, 1)], 0);
        });
        m.publish_handoff(&HandoffCounts {
            cold: 2,
            ..Default::default()
        });

        let text = registry.render();
        let has = |line: &str| assert!(text.contains(line), "missing {line:?} in\n{text}");
        has("shardgate_requests_total{shard=\"1\",protocol=\"dns-udp\"} 5\n");
        has("shardgate_requests_total{shard=\"1\",protocol=\"dns-tcp\"} 1\n");
        has("shardgate_requests_total{shard=\"1\",protocol=\"fn-http\"} 6\n");
        has("shardgate_requests_total{shard=\"1\",protocol=\"fn-udp\"} 0\n");
        has("shardgate_responses_total{shard=\"1\",protocol=\"dns-udp\",outcome=\"NOERROR\"} 3\n");
        has("shardgate_responses_total{shard=\"1\",protocol=\"dns-udp\",outcome=\"NOTAUTH\"} 1\n");
        has("shardgate_responses_total{shard=\"1\",protocol=\"dns-tcp\",outcome=\"NXDOMAIN\"} 1\n");
        has("shardgate_responses_total{shard=\"1\",protocol=\"dns-tcp\",outcome=\"SERVFAIL\"} 0\n");
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
    fn disabled_metrics_do_not_time() {
        let (registry, recorder) = Registry::local(false);
        let m = metrics::with_local_recorder(&recorder, || {
            ShardMetrics::register_with(Some(&registry), 0)
        });
        assert!(m.start().is_none());
        m.record_ns(Protocol::DnsUdp, 10);
        m.publish_latency();
        let text = registry.render();
        assert!(text.contains(
            "shardgate_request_duration_seconds_count{shard=\"0\",protocol=\"dns-udp\"} 0\n"
        ));
    }
}
