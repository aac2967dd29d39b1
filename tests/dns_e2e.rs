//! End-to-end tests of the DNS address service: the real `shardgate` binary
//! on loopback, queried with the real `dig` and with raw sockets.
//!
//! Every test starts its own server on its own free port (killed on drop)
//! from a config written to a temporary directory.

mod support;
use support::dns::{a_records, header, query as build_query, QTYPE_A};
use support::{free_port, Process, BIN};

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::base::iana::Rcode;

// ---------------------------------------------------------------------------
// Server under test
// ---------------------------------------------------------------------------

struct Server {
    proc: Process,
    port: u16,
    dir: tempfile::TempDir,
}

/// Test settings substituted into the config template.
struct Opts {
    shards: usize,
    idle_ms: u64,
    max_conns: usize,
    grace_ms: u64,
    /// The two A records of upf.svc.example. in the `low` view.
    low_a: [&'static str; 2],
    /// `dns.tcp_max_connections_per_client`.
    per_client: u32,
    /// Extra `[dns.rrl]` lines (empty: rate limiting off).
    rrl: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            shards: 2,
            idle_ms: 1000,
            max_conns: 64,
            grace_ms: 3000,
            low_a: ["10.0.1.5", "10.0.1.6"],
            per_client: 64,
            rrl: "",
        }
    }
}

fn config_text(port: u16, o: &Opts) -> String {
    let big_txt: String = (0..20)
        .map(|i| {
            format!(
                "[[view.record]]\nname = \"big.svc.example.\"\ntype = \"TXT\"\ndata = \"{}{:03}\"\n",
                "x".repeat(197),
                i
            )
        })
        .collect();
    format!(
        r#"
[server]
shutdown_grace_ms = {grace}
admin_listen = "127.0.0.1:{admin}"

[dns]
listen = ["127.0.0.1:{port}", "[::1]:{port}"]
trusted_resolvers = ["127.0.0.9/32"]
tcp_idle_timeout_ms = {idle}
tcp_max_connections_per_shard = {conns}
tcp_max_connections_per_client = {per_client}
tcp_max_query_bytes = 512
{rrl}

[[zone]]
name = "svc.example."
ttl = 30
[zone.soa]
mname = "ns1.svc.example."
rname = "hostmaster.svc.example."
serial = 7

[[view]]
name = "low"
prefixes = ["127.0.0.0/25"]
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "{a0}"
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "{a1}"
{big_txt}
[[view]]
name = "high"
prefixes = ["127.0.0.128/25"]
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.2.5"

[[view]]
name = "v6"
prefixes = ["::1/128"]
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.6.5"
[[view.record]]
name = "upf.svc.example."
type = "AAAA"
data = "fd00::6:5"

[[view]]
name = "ecs"
prefixes = ["10.1.0.0/16"]
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.3.5"

[[view]]
name = "default"
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.0.5"
"#,
        grace = o.grace_ms,
        admin = free_port(),
        idle = o.idle_ms,
        conns = o.max_conns,
        per_client = o.per_client,
        rrl = if o.rrl.is_empty() {
            String::new()
        } else {
            format!("\n[dns.rrl]\n{}\n", o.rrl)
        },
        a0 = o.low_a[0],
        a1 = o.low_a[1],
    )
}

impl Server {
    fn start(o: Opts) -> Server {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shardgate.toml");
        std::fs::write(&path, config_text(port, &o)).unwrap();
        let args = vec![
            "run".into(),
            "--config".into(),
            path.into_os_string(),
            "--shards".into(),
            o.shards.to_string().into(),
        ];
        let mut server = Server::launch(args, port, dir);
        server.wait_log("shardgate serving DNS", Duration::from_secs(20));
        server
    }

    /// Start the binary with `args`, capturing its log; does not wait.
    fn launch(args: Vec<std::ffi::OsString>, port: u16, dir: tempfile::TempDir) -> Server {
        Server::launch_via(BIN, args, port, dir)
    }

