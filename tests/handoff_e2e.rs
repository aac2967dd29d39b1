//! End-to-end tests of the load-correcting hand-off: two real `shardgate`
//! processes paired with each other on 127.0.0.2 (A) and 127.0.0.3 (B), one
//! shard each, invoked over UDP frames and HTTP from the test; forged frames
//! crafted with the crate's own frame codec. Every reply mode that matters
//! (`relay`, `direct`) runs the same scenarios.
//!
//! Ports: every listener gets an explicit port from this process's own
//! allocator (below the kernel's ephemeral range, checked free on every
//! address used); nothing is configured as port 0. Readiness is awaited on
//! log lines and on /metrics, never on a fixed sleep.

mod support;

use support::process::{Log, Process, BIN};

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardgate::functions::frame as fnframe;
use shardgate::functions::Status;
use shardgate::handoff::frame::{self, Frame, FrameType, Key, ServiceKind};

const KEY: &[u8] = b"handoff-e2e-key-0123456789abcdef-0123";
const A_IP: [u8; 4] = [127, 0, 0, 2];
const B_IP: [u8; 4] = [127, 0, 0, 3];
/// Generous bound for anything to happen on a loaded 2-core CI machine.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- ports

/// A port free (TCP and UDP) on 127.0.0.1-.5, never handed out twice by
/// this process, below the ephemeral range so no port-0 socket gets it.
fn port() -> u16 {
    let ips: Vec<std::net::Ipv4Addr> = (1..=5u8)
        .map(|l| std::net::Ipv4Addr::new(127, 0, 0, l))
        .collect();
    support::ports::free_port_on(&ips)
}

// ---------------------------------------------------------------- nodes

/// A key file as an operator makes it: readable by its owner only.
fn write_key(path: &Path, key: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, key).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[derive(Clone, Copy)]
struct Ports {
    dns: u16,
    func: u16,
    admin: u16,
    handoff: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            dns: port(),
            func: port(),
            admin: port(),
            handoff: port(),
        }
    }
}

#[derive(Clone)]
struct Spec {
    ip: [u8; 4],
    ports: Ports,
    peer_ip: [u8; 4],
    peer: Ports,
    reply: &'static str,
    warm_on_demand: bool,
    max_wait_us: u64,
    /// `handoff.alternate_saturated_percent`.
    saturated_percent: u8,
    shards: usize,
    /// Extra `functions.listen` address (e.g. an IPv6 one).
    extra_fn_listen: Option<SocketAddr>,
    /// Heartbeat misses before down (100 ms apart): generous except where
    /// the test is about detection, so a busy CI machine does not flap.
    misses: u32,
    /// `handoff.window_ms`.
    window_ms: u64,
    /// `handoff.alternate_service_ips`, TOML array items.
    peer_service_ips: &'static str,
}

impl Spec {
    fn pair(reply: &'static str) -> (Spec, Spec) {
        let (pa, pb) = (Ports::new(), Ports::new());
        let a = Spec {
            ip: A_IP,
            ports: pa,
            peer_ip: B_IP,
            peer: pb,
            reply,
            warm_on_demand: false,
            max_wait_us: 2_000_000,
            saturated_percent: 95,
            shards: 1,
            extra_fn_listen: None,
            misses: 20,
            window_ms: 2000,
            peer_service_ips: "",
        };
        let b = Spec {
            ip: B_IP,
            ports: pb,
            peer_ip: A_IP,
            peer: pa,
            ..a.clone()
        };
        (a, b)
    }

    fn fn_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.ports.func))
    }

    fn dns_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.ports.dns))
    }

    fn handoff_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.ports.handoff))
    }

    fn config(&self, dir: &Path) -> String {
        let ip = |a: [u8; 4]| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
        let spin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/handoff_fixtures/spin.wat");
        format!(
            r#"
[server]
shards = {shards}
io_memory_kib = 128
admin_listen = "{me}:{admin}"
shutdown_grace_ms = 500
state_dir = "{state}"

[dns]
listen = ["{me}:{dns}"]

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
listen = ["{me}:{func}"{extra_fn}]
cache_dir = ""

[[function]]
name = "spin"
module = "{spin}"
deadline_ms = 5000
[[function]]
name = "spin2"
module = "{spin}"
deadline_ms = 5000

[handoff]
alternate = "{peer}:{peer_handoff}"
listen = "{me}:{handoff}"
key_file = "handoff.key"
reply = "{reply}"
max_wait_us = {max_wait}
alternate_saturated_percent = {saturated}
window_ms = {window_ms}
alternate_service_ips = [{peer_ips}]
heartbeat_interval_ms = 100
heartbeat_misses = {misses}
alternate_http = "http://{peer}:{peer_func}"
warm_on_demand = {wod}
"#,
            me = ip(self.ip),
            peer = ip(self.peer_ip),
            admin = self.ports.admin,
            dns = self.ports.dns,
            func = self.ports.func,
            handoff = self.ports.handoff,
            peer_handoff = self.peer.handoff,
            peer_func = self.peer.func,
            state = dir.join(format!("state-{}", self.ip[3])).display(),
            spin = spin.display(),
            reply = self.reply,
            max_wait = self.max_wait_us,
            saturated = self.saturated_percent,
            wod = self.warm_on_demand,
            shards = self.shards,
            extra_fn = self
                .extra_fn_listen
                .map(|a| format!(", \"{a}\""))
                .unwrap_or_default(),
            misses = self.misses,
            window_ms = self.window_ms,
            peer_ips = self.peer_service_ips,
        )
    }
}

