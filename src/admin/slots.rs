//! Admin connection slots (pure): which connection the listener admits,
//! which idle one it closes to make room, and which it refuses.
//!
//! The admin listener serves at most `max` connections at once, and at most
//! `per_client` from one source address. A connection is *idle* while it
//! waits for a request head (just accepted, or between keep-alive
//! requests) and *busy* from a complete request head until its response is
//! written. An idle connection has shown nothing and costs its peer
//! nothing, so a new connection takes the slot of the oldest idle one
//! (first of its own address when that address is at its cap) instead of
//! being refused: sockets left open without a request can never keep
//! `/healthz` from being answered. Only busy connections, whose time is
//! bounded by the request deadline, fill the slots, and one address fills
//! at most `per_client` of them.

use std::net::IpAddr;

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Serve it as slot `id`; first close slot `evict`, if any (an idle
    /// connection whose slot it takes).
    Accept { id: u64, evict: Option<u64> },
    /// Every slot it could take is busy: answer 503 and close.
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u64,
    ip: IpAddr,
    busy: bool,
}

/// The slot table. Ids grow with accept order, so the lowest id is the
/// oldest connection.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    per_client: usize,
    next_id: u64,
    slots: Vec<Slot>,
}

impl Slots {
    /// `max` connections in all, `per_client` per source address (both at
    /// least 1).
    pub fn new(max: usize, per_client: usize) -> Slots {
        Slots {
            max: max.max(1),
            per_client: per_client.clamp(1, max.max(1)),
            next_id: 0,
            slots: Vec::with_capacity(max),
        }
    }

    /// A connection from `ip` arrived.
    pub fn admit(&mut self, ip: IpAddr) -> Admit {
        let from_ip = self.slots.iter().filter(|s| s.ip == ip).count();
        let evict = if from_ip >= self.per_client {
            match self.oldest_idle(|s| s.ip == ip) {
                Some(v) => Some(v),
                None => return Admit::Refuse,
            }
        } else if self.slots.len() >= self.max {
            match self.oldest_idle(|_| true) {
                Some(v) => Some(v),
                None => return Admit::Refuse,
            }
        } else {
            None
        };
        if let Some(v) = evict {
            self.release(v);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.slots.push(Slot {
            id,
            ip,
            busy: false,
        });
        Admit::Accept { id, evict }
    }

    /// Slot `id` has a whole request head (`true`) or waits for the next
    /// one (`false`).
    pub fn set_busy(&mut self, id: u64, busy: bool) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.id == id) {
            s.busy = busy;
        }
    }

    /// The connection of slot `id` ended (or was evicted); idempotent.
    pub fn release(&mut self, id: u64) {
        self.slots.retain(|s| s.id != id);
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn oldest_idle(&self, pick: impl Fn(&Slot) -> bool) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| !s.busy && pick(s))
            .map(|s| s.id)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn id(a: Admit) -> u64 {
        match a {
            Admit::Accept { id, .. } => id,
            Admit::Refuse => panic!("refused"),
        }
    }

    #[test]
    fn idle_connections_make_room_for_new_ones() {
        let mut s = Slots::new(4, 4);
        let a = ip("127.0.0.1");
        let ids: Vec<u64> = (0..4).map(|_| id(s.admit(a))).collect();
        // full of idle sockets: the next one takes the oldest's slot
        assert_eq!(
            s.admit(ip("127.0.0.2")),
            Admit::Accept {
                id: 4,
                evict: Some(ids[0])
            }
        );
        assert_eq!(s.len(), 4);
        // any number of idle sockets: never refused, always the oldest goes
        for k in 0..100u64 {
            match s.admit(a) {
                Admit::Accept { evict: Some(_), .. } => {}
                other => panic!("{k}: {other:?}"),
            }
        }
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn busy_connections_are_kept_and_one_client_gets_at_most_its_share() {
        let mut s = Slots::new(4, 2);
        let a = ip("127.0.0.1");
        let a1 = id(s.admit(a));
        let a2 = id(s.admit(a));
        s.set_busy(a1, true);
        // a's third connection evicts a's idle one, not someone else's
        let b1 = id(s.admit(ip("10.0.0.2")));
        let a3 = match s.admit(a) {
            Admit::Accept { id, evict } => {
                assert_eq!(evict, Some(a2));
                id
            }
            Admit::Refuse => panic!("refused"),
        };
        s.set_busy(a3, true);
        // a holds 2 busy: refused, others still get in
        assert_eq!(s.admit(a), Admit::Refuse);
        let b2 = id(s.admit(ip("10.0.0.3")));
        assert_eq!(s.len(), 4);
        // full: an idle one (b1, the oldest idle) makes room
        let c = match s.admit(ip("10.0.0.4")) {
            Admit::Accept { id, evict } => {
                assert_eq!(evict, Some(b1));
                id
            }
            Admit::Refuse => panic!("refused"),
        };
        s.set_busy(b2, true);
        s.set_busy(c, true);
        // all four busy: refused until one ends
        assert_eq!(s.admit(ip("10.0.0.5")), Admit::Refuse);
        s.release(a1);
        s.release(a1);
        assert!(matches!(
            s.admit(ip("10.0.0.5")),
            Admit::Accept { evict: None, .. }
        ));
        // a busy connection back to idle is evictable again
        s.set_busy(b2, false);
        assert!(matches!(
            s.admit(ip("10.0.0.9")),
            Admit::Accept { evict: Some(v), .. } if v == b2
        ));
    }
}
