//! Tests of the hand-off policy: the per-request decision table, and the
//! admission on synthetic arrival sequences served by a simulated shard
//! (a single server taking receive batches of up to 16 datagrams, serving
//! local requests for their service time and handed-off ones for the cost
//! of a send). No sockets, no clock: simulated time only.

use super::*;
use proptest::prelude::*;
use std::net::SocketAddr;

use crate::handoff::frame::Key;

const T: Thresholds = Thresholds {
    max_wait_us: 2_000,
    target_busy_percent: 97,
    alternate_saturated_percent: 95,
};

const UP: Alternate = Alternate::Up {
    busy_percent: Some(40),
};

fn req(handed_off: bool, cold: bool) -> Request {
    Request {
        handed_off,
        cold,
        waited_ns: 0,
    }
}

#[test]
fn decision_table() {
    let d = |cold, overloaded, alt, more| decide(&req(false, cold), overloaded, alt, more);
    use Decision::*;
    assert_eq!(d(false, false, UP, true), Local(LocalReason::Normal));
    assert_eq!(d(false, true, UP, true), Handoff(HandoffReason::Overloaded));
    assert_eq!(d(true, true, UP, true), Handoff(HandoffReason::Overloaded));
    assert_eq!(d(true, false, UP, true), Handoff(HandoffReason::Cold));
    assert_eq!(
        d(true, false, Alternate::Down, true),
        Local(LocalReason::AlternateDown)
    );
    assert_eq!(d(false, true, Alternate::Down, true), RejectOverloaded);
    // A saturated alternate with no room left: as if it were down.
    assert_eq!(d(false, true, UP, false), RejectOverloaded);
    assert_eq!(d(true, false, UP, false), Local(LocalReason::AlternateDown));
}

proptest! {
    /// A handed-off request is always served here, whatever the state.
    #[test]
    fn handed_off_is_never_handed_on(cold: bool, overloaded: bool, up: bool, more: bool) {
        let alt = if up { UP } else { Alternate::Down };
        prop_assert_eq!(
            decide(&req(true, cold), overloaded, alt, more),
            Decision::Local(LocalReason::AlreadyHandedOff)
        );
    }

    /// With the alternate down nothing is handed off.
    #[test]
    fn nothing_goes_to_a_dead_alternate(cold: bool, overloaded: bool, hop: bool, more: bool) {
        let d = decide(&req(hop, cold), overloaded, Alternate::Down, more);
        prop_assert!(!matches!(d, Decision::Handoff(_)));
    }

    /// The admission never hands off while the shard is idle, whatever the
    /// measured costs were before the idle gap.
    #[test]
    fn an_idle_shard_keeps_its_requests(costs in proptest::collection::vec(1u64..5_000_000, 1..50)) {
        let mut a = Admission::new(&T);
        let mut now = 0;
        for c in costs {
            let d = a.decide(now, &req(false, false), UP);
            if d == Decision::Local(LocalReason::Normal) {
                a.served(c);
            }
            now += c;
        }
        // Idle for longer than the queue can hold at the drain rate.
        now += 10 * a.level_ns() + 1;
        prop_assert_eq!(a.decide(now, &req(false, false), UP), Decision::Local(LocalReason::Normal));
    }
}

/// A tiny deterministic generator (xorshift64*): arrival jitter and
/// service-time spread, identical on every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Simulated shard.
struct Sim {
    /// Mean local service time, ns.
    service_ns: f64,
    /// CPU a hand-off (seal + send) or a reject costs, ns.
    handoff_ns: u64,
    /// Per receive batch: the recvmmsg/sendmmsg time around the requests.
    batch_overhead_ns: u64,
    batch: usize,
}

/// What happened to each request.
#[derive(Default)]
struct Outcomes {
    /// (arrival ns, decision, queueing delay ns before the decision)
    each: Vec<(u64, Decision, u64)>,
}

impl Outcomes {
    /// Share of requests handed off for overload among those arrived in
    /// `[from, to)`.
    fn share(&self, from: u64, to: u64) -> f64 {
        let inside: Vec<_> = self
            .each
            .iter()
            .filter(|e| e.0 >= from && e.0 < to)
            .collect();
        let handed = inside
            .iter()
            .filter(|e| e.1 == Decision::Handoff(HandoffReason::Overloaded))
            .count();
        handed as f64 / inside.len().max(1) as f64
    }

    fn count(&self, from: u64, to: u64, d: Decision) -> usize {
        self.each
            .iter()
            .filter(|e| e.0 >= from && e.0 < to && e.1 == d)
            .count()
    }