struct Node {
    spec: Spec,
    proc: Option<Process>,
    /// Every run's log lines (a restarted node keeps its history).
    log: Log,
    config: PathBuf,
}

impl Node {
    fn start(spec: &Spec, dir: &Path) -> Node {
        write_key(&dir.join("handoff.key"), KEY);
        let config = dir.join(format!("node-{}.toml", spec.ip[3]));
        std::fs::write(&config, spec.config(dir)).unwrap();
        let mut node = Node {
            spec: spec.clone(),
            proc: None,
            log: Log::default(),
            config,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info");
        self.proc = Some(Process::spawn_into(cmd, self.log.clone(), None));
        let started = self.count_log("shardgate serving");
        self.wait_log("shardgate serving", started + 1);
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Wait until `needle` has been logged `times` times in all.
    fn wait_log(&mut self, needle: &str, times: usize) {
        self.proc
            .as_mut()
            .expect("node running")
            .wait_log_times(needle, times, PATIENCE);
    }

    /// SIGTERM and wait for the exit.
    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(PATIENCE);
        }
    }

    fn metrics(&self) -> String {
        let addr = SocketAddr::from((self.spec.ip, self.spec.ports.admin));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("admin");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    }

    /// Sum of every sample whose series starts with `prefix` (name and
    /// the first labels, e.g. `shardgate_handoffs_total{shard="0",reason="cold"`).
    fn metric(&self, prefix: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Poll `prefix` until `ok(value)` (metrics are published once a second).
    fn wait_metric(&self, prefix: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let end = Instant::now() + PATIENCE;
        loop {
            let v = self.metric(prefix);
            if ok(v) {
                return v;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting on {prefix} (now {v}); log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_alternate_up(&self) {
        self.wait_metric("shardgate_handoff_alternate_up{", |v| v >= 1.0);
    }

    fn invocations_ok(&self, function: &str) -> f64 {
        self.metric(&format!(
            "shardgate_function_invocations_total{{shard=\"0\",function=\"{function}\",outcome=\"ok\"}}"
        ))
    }
}

const HANDOFFS: &str = "shardgate_handoffs_total{shard=\"0\",reason=";

fn handoffs(n: &Node, reason: &str) -> f64 {
    n.metric(&format!("{HANDOFFS}\"{reason}\"}}"))
}

fn dropped(n: &Node, reason: &str) -> f64 {
    n.metric(&format!(
        "shardgate_handoff_frames_dropped_total{{shard=\"0\",reason=\"{reason}\"}}"
    ))
}

// ---------------------------------------------------------------- clients

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    c
}

fn spin_input(rounds: u32, tag: &[u8]) -> Vec<u8> {
    let mut v = b"spin".to_vec();
    v.extend_from_slice(&rounds.to_le_bytes());
    v.extend_from_slice(tag);
    v
}

fn send_invoke(c: &UdpSocket, to: SocketAddr, id: u64, name: &str, input: &[u8]) {
    let mut out = Vec::new();
    fnframe::encode_request(&mut out, id, name, input).unwrap();
    c.send_to(&out, to).unwrap();
}

/// One answer: status, body, the address it came from.
type Answer = (Result<Status, u8>, Vec<u8>, SocketAddr);

/// Replies by id: (status, body, source address); a second reply to one id
/// is a test failure. Waits until `want` ids are answered (or PATIENCE),
/// then `linger` longer for duplicates.
fn collect(c: &UdpSocket, want: usize, linger: Duration) -> HashMap<u64, Answer> {
    let mut got = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let end = Instant::now() + PATIENCE;
    let mut linger_end: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if got.len() >= want && linger_end.is_none() {
            linger_end = Some(now + linger);
        }
        if linger_end.is_some_and(|l| now >= l) || now >= end {
            return got;
        }
        let Ok((n, from)) = c.recv_from(&mut buf) else {
            continue;
        };
        let r = fnframe::decode_reply(&buf[..n]).expect("a function reply");
        let prev = got.insert(r.id, (r.status, r.body.to_vec(), from));
        assert!(prev.is_none(), "request {} answered twice", r.id);
    }
}

fn invoke(to: SocketAddr, id: u64, name: &str, input: &[u8]) -> Answer {
    let c = client();
    send_invoke(&c, to, id, name, input);
    let mut got = collect(&c, 1, Duration::from_millis(100));
    got.remove(&id)
        .unwrap_or_else(|| panic!("no answer to request {id}"))
}

// ---------------------------------------------------------------- tests

fn cold_function_is_handed_off_then_served_locally(reply: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = Spec::pair(if reply == "direct" { "direct" } else { "relay" });
    a.warm_on_demand = true;
    let (na, nb) = (Node::start(&a, dir.path()), Node::start(&b, dir.path()));
    na.wait_alternate_up();
    nb.wait_alternate_up();

    // Cold on A: B answers, from A's address.
    let (status, body, from) = invoke(a.fn_addr(), 1, "spin", b"first");
    assert_eq!(status, Ok(Status::Ok));
    assert_eq!(body, b"first");
    assert_eq!(
        from,
        a.fn_addr(),
        "the reply comes from the address the client used"
    );
    na.wait_metric(&format!("{HANDOFFS}\"cold\"}}"), |v| v == 1.0);
    nb.wait_metric(
        "shardgate_function_invocations_total{shard=\"0\",function=\"spin\",outcome=\"ok\"}",
        |v| v == 1.0,
    );
    let mode = if reply == "direct" { "direct" } else { "relay" };
    nb.wait_metric(
        &format!("shardgate_handoff_replies_total{{shard=\"0\",mode=\"{mode}\"}}"),
        |v| v == 1.0,
    );

    // A warms in the background, then answers itself.
    na.wait_metric(
        "shardgate_function_ready_instances{shard=\"0\",function=\"spin\"}",
        |v| v > 0.0,
    );
    for id in 2..=6 {
        let (status, body, from) = invoke(a.fn_addr(), id, "spin", b"later");
        assert_eq!(
            (status, body.as_slice(), from),
            (Ok(Status::Ok), &b"later"[..], a.fn_addr())
        );
    }
    na.wait_metric(
        "shardgate_function_invocations_total{shard=\"0\",function=\"spin\",outcome=\"ok\"}",
        |v| v == 5.0,
    );
    assert_eq!(handoffs(&na, "cold"), 1.0, "no more hand-offs once warm");
    assert_eq!(nb.invocations_ok("spin"), 1.0);

    // HTTP to a cold function: 307 to the alternate, with a hop token A
    // minted; the alternate serves it (and does not send it back). A
    // client's own `?handoff=1` is no token: A still redirects (and counts
    // it) rather than treating the request as handed off.
    let location = http_post(a.fn_addr(), "/fn/spin2?handoff=1", b"over-http").expect_redirect();
    let prefix = format!("http://127.0.0.3:{}/fn/spin2?handoff=", b.ports.func);
    let token = location.strip_prefix(&prefix).expect("a redirect to B");
    assert!(token.len() > 20 && token.contains('.'), "{location}");
    na.wait_metric(
        "shardgate_handoff_http_bad_hop_tokens_total{shard=\"0\"}",
        |v| v == 1.0,
    );
    let path = location.trim_start_matches(&format!("http://127.0.0.3:{}", b.ports.func));
    let resp = http_post(b.fn_addr(), path, b"over-http");
    assert_eq!(resp.code, 200, "{resp:?}");
    assert_eq!(resp.body, b"over-http");
}

#[test]
fn cold_function_is_handed_off_then_served_locally_relay() {
    cold_function_is_handed_off_then_served_locally("relay");
}

#[test]
fn cold_function_is_handed_off_then_served_locally_direct() {
    cold_function_is_handed_off_then_served_locally("direct");
}

/// Rounds of the slow function: several milliseconds each.
const SLOW: u32 = 5_000_000;

fn overload_hands_off_and_answers_every_request_once(reply: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = Spec::pair(reply);
    a.max_wait_us = 1_000;
    let (na, nb) = (Node::start(&a, dir.path()), Node::start(&b, dir.path()));
    na.wait_alternate_up();

    let c = client();
    let n = 40u64;
    for id in 0..n {
        send_invoke(
            &c,
            a.fn_addr(),
            id,
            "spin",
            &spin_input(SLOW, &id.to_be_bytes()),
        );
    }
    let got = collect(&c, n as usize, Duration::from_millis(500));
    assert_eq!(got.len() as u64, n, "every request answered");
    for (id, (status, body, from)) in &got {
        assert_eq!(*status, Ok(Status::Ok), "request {id}");
        assert_eq!(
            &body[8..],
            &id.to_be_bytes(),
            "request {id} got its own answer"
        );
        assert_eq!(*from, a.fn_addr());
    }
    let over = na.wait_metric(&format!("{HANDOFFS}\"overloaded\"}}"), |v| v >= 1.0);
    // B ran exactly what A handed off. (Both nodes' shards run on CPU 0 in
    // this test, so while B spins A's own requests may age past the stale
    // limit and be handed off too: how many A kept is not the point.)
    let remote = nb.wait_metric(
        "shardgate_function_invocations_total{shard=\"0\",function=\"spin\",outcome=\"ok\"}",
        |v| v == over,
    );
    // Metrics lag: wait until both sides add up to every request, once.
    let end = Instant::now() + PATIENCE;
    while na.invocations_ok("spin") + nb.invocations_ok("spin") < n as f64 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let local = na.invocations_ok("spin");
    assert_eq!(
        na.invocations_ok("spin") + nb.invocations_ok("spin"),
        n as f64,
        "each request ran exactly once (A {local}, B {remote}, handed off {over})"
    );
}

#[test]
fn overload_hands_off_and_answers_every_request_once_relay() {
    overload_hands_off_and_answers_every_request_once("relay");
}

#[test]
fn overload_hands_off_and_answers_every_request_once_direct() {
    overload_hands_off_and_answers_every_request_once("direct");
}

#[test]
fn both_overloaded_a_handed_off_request_is_not_bounced() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = Spec::pair("relay");
    for s in [&mut a, &mut b] {
        s.max_wait_us = 1;
    }
    let (na, nb) = (Node::start(&a, dir.path()), Node::start(&b, dir.path()));
    na.wait_alternate_up();
    nb.wait_alternate_up();
    let (ca, cb) = (client(), client());
    let n = 24u64;
    for id in 0..n {
        send_invoke(&ca, a.fn_addr(), id, "spin", &spin_input(SLOW / 5, b"a"));
        send_invoke(
            &cb,
            b.fn_addr(),
            1000 + id,
            "spin",
            &spin_input(SLOW / 5, b"b"),
        );
    }
    let (ga, gb) = (
        collect(&ca, n as usize, Duration::from_millis(300)),
        collect(&cb, n as usize, Duration::from_millis(300)),
    );
    assert_eq!((ga.len() as u64, gb.len() as u64), (n, n));
    assert!(ga
        .values()
        .chain(gb.values())
        .all(|(s, _, _)| *s == Ok(Status::Ok)));
    let (ha, hb) = (
        na.wait_metric(&format!("{HANDOFFS}\"overloaded\"}}"), |v| v >= 1.0),
        nb.wait_metric(&format!("{HANDOFFS}\"overloaded\"}}"), |v| v >= 1.0),
    );
    // Every request ran exactly once in all (a bounce would run it never,
    // or hand it back and forth).
    let end = Instant::now() + PATIENCE;
    let total = || na.invocations_ok("spin") + nb.invocations_ok("spin");
    while total() < (2 * n) as f64 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        total(),
        (2 * n) as f64,
        "A handed off {ha}, B handed off {hb}"
    );
    // Hand-offs only ever leave for requests that came from clients.
    assert!(ha <= n as f64 && hb <= n as f64);
}

