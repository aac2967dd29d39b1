//! Entry points of the fuzz targets (`fuzz/fuzz_targets/*.rs`) and of the
//! corpus replay test (`tests/fuzz_corpus.rs`): one function per parser,
//! taking arbitrary bytes, feeding them to the real sans-IO core and
//! asserting what must hold for any input (no panic, bounded output,
//! consistent lengths). A crash found by `cargo fuzz` is reproduced by
//! `cargo test` once its input is added to `fuzz/corpus/<target>/`.
//!
//! Top of the module graph: it imports the cores and nothing imports it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::OnceLock;

use crate::addrmap::AddressMap;
use crate::config::Config;
use crate::dns::{answer, Outcome, Transport};

/// A fuzz entry point: arbitrary bytes in, a panic on a broken invariant.
pub type Entry = fn(&[u8]);

/// Every target, by the name of its fuzz binary and corpus directory.
pub const TARGETS: &[(&str, Entry)] = &[
    ("answer", dns_message),
    ("handoff_frame", handoff_frame),
    ("fn_frame", fn_frame),
    ("admin_http", admin_http),
    ("fn_http", fn_http),
    ("tcp_dns", tcp_dns),
    ("config", config),
];

const CONF: &str = r#"
[dns]
trusted_resolvers = ["192.0.2.53/32", "2001:db8::53/128"]

[[zone]]
name = "svc.example."
ns = ["ns1.svc.example."]
soa = { mname = "ns1.svc.example.", rname = "hostmaster.svc.example." }

[[view]]
name = "a"
prefixes = ["10.1.0.0/16", "fd00:a::/48", "10.1.0.7"]
record = [
  { name = "upf.svc.example.", type = "A", data = "10.0.1.5" },
  { name = "_pfcp._udp.svc.example.", type = "SRV", data = "10 10 8805 upf.svc.example." },
]

[[view]]
name = "b"
prefixes = ["10.2.0.0/16", "10.1.2.0/24"]
record = [{ name = "upf.svc.example.", type = "A", data = "10.0.2.5" }]

[[view]]
name = "default"
record = [
  { name = "upf.svc.example.", type = "A", data = "10.0.9.5" },
  { name = "t.svc.example.", type = "TXT", data = "some text" },
]
"#;

fn map() -> &'static AddressMap {
    static MAP: OnceLock<AddressMap> = OnceLock::new();
    MAP.get_or_init(|| {
        let c: Config = toml::from_str(CONF).expect("fuzz config parses");
        AddressMap::build(&c, Path::new(".")).expect("fuzz config builds")
    })
}

/// A DNS message as a query: first byte picks the client (trusted
/// resolver or not, IPv4/IPv6) and the transport. Answers start with the
/// query's ID, have QR set and fit the UDP limit.
pub fn dns_message(data: &[u8]) {
    let Some((&sel, query)) = data.split_first() else {
        return;
    };
    let client: IpAddr = match sel & 3 {
        0 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)),
        1 => IpAddr::V4(Ipv4Addr::new(10, 1, 0, 7)),
        2 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53)),
        _ => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
    };
    let transport = if sel & 4 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let mut out = Vec::new();
    match answer(map(), query, client, transport, &mut out) {
        Outcome::Dropped(_) => assert!(out.is_empty()),
        Outcome::Answered { .. } => {
            assert!(out.len() >= 12);
            assert_eq!(out[..2], query[..2]);
            assert!(out[2] & 0x80 != 0, "QR set");
            if transport == Transport::Udp {
                assert!(out.len() <= 1232, "UDP answer of {} bytes", out.len());
            }
            // What the rate limiter sends when a limited answer slips.
            let mut slipped = out.clone();
            crate::dns::rrl::truncate(&mut slipped);
            assert!(slipped.len() <= out.len() && slipped[2] & 0x02 != 0);
        }
    }
}

/// A hand-off frame: layout parse; a parsed frame re-sealed and parsed
/// again gives the same fields.
pub fn handoff_frame(data: &[u8]) {
    use crate::handoff::frame;
    let Ok(f) = frame::parse(data) else {
        return;
    };
    let key = frame::Key::new(&[7u8; 32]).expect("32-byte key");
    let mut out = Vec::new();
    if frame::seal(&key, &f, &mut out).is_ok() {
        let again = frame::parse(&out).expect("a sealed frame parses");
        assert_eq!(again, f);
        assert_eq!(out.len(), data.len());
    }
}

