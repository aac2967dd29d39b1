//! Shared helpers of the admin-plane tests: start the real `shardgate`
//! binary on loopback with its own ports and state directory (killed on
//! drop), talk HTTP to its admin listener, and ask it DNS questions from a
//! chosen source address.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use domain::base::iana::Rcode;
use domain::rdata::A;

use super::ports::free_port;
use super::process::Process;

/// Ports of one server under test.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub dns: u16,
    pub admin: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            dns: free_port(),
            admin: free_port(),
        }
    }
}

/// [`config`] plus the function service on `fn_port` (UDP and HTTP) serving
/// the example `checksum` function, compiled into a cache under `cache_dir`.
pub fn config_with_functions(
    ports: Ports,
    shards: usize,
    fn_port: u16,
    cache_dir: &Path,
) -> String {
    config(ports, shards, "").replace("[functions]\nenabled = false\n", "")
        + &format!(
            r#"
[functions]
enabled = true
listen = ["127.0.0.1:{fn_port}"]
cache_dir = "{cache}"

[[function]]
name = "checksum"
module = "{module}"
"#,
            cache = cache_dir.display(),
            module = repo("functions/checksum.wat").display(),
        )
}

/// A test configuration: zone `svc.example.`, view `site` (127.0.0.0/25)
/// answering `upf.svc.example. A 10.0.1.5`, view `default` answering
/// 10.0.9.5. `server_extra` goes into `[server]`.
pub fn config(ports: Ports, shards: usize, server_extra: &str) -> String {
    format!(
        r#"
[server]
shards = {shards}
admin_listen = "127.0.0.1:{admin}"
state_dir = "state"
shutdown_grace_ms = 1000
{server_extra}

[dns]
listen = ["127.0.0.1:{dns}"]

[functions]
enabled = false

[[zone]]
name = "svc.example."
ttl = 30
soa = {{ mname = "ns1.svc.example.", rname = "hostmaster.svc.example." }}

[[view]]
name = "site"
prefixes = ["127.0.0.0/25"]
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.1.5"

[[view]]
name = "default"
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.9.5"
"#,
        admin = ports.admin,
        dns = ports.dns,
    )
}

/// A running `shardgate run`; killed on drop. Its log (all runs in `dir`)
/// is `dir/shardgate.log`.
pub struct Shardgate {
    proc: Process,
    pub ports: Ports,
    pub dir: PathBuf,
    pub token: Option<String>,
}

impl Shardgate {
    /// Write `config_text` to `dir/shardgate.toml` and start the binary on it;
    /// returns once `/readyz` answers 200 (bounded wait).
    pub fn start(dir: &Path, ports: Ports, config_text: &str) -> Shardgate {
        let s = Self::spawn(dir, ports, config_text);
        s.wait_ready();
        s
    }

    /// Start without waiting for readiness.
    pub fn spawn(dir: &Path, ports: Ports, config_text: &str) -> Shardgate {
        let cfg = dir.join("shardgate.toml");
        std::fs::write(&cfg, config_text).unwrap();
        let mut cmd = Command::new(super::process::BIN);
        cmd.args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env_remove("STATE_DIRECTORY");
        Shardgate {
            proc: Process::spawn(cmd, Some(dir.join("shardgate.log"))),
            ports,
            dir: dir.to_path_buf(),
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> Shardgate {
        self.token = Some(token.to_owned());
        self
    }

    /// Everything logged in `dir`, this run and the earlier ones.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("shardgate.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = try_http(self.ports.admin, "GET", "/readyz", None, None) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "shardgate did not become ready; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Exit status if the process has exited within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.proc.wait_exit(within)
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(10));
    }

    pub fn sighup(&self) {
        self.proc.signal(libc::SIGHUP);
    }

    /// An admin request with this server's token.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        try_http(self.ports.admin, method, path, body, self.token.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; log:\n{}", self.log()))
    }

    pub fn metrics(&self) -> String {
        let (status, body) = self.http("GET", "/metrics", None);
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A record answer for `upf.svc.example.` asked from `src`.
    pub fn ask(&self, src: Ipv4Addr) -> Vec<Ipv4Addr> {
        query_a(self.ports.dns, src, "upf.svc.example.")
            .unwrap_or_else(|e| panic!("query from {src}: {e}; log:\n{}", self.log()))
    }
}

/// One HTTP/1.1 request (Connection: close); the status and the body.
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        return Ok((status, dechunk(body)?));
    }
    Ok((status, body.to_owned()))
}

/// Decode a `Transfer-Encoding: chunked` body (Prometheus uses it).
fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("truncated chunk size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size:?}: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after.get(..size).ok_or("truncated chunk")?;
        out.push_str(chunk);
        rest = after.get(size + 2..).ok_or("truncated chunk end")?;
    }
}

/// Ask `name` A over UDP from source address `src` (any port); the A
/// records of the answer. Retries a lost datagram twice.
pub fn query_a(port: u16, src: Ipv4Addr, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let sock = UdpSocket::bind((src, 0)).map_err(|e| format!("bind {src}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    query_a_on(&sock, port, name)
}

/// Like [`query_a`] on an already bound socket (one flow, one shard).
pub fn query_a_on(sock: &UdpSocket, port: u16, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let id: u16 = rand_id();
    let query = super::dns::query(id, name, super::dns::QTYPE_A, false);
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        sock.send_to(&query, ("127.0.0.1", port))
            .map_err(|e| e.to_string())?;
        // Until the read times out (then send again).
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let msg =
                domain::base::Message::from_octets(buf[..n].to_vec()).map_err(|e| e.to_string())?;
            if msg.header().id() != id {
                continue; // a late answer to an earlier try
            }
            if msg.header().rcode() != Rcode::NOERROR {
                return Err(format!("rcode {}", msg.header().rcode()));
            }
            let mut out = Vec::new();
            for rr in msg.answer().map_err(|e| e.to_string())?.limit_to::<A>() {
                out.push(rr.map_err(|e| e.to_string())?.data().addr());
            }
            return Ok(out);
        }
    }
    Err("no answer after 3 tries".into())
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (n as u16) ^ (std::process::id() as u16).rotate_left(7)
}

/// `dig +short` from `src` (UDP, or TCP with `tcp`): the answer lines.
pub fn dig(port: u16, src: &str, name: &str, tcp: bool) -> Vec<String> {
    dig_at("127.0.0.1", port, src, name, tcp)
}

/// [`dig`] asking the server at `server` (e.g. `127.0.0.3`).
pub fn dig_at(server: &str, port: u16, src: &str, name: &str, tcp: bool) -> Vec<String> {
    let at = format!("@{server}");
    let mut cmd = Command::new("dig");
    cmd.args([
        "+short",
        "+time=2",
        "+tries=2",
        "-p",
        &port.to_string(),
        "-b",
        src,
        &at,
        name,
        "A",
    ]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd.output().expect("run dig (apt-get install dnsutils)");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

/// The value of the first sample of `/metrics` text that starts with
/// `prefix` (name and labels, e.g. `shardgate_requests_total{shard="0",protocol="dns-udp"}`).
pub fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Sum of every sample whose line starts with `prefix`.
pub fn sum_samples(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// Sum of every sample whose line starts with `prefix` and contains each
/// of `labels` (e.g. `protocol="dns-udp"`).
pub fn sum_samples_with(metrics: &str, prefix: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// Path inside the repository.
pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Poll `f` every 50 ms until it returns `Some`, at most `within`.
pub fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many shards the machine can run (one per online CPU, at most 2).
pub fn shard_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().min(2))
        .unwrap_or(1)
}
