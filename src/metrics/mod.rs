//! Metrics: registration, the series catalogue, shard-local instruments
//! ([`local`]) and the `/metrics` rendering. A leaf: it imports no service;
//! each service's meter is built on it (the shard's is `shard::meter`).
//!
//! One global `metrics-exporter-prometheus` recorder (built with
//! `build_recorder()`, no HTTP listener, no tokio) holds every counter and
//! gauge; its handle renders the text that the admin listener serves. Every
//! series carries a `shard` label: `"0"`, `"1"`, ... for shard series,
//! `"process"` for process-wide ones (reloads, RSS, open fds).
//!
//! The request path never touches the recorder. Shards count in shard-local
//! `Cell`s (`shard::stats::ShardStats`) and time requests into shard-local
//! histograms ([`local::RequestTimer`]); a low-priority task on each shard
//! copies those into handles registered once at start-up
//! (`shard::meter::ShardMetrics`, about once a second). Latency histograms are rendered by this module as proper
//! Prometheus histograms and appended to the exporter's output.
//!
//! `[metrics] enabled = false` (config) turns off request timing and the
//! publish task; `/metrics` then carries only the process-wide series. It
//! exists to measure what metrics cost.

pub mod cluster;
pub mod histogram;
pub mod local;
pub mod process;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{describe_counter, describe_gauge, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use histogram::SharedHistogram;

/// The surfaces a shard serves requests on, as they appear in the
/// `protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Surface {
    DnsUdp = 0,
    DnsTcp = 1,
    FnUdp = 2,
    FnHttp = 3,
}

impl Surface {
    pub const ALL: [Surface; 4] = [
        Surface::DnsUdp,
        Surface::DnsTcp,
        Surface::FnUdp,
        Surface::FnHttp,
    ];

    /// The `protocol` label value.
    pub fn label(self) -> &'static str {
        match self {
            Surface::DnsUdp => "dns-udp",
            Surface::DnsTcp => "dns-tcp",
            Surface::FnUdp => "fn-udp",
            Surface::FnHttp => "fn-http",
        }
    }
}

/// The kernel-drop counter of one UDP socket of shard `shard`: `protocol`
/// is `dns-udp`, `fn-udp` or `handoff`, `listen` the socket's address.
pub fn udp_socket_drops(
    shard: usize,
    protocol: &'static str,
    listen: std::net::SocketAddr,
) -> metrics::Counter {
    metrics::counter!(
        names::UDP_SOCKET_DROPS,
        "shard" => shard.to_string(),
        "protocol" => protocol,
        "listen" => listen.to_string()
    )
}

/// Label value of the `shard` label on process-wide series.
pub const PROCESS_SHARD: &str = "process";