    /// Like [`launch`](Self::launch), through another program (e.g. taskset).
    fn launch_via(
        program: &str,
        args: Vec<std::ffi::OsString>,
        port: u16,
        dir: tempfile::TempDir,
    ) -> Server {
        let mut cmd = Command::new(program);
        cmd.args(args).env("RUST_LOG", "info");
        Server {
            proc: Process::spawn(cmd, None),
            port,
            dir,
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("shardgate.toml")
    }

    fn log_text(&self) -> String {
        self.proc.log_text()
    }

    /// Wait until a log line contains `needle`; panics with the log on timeout
    /// or if the server exits first.
    fn wait_log(&mut self, needle: &str, timeout: Duration) {
        self.proc.wait_log(needle, timeout);
    }

    fn count_log(&self, needle: &str) -> usize {
        self.proc.count_log(needle)
    }

    fn signal(&self, sig: i32) {
        self.proc.signal(sig);
    }

    fn addr4(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn dig(&self, args: &[&str]) -> Dig {
        self.dig_at("127.0.0.1", args)
    }

    fn dig_at(&self, server: &str, args: &[&str]) -> Dig {
        let out = Command::new("dig")
            .arg(format!("@{server}"))
            .args([
                "-p",
                &self.port.to_string(),
                "+tries=1",
                "+time=2",
                "+nocookie",
            ])
            .args(args)
            .output()
            .expect("run dig (apt-get install dnsutils)");
        Dig::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

// ---------------------------------------------------------------------------
// dig output
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Dig {
    raw: String,
    status: String,
    flags: Vec<String>,
    /// (section, name, type, rdata)
    records: Vec<(String, String, String, String)>,
}

impl Dig {
    fn parse(raw: &str) -> Dig {
        let mut d = Dig {
            raw: raw.to_string(),
            ..Dig::default()
        };
        let mut section = String::new();
        for line in raw.lines() {
            if let Some(rest) = line.split("status: ").nth(1) {
                d.status = rest.split(',').next().unwrap_or("").trim().to_string();
            } else if let Some(rest) = line.strip_prefix(";; flags: ") {
                d.flags = rest
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
            } else if let Some(s) = line
                .strip_prefix(";; ")
                .and_then(|l| l.strip_suffix(" SECTION:"))
            {
                section = s.to_string();
            } else if line.trim().is_empty() {
                section.clear();
            } else if !line.starts_with(';') && !section.is_empty() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() >= 5 {
                    d.records.push((
                        section.clone(),
                        f[0].to_string(),
                        f[3].to_string(),
                        f[4..].join(" "),
                    ));
                }
            }
        }
        d
    }

    fn answers(&self, rtype: &str) -> BTreeSet<String> {
        self.records
            .iter()
            .filter(|r| r.0 == "ANSWER" && r.2 == rtype)
            .map(|r| r.3.clone())
            .collect()
    }

    fn count(&self, section: &str, rtype: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r.0 == section && r.2 == rtype)
            .count()
    }

    fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// Raw DNS
// ---------------------------------------------------------------------------

fn udp_client(src: &str) -> UdpSocket {
    let s = UdpSocket::bind((src, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

fn udp_ask(sock: &UdpSocket, server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    sock.send_to(query, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn tcp_connect(server: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&server, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn framed(q: &[u8]) -> Vec<u8> {
    let mut v = (q.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(q);
    v
}

fn tcp_read_msg(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg)?;
    Ok(msg)
}

/// True when the peer closed the connection (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// The low view still answers, over UDP and TCP.
fn assert_still_serving(srv: &Server) {
    let c = udp_client("127.0.0.5");
    let resp = udp_ask(
        &c,
        srv.addr4(),
        &build_query(4242, "upf.svc.example.", QTYPE_A, true),
    )
    .expect("server still answers UDP");
    assert_eq!(
        a_records(&resp),
        [Ipv4Addr::new(10, 0, 1, 5), Ipv4Addr::new(10, 0, 1, 6)].into()
    );
    let mut t = tcp_connect(srv.addr4());
    t.write_all(&framed(&build_query(
        4343,
        "upf.svc.example.",
        QTYPE_A,
        false,
    )))
    .unwrap();
    let resp = tcp_read_msg(&mut t).expect("server still answers TCP");
    assert_eq!(header(&resp).0, 4343);
    assert_eq!(a_records(&resp).len(), 2);
}

// ---------------------------------------------------------------------------
// Views, ECS, rcodes, truncation
// ---------------------------------------------------------------------------

#[test]
fn each_source_gets_its_own_view_over_udp_tcp_and_ipv6() {
    let srv = Server::start(Opts::default());
    let low = set(&["10.0.1.5", "10.0.1.6"]);
    let high = set(&["10.0.2.5"]);
    for transport in ["+notcp", "+tcp"] {
        let d = srv.dig(&["-b", "127.0.0.5", transport, "upf.svc.example.", "A"]);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(
            d.answers("A"),
            low,
            "{transport} from 127.0.0.5:\n{}",
            d.raw
        );
        assert!(d.has_flag("aa"), "{}", d.raw);
        let d = srv.dig(&["-b", "127.0.0.200", transport, "upf.svc.example.", "A"]);
        assert_eq!(
            d.answers("A"),
            high,
            "{transport} from 127.0.0.200:\n{}",
            d.raw
        );
        let d = srv.dig_at("::1", &["-b", "::1", transport, "upf.svc.example.", "AAAA"]);
        assert_eq!(
            d.answers("AAAA"),
            set(&["fd00::6:5"]),
            "{transport} from ::1:\n{}",
            d.raw
        );
        let d = srv.dig_at("::1", &["-b", "::1", transport, "upf.svc.example.", "A"]);
        assert_eq!(
            d.answers("A"),
            set(&["10.0.6.5"]),
            "{transport} from ::1:\n{}",
            d.raw
        );
    }
    // Names are case-insensitive and the question is echoed as sent.
    let d = srv.dig(&["-b", "127.0.0.200", "UpF.SVC.example.", "A"]);
    assert_eq!(d.answers("A"), high, "{}", d.raw);
    assert!(
        d.raw.contains(";UpF.SVC.example."),
        "question echoed as sent:\n{}",
        d.raw
    );
}

/// `(thread name, CPUs it may run on)` of every thread of process `pid`.
fn threads_of(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("")
            .trim()
            .to_owned();
        out.push((comm.trim().to_owned(), cpus));
    }
    out
}

#[test]
fn dns_udp_is_served_by_pinned_worker_threads() {
    {
        let udp_io = "thread";
        let mut srv = Server::start(Opts::default());
        // Answers by view over UDP, IPv4 and IPv6, in either mode.
        for _ in 0..3 {
            let d = srv.dig(&["-b", "127.0.0.5", "upf.svc.example.", "A"]);
            assert_eq!(
                d.answers("A"),
                set(&["10.0.1.5", "10.0.1.6"]),
                "{udp_io}: {}",
                d.raw
            );
            let d = srv.dig(&["-b", "127.0.0.200", "upf.svc.example.", "A"]);
            assert_eq!(d.answers("A"), set(&["10.0.2.5"]), "{udp_io}: {}", d.raw);
            let d = srv.dig_at("::1", &["-b", "::1", "upf.svc.example.", "AAAA"]);
            assert_eq!(
                d.answers("AAAA"),
                set(&["fd00::6:5"]),
                "{udp_io}: {}",
                d.raw
            );
        }
        let workers: Vec<(String, String)> = threads_of(srv.proc.pid())
            .into_iter()
            .filter(|(name, _)| name.starts_with("shard-") && name.ends_with("-dns"))
            .collect();
        {
            // Two shards, two listen addresses: one worker per socket, each
            // pinned to the CPU its shard was placed on.
            assert_eq!(workers.len(), 4, "{workers:?}");
            let log = srv.log_text();
            for (name, cpus) in &workers {
                let shard = &name["shard-".len()..name.len() - "-dns".len()];
                let placed = format!("shard {shard} on CPU {cpus}");
                assert!(
                    log.contains(&placed),
                    "{name} runs on CPU(s) {cpus}, not where its shard is:\n{log}"
                );
            }
        }
        // Every UDP answer is counted by its shard (the workers report to
        // it), and a stop is prompt.
        srv.signal(libc::SIGTERM);
        srv.wait_log("per_shard=", Duration::from_secs(5));
        let log = srv.log_text();
        let udp: u64 = log
            .split("udp_answered=")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("udp_answered in the stop line");
        assert_eq!(udp, 9, "{udp_io}: every UDP answer counted once:\n{log}");
    }
}

#[test]
fn ecs_picks_the_view_only_from_trusted_resolvers() {
    let srv = Server::start(Opts::default());
    let trusted = srv.dig(&[
        "-b",
        "127.0.0.9",
        "+subnet=10.1.2.0/24",
        "upf.svc.example.",
        "A",
    ]);
    assert_eq!(trusted.answers("A"), set(&["10.0.3.5"]), "{}", trusted.raw);
    assert!(
        trusted.raw.contains("CLIENT-SUBNET: 10.1.2.0/24/16"),
        "answer carries the ECS scope of the matched /16:\n{}",
        trusted.raw
    );
    let untrusted = srv.dig(&[
        "-b",
        "127.0.0.5",
        "+subnet=10.1.2.0/24",
        "upf.svc.example.",
        "A",
    ]);
    assert_eq!(
        untrusted.answers("A"),
        set(&["10.0.1.5", "10.0.1.6"]),
        "ECS from an untrusted source is ignored:\n{}",
        untrusted.raw
    );
    // The trusted resolver without ECS is answered by its own address.
    let plain = srv.dig(&["-b", "127.0.0.9", "upf.svc.example.", "A"]);
    assert_eq!(
        plain.answers("A"),
        set(&["10.0.1.5", "10.0.1.6"]),
        "{}",
        plain.raw
    );
}

#[test]
fn rcodes_nxdomain_nodata_refused_notimp_formerr() {
    let srv = Server::start(Opts::default());
    let d = srv.dig(&["-b", "127.0.0.5", "nothere.svc.example.", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert_eq!(
        d.count("AUTHORITY", "SOA"),
        1,
        "NXDOMAIN carries the SOA:\n{}",
        d.raw
    );

    let d = srv.dig(&["-b", "127.0.0.5", "upf.svc.example.", "MX"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(
        d.records.iter().filter(|r| r.0 == "ANSWER").count(),
        0,
        "{}",
        d.raw
    );
    assert_eq!(
        d.count("AUTHORITY", "SOA"),
        1,
        "NODATA carries the SOA:\n{}",
        d.raw
    );

    let d = srv.dig(&["-b", "127.0.0.5", "www.example.com.", "A"]);
    assert_eq!(d.status, "REFUSED", "{}", d.raw);

    let d = srv.dig(&["-b", "127.0.0.5", "+opcode=2", "upf.svc.example.", "A"]);
    assert_eq!(d.status, "NOTIMP", "{}", d.raw);

    // Two questions: FORMERR with the ID echoed.
    let mut q = build_query(0xBEEF, "upf.svc.example.", QTYPE_A, false);
    q[5] = 2;
    q.extend_from_slice(&q.clone()[12..]);
    let c = udp_client("127.0.0.5");
    let resp = udp_ask(&c, srv.addr4(), &q).expect("FORMERR answer");
    assert_eq!(header(&resp), (0xBEEF, true, Rcode::FORMERR));
}

#[test]
fn truncated_over_udp_then_complete_over_tcp() {
    let srv = Server::start(Opts::default());
    let udp = srv.dig(&[
        "-b",
        "127.0.0.5",
        "+ignore",
        "+bufsize=1232",
        "big.svc.example.",
        "TXT",
    ]);
    assert!(
        udp.has_flag("tc"),
        "20 × 200-byte TXT do not fit 1232 bytes:\n{}",
        udp.raw
    );
    // Without +ignore dig retries over TCP and gets all of them.
    let full = srv.dig(&["-b", "127.0.0.5", "big.svc.example.", "TXT"]);
    assert!(
        full.raw.contains("Truncated, retrying in TCP mode"),
        "dig saw TC and retried:\n{}",
        full.raw
    );
    assert!(!full.has_flag("tc"), "{}", full.raw);
    assert_eq!(full.answers("TXT").len(), 20, "{}", full.raw);
    // Plain 512-byte DNS (no EDNS) is truncated too.
    let noedns = srv.dig(&[
        "-b",
        "127.0.0.5",
        "+ignore",
        "+noedns",
        "big.svc.example.",
        "TXT",
    ]);
    assert!(noedns.has_flag("tc"), "{}", noedns.raw);
}

// ---------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Send `packets` in bursts, collect every reply, and check: a packet
/// shorter than a header or with QR set gets nothing; every other packet
/// gets exactly one reply with its ID and QR set.
fn check_replies(srv: &Server, packets: &[Vec<u8>], expect_rcode: Option<Rcode>) {
    let c = udp_client("127.0.0.5");
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for chunk in packets.chunks(40) {
        let mut want: Vec<u16> = Vec::new();
        for p in chunk {
            c.send_to(p, srv.addr4()).unwrap();
            if p.len() >= 12 && p[2] & 0x80 == 0 {
                want.push(u16::from_be_bytes([p[0], p[1]]));
            }
        }
        let mut got: Vec<u16> = Vec::new();
        let mut buf = vec![0u8; 65535];
        while let Ok((n, _)) = c.recv_from(&mut buf) {
            let resp = &buf[..n];
            assert!(n >= 12, "reply shorter than a header");
            assert!(resp[2] & 0x80 != 0, "reply has QR set");
            if let Some(rcode) = expect_rcode {
                assert_eq!(header(resp).2, rcode, "reply {:02x?}", resp);
            }
            got.push(u16::from_be_bytes([resp[0], resp[1]]));
            if got.len() == want.len() {
                break;
            }
        }
        want.sort();
        got.sort();
        assert_eq!(got, want, "one reply per header-sized, QR=0 datagram");
    }
}

#[test]
fn random_and_truncated_packets_get_formerr_or_nothing_and_service_goes_on() {
    let srv = Server::start(Opts::default());
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let random: Vec<Vec<u8>> = (0..400)
        .map(|_| {
            let len = (rng.next() % 600) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        })
        .collect();
    check_replies(&srv, &random, None);

    let q = build_query(0x1234, "upf.svc.example.", QTYPE_A, true);
    let truncated: Vec<Vec<u8>> = (0..q.len()).map(|n| q[..n].to_vec()).collect();
    // Cut anywhere after the header: FORMERR (or nothing before 12 bytes).
    let (short, cut): (Vec<_>, Vec<_>) = truncated.into_iter().partition(|p| p.len() < 12);
    check_replies(&srv, &short, None);
    // A cut inside the trailing OPT record still leaves a complete question,
    // so only cuts up to the end of the question are checked for FORMERR.
    let question_end = q.len() - 11;
    let cut: Vec<Vec<u8>> = cut.into_iter().filter(|p| p.len() < question_end).collect();
    check_replies(&srv, &cut, Some(Rcode::FORMERR));
    assert_still_serving(&srv);
}

#[test]
fn bad_labels_and_compression_loops_get_formerr() {
    let srv = Server::start(Opts::default());
    let hdr = |id: u16| {
        let mut h = id.to_be_bytes().to_vec();
        h.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        h
    };
    let mut packets = Vec::new();
    // Label longer than the rest of the packet.
    let mut p = hdr(1);
    p.extend_from_slice(&[63, b'a', b'b']);
    packets.push(p);
    // Reserved label types 0b01 and 0b10.
    for (id, t) in [(2u16, 0x40u8), (3, 0x80)] {
        let mut p = hdr(id);
        p.extend_from_slice(&[t | 1, b'a', 0, 0, 1, 0, 1]);
        packets.push(p);
    }
    // A pointer to itself (offset 12).
    let mut p = hdr(4);
    p.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    packets.push(p);
    // Two pointers pointing at each other.
    let mut p = hdr(5);
    p.extend_from_slice(&[3, b'u', b'p', b'f', 0xC0, 18, 0xC0, 16, 0, 1, 0, 1]);
    packets.push(p);
    // A pointer past the end.
    let mut p = hdr(6);
    p.extend_from_slice(&[0xC0, 200, 0, 1, 0, 1]);
    packets.push(p);
    // A name longer than 255 bytes.
    let mut p = hdr(7);
    for _ in 0..5 {
        p.push(63);
        p.extend_from_slice(&[b'a'; 63]);
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    packets.push(p);
    check_replies(&srv, &packets, Some(Rcode::FORMERR));

    // The same garbage inside a valid TCP frame: FORMERR, connection kept.
    let mut t = tcp_connect(srv.addr4());
    t.write_all(&framed(&packets[3])).unwrap();
    let resp = tcp_read_msg(&mut t).unwrap();
    assert_eq!(header(&resp), (4, true, Rcode::FORMERR));
    t.write_all(&framed(&build_query(8, "upf.svc.example.", QTYPE_A, false)))
        .unwrap();
    let resp = tcp_read_msg(&mut t).unwrap();
    assert_eq!(header(&resp), (8, true, Rcode::NOERROR));
    assert_still_serving(&srv);
}

// ---------------------------------------------------------------------------
// TCP behaviour
// ---------------------------------------------------------------------------

#[test]
fn tcp_pipelined_queries_are_answered_in_order() {
    let srv = Server::start(Opts::default());
    let mut t = tcp_connect(srv.addr4());
    let mut burst = Vec::new();
    for id in 1..=10u16 {
        let name = if id % 3 == 0 {
            "nothere.svc.example."
        } else {
            "upf.svc.example."
        };
        burst.extend_from_slice(&framed(&build_query(id, name, QTYPE_A, id % 2 == 0)));
    }
    t.write_all(&burst).unwrap();
    for id in 1..=10u16 {
        let resp = tcp_read_msg(&mut t).unwrap();
        let (rid, qr, rcode) = header(&resp);
        assert_eq!((rid, qr), (id, true), "answers come back in query order");
        let want = if id % 3 == 0 {
            Rcode::NXDOMAIN
        } else {
            Rcode::NOERROR
        };
        assert_eq!(rcode, want);
    }
    // A query dribbled a byte at a time is still answered.
    for b in framed(&build_query(77, "upf.svc.example.", QTYPE_A, false)) {
        t.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(header(&tcp_read_msg(&mut t).unwrap()).0, 77);
}

#[test]
fn tcp_huge_length_prefix_closes_only_that_connection() {
    let srv = Server::start(Opts::default());
    let mut bad = tcp_connect(srv.addr4());
    bad.write_all(&[0xFF, 0xFF, 0, 0, 0, 0]).unwrap();
    assert!(
        closed_within(&mut bad, Duration::from_secs(1)),
        "65535 > tcp_max_query_bytes closes"
    );
    let mut bad = tcp_connect(srv.addr4());
    bad.write_all(&[0x02, 0x01]).unwrap(); // 513 > 512
    assert!(closed_within(&mut bad, Duration::from_secs(1)));
    assert_still_serving(&srv);
}

#[test]
fn a_slow_tcp_client_costs_only_its_own_connection() {
    let srv = Server::start(Opts {
        idle_ms: 1000,
        ..Opts::default()
    });
    // Slowloris: a length prefix, then a byte now and then.
    let mut slow = tcp_connect(srv.addr4());
    let opened = Instant::now();
    slow.write_all(&[0, 40, 0x12]).unwrap();
    let dribbler = {
        let mut s = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(150));
                if s.write_all(&[0]).is_err() {
                    break;
                }
            }
        })
    };
    // Meanwhile everyone else is served.
    for _ in 0..5 {
        assert_still_serving(&srv);
    }
    // The slow connection is closed at the idle deadline although it keeps
    // sending: progress does not extend it.
    assert!(
        closed_within(&mut slow, Duration::from_secs(3)),
        "slow client closed"
    );
    let held = opened.elapsed();
    assert!(
        held >= Duration::from_millis(800) && held < Duration::from_millis(2500),
        "closed after {held:?}, idle timeout 1000 ms"
    );
    dribbler.join().unwrap();
    // A silent connection is closed at the idle deadline too.
    let mut idle = tcp_connect(srv.addr4());
    assert!(closed_within(&mut idle, Duration::from_secs(3)));
    assert_still_serving(&srv);
}

#[test]
fn tcp_connections_over_the_per_shard_cap_are_closed_at_once() {
    let srv = Server::start(Opts {
        shards: 1,
        max_conns: 4,
        idle_ms: 10_000,
        ..Opts::default()
    });
    let mut held: Vec<TcpStream> = Vec::new();
    for id in 0..4u16 {
        let mut t = tcp_connect(srv.addr4());
        t.write_all(&framed(&build_query(
            id,
            "upf.svc.example.",
            QTYPE_A,
            false,
        )))
        .unwrap();
        assert_eq!(
            header(&tcp_read_msg(&mut t).unwrap()).0,
            id,
            "connection {id} served"
        );
        held.push(t);
    }
    let mut extra = tcp_connect(srv.addr4());
    let _ = extra.write_all(&framed(&build_query(
        99,
        "upf.svc.example.",
        QTYPE_A,
        false,
    )));
    let t0 = Instant::now();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)),
        "fifth connection refused"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "closed at once, not at the idle timeout"
    );
    // The held ones still work; freeing one makes room.
    held[0]
        .write_all(&framed(&build_query(
            50,
            "upf.svc.example.",
            QTYPE_A,
            false,
        )))
        .unwrap();
    assert_eq!(header(&tcp_read_msg(&mut held[0]).unwrap()).0, 50);
    held.pop().unwrap().shutdown(Shutdown::Both).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut again = tcp_connect(srv.addr4());
    again
        .write_all(&framed(&build_query(
            51,
            "upf.svc.example.",
            QTYPE_A,
            false,
        )))
        .unwrap();
    assert_eq!(header(&tcp_read_msg(&mut again).unwrap()).0, 51);
}

/// TCP from `src` (an address on loopback) to `server`.
fn tcp_connect_from(src: &str, server: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(src.parse().unwrap(), 0).into())
        .unwrap();
    s.connect_timeout(&server.into(), Duration::from_secs(5))
        .unwrap();
    let t: TcpStream = s.into();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    t
}

#[test]
fn one_client_cannot_hold_every_tcp_connection() {
    let srv = Server::start(Opts {
        shards: 1,
        max_conns: 16,
        per_client: 2,
        idle_ms: 10_000,
        ..Opts::default()
    });
    let ask = |t: &mut TcpStream, id: u16| {
        t.write_all(&framed(&build_query(
            id,
            "upf.svc.example.",
            QTYPE_A,
            false,
        )))
        .unwrap();
        header(&tcp_read_msg(t).unwrap()).0
    };
    let mut held: Vec<TcpStream> = (0..2u16)
        .map(|id| {
            let mut t = tcp_connect_from("127.0.0.1", srv.addr4());
            assert_eq!(ask(&mut t, id), id, "connection {id} of the client served");
            t
        })
        .collect();
    // A third from the same address is closed; another client is served.
    let mut third = tcp_connect_from("127.0.0.1", srv.addr4());
    let _ = third.write_all(&framed(&build_query(3, "upf.svc.example.", QTYPE_A, false)));
    assert!(
        closed_within(&mut third, Duration::from_secs(3)),
        "the client's third connection is refused"
    );
    let mut other = tcp_connect_from("127.0.0.20", srv.addr4());
    assert_eq!(ask(&mut other, 9), 9, "another client is still served");
    assert_eq!(ask(&mut held[0], 10), 10, "the held ones still work");
    held.pop();
    std::thread::sleep(Duration::from_millis(200));
    let mut again = tcp_connect_from("127.0.0.1", srv.addr4());
    assert_eq!(
        ask(&mut again, 11),
        11,
        "a freed slot is the client's again"
    );
}

#[test]
fn response_rate_limiting_drops_and_slips_per_source_prefix() {
    let srv = Server::start(Opts {
        shards: 1,
        rrl: "enabled = true\nrate = 5\nslip = 2\nipv4_prefix = 24",
        ..Opts::default()
    });
    // 60 queries at once from one /24: about a second's budget (5) is
    // answered, then every second limited answer slips (TC=1) and the
    // others are dropped.
    let flood = udp_client("127.0.0.3");
    flood
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for id in 0..60u16 {
        flood
            .send_to(
                &build_query(id, "upf.svc.example.", QTYPE_A, false),
                srv.addr4(),
            )
            .unwrap();
    }
    let (mut full, mut slipped) = (0, 0);
    let mut buf = [0u8; 1500];
    while let Ok((n, _)) = flood.recv_from(&mut buf) {
        let msg = &buf[..n];
        if msg[2] & 0x02 != 0 {
            assert!(
                a_records(msg).is_empty(),
                "a slipped answer carries no data"
            );
            slipped += 1;
        } else {
            assert!(!a_records(msg).is_empty());
            full += 1;
        }
    }
    assert!(
        (5..=8).contains(&full),
        "{full} full answers within the budget"
    );
    let limited = 60 - full;
    assert!(
        slipped >= limited / 2 - 1 && slipped <= limited / 2 + 1,
        "{slipped} slipped of {limited} limited (slip = 2)"
    );
    // Another /24 has a budget of its own, and TCP is never limited.
    let other = udp_client("127.0.1.3");
    assert!(udp_ask(
        &other,
        srv.addr4(),
        &build_query(1, "upf.svc.example.", QTYPE_A, false)
    )
    .is_some());
    let mut t = tcp_connect_from("127.0.0.3", srv.addr4());
    t.write_all(&framed(&build_query(2, "upf.svc.example.", QTYPE_A, false)))
        .unwrap();
    assert!(!a_records(&tcp_read_msg(&mut t).unwrap()).is_empty());
}

// ---------------------------------------------------------------------------
// Reload and shutdown
// ---------------------------------------------------------------------------

/// Valid and invalid reloads while two clients query over UDP.
#[test]
fn sighup_reload_under_load_never_serves_a_wrong_or_mixed_answer() {
    let mut srv = Server::start(Opts::default());
    let v1: BTreeSet<Ipv4Addr> = [Ipv4Addr::new(10, 0, 1, 5), Ipv4Addr::new(10, 0, 1, 6)].into();
    let v2: BTreeSet<Ipv4Addr> = [Ipv4Addr::new(10, 0, 9, 5), Ipv4Addr::new(10, 0, 9, 6)].into();

    // Bounded background load: sequential UDP queries from two sources.
    let stop = Arc::new(AtomicBool::new(false));
    let v2_seen_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let server = srv.addr4();
    let loaders: Vec<_> = ["127.0.0.5", "127.0.0.77"]
        .into_iter()
        .map(|src| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let c = udp_client(src);
                let mut answers: Vec<(Instant, BTreeSet<Ipv4Addr>)> = Vec::new();
                let mut lost = 0;
                let end = Instant::now() + Duration::from_secs(20);
                let mut id = 0u16;
                while !stop.load(Ordering::Relaxed)
                    && Instant::now() < end
                    && answers.len() < 200_000
                {
                    id = id.wrapping_add(1);
                    let sent = Instant::now();
                    match udp_ask(
                        &c,
                        server,
                        &build_query(id, "upf.svc.example.", QTYPE_A, true),
                    ) {
                        Some(resp) => {
                            assert_eq!(header(&resp).0, id);
                            answers.push((sent, a_records(&resp)));
                        }
                        None => lost += 1,
                    }
                }
                (answers, lost)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(300));
    let o = Opts {
        low_a: ["10.0.9.5", "10.0.9.6"],
        ..Opts::default()
    };
    std::fs::write(srv.config_path(), config_text(srv.port, &o)).unwrap();
    srv.signal(libc::SIGHUP);
    srv.wait_log("serving address map version 2", Duration::from_secs(10));
    *v2_seen_at.lock().unwrap() = Some(Instant::now());
    std::thread::sleep(Duration::from_millis(300));

    // An invalid file is rejected with its problems logged; v2 keeps serving.
    let broken = config_text(srv.port, &o).replace("127.0.0.128/25", "127.0.0.128/33");
    std::fs::write(srv.config_path(), broken).unwrap();
    srv.signal(libc::SIGHUP);
    srv.wait_log("rejected", Duration::from_secs(10));
    assert!(
        srv.count_log("127.0.0.128/33") + srv.count_log("prefixes") >= 1,
        "{}",
        srv.log_text()
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);

    let t2 = v2_seen_at.lock().unwrap().unwrap();
    for l in loaders {
        let (answers, lost) = l.join().unwrap();
        assert!(answers.len() > 100, "load ran ({} answers)", answers.len());
        assert_eq!(lost, 0, "no query went unanswered");
        let mut saw = (false, false);
        for (sent, a) in &answers {
            if *a == v1 {
                saw.0 = true;
                assert!(
                    *sent < t2,
                    "old answer for a query sent after the reload was logged"
                );
            } else if *a == v2 {
                saw.1 = true;
            } else {
                panic!("wrong or mixed answer {a:?}");
            }
        }
        assert!(saw.0 && saw.1, "load saw both generations");
    }
    assert!(!srv.log_text().contains("serving address map version 3"));
}

/// Pin the calling thread to one CPU.
fn pin_thread(cpu: usize) {
    // SAFETY: affinity of the calling thread, zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

#[test]
fn flows_stay_on_the_shard_of_the_cpu_they_arrive_on() {
    // SAFETY: sysconf has no preconditions.
    if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    let mut srv = Server::start(Opts::default());
    let log = srv.log_text();
    let shard_of_cpu = |cpu: usize| -> usize {
        let needle = format!(" on CPU {cpu}");
        let at = log.find(&needle).expect("placement logged");
        let head = &log[..at];
        head[head.rfind("shard ").unwrap() + 6..].parse().unwrap()
    };
    let server = srv.addr4();
    let client_cpu = 1;
    std::thread::spawn(move || {
        pin_thread(client_cpu);
        let c = udp_client("127.0.0.5");
        for id in 0..40u16 {
            let resp = udp_ask(
                &c,
                server,
                &build_query(id, "upf.svc.example.", QTYPE_A, false),
            );
            assert!(resp.is_some());
            let mut t = tcp_connect(server);
            t.write_all(&framed(&build_query(
                id,
                "upf.svc.example.",
                QTYPE_A,
                false,
            )))
            .unwrap();
            tcp_read_msg(&mut t).unwrap();
        }
    })
    .join()
    .unwrap();
    srv.signal(libc::SIGTERM);
    srv.wait_log("per_shard=", Duration::from_secs(5));
    let log = srv.log_text();
    let list = log.split("per_shard=[").nth(1).unwrap();
    let counts: Vec<u64> = list[..list.find(']').unwrap()]
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    let mut want = vec![0u64; counts.len()];
    want[shard_of_cpu(client_cpu)] = 80;
    assert_eq!(
        counts, want,
        "every UDP and TCP query answered by the shard on the client's CPU"
    );
}

#[test]
fn shards_are_pinned_within_the_process_cpu_affinity() {
    // SAFETY: sysconf has no preconditions.
    if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shardgate.toml");
    std::fs::write(&path, config_text(port, &Opts::default())).unwrap();
    let mut srv = Server::launch_via(
        "taskset",
        vec![
            "-c".into(),
            "1".into(),
            BIN.into(),
            "run".into(),
            "--config".into(),
            path.into_os_string(),
        ],
        port,
        dir,
    );
    srv.wait_log("shardgate serving DNS", Duration::from_secs(20));
    let log = srv.log_text();
    assert!(
        log.contains("with 1 shard(s) (shard 0 on CPU 1;"),
        "taskset -c 1: one shard, on CPU 1:\n{log}"
    );
    assert_still_serving(&srv);
}

#[test]
fn sighup_on_the_embedded_default_is_a_logged_no_op() {
    // The embedded default listens on fixed ports (8053, admin 9353); only
    // SIGHUP handling is checked here, and only when those ports are free.
    let mut srv = Server::launch(
        vec!["run".into(), "--shards".into(), "1".into()],
        8053,
        tempfile::tempdir().unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if srv.count_log("serving DNS") > 0 {
            break;
        }
        if srv.proc.try_exit().is_some() {
            assert!(
                srv.log_text().contains("start-up failed")
                    || srv.log_text().contains("cannot bind"),
                "only a port clash may stop the embedded default:\n{}",
                srv.log_text()
            );
            eprintln!("skipped: the embedded default's fixed ports are in use");
            return;
        }
        assert!(Instant::now() < end, "{}", srv.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    // The embedded default serves the built-in example functions on 8054,
    // over both surfaces.
    for (surface, name) in [
        ("--http", "checksum"),
        ("--udp", "classify"),
        ("--http", "header_rewrite"),
        ("--udp", "ttl_decrement"),
    ] {
        let out = Command::new(BIN)
            .args(["invoke", surface, "127.0.0.1:8054", name, "--data"])
            .arg("example payload of some length")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{surface} {name}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            srv.log_text()
        );
    }
    srv.signal(libc::SIGHUP);
    srv.wait_log("nothing to reload", Duration::from_secs(5));
    // Still serving the embedded map afterwards.
    srv.signal(libc::SIGTERM);
    let status = srv
        .proc
        .wait_exit(Duration::from_secs(60))
        .expect("shardgate exits after SIGTERM");
    assert!(status.success());
}

#[test]
fn sigterm_finishes_in_flight_tcp_then_exits_zero_promptly() {
    let mut srv = Server::start(Opts {
        grace_ms: 3000,
        ..Opts::default()
    });
    // A TCP query half sent when SIGTERM arrives.
    let mut t = tcp_connect(srv.addr4());
    let q = framed(&build_query(31, "upf.svc.example.", QTYPE_A, false));
    t.write_all(&q[..7]).unwrap();
    // An idle connection, which is simply closed.
    let mut idle = tcp_connect(srv.addr4());
    std::thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    srv.signal(libc::SIGTERM);
    srv.wait_log("stopping", Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        closed_within(&mut idle, Duration::from_secs(1)),
        "idle connection closed at stop"
    );
    // No new connections once stopping.
    assert!(
        TcpStream::connect_timeout(&srv.addr4(), Duration::from_millis(500)).is_err(),
        "listeners closed"
    );
    // The in-flight query is completed and answered, then the connection closes.
    t.write_all(&q[7..]).unwrap();
    let resp = tcp_read_msg(&mut t).expect("in-flight query answered during shutdown");
    assert_eq!(header(&resp), (31, true, Rcode::NOERROR));
    assert!(closed_within(&mut t, Duration::from_secs(2)));
    // Then the process exits 0 well within the grace period.
    let status = loop {
        if let Some(s) = srv.proc.try_exit() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(3000),
            "exit within shutdown_grace_ms"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        srv.log_text()
    );
}

#[test]
fn sigterm_with_a_stalled_in_flight_query_exits_zero_at_the_grace_deadline() {
    let mut srv = Server::start(Opts {
        grace_ms: 1000,
        idle_ms: 30_000,
        ..Opts::default()
    });
    // Half a query that never completes.
    let mut t = tcp_connect(srv.addr4());
    t.write_all(&[0, 30, 0x12, 0x34]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    srv.signal(libc::SIGTERM);
    let status = loop {
        if let Some(s) = srv.proc.try_exit() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "exit bounded by the grace period"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t0.elapsed();
    assert!(status.success(), "{status}:\n{}", srv.log_text());
    assert!(
        took >= Duration::from_millis(900),
        "waited for the in-flight query ({took:?})"
    );
    assert!(
        srv.log_text().contains("shutdown_grace_ms"),
        "{}",
        srv.log_text()
    );
}

#[test]
fn sigterm_on_an_idle_server_exits_zero_at_once() {
    let mut srv = Server::start(Opts::default());
    let t0 = Instant::now();
    srv.signal(libc::SIGTERM);
    let status = loop {
        if let Some(s) = srv.proc.try_exit() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "idle server exits within 1 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "{status}");
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

#[test]
fn check_config_exit_codes_and_problem_lines() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config_text(free_port(), &Opts::default())).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let bad = dir.path().join("bad.toml");
    let text =
        config_text(free_port(), &Opts::default()).replace("127.0.0.128/25", "127.0.0.128/33");
    let line = text
        .lines()
        .position(|l| l.contains("127.0.0.128/33"))
        .unwrap()
        + 1;
    std::fs::write(&bad, &text).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let printed = String::from_utf8_lossy(&out.stdout);
    let want = format!("{}:{line}: view[1].prefixes", bad.display());
    assert!(printed.contains(&want), "expected {want:?} in:\n{printed}");

    let out = Command::new(BIN)
        .args(["check-config", "/nonexistent/shardgate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // `run` refuses an invalid config the same way.
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&want));
}

#[test]
fn addresses_in_use_and_too_many_shards_fail_with_a_clear_error() {
    let port = free_port();
    let _squatter = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_text(port, &Opts::default())).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .args(["--shards", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("dns.listen"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .args(["--shards", "4096"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("online CPU"));
}

/// The shared query builder (tests/support/dns.rs) writes what the raw
/// tests of this suite expect on the wire.
#[test]
fn the_builder_writes_the_wire_form_of_a_plain_and_an_edns_query() {
    let plain = build_query(0x1234, "upf.svc.example.", QTYPE_A, false);
    let mut want = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    want.extend_from_slice(b"\x03upf\x03svc\x07example\x00\x00\x01\x00\x01");
    assert_eq!(plain, want);
    let edns = build_query(0x1234, "upf.svc.example", QTYPE_A, true);
    want[11] = 1;
    want.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(edns, want);
}
