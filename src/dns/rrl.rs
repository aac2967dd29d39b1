//! Response rate limiting for DNS over UDP (the semantics of Knot's
//! `mod-rrl` and BIND's `rate-limit`), pure: the caller passes the client
//! address and the time, and gets back whether to send the answer, send it
//! truncated, or drop it.
//!
//! - Clients are grouped by source prefix (`ipv4_prefix`, default /24;
//!   `ipv6_prefix`, default /56): a spoofed flood from one network shares
//!   one budget.
//! - Each prefix earns `rate` answers per second (token bucket, burst of
//!   one second's worth). An answer over the budget is *limited*.
//! - Slip: every `slip`-th limited answer is sent truncated (TC=1, question
//!   only) so that a real client behind the prefix retries over TCP, which
//!   a spoofed source cannot; the others are dropped. `slip = 0` drops all
//!   limited answers, `slip = 1` truncates all of them.
//! - `whitelist` prefixes are never limited.
//! - Buckets live in a fixed-size table per shard, indexed by a hash of the
//!   prefix (as Knot's): no allocation on the request path, no locks; a
//!   bucket taken over by another prefix starts afresh.
//!
//! TCP answers are never limited (a TCP client has proven its address).

use std::net::IpAddr;

pub use crate::config::RrlConfig;

/// What to do with one UDP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget (or whitelisted): send it.
    Send,
    /// Limited, and this one slips: send it truncated ([`truncate`]).
    Slip,
    /// Limited: send nothing.
    Drop,
}

/// A client prefix: family (4 or 6; 0 = an empty bucket) and its bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Key {
    family: u8,
    bits: u128,
}

/// Token-bucket scale: tokens are kept in 1/1000 answer units so a rate
/// refills smoothly per millisecond.
const SCALE: u64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// The prefix this bucket counts for.
    key: Key,
    /// Scaled tokens.
    tokens: u64,
    /// Last refill, milliseconds.
    at_ms: u64,
    /// Limited answers so far (for slip).
    limited: u32,
}

/// One shard's limiter.
#[derive(Debug)]
pub struct Rrl {
    config: RrlConfig,
    whitelist4: Vec<(u32, u8)>,
    whitelist6: Vec<(u128, u8)>,
    buckets: Vec<Bucket>,
}

impl Rrl {
    pub fn new(config: &RrlConfig) -> Rrl {
        let mut whitelist4 = Vec::new();
        let mut whitelist6 = Vec::new();
        for net in &config.whitelist {
            match net {
                ipnet::IpNet::V4(n) => whitelist4.push((u32::from(n.network()), n.prefix_len())),
                ipnet::IpNet::V6(n) => whitelist6.push((u128::from(n.network()), n.prefix_len())),
            }
        }
        Rrl {
            config: config.clone(),
            whitelist4,
            whitelist6,
            buckets: vec![Bucket::default(); config.table_size.max(1) as usize],
        }
    }

    /// The settings this limiter was built from.
    pub fn config(&self) -> &RrlConfig {
        &self.config
    }

    /// Decide about one answer to `client` at `now_ms` (any monotonic
    /// millisecond clock; it may stand still within a receive batch).
    pub fn decide(&mut self, client: IpAddr, now_ms: u64) -> Verdict {
        let key = match client {
            IpAddr::V4(a) => self.key4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.key4(u32::from(v4)),
                None => self.key6(u128::from(a)),
            },
        };
        let Some(key) = key else {
            return Verdict::Send;
        };
        let rate = u64::from(self.config.rate.max(1));
        let burst = rate * SCALE;
        let slot = (hash(key) % self.buckets.len() as u64) as usize;
        let Some(b) = self.buckets.get_mut(slot) else {
            return Verdict::Send;
        };
        if b.key != key {
            *b = Bucket {
                key,
                tokens: burst,
                at_ms: now_ms,
                limited: 0,
            };
        } else if now_ms > b.at_ms {
            // `rate` answers per 1000 ms = `rate` scaled tokens per ms.
            let earned = (now_ms - b.at_ms).saturating_mul(rate);
            b.tokens = b.tokens.saturating_add(earned).min(burst);
            b.at_ms = now_ms;
        }
        if b.tokens >= SCALE {
            b.tokens -= SCALE;
            return Verdict::Send;
        }
        b.limited = b.limited.wrapping_add(1);
        let slip = self.config.slip;
        if slip != 0 && b.limited % slip == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// Bucket key of an IPv4 client; `None` = whitelisted.
    fn key4(&self, a: u32) -> Option<Key> {
        if self.whitelist4.iter().any(|&(n, l)| mask4(a, l) == n) {
            return None;
        }
        Some(Key {
            family: 4,
            bits: u128::from(mask4(a, self.config.ipv4_prefix)),
        })
    }

