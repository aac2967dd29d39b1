//! Cost per input is bounded: the worst DNS inputs we know, sent to a real
//! `shardgate` (one shard, loopback) beside plain queries, in the same run,
//! and the shard's CPU per query for each, as a ratio to the plain query.
//!
//! Each UDP burst of one input ends with a plain query whose answer closes
//! it (so inputs that are refused or dropped cost no client timeouts, whose
//! idle time would otherwise be charged to them), and that query's cost,
//! measured by the plain input, is subtracted.
//!
//! CPU is the server's own: the sum of every thread's run time from
//! `/proc/PID/task/*/schedstat` (executor, DNS worker, background), so the
//! kernel's receive and send work on the server's side is included and the
//! client's is not. Inputs, each `COUNT` times per round, rounds interleaved:
//!
//! | input | what |
//! |---|---|
//! | plain | `upf.svc.example. A` with OPT (56 bytes), the baseline |
//! | flat_4k | the plain query padded to 4 KB with an EDNS padding option |
//! | pointer_chain_4k | 4 KB: a 254-link chain of compression pointers and ~300 additional records whose owners point into it (the old 60x attack) |
//! | pointer_chain_8rr | the chain with the 8 additional records the parser allows |
//! | max_name | a 255-byte question name (4 labels) under the zone |
//! | additional_8x255 | 8 additional records with 255-byte owner names |
//! | ecs_v4 / ecs_v6 | Client Subnet /24 and /56 from a trusted resolver |
//! | ecs_untrusted | Client Subnet from a source that is not trusted |
//! | tcp_plain / tcp_16k | over one TCP connection: the plain query, and a 16,384-byte message |
//! | tcp_plain_conn / tcp_16k_conn / tcp_64k_conn / tcp_pointer_chain_conn | the same, a 65,535-byte message (refused) and the 4 KB chain, one connection each |
//!
//! The server allows TCP messages up to 16,384 bytes (`tcp_max_query_bytes`,
//! the most an operator may set; the default is 4096): `tcp_16k` is the
//! largest message it reads, and `tcp_64k_conn` a 65,535-byte one, refused
//! at its length prefix by closing the connection. Prints one table (median of the rounds) and
//! `worst ratio`; the target of the hardening issue is <= 3x a plain query
//! (UDP inputs against the UDP plain query, TCP inputs against the plain
//! query sent the same way). Run with
//! `cargo bench --bench dns_adversarial` (env `ADV_COUNT`, `ADV_ROUNDS`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::query_with_options as query;

const BIN: &str = env!("CARGO_BIN_EXE_shardgate");

/// UDP queries in flight, for every input alike: 16 of the largest (4 KB,
/// about 8 KB of socket buffer each) fit the default 208 KB receive
/// buffer, so no input is measured with drops the others do not have.
const UDP_WINDOW: usize = 16;

