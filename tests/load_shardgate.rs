//! `shardgate-load` against the real `shardgate`: each mode (dns, fn-udp,
//! fn-http) completes and its counts match the server's own request
//! counters (`shardgate_requests_total` on the admin `/metrics`); a function
//! that traps is counted as errors of kind `trap`; a port with nothing
//! listening loses every request (UDP) or never connects (HTTP).

mod support;

use support::{free_port, repo, try_http, Ports, Shardgate};

use std::time::{Duration, Instant};

use support::load::*;

/// A running `shardgate run` with DNS, functions and admin on free ports;
/// killed on drop.
struct Server {
    /// Killed on drop.
    _server: Shardgate,
    dns: u16,
    func: u16,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (dns, func, admin) = (free_port(), free_port(), free_port());
        let cfg = format!(
            r#"
[server]
shards = 2
admin_listen = "127.0.0.1:{admin}"
state_dir = "{state}"
shutdown_grace_ms = 1000

[dns]
listen = ["127.0.0.1:{dns}"]

[[zone]]
name = "svc.example."
ttl = 30
soa = {{ mname = "ns1.svc.example.", rname = "hostmaster.svc.example." }}

[[view]]
name = "default"
record = [
  {{ name = "upf.svc.example.", type = "A", data = "10.0.9.5" }},
  {{ name = "upf.svc.example.", type = "AAAA", data = "fd00:9::5" }},
]

[functions]
listen = ["127.0.0.1:{func}"]
cache_dir = "{cache}"

[[function]]
name = "probe"
module = "{probe}"
deadline_ms = 100
"#,
            state = dir.path().join("state").display(),
            cache = dir.path().join("cache").display(),
            probe = repo("tests/functions_fixtures/probe.wat").display(),
        );
        let sg = Shardgate::start(dir.path(), Ports { dns, admin }, &cfg);
        Server {
            _server: sg,
            dns,
            func,
            admin,
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        try_http(self.admin, "GET", path, None, None).ok()
    }

    /// `shardgate_requests_total` for `protocol`, summed over shards.
    fn requests(&self, protocol: &str) -> u64 {
        let (_, body) = self.get("/metrics").expect("metrics");
        let label = format!("protocol=\"{protocol}\"");
        body.lines()
            .filter(|l| l.starts_with("shardgate_requests_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Wait (bounded) until the server's counter reaches `want`; returns the
    /// last value seen (metrics are published periodically).
    fn requests_settled(&self, protocol: &str, want: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = self.requests(protocol);
            if n >= want || Instant::now() >= deadline {
                // Give a late publish the chance to overshoot, then re-read.
                std::thread::sleep(Duration::from_millis(1200));
                return self.requests(protocol);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn dns_counts_match_the_server() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let q = query_file(
        dir.path(),
        "upf.svc.example. A\nupf.svc.example. AAAA\nnx.svc.example. A\n",
    );
    let before = s.requests("dns-udp");
    let (_, res) = run_load(
        dir.path(),
        "dns",
        &[
            "dns",
            "--target",
            &format!("127.0.0.1:{}", s.dns),
            "-f",
            &q,
            "-n",
            "32",
            "-d",
            "1s",
            "--warmup",
            "0",
            "--source",
            "127.0.0.2-127.0.0.5",
            "--brief",
        ],
    );
    let sent = count(&res, "sent");
    assert!(sent > 1000, "only {sent} sent");
    assert_eq!(count(&res, "ok"), sent, "{}", res["counts"]);
    assert_eq!(s.requests_settled("dns-udp", before + sent) - before, sent);
}

#[test]
fn fn_udp_counts_match_the_server_and_traps_are_errors() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let target = format!("127.0.0.1:{}", s.func);
    let before = s.requests("fn-udp");
    let (_, ok) = run_load(
        dir.path(),
        "ok",
        &[
            "fn-udp", "--target", &target, "-F", "probe", "--data", "o", "-n", "8", "-d", "1s",
            "--warmup", "0", "--brief",
        ],
    );
    let sent = count(&ok, "sent");
    assert!(sent > 100, "only {sent} sent");
    assert_eq!(count(&ok, "ok"), sent, "{}", ok["counts"]);
    let (_, trap) = run_load(
        dir.path(),
        "trap",
        &[
            "fn-udp", "--target", &target, "-F", "probe", "--data", "t", "--rate", "200", "-d",
            "1s", "--warmup", "0", "--brief",
        ],
    );
    let traps = count(&trap, "sent");
    assert!(
        (150..=250).contains(&traps),
        "{traps} sent at 200/s for 1 s"
    );
    assert_eq!(errors_of(&trap, "trap"), traps, "{}", trap["counts"]);
    assert_eq!(count(&trap, "ok"), 0);
    assert_eq!(count(&trap, "lost"), 0);
    let total = sent + traps;
    assert_eq!(s.requests_settled("fn-udp", before + total) - before, total);
}

#[test]
fn fn_http_counts_match_the_server_and_traps_are_errors() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let target = format!("127.0.0.1:{}", s.func);
    let before = s.requests("fn-http");
    let (_, ok) = run_load(
        dir.path(),
        "ok",
        &[
            "fn-http", "--target", &target, "-F", "probe", "--data", "o", "-c", "4", "-n", "8",
            "-d", "1s", "--warmup", "0", "--brief",
        ],
    );
    let sent = count(&ok, "sent");
    assert!(sent > 100, "only {sent} sent");
    assert_eq!(count(&ok, "ok"), sent, "{}", ok["counts"]);
    assert_eq!(events_of(&ok, "connections opened"), 4);
    let (_, trap) = run_load(
        dir.path(),
        "trap",
        &[
            "fn-http", "--target", &target, "-F", "probe", "--data", "t", "-c", "2", "--rate",
            "200", "-d", "1s", "--warmup", "0", "--brief",
        ],
    );
    let traps = count(&trap, "sent");
    assert!(
        (150..=250).contains(&traps),
        "{traps} sent at 200/s for 1 s"
    );
    assert_eq!(errors_of(&trap, "trap"), traps, "{}", trap["counts"]);
    assert_eq!(count(&trap, "lost"), 0);
    let total = sent + traps;
    assert_eq!(
        s.requests_settled("fn-http", before + total) - before,
        total
    );
}

#[test]
fn nothing_listening_loses_udp_and_never_connects_http() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let target = format!("127.0.0.1:{port}");
    let (_, udp) = run_load(
        dir.path(),
        "udp",
        &[
            "fn-udp",
            "--target",
            &target,
            "-F",
            "probe",
            "-n",
            "4",
            "-d",
            "1s",
            "--warmup",
            "0",
            "--timeout",
            "200ms",
            "--brief",
        ],
    );
    assert!(count(&udp, "sent") > 0);
    assert_eq!(count(&udp, "lost"), count(&udp, "sent"));
    assert_eq!(count(&udp, "ok"), 0);
    let (_, http) = run_load(
        dir.path(),
        "http",
        &[
            "fn-http", "--target", &target, "-F", "probe", "-c", "2", "--rate", "100", "-d", "1s",
            "--warmup", "0", "--brief",
        ],
    );
    assert_eq!(count(&http, "sent"), 0);
    assert!(
        events_of(&http, "connects refused") >= 2,
        "{}",
        http["counts"]
    );
    // Every request the schedule called for was due but had no connection.
    assert!(count(&http, "unsent") >= 90, "{}", http["counts"]);
}
