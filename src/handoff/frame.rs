//! The hand-off frame (sans-IO): encode ("seal") and verify ("open") the
//! datagrams two paired nodes exchange on their hand-off ports, with the
//! replay guard. Time is a parameter; nothing here reads a clock or a socket,
//! and [`Opener::open`] never panics on any input.
//!
//! Layout, version 1 (integers big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SGHO` |
//! | 4 | 1 | version (1) |
//! | 5 | 1 | type: 0 request, 1 reply (relay), 2 ping, 3 pong |
//! | 6 | 1 | flags: bit 0 = hop (the request was handed off once already) |
//! | 7 | 1 | service: 0 none (ping/pong), 1 DNS, 2 function |
//! | 8 | 8 | timestamp, sender's clock, microseconds since the Unix epoch |
//! | 16 | 8 | nonce (unique per sender; replay guard; pong echoes its ping's) |
//! | 24 | 18 | original client address: IPv6 (IPv4 as `::ffff:a.b.c.d`), port |
//! | 42 | 18 | original service address (where the client sent the request) |
//! | 60 | 2 | payload length N |
//! | 62 | N | payload: the client's datagram (request) or the reply datagram |
//! | 62+N | 32 | HMAC-SHA256 under the pair's shared key of bytes 0..62+N |
//!
//! A frame is dropped (with a [`FrameDrop`]) when it is malformed, comes
//! from an address other than the paired node, fails the MAC, carries a
//! timestamp more than the window away from the receiver's clock or from
//! before the receiving node started, or repeats a nonce seen within the
//! window by any shard of the node (the node-wide [`ReplayTable`]).

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;

use super::replay::{Insert, ReplayTable};

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MAGIC: [u8; 4] = *b"SGHO";
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 62;
/// HMAC-SHA256 tag length.
pub const MAC_LEN: usize = 32;
/// Header and MAC together.
pub const OVERHEAD: usize = HEADER_LEN + MAC_LEN;
/// Largest payload a frame may carry (fits one IPv4 UDP datagram).
pub const MAX_PAYLOAD: usize = 65_507 - OVERHEAD;
/// Shortest accepted key, bytes (the config check uses the same bound).
pub use crate::config::handoff::MIN_KEY_LEN;
const FLAG_HOP: u8 = 1;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// A handed-off request, first node -> alternate.
    Request = 0,
    /// The answer, alternate -> first node, to forward to the client.
    Reply = 1,
    /// Heartbeat probe.
    Ping = 2,
    /// Heartbeat answer (echoes the ping's nonce).
    Pong = 3,
}

/// Which service the payload is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    None = 0,
    Dns = 1,
    Function = 2,
}

/// One frame's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub ty: FrameType,
    pub hop: bool,
    pub service: ServiceKind,
    pub timestamp_us: u64,
    pub nonce: u64,
    pub client: SocketAddr,
    pub service_addr: SocketAddr,
    pub payload: &'a [u8],
}

/// Why a received frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameDrop {
    /// Not a version-1 frame of a known type with consistent lengths.
    Malformed(&'static str),
    /// Sent from an address other than the paired node.
    WrongSource,
    BadMac,
    /// Timestamp outside the window around the receiver's clock, or from
    /// before the receiving node started (its replay guard cannot vouch
    /// for older frames).
    Stale,
    /// A nonce already seen within the window (by any shard of the node).
    Replayed,
    /// The replay guard had no free slot for the nonce: refused rather
    /// than forgetting a nonce that could still be replayed.
    GuardFull,
}

impl FrameDrop {
    /// Stable label (logs, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            FrameDrop::Malformed(_) => "malformed",
            FrameDrop::WrongSource => "wrong_source",
            FrameDrop::BadMac => "bad_mac",
            FrameDrop::Stale => "stale",
            FrameDrop::Replayed => "replayed",
            FrameDrop::GuardFull => "replay_guard_full",
        }
    }
}

