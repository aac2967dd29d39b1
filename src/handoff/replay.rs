//! The node-wide replay guard for hand-off frames (no I/O, no clock: time
//! is a parameter): one table of the nonces seen within the window, shared
//! lock-free by every shard of the node, plus the node's start time.
//!
//! Why node-wide: the paired node sends from one port per shard, and the
//! kernel spreads those flows over our shards; a replayed frame sent from
//! another port (or arriving on another CPU) lands on another shard. A guard
//! per shard would accept it once per shard; this one accepts it once per
//! node.
//!
//! Why a start time: the table lives in memory, so after a restart it is
//! empty. Every frame the previous run accepted carries a timestamp from
//! before this run started, so frames stamped before [`ReplayTable::started_us`]
//! are refused (as stale); a replay across a restart never opens. The cost:
//! for as long as the peer's clock lags ours, its first frames after our
//! start are refused (with NTP, milliseconds).
//!
//! The table: `2^SLOT_BITS` atomic slots, each `fingerprint (42 bits) |
//! expiry (22 bits, milliseconds modulo 2^22)`. A nonce hashes to a start
//! slot (low bits) and a fingerprint (high bits); it is looked up in
//! [`PROBE`] consecutive slots. A slot whose expiry has passed is free.
//! Nothing live is ever evicted: when all [`PROBE`] slots hold live nonces
//! the frame is refused ([`Insert::Full`]), so a flood can cost frames but
//! can never make the guard forget a nonce that could still be replayed.
//! At the default size (2^20 slots, 8 MiB) the table holds 250k live nonces
//! (e.g. 125k frames/s with the default 2 s window) at a load of a quarter,
//! where sixteen full neighbours in a row are rare.
//!
//! Concurrency: an insert scans its slots, then claims a free one with a
//! compare-and-swap; a lost race rescans, so two copies of one frame racing
//! on two shards find each other (the loser sees the winner's entry).

use std::sync::atomic::{AtomicU64, Ordering};

/// log2 of the slot count.
pub const SLOT_BITS: u32 = 20;
/// Slots looked at per nonce.
pub const PROBE: usize = 16;
const EXPIRY_BITS: u32 = 22;
const EXPIRY_MASK: u64 = (1 << EXPIRY_BITS) - 1;
/// Longest window the expiry encoding can hold (half its range), ms.
pub const MAX_WINDOW_MS: u64 = 1 << (EXPIRY_BITS - 1);

/// What [`ReplayTable::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// First sighting within the window: recorded.
    New,
    /// Seen before within the window.
    Replayed,
    /// No free slot near the nonce: refused, nothing forgotten.
    Full,
}

/// See the module docs.
pub struct ReplayTable {
    slots: Box<[AtomicU64]>,
    mask: u64,
    started_us: u64,
}

impl std::fmt::Debug for ReplayTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayTable")
            .field("slots", &self.slots.len())
            .field("started_us", &self.started_us)
            .finish()
    }
}

