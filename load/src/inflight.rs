//! Requests in flight on one socket: request ids handed out from a FIFO free
//! list (so an id comes back only after [`REUSE_AFTER`] others and a very
//! late reply is unlikely to meet a new request with its id), each with the
//! request's intended and actual send times; replies are matched by id, and
//! requests older than the timeout are expired in send order. The table
//! grows with the requests in flight (a socket with little load stays
//! small), up to the id space. Pure: time is a parameter.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    intended_ns: u64,
    item: u32,
    generation: u32,
    live: bool,
    measured: bool,
}

/// A request matched to its reply (or expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub item: usize,
    pub intended_ns: u64,
    /// Sent inside the measured window (not during warm-up).
    pub measured: bool,
}

/// Ids freed are reused once this many are waiting in the free list (or
/// when the id space is used up).
pub const REUSE_AFTER: usize = 1024;

/// The in-flight table of one socket.
#[derive(Debug)]
pub struct Inflight {
    slots: Vec<Slot>,
    /// Ids `slots.len()..limit` were never used.
    limit: usize,
    free: VecDeque<u32>,
    /// Ids of requests cancelled before they were sent: no reply can be on
    /// the way, so they are reused first.
    unsent: Vec<u32>,
    /// (id, generation, actual send time) in send order.
    order: VecDeque<(u32, u32, u64)>,
    live: usize,
}

impl Inflight {
    /// A table for ids `0..id_space` (at most 65,536 are used).
    pub fn new(id_space: u32) -> Inflight {
        Inflight {
            slots: Vec::new(),
            limit: id_space.clamp(1, 1 << 16) as usize,
            free: VecDeque::new(),
            unsent: Vec::new(),
            order: VecDeque::new(),
            live: 0,
        }
    }

    /// Requests awaiting a reply.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Ids free for new requests.
    pub fn free_ids(&self) -> usize {
        self.unsent.len() + self.free.len() + (self.limit - self.slots.len())
    }