/// The pair's shared key, keyed once (cloning the keyed state per frame
/// saves re-hashing the key).
#[derive(Clone)]
pub struct Key {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key of at least [`MIN_KEY_LEN`] bytes.
    pub fn new(bytes: &[u8]) -> Result<Key, String> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(format!(
                "the hand-off key has {} bytes; use at least {MIN_KEY_LEN} random bytes \
                 (e.g. `head -c 32 /dev/urandom > KEYFILE`, the same file on both nodes)",
                bytes.len()
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(Key { mac })
    }

    /// The key that seals frames *sent by* the node whose hand-off address
    /// is `sender` (HMAC of the shared key over a label and the address).
    /// Each direction of a pair has its own key, so a node never accepts a
    /// frame it sealed itself, reflected back from its peer's address.
    pub fn for_sender(&self, sender: SocketAddr) -> Key {
        let mut label = b"shardgate hand-off sender ".to_vec();
        put_addr(&mut label, sender);
        let derived = self.tag(&label);
        let mac = Hmac::<Sha256>::new_from_slice(&derived).expect("HMAC takes any key length");
        Key { mac }
    }

    /// HMAC-SHA256 of `data` under this key.
    pub fn tag(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let mut m = self.mac.clone();
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// Whether `tag` is `data`'s HMAC (or a prefix of it of at least 16
    /// bytes), in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        if tag.len() < 16 {
            return false;
        }
        let mut m = self.mac.clone();
        m.update(data);
        if tag.len() == MAC_LEN {
            m.verify_slice(tag).is_ok()
        } else {
            m.verify_truncated_left(tag).is_ok()
        }
    }
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    let v6 = match a.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&v6.octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn get_addr(b: &[u8]) -> SocketAddr {
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&b[..16]);
    let ip = Ipv6Addr::from(ip);
    let port = u16::from_be_bytes([b[16], b[17]]);
    match ip.to_ipv4_mapped() {
        Some(v4) => SocketAddr::new(IpAddr::V4(v4), port),
        None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
    }
}

/// Encode `f` into `out` (cleared) and append its MAC. Fails only when the
/// payload is larger than [`MAX_PAYLOAD`].
pub fn seal(key: &Key, f: &Frame<'_>, out: &mut Vec<u8>) -> Result<(), usize> {
    if f.payload.len() > MAX_PAYLOAD {
        return Err(f.payload.len());
    }
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(f.ty as u8);
    out.push(if f.hop { FLAG_HOP } else { 0 });
    out.push(f.service as u8);
    out.extend_from_slice(&f.timestamp_us.to_be_bytes());
    out.extend_from_slice(&f.nonce.to_be_bytes());
    put_addr(out, f.client);
    put_addr(out, f.service_addr);
    out.extend_from_slice(&(f.payload.len() as u16).to_be_bytes());
    out.extend_from_slice(f.payload);
    let tag = key.tag(out);
    out.extend_from_slice(&tag);
    Ok(())
}

/// Parse the layout without checking the MAC (for [`Opener::open`] and
/// the fuzz/property tests).
pub fn parse(d: &[u8]) -> Result<Frame<'_>, FrameDrop> {
    use FrameDrop::Malformed;
    if d.len() < OVERHEAD {
        return Err(Malformed("shorter than header and MAC"));
    }
    if d[..4] != MAGIC {
        return Err(Malformed("no SGHO magic"));
    }
    if d[4] != VERSION {
        return Err(Malformed("unsupported version"));
    }
    let ty = match d[5] {
        0 => FrameType::Request,
        1 => FrameType::Reply,
        2 => FrameType::Ping,
        3 => FrameType::Pong,
        _ => return Err(Malformed("unknown frame type")),
    };
    if d[6] & !FLAG_HOP != 0 {
        return Err(Malformed("unknown flags"));
    }
    let service = match d[7] {
        0 => ServiceKind::None,
        1 => ServiceKind::Dns,
        2 => ServiceKind::Function,
        _ => return Err(Malformed("unknown service kind")),
    };
    let heartbeat = matches!(ty, FrameType::Ping | FrameType::Pong);
    if heartbeat != (service == ServiceKind::None) {
        return Err(Malformed("service kind does not fit the frame type"));
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[i..i + 8]);
        u64::from_be_bytes(b)
    };
    let n = usize::from(u16::from_be_bytes([d[60], d[61]]));
    if HEADER_LEN + n + MAC_LEN != d.len() {
        return Err(Malformed("payload length does not match the datagram"));
    }
    Ok(Frame {
        ty,
        hop: d[6] & FLAG_HOP != 0,
        service,
        timestamp_us: u64_at(8),
        nonce: u64_at(16),
        client: get_addr(&d[24..42]),
        service_addr: get_addr(&d[42..60]),
        payload: &d[HEADER_LEN..HEADER_LEN + n],
    })
}

/// The receive side of one shard: the key, the pair's address, the window
/// and the node's replay guard.
#[derive(Debug)]
pub struct Opener {
    key: Key,
    peer: SocketAddr,
    window_us: u64,
    replay: Arc<ReplayTable>,
}

impl Opener {
    /// Frames must come from `peer`'s IP (any port: each of the peer's
    /// shards sends from its own port, so that frames spread over our
    /// shards), verify with `key` (the peer's sending key,
    /// [`Key::for_sender`]) and carry a timestamp within `window_us` of the
    /// receiver's clock, not before `replay`'s start; `replay` is shared
    /// by every shard of the node.
    pub fn new(key: Key, peer: SocketAddr, window_us: u64, replay: Arc<ReplayTable>) -> Opener {
        Opener {
            key,
            peer,
            window_us,
            replay,
        }
    }