    /// Largest queueing delay of a locally served request arrived in
    /// `[from, to)`, ns.
    fn max_local_delay(&self, from: u64, to: u64) -> u64 {
        self.each
            .iter()
            .filter(|e| e.0 >= from && e.0 < to && matches!(e.1, Decision::Local(_)))
            .map(|e| e.2)
            .max()
            .unwrap_or(0)
    }
}

impl Sim {
    fn heavy() -> Sim {
        Sim {
            service_ns: 313_000.0,
            handoff_ns: 3_000,
            batch_overhead_ns: 4_000,
            batch: 16,
        }
    }

    /// Arrival times (ns) for `rate(t)` requests per ns, jittered ±50%.
    fn arrivals(&self, until_ns: u64, rate: impl Fn(u64) -> f64, rng: &mut Rng) -> Vec<u64> {
        let mut t = 0f64;
        let mut out = Vec::new();
        while (t as u64) < until_ns {
            let r = rate(t as u64);
            t += (0.5 + rng.unit()) / r;
            out.push(t as u64);
        }
        out
    }

    /// Serve `arrivals` with `adm`; `alt(now)` is the alternate's state,
    /// `cold(now)` whether the function is cold.
    fn run(
        &self,
        adm: &mut Admission,
        arrivals: &[u64],
        rng: &mut Rng,
        mut alt: impl FnMut(u64) -> Alternate,
        mut cold: impl FnMut(u64, Decision) -> bool,
    ) -> Outcomes {
        let mut out = Outcomes::default();
        let mut now = 0u64;
        let mut next = 0usize;
        while next < arrivals.len() {
            if arrivals[next] > now {
                now = arrivals[next];
            }
            let end = arrivals[next..]
                .iter()
                .take(self.batch)
                .take_while(|&&a| a <= now)
                .count();
            for &arrived in &arrivals[next..next + end] {
                // The heartbeat's latest report (idempotent).
                let a = alt(now);
                adm.alternate_report(a);
                let is_cold = cold(now, Decision::Local(LocalReason::Normal));
                let r = Request {
                    waited_ns: now - arrived,
                    ..req(false, is_cold)
                };
                let d = adm.decide(now, &r, a);
                cold(now, d);
                match d {
                    Decision::Local(_) => {
                        let cost = (self.service_ns * (0.8 + 0.4 * rng.unit())) as u64;
                        now += cost;
                        adm.served(cost);
                    }
                    Decision::Handoff(_) | Decision::RejectOverloaded => {
                        now += self.handoff_ns;
                        adm.charge(self.handoff_ns);
                    }
                }
                out.each.push((arrived, d, now.saturating_sub(arrived)));
            }
            now += self.batch_overhead_ns;
            adm.charge(self.batch_overhead_ns);
            next += end;
        }
        out
    }
}

/// The most a locally served request may wait before it starts: up to
/// `STALE_FACTOR` budgets in the socket (older ones are handed off), then at
/// most one budget of committed work plus one request's estimate error.
fn delay_bound(sim: &Sim) -> u64 {
    (STALE_FACTOR + 1) * T.max_wait_us * 1000 + sim.service_ns as u64
}

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

#[test]
fn share_settles_at_the_excess_for_every_load_factor() {
    let sim = Sim::heavy();
    for f in [1.2, 1.5, 1.8, 2.5] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let rate = f / sim.service_ns;
        let arrivals = sim.arrivals(4 * S, |_| rate, &mut rng);
        let mut adm = Admission::new(&T);
        let out = sim.run(&mut adm, &arrivals, &mut rng, |_| UP, |_, _| false);
        let ideal = 1.0 - 1.0 / f;
        // Settled: from the second second on.
        let share = out.share(S, 4 * S);
        eprintln!(
            "f = {f}: handed-off share {share:.3} (ideal {ideal:.3}), longest local wait {} µs",
            out.max_local_delay(S, 4 * S) / 1000
        );
        assert!(
            (share - ideal).abs() <= 0.05,
            "f = {f}: handed-off share {share:.3}, ideal {ideal:.3}"
        );
        // No oscillation: every 100 ms window is near the ideal too, never
        // all-local nor all-handed-off.
        for w in (S..4 * S).step_by(100 * MS as usize) {
            let s = out.share(w, w + 100 * MS);
            assert!(
                (s - ideal).abs() <= 0.10,
                "f = {f}: window at {} ms has share {s:.3} (ideal {ideal:.3})",
                w / MS
            );
        }
        // Work-conserving: the local requests keep the shard near its
        // target, and none waits much past the latency budget.
        let local = out.count(S, 4 * S, Decision::Local(LocalReason::Normal)) as f64;
        let busy = local * sim.service_ns / (3 * S) as f64;
        assert!(
            busy >= 0.93,
            "f = {f}: local work only {busy:.3} of the core"
        );
        let delay = out.max_local_delay(S, 4 * S);
        assert!(
            delay <= delay_bound(&sim),
            "f = {f}: a local request waited {} µs",
            delay / 1000
        );
        // The published share agrees with what happened.
        let published = f64::from(adm.share_ppm()) / 1e6;
        assert!(
            (published - ideal).abs() <= 0.08,
            "f = {f}: published share {published:.3}"
        );
    }
}

