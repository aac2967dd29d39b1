//! The heartbeat state machine (sans-IO): is the paired alternate up?
//!
//! The caller ticks it every `heartbeat_interval_ms` (time is a parameter)
//! and sends the ping whose nonce [`Liveness::tick`] returns; it feeds every
//! authenticated pong to [`Liveness::pong`]. A ping unanswered by the next
//! tick is a miss; `misses` consecutive misses mark the alternate down; any
//! pong answering an outstanding ping marks it up. It starts down, so a node
//! hands nothing off before its alternate has answered once.

/// A change of the alternate's state (to log and count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentUp,
    WentDown,
}

/// Heartbeat state of one shard's view of its alternate.
#[derive(Debug, Clone)]
pub struct Liveness {
    misses_to_down: u32,
    up: bool,
    misses: u32,
    /// Nonces of pings sent and not yet answered (newest last, bounded).
    outstanding: Vec<u64>,
    /// Time of the last answered ping (ms, the caller's clock).
    last_pong_ms: Option<u64>,
}

/// Pings remembered while unanswered (a pong may arrive late by a tick).
const KEEP_OUTSTANDING: usize = 4;

impl Liveness {
    /// `misses_to_down` >= 1 consecutive unanswered pings mark it down.
    pub fn new(misses_to_down: u32) -> Liveness {
        Liveness {
            misses_to_down: misses_to_down.max(1),
            up: false,
            misses: 0,
            outstanding: Vec::with_capacity(KEEP_OUTSTANDING),
            last_pong_ms: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Consecutive misses so far.
    pub fn misses(&self) -> u32 {
        self.misses
    }

    pub fn last_pong_ms(&self) -> Option<u64> {
        self.last_pong_ms
    }

    /// One heartbeat period passed: count a miss if the previous ping got no
    /// answer, then register the next ping `nonce` (the caller sends it).
    pub fn tick(&mut self, nonce: u64) -> Option<Transition> {
        let mut t = None;
        if !self.outstanding.is_empty() {
            self.misses = self.misses.saturating_add(1);
            if self.up && self.misses >= self.misses_to_down {
                self.up = false;
                t = Some(Transition::WentDown);
            }
        }
        if self.outstanding.len() >= KEEP_OUTSTANDING {
            self.outstanding.remove(0);
        }
        self.outstanding.push(nonce);
        t
    }

    /// An authenticated pong echoing `nonce` arrived at `now_ms`. Pongs to
    /// pings this machine did not send (or already answered) are ignored.
    pub fn pong(&mut self, nonce: u64, now_ms: u64) -> Option<Transition> {
        let i = self.outstanding.iter().position(|&n| n == nonce)?;
        // Older pings are answered by implication.
        self.outstanding.drain(..=i);
        self.misses = 0;
        self.last_pong_ms = Some(now_ms);
        if self.up {
            None
        } else {
            self.up = true;
            Some(Transition::WentUp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_down_and_comes_up_on_the_first_pong() {
        let mut l = Liveness::new(3);
        assert!(!l.is_up());
        assert_eq!(l.tick(1), None);
        assert_eq!(l.pong(1, 10), Some(Transition::WentUp));
        assert!(l.is_up());
        assert_eq!(l.last_pong_ms(), Some(10));
        assert_eq!(l.pong(1, 11), None, "an answered ping does not count twice");
    }

    #[test]
    fn n_misses_mark_it_down_and_a_reply_brings_it_back() {
        let mut l = Liveness::new(3);
        l.tick(1);
        l.pong(1, 0);
        assert_eq!(l.tick(2), None);
        assert_eq!(l.tick(3), None, "miss 1");
        assert_eq!(l.tick(4), None, "miss 2");
        assert_eq!(l.tick(5), Some(Transition::WentDown), "miss 3");
        assert_eq!(l.tick(6), None, "stays down");
        assert_eq!(l.misses(), 4);
        // A late pong to a recent ping counts.
        assert_eq!(l.pong(5, 100), Some(Transition::WentUp));
        assert_eq!(l.misses(), 0);
    }

    #[test]
    fn unknown_pongs_are_ignored() {
        let mut l = Liveness::new(1);
        l.tick(1);
        assert_eq!(l.pong(99, 0), None);
        assert!(!l.is_up());
    }

    #[test]
    fn answered_pings_are_not_misses() {
        let mut l = Liveness::new(1);
        for n in 0..100 {
            assert_eq!(l.tick(n), None);
            let t = l.pong(n, n);
            assert_eq!(
                t,
                if n == 0 {
                    Some(Transition::WentUp)
                } else {
                    None
                }
            );
        }
        assert!(l.is_up());
    }
}