#[test]
fn alternate_stopped_then_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = Spec::pair("relay");
    a.warm_on_demand = true;
    // Every node of this suite runs on CPU 0: a budget well above the
    // wake-up delays of a busy CPU, so the single cold request below is
    // never stale, while 16 slow ones still overflow it.
    a.max_wait_us = 20_000;
    a.misses = 3;
    let mut na = Node::start(&a, dir.path());
    let mut nb = Node::start(&b, dir.path());
    na.wait_alternate_up();

    nb.stop();
    // 3 misses x 100 ms; the log line is the first sign.
    let t0 = Instant::now();
    na.wait_log("hand-off alternate down", 1);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "down after {:?}",
        t0.elapsed()
    );
    na.wait_metric("shardgate_handoff_alternate_up{", |v| v == 0.0);

    // Cold, alternate down: served here.
    let (status, body, from) = invoke(a.fn_addr(), 1, "spin", b"local");
    assert_eq!(
        (status, body.as_slice(), from),
        (Ok(Status::Ok), &b"local"[..], a.fn_addr())
    );
    assert_eq!(handoffs(&na, "cold"), 0.0);

    // Overloaded, alternate down: an overload status at once, never a
    // queue without bound; every request answered exactly once.
    let c = client();
    let n = 16u64;
    for id in 0..n {
        send_invoke(&c, a.fn_addr(), 100 + id, "spin", &spin_input(SLOW, b""));
    }
    let got = collect(&c, n as usize, Duration::from_millis(300));
    assert_eq!(got.len() as u64, n);
    let rejected = got
        .values()
        .filter(|(s, _, _)| *s == Ok(Status::Unavailable))
        .count();
    assert!(rejected >= 1, "{got:?}");
    assert!(got
        .values()
        .all(|(s, _, _)| matches!(s, Ok(Status::Ok) | Ok(Status::Unavailable))));
    na.wait_metric("shardgate_overload_rejects_total{", |v| v >= 1.0);

    // B back: hand-offs resume (spin2 is still cold on A).
    nb.spawn();
    na.wait_log("hand-off alternate up", 2);
    let (status, body, from) = invoke(a.fn_addr(), 2, "spin2", b"again");
    assert_eq!(
        (status, body.as_slice(), from),
        (Ok(Status::Ok), &b"again"[..], a.fn_addr())
    );
    na.wait_metric(&format!("{HANDOFFS}\"cold\"}}"), |v| v == 1.0);
    nb.wait_metric(
        "shardgate_function_invocations_total{shard=\"0\",function=\"spin2\",outcome=\"ok\"}",
        |v| v == 1.0,
    );
}