fn free_port() -> u16 {
    // A UDP and a TCP port free together (DNS listens on both).
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn plain() -> Vec<u8> {
    query("upf.svc.example.", &[])
}

/// The plain query padded (EDNS option 12) to `total` bytes.
fn padded(total: usize) -> Vec<u8> {
    let base = plain().len() + 4;
    let pad = total - base;
    let mut opt = vec![0, 12];
    opt.extend_from_slice(&(pad as u16).to_be_bytes());
    opt.extend(std::iter::repeat_n(0u8, pad));
    query("upf.svc.example.", &opt)
}

fn ecs(family: u16, prefix: u8, addr: &[u8]) -> Vec<u8> {
    let mut opt = vec![0, 8];
    opt.extend_from_slice(&((4 + addr.len()) as u16).to_be_bytes());
    opt.extend_from_slice(&family.to_be_bytes());
    opt.extend_from_slice(&[prefix, 0]);
    opt.extend_from_slice(addr);
    query("upf.svc.example.", &opt)
}

/// Header, question `upf.svc.example. A`, then additional records: first a
/// record whose RDATA is a chain of `links` compression pointers (each to
/// the one before it, the first to the question name), then `owners`
/// records whose owner is a pointer to the chain's last link.
fn pointer_chain(links: usize, owners: usize) -> Vec<u8> {
    let mut m = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0];
    m.extend_from_slice(&((1 + owners) as u16).to_be_bytes());
    m.extend_from_slice(b"\x03upf\x03svc\x07example\x00");
    m.extend_from_slice(&[0, 1, 0, 1]);
    // The chain's record: root owner, type 65280 (private), class IN.
    m.extend_from_slice(&[0, 0xff, 0, 0, 1, 0, 0, 0, 30]);
    m.extend_from_slice(&((links * 2) as u16).to_be_bytes());
    let mut prev = 12usize;
    for _ in 0..links {
        let here = m.len();
        m.extend_from_slice(&(0xc000u16 | prev as u16).to_be_bytes());
        prev = here;
    }
    for _ in 0..owners {
        m.extend_from_slice(&(0xc000u16 | prev as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0xff, 0, 1, 0, 0, 0, 30, 0, 0]);
    }
    m
}

/// A 255-byte wire name ending in `svc.example.`: labels 63, 63, 63, 49.
fn max_name_text() -> String {
    let l = |n: usize, c: char| std::iter::repeat_n(c, n).collect::<String>();
    format!(
        "{}.{}.{}.{}.svc.example.",
        l(63, 'a'),
        l(63, 'b'),
        l(63, 'c'),
        l(49, 'd')
    )
}

fn max_name_wire() -> Vec<u8> {
    let mut w = Vec::new();
    for label in max_name_text().trim_end_matches('.').split('.') {
        w.push(label.len() as u8);
        w.extend_from_slice(label.as_bytes());
    }
    w.push(0);
    assert_eq!(w.len(), 255);
    w
}

/// The plain query with 8 more additional records owned by 255-byte names.
fn additional_long_owners(n: usize) -> Vec<u8> {
    let mut m = plain();
    let ar = u16::from_be_bytes([m[10], m[11]]) + n as u16;
    m[10..12].copy_from_slice(&ar.to_be_bytes());
    // Insert before the OPT record (keep OPT last, as clients send it).
    let opt_at = m.len() - 11;
    let opt = m.split_off(opt_at);
    let owner = max_name_wire();
    for _ in 0..n {
        m.extend_from_slice(&owner);
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 1]);
    }
    m.extend_from_slice(&opt);
    m
}

/// Queries per TCP input per round: fewer when each needs a connection.
fn tcp_count(count: usize, each: bool) -> usize {
    if each {
        count / 10
    } else {
        count / 4
    }
}

/// Run time of every thread of `pid`, ns.
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

struct Server {
    child: Child,
    dns: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (dns, admin) = (free_port(), free_port());
    let conf = format!(
        r#"
[server]
shards = 1
admin_listen = "127.0.0.1:{admin}"
state_dir = "state"

[dns]
listen = ["127.0.0.1:{dns}"]
trusted_resolvers = ["127.0.0.1/32"]
# The most an operator may allow (default 4096): the worst case.
tcp_max_query_bytes = 16384

[functions]
enabled = false

[[zone]]
name = "svc.example."
ttl = 30
ns = ["ns1.svc.example."]
soa = {{ mname = "ns1.svc.example.", rname = "hostmaster.svc.example." }}

[[view]]
name = "site"
prefixes = ["127.0.0.0/25", "10.1.0.0/16", "fd00:a::/48"]
record = [{{ name = "upf.svc.example.", type = "A", data = "10.0.1.5" }}]

[[view]]
name = "default"
record = [{{ name = "upf.svc.example.", type = "A", data = "10.0.9.5" }}]
"#
    );
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shardgate (cargo bench builds it)");
    let server = Server {
        child,
        dns: SocketAddr::from(([127, 0, 0, 1], dns)),
        _dir: dir,
    };
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    loop {
        c.send_to(&plain(), server.dns).unwrap();
        if c.recv_from(&mut buf).is_ok() {
            return server;
        }
        assert!(Instant::now() < end, "shardgate did not answer within 20 s");
    }
}

