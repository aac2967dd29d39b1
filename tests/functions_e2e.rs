//! End-to-end tests of the function service: the real `shardgate` binary on
//! loopback, invoked over UDP frames and HTTP/1.1 from client threads pinned
//! to each CPU (so SO_INCOMING_CPU steers them to every shard), and through
//! `shardgate invoke`.
//!
//! Every test starts its own server on its own free ports (killed on drop).

mod support;
use support::{free_port, repo, Process, BIN};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shardgate::functions::frame;
use shardgate::functions::Status;

fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Pin the calling thread to `cpu` (so its flows land on that CPU's shard).
fn pin_to(cpu: usize) {
    // SAFETY: plain libc calls on a zeroed cpu_set_t for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

struct Server {
    proc: Process,
    fn_port: u16,
    dir: tempfile::TempDir,
    shards: usize,
}

fn config_text(dns_port: u16, fn_port: u16, cache: &Path) -> String {
    format!(
        r#"
[server]
admin_listen = "127.0.0.1:{admin}"
shutdown_grace_ms = 2000

[dns]
listen = ["127.0.0.1:{dns_port}"]

[[zone]]
name = "svc.example."
[zone.soa]
mname = "ns1.svc.example."
rname = "hostmaster.svc.example."

[[view]]
name = "default"
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.0.5"

[functions]
listen = ["127.0.0.1:{fn_port}"]
cache_dir = "{cache}"
http_idle_timeout_ms = 2000
http_max_header_bytes = 1024

[functions.defaults]
ring_depth = 4

[[function]]
name = "probe"
module = "{probe}"
deadline_ms = 40
max_input_bytes = 1000
max_output_bytes = 2000

[[function]]
name = "checksum"
module = "{checksum}"

[[function]]
name = "classify"
module = "{classify}"

[[function]]
name = "ghost"
module = "does/not/exist.wat"
"#,
        cache = cache.display(),
        admin = free_port(),
        probe = repo("tests/functions_fixtures/probe.wat").display(),
        checksum = repo("functions/checksum.wat").display(),
        classify = repo("functions/classify.wat").display(),
    )
}

impl Server {
    fn start() -> Server {
        // A shard on every CPU, so a client pinned to any CPU is steered
        // (SO_INCOMING_CPU) to a shard of its own.
        let shards = online_cpus();
        let (dns_port, fn_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shardgate.toml");
        std::fs::write(
            &path,
            config_text(dns_port, fn_port, &dir.path().join("cache")),
        )
        .unwrap();
        let shards_arg = shards.to_string();
        let mut server = Server {
            proc: Process::run(&path, &["--shards", &shards_arg]),
            fn_port,
            dir,
            shards,
        };
        server.wait_log("shardgate serving", Duration::from_secs(60));
        server
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.fn_port))
    }

    fn log_text(&self) -> String {
        self.proc.log_text()
    }

    fn wait_log(&mut self, needle: &str, timeout: Duration) {
        self.proc.wait_log(needle, timeout);
    }

    /// SIGTERM and wait for exit; returns the log.
    fn stop(&mut self) -> String {
        match self.proc.stop(Duration::from_secs(10)) {
            Some(status) => {
                assert!(
                    status.success(),
                    "exit status {status}:\n{}",
                    self.log_text()
                );
                self.log_text()
            }
            None => panic!("shardgate did not stop after SIGTERM:\n{}", self.log_text()),
        }
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

struct Udp {
    sock: UdpSocket,
    next_id: u64,
    buf: Vec<u8>,
}

impl Udp {
    fn new(server: SocketAddr) -> Udp {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(server).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Udp {
            sock,
            next_id: 1,
            buf: vec![0; 65_536],
        }
    }

    fn send_raw(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        self.sock.send(datagram).unwrap();
        match self.sock.recv(&mut self.buf) {
            Ok(n) => Some(self.buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    /// Invoke; returns (status, body). Checks the id is echoed.
    fn call(&mut self, name: &str, input: &[u8]) -> (Status, Vec<u8>) {
        let id = self.next_id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.next_id += 1;
        let mut req = Vec::new();
        frame::encode_request(&mut req, id, name, input).unwrap();
        let reply = self.send_raw(&req).expect("no UDP reply");
        let r = frame::decode_reply(&reply).expect("not a reply frame");
        assert_eq!(r.id, id, "request id not echoed");
        (r.status.expect("known status"), r.body.to_vec())
    }
}

struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Response {
    code: u16,
    status: String,
    shard: Option<usize>,
    close: bool,
    body: Vec<u8>,
}

impl Http {
    fn new(server: SocketAddr) -> Http {
        let stream = TcpStream::connect(server).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Read one response; `None` if the connection closed first.
    fn read(&mut self) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = r.parse(&self.buf) {
                let h = |name: &str| {
                    r.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let len: usize = h("content-length")
                    .expect("Content-Length")
                    .parse()
                    .unwrap();
                if self.buf.len() >= head + len {
                    let resp = Response {
                        code: r.code.unwrap(),
                        status: h("x-shardgate-status").unwrap_or_default(),
                        shard: h("x-shardgate-shard").and_then(|v| v.parse().ok()),
                        close: h("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
                        body: self.buf[head..head + len].to_vec(),
                    };
                    self.buf.drain(..head + len);
                    return Some(resp);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn post(&mut self, name: &str, body: &[u8]) -> Response {
        let mut req = format!(
            "POST /fn/{name} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.send(&req);
        self.read()
            .expect("connection closed instead of a response")
    }

    fn is_closed(&mut self) -> bool {
        self.read().is_none()
    }
}

const PRISTINE: [u32; 4] = [0, 0x3056_4753, 1, 7];

fn report(out: &[u8]) -> [u32; 4] {
    assert!(out.len() >= 16, "short probe output: {out:?}");
    let w = |i: usize| u32::from_le_bytes(out[i * 4..i * 4 + 4].try_into().unwrap());
    [w(0), w(1), w(2), w(3)]
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// 10,000 invocations per shard over each surface, with a trap and a deadline
/// hit every 1,000: every successful reply reports pristine state.
#[test]
fn every_shard_serves_pristine_state_over_udp_and_http() {
    let mut server = Server::start();
    let addr = server.addr();
    let shards = server.shards;
    let cpus = online_cpus();
    let workers: Vec<_> = (0..shards)
        .map(|cpu| {
            std::thread::spawn(move || {
                pin_to(cpu % cpus);
                let mut udp = Udp::new(addr);
                let mut http = Http::new(addr);
                let mut seen_shards = std::collections::BTreeSet::new();
                for i in 0..10_000u32 {
                    if i % 1000 == 500 {
                        assert_eq!(udp.call("probe", b"t").0, Status::Trap);
                        assert_eq!(http.post("probe", b"t").code, 500);
                    }
                    if i % 1000 == 999 {
                        assert_eq!(udp.call("probe", b"l").0, Status::Deadline);
                        assert_eq!(http.post("probe", b"l").code, 504);
                    }
                    let (status, body) = udp.call("probe", b"o");
                    assert_eq!(status, Status::Ok, "{}", String::from_utf8_lossy(&body));
                    assert_eq!(report(&body), PRISTINE, "UDP invocation {i} from CPU {cpu}");
                    let r = http.post("probe", b"o");
                    assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
                    assert_eq!(
                        report(&r.body),
                        PRISTINE,
                        "HTTP invocation {i} from CPU {cpu}"
                    );
                    seen_shards.extend(r.shard);
                }
                seen_shards
            })
        })
        .collect();
    let mut served_by = Vec::new();
    for w in workers {
        served_by.push(w.join().expect("worker failed"));
    }
    // Steering: each pinned client stayed on one shard, all shards served.
    let all: std::collections::BTreeSet<usize> = served_by.iter().flatten().copied().collect();
    assert_eq!(all.len(), shards, "shards that served: {served_by:?}");
    let log = server.stop();
    // Each shard ran at least 10,000 pristine calls over each surface.
    let stopped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("functions stopped"))
        .collect();
    assert_eq!(stopped.len(), shards, "{log}");
    for line in stopped {
        let field = |name: &str| -> u64 {
            let at = line
                .find(&format!("{name}="))
                .unwrap_or_else(|| panic!("{name} in {line}"));
            line[at + name.len() + 1..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(field("udp_requests") >= 10_000, "{line}");
        assert!(field("http_requests") >= 10_000, "{line}");
        assert!(field("traps") >= 20 && field("timeouts") >= 20, "{line}");
    }
}

#[test]
fn each_failure_mode_over_both_surfaces_then_success() {
    let server = Server::start();
    let addr = server.addr();
    let mut udp = Udp::new(addr);
    let mut http = Http::new(addr);
    let ok_udp = |udp: &mut Udp| {
        let (s, body) = udp.call("probe", b"o");
        assert_eq!((s, report(&body)), (Status::Ok, PRISTINE));
    };
    let ok_http = |http: &mut Http| {
        let r = http.post("probe", b"o");
        assert_eq!((r.code, report(&r.body)), (200, PRISTINE));
    };
    let too_big = vec![b'o'; 1001];
    let cases: [(&str, &[u8], Status, u16, &str); 7] = [
        ("probe", b"t", Status::Trap, 500, "trapped"),
        ("probe", b"l", Status::Deadline, 504, "deadline of 40 ms"),
        ("probe", b"g", Status::MemoryLimit, 500, "max_memory_kib"),
        ("probe", b"p", Status::BadOutput, 500, "outside"),
        (
            "probe",
            b"b",
            Status::OutputTooLarge,
            500,
            "exceeds the limit of 2000",
        ),
        ("probe", &too_big, Status::InputTooLarge, 413, ""),
        ("nope", b"o", Status::NotFound, 404, ""),
    ];
    for (name, input, status, code, text) in cases {
        let (s, body) = udp.call(name, input);
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(s, status, "{body}");
        assert!(body.contains(text), "UDP {status:?}: {body}");
        ok_udp(&mut udp);
        let r = http.post(name, input);
        assert_eq!(
            (r.code, r.status.as_str()),
            (code, status.as_str()),
            "{r:?}"
        );
        assert!(
            String::from_utf8_lossy(&r.body).contains(text),
            "HTTP {status:?}: {r:?}"
        );
        if r.close {
            assert!(http.is_closed());
            http = Http::new(addr);
        }
        ok_http(&mut http);
    }

    // A function that failed to load answers 503 with the reason, over both.
    let (s, body) = udp.call("ghost", b"");
    assert_eq!(s, Status::Unavailable);
    assert!(
        String::from_utf8_lossy(&body).contains("cannot read module"),
        "{body:?}"
    );
    let r = http.post("ghost", b"");
    assert_eq!(r.code, 503, "{r:?}");
    ok_udp(&mut udp);
    ok_http(&mut http);

    // UDP frame errors: another version, a bad name, no answer to junk.
    let mut req = Vec::new();
    frame::encode_request(&mut req, 77, "probe", b"o").unwrap();
    req[4] = 9;
    let r = udp.send_raw(&req).unwrap();
    let r = frame::decode_reply(&r).unwrap();
    assert_eq!((r.id, r.status), (77, Ok(Status::UnsupportedVersion)));
    req[4] = frame::VERSION;
    req[frame::HEADER_LEN + 1] = b'/';
    let r = udp.send_raw(&req).unwrap();
    assert_eq!(
        frame::decode_reply(&r).unwrap().status,
        Ok(Status::BadRequest)
    );
    udp.sock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        udp.send_raw(b"not a frame at all").is_none(),
        "junk must get no reply"
    );
    udp.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    ok_udp(&mut udp);

    // HTTP request errors, each followed by a successful call.
    let http_cases: [(&[u8], u16, bool); 6] = [
        (b"GET /fn/probe HTTP/1.1\r\nHost: t\r\n\r\n", 405, false),
        (b"POST /fn/probe HTTP/1.1\r\nHost: t\r\n\r\n", 411, true),
        (
            b"POST /fn/probe HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n0\r\n\r\n",
            411,
            true,
        ),
        (
            b"POST /fn/probe HTTP/1.1\r\nContent-Length: 99999\r\n\r\n",
            413,
            true,
        ),
        (
            b"POST /fn/probe HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            400,
            true,
        ),
        (b"\x16\x03\x01 not http\r\n\r\n", 400, true),
    ];
    for (req, code, closes) in http_cases {
        http.send(req);
        let r = http.read().expect("a response");
        assert_eq!(r.code, code, "{r:?} for {:?}", String::from_utf8_lossy(req));
        assert_eq!(r.close, closes, "{r:?}");
        if closes {
            assert!(http.is_closed(), "connection must close after {code}");
            http = Http::new(addr);
        }
        ok_http(&mut http);
    }
    // Oversized request head: 431 and close.
    let mut big = b"POST /fn/probe HTTP/1.1\r\n".to_vec();
    while big.len() < 2000 {
        big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    http.send(&big);
    assert_eq!(http.read().unwrap().code, 431);
    assert!(http.is_closed());
    let mut http = Http::new(addr);
    ok_http(&mut http);
    ok_udp(&mut udp);
}

#[test]
fn http_keep_alive_pipelining_and_continue() {
    let server = Server::start();
    let addr = server.addr();
    let mut http = Http::new(addr);
    // 50 pipelined requests in one write, answered in order.
    let mut batch = Vec::new();
    for i in 0..50 {
        let body = format!("e{i:03}");
        batch.extend_from_slice(
            format!(
                "POST /fn/probe HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    http.send(&batch);
    for i in 0..50 {
        let r = http.read().expect("pipelined response");
        assert_eq!(r.code, 200);
        assert_eq!(report(&r.body), PRISTINE);
        assert_eq!(&r.body[16..], format!("e{i:03}").as_bytes());
    }
    // A request split across writes, byte by byte in the head.
    let req =
        b"POST /fn/checksum HTTP/1.1\r\nContent-Length: 8\r\n\r\n\x00\x01\xf2\x03\xf4\xf5\xf6\xf7";
    for b in req.iter() {
        http.send(std::slice::from_ref(b));
    }
    let r = http.read().unwrap();
    assert_eq!((r.code, r.body.as_slice()), (200, &[0x22u8, 0x0d][..]));
    // Expect: 100-continue gets the interim response before the body is sent.
    http.send(b"POST /fn/classify HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 28\r\n\r\n");
    let mut interim = [0u8; 25];
    http.stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let mut packet = vec![0u8; 28];
    packet[0] = 0x45;
    packet[9] = 17;
    packet[22..24].copy_from_slice(&53u16.to_be_bytes());
    http.send(&packet);
    let r = http.read().unwrap();
    assert_eq!((r.code, r.body.as_slice()), (200, &b"ipv4/udp/dns"[..]));
    // Connection: close is honoured.
    http.send(b"POST /fn/probe HTTP/1.1\r\nConnection: close\r\nContent-Length: 1\r\n\r\no");
    let r = http.read().unwrap();
    assert!(r.close && r.code == 200);
    assert!(http.is_closed());
    // An idle connection is closed after http_idle_timeout_ms.
    let mut idle = Http::new(addr);
    let t0 = Instant::now();
    assert!(idle.is_closed());
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "closed too early: {:?}",
        t0.elapsed()
    );
}

#[test]
fn invoke_subcommand_prints_output_or_error() {
    let server = Server::start();
    let addr = server.addr().to_string();
    let invoke = |args: &[&str]| {
        Command::new(BIN)
            .arg("invoke")
            .args(args)
            .output()
            .expect("run shardgate invoke")
    };
    let out = invoke(&["--udp", &addr, "probe", "--data", "o", "--hex"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "00000000534756300100000007000000"
    );

    let input = server.dir.path().join("packet.bin");
    std::fs::write(&input, [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]).unwrap();
    let out = invoke(&[
        "--http",
        &addr,
        "checksum",
        "--file",
        input.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, [0x22, 0x0d]);

    let out = invoke(&["--http", &addr, "probe", "--data", "t"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trap") && err.contains("500"), "{err}");

    let out = invoke(&["--udp", &addr, "probe", "--data", "l"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deadline"),
        "{out:?}"
    );

    let out = invoke(&["--udp", &addr, "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not-found"),
        "{out:?}"
    );

    // Nothing listening: network error, exit 3.
    let dead = format!("127.0.0.1:{}", free_port());
    let out = invoke(&["--udp", &dead, "probe", "--timeout-ms", "300"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = invoke(&["--http", &dead, "probe"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // Bad arguments: exit 2.
    let out = invoke(&["--udp", &addr, "bad/name"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = invoke(&["probe"]);
    assert!(!out.status.success());
}

#[test]
fn restart_uses_the_compile_cache_and_bad_modules_are_named() {
    let mut server = Server::start();
    let log = server.log_text();
    assert!(log.contains("function \"ghost\""), "{log}");
    assert!(log.contains("cannot read module"), "{log}");
    assert!(
        log.contains("functions: 3 loaded (0 from the compile cache), 1 failed"),
        "{log}"
    );
    // Restart on the same config and cache directory.
    let dir_path = server.dir.path().to_path_buf();
    let config = dir_path.join("shardgate.toml");
    server.stop();
    let mut again = Process::run(&config, &["--shards", "1"]);
    again.wait_log("shardgate serving", Duration::from_secs(30));
    let seen = again.log_text();
    again.kill();
    assert!(
        seen.contains("functions: 3 loaded (3 from the compile cache), 1 failed"),
        "{seen}"
    );
}

#[test]
fn check_config_reports_function_limits_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[functions.defaults]\nring_depth = 0\n\n[[function]]\nname = \"x\"\nmodule = \"x.wat\"\ndeadline_ms = 600000\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(":2: functions.defaults.ring_depth: 0 is out of range"),
        "{text}"
    );
    assert!(
        text.contains(":7: function[0].deadline_ms: 600000 is out of range"),
        "{text}"
    );
}
