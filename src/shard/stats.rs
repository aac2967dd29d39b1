//! Shard-local counters and their periodic publication.
//!
//! Every shard counts in plain [`Cell`]s ([`ShardStats`]): nothing shared is
//! written on the request path. A low-priority task copies a
//! [`StatsSnapshot`] into the process-wide [`StatsBoard`] now and then (and
//! once more at shutdown); readers such as an admin/metrics layer read the
//! board, never a shard's cells.

use std::cell::Cell;
use std::sync::Mutex;

use crate::dns::{DropReason, Outcome, Transport};
use crate::metrics::local::bump;
use crate::runtime::udp::{DropKind, DROP_KINDS};

/// rcode slots: 0..=15 are the header rcodes, the last one counts any other.
pub const RCODE_SLOTS: usize = 17;

/// The counters of one shard. Single-threaded: only its shard touches it.
#[derive(Debug, Default)]
pub struct ShardStats {
    answered: [[Cell<u64>; RCODE_SLOTS]; 2],
    truncated: Cell<u64>,
    dropped: [Cell<u64>; DROP_KINDS],
    tcp_accepted: Cell<u64>,
    tcp_open: Cell<u64>,
    tcp_refused: Cell<u64>,
    tcp_client_refused: Cell<u64>,
    tcp_idle_closed: Cell<u64>,
    tcp_oversize_closed: Cell<u64>,
    /// Open DNS TCP connections per client (`dns.tcp_max_connections_per_client`).
    pub tcp_clients: crate::runtime::client_cap::ClientCounts,
    udp_batches: Cell<u64>,
    udp_coalescing_waits: Cell<u64>,
    rrl_limited: Cell<u64>,
    rrl_slipped: Cell<u64>,
    reloads: Cell<u64>,
    map_version: Cell<u64>,
}

impl ShardStats {
    /// Count what the answer path did with one query.
    #[inline]
    pub fn record(&self, proto: Transport, outcome: Outcome) {
        match outcome {
            Outcome::Answered { rcode, truncated } => {
                let slot = usize::from(rcode).min(RCODE_SLOTS - 1);
                bump(&self.answered[proto as usize][slot]);
                if truncated {
                    bump(&self.truncated);
                }
            }
            Outcome::Dropped(DropReason::TooShort) => self.dropped(DropKind::TooShort),
            Outcome::Dropped(DropReason::NotAQuery) => self.dropped(DropKind::NotAQuery),
        }
    }

    #[inline]
    pub fn dropped(&self, why: DropKind) {
        bump(&self.dropped[why as usize]);
    }

    pub fn tcp_opened(&self) {
        bump(&self.tcp_accepted);
        bump(&self.tcp_open);
    }

    pub fn tcp_closed(&self) {
        self.tcp_open.set(self.tcp_open.get().saturating_sub(1));
    }

    pub fn tcp_open(&self) -> u64 {
        self.tcp_open.get()
    }

    pub fn tcp_refused(&self) {
        bump(&self.tcp_refused);
    }

    /// A connection refused because its client held its share already.
    pub fn tcp_client_refused(&self) {
        bump(&self.tcp_client_refused);
    }

    pub fn tcp_idle_closed(&self) {
        bump(&self.tcp_idle_closed);
    }

    pub fn tcp_oversize_closed(&self) {
        bump(&self.tcp_oversize_closed);
    }

    /// One UDP receive batch (a `recvmmsg` that brought datagrams).
    #[inline]
    pub fn udp_batch(&self) {
        bump(&self.udp_batches);
    }

    /// Response rate limiting limited an answer: sent truncated
    /// (`slipped`) or dropped.
    pub fn rrl_limited(&self, slipped: bool) {
        bump(&self.rrl_limited);
        if slipped {
            bump(&self.rrl_slipped);
        }
    }

    /// The UDP loop waited to coalesce the next receive (it was busy).
    pub fn udp_coalescing_wait(&self) {
        bump(&self.udp_coalescing_waits);
    }

    /// A new address map was picked up by this shard.
    pub fn reloaded(&self, version: u64) {
        bump(&self.reloads);
        self.map_version.set(version);
    }

    /// Copy every counter out (for publishing).
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &Cell<u64>| c.get();
        StatsSnapshot {
            answered: [
                self.answered[0].each_ref().map(get),
                self.answered[1].each_ref().map(get),
            ],
            truncated: self.truncated.get(),
            dropped: self.dropped.each_ref().map(get),
            tcp_accepted: self.tcp_accepted.get(),
            tcp_open: self.tcp_open.get(),
            tcp_refused: self.tcp_refused.get(),
            tcp_client_refused: self.tcp_client_refused.get(),
            tcp_idle_closed: self.tcp_idle_closed.get(),
            tcp_oversize_closed: self.tcp_oversize_closed.get(),
            udp_batches: self.udp_batches.get(),
            udp_coalescing_waits: self.udp_coalescing_waits.get(),
            rrl_limited: self.rrl_limited.get(),
            rrl_slipped: self.rrl_slipped.get(),
            reloads: self.reloads.get(),
            map_version: self.map_version.get(),
        }
    }
}