#[test]
fn below_capacity_nothing_is_handed_off() {
    let sim = Sim::heavy();
    for f in [0.3, 0.6, 0.85] {
        let mut rng = Rng(7);
        let rate = f / sim.service_ns;
        let arrivals = sim.arrivals(3 * S, |_| rate, &mut rng);
        let mut adm = Admission::new(&T);
        let out = sim.run(&mut adm, &arrivals, &mut rng, |_| UP, |_, _| false);
        let share = out.share(0, 3 * S);
        assert!(
            share <= 0.01,
            "f = {f}: {share:.4} handed off below capacity"
        );
    }
}

#[test]
fn a_burst_is_absorbed_and_the_share_returns_to_zero() {
    let sim = Sim::heavy();
    let base = 0.5 / sim.service_ns;
    let (burst_from, burst_to) = (S, S + 50 * MS);
    let rate = |t: u64| {
        if (burst_from..burst_to).contains(&t) {
            10.0 * base * 2.0 // 10x capacity
        } else {
            base
        }
    };
    let mut rng = Rng(42);
    let arrivals = sim.arrivals(3 * S, rate, &mut rng);
    let mut adm = Admission::new(&T);
    let out = sim.run(&mut adm, &arrivals, &mut rng, |_| UP, |_, _| false);
    assert_eq!(
        out.share(0, burst_from),
        0.0,
        "nothing handed off before the burst"
    );
    let during = out.share(burst_from, burst_to);
    assert!(during >= 0.8, "the burst is handed off: {during:.3}");
    // Every request got an answer or a hand-off: nothing rejected.
    assert_eq!(out.count(0, 3 * S, Decision::RejectOverloaded), 0);
    // Local requests of the burst stayed within the latency budget.
    let delay = out.max_local_delay(burst_from, burst_to + 100 * MS);
    assert!(
        delay <= delay_bound(&sim),
        "a local request waited {} µs in the burst",
        delay / 1000
    );
    // Within a second of the burst's end, the share is back to 0.
    assert_eq!(out.share(burst_to + S, 3 * S), 0.0);
    assert_eq!(
        out.count(
            burst_to + S,
            3 * S,
            Decision::Handoff(HandoffReason::Overloaded)
        ),
        0
    );
}

#[test]
fn a_cold_function_is_handed_off_while_it_warms_then_served_here() {
    let sim = Sim::heavy();
    let mut rng = Rng(3);
    let rate = 0.5 / sim.service_ns;
    let arrivals = sim.arrivals(S, |_| rate, &mut rng);
    let mut adm = Admission::new(&T);
    // The gate starts a warm-up on the first cold hand-off; it takes 30 ms.
    let mut warm_at: Option<u64> = None;
    let out = sim.run(
        &mut adm,
        &arrivals,
        &mut rng,
        |_| UP,
        |now, d| {
            if d == Decision::Handoff(HandoffReason::Cold) && warm_at.is_none() {
                warm_at = Some(now + 30 * MS);
            }
            warm_at.is_none_or(|w| now < w)
        },
    );
    let warm = warm_at.expect("a warm-up was started");
    let cold = out.count(0, S, Decision::Handoff(HandoffReason::Cold));
    assert!(cold >= 1, "cold requests are handed off");
    assert_eq!(
        out.count(warm + MS, S, Decision::Handoff(HandoffReason::Cold)),
        0,
        "warm-up completed: nothing cold after it"
    );
    let after = out.count(warm + MS, S, Decision::Local(LocalReason::Normal));
    assert!(after > 100, "served here once warm: {after}");
    // With the alternate down, a cold request is served here instead.
    let mut adm = Admission::new(&T);
    assert_eq!(
        adm.decide(0, &req(false, true), Alternate::Down),
        Decision::Local(LocalReason::AlternateDown)
    );
}