fn bad_frames_are_dropped_and_counted(reply: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    // Only B runs; the test plays A on A's hand-off address.
    let (a, b) = Spec::pair(reply);
    let fake_a = UdpSocket::bind(a.handoff_addr()).unwrap();
    fake_a
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let nb = Node::start(&b, dir.path());
    // B's heartbeat pings reach us: a sign B is serving its hand-off port.
    let mut buf = vec![0u8; 65_536];
    let end = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < end, "no ping from B:\n{}", nb.log_text());
        if let Ok((n, _)) = fake_a.recv_from(&mut buf) {
            if frame::parse(&buf[..n]).is_ok_and(|f| f.ty == FrameType::Ping) {
                break;
            }
        }
    }
    // The client that really asked, and a victim that never asked.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let victim = UdpSocket::bind("127.0.0.5:0").unwrap();
    victim.set_nonblocking(true).unwrap();

    // A's sending key: each direction of the pair has its own.
    let key = Key::new(KEY).unwrap().for_sender(a.handoff_addr());
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    };
    let mut req = Vec::new();
    fnframe::encode_request(&mut req, 77, "spin", b"genuine").unwrap();
    let seal = |key: &Key, client: SocketAddr, ts: u64, nonce: u64| {
        let f = Frame {
            ty: FrameType::Request,
            hop: true,
            service: ServiceKind::Function,
            timestamp_us: ts,
            nonce,
            client,
            service_addr: a.fn_addr(),
            payload: &req,
        };
        let mut out = Vec::new();
        frame::seal(key, &f, &mut out).unwrap();
        out
    };
    let b_port = b.handoff_addr();
    let victim_addr = victim.local_addr().unwrap();
    let client_addr = client.local_addr().unwrap();

    // Genuine: answered once (relay: to us as A; direct: to the client).
    let genuine = seal(&key, client_addr, now(), 1);
    fake_a.send_to(&genuine, b_port).unwrap();
    let mut answered = 0;
    let end = Instant::now() + PATIENCE;
    while answered == 0 && Instant::now() < end {
        if reply == "relay" {
            if let Ok((n, from)) = fake_a.recv_from(&mut buf) {
                let Ok(f) = frame::parse(&buf[..n]) else {
                    continue;
                };
                if f.ty != FrameType::Reply {
                    continue;
                }
                assert_eq!(from.ip(), b_port.ip(), "relayed from B");
                assert_eq!(f.client, client_addr);
                let r = fnframe::decode_reply(f.payload).unwrap();
                assert_eq!((r.id, r.body), (77, &b"genuine"[..]));
                answered += 1;
            }
        } else if let Ok((n, from)) = client.recv_from(&mut buf) {
            assert_eq!(
                from,
                a.fn_addr(),
                "a direct reply carries A's service address"
            );
            let r = fnframe::decode_reply(&buf[..n]).unwrap();
            assert_eq!((r.id, r.body), (77, &b"genuine"[..]));
            answered += 1;
        }
    }
    assert_eq!(answered, 1, "the genuine frame is answered");

    // Replayed, stale, forged (another key), wrong source, malformed: all
    // aimed at the victim, none answered.
    fake_a.send_to(&genuine, b_port).unwrap();
    fake_a
        .send_to(&seal(&key, victim_addr, now() - 10_000_000, 2), b_port)
        .unwrap();
    let forger = Key::new(&[7u8; 32]).unwrap();
    fake_a
        .send_to(&seal(&forger, victim_addr, now(), 3), b_port)
        .unwrap();
    // B's own frame reflected back from A's address: sealed with B's
    // sending key, so it does not verify as A's.
    let b_own = Key::new(KEY).unwrap().for_sender(b_port);
    fake_a
        .send_to(&seal(&b_own, victim_addr, now(), 5), b_port)
        .unwrap();
    let elsewhere = UdpSocket::bind("127.0.0.4:0").unwrap();
    elsewhere
        .send_to(&seal(&key, victim_addr, now(), 4), b_port)
        .unwrap();
    fake_a
        .send_to(b"SGHO\x01 not a frame at all", b_port)
        .unwrap();

    nb.wait_metric(
        "shardgate_handoff_frames_dropped_total{shard=\"0\",reason=\"replayed\"}",
        |v| v == 1.0,
    );
    nb.wait_metric(
        "shardgate_handoff_frames_dropped_total{shard=\"0\",reason=\"stale\"}",
        |v| v == 1.0,
    );
    nb.wait_metric(
        "shardgate_handoff_frames_dropped_total{shard=\"0\",reason=\"bad_mac\"}",
        |v| v == 2.0,
    );
    nb.wait_metric(
        "shardgate_handoff_frames_dropped_total{shard=\"0\",reason=\"wrong_source\"}",
        |v| v == 1.0,
    );
    nb.wait_metric(
        "shardgate_handoff_frames_dropped_total{shard=\"0\",reason=\"malformed\"}",
        |v| v >= 1.0,
    );
    assert_eq!(dropped(&nb, "replayed"), 1.0);
    assert_eq!(
        nb.invocations_ok("spin"),
        1.0,
        "only the genuine request ran"
    );
    // Nothing ever reached the victim, nor a second answer anyone.
    let mut one = [0u8; 2048];
    assert!(
        victim.recv_from(&mut one).is_err(),
        "the victim got a datagram"
    );
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        client.recv_from(&mut one).is_err(),
        "a second answer reached the client"
    );
    // B pings us every 100 ms: look at what is queued, nothing more.
    fake_a.set_nonblocking(true).unwrap();
    while let Ok((n, _)) = fake_a.recv_from(&mut buf) {
        let f = frame::parse(&buf[..n]).unwrap();
        assert_ne!(f.ty, FrameType::Reply, "a dropped frame was answered");
    }
}

