//! Adaptive receive coalescing: how long a batched UDP loop waits before its
//! next receive so that batches grow, decided from the loop's own load. Pure
//! policy (no clock, no socket): the loop reports each round's idle and busy
//! time and gets the wait back, so it is tested on sequences of rounds.
//!
//! **Load** is the share of time the loop spends serving, a time-weighted
//! moving average of `busy / (busy + idle)` over about [`LOAD_WINDOW_NS`].
//! Idle is time spent waiting for datagrams or sleeping in a coalescing
//! wait; busy is receiving (without blocking), answering and sending.
//!
//! **Wait**: none below [`RAMP_START`] load (the shard has headroom, so a
//! wait would only add latency); from there it grows linearly to the
//! ceiling (`dns.udp_coalesce_us`) at [`RAMP_FULL`] load, where batching is
//! what keeps the shard ahead of its arrivals. Never longer than the
//! ceiling, never after a full batch (more is already waiting), never after
//! a batch smaller than `dns.udp_coalesce_min_batch` (the shard is not
//! queueing), and never right after a wait (that batch's size was made by
//! the wait, see `super::udp::LoopSettings`).
//!
//! **Why it is stable.** The wait is a non-decreasing function of the load,
//! and the load a non-increasing function of the wait (a longer wait serves
//! the same arrivals in fewer, larger batches, so less busy time). That is
//! negative feedback, and two things keep it from oscillating: the load is
//! averaged over a window (5 ms) tens of rounds long, so one round moves the
//! wait by a small step; and the wait ramps over a band of loads instead of
//! switching at one threshold, so there is one operating point where the two
//! curves cross rather than an on/off limit cycle around a threshold. A
//! saturated shard (load near 1) settles at the ceiling; an idle or
//! moderately loaded one never waits.

use std::time::Duration;

/// Load below which the loop never waits.
pub const RAMP_START: f64 = 0.6;
/// Load from which the loop waits the whole ceiling.
pub const RAMP_FULL: f64 = 0.9;
/// Time over which the load is averaged (the moving average's time constant).
pub const LOAD_WINDOW_NS: f64 = 5_000_000.0;

/// The adaptive coalescing policy of one UDP loop.
#[derive(Debug, Clone, PartialEq)]
pub struct Coalescer {
    ceiling_ns: u64,
    min_batch: usize,
    batch: usize,
    load: f64,
}

impl Coalescer {
    /// Waits of at most `ceiling` (zero: never wait) after batches of at
    /// least `min_batch` of `batch` datagrams.
    pub fn new(ceiling: Duration, min_batch: usize, batch: usize) -> Coalescer {
        Coalescer {
            ceiling_ns: ceiling.as_nanos().min(u128::from(u64::MAX)) as u64,
            min_batch: min_batch.max(1),
            batch: batch.max(1),
            load: 0.0,
        }
    }

    /// The load estimate, 0..=1.
    pub fn load(&self) -> f64 {
        self.load
    }

    /// Whether this policy ever waits.
    pub fn enabled(&self) -> bool {
        self.ceiling_ns > 0
    }

    /// One round of the loop: it was idle for `idle_ns` (waiting for a
    /// datagram or in a coalescing wait), then received `got` datagrams and
    /// served them in `busy_ns`; `after_wait` when the round followed a
    /// coalescing wait. Returns how long to wait before the next receive;
    /// zero means no coalescing wait (receive at once after a full batch,
    /// else wait for the next datagram).
    pub fn after_round(
        &mut self,
        idle_ns: u64,
        busy_ns: u64,
        got: usize,
        after_wait: bool,
    ) -> Duration {
        let span = idle_ns.saturating_add(busy_ns);
        if span > 0 {
            let sample = busy_ns as f64 / span as f64;
            let weight = (span as f64 / LOAD_WINDOW_NS).min(1.0);
            self.load += weight * (sample - self.load);
        }
        if !self.enabled() || after_wait || got >= self.batch || got < self.min_batch {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.wait_ns())
    }

