//! Latency histograms: a shard-local recorder (plain `Cell`s, no atomics, no
//! locks) that a shard updates per request, a shared snapshot the shard
//! publishes into on a timer, and the Prometheus text rendering of those
//! snapshots as `_bucket{le=..}` / `_sum` / `_count` series.
//!
//! The exporter's own histogram keeps every raw sample until upkeep (40 ns a
//! record and unbounded memory at these rates), so per-request latencies never
//! go through it: a record here is a binary search over [`BOUNDS_NS`] and two
//! `Cell` adds.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets (`le`), in nanoseconds. The last bucket
/// (`+Inf`) is implicit. Chosen for a service whose typical answer takes a few
/// microseconds and whose functions have millisecond deadlines.
pub const BOUNDS_NS: [u64; 17] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Number of buckets including `+Inf`.
pub const BUCKETS: usize = BOUNDS_NS.len() + 1;

/// The `le` label values, in seconds, as Prometheus expects them.
fn le_label(i: usize) -> String {
    match BOUNDS_NS.get(i) {
        Some(ns) => format_seconds(*ns),
        None => "+Inf".to_owned(),
    }
}

/// Nanoseconds as a decimal number of seconds without float noise
/// (`25000` -> `0.000025`).
fn format_seconds(ns: u64) -> String {
    let whole = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Shard-local latency histogram. Not `Sync`: one per shard and protocol.
#[derive(Debug, Default)]
pub struct LocalHistogram {
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    buckets: [Cell<u64>; BUCKETS],
    sum_ns: Cell<u64>,
}

impl LocalHistogram {
    /// Record one observation of `ns` nanoseconds.
    #[inline]
    pub fn record_ns(&self, ns: u64) {
        self.record_n(ns, 1);
    }

    /// Record `n` observations of `ns` nanoseconds each.
    #[inline]
    pub fn record_n(&self, ns: u64, n: u64) {
        let i = BOUNDS_NS.partition_point(|&bound| bound < ns);
        let b = &self.buckets[i];
        b.set(b.get().wrapping_add(n));
        self.sum_ns
            .set(self.sum_ns.get().wrapping_add(ns.wrapping_mul(n)));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(Cell::get).sum()
    }

    /// Sum of observations, nanoseconds.
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns.get()
    }

    /// Copy the current counts into `shared` (the shard's publish step).
    pub fn publish(&self, shared: &SharedHistogram) {
        for (local, out) in self.buckets.iter().zip(shared.buckets.iter()) {
            out.store(local.get(), Ordering::Relaxed);
        }
        shared.sum_ns.store(self.sum_ns.get(), Ordering::Relaxed);
    }
}

/// A published snapshot of one [`LocalHistogram`], written by its shard's
/// publish task and read by the admin thread when it renders `/metrics`.
#[derive(Debug, Default)]
pub struct SharedHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl SharedHistogram {
    /// Cumulative bucket counts (`le` semantics), the `+Inf` one last, and the
    /// sum in nanoseconds. `_count` is the last cumulative value, so the three
    /// always agree even when read while the shard publishes.
    pub fn cumulative(&self) -> ([u64; BUCKETS], u64) {
        let mut out = [0u64; BUCKETS];
        let mut acc = 0u64;
        for (slot, b) in out.iter_mut().zip(self.buckets.iter()) {
            acc = acc.wrapping_add(b.load(Ordering::Relaxed));
            *slot = acc;
        }
        (out, self.sum_ns.load(Ordering::Relaxed))
    }
}

/// One labelled series of a histogram family: its labels (already escaped,
/// e.g. `shard="0",protocol="dns-udp"`) and its snapshot.
pub struct Series<'a> {
    pub labels: &'a str,
    pub histogram: &'a SharedHistogram,
}

/// Append one histogram family in the Prometheus text format.
pub fn render_family(out: &mut String, name: &str, help: &str, series: &[Series<'_>]) {
    if series.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for s in series {
        let (cumulative, sum_ns) = s.histogram.cumulative();
        for (i, value) in cumulative.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{},le=\"{}\"}} {value}",
                s.labels,
                le_label(i)
            );
        }
        let _ = writeln!(out, "{name}_sum{{{}}} {}", s.labels, sum_ns as f64 / 1e9);
        let _ = writeln!(
            out,
            "{name}_count{{{}}} {}",
            s.labels,
            cumulative[BUCKETS - 1]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_labels_are_exact_decimal_seconds() {
        assert_eq!(le_label(0), "0.000005");
        assert_eq!(le_label(2), "0.000025");
        assert_eq!(le_label(7), "0.001");
        assert_eq!(le_label(8), "0.0025");
        assert_eq!(le_label(BOUNDS_NS.len() - 1), "1");
        assert_eq!(le_label(BOUNDS_NS.len()), "+Inf");
    }

    #[test]
    fn observations_land_in_le_buckets() {
        let h = LocalHistogram::default();
        h.record_ns(0); // le 5us
        h.record_ns(5_000); // exactly on a bound: that bucket
        h.record_ns(5_001); // next one
        h.record_ns(2_000_000_000); // beyond the last bound: +Inf
        let shared = SharedHistogram::default();
        h.publish(&shared);
        let (cum, sum) = shared.cumulative();
        assert_eq!(cum[0], 2);
        assert_eq!(cum[1], 3);
        assert_eq!(cum[BUCKETS - 2], 3);
        assert_eq!(cum[BUCKETS - 1], 4);
        assert_eq!(sum, 2_000_010_001);
        assert_eq!(h.count(), 4);
        h.record_n(7_000, 10);
        h.publish(&shared);
        let (cum, sum) = shared.cumulative();
        assert_eq!(cum[1], 13);
        assert_eq!(cum[BUCKETS - 1], 14);
        assert_eq!(sum, 2_000_080_001);
    }

    #[test]
    fn renders_buckets_sum_and_count() {
        let h = LocalHistogram::default();
        for ns in [1_000, 30_000, 30_000] {
            h.record_ns(ns);
        }
        let shared = SharedHistogram::default();
        h.publish(&shared);
        let mut out = String::new();
        render_family(
            &mut out,
            "x_seconds",
            "test",
            &[Series {
                labels: "shard=\"0\"",
                histogram: &shared,
            }],
        );
        assert!(out.starts_with("# HELP x_seconds test\n# TYPE x_seconds histogram\n"));
        assert!(out.contains("x_seconds_bucket{shard=\"0\",le=\"0.000005\"} 1\n"));
        assert!(out.contains("x_seconds_bucket{shard=\"0\",le=\"0.000025\"} 1\n"));
        assert!(out.contains("x_seconds_bucket{shard=\"0\",le=\"0.00005\"} 3\n"));
        assert!(out.contains("x_seconds_bucket{shard=\"0\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_seconds_sum{shard=\"0\"} 0.000061\n"));
        assert!(out.contains("x_seconds_count{shard=\"0\"} 3\n"));
    }
}