#[test]
fn bad_frames_are_dropped_and_counted_relay() {
    bad_frames_are_dropped_and_counted("relay");
}

#[test]
fn bad_frames_are_dropped_and_counted_direct() {
    bad_frames_are_dropped_and_counted("direct");
}

#[test]
fn dns_is_handed_off_when_overloaded_and_answered_from_a() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = Spec::pair("relay");
    a.max_wait_us = 1;
    let (na, nb) = (Node::start(&a, dir.path()), Node::start(&b, dir.path()));
    na.wait_alternate_up();
    let c = client();
    let n = 64u16;
    for id in 0..n {
        let mut q = vec![0u8; 12];
        q[..2].copy_from_slice(&id.to_be_bytes());
        q[2] = 0x01;
        q[5] = 1;
        q.extend_from_slice(b"\x03upf\x03svc\x07example\x00\x00\x01\x00\x01");
        c.send_to(&q, a.dns_addr()).unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let mut buf = [0u8; 1500];
    let end = Instant::now() + PATIENCE;
    while seen.len() < n as usize && Instant::now() < end {
        if let Ok((len, from)) = c.recv_from(&mut buf) {
            assert_eq!(from, a.dns_addr());
            assert!(
                len > 12 && buf[2] & 0x80 != 0 && buf[3] & 0x0f == 0,
                "NOERROR answer"
            );
            assert!(
                seen.insert(u16::from_be_bytes([buf[0], buf[1]])),
                "answered twice"
            );
        }
    }
    assert_eq!(seen.len(), n as usize);
    na.wait_metric(&format!("{HANDOFFS}\"overloaded\"}}"), |v| v >= 1.0);
    nb.wait_metric(
        "shardgate_handoff_replies_total{shard=\"0\",mode=\"relay\"}",
        |v| v >= 1.0,
    );
}