/// Names of every metric shardgate exports; the dashboard and alert rules
/// use these names (`scripts/check-metric-names.sh` checks them against a
/// live `/metrics`).
pub mod names {
    pub const REQUESTS: &str = "shardgate_requests_total";
    pub const RESPONSES: &str = "shardgate_responses_total";
    pub const DROPPED: &str = "shardgate_dropped_total";
    pub const DNS_TRUNCATED: &str = "shardgate_dns_truncated_total";
    pub const IN_FLIGHT: &str = "shardgate_in_flight_requests";
    pub const TCP_REFUSED: &str = "shardgate_tcp_connections_refused_total";
    pub const RRL_LIMITED: &str = "shardgate_dns_rrl_limited_total";
    pub const RRL_SLIPPED: &str = "shardgate_dns_rrl_slipped_total";
    pub const UDP_BATCHES: &str = "shardgate_udp_receive_batches_total";
    pub const UDP_COALESCING_WAITS: &str = "shardgate_udp_coalescing_waits_total";
    pub const UDP_SOCKET_DROPS: &str = "shardgate_udp_socket_drops_total";
    pub const VIEW_HITS: &str = "shardgate_view_hits_total";
    pub const REQUEST_DURATION: &str = "shardgate_request_duration_seconds";
    pub const SHARD_UP: &str = "shardgate_shard_up";
    pub const SHARD_MAP_VERSION: &str = "shardgate_shard_map_version";
    pub const LAST_PUBLISH: &str = "shardgate_shard_last_publish_timestamp_seconds";
    pub const MAP_VERSION: &str = "shardgate_map_version";
    pub const RELOADS: &str = "shardgate_config_reloads_total";
    pub const LAST_RELOAD_OK: &str = "shardgate_config_last_reload_success";
    pub const MAP_CHANGES: &str = "shardgate_map_changes_total";
    pub const FN_INVOCATIONS: &str = "shardgate_function_invocations_total";
    pub const FN_RING_MISSES: &str = "shardgate_function_ring_misses_total";
    pub const FN_RESETS: &str = "shardgate_function_resets_total";
    pub const FN_INSTANTIATIONS: &str = "shardgate_function_instantiations_total";
    pub const FN_WARMUPS: &str = "shardgate_function_warmups_total";
    pub const FN_READY: &str = "shardgate_function_ready_instances";
    pub const FN_COMPILED: &str = "shardgate_functions_compiled";
    pub const FN_CONFIGURED: &str = "shardgate_functions_configured";
    pub const HANDOFFS: &str = "shardgate_handoffs_total";
    pub const HANDOFF_RECEIVED: &str = "shardgate_handoff_frames_received_total";
    pub const HANDOFF_DROPPED: &str = "shardgate_handoff_frames_dropped_total";
    pub const HANDOFF_REPLIES: &str = "shardgate_handoff_replies_total";
    pub const HANDOFF_ALTERNATE_UP: &str = "shardgate_handoff_alternate_up";
    pub const HANDOFF_BAD_HOP_TOKENS: &str = "shardgate_handoff_http_bad_hop_tokens_total";
    pub const HANDOFF_SHARE: &str = "shardgate_handoff_share_ratio";
    pub const HANDOFF_ALTERNATE_BUSY: &str = "shardgate_handoff_alternate_busy_ratio";
    pub const HANDOFF_ALTERNATE_SATURATED: &str = "shardgate_handoff_alternate_saturated";
    pub const HANDOFF_SHARD_BUSY: &str = "shardgate_handoff_shard_busy_ratio";
    pub const OVERLOAD_REJECTS: &str = "shardgate_overload_rejects_total";
    pub const ADMIN_REQUESTS: &str = "shardgate_admin_requests_total";
    pub const BUILD_INFO: &str = "shardgate_build_info";
    pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
    pub const VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
    pub const OPEN_FDS: &str = "process_open_fds";
    pub const MAX_FDS: &str = "process_max_fds";
    pub const THREADS: &str = "process_threads";
    pub const START_TIME: &str = "process_start_time_seconds";
    pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
    pub const SHARD_CPU_SECONDS: &str = "shardgate_shard_cpu_seconds_total";
    pub const CLUSTER_APPLIED_REVISION: &str = "shardgate_cluster_applied_revision";
    pub const CLUSTER_ETCD_REVISION: &str = "shardgate_cluster_etcd_revision";
    pub const CLUSTER_WATCH_LAG: &str = "shardgate_cluster_watch_lag_revisions";
    pub const CLUSTER_ETCD_UP: &str = "shardgate_cluster_etcd_up";
    pub const CLUSTER_CHANGES: &str = "shardgate_cluster_changes_total";
    pub const CLUSTER_SNAPSHOTS: &str = "shardgate_cluster_snapshot_reloads_total";
}