/// ID of the plain query that closes each UDP burst.
const SENTINEL_ID: u16 = 0xBEEF;

/// Send `q` `count` times over UDP from `from`, `window` at a time, each
/// burst followed by a plain query with [`SENTINEL_ID`]: the server answers
/// a socket's datagrams in order, so the sentinel's answer closes the burst
/// without waiting on a timeout for inputs that are (rightly) not answered.
/// Returns (answers to `q`, bursts sent).
fn run_udp(
    server: &Server,
    from: &UdpSocket,
    q: &[u8],
    count: usize,
    window: usize,
) -> (usize, usize) {
    let mut buf = vec![0u8; 65_536];
    let mut sentinel = plain();
    sentinel[..2].copy_from_slice(&SENTINEL_ID.to_be_bytes());
    let (mut sent, mut got, mut bursts) = (0, 0, 0);
    while sent < count {
        let burst = window.min(count - sent);
        for _ in 0..burst {
            from.send_to(q, server.dns).unwrap();
        }
        from.send_to(&sentinel, server.dns).unwrap();
        sent += burst;
        bursts += 1;
        loop {
            match from.recv_from(&mut buf) {
                Ok((n, _)) if n >= 2 && buf[..2] == SENTINEL_ID.to_be_bytes() => break,
                Ok(_) => got += 1,
                Err(_) => break,
            }
        }
    }
    (got, bursts)
}

/// Send `q` `count` times, each on a connection of its own; returns the
/// answers (a refusal closes the connection and counts none).
fn run_tcp_each(server: &Server, q: &[u8], count: usize) -> usize {
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    let mut got = 0;
    let mut len = [0u8; 2];
    let mut body = vec![0u8; 65_536];
    for _ in 0..count {
        let Ok(mut s) = TcpStream::connect(server.dns) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.set_nodelay(true).unwrap();
        if s.write_all(&framed).is_err() || s.read_exact(&mut len).is_err() {
            continue;
        }
        let n = usize::from(u16::from_be_bytes(len));
        if s.read_exact(&mut body[..n]).is_ok() {
            got += 1;
        }
    }
    got
}

