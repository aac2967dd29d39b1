//! Result aggregation: per-thread counters and latency histogram (filled
//! only by the thread that owns them), merged at the end into one
//! [`RunResult`] with the summary table, the full HDR percentile
//! distribution and its JSON form. Every request sent in the measured window
//! ends as exactly one of ok, error (by kind) or lost.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in nanoseconds, 1 ns to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static histogram bounds are valid")
}

/// Counters of one load thread.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Requests sent in the measured window.
    pub sent: u64,
    /// Good replies; their latencies are in `latency`.
    pub ok: u64,
    /// No reply within the timeout.
    pub lost: u64,
    /// Replies that report a failure, by kind (a handful of kinds at most).
    pub errors: Vec<(&'static str, u64)>,
    /// Requests the schedule called for that the client never sent (it
    /// could not keep up, or no connection/id was available).
    pub unsent: u64,
    /// Events not tied to one request: late or unmatched replies, ICMP
    /// unreachable notices, connect failures ... by kind.
    pub events: Vec<(&'static str, u64)>,
    /// Latency of good replies, ns from the intended send time.
    pub latency: Histogram<u64>,
    /// Latency of error replies, ns.
    pub error_latency: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            sent: 0,
            ok: 0,
            lost: 0,
            errors: Vec::new(),
            unsent: 0,
            events: Vec::new(),
            latency: new_histogram(),
            error_latency: new_histogram(),
        }
    }
}

fn bump(list: &mut Vec<(&'static str, u64)>, kind: &'static str, n: u64) {
    match list.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, c)) => *c += n,
        None => list.push((kind, n)),
    }
}

impl Stats {
    pub fn record_ok(&mut self, latency_ns: u64) {
        self.ok += 1;
        self.latency.saturating_record(latency_ns.max(1));
    }

    pub fn record_error(&mut self, kind: &'static str, latency_ns: u64) {
        bump(&mut self.errors, kind, 1);
        self.error_latency.saturating_record(latency_ns.max(1));
    }

    pub fn event(&mut self, kind: &'static str) {
        self.events_n(kind, 1);
    }

    pub fn events_n(&mut self, kind: &'static str, n: u64) {
        if n > 0 {
            bump(&mut self.events, kind, n);
        }
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }

    /// Replies of any kind.
    pub fn answered(&self) -> u64 {
        self.ok + self.errors_total()
    }

    pub fn merge(&mut self, other: &Stats) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.lost += other.lost;
        self.unsent += other.unsent;
        for &(k, n) in &other.errors {
            bump(&mut self.errors, k, n);
        }
        for &(k, n) in &other.events {
            bump(&mut self.events, k, n);
        }
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.error_latency.add(&other.error_latency);
    }
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub stdev_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub p99_99_us: f64,
    pub max_us: f64,
}

/// One line of the percentile distribution.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DistPoint {
    /// 0.0 ..= 1.0
    pub quantile: f64,
    pub value_us: f64,
    /// Samples at or below `value_us`.
    pub total_count: u64,
}

/// Counts of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub sent: u64,
    pub answered: u64,
    pub ok: u64,
    pub errors: u64,
    pub lost: u64,
    pub unsent: u64,
    pub errors_by_kind: Vec<(String, u64)>,
    pub events: Vec<(String, u64)>,
}

/// How the run was driven (echoed into the result for the record).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub label: String,
    pub mode: String,
    pub target: String,
    /// "open" (constant rate) or "closed" (fixed outstanding requests).
    pub load: String,
    pub rate_per_s: Option<f64>,
    pub outstanding: Option<usize>,
    pub threads: usize,
    pub sources: Vec<String>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub timeout_ms: u64,
}

/// The whole result of a run, as written to the JSON file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    pub tool: String,
    pub format: u32,
    pub info: RunInfo,
    /// Measured window actually covered, seconds.
    pub elapsed_s: f64,
    pub counts: Counts,
    /// Good replies per second over the measured window.
    pub throughput_per_s: f64,
    /// Requests sent per second over the measured window.
    pub sent_per_s: f64,
    pub latency: LatencySummary,
    pub distribution: Vec<DistPoint>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary {
            count: 0,
            min_us: 0.0,
            mean_us: 0.0,
            stdev_us: 0.0,
            p50_us: 0.0,
            p90_us: 0.0,
            p99_us: 0.0,
            p99_9_us: 0.0,
            p99_99_us: 0.0,
            max_us: 0.0,
        };
    }
    let q = |x: f64| us(h.value_at_quantile(x));
    LatencySummary {
        count: h.len(),
        min_us: us(h.min()),
        mean_us: h.mean() / 1000.0,
        stdev_us: h.stdev() / 1000.0,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p99_9_us: q(0.999),
        p99_99_us: q(0.9999),
        max_us: us(h.max()),
    }
}