/// splitmix64: nonces are counters from a random base, so spread them.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl ReplayTable {
    /// A table of `2^slot_bits` slots for a node that started at
    /// `started_us` (Unix microseconds).
    pub fn new(slot_bits: u32, started_us: u64) -> ReplayTable {
        let n = 1usize << slot_bits;
        ReplayTable {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: (n as u64) - 1,
            started_us,
        }
    }

    /// The node's start, Unix microseconds: frames stamped earlier are
    /// refused.
    pub fn started_us(&self) -> u64 {
        self.started_us
    }

    /// Record `nonce` of a frame stamped `ts_us`, live until `ts_us +
    /// window_us`, at `now_us`. `window_us` must not exceed
    /// [`MAX_WINDOW_MS`] ms (the config check keeps it far below).
    pub fn insert(&self, nonce: u64, ts_us: u64, now_us: u64, window_us: u64) -> Insert {
        let h = mix(nonce);
        let start = h & self.mask;
        // Never 0, so an empty slot (0) never matches.
        let fingerprint = (h >> 22) | 1;
        let now_ms = now_us / 1000;
        let expiry_ms = ts_us.saturating_add(window_us) / 1000 + 1;
        let entry = (fingerprint << EXPIRY_BITS) | (expiry_ms & EXPIRY_MASK);
        let live = |v: u64| {
            v != 0 && {
                // Expiry still ahead of now, modulo the encoding's range.
                let ahead = (v & EXPIRY_MASK).wrapping_sub(now_ms) & EXPIRY_MASK;
                ahead != 0 && ahead < (1 << (EXPIRY_BITS - 1))
            }
        };
        loop {
            let mut free = None;
            for i in 0..PROBE as u64 {
                let at = ((start + i) & self.mask) as usize;
                let v = self.slots[at].load(Ordering::Acquire);
                if live(v) {
                    if v >> EXPIRY_BITS == fingerprint {
                        return Insert::Replayed;
                    }
                } else if free.is_none() {
                    free = Some((at, v));
                }
            }
            let Some((at, seen)) = free else {
                return Insert::Full;
            };
            if self.slots[at]
                .compare_exchange(seen, entry, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Insert::New;
            }
            // Another shard claimed that slot meanwhile: look again (it may
            // have been this very nonce).
        }
    }

    /// Live nonces (a full scan: tests and diagnostics only).
    pub fn live(&self, now_us: u64) -> usize {
        let now_ms = now_us / 1000;
        self.slots
            .iter()
            .filter(|s| {
                let v = s.load(Ordering::Relaxed);
                let ahead = (v & EXPIRY_MASK).wrapping_sub(now_ms) & EXPIRY_MASK;
                v != 0 && ahead != 0 && ahead < (1 << (EXPIRY_BITS - 1))
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const W: u64 = 2_000_000;

    #[test]
    fn a_nonce_is_new_once_then_replayed_until_the_window_ends() {
        let t = ReplayTable::new(10, 0);
        let now = 50_000_000;
        assert_eq!(t.insert(7, now, now, W), Insert::New);
        assert_eq!(t.insert(7, now, now + 1_000, W), Insert::Replayed);
        assert_eq!(t.insert(8, now, now, W), Insert::New);
        // Past the window the slot is free again (the frame would be stale
        // anyway; the opener checks that first).
        let later = now + W + 2_000;
        assert_eq!(t.insert(7, later, later, W), Insert::New);
        assert_eq!(t.live(later), 1);
    }

    #[test]
    fn live_nonces_are_never_evicted_a_full_neighbourhood_refuses() {
        // 32 slots, all live: every further nonce is refused, and every
        // recorded one is still a replay.
        let t = ReplayTable::new(5, 0);
        let now = 10_000_000;
        let mut recorded = Vec::new();
        let mut full = 0;
        for n in 0..200u64 {
            match t.insert(n, now, now, W) {
                Insert::New => recorded.push(n),
                Insert::Full => full += 1,
                Insert::Replayed => panic!("nonce {n} is new"),
            }
        }
        assert_eq!(recorded.len(), 32, "every slot used");
        assert_eq!(full, 200 - 32);
        for n in recorded {
            assert_eq!(t.insert(n, now, now + 1_000, W), Insert::Replayed);
        }
    }

    #[test]
    fn expiry_survives_the_wrap_of_its_encoding() {
        let t = ReplayTable::new(8, 0);
        // Around a multiple of 2^22 ms.
        let now = ((1u64 << 22) * 1000 * 123) - 500_000;
        assert_eq!(t.insert(1, now, now, W), Insert::New);
        assert_eq!(t.insert(1, now, now + 1_000_000, W), Insert::Replayed);
        assert_eq!(t.insert(1, now, now + W + 1_001_000, W), Insert::New);
    }

    #[test]
    fn copies_racing_on_many_threads_open_exactly_once() {
        let t = Arc::new(ReplayTable::new(14, 0));
        let now = 1_000_000_000;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..2_000u64)
                        .filter(|&n| t.insert(n, now, now, W) == Insert::New)
                        .count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 2_000, "each nonce is new on exactly one thread");
    }
}