    /// Bucket key of an IPv6 client; `None` = whitelisted.
    fn key6(&self, a: u128) -> Option<Key> {
        if self.whitelist6.iter().any(|&(n, l)| mask6(a, l) == n) {
            return None;
        }
        Some(Key {
            family: 6,
            bits: mask6(a, self.config.ipv6_prefix),
        })
    }
}

fn mask4(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len.min(32))))
    }
}

fn mask6(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len.min(128))))
    }
}

/// 64-bit mix of a key (splitmix64 over both halves and the family).
fn hash(key: Key) -> u64 {
    let k = key.bits;
    let mut x = (k as u64) ^ ((k >> 64) as u64).rotate_left(29) ^ u64::from(key.family);
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Turn a UDP answer into its slipped form in place: the header with TC
/// set and the question only (no answer, authority or additional records),
/// so the client retries over TCP. A reply without a readable question is
/// cut to its header with QDCOUNT 0.
pub fn truncate(reply: &mut Vec<u8>) {
    if reply.len() < 12 {
        return;
    }
    let qd = u16::from_be_bytes([reply[4], reply[5]]);
    let end = if qd >= 1 { question_end(reply) } else { None };
    let (end, qd) = match end {
        Some(e) => (e, 1u16),
        None => (12, 0),
    };
    reply.truncate(end);
    reply[2] |= 0x02; // TC
    reply[4..6].copy_from_slice(&qd.to_be_bytes());
    reply[6..12].fill(0);
}

/// End of the first question (uncompressed name, type, class), if whole.
fn question_end(msg: &[u8]) -> Option<usize> {
    let mut i = 12usize;
    for _ in 0..128 {
        let l = *msg.get(i)? as usize;
        if l == 0 {
            let end = i + 1 + 4;
            return (end <= msg.len()).then_some(end);
        }
        if l & 0xC0 != 0 {
            return None;
        }
        i += 1 + l;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn on(rate: u32, slip: u32) -> RrlConfig {
        RrlConfig {
            enabled: true,
            rate,
            slip,
            ..RrlConfig::default()
        }
    }

    /// Verdicts for `n` answers to `client` at time `t`.
    fn run(r: &mut Rrl, client: &str, t: u64, n: usize) -> Vec<Verdict> {
        (0..n).map(|_| r.decide(ip(client), t)).collect()
    }

    fn count(v: &[Verdict], which: Verdict) -> usize {
        v.iter().filter(|&&x| x == which).count()
    }

    #[test]
    fn a_prefix_gets_its_rate_then_every_nth_limited_answer_slips() {
        let mut r = Rrl::new(&on(10, 3));
        let v = run(&mut r, "192.0.2.1", 1_000, 40);
        assert!(v[..10].iter().all(|&x| x == Verdict::Send), "{v:?}");
        let limited = &v[10..];
        assert_eq!(count(limited, Verdict::Send), 0);
        // every third limited answer slips: 30 limited -> 10 slips
        assert_eq!(count(limited, Verdict::Slip), 10);
        assert_eq!(limited[2], Verdict::Slip);
        assert_eq!(limited[0], Verdict::Drop);
        // the same /24 shares the budget; another /24 does not
        assert_eq!(r.decide(ip("192.0.2.200"), 1_000), Verdict::Drop);
        assert_eq!(run(&mut r, "192.0.3.1", 1_000, 10), vec![Verdict::Send; 10]);
    }

    #[test]
    fn the_budget_refills_with_time() {
        let mut r = Rrl::new(&on(10, 0));
        assert_eq!(count(&run(&mut r, "10.0.0.1", 0, 20), Verdict::Send), 10);
        // 100 ms later: one more answer's worth (10/s)
        assert_eq!(count(&run(&mut r, "10.0.0.1", 100, 5), Verdict::Send), 1);
        // a second later: a full second's budget, not more (burst = rate)
        assert_eq!(
            count(&run(&mut r, "10.0.0.1", 5_000, 30), Verdict::Send),
            10
        );
        // slip 0: everything limited is dropped
        assert_eq!(count(&run(&mut r, "10.0.0.1", 5_000, 30), Verdict::Slip), 0);
        // a clock that goes backwards refills nothing and does not panic
        assert_eq!(count(&run(&mut r, "10.0.0.1", 10, 3), Verdict::Send), 0);
    }

    #[test]
    fn slip_one_truncates_every_limited_answer() {
        let mut r = Rrl::new(&on(1, 1));
        let v = run(&mut r, "10.0.0.1", 0, 5);
        assert_eq!(
            v,
            vec![
                Verdict::Send,
                Verdict::Slip,
                Verdict::Slip,
                Verdict::Slip,
                Verdict::Slip
            ]
        );
    }

    #[test]
    fn whitelist_and_ipv6_prefixes() {
        let mut c = on(2, 0);
        c.whitelist = vec![
            "10.9.0.0/16".parse().unwrap(),
            "2001:db8:ff::/48".parse().unwrap(),
        ];
        let mut r = Rrl::new(&c);
        assert_eq!(run(&mut r, "10.9.1.1", 0, 50), vec![Verdict::Send; 50]);
        assert_eq!(
            run(&mut r, "2001:db8:ff::1", 0, 50),
            vec![Verdict::Send; 50]
        );
        // IPv6 grouped by /56: ::1 and ::ff:1 in one /56 share a budget
        assert_eq!(
            count(&run(&mut r, "2001:db8:1:100::1", 0, 2), Verdict::Send),
            2
        );
        assert_eq!(r.decide(ip("2001:db8:1:1ff::9"), 0), Verdict::Drop);
        // another /56
        assert_eq!(r.decide(ip("2001:db8:1:200::1"), 0), Verdict::Send);
        // IPv4-mapped counts as IPv4
        assert_eq!(count(&run(&mut r, "10.1.1.1", 0, 2), Verdict::Send), 2);
        assert_eq!(r.decide(ip("::ffff:10.1.1.7"), 0), Verdict::Drop);
        assert_eq!(r.decide(ip("::ffff:10.9.0.1"), 0), Verdict::Send);
    }

    #[test]
    fn a_one_bucket_table_still_limits_and_recovers() {
        let mut c = on(1, 0);
        c.table_size = 1;
        let mut r = Rrl::new(&c);
        assert_eq!(r.decide(ip("10.0.0.1"), 0), Verdict::Send);
        assert_eq!(r.decide(ip("10.0.0.1"), 0), Verdict::Drop);
        // another prefix takes the bucket over and starts afresh
        assert_eq!(r.decide(ip("10.0.1.1"), 0), Verdict::Send);
    }

    #[test]
    fn truncate_keeps_header_and_question_with_tc() {
        // id 0x1234, QR AA, NOERROR, 1 question, 1 answer, 0, 1 additional
        let mut m = vec![0x12, 0x34, 0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 1];
        let q = [3, b'u', b'p', b'f', 0, 0, 1, 0, 1];
        m.extend_from_slice(&q);
        m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 1, 5]);
        m.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        truncate(&mut m);
        assert_eq!(m.len(), 12 + q.len());
        assert_eq!(&m[..4], &[0x12, 0x34, 0x86, 0x00]);
        assert_eq!(&m[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&m[12..], &q);
        // no question: header only
        let mut h = vec![0, 1, 0x80, 0x04, 0, 0, 0, 0, 0, 0, 0, 0];
        truncate(&mut h);
        assert_eq!(h, vec![0, 1, 0x82, 0x04, 0, 0, 0, 0, 0, 0, 0, 0]);
        // a broken question: header only, QDCOUNT 0
        let mut b = vec![0, 1, 0x80, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 9, b'x'];
        truncate(&mut b);
        assert_eq!(b.len(), 12);
        assert_eq!(&b[4..6], &[0, 0]);
        let mut short = vec![1, 2, 3];
        truncate(&mut short);
        assert_eq!(short, vec![1, 2, 3]);
    }
}