    /// The wait the current load calls for, ns.
    fn wait_ns(&self) -> u64 {
        let ramp = ((self.load - RAMP_START) / (RAMP_FULL - RAMP_START)).clamp(0.0, 1.0);
        (ramp * self.ceiling_ns as f64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CEILING: Duration = Duration::from_micros(200);

    fn policy() -> Coalescer {
        Coalescer::new(CEILING, 8, 64)
    }

    /// Run rounds of `got` datagrams costing `per_datagram_ns` each, with
    /// `gap_ns` between them (plus whatever wait the policy asks for), for
    /// `total_ns` of loop time; returns the waits asked for.
    fn run(
        c: &mut Coalescer,
        got: usize,
        busy_ns: u64,
        gap_ns: u64,
        total_ns: u64,
    ) -> Vec<Duration> {
        let mut waits = Vec::new();
        let mut t = 0;
        let mut idle = gap_ns;
        let mut after_wait = false;
        while t < total_ns {
            let w = c.after_round(idle, busy_ns, got, after_wait);
            waits.push(w);
            after_wait = !w.is_zero();
            idle = gap_ns + w.as_nanos() as u64;
            t += idle + busy_ns;
        }
        waits
    }

    #[test]
    fn an_idle_or_moderately_loaded_shard_never_waits() {
        // 30% busy: batches of 8 served in 30 µs every 100 µs.
        let mut c = policy();
        let waits = run(&mut c, 8, 30_000, 70_000, 50_000_000);
        assert!(waits.iter().all(|w| w.is_zero()), "waited at 30% load");
        assert!((c.load() - 0.3).abs() < 0.02, "load {}", c.load());
        // 55%: still below the ramp.
        let mut c = policy();
        let waits = run(&mut c, 16, 55_000, 45_000, 50_000_000);
        assert!(waits.iter().all(|w| w.is_zero()), "waited at 55% load");
    }

    #[test]
    fn a_saturated_shard_waits_the_ceiling_and_never_more() {
        let mut c = policy();
        // Busy 95% of the time, batches not full.
        let waits = run(&mut c, 40, 95_000, 5_000, 50_000_000);
        let max = waits.iter().max().unwrap();
        assert!(*max <= CEILING, "waited {max:?} > ceiling");
        assert!(c.load() > RAMP_FULL - 0.3, "load {}", c.load());
        assert!(waits.iter().filter(|w| !w.is_zero()).count() > waits.len() / 4);
    }

    #[test]
    fn the_wait_grows_with_load_between_the_ramp_ends() {
        let at = |load: f64| {
            let mut c = policy();
            c.load = load;
            c.wait_ns()
        };
        assert_eq!(at(0.5), 0);
        assert_eq!(at(RAMP_START), 0);
        assert!(at(0.7) > 0);
        assert!(at(0.7) < at(0.8));
        assert_eq!(at(RAMP_FULL), CEILING.as_nanos() as u64);
        assert_eq!(at(1.0), CEILING.as_nanos() as u64);
    }

    #[test]
    fn full_small_and_post_wait_batches_never_wait() {
        let mut c = policy();
        c.load = 1.0;
        assert!(c.after_round(0, 1_000, 64, false).is_zero(), "full batch");
        assert!(
            c.after_round(0, 1_000, 7, false).is_zero(),
            "below min_batch"
        );
        assert!(
            c.after_round(0, 1_000, 30, true).is_zero(),
            "right after a wait"
        );
        assert!(!c.after_round(0, 1_000, 30, false).is_zero());
        let mut off = Coalescer::new(Duration::ZERO, 8, 64);
        off.load = 1.0;
        assert!(
            off.after_round(0, 1_000, 30, false).is_zero(),
            "ceiling 0 never waits"
        );
    }

    #[test]
    fn one_long_round_does_not_swing_the_load() {
        let mut c = policy();
        run(&mut c, 8, 20_000, 80_000, 20_000_000);
        let before = c.load();
        // One busy 100 µs round moves a 5 ms average by about 2%.
        c.after_round(0, 100_000, 8, false);
        assert!(c.load() - before < 0.03, "{before} -> {}", c.load());
        // A long idle spell (the shard woke after 1 s) resets it to idle.
        c.after_round(1_000_000_000, 1_000, 8, false);
        assert!(c.load() < 0.01);
    }

    /// A closed loop: datagrams arrive at a fixed rate, each round costs an
    /// overhead plus a per-datagram cost, and a round serves what arrived
    /// during the previous round and the wait after it, so longer waits make
    /// rounds bigger and cheaper per datagram. Near saturation the wait
    /// settles (it does not swing between 0 and the ceiling) and the shard
    /// keeps up.
    #[test]
    fn under_heavy_load_the_wait_settles() {
        let rate_per_ns = 0.0004; // 400k datagrams/s
        let (overhead_ns, per_ns) = (8_000.0, 1_900.0);
        let mut c = policy();
        let mut waits = Vec::new();
        let (mut got, mut idle, mut after_wait) = (1usize, 0.0f64, false);
        for _ in 0..20_000 {
            let busy = overhead_ns + per_ns * got as f64;
            let w = c.after_round(idle as u64, busy as u64, got, after_wait);
            if !after_wait {
                // Only rounds that may wait say whether the wait settled.
                waits.push(w.as_nanos() as f64);
            }
            after_wait = !w.is_zero();
            let arrived = rate_per_ns * busy;
            idle = if after_wait {
                w.as_nanos() as f64
            } else if arrived < 1.0 {
                1.0 / rate_per_ns - busy
            } else {
                0.0
            };
            got = ((rate_per_ns * (busy + idle)).round() as usize).clamp(1, 64);
        }
        let tail = &waits[waits.len() - 2_000..];
        let mean = tail.iter().sum::<f64>() / tail.len() as f64;
        let spread = tail.iter().map(|w| (w - mean).abs()).fold(0.0, f64::max);
        assert!(mean > 0.0, "never waited under heavy load");
        assert!(
            spread < 0.1 * CEILING.as_nanos() as f64,
            "waits swing by {spread} ns around {mean}"
        );
        assert!(got < 64, "the shard fell behind (full batches)");
    }
}
