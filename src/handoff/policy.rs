//! The hand-off decision (sans-IO): given what a shard knows locally about
//! one request and its own load, serve it here, hand it to the paired
//! alternate, or refuse it at once.
//!
//! Overload is measured from two shard-local signals, both cheap and both
//! taken by the UDP receive loop (no clock read inside this module):
//!
//! - `waited_us`: how long this request has already waited on this shard
//!   since its receive batch was taken off the socket. Invocations (and DNS
//!   answers) run synchronously and replies leave after the whole batch, so
//!   this is the local service time of the requests ahead of it in the batch:
//!   a direct measure of queueing delay inside the shard.
//! - `backlogged`: the previous receive batch came back full, i.e. the
//!   socket still held datagrams behind it (receive backlog in the kernel,
//!   whose waiting time the shard cannot see).
//!
//! A request is overloaded when `waited_us >= max_wait_us`, or when the
//! socket is backlogged and `waited_us` has reached the loop's backlog
//! budget. The time datagrams spend in the kernel queue is invisible to
//! the shard, so that budget adapts ([`Budget`]): every full receive batch
//! cuts it by a quarter (the queue is not draining: serve fewer locally, hand
//! more off), every partial batch raises it by 1/32 of `max_wait_us` (the
//! queue drained: keep more work here), between `backlog_wait_us` and
//! `max_wait_us`. Under sustained overload it settles where the shard serves
//! as much as it can while still draining its socket.

/// Thresholds of the overload test (from `[handoff]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Queueing delay inside the shard at which a request is overloaded.
    pub max_wait_us: u64,
    /// Floor of the adaptive budget that applies while the socket is
    /// backlogged (previous batch full); see [`Budget`].
    pub backlog_wait_us: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_wait_us: 2_000,
            backlog_wait_us: 100,
        }
    }
}

/// Shard-local load signals for one request (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub waited_us: u64,
    pub backlogged: bool,
    /// The backlog budget in force ([`Budget::current`]).
    pub budget_us: u64,
}

impl Load {
    /// Whether this load is past `t`.
    pub fn overloaded(&self, t: &Thresholds) -> bool {
        self.waited_us >= t.max_wait_us || (self.backlogged && self.waited_us >= self.budget_us)
    }
}

/// The adaptive backlog budget of one receive loop (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    us: u64,
    floor: u64,
    ceil: u64,
}

impl Budget {
    /// Starts at `max_wait_us` (no backlog seen yet).
    pub fn new(t: &Thresholds) -> Budget {
        let ceil = t.max_wait_us.max(t.backlog_wait_us);
        Budget {
            us: ceil,
            floor: t.backlog_wait_us,
            ceil,
        }
    }

    pub fn current(&self) -> u64 {
        self.us
    }

    /// A receive batch was handled; `full`: it filled the batch (backlog).
    pub fn batch_done(&mut self, full: bool) {
        self.us = if full {
            (self.us - self.us / 4).max(self.floor)
        } else {
            (self.us + (self.ceil / 32).max(1)).min(self.ceil)
        };
    }
}

/// What the shard knows about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// It arrived in a hand-off frame (hop flag set): never hand it on.
    pub handed_off: bool,
    /// It names a function that is configured but not warm on this shard.
    pub cold: bool,
    pub load: Load,
}

/// Why a request is handed off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandoffReason {
    Cold,
    Overloaded,
}

/// Why a request is served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalReason {
    /// Nothing wrong: warm and not overloaded.
    Normal,
    /// It was handed to us; it is served here whatever our state.
    AlreadyHandedOff,
    /// It is cold here and would have gone to the alternate, which is
    /// down: served here (an instance is built inline). An overloaded
    /// request with the alternate down is [`Decision::RejectOverloaded`].
    AlternateDown,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Local(LocalReason),
    Handoff(HandoffReason),
    /// Overloaded and the alternate is down: answer with an overload error
    /// at once (DNS SERVFAIL, function `Unavailable`, HTTP 503) instead of
    /// queueing without bound.
    RejectOverloaded,
}