/// A function-invocation datagram: decode; a request's name and payload
/// lie inside the datagram; re-encoding a request decodes to the same.
pub fn fn_frame(data: &[u8]) {
    use crate::functions::frame::{decode_reply, decode_request, encode_request, Decoded};
    match decode_request(data) {
        Decoded::Request(r) => {
            assert!(r.name.len() + r.payload.len() < data.len());
            let mut out = Vec::new();
            if let Ok(name) = std::str::from_utf8(r.name) {
                if encode_request(&mut out, r.id, name, r.payload).is_ok() {
                    assert_eq!(decode_request(&out), Decoded::Request(r));
                }
            }
        }
        Decoded::Reject { why, .. } => assert!(!why.is_empty()),
        Decoded::Drop => {}
    }
    if let Some(reply) = decode_reply(data) {
        assert!(reply.body.len() < data.len());
    }
}

/// The admin listener's HTTP parser and browser policy: a complete
/// request never claims more bytes than given; the head check agrees.
pub fn admin_http(data: &[u8]) {
    use crate::admin::http::{head_complete, parse, Parsed};
    match parse(data) {
        Parsed::Complete { request, consumed } => {
            assert!(consumed <= data.len());
            assert!(request.body.len() <= consumed);
            assert!(head_complete(data));
            let _ = crate::admin::access::check(&request, &["admin.example".to_string()]);
            let _ = crate::admin::api::route(&request.path);
            let _ = request.query_param("data");
        }
        Parsed::Partial => {}
        Parsed::Invalid(r) => assert!(r.status >= 400),
    }
}

/// The function surface's HTTP parser over a pipelined buffer: every step
/// consumes within the buffer; bounded steps.
pub fn fn_http(data: &[u8]) {
    use crate::functions::http::{next_request, HttpLimits, Step};
    let limits = HttpLimits {
        max_header_bytes: 8192,
        max_skip_body: 65_536,
    };
    let max_input = |name: &str| (name != "missing").then_some(4096);
    let mut pos = 0;
    for _ in 0..64 {
        let Some(rest) = data.get(pos..) else {
            panic!("position {pos} past the buffer");
        };
        match next_request(rest, &limits, max_input) {
            Step::NeedMore { .. } => return,
            Step::Invoke {
                body,
                consumed,
                keep_alive,
                ..
            } => {
                assert!(consumed > 0 && consumed <= rest.len());
                assert!(body.len() <= 4096);
                pos += consumed;
                if !keep_alive {
                    return;
                }
            }
            Step::Respond {
                code,
                consumed,
                keep_alive,
                ..
            } => {
                assert!(code >= 400);
                assert!(consumed <= rest.len());
                if !keep_alive || consumed == 0 {
                    return;
                }
                pos += consumed;
            }
        }
    }
}

/// DNS over TCP framing: the frames found tile the buffer's front, each
/// within the length bound; each message goes to the answer path.
pub fn tcp_dns(data: &[u8]) {
    use crate::shard::tcp::{next_frame, Frame};
    let mut pos = 0;
    let client = IpAddr::V4(Ipv4Addr::new(10, 2, 0, 9));
    let mut out = Vec::new();
    for _ in 0..256 {
        let rest = &data[pos..];
        match next_frame(rest, 4096) {
            Frame::Complete { len } => {
                assert!((1..=4096).contains(&len) && 2 + len <= rest.len());
                let _ = answer(map(), &rest[2..2 + len], client, Transport::Tcp, &mut out);
                pos += 2 + len;
            }
            Frame::Incomplete => return,
            Frame::Invalid { len } => {
                assert!(len == 0 || len > 4096);
                return;
            }
        }
    }
}

/// The config loader on arbitrary text: never panics; a config it accepts
/// builds a map with the views it names.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Keep the loader away from files: no prefixes files, function
    // directories or hand-off key files (whatever escapes spell the keys).
    let Ok(c) = toml::from_str::<Config>(text) else {
        return;
    };
    if c.handoff.is_some()
        || c.functions.dir.is_some()
        || c.server.admin_token_file.is_some()
        || c.views.iter().any(|v| v.prefixes_file.is_some())
    {
        return;
    }
    if let Ok(loaded) = crate::addrmap::load(text, Path::new("/nonexistent")) {
        assert_eq!(loaded.map.views().len(), loaded.config.views.len());
    }
}