#[test]
fn a_saturated_alternate_stops_the_share_growing() {
    let sim = Sim::heavy();
    let mut rng = Rng(11);
    // 1.5x for 1.5 s (share ~1/3), then 2.5x with the alternate saturated.
    let rise = 1500 * MS;
    let rate = |t: u64| if t < rise { 1.5 } else { 2.5 } / sim.service_ns;
    let arrivals = sim.arrivals(4 * S, rate, &mut rng);
    let mut adm = Admission::new(&T);
    let out = sim.run(
        &mut adm,
        &arrivals,
        &mut rng,
        |now| {
            let busy = if now < rise { 60 } else { 99 };
            Alternate::Up {
                busy_percent: Some(busy),
            }
        },
        |_, _| false,
    );
    let before = out.share(S, rise);
    assert!(
        (before - (1.0 - 1.0 / 1.5)).abs() <= 0.05,
        "before: {before:.3}"
    );
    let after = out.share(rise + 500 * MS, 4 * S);
    assert!(
        after <= before + 0.02,
        "share grew from {before:.3} to {after:.3} while the alternate was saturated"
    );
    // The excess is refused at once rather than queued: local work stays
    // at capacity and local requests within the budget.
    let rejected = out.count(rise + 500 * MS, 4 * S, Decision::RejectOverloaded);
    assert!(rejected > 0, "excess refused");
    let delay = out.max_local_delay(rise + 500 * MS, 4 * S);
    assert!(
        delay <= delay_bound(&sim),
        "local requests waited {} µs",
        delay / 1000
    );
    assert!(adm.alternate_saturated());
    // When the alternate recovers, the cap is lifted.
    adm.alternate_report(Alternate::Up {
        busy_percent: Some(30),
    });
    assert!(!adm.alternate_saturated());
}

#[test]
fn an_alternate_that_reports_nothing_is_never_saturated() {
    let mut adm = Admission::new(&T);
    adm.alternate_report(Alternate::Up { busy_percent: None });
    assert!(!adm.alternate_saturated());
    adm.alternate_report(Alternate::Up {
        busy_percent: Some(95),
    });
    assert!(adm.alternate_saturated());
}

#[test]
fn hop_marker_is_read_from_the_query_string_only() {
    assert_eq!(
        hop_marker(b"POST /fn/echo?handoff=1 HTTP/1.1\r\nHost: x\r\n"),
        Some(&b"1"[..])
    );
    assert_eq!(
        hop_marker(b"POST /fn/echo?a=b&handoff=12.ab HTTP/1.1\r\n"),
        Some(&b"12.ab"[..])
    );
    assert_eq!(
        hop_marker(b"POST /fn/echo HTTP/1.1\r\nX: ?handoff=1\r\n"),
        None
    );
    assert_eq!(hop_marker(b""), None);
}

#[test]
fn only_the_peer_can_mint_a_hop_token_and_only_for_a_while() {
    let shared = Key::new(&[7u8; 32]).unwrap();
    let a: SocketAddr = "127.0.0.2:8055".parse().unwrap();
    let b: SocketAddr = "127.0.0.3:8055".parse().unwrap();
    // A mints with its sending key; B checks with A's sending key.
    let t = hop_token(&shared.for_sender(a), "echo", 1_000);
    let peer_key = shared.for_sender(a);
    assert!(hop_token_is_valid(&peer_key, "echo", t.as_bytes(), 1_000));
    assert!(hop_token_is_valid(
        &peer_key,
        "echo",
        t.as_bytes(),
        1_000 + HOP_TOKEN_TTL_S
    ));
    // Expired, for another function, typed by a client, or B's own.
    assert!(!hop_token_is_valid(&peer_key, "echo", t.as_bytes(), 1_031));
    assert!(!hop_token_is_valid(&peer_key, "other", t.as_bytes(), 1_000));
    assert!(!hop_token_is_valid(&peer_key, "echo", b"1", 1_000));
    let own = hop_token(&shared.for_sender(b), "echo", 1_000);
    assert!(!hop_token_is_valid(
        &peer_key,
        "echo",
        own.as_bytes(),
        1_000
    ));
    // A forged timestamp breaks the MAC; junk never panics.
    let forged = t.replacen("1000.", "1001.", 1);
    assert!(!hop_token_is_valid(
        &peer_key,
        "echo",
        forged.as_bytes(),
        1_000
    ));
    for junk in [
        &b"."[..],
        b"1.",
        b".ab",
        b"99999999999999999999999.00",
        b"1.zz",
    ] {
        assert!(!hop_token_is_valid(&peer_key, "echo", junk, 1_000));
    }
}