/// Pin the calling thread to `cpu` (the test's client threads, so that
/// their datagrams are steered to the shard on that CPU).
fn pin_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pin the test thread to CPU {cpu}"
        );
    }
}

#[test]
fn frames_from_two_shards_land_on_both_of_the_alternates_shards() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: needs 2 CPUs, this machine has {cpus}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = Spec::pair("relay");
    a.warm_on_demand = true;
    a.shards = 2;
    b.shards = 2;
    let (na, nb) = (Node::start(&a, dir.path()), Node::start(&b, dir.path()));
    na.wait_alternate_up();
    nb.wait_alternate_up();
    // One client per CPU: A's shard on that CPU takes its requests (SO_INCOMING_CPU),
    // finds the function cold and hands it off from its own port; the frame
    // lands on B's shard of the same CPU.
    let fn_addr = a.fn_addr();
    let clients: Vec<_> = (0..2usize)
        .map(|cpu| {
            std::thread::spawn(move || {
                pin_thread(cpu);
                let c = client();
                let name = if cpu == 0 { "spin" } else { "spin2" };
                send_invoke(&c, fn_addr, cpu as u64, name, b"spread");
                collect(&c, 1, Duration::from_millis(50))
            })
        })
        .collect();
    for (cpu, t) in clients.into_iter().enumerate() {
        let got = t.join().unwrap();
        let (status, body, from) = got.get(&(cpu as u64)).expect("answered");
        assert_eq!(
            (*status, body.as_slice(), *from),
            (Ok(Status::Ok), &b"spread"[..], fn_addr)
        );
    }
    let cold = |shard: usize| {
        na.metric(&format!(
            "shardgate_handoffs_total{{shard=\"{shard}\",reason=\"cold\"}}"
        ))
    };
    na.wait_metric("shardgate_handoffs_total{", |v| v >= 2.0);
    assert!(
        cold(0) >= 1.0 && cold(1) >= 1.0,
        "both of A's shards handed off"
    );
    for shard in 0..2 {
        let served = nb.wait_metric(
            &format!("shardgate_handoff_replies_total{{shard=\"{shard}\",mode=\"relay\"}}"),
            |v| v >= 1.0,
        );
        assert!(served >= 1.0, "B's shard {shard} served handed-off work");
    }
}

#[test]
fn a_saturated_alternate_stops_the_handed_off_share_growing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = Spec::pair("relay");
    // A judges B saturated from 80% busy; B is driven near 100% below.
    a.saturated_percent = 80;
    a.max_wait_us = 1_000;
    let (na, nb) = (Node::start(&a, dir.path()), Node::start(&b, dir.path()));
    na.wait_alternate_up();
    nb.wait_alternate_up();
    // Saturate B with its own clients: a steady backlog of slow requests,
    // kept topped up until A has seen B's load (bounded by PATIENCE).
    let b_addr = b.fn_addr();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let c = client();
            c.set_nonblocking(true).unwrap();
            let mut buf = vec![0u8; 2048];
            let mut id = 1_000_000u64;
            let end = Instant::now() + PATIENCE;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                for _ in 0..4 {
                    send_invoke(&c, b_addr, id, "spin", &spin_input(SLOW / 10, b"b"));
                    id += 1;
                }
                while c.recv_from(&mut buf).is_ok() {}
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    na.wait_metric("shardgate_handoff_alternate_saturated{", |v| v >= 1.0);
    let busy = na.metric("shardgate_handoff_alternate_busy_ratio{");
    assert!(busy >= 0.8, "B reported {busy}");
    let handed_before = handoffs(&na, "overloaded");
    // Now overload A while B stays saturated: the excess is refused here
    // (unavailable) instead of being pushed onto B.
    let c = client();
    let n = 30u64;
    for id in 0..n {
        send_invoke(&c, a.fn_addr(), id, "spin", &spin_input(SLOW, b""));
    }
    let got = collect(&c, n as usize, Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    assert_eq!(got.len() as u64, n, "every request answered");
    let rejected = got
        .values()
        .filter(|(s, _, _)| *s == Ok(Status::Unavailable))
        .count();
    assert!(rejected >= 1, "the excess is refused: {got:?}");
    let handed_after = na.wait_metric("shardgate_overload_rejects_total{", |v| v >= 1.0);
    let _ = handed_after;
    let handed = handoffs(&na, "overloaded") - handed_before;
    assert!(
        handed < rejected as f64,
        "A kept handing off to a saturated B: {handed} handed off, {rejected} refused"
    );
}

