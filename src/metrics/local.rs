//! Shard-local instruments every service builds its meter from: request
//! timers into local histograms and response counts by HTTP status. Plain
//! `Cell`s, never shared; a shard's publish task copies them into the
//! registered handles.

use std::cell::Cell;
use std::time::Instant;

use super::histogram::{LocalHistogram, SharedHistogram};

/// Count one more on a shard-local counter (wrapping: a counter that runs
/// for centuries is still never a panic).
#[inline]
pub fn bump(c: &Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}
use super::Registry;

/// HTTP status codes counted one by one on the function surfaces; any
/// other code is counted as `other`.
pub const STATUS_CODES: [u16; 14] = [
    200, 400, 404, 405, 408, 411, 413, 414, 415, 431, 500, 501, 503, 504,
];

/// Responses by HTTP status code (a UDP invocation's frame status counts as
/// its HTTP equivalent), shard-local: one per function surface per shard.
#[derive(Debug, Default)]
pub struct StatusCounts {
    /// Parallel to [`STATUS_CODES`]; the last slot is `other`.
    counts: [Cell<u64>; STATUS_CODES.len() + 1],
}

impl StatusCounts {
    /// Count one response with HTTP status `code`.
    #[inline]
    pub fn record(&self, code: u16) {
        let i = STATUS_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(STATUS_CODES.len());
        let c = &self.counts[i];
        c.set(c.get().wrapping_add(1));
    }

    /// Responses so far, all codes.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(Cell::get).sum()
    }

    /// `(outcome label, count)` for every code seen at least once.
    pub fn seen(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| c.get() > 0)
            .map(|(i, c)| {
                let label = STATUS_CODES
                    .get(i)
                    .map_or_else(|| "other".to_owned(), |code| code.to_string());
                (label, c.get())
            })
    }
}

/// Times requests into a shard-local histogram: [`start`](Self::start)
/// before the work, [`finish`](Self::finish) after it. Two clock reads and
/// two `Cell` adds; nothing at all when metrics are disabled.
#[derive(Debug)]
pub struct RequestTimer {
    enabled: bool,
    histogram: LocalHistogram,
}

impl Default for RequestTimer {
    /// Enabled when the installed metrics registry is (see [`super::install`]).
    fn default() -> Self {
        RequestTimer::new(super::global().is_some_and(Registry::enabled))
    }
}

impl RequestTimer {
    pub fn new(enabled: bool) -> RequestTimer {
        RequestTimer {
            enabled,
            histogram: LocalHistogram::default(),
        }
    }

    /// Whether it times at all (metrics enabled).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `None` (no clock read) when disabled.
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        if self.enabled {
            Some(Instant::now())
        } else {
            None
        }
    }

    #[inline]
    pub fn finish(&self, started: Option<Instant>) {
        if let Some(t0) = started {
            let ns = t0.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
            self.histogram.record_ns(ns);
        }
    }

    /// Record an already measured latency; ignored when disabled.
    #[inline]
    pub fn record_ns(&self, ns: u64) {
        self.record_n(ns, 1);
    }

    /// Record `n` observations of `ns` each; ignored when disabled.
    #[inline]
    pub fn record_n(&self, ns: u64, n: u64) {
        if self.enabled {
            self.histogram.record_n(ns, n);
        }
    }

    /// Copy the counts into the published snapshot.
    pub fn publish(&self, shared: &SharedHistogram) {
        self.histogram.publish(shared);
    }
}

/// `(key, value)` pairs as `metrics` labels.
pub fn labels_of(pairs: &[(&'static str, String)]) -> Vec<metrics::Label> {
    pairs
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect()
}