/// The percentile distribution HdrHistogram prints (5 ticks per half
/// distance), ending with the maximum at quantile 1.
pub fn distribution(h: &Histogram<u64>) -> Vec<DistPoint> {
    let mut total = 0u64;
    h.iter_quantiles(5)
        .map(|v| {
            total += v.count_since_last_iteration();
            DistPoint {
                quantile: v.quantile_iterated_to(),
                value_us: us(h.highest_equivalent(v.value_iterated_to())),
                total_count: total,
            }
        })
        .collect()
}

impl RunResult {
    pub fn build(info: RunInfo, stats: &Stats, elapsed_s: f64) -> RunResult {
        let mut errors_by_kind: Vec<(String, u64)> = stats
            .errors
            .iter()
            .map(|&(k, n)| (k.to_string(), n))
            .collect();
        errors_by_kind.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut events: Vec<(String, u64)> = stats
            .events
            .iter()
            .map(|&(k, n)| (k.to_string(), n))
            .collect();
        events.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let per_s = |n: u64| {
            if elapsed_s > 0.0 {
                n as f64 / elapsed_s
            } else {
                0.0
            }
        };
        RunResult {
            tool: "shardgate-load".to_string(),
            format: 1,
            info,
            elapsed_s,
            counts: Counts {
                sent: stats.sent,
                answered: stats.answered(),
                ok: stats.ok,
                errors: stats.errors_total(),
                lost: stats.lost,
                unsent: stats.unsent,
                errors_by_kind,
                events,
            },
            throughput_per_s: per_s(stats.ok),
            sent_per_s: per_s(stats.sent),
            latency: summarize(&stats.latency),
            distribution: distribution(&stats.latency),
        }
    }

    /// The summary table printed at the end of a run.
    pub fn summary_table(&self) -> String {
        let i = &self.info;
        let c = &self.counts;
        let mut s = String::new();
        let load = match (i.rate_per_s, i.outstanding) {
            (Some(r), _) => format!("open loop at {r:.0}/s"),
            (None, Some(n)) => format!("closed loop, {n} outstanding"),
            _ => i.load.clone(),
        };
        let _ = writeln!(
            s,
            "{} {} -> {}: {load}, {} thread(s), {} source(s), {:.1} s measured after {:.1} s warm-up",
            self.tool,
            i.mode,
            i.target,
            i.threads,
            i.sources.len().max(1),
            self.elapsed_s,
            i.warmup_s
        );
        let pct = |n: u64| {
            if c.sent > 0 {
                format!("{:6.2}%", n as f64 * 100.0 / c.sent as f64)
            } else {
                "      -".to_string()
            }
        };
        let _ = writeln!(s, "  {:<12} {:>12}", "sent", c.sent);
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {}  {:.1}/s",
            "answered ok",
            c.ok,
            pct(c.ok),
            self.throughput_per_s
        );
        let _ = writeln!(s, "  {:<12} {:>12} {}", "errors", c.errors, pct(c.errors));
        for (k, n) in &c.errors_by_kind {
            let _ = writeln!(s, "    {:<20} {:>12}", k, n);
        }
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {}  (no reply within {} ms)",
            "lost",
            c.lost,
            pct(c.lost),
            i.timeout_ms
        );
        if c.unsent > 0 {
            let _ = writeln!(
                s,
                "  {:<12} {:>12}          (due but never sent: the client fell behind or had no free id/connection)",
                "unsent", c.unsent
            );
        }
        for (k, n) in &c.events {
            let _ = writeln!(s, "  {:<30} {:>8}", k, n);
        }
        let l = &self.latency;
        let _ = writeln!(
            s,
            "  latency (ok, from intended send)  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {}, {} samples)",
            fmt_us(l.p50_us),
            fmt_us(l.p90_us),
            fmt_us(l.p99_us),
            fmt_us(l.p99_9_us),
            fmt_us(l.max_us),
            fmt_us(l.mean_us),
            l.count
        );
        s
    }

    /// The full percentile distribution, in HdrHistogram's text layout.
    pub fn distribution_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>12} {:>14} {:>12} {:>16}",
            "Value(ms)", "Percentile", "TotalCount", "1/(1-Percentile)"
        );
        for p in &self.distribution {
            let inv = if p.quantile < 1.0 {
                format!("{:16.2}", 1.0 / (1.0 - p.quantile))
            } else {
                format!("{:>16}", "inf")
            };
            let _ = writeln!(
                s,
                "{:12.3} {:14.12} {:12} {}",
                p.value_us / 1000.0,
                p.quantile,
                p.total_count,
                inv
            );
        }
        s
    }
}