/// An IPv6 client of A, handed off to B: answered from A's IPv6 service
/// address, directly by B (raw IPv6) or through A (relay).
fn ipv6_clients_are_answered(reply: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = Spec::pair(reply);
    a.warm_on_demand = true;
    let v6: SocketAddr = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.ports.func));
    a.extra_fn_listen = Some(v6);
    b.extra_fn_listen = Some(SocketAddr::from((
        std::net::Ipv6Addr::LOCALHOST,
        b.ports.func,
    )));
    // A's IPv6 service address is not its hand-off IP: B may send from it.
    b.peer_service_ips = "\"::1\"";
    let (na, nb) = (Node::start(&a, dir.path()), Node::start(&b, dir.path()));
    na.wait_alternate_up();
    let c = UdpSocket::bind("[::1]:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    send_invoke(&c, v6, 9, "spin", b"over-v6");
    let got = collect(&c, 1, Duration::from_millis(100));
    let (status, body, from) = got.get(&9).expect("answered");
    assert_eq!(
        (*status, body.as_slice(), *from),
        (Ok(Status::Ok), &b"over-v6"[..], v6),
        "answered once, from the address the client asked"
    );
    na.wait_metric(&format!("{HANDOFFS}\"cold\"}}"), |v| v == 1.0);
    // Direct needs raw sockets (root or CAP_NET_RAW); without them B logs
    // a warning and relays, which is what the mode metric then says.
    let raw_ok = !nb.log_text().contains("needs a raw socket");
    let mode = if reply == "direct" && raw_ok {
        "direct"
    } else {
        "relay"
    };
    nb.wait_metric(
        &format!("shardgate_handoff_replies_total{{shard=\"0\",mode=\"{mode}\"}}"),
        |v| v == 1.0,
    );
}

#[test]
fn ipv6_clients_are_answered_directly() {
    ipv6_clients_are_answered("direct");
}

#[test]
fn ipv6_clients_are_answered_through_the_relay() {
    ipv6_clients_are_answered("relay");
}

/// A genuine frame whose original service address is not the alternate's
/// (another IP) is answered through the relay, never sent directly from
/// that address.
#[test]
fn direct_replies_never_use_a_source_that_is_not_the_alternates() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = Spec::pair("direct");
    let fake_a = UdpSocket::bind(a.handoff_addr()).unwrap();
    fake_a
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let nb = Node::start(&b, dir.path());
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let key = Key::new(KEY).unwrap().for_sender(a.handoff_addr());
    let mut req = Vec::new();
    fnframe::encode_request(&mut req, 79, "spin", b"spoof?").unwrap();
    let f = Frame {
        ty: FrameType::Request,
        hop: true,
        service: ServiceKind::Function,
        timestamp_us: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64,
        nonce: 0xd1,
        client: client.local_addr().unwrap(),
        service_addr: "127.0.0.9:53".parse().unwrap(),
        payload: &req,
    };
    let mut d = Vec::new();
    frame::seal(&key, &f, &mut d).unwrap();
    fake_a.send_to(&d, b.handoff_addr()).unwrap();
    let mut buf = vec![0u8; 65_536];
    let end = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < end,
            "no relayed answer:\n{}",
            nb.log_text()
        );
        if let Ok((n, _)) = fake_a.recv_from(&mut buf) {
            if let Ok(r) = frame::parse(&buf[..n]) {
                if r.ty == FrameType::Reply {
                    assert_eq!(r.service_addr, f.service_addr);
                    break;
                }
            }
        }
    }
    assert!(
        client.recv_from(&mut buf).is_err(),
        "a reply was sent from a source that is not the alternate's"
    );
    nb.wait_metric(
        "shardgate_handoff_replies_total{shard=\"0\",mode=\"relay\"}",
        |v| v == 1.0,
    );
}