/// A plain copy of one shard's counters (or a sum over shards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// `[proto][rcode slot]` answered queries.
    pub answered: [[u64; RCODE_SLOTS]; 2],
    pub truncated: u64,
    /// Indexed by [`DropKind`] as usize.
    pub dropped: [u64; DROP_KINDS],
    pub tcp_accepted: u64,
    pub tcp_open: u64,
    pub tcp_refused: u64,
    /// Refused by the per-client cap (not counted in `tcp_refused`).
    pub tcp_client_refused: u64,
    pub tcp_idle_closed: u64,
    pub tcp_oversize_closed: u64,
    /// DNS UDP receive batches, and coalescing waits between them.
    pub udp_batches: u64,
    pub udp_coalescing_waits: u64,
    /// Answers limited by response rate limiting, and of those the ones
    /// sent truncated (slipped).
    pub rrl_limited: u64,
    pub rrl_slipped: u64,
    pub reloads: u64,
    /// Address-map version this shard serves (max over shards in a sum).
    pub map_version: u64,
}

impl StatsSnapshot {
    /// Answered queries over one transport, all rcodes.
    pub fn answered_total(&self, proto: Transport) -> u64 {
        self.answered[proto as usize].iter().sum()
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Add another shard's counters into this one.
    pub fn add(&mut self, o: &StatsSnapshot) {
        for p in 0..2 {
            for (a, b) in self.answered[p].iter_mut().zip(o.answered[p]) {
                *a += b;
            }
        }
        for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
            *a += b;
        }
        self.truncated += o.truncated;
        self.tcp_accepted += o.tcp_accepted;
        self.tcp_open += o.tcp_open;
        self.tcp_refused += o.tcp_refused;
        self.tcp_client_refused += o.tcp_client_refused;
        self.tcp_idle_closed += o.tcp_idle_closed;
        self.tcp_oversize_closed += o.tcp_oversize_closed;
        self.udp_batches += o.udp_batches;
        self.udp_coalescing_waits += o.udp_coalescing_waits;
        self.rrl_limited += o.rrl_limited;
        self.rrl_slipped += o.rrl_slipped;
        self.reloads += o.reloads;
        self.map_version = self.map_version.max(o.map_version);
    }
}

/// Where shards publish their snapshots; one slot per shard, each written
/// only by its shard, off the request path.
#[derive(Debug)]
pub struct StatsBoard {
    slots: Vec<Mutex<StatsSnapshot>>,
    /// Publications per shard (the systemd watchdog checks they move).
    publishes: Vec<std::sync::atomic::AtomicU64>,
}

impl StatsBoard {
    pub fn new(shards: usize) -> Self {
        StatsBoard {
            slots: (0..shards).map(|_| Mutex::default()).collect(),
            publishes: (0..shards).map(|_| Default::default()).collect(),
        }
    }

    pub fn publish(&self, shard: usize, snap: StatsSnapshot) {
        if let Some(slot) = self.slots.get(shard) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = snap;
        }
        if let Some(n) = self.publishes.get(shard) {
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// How many times each shard has published, by shard index.
    pub fn publish_counts(&self) -> Vec<u64> {
        self.publishes
            .iter()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// The last published snapshot of every shard, by shard index.
    pub fn per_shard(&self) -> Vec<StatsSnapshot> {
        self.slots
            .iter()
            .map(|s| *s.lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    /// Sum over all shards.
    pub fn totals(&self) -> StatsSnapshot {
        let mut t = StatsSnapshot::default();
        for s in self.per_shard() {
            t.add(&s);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_protocol_and_rcode_and_sums_over_shards() {
        let a = ShardStats::default();
        a.record(
            Transport::Udp,
            Outcome::Answered {
                rcode: 3,
                truncated: false,
            },
        );
        a.record(
            Transport::Tcp,
            Outcome::Answered {
                rcode: 0,
                truncated: true,
            },
        );
        a.record(
            Transport::Udp,
            Outcome::Answered {
                rcode: 200,
                truncated: false,
            },
        );
        a.record(Transport::Udp, Outcome::Dropped(DropReason::NotAQuery));
        a.tcp_opened();
        a.tcp_closed();
        a.tcp_closed();
        let b = ShardStats::default();
        b.record(
            Transport::Udp,
            Outcome::Answered {
                rcode: 3,
                truncated: false,
            },
        );
        b.reloaded(7);
        let board = StatsBoard::new(2);
        board.publish(0, a.snapshot());
        board.publish(1, b.snapshot());
        board.publish(9, b.snapshot()); // no such shard: ignored
        let t = board.totals();
        assert_eq!(t.answered[Transport::Udp as usize][3], 2);
        assert_eq!(t.answered[Transport::Udp as usize][RCODE_SLOTS - 1], 1);
        assert_eq!(t.answered_total(Transport::Udp), 3);
        assert_eq!(t.answered_total(Transport::Tcp), 1);
        assert_eq!(t.truncated, 1);
        assert_eq!(t.dropped[DropKind::NotAQuery as usize], 1);
        assert_eq!(t.tcp_accepted, 1);
        assert_eq!(t.tcp_open, 0);
        assert_eq!(t.map_version, 7);
        assert_eq!(t.reloads, 1);
    }
}