/// `37.1us`, `2.31ms`, `1.20s`.
pub fn fmt_us(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.1}us")
    } else if v < 1_000_000.0 {
        format!("{:.2}ms", v / 1000.0)
    } else {
        format!("{:.2}s", v / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            label: "t".into(),
            mode: "dns".into(),
            target: "127.0.0.1:8053".into(),
            load: "open".into(),
            rate_per_s: Some(1000.0),
            outstanding: None,
            threads: 2,
            sources: vec!["127.0.0.2".into()],
            duration_s: 1.0,
            warmup_s: 0.0,
            timeout_ms: 500,
        }
    }

    #[test]
    fn merge_adds_counts_kinds_and_latencies() {
        let mut a = Stats {
            sent: 10,
            ..Stats::default()
        };
        let mut b = Stats {
            sent: 5,
            ..Stats::default()
        };
        for v in 1..=8 {
            a.record_ok(v * 1000);
        }
        a.record_error("SERVFAIL", 10);
        b.record_error("SERVFAIL", 10);
        b.record_error("REFUSED", 10);
        b.lost = 2;
        b.event("late reply");
        a.merge(&b);
        assert_eq!(a.sent, 15);
        assert_eq!(a.ok, 8);
        assert_eq!(a.errors, vec![("SERVFAIL", 2), ("REFUSED", 1)]);
        assert_eq!(a.answered(), 11);
        assert_eq!(a.lost, 2);
        assert_eq!(a.sent - a.answered() - a.lost, 2);
        assert_eq!(a.latency.len(), 8);
        assert_eq!(a.events, vec![("late reply", 1)]);
    }

    #[test]
    fn result_percentiles_and_json_round_trip() {
        let mut s = Stats {
            sent: 1000,
            ..Stats::default()
        };
        for i in 1..=1000u64 {
            s.record_ok(i * 1000); // 1 us .. 1000 us
        }
        let r = RunResult::build(info(), &s, 2.0);
        assert_eq!(r.throughput_per_s, 500.0);
        assert!((r.latency.p50_us - 500.0).abs() <= 1.0);
        assert!((r.latency.p99_us - 990.0).abs() <= 1.0);
        assert!((r.latency.max_us - 1000.0).abs() <= 1.0);
        let last = r.distribution.last().unwrap();
        assert_eq!(last.quantile, 1.0);
        assert_eq!(last.total_count, 1000);
        assert!(r
            .distribution
            .windows(2)
            .all(|w| w[0].quantile <= w[1].quantile && w[0].value_us <= w[1].value_us));
        let json = serde_json::to_string(&r).unwrap();
        let back: RunResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.info, r.info);
        assert_eq!(back.counts, r.counts);
        assert_eq!(back.distribution.len(), r.distribution.len());
        for (a, b) in back.distribution.iter().zip(&r.distribution) {
            assert!((a.quantile - b.quantile).abs() < 1e-12);
            assert!((a.value_us - b.value_us).abs() < 1e-9);
            assert_eq!(a.total_count, b.total_count);
        }
        let table = r.summary_table();
        assert!(table.contains("answered ok"), "{table}");
        assert!(r.distribution_table().lines().count() > 20);
    }

    #[test]
    fn empty_run_does_not_divide_by_zero() {
        let r = RunResult::build(info(), &Stats::default(), 0.0);
        assert_eq!(r.throughput_per_s, 0.0);
        assert!(r.distribution.is_empty());
        assert!(r.summary_table().contains("lost"));
    }

    #[test]
    fn fmt_units() {
        assert_eq!(fmt_us(37.14), "37.1us");
        assert_eq!(fmt_us(2310.0), "2.31ms");
        assert_eq!(fmt_us(1_200_000.0), "1.20s");
    }
}
