//! Fuzz `dns::answer`: arbitrary bytes as a query, from a trusted resolver
//! or a plain client, over UDP or TCP. It must never panic, and whatever it
//! answers must start with the query's ID and have QR set.
//!
//! Run: `cargo +nightly fuzz run answer` (from the repository root).
#![no_main]

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shardgate::addrmap::AddressMap;
use shardgate::config::Config;
use shardgate::dns::{answer, Outcome, Transport};

const CONF: &str = r#"
[dns]
trusted_resolvers = ["192.0.2.53/32"]

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

fuzz_target!(|data: &[u8]| {
    let Some((&sel, query)) = data.split_first() else {
        return;
    };
    let client: IpAddr = match sel & 3 {
        0 => "192.0.2.53".parse().unwrap(),
        1 => "10.1.0.7".parse().unwrap(),
        2 => "fd00:a::1".parse().unwrap(),
        _ => "203.0.113.9".parse().unwrap(),
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
            assert!(out[2] & 0x80 != 0);
            if transport == Transport::Udp {
                assert!(out.len() <= 1232);
            }
        }
    }
});
