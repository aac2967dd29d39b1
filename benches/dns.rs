//! Per-query cost of `dns::answer` on the common query (56-byte A query with
//! EDNS and a client cookie, as `dig` sends it) next to an answer path built
//! on NLnet Labs' `domain` crate (parse with `Message`, build with
//! `MessageBuilder`, same view selection and data), in the same run.
//! Also: an ECS query from a trusted resolver, an NXDOMAIN, and the common
//! query against a map with 1,000,000 prefixes.
//!
//! After criterion's groups it prints `ratio domain/shardgate` from an
//! interleaved timing loop of both paths.

mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use domain::base::iana::{Class, Rcode};
use domain::base::message_builder::StaticCompressor;
use domain::base::{Message, MessageBuilder, Name, ToName, Ttl};
use domain::rdata::A;
use shardgate::addrmap::AddressMap;
use shardgate::config::Config;
use shardgate::dns::{answer, Outcome, Transport};

const CONF: &str = r#"
[dns]
max_udp_payload = 1232
trusted_resolvers = ["192.0.2.53/32"]

[[zone]]
name = "svc.example."
ttl = 30
ns = ["ns1.svc.example."]
soa = { mname = "ns1.svc.example.", rname = "hostmaster.svc.example." }

[[view]]
name = "site-a"
prefixes = ["127.0.0.0/25", "10.1.0.0/16"]
record = [
  { name = "upf.svc.example.", type = "A", data = "10.0.1.5" },
  { name = "upf.svc.example.", type = "AAAA", data = "fd00:1::5" },
]

[[view]]
name = "site-b"
prefixes = ["127.0.0.128/25", "10.2.0.0/16"]
record = [
  { name = "upf.svc.example.", type = "A", data = "10.0.2.5" },
]

[[view]]
name = "default"
record = [
  { name = "upf.svc.example.", type = "A", data = "10.0.9.5" },
]
"#;