    /// Verify a datagram received from `from` at `now_us`: layout, source,
    /// MAC, timestamp, nonce, in that order. Never panics.
    pub fn open<'a>(
        &mut self,
        d: &'a [u8],
        from: SocketAddr,
        now_us: u64,
    ) -> Result<Frame<'a>, FrameDrop> {
        let f = parse(d)?;
        if from.ip() != self.peer.ip() {
            return Err(FrameDrop::WrongSource);
        }
        let body = d.len() - MAC_LEN;
        if !self.key.verify(&d[..body], &d[body..]) {
            return Err(FrameDrop::BadMac);
        }
        if f.timestamp_us.abs_diff(now_us) > self.window_us
            || f.timestamp_us < self.replay.started_us()
        {
            return Err(FrameDrop::Stale);
        }
        match self
            .replay
            .insert(f.nonce, f.timestamp_us, now_us, self.window_us)
        {
            Insert::New => Ok(f),
            Insert::Replayed => Err(FrameDrop::Replayed),
            Insert::Full => Err(FrameDrop::GuardFull),
        }
    }

    /// Nonces currently remembered by the node (a full scan).
    pub fn remembered(&self, now_us: u64) -> usize {
        self.replay.live(now_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
    const A: &str = "127.0.0.2:8055";

    fn frame(payload: &[u8], nonce: u64, ts: u64) -> Frame<'_> {
        Frame {
            ty: FrameType::Request,
            hop: true,
            service: ServiceKind::Function,
            timestamp_us: ts,
            nonce,
            client: "127.0.0.1:40000".parse().unwrap(),
            service_addr: "[::1]:8054".parse().unwrap(),
            payload,
        }
    }

    fn opener() -> Opener {
        Opener::new(
            Key::new(KEY).unwrap(),
            A.parse().unwrap(),
            1_000_000,
            Arc::new(ReplayTable::new(12, 0)),
        )
    }

    fn sealed(f: &Frame<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        seal(&Key::new(KEY).unwrap(), f, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip() {
        let f = frame(b"hello", 7, 5_000_000);
        let d = sealed(&f);
        assert_eq!(d.len(), OVERHEAD + 5);
        let got = opener().open(&d, A.parse().unwrap(), 5_000_100).unwrap();
        assert_eq!(got, f);
        assert!(got.client.is_ipv4(), "an IPv4 client comes back as IPv4");
    }

    #[test]
    fn short_key_is_refused_with_advice() {
        let e = Key::new(&[1u8; 31]).unwrap_err();
        assert!(e.contains("31 bytes") && e.contains("at least 32"), "{e}");
    }

    #[test]
    fn each_check_has_its_reason() {
        let now = 10_000_000;
        let d = sealed(&frame(b"x", 1, now));
        let a: SocketAddr = A.parse().unwrap();
        let mut o = opener();
        // Wrong source: another IP (any port of the peer's IP is fine).
        assert_eq!(
            o.open(&d, "127.0.0.4:8055".parse().unwrap(), now),
            Err(FrameDrop::WrongSource)
        );
        // Bad MAC: one payload bit flipped; or another key.
        let mut bad = d.clone();
        bad[HEADER_LEN] ^= 1;
        assert_eq!(o.open(&bad, a, now), Err(FrameDrop::BadMac));
        let mut other = Vec::new();
        seal(
            &Key::new(&[9u8; 32]).unwrap(),
            &frame(b"x", 2, now),
            &mut other,
        )
        .unwrap();
        assert_eq!(o.open(&other, a, now), Err(FrameDrop::BadMac));
        // Stale, both directions.
        let old = sealed(&frame(b"x", 3, now - 1_000_001));
        assert_eq!(o.open(&old, a, now), Err(FrameDrop::Stale));
        let future = sealed(&frame(b"x", 4, now + 1_000_001));
        assert_eq!(o.open(&future, a, now), Err(FrameDrop::Stale));
        // First time fine, then replayed.
        assert!(o.open(&d, a, now).is_ok());
        assert_eq!(o.open(&d, a, now + 10), Err(FrameDrop::Replayed));
        // Malformed.
        assert!(matches!(
            o.open(&d[..d.len() - 1], a, now),
            Err(FrameDrop::Malformed(_))
        ));
        assert!(matches!(
            o.open(b"SGHO", a, now),
            Err(FrameDrop::Malformed(_))
        ));
    }

    #[test]
    fn heartbeats_may_come_from_any_port_of_the_pair() {
        let now = 1_000_000_000;
        let mut f = frame(b"", 11, now);
        f.ty = FrameType::Ping;
        f.service = ServiceKind::None;
        f.hop = false;
        let d = sealed(&f);
        let mut o = opener();
        assert!(o.open(&d, "127.0.0.2:40001".parse().unwrap(), now).is_ok());
        f.nonce = 12;
        assert_eq!(
            o.open(&sealed(&f), "127.0.0.5:40001".parse().unwrap(), now),
            Err(FrameDrop::WrongSource)
        );
    }

    #[test]
    fn nonces_are_forgotten_after_the_window() {
        let mut o = opener();
        let a: SocketAddr = A.parse().unwrap();
        for i in 0..100 {
            let d = sealed(&frame(b"", i, 5_000_000));
            assert!(o.open(&d, a, 5_000_000).is_ok());
        }
        assert_eq!(o.remembered(5_000_000), 100);
        let d = sealed(&frame(b"", 1000, 7_000_000));
        assert!(o.open(&d, a, 7_000_000).is_ok());
        assert_eq!(
            o.remembered(7_000_000),
            1,
            "only the newest nonce is still needed"
        );
    }

    #[test]
    fn a_replay_on_another_shard_of_the_node_is_refused() {
        let node = Arc::new(ReplayTable::new(12, 0));
        let key = || Key::new(KEY).unwrap();
        let mut shard0 = Opener::new(key(), A.parse().unwrap(), 1_000_000, node.clone());
        let mut shard1 = Opener::new(key(), A.parse().unwrap(), 1_000_000, node);
        let now = 9_000_000;
        let d = sealed(&frame(b"q", 77, now));
        assert!(shard0.open(&d, A.parse().unwrap(), now).is_ok());
        // The same frame from another port of the peer reaches shard 1.
        assert_eq!(
            shard1.open(&d, "127.0.0.2:40123".parse().unwrap(), now + 5),
            Err(FrameDrop::Replayed)
        );
    }

    #[test]
    fn frames_stamped_before_the_node_started_are_refused() {
        // The node restarted at 20 s: a frame from 19.5 s (inside the
        // window, possibly accepted by the previous run) does not open.
        let restarted = Arc::new(ReplayTable::new(12, 20_000_000));
        let mut o = Opener::new(
            Key::new(KEY).unwrap(),
            A.parse().unwrap(),
            1_000_000,
            restarted,
        );
        let a: SocketAddr = A.parse().unwrap();
        let old = sealed(&frame(b"q", 5, 19_500_000));
        assert_eq!(o.open(&old, a, 20_000_100), Err(FrameDrop::Stale));
        let fresh = sealed(&frame(b"q", 6, 20_000_050));
        assert!(o.open(&fresh, a, 20_000_100).is_ok());
    }

    #[test]
    fn oversized_payload_is_refused_by_seal() {
        let big = vec![0u8; MAX_PAYLOAD + 1];
        let mut out = Vec::new();
        assert_eq!(
            seal(&Key::new(KEY).unwrap(), &frame(&big, 1, 0), &mut out),
            Err(MAX_PAYLOAD + 1)
        );
    }

    proptest! {
        /// Any bytes from any source: a reason, never a panic; and nothing
        /// but a sealed frame opens.
        #[test]
        fn decoder_never_panics(d in proptest::collection::vec(any::<u8>(), 0..300), port: u16, now: u64) {
            let mut o = opener();
            let from = SocketAddr::new("127.0.0.2".parse().unwrap(), port);
            let _ = parse(&d);
            prop_assert!(o.open(&d, from, now).is_err());
        }

        /// Random header mutations of a valid frame never open and never panic.
        #[test]
        fn mutated_frames_are_dropped(payload in proptest::collection::vec(any::<u8>(), 0..64),
                                      pos in 0usize..200, bit in 0u8..8) {
            let now = 1_000_000;
            let d = sealed(&frame(&payload, 5, now));
            let mut m = d.clone();
            let pos = pos % m.len();
            m[pos] ^= 1 << bit;
            let mut o = opener();
            prop_assert!(o.open(&m, A.parse().unwrap(), now).is_err());
            // Truncations too.
            prop_assert!(o.open(&d[..pos], A.parse().unwrap(), now).is_err());
        }

        /// Every field survives a round trip.
        #[test]
        fn round_trips(payload in proptest::collection::vec(any::<u8>(), 0..512), nonce: u64,
                       ts in 0u64..u64::MAX / 2, hop: bool, v6: bool, port: u16) {
            let client = if v6 {
                SocketAddr::new("2001:db8::7".parse().unwrap(), port)
            } else {
                SocketAddr::new("10.1.2.3".parse().unwrap(), port)
            };
            let mut f = frame(&payload, nonce, ts);
            f.hop = hop;
            f.client = client;
            f.ty = FrameType::Reply;
            f.service = ServiceKind::Dns;
            let d = sealed(&f);
            let got = opener().open(&d, A.parse().unwrap(), ts).unwrap();
            prop_assert_eq!(got, f);
        }
    }
}