    /// Register a request about to be sent; `None` when every id is in use.
    pub fn start(
        &mut self,
        item: usize,
        intended_ns: u64,
        sent_ns: u64,
        measured: bool,
    ) -> Option<u32> {
        let id = if let Some(id) = self.unsent.pop() {
            id
        } else if self.free.len() >= REUSE_AFTER || self.slots.len() == self.limit {
            self.free.pop_front()?
        } else {
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u32
        };
        let slot = &mut self.slots[id as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.intended_ns = intended_ns;
        slot.item = item as u32;
        slot.live = true;
        slot.measured = measured;
        self.order.push_back((id, slot.generation, sent_ns));
        self.live += 1;
        Some(id)
    }

    /// Undo `start` for a request the socket refused to send; returns it.
    pub fn cancel(&mut self, id: u32) -> Option<Finished> {
        let f = self.finish(id)?;
        // `finish` pushed the id to the back of the free list; a request
        // never sent can have no reply on the way, so reuse it first.
        if let Some(pos) = self.free.iter().rposition(|&f| f == id) {
            self.free.remove(pos);
            self.unsent.push(id);
        }
        Some(f)
    }

    /// A reply carrying `id` arrived: the request it answers, or `None` when
    /// no request with that id is in flight (late or duplicate reply).
    pub fn finish(&mut self, id: u32) -> Option<Finished> {
        let slot = self.slots.get_mut(id as usize)?;
        if !slot.live {
            return None;
        }
        slot.live = false;
        self.live -= 1;
        self.free.push_back(id);
        Some(Finished {
            item: slot.item as usize,
            intended_ns: slot.intended_ns,
            measured: slot.measured,
        })
    }

    /// Expire requests sent at or before `sent_before_ns` that are still
    /// waiting; `on_lost` sees each. Returns how many expired.
    pub fn expire(&mut self, sent_before_ns: u64, mut on_lost: impl FnMut(Finished)) -> usize {
        let mut n = 0;
        while let Some(&(id, generation, sent_ns)) = self.order.front() {
            let slot = self.slots[id as usize];
            let current = slot.live && slot.generation == generation;
            if current && sent_ns > sent_before_ns {
                break;
            }
            self.order.pop_front();
            if current {
                if let Some(f) = self.finish(id) {
                    on_lost(f);
                    n += 1;
                }
            }
        }
        n
    }

    /// Send time of the oldest request still waiting (to know when the next
    /// expiry is due).
    pub fn oldest_sent_ns(&mut self) -> Option<u64> {
        while let Some(&(id, generation, sent_ns)) = self.order.front() {
            let slot = self.slots[id as usize];
            if slot.live && slot.generation == generation {
                return Some(sent_ns);
            }
            self.order.pop_front();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_match_by_id_and_ids_are_recycled_late() {
        let mut t = Inflight::new(4);
        let a = t.start(10, 100, 105, true).unwrap();
        let b = t.start(11, 200, 205, false).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.finish(b),
            Some(Finished {
                item: 11,
                intended_ns: 200,
                measured: false
            })
        );
        assert_eq!(t.finish(b), None, "duplicate reply");
        // Next ids are the never-used ones before b comes back.
        let c = t.start(12, 300, 300, true).unwrap();
        let d = t.start(13, 300, 300, true).unwrap();
        assert!(c != b && d != b);
        assert_eq!(t.start(14, 300, 300, true), Some(b));
        assert_eq!(t.start(15, 300, 300, true), None, "all ids in use");
        assert_eq!(t.free_ids(), 0);
    }

    #[test]
    fn expiry_in_send_order_skips_answered() {
        let mut t = Inflight::new(16);
        let ids: Vec<u32> = (0..5)
            .map(|i| t.start(i, i as u64 * 10, i as u64 * 10, true).unwrap())
            .collect();
        t.finish(ids[1]);
        let mut lost = vec![];
        assert_eq!(t.expire(25, |f| lost.push(f.item)), 2);
        assert_eq!(lost, vec![0, 2]);
        assert_eq!(t.oldest_sent_ns(), Some(30));
        assert_eq!(t.len(), 2);
        // An expired id answered late is not matched.
        assert_eq!(t.finish(ids[0]), None);
        assert_eq!(t.expire(1000, |_| {}), 2);
        assert!(t.is_empty());
        assert_eq!(t.oldest_sent_ns(), None);
    }

    #[test]
    fn reused_id_is_not_expired_by_its_old_entry() {
        let mut t = Inflight::new(1);
        let id = t.start(0, 0, 0, true).unwrap();
        t.finish(id);
        let id2 = t.start(1, 50, 50, true).unwrap();
        assert_eq!(id, id2);
        // The old (id, gen 1, sent 0) entry must not expire the new request.
        assert_eq!(t.expire(10, |_| panic!("expired the new request")), 0);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn grows_with_load_and_reuses_after_a_distance() {
        let mut t = Inflight::new(1 << 16);
        // One request at a time: fresh ids until REUSE_AFTER wait, then the
        // oldest freed comes back first.
        let mut seen = Vec::new();
        for i in 0..(REUSE_AFTER + 3) {
            let id = t.start(i, 0, 0, true).unwrap();
            seen.push(id);
            t.finish(id);
        }
        assert_eq!(
            &seen[..REUSE_AFTER],
            &(0..REUSE_AFTER as u32).collect::<Vec<_>>()[..]
        );
        assert_eq!(&seen[REUSE_AFTER..], &[0, 1, 2]);
        assert_eq!(t.slots.len(), REUSE_AFTER);
        assert_eq!(t.free_ids(), 1 << 16);
    }

    #[test]
    fn cancel_returns_the_id_first() {
        let mut t = Inflight::new(3);
        let a = t.start(7, 0, 0, true).unwrap();
        assert_eq!(t.cancel(a).map(|f| f.item), Some(7));
        assert_eq!(t.cancel(a), None);
        assert!(t.is_empty());
        assert_eq!(t.start(0, 0, 0, true), Some(a));
        assert_eq!(t.expire(100, |_| {}), 1);
    }
}
