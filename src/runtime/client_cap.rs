//! Per-client connection caps of a shard's TCP surfaces (DNS over TCP,
//! function HTTP): how many connections one client holds on this shard,
//! so one source cannot take every slot of the per-shard cap.
//!
//! A client is an IPv4 address (IPv4-mapped IPv6 counts as IPv4) or an
//! IPv6 /64, since one host routinely owns a whole /64. Shard-local (a
//! `RefCell`, never shared), pure: no sockets, no clock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

/// The key a connection is counted under.
pub fn client_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            // The /64 with a marker bit so it cannot equal an IPv4 key.
            None => (u128::from(a) >> 64) | (1u128 << 64),
        },
    }
}

/// Open connections per client on one shard.
#[derive(Debug, Default)]
pub struct ClientCounts {
    open: RefCell<HashMap<u128, u32>>,
}

impl ClientCounts {
    /// Count a new connection from `ip` unless that client already holds
    /// `cap` (0 = no per-client cap); `false` = refuse it.
    pub fn try_open(&self, ip: IpAddr, cap: u32) -> bool {
        let mut open = self.open.borrow_mut();
        let n = open.entry(client_key(ip)).or_insert(0);
        if cap != 0 && *n >= cap {
            return false;
        }
        *n += 1;
        true
    }

    /// A connection of `ip` counted by [`Self::try_open`] closed.
    pub fn close(&self, ip: IpAddr) {
        let mut open = self.open.borrow_mut();
        let key = client_key(ip);
        if let Some(n) = open.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&key);
            }
        }
    }

    /// Connections `ip`'s client holds now.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.open
            .borrow()
            .get(&client_key(ip))
            .copied()
            .unwrap_or(0)
    }

    /// Clients holding at least one connection.
    pub fn clients(&self) -> usize {
        self.open.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_client_is_capped_and_others_are_not() {
        let c = ClientCounts::default();
        for _ in 0..3 {
            assert!(c.try_open(ip("10.0.0.1"), 3));
        }
        assert!(!c.try_open(ip("10.0.0.1"), 3));
        assert!(
            !c.try_open(ip("::ffff:10.0.0.1"), 3),
            "mapped counts as IPv4"
        );
        assert!(c.try_open(ip("10.0.0.2"), 3));
        c.close(ip("10.0.0.1"));
        assert_eq!(c.open(ip("10.0.0.1")), 2);
        assert!(c.try_open(ip("10.0.0.1"), 3));
        for _ in 0..3 {
            c.close(ip("10.0.0.1"));
        }
        c.close(ip("10.0.0.1")); // extra close: no underflow
        c.close(ip("10.0.0.2"));
        assert_eq!(c.clients(), 0, "closed clients leave no entry");
        // 0 = no per-client cap
        for _ in 0..100 {
            assert!(c.try_open(ip("10.0.0.3"), 0));
        }
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let c = ClientCounts::default();
        assert!(c.try_open(ip("2001:db8:0:1::1"), 2));
        assert!(c.try_open(ip("2001:db8:0:1::2"), 2));
        assert!(!c.try_open(ip("2001:db8:0:1:ffff::9"), 2));
        assert!(c.try_open(ip("2001:db8:0:2::1"), 2));
        assert_ne!(client_key(ip("::1")), client_key(ip("0.0.0.1")));
    }
}