/// Decide for one request. `alternate_up` is the heartbeat's view of the
/// paired node. Overload wins over coldness as the hand-off reason (a cold
/// request on an overloaded shard is counted as overloaded).
pub fn decide(req: &Request, alternate_up: bool, t: &Thresholds) -> Decision {
    if req.handed_off {
        return Decision::Local(LocalReason::AlreadyHandedOff);
    }
    let overloaded = req.load.overloaded(t);
    match (overloaded, req.cold, alternate_up) {
        (false, false, _) => Decision::Local(LocalReason::Normal),
        (true, _, true) => Decision::Handoff(HandoffReason::Overloaded),
        (false, true, true) => Decision::Handoff(HandoffReason::Cold),
        (true, _, false) => Decision::RejectOverloaded,
        (false, true, false) => Decision::Local(LocalReason::AlternateDown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: Thresholds = Thresholds {
        max_wait_us: 1000,
        backlog_wait_us: 100,
    };

    fn req(handed_off: bool, cold: bool, waited_us: u64, backlogged: bool) -> Request {
        Request {
            handed_off,
            cold,
            load: Load {
                waited_us,
                backlogged,
                budget_us: T.backlog_wait_us,
            },
        }
    }

    #[test]
    fn budget_shrinks_on_backlog_and_recovers() {
        let mut b = Budget::new(&T);
        assert_eq!(b.current(), 1000);
        b.batch_done(true);
        assert_eq!(b.current(), 750);
        for _ in 0..50 {
            b.batch_done(true);
        }
        assert_eq!(b.current(), 100, "never below backlog_wait_us");
        b.batch_done(false);
        assert_eq!(b.current(), 131);
        for _ in 0..100 {
            b.batch_done(false);
        }
        assert_eq!(b.current(), 1000, "never above max_wait_us");
    }

    #[test]
    fn warm_and_idle_is_local() {
        assert_eq!(
            decide(&req(false, false, 0, false), true, &T),
            Decision::Local(LocalReason::Normal)
        );
    }

    #[test]
    fn cold_goes_to_a_live_alternate_and_stays_when_it_is_down() {
        assert_eq!(
            decide(&req(false, true, 0, false), true, &T),
            Decision::Handoff(HandoffReason::Cold)
        );
        assert_eq!(
            decide(&req(false, true, 0, false), false, &T),
            Decision::Local(LocalReason::AlternateDown)
        );
    }

    #[test]
    fn overload_thresholds() {
        assert_eq!(
            decide(&req(false, false, 999, false), true, &T),
            Decision::Local(LocalReason::Normal)
        );
        assert_eq!(
            decide(&req(false, false, 1000, false), true, &T),
            Decision::Handoff(HandoffReason::Overloaded)
        );
        // Backlogged: the tighter budget applies.
        assert_eq!(
            decide(&req(false, false, 99, true), true, &T),
            Decision::Local(LocalReason::Normal)
        );
        assert_eq!(
            decide(&req(false, false, 100, true), true, &T),
            Decision::Handoff(HandoffReason::Overloaded)
        );
        assert_eq!(
            decide(&req(false, true, 5000, false), true, &T),
            Decision::Handoff(HandoffReason::Overloaded)
        );
    }

    #[test]
    fn overloaded_with_alternate_down_is_rejected() {
        assert_eq!(
            decide(&req(false, false, 5000, false), false, &T),
            Decision::RejectOverloaded
        );
        assert_eq!(
            decide(&req(false, true, 5000, true), false, &T),
            Decision::RejectOverloaded
        );
    }

    proptest! {
        /// A handed-off request is always served here, whatever the state.
        #[test]
        fn handed_off_is_never_handed_on(cold: bool, waited in 0u64..10_000_000, backlogged: bool, up: bool) {
            prop_assert_eq!(
                decide(&req(true, cold, waited, backlogged), up, &T),
                Decision::Local(LocalReason::AlreadyHandedOff)
            );
        }

        /// With the alternate down nothing is handed off.
        #[test]
        fn nothing_goes_to_a_dead_alternate(cold: bool, waited in 0u64..10_000_000, backlogged: bool, hop: bool) {
            let d = decide(&req(hop, cold, waited, backlogged), false, &T);
            prop_assert!(!matches!(d, Decision::Handoff(_)));
        }
    }
}
