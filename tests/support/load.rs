//! Shared helpers of the `shardgate-load` tests: run the real binary and
//! read its JSON result, and small in-test targets whose behaviour the test
//! controls and counts (a DNS responder that can answer with any rcode, drop
//! or stall, and a function-frame responder). Every target runs on an
//! ephemeral loopback port and stops on drop.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `shardgate-load` binary: the workspace's `load` crate builds it next
/// to `shardgate` (same target directory and profile). `cargo test` does not
/// build another package's binary, so a missing one is built here, once per
/// test process, with the cargo that runs the tests.
pub fn load_bin() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let bin = Path::new(super::process::BIN).with_file_name("shardgate-load");
    let built = BUILT.get_or_init(|| {
        if bin.exists() {
            return Ok(());
        }
        let release = bin.parent().is_some_and(|dir| dir.ends_with("release"));
        let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        let name = "shardgate-load";
        cmd.args(["build", "--quiet", "-p", name, "--bin", name]);
        if release {
            cmd.arg("--release");
        }
        match cmd.status() {
            Ok(status) if status.success() && bin.exists() => Ok(()),
            Ok(status) => Err(format!("cargo build -p shardgate-load: {status}")),
            Err(err) => Err(format!("cannot run cargo: {err}")),
        }
    });
    if let Err(err) = built {
        panic!(
            "{} is missing and building it failed ({err}): run `cargo build --release -p shardgate-load`",
            bin.display()
        );
    }
    bin
}

/// Run `shardgate-load` with `args` plus `--json dir/name.json`; returns the
/// process output and the parsed result.
pub fn run_load(dir: &Path, name: &str, args: &[&str]) -> (Output, serde_json::Value) {
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(load_bin())
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run shardgate-load");
    assert!(
        out.status.success(),
        "shardgate-load {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(&json).expect("result file written");
    (out, serde_json::from_str(&text).expect("result is JSON"))
}

pub fn count(r: &serde_json::Value, key: &str) -> u64 {
    r["counts"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counts.{key} in {r}"))
}

/// Errors of one kind in a result (0 when absent).
pub fn errors_of(r: &serde_json::Value, kind: &str) -> u64 {
    r["counts"]["errors_by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[0] == kind)
        .map_or(0, |e| e[1].as_u64().unwrap())
}

/// Events of one kind in a result (0 when absent).
pub fn events_of(r: &serde_json::Value, kind_prefix: &str) -> u64 {
    r["counts"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[0].as_str().unwrap().starts_with(kind_prefix))
        .map(|e| e[1].as_u64().unwrap())
        .sum()
}

pub fn latency_us(r: &serde_json::Value, key: &str) -> f64 {
    r["latency"][key].as_f64().unwrap()
}

/// Latency samples at or above `us` microseconds, from the distribution.
pub fn samples_at_least(r: &serde_json::Value, us: f64) -> u64 {
    let total = r["latency"]["count"].as_u64().unwrap();
    let below = r["distribution"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["value_us"].as_f64().unwrap() < us)
        .map(|p| p["total_count"].as_u64().unwrap())
        .max()
        .unwrap_or(0);
    total - below
}

/// What a responder does with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Answer (DNS: with this rcode).
    Reply(u8),
    Drop,
    /// Sleep this long, then answer with this rcode.
    StallThenReply(Duration, u8),
}

/// What a responder saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub received: u64,
    pub replied: u64,
    pub dropped: u64,
    pub by_rcode: HashMap<u8, u64>,
    pub by_source: HashMap<IpAddr, u64>,
}

type Policy = dyn Fn(u64, &[u8]) -> Action + Send + Sync;

/// An in-test UDP DNS responder: every query gets the reply the policy
/// picks (the query echoed with QR and the rcode set), is dropped, or
/// waits. Counts everything.
pub struct Responder {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

/// Build the DNS reply to `query`: QR set, rcode, question echoed.
pub fn dns_reply(query: &[u8], rcode: u8) -> Vec<u8> {
    let mut r = query.to_vec();
    if r.len() >= 4 {
        r[2] |= 0x80;
        r[3] = (r[3] & 0xf0) | (rcode & 0x0f);
    }
    r
}

impl Responder {
    pub fn dns(policy: impl Fn(u64, &[u8]) -> Action + Send + Sync + 'static) -> Responder {
        Self::start(Arc::new(policy), dns_reply)
    }

    /// A responder with its own reply builder (e.g. function frames).
    pub fn start(policy: Arc<Policy>, reply: fn(&[u8], u8) -> Vec<u8>) -> Responder {
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        // Room for every datagram that arrives during a stall.
        sock.set_recv_buffer_size(4 << 20).unwrap();
        sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let sock: UdpSocket = sock.into();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop2, seen2) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut n = 0u64;
            // Bounded: ends when stopped, and after 5 minutes at most.
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((len, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let q = &buf[..len];
                let action = policy(n, q);
                n += 1;
                let mut s = seen2.lock().unwrap();
                s.received += 1;
                *s.by_source.entry(from.ip()).or_default() += 1;
                let rcode = match action {
                    Action::Drop => {
                        s.dropped += 1;
                        continue;
                    }
                    Action::Reply(rc) => rc,
                    Action::StallThenReply(d, rc) => {
                        drop(s);
                        std::thread::sleep(d);
                        s = seen2.lock().unwrap();
                        rc
                    }
                };
                s.replied += 1;
                *s.by_rcode.entry(rcode).or_default() += 1;
                drop(s);
                let _ = sock.send_to(&reply(q, rcode), from);
            }
        });
        Responder {
            addr,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Lower-case question name of a DNS query (for policies).
pub fn qname(query: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 12;
    while let Some(&len) = query.get(i) {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        let Some(label) = query.get(i + 1..i + 1 + len as usize) else {
            break;
        };
        out.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        out.push('.');
        i += 1 + len as usize;
    }
    out
}

/// A query file in `dir`.
pub fn query_file(dir: &Path, lines: &str) -> String {
    let p = dir.join("queries.txt");
    std::fs::write(&p, lines).unwrap();
    p.to_string_lossy().into_owned()
}