/// A genuine frame opens once per node: copies replayed from other ports of
/// A's IP, from threads on every CPU (so they land on both of B's shards),
/// are all refused; and after B restarts, the frame (stamped before the
/// restart, still inside the window) is refused too.
#[test]
fn replays_on_other_shards_or_after_a_restart_are_refused() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir().unwrap();
    let (a, mut b) = Spec::pair("relay");
    b.shards = cpus.min(2);
    b.window_ms = 60_000;
    let fake_a = UdpSocket::bind(a.handoff_addr()).unwrap();
    fake_a
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut nb = Node::start(&b, dir.path());
    let key = Key::new(KEY).unwrap().for_sender(a.handoff_addr());
    let mut req = Vec::new();
    fnframe::encode_request(&mut req, 78, "spin", b"once").unwrap();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let f = Frame {
        ty: FrameType::Request,
        hop: true,
        service: ServiceKind::Function,
        timestamp_us: ts,
        nonce: 0x5eed,
        client: "127.0.0.1:9".parse().unwrap(),
        service_addr: a.fn_addr(),
        payload: &req,
    };
    let mut genuine = Vec::new();
    frame::seal(&key, &f, &mut genuine).unwrap();
    let b_port = b.handoff_addr();
    fake_a.send_to(&genuine, b_port).unwrap();
    let mut buf = vec![0u8; 65_536];
    let end = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < end,
            "no relayed answer:\n{}",
            nb.log_text()
        );
        if let Ok((n, _)) = fake_a.recv_from(&mut buf) {
            if frame::parse(&buf[..n]).is_ok_and(|f| f.ty == FrameType::Reply) {
                break;
            }
        }
    }
    // 16 copies, each from a port of its own, from a thread on each CPU.
    let copies: Vec<_> = (0..cpus.min(2))
        .map(|cpu| {
            let genuine = genuine.clone();
            std::thread::spawn(move || {
                pin_thread(cpu);
                for _ in 0..8 {
                    let s = UdpSocket::bind(SocketAddr::from((A_IP, 0))).unwrap();
                    s.send_to(&genuine, b_port).unwrap();
                }
            })
        })
        .collect();
    let sent = 8 * copies.len();
    for t in copies {
        t.join().unwrap();
    }
    nb.wait_metric("shardgate_handoff_frames_dropped_total{", |v| {
        v >= sent as f64
    });
    let replayed = nb
        .metric("shardgate_handoff_frames_dropped_total{shard=\"0\",reason=\"replayed\"}")
        + nb.metric("shardgate_handoff_frames_dropped_total{shard=\"1\",reason=\"replayed\"}");
    assert_eq!(
        replayed, sent as f64,
        "every copy is a replay, on any shard"
    );
    let ran = nb.metric(
        "shardgate_function_invocations_total{shard=\"0\",function=\"spin\",outcome=\"ok\"}",
    ) + nb.metric(
        "shardgate_function_invocations_total{shard=\"1\",function=\"spin\",outcome=\"ok\"}",
    );
    assert_eq!(ran, 1.0, "the request ran once on the node");
    if cpus >= 2 {
        for shard in 0..2 {
            let got = nb.metric(&format!(
                "shardgate_handoff_frames_received_total{{shard=\"{shard}\"}}"
            ));
            assert!(got >= 1.0, "copies reached shard {shard} ({got})");
        }
    }

    // Restart B: its table is empty, but the frame predates its start.
    nb.stop();
    nb.spawn();
    fake_a.send_to(&genuine, b_port).unwrap();
    nb.wait_metric("shardgate_handoff_frames_dropped_total{", |v| v >= 1.0);
    let stale = nb.metric("shardgate_handoff_frames_dropped_total{shard=\"0\",reason=\"stale\"}")
        + nb.metric("shardgate_handoff_frames_dropped_total{shard=\"1\",reason=\"stale\"}");
    assert_eq!(stale, 1.0, "refused after the restart:\n{}", nb.log_text());
    fake_a.set_nonblocking(true).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    while let Ok((n, _)) = fake_a.recv_from(&mut buf) {
        let f = frame::parse(&buf[..n]).unwrap();
        assert_ne!(f.ty, FrameType::Reply, "a replay was answered");
    }
}

#[test]
fn check_config_rejects_self_pairing_and_short_or_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = Spec::pair("relay");
    let good = a.config(dir.path());
    let check = |text: &str, key: Option<&[u8]>| {
        let path = dir.path().join("check.toml");
        std::fs::write(&path, text).unwrap();
        let _ = std::fs::remove_file(dir.path().join("handoff.key"));
        if let Some(k) = key {
            write_key(&dir.path().join("handoff.key"), k);
        }
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(check(&good, Some(KEY)).0, Some(0));
    let (code, text) = check(&good, Some(b"too-short-key"));
    assert_eq!(code, Some(2));
    assert!(
        text.contains("handoff.key_file") && text.contains("13 bytes"),
        "{text}"
    );
    let (code, text) = check(&good, None);
    assert_eq!(code, Some(2));
    assert!(
        text.contains("handoff.key_file") && text.contains("cannot read"),
        "{text}"
    );
    let selfish = good.replace(
        &format!("alternate = \"127.0.0.3:{}\"", a.peer.handoff),
        &format!("alternate = \"127.0.0.2:{}\"", a.ports.handoff),
    );
    assert_ne!(selfish, good);
    let (code, text) = check(&selfish, Some(KEY));
    assert_eq!(code, Some(2));
    assert!(
        text.contains("handoff.alternate") && text.contains("paired with itself"),
        "{text}"
    );
}

// ---------------------------------------------------------------- HTTP

#[derive(Debug)]
struct HttpResponse {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn expect_redirect(self) -> String {
        assert_eq!(self.code, 307, "{self:?}");
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.clone())
            .expect("Location")
    }
}

fn http_post(addr: SocketAddr, path: &str, body: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let code = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        code,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}
