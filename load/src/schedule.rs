//! Open-loop send schedule: request `k` of a thread is intended to leave at
//! `start + k / rate`, whatever happened to earlier requests. Latency is
//! measured from that intended time (as wrk2 does), so a stalled target or a
//! client that falls behind shows up in the latencies instead of silently
//! lowering the offered load (no coordinated omission). Pure: time is a
//! parameter, in nanoseconds on the caller's clock.

/// A constant-rate schedule over `[start_ns, end_ns)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    start_ns: u64,
    end_ns: u64,
    period_ns: f64,
    total: u64,
}

impl Schedule {
    /// `rate_per_s` requests per second from `start_ns` until `end_ns`.
    /// A rate of zero or less schedules nothing.
    pub fn new(start_ns: u64, end_ns: u64, rate_per_s: f64) -> Schedule {
        if rate_per_s <= 0.0 || !rate_per_s.is_finite() || end_ns <= start_ns {
            return Schedule {
                start_ns,
                end_ns,
                period_ns: f64::INFINITY,
                total: 0,
            };
        }
        let period_ns = 1e9 / rate_per_s;
        let span = (end_ns - start_ns) as f64;
        let total = (span / period_ns).ceil() as u64;
        Schedule {
            start_ns,
            end_ns,
            period_ns,
            total,
        }
    }

    /// The intended send time of request `k`.
    pub fn intended(&self, k: u64) -> u64 {
        self.start_ns + (k as f64 * self.period_ns) as u64
    }

    /// How many requests are due by `now_ns` (intended time ≤ now), never
    /// more than the schedule holds.
    pub fn due(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns || self.total == 0 {
            return 0;
        }
        let k = ((now_ns - self.start_ns) as f64 / self.period_ns).floor() as u64 + 1;
        k.min(self.total)
    }

    /// Requests in the whole schedule.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn end_ns(&self) -> u64 {
        self.end_ns
    }
}

/// Split a total rate over `threads` threads; thread `i` starts `i / rate`
/// later than thread 0 so the threads interleave instead of sending in
/// lock-step bursts. Returns (rate of the thread, start offset ns).
pub fn split_rate(total_rate: f64, threads: usize, i: usize) -> (f64, u64) {
    let threads = threads.max(1);
    let per = total_rate / threads as f64;
    let offset = if total_rate > 0.0 {
        (i as f64 * 1e9 / total_rate) as u64
    } else {
        0
    };
    (per, offset)
}

/// Requests per wake-up the automatic tick aims for, by default.
pub const AUTO_TICK_BATCH: u32 = 8;
/// Bounds of the automatic tick, ns.
pub const AUTO_TICK_MIN_NS: u64 = 100_000;
pub const AUTO_TICK_MAX_NS: u64 = 1_000_000;

/// The automatic open-loop tick for a thread sending `rate_per_s`: long
/// enough that a wake-up sends about `batch` requests (wake-ups dominate the
/// client's CPU at moderate rates), between 100 us and 1 ms.
pub fn auto_tick_ns(rate_per_s: f64, batch: u32) -> u64 {
    if rate_per_s.is_nan() || rate_per_s <= 0.0 {
        return AUTO_TICK_MAX_NS;
    }
    let ns = (f64::from(batch) * 1e9 / rate_per_s).min(AUTO_TICK_MAX_NS as f64) as u64;
    ns.clamp(AUTO_TICK_MIN_NS, AUTO_TICK_MAX_NS)
}

/// Split `total` (outstanding requests or connections) over `parts`: the
/// first `total % parts` get one more.
pub fn split_count(total: usize, parts: usize, i: usize) -> usize {
    let parts = parts.max(1);
    total / parts + usize::from(i < total % parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_counts_follow_the_rate() {
        let s = Schedule::new(1_000, 1_000 + 1_000_000_000, 1000.0);
        assert_eq!(s.total(), 1000);
        assert_eq!(s.due(999), 0);
        assert_eq!(s.due(1_000), 1);
        assert_eq!(s.due(1_000 + 999_999), 1);
        assert_eq!(s.due(1_000 + 1_000_000), 2);
        assert_eq!(s.due(1_000 + 500_000_000), 501);
        assert_eq!(s.due(u64::MAX / 2), 1000, "capped at the end");
        assert_eq!(s.intended(0), 1_000);
        assert_eq!(s.intended(10), 1_000 + 10_000_000);
    }

    #[test]
    fn intended_times_do_not_depend_on_when_we_ask() {
        // A stalled sender asking late still gets the original times.
        let s = Schedule::new(0, 1_000_000_000, 100.0);
        let late = 300_000_000;
        let due = s.due(late);
        assert_eq!(due, 31);
        for k in 0..due {
            assert_eq!(s.intended(k), k * 10_000_000);
            assert!(s.intended(k) <= late);
        }
    }

    #[test]
    fn fractional_and_degenerate_rates() {
        let s = Schedule::new(0, 10_000_000_000, 0.5);
        assert_eq!(s.total(), 5);
        assert_eq!(s.due(2_000_000_000), 2);
        assert_eq!(Schedule::new(0, 10, 0.0).due(100), 0);
        assert_eq!(Schedule::new(10, 10, 5.0).total(), 0);
    }

    #[test]
    fn auto_tick_batches_the_requested_count() {
        assert_eq!(auto_tick_ns(20_000.0, 8), 400_000);
        assert_eq!(auto_tick_ns(50_000.0, 8), 160_000);
        assert_eq!(auto_tick_ns(50_000.0, 16), 320_000);
        assert_eq!(auto_tick_ns(1_000_000.0, 8), AUTO_TICK_MIN_NS);
        assert_eq!(auto_tick_ns(100.0, 8), AUTO_TICK_MAX_NS);
        assert_eq!(auto_tick_ns(0.0, 8), AUTO_TICK_MAX_NS);
    }

    #[test]
    fn splits() {
        assert_eq!(split_rate(3000.0, 3, 2), (1000.0, 666_666));
        let parts: Vec<usize> = (0..3).map(|i| split_count(10, 3, i)).collect();
        assert_eq!(parts, vec![4, 3, 3]);
        assert_eq!(parts.iter().sum::<usize>(), 10);
    }
}