/// Every metric family with its kind and help text (histograms rendered by
/// this module are listed too, so the list is the whole catalogue).
pub const CATALOGUE: &[(&str, Kind, &str)] = &[
    (
        names::CLUSTER_APPLIED_REVISION,
        Kind::Gauge,
        "etcd revision of the fleet address map this node serves ([cluster]).",
    ),
    (
        names::CLUSTER_ETCD_REVISION,
        Kind::Gauge,
        "Newest etcd revision this node has heard of ([cluster]).",
    ),
    (
        names::CLUSTER_WATCH_LAG,
        Kind::Gauge,
        "Revisions between the newest one heard from etcd and the one applied ([cluster]).",
    ),
    (
        names::CLUSTER_ETCD_UP,
        Kind::Gauge,
        "1 while this node's watch on etcd is established ([cluster]).",
    ),
    (
        names::CLUSTER_CHANGES,
        Kind::Counter,
        "Fleet map generations from etcd, by result: applied, or rejected (cannot be served here; the previous map keeps serving).",
    ),
    (
        names::CLUSTER_SNAPSHOTS,
        Kind::Counter,
        "Full reads of the fleet map from etcd, by reason (start, compacted).",
    ),
    (
        names::REQUESTS,
        Kind::Counter,
        "Requests received, by protocol.",
    ),
    (
        names::RESPONSES,
        Kind::Counter,
        "Responses sent, by protocol and rcode (DNS: `rcode`) or status (functions: `outcome`).",
    ),
    (
        names::DROPPED,
        Kind::Counter,
        "Requests dropped without a response, by protocol and reason.",
    ),
    (
        names::DNS_TRUNCATED,
        Kind::Counter,
        "DNS responses sent with TC set (the client should retry over TCP).",
    ),
    (
        names::IN_FLIGHT,
        Kind::Gauge,
        "Requests in flight, by protocol: open connections for TCP protocols (each carries a client's keep-alive or pipelined requests); 0 for datagram protocols, answered within their receive batch.",
    ),
    (
        names::TCP_REFUSED,
        Kind::Counter,
        "TCP connections (DNS, function HTTP) closed at once, by reason: shard_cap (the per-shard cap was reached) or client_cap (the client held its per-client share).",
    ),
    (
        names::RRL_LIMITED,
        Kind::Counter,
        "DNS UDP answers over the response rate limit of their source prefix ([dns.rrl]): dropped, or sent truncated (slipped).",
    ),
    (
        names::RRL_SLIPPED,
        Kind::Counter,
        "Rate-limited DNS UDP answers sent truncated (TC=1) so a real client retries over TCP (the rest were dropped).",
    ),
    (
        names::UDP_BATCHES,
        Kind::Counter,
        "UDP receive calls (recvmmsg) that brought datagrams; requests over this gives the average batch size.",
    ),
    (
        names::UDP_COALESCING_WAITS,
        Kind::Counter,
        "Receive-coalescing waits: the shard neared saturation and waited (at most dns.udp_coalesce_us) to serve the next datagrams in one larger batch.",
    ),
    (
        names::UDP_SOCKET_DROPS,
        Kind::Counter,
        "Datagrams the kernel dropped at a UDP socket before the shard received them (its receive buffer was full: SO_RXQ_OVFL), by protocol (dns-udp, fn-udp, handoff) and listen address; raise dns.udp_rcvbuf / functions.udp_rcvbuf (and net.core.rmem_max), or add shards.",
    ),
    (
        names::VIEW_HITS,
        Kind::Counter,
        "DNS answers about the zones (NOERROR, NXDOMAIN) by the view of the querier's address; the first 1000 views in map order each, the rest together under the view label other.",
    ),
    (
        names::REQUEST_DURATION,
        Kind::Histogram,
        "Time from receiving a request to its response, by protocol: for DNS over UDP from the receipt of its batch until the batch's replies were sent, otherwise until the response was ready.",
    ),
    (
        names::SHARD_UP,
        Kind::Gauge,
        "1 while the shard serves its sockets.",
    ),
    (
        names::SHARD_MAP_VERSION,
        Kind::Gauge,
        "Version of the address map the shard answers from.",
    ),
    (
        names::LAST_PUBLISH,
        Kind::Gauge,
        "Unix time of the shard's last metrics publish.",
    ),
    (
        names::MAP_VERSION,
        Kind::Gauge,
        "Version of the address map swapped in last (process-wide).",
    ),
    (
        names::RELOADS,
        Kind::Counter,
        "Configuration reloads, by trigger (sighup, api) and result (ok, error).",
    ),
    (
        names::LAST_RELOAD_OK,
        Kind::Gauge,
        "1 when the last configuration reload succeeded, 0 when it failed.",
    ),
    (
        names::MAP_CHANGES,
        Kind::Counter,
        "Address-map changes through the admin API, by result (ok, rejected, failed; with [cluster] also conflict, unavailable).",
    ),
    (
        names::FN_INVOCATIONS,
        Kind::Counter,
        "Function invocations, by function and outcome (ok, trap, deadline, memory-limit, bad-output, input-too-large).",
    ),
    (
        names::FN_RING_MISSES,
        Kind::Counter,
        "Invocations that found the arena ring empty and instantiated inline.",
    ),
    (
        names::FN_RESETS,
        Kind::Counter,
        "Used instances reset or replaced off the request path.",
    ),
    (
        names::FN_INSTANTIATIONS,
        Kind::Counter,
        "Instances built (ring refills and ring misses).",
    ),
    (
        names::FN_WARMUPS,
        Kind::Counter,
        "Function warm-ups started on this shard.",
    ),
    (
        names::FN_READY,
        Kind::Gauge,
        "Ready instances in the function's arena ring.",
    ),
    (
        names::FN_COMPILED,
        Kind::Gauge,
        "Configured functions compiled and ready to instantiate.",
    ),
    (
        names::FN_CONFIGURED,
        Kind::Gauge,
        "Functions in the configuration.",
    ),
    (
        names::HANDOFFS,
        Kind::Counter,
        "Requests handed off to the alternate node, by reason (cold, overloaded).",
    ),
    (
        names::HANDOFF_RECEIVED,
        Kind::Counter,
        "Hand-off frames received from the paired node.",
    ),
    (
        names::HANDOFF_DROPPED,
        Kind::Counter,
        "Hand-off frames dropped, by reason (bad_mac, stale, wrong_source, malformed, replayed, replay_guard_full).",
    ),
    (
        names::HANDOFF_BAD_HOP_TOKENS,
        Kind::Counter,
        "HTTP requests whose handoff= hop token did not verify (treated as first-hop requests).",
    ),
    (
        names::HANDOFF_REPLIES,
        Kind::Counter,
        "Replies to handed-off requests, by mode (direct, relay).",
    ),
    (
        names::HANDOFF_ALTERNATE_UP,
        Kind::Gauge,
        "1 while the heartbeat sees the alternate node alive.",
    ),
    (
        names::HANDOFF_SHARE,
        Kind::Gauge,
        "Share of this shard's requests (executor and DNS workers) handed off for overload since the previous publish, about a second (0..1).",
    ),
    (
        names::HANDOFF_ALTERNATE_BUSY,
        Kind::Gauge,
        "The alternate's busy share as its last heartbeat reply reported it (0..1; -1 when it reports none).",
    ),
    (
        names::HANDOFF_ALTERNATE_SATURATED,
        Kind::Gauge,
        "1 while the alternate reports saturation: this shard's handed-off share is frozen and the excess is refused here.",
    ),
    (
        names::HANDOFF_SHARD_BUSY,
        Kind::Gauge,
        "This shard's busy share from request work, as its heartbeat replies report it to the alternate (0..1).",
    ),
    (
        names::OVERLOAD_REJECTS,
        Kind::Counter,
        "Requests refused at once: overloaded and no live alternate.",
    ),
    (
        names::ADMIN_REQUESTS,
        Kind::Counter,
        "Admin HTTP requests, by route and status.",
    ),
    (
        names::BUILD_INFO,
        Kind::Gauge,
        "Always 1; the version label tells the running build.",
    ),
    (
        names::RESIDENT_MEMORY,
        Kind::Gauge,
        "Resident set size of the process, bytes.",
    ),
    (
        names::VIRTUAL_MEMORY,
        Kind::Gauge,
        "Virtual memory size of the process, bytes.",
    ),
    (
        names::OPEN_FDS,
        Kind::Gauge,
        "Open file descriptors of the process.",
    ),
    (
        names::MAX_FDS,
        Kind::Gauge,
        "Soft limit on open file descriptors.",
    ),
    (names::THREADS, Kind::Gauge, "Threads of the process."),
    (
        names::START_TIME,
        Kind::Gauge,
        "Unix time the process started.",
    ),
    (
        names::CPU_SECONDS,
        Kind::Counter,
        "User and system CPU time of the whole process, seconds.",
    ),
    (
        names::SHARD_CPU_SECONDS,
        Kind::Counter,
        "User and system CPU time of a shard's threads (executor and DNS workers), seconds.",
    ),
];

/// Kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One registered histogram series (family, rendered labels, snapshot).
struct HistogramEntry {
    family: &'static str,
    labels: String,
    histogram: Arc<SharedHistogram>,
}

/// Process-wide gauges refreshed at every render.
struct ProcessGauges {
    resident: Gauge,
    virtual_mem: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    threads: Gauge,
}

/// The process's metrics: the exporter handle, the published histograms and
/// the process gauges.
pub struct Registry {
    handle: PrometheusHandle,
    enabled: bool,
    histograms: Mutex<Vec<HistogramEntry>>,
    process: ProcessGauges,
}

static GLOBAL: OnceLock<Registry> = OnceLock::new();

/// Build the recorder, install it as the process's global recorder and
/// describe every metric. Call once at start-up, before the shards start.
/// `enabled = false` keeps `/metrics` but turns off request timing and
/// per-shard publishing.
pub fn install(enabled: bool) -> Result<&'static Registry, String> {
    if let Some(existing) = GLOBAL.get() {
        return Ok(existing);
    }
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| {
        format!("cannot install the metrics recorder ({e}); another recorder was installed first")
    })?;
    let registry = Registry::new(handle, enabled);
    Ok(GLOBAL.get_or_init(|| registry))
}

/// The installed registry, if [`install`] ran.
pub fn global() -> Option<&'static Registry> {
    GLOBAL.get()
}