/// `upf.svc.example. A` with OPT (1232) and an 8-byte client COOKIE: 56 bytes.
fn query(name: &str, ecs: Option<[u8; 7]>) -> Vec<u8> {
    let mut opts = vec![0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    if let Some(e) = ecs {
        opts.extend_from_slice(&[0, 8, 0, 7]);
        opts.extend_from_slice(&e);
    }
    support::query_with_options(name, &opts)
}

/// The baseline: the same job done with `domain`'s parser and builder.
struct DomainPath {
    /// (view index or usize::MAX for default, lowercase name) -> addresses
    data: HashMap<(usize, Name<Vec<u8>>), Vec<Ipv4Addr>>,
}

impl DomainPath {
    fn new(conf: &Config) -> Self {
        let mut data: HashMap<(usize, Name<Vec<u8>>), Vec<Ipv4Addr>> = HashMap::new();
        for (vi, v) in conf.views.iter().enumerate() {
            for r in &v.records {
                if r.rtype == "A" {
                    let n = Name::<Vec<u8>>::from_str(&r.name).unwrap();
                    data.entry((vi, n))
                        .or_default()
                        .push(r.data.parse().unwrap());
                }
            }
        }
        DomainPath { data }
    }

    fn answer(
        &self,
        map: &AddressMap,
        query: &[u8],
        client: IpAddr,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let msg = Message::from_octets(query).ok()?;
        let q = msg.sole_question().ok()?;
        let opt = msg.opt();
        let view = map.select_view(client).view?;
        // domain's Name hashes and compares case-insensitively
        let qname: Name<Vec<u8>> = q.qname().to_name();
        let addrs = self.data.get(&(view, qname))?;
        out.clear();
        let target = StaticCompressor::new(std::mem::take(out));
        let mut b = MessageBuilder::from_target(target)
            .ok()?
            .start_answer(&msg, Rcode::NOERROR)
            .ok()?;
        b.header_mut().set_aa(true);
        for a in addrs {
            b.push((q.qname(), Class::IN, Ttl::from_secs(30), A::new(*a)))
                .ok()?;
        }
        let mut b = b.additional();
        if opt.is_some() {
            b.opt(|o| {
                o.set_udp_payload_size(1232);
                Ok(())
            })
            .ok()?;
        }
        *out = b.finish().into_target();
        Some(())
    }
}

fn bench(c: &mut Criterion) {
    let conf: Config = toml::from_str(CONF).unwrap();
    let map = AddressMap::build(&conf, Path::new(".")).unwrap();
    let q = query("upf.svc.example.", None);
    assert_eq!(q.len(), 56);
    let client: IpAddr = "10.1.0.7".parse().unwrap();
    let mut out = Vec::with_capacity(4096);
    let mut out2 = Vec::with_capacity(4096);

    // Both paths give the same answer.
    let dp = DomainPath::new(&conf);
    assert_eq!(
        answer(&map, &q, client, Transport::Udp, &mut out),
        Outcome::Answered {
            rcode: 0,
            truncated: false
        }
    );
    dp.answer(&map, &q, client, &mut out2).unwrap();
    assert_eq!(out, out2, "shardgate and domain answers differ");

    let mut g = c.benchmark_group("dns_answer");
    g.bench_function("a_edns_56B/shardgate", |b| {
        b.iter(|| {
            answer(
                &map,
                black_box(&q),
                black_box(client),
                Transport::Udp,
                &mut out,
            )
        })
    });
    g.bench_function("a_edns_56B/domain", |b| {
        b.iter(|| dp.answer(&map, black_box(&q), black_box(client), &mut out2))
    });

    let ecs_q = query("upf.svc.example.", Some([0, 1, 24, 0, 10, 2, 3]));
    let resolver: IpAddr = "192.0.2.53".parse().unwrap();
    g.bench_function("a_edns_ecs_trusted/shardgate", |b| {
        b.iter(|| {
            answer(
                &map,
                black_box(&ecs_q),
                black_box(resolver),
                Transport::Udp,
                &mut out,
            )
        })
    });
    let nx = query("nope.svc.example.", None);
    g.bench_function("nxdomain/shardgate", |b| {
        b.iter(|| {
            answer(
                &map,
                black_box(&nx),
                black_box(client),
                Transport::Udp,
                &mut out,
            )
        })
    });

    // 1,000,000 prefixes in the site-b view, from a prefixes file.
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::with_capacity(1_000_000 * 16);
    let mut x: u64 = 0x9e37_79b9;
    for _ in 0..1_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let a = Ipv4Addr::from(
            0x0b00_0000 | (x as u32 & 0x00ff_ffff) | ((x >> 32) as u32 & 0x3f00_0000),
        );
        body.push_str(&format!("{a}\n"));
    }
    std::fs::write(dir.path().join("big.txt"), body).unwrap();
    let big_conf = CONF.replace(
        "prefixes = [\"127.0.0.128/25\", \"10.2.0.0/16\"]",
        "prefixes = [\"127.0.0.128/25\", \"10.2.0.0/16\"]\nprefixes_file = \"big.txt\"",
    );
    let big_conf: Config = toml::from_str(&big_conf).unwrap();
    let t = Instant::now();
    let big = AddressMap::build(&big_conf, dir.path()).unwrap();
    eprintln!(
        "dns: AddressMap::build with a 1,000,000-line prefixes_file: {:.0} ms ({} distinct IPv4 prefixes)",
        t.elapsed().as_secs_f64() * 1e3,
        big.prefix_count().0
    );
    g.bench_function("a_edns_56B_1M_prefixes/shardgate", |b| {
        b.iter(|| {
            answer(
                &big,
                black_box(&q),
                black_box(client),
                Transport::Udp,
                &mut out,
            )
        })
    });
    g.finish();

    // Interleaved ratio, same run.
    let rounds = 5;
    let n = 400_000;
    let (mut ours, mut theirs) = (0f64, 0f64);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..n {
            black_box(answer(
                &map,
                black_box(&q),
                black_box(client),
                Transport::Udp,
                &mut out,
            ));
        }
        ours += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            black_box(dp.answer(&map, black_box(&q), black_box(client), &mut out2));
        }
        theirs += t.elapsed().as_secs_f64();
    }
    let per = |s: f64| s * 1e9 / (rounds * n) as f64;
    eprintln!(
        "dns: 56-byte A+EDNS query: shardgate {:.1} ns, domain path {:.1} ns, ratio domain/shardgate {:.1}x",
        per(ours),
        per(theirs),
        theirs / ours
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