/// Send `q` `count` times over one TCP connection, `window` pipelined.
fn run_tcp(server: &Server, q: &[u8], count: usize, window: usize) -> usize {
    let mut s = TcpStream::connect(server.dns).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    let (mut sent, mut got) = (0, 0);
    let mut len = [0u8; 2];
    let mut body = vec![0u8; 65_536];
    while sent < count {
        let burst = window.min(count - sent);
        for _ in 0..burst {
            s.write_all(&framed).unwrap();
        }
        sent += burst;
        for _ in 0..burst {
            if s.read_exact(&mut len).is_err() {
                return got;
            }
            let n = usize::from(u16::from_be_bytes(len));
            if s.read_exact(&mut body[..n]).is_err() {
                return got;
            }
            got += 1;
        }
    }
    got
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // we need: either way run once.
    let count: usize = std::env::var("ADV_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rounds: usize = std::env::var("ADV_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let udp_inputs: Vec<(&str, Vec<u8>, bool)> = vec![
        ("plain", plain(), true),
        ("flat_4k", padded(4_000), true),
        ("pointer_chain_4k", pointer_chain(254, 300), true),
        ("pointer_chain_8rr", pointer_chain(254, 7), true),
        ("max_name", query(&max_name_text(), &[]), true),
        ("additional_8x255", additional_long_owners(7), true),
        ("ecs_v4", ecs(1, 24, &[10, 1, 2]), true),
        ("ecs_v6", ecs(2, 56, &[0xfd, 0, 0, 0xa, 0, 0, 0]), true),
        ("ecs_untrusted", ecs(1, 24, &[10, 1, 2]), false),
    ];
    // (name, query, one connection per query): the first of each kind is
    // its baseline.
    let tcp_inputs: Vec<(&str, Vec<u8>, bool)> = vec![
        ("tcp_plain", plain(), false),
        ("tcp_16k", padded(16_384), false),
        ("tcp_plain_conn", plain(), true),
        ("tcp_16k_conn", padded(16_384), true),
        ("tcp_64k_conn", padded(65_535), true),
        ("tcp_pointer_chain_conn", pointer_chain(254, 300), true),
    ];
    let server = start();
    let pid = server.child.id();
    let trusted = UdpSocket::bind("127.0.0.1:0").unwrap();
    let untrusted = UdpSocket::bind("127.0.0.2:0").unwrap();
    for s in [&trusted, &untrusted] {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let names: Vec<&str> = udp_inputs
        .iter()
        .map(|i| i.0)
        .chain(tcp_inputs.iter().map(|i| i.0))
        .collect();
    // ns per query, per input, per round; answers per input.
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut answered = vec![0usize; names.len()];
    let mut sizes = vec![0usize; names.len()];
    for _ in 0..rounds {
        // The plain input runs first: its cost per query is what each
        // burst's sentinel cost the other inputs.
        let mut plain_ns = 0.0;
        for (i, (_, q, from_trusted)) in udp_inputs.iter().enumerate() {
            let from = if *from_trusted { &trusted } else { &untrusted };
            sizes[i] = q.len();
            let c0 = cpu_ns(pid);
            let (got, bursts) = run_udp(&server, from, q, count, UDP_WINDOW);
            let spent = (cpu_ns(pid) - c0) as f64;
            answered[i] += got;
            if i == 0 {
                plain_ns = spent / (count + bursts) as f64;
                per[i].push(plain_ns);
            } else {
                per[i].push((spent - bursts as f64 * plain_ns).max(0.0) / count as f64);
            }
        }
        for (j, (_, q, each)) in tcp_inputs.iter().enumerate() {
            let i = udp_inputs.len() + j;
            sizes[i] = q.len();
            let n = tcp_count(count, *each);
            let c0 = cpu_ns(pid);
            answered[i] += if *each {
                run_tcp_each(&server, q, n)
            } else {
                run_tcp(&server, q, n, 8)
            };
            per[i].push((cpu_ns(pid) - c0) as f64 / n as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let med: Vec<f64> = per.iter_mut().map(median).collect();
    let udp_base = med[0];
    let tcp_base = med[udp_inputs.len()];
    let conn_base = med[udp_inputs.len() + 2];
    println!(
        "dns_adversarial: shard CPU per query, median of {rounds} rounds of {count} \
         ({} per TCP kind on one connection, {} on a connection each)",
        tcp_count(count, false),
        tcp_count(count, true)
    );
    println!("| input | bytes | answered | CPU ns/query | ratio to plain |\n|---|---|---|---|---|");
    let mut worst = ("", 0f64);
    for (i, name) in names.iter().enumerate() {
        let (base, sent) = if i < udp_inputs.len() {
            (udp_base, rounds * count)
        } else {
            let each = tcp_inputs[i - udp_inputs.len()].2;
            (
                if each { conn_base } else { tcp_base },
                rounds * tcp_count(count, each),
            )
        };
        let ratio = med[i] / base;
        println!(
            "| {name} | {} | {:.1}% | {:.0} | {ratio:.2}x |",
            sizes[i],
            100.0 * answered[i] as f64 / sent as f64,
            med[i]
        );
        if ratio > worst.1 {
            worst = (name, ratio);
        }
    }
    println!(
        "dns_adversarial: worst ratio {:.2}x ({}), target <= 3x",
        worst.1, worst.0
    );
}