impl Registry {
    /// A registry over `handle`; registers and describes through whatever
    /// recorder is current (the global one, or a local one in tests).
    fn new(handle: PrometheusHandle, enabled: bool) -> Registry {
        describe_all();
        let process_gauge = |name: &'static str| metrics::gauge!(name, "shard" => PROCESS_SHARD);
        let process = ProcessGauges {
            resident: process_gauge(names::RESIDENT_MEMORY),
            virtual_mem: process_gauge(names::VIRTUAL_MEMORY),
            open_fds: process_gauge(names::OPEN_FDS),
            max_fds: process_gauge(names::MAX_FDS),
            threads: process_gauge(names::THREADS),
        };
        metrics::gauge!(names::BUILD_INFO, "shard" => PROCESS_SHARD, "version" => env!("CARGO_PKG_VERSION"))
            .set(1.0);
        metrics::gauge!(names::START_TIME, "shard" => PROCESS_SHARD).set(unix_now());
        Registry {
            handle,
            enabled,
            histograms: Mutex::new(Vec::new()),
            process,
        }
    }

    /// A registry on a recorder that is not installed globally (tests):
    /// register through `metrics::with_local_recorder(&recorder, ..)`.
    pub fn local(enabled: bool) -> (Registry, PrometheusRecorder) {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let registry = metrics::with_local_recorder(&recorder, || Registry::new(handle, enabled));
        (registry, recorder)
    }

    /// Whether request timing and per-shard publishing are on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Register a histogram series rendered under `family` with `labels`
    /// (pairs, escaped here). Called once per shard and protocol.
    pub fn add_histogram(
        &self,
        family: &'static str,
        labels: &[(&str, &str)],
        histogram: Arc<SharedHistogram>,
    ) {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
            .collect::<Vec<_>>()
            .join(",");
        let mut entries = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        entries.push(HistogramEntry {
            family,
            labels,
            histogram,
        });
    }

    /// The whole `/metrics` payload: refresh process figures, render the
    /// exporter's series, append the histograms.
    pub fn render(&self) -> String {
        let p = process::read();
        let set = |g: &Gauge, v: Option<u64>| {
            if let Some(v) = v {
                g.set(v as f64);
            }
        };
        set(&self.process.resident, p.resident_bytes);
        set(&self.process.virtual_mem, p.virtual_bytes);
        set(&self.process.open_fds, p.open_fds);
        set(&self.process.max_fds, p.max_fds);
        set(&self.process.threads, p.threads);

        let mut out = self.handle.render();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        render_cpu(&mut out);
        let entries = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let mut families: Vec<&'static str> = entries.iter().map(|e| e.family).collect();
        families.dedup();
        families.sort_unstable();
        families.dedup();
        for family in families {
            let help = CATALOGUE
                .iter()
                .find(|(name, _, _)| *name == family)
                .map(|(_, _, help)| *help)
                .unwrap_or("Latency histogram.");
            let series: Vec<histogram::Series<'_>> = entries
                .iter()
                .filter(|e| e.family == family)
                .map(|e| histogram::Series {
                    labels: &e.labels,
                    histogram: &e.histogram,
                })
                .collect();
            histogram::render_family(&mut out, family, help, &series);
        }
        out
    }

    /// Housekeeping of the exporter (drains histogram samples, none here,
    /// and applies idle timeouts). Call every few seconds off the shards.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// Describe every counter and gauge of [`CATALOGUE`] (HELP lines).
/// The CPU-time counters (float seconds, which the exporter's integer
/// counters cannot carry), read from /proc now.
fn render_cpu(out: &mut String) {
    let help = |name: &str| {
        CATALOGUE
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, h)| *h)
            .unwrap_or("")
    };
    if let Some(secs) = process::process_cpu_seconds() {
        let name = names::CPU_SECONDS;
        let _ = write!(
            out,
            "# HELP {name} {}\n# TYPE {name} counter\n{name}{{shard=\"{PROCESS_SHARD}\"}} {secs}\n",
            help(name)
        );
    }
    let shards = process::shard_cpu_seconds();
    if !shards.is_empty() {
        let name = names::SHARD_CPU_SECONDS;
        let _ = write!(out, "# HELP {name} {}\n# TYPE {name} counter\n", help(name));
        for (shard, secs) in shards {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {secs}");
        }
    }
}

fn describe_all() {
    for (name, kind, help) in CATALOGUE {
        if matches!(*name, names::CPU_SECONDS | names::SHARD_CPU_SECONDS) {
            // Rendered by render_cpu, not through the exporter.
            continue;
        }
        match kind {
            Kind::Counter => describe_counter!(*name, *help),
            Kind::Gauge => describe_gauge!(*name, *help),
            Kind::Histogram => {}
        }
    }
}

/// Seconds since the Unix epoch, as a gauge value.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Escape a label value for the Prometheus text format.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Record the outcome of a configuration reload (SIGHUP or `POST
/// /v1/reload`) in the process-wide series. `trigger` is `sighup` or `api`.
pub fn record_reload(trigger: &'static str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!(names::RELOADS, "shard" => PROCESS_SHARD, "trigger" => trigger, "result" => result)
        .increment(1);
    metrics::gauge!(names::LAST_RELOAD_OK, "shard" => PROCESS_SHARD).set(if ok {
        1.0
    } else {
        0.0
    });
}

/// Make the reload and map-change series exist at zero from the start, so
/// `increase()` and alerts see the first failure.
pub fn register_process_series() {
    for trigger in ["sighup", "api"] {
        for result in ["ok", "error"] {
            metrics::counter!(names::RELOADS, "shard" => PROCESS_SHARD, "trigger" => trigger, "result" => result)
                .absolute(0);
        }
    }
    for result in ["ok", "rejected", "failed", "conflict", "unavailable"] {
        metrics::counter!(names::MAP_CHANGES, "shard" => PROCESS_SHARD, "result" => result)
            .absolute(0);
    }
    metrics::gauge!(names::LAST_RELOAD_OK, "shard" => PROCESS_SHARD).set(1.0);
    metrics::counter!(names::ADMIN_REQUESTS, "shard" => PROCESS_SHARD, "route" => "metrics", "status" => "200")
        .absolute(0);
    // Until the function service reports (or when it is off): none.
    set_functions_compiled(0, 0);
}

/// Record an address-map change through the admin API: `ok`, `rejected`
/// (invalid, 400) or `failed` (could not persist, 500).
pub fn record_map_change(result: &'static str) {
    metrics::counter!(names::MAP_CHANGES, "shard" => PROCESS_SHARD, "result" => result)
        .increment(1);
}

/// Publish the version of the address map swapped in last.
pub fn set_map_version(version: u64) {
    metrics::gauge!(names::MAP_VERSION, "shard" => PROCESS_SHARD).set(version as f64);
}

/// Publish how many configured functions are compiled.
pub fn set_functions_compiled(compiled: usize, configured: usize) {
    metrics::gauge!(names::FN_COMPILED, "shard" => PROCESS_SHARD).set(compiled as f64);
    metrics::gauge!(names::FN_CONFIGURED, "shard" => PROCESS_SHARD).set(configured as f64);
}

/// Count one admin HTTP request.
pub fn record_admin_request(route: &'static str, status: u16) {
    let mut code = String::with_capacity(3);
    let _ = write!(code, "{status}");
    metrics::counter!(names::ADMIN_REQUESTS, "shard" => PROCESS_SHARD, "route" => route, "status" => code)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_follow_prometheus_conventions() {
        for (name, kind, help) in CATALOGUE {
            assert!(
                name.starts_with("shardgate_") || name.starts_with("process_"),
                "{name}"
            );
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert_eq!(*kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert!(!help.is_empty());
        }
        let mut names: Vec<_> = CATALOGUE.iter().map(|c| c.0).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate metric name");
    }

    #[test]
    fn renders_process_series_and_histograms() {
        let (registry, recorder) = Registry::local(true);
        metrics::with_local_recorder(&recorder, register_process_series);
        let h = Arc::new(SharedHistogram::default());
        registry.add_histogram(
            names::REQUEST_DURATION,
            &[("shard", "0"), ("protocol", "dns-udp")],
            h,
        );
        let text = registry.render();
        assert!(
            text.contains("# TYPE process_resident_memory_bytes gauge"),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes{shard=\"process\"} "));
        assert!(text.contains(
            "shardgate_config_reloads_total{shard=\"process\",trigger=\"sighup\",result=\"error\"} 0"
        ));
        assert!(text.contains("# TYPE shardgate_request_duration_seconds histogram"));
        assert!(text.contains(
            "shardgate_request_duration_seconds_count{shard=\"0\",protocol=\"dns-udp\"} 0"
        ));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
