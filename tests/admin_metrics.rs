//! Monitoring, end to end: the real binary's `/metrics` after mixed traffic
//! passes `promtool check metrics`; the shipped Prometheus config and rules
//! pass `promtool`; every metric the dashboard and the alerts use is
//! exported; a real Prometheus scrapes every shard and sees a counter move;
//! the admin access policy (token, loopback) holds.

mod support;

use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::dns::upf_query;
use support::*;

/// Function traffic over both surfaces: successful invocations, an
/// unknown function (404) and an input over the limit (413).
fn function_traffic(fn_port: u16) {
    for _ in 0..5 {
        let (status, body) = try_http(fn_port, "POST", "/fn/checksum", Some("abcd"), None).unwrap();
        assert_eq!(status, 200, "{body}");
        let out = Command::new(BIN)
            .args([
                "invoke",
                "--udp",
                &format!("127.0.0.1:{fn_port}"),
                "checksum",
                "--data",
                "abcd",
                "--hex",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        try_http(fn_port, "POST", "/fn/nope", Some("x"), None)
            .unwrap()
            .0,
        404
    );
    // An input over the limit: refused from its Content-Length (413),
    // before any body is sent.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", fn_port)).unwrap();
    c.write_all(b"POST /fn/checksum HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut c, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
}

/// Mixed DNS traffic: answers from two views over UDP and TCP, NXDOMAIN,
/// REFUSED, and malformed datagrams.
fn mixed_traffic(s: &Shardgate) {
    for i in 0..20u8 {
        assert_eq!(
            s.ask(Ipv4Addr::new(127, 0, 0, 10 + i)),
            vec![Ipv4Addr::new(10, 0, 1, 5)]
        );
        assert_eq!(
            s.ask(Ipv4Addr::new(127, 0, 1, 10 + i)),
            vec![Ipv4Addr::new(10, 0, 9, 5)]
        );
    }
    assert_eq!(
        dig(s.ports.dns, "127.0.0.5", "upf.svc.example.", true),
        vec!["10.0.1.5"]
    );
    assert!(
        query_a(s.ports.dns, Ipv4Addr::LOCALHOST, "nope.svc.example.")
            .unwrap_err()
            .contains("NXDOMAIN")
    );
    assert!(query_a(s.ports.dns, Ipv4Addr::LOCALHOST, "example.org.")
        .unwrap_err()
        .contains("REFUSED"));
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for bytes in [&b"\x00\x01"[..], &[0xffu8; 40][..], &[0u8; 12][..]] {
        junk.send_to(bytes, ("127.0.0.1", s.ports.dns)).unwrap();
    }
    // The shard still answers after the junk.
    assert_eq!(
        s.ask(Ipv4Addr::new(127, 0, 0, 9)),
        vec![Ipv4Addr::new(10, 0, 1, 5)]
    );
}

/// `/metrics` once every shard has published (they publish every second).
fn published_metrics(s: &Shardgate, min_udp_requests: f64) -> String {
    eventually(Duration::from_secs(10), || {
        let m = s.metrics();
        let udp = sum_samples_with(&m, "shardgate_requests_total{", &["protocol=\"dns-udp\""]);
        (udp >= min_udp_requests).then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "request counters never reached {min_udp_requests}:\n{}",
            s.metrics()
        )
    })
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (apt-get install prometheus)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn metrics_after_mixed_traffic_pass_promtool_and_carry_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let shards = shard_count();
    let ports = Ports::new();
    let fn_port = free_port();
    let cfg = config_with_functions(ports, shards, fn_port, &dir.path().join("cache"));
    let s = Shardgate::start(dir.path(), ports, &cfg);
    mixed_traffic(&s);
    function_traffic(fn_port);
    let m = published_metrics(&s, 40.0);
    // Function series are published by the same task, once a second.
    let m = eventually(Duration::from_secs(5), || {
        let m = s.metrics();
        (sum_samples(&m, "shardgate_function_invocations_total{") >= 10.0).then_some(m)
    })
    .unwrap_or_else(|| panic!("function invocations not published:\n{m}"));

    let (ok, out) = promtool(&["check", "metrics"], Some(&m));
    assert!(
        ok,
        "promtool check metrics failed:\n{out}\n--- metrics ---\n{m}"
    );

    // Every sample carries a shard label, and every shard has series.
    for line in m.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        assert!(
            line.contains("shard=\""),
            "sample without a shard label: {line}"
        );
    }
    for shard in 0..shards {
        assert!(
            m.contains(&format!("shardgate_shard_up{{shard=\"{shard}\"}} 1")),
            "shard {shard} not up:\n{m}"
        );
    }
    // What the traffic did is visible, by protocol and rcode.
    assert!(sum_samples(&m, "shardgate_responses_total{") >= 42.0);
    let noerror = sum_samples_with(
        &m,
        "shardgate_responses_total{",
        &["protocol=\"dns-udp\"", "rcode=\"NOERROR\""],
    );
    assert!(noerror >= 41.0, "NOERROR over UDP: {noerror}\n{m}");
    let by = |rcode: &str| -> f64 {
        m.lines()
            .filter(|l| {
                l.starts_with("shardgate_responses_total{")
                    && l.contains(&format!("rcode=\"{rcode}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(by("NXDOMAIN") >= 1.0 && by("REFUSED") >= 1.0, "{m}");
    let tcp = sum_samples_with(&m, "shardgate_requests_total{", &["protocol=\"dns-tcp\""]);
    assert!(tcp >= 1.0, "dig +tcp not counted:\n{m}");
    assert!(
        sum_samples(&m, "shardgate_dropped_total{") >= 1.0,
        "junk datagrams not counted as dropped"
    );
    // Receive batches: at least one per shard that answered, at most one per
    // UDP datagram (dig waits for each answer, so most batches hold one).
    let batches = sum_samples(&m, "shardgate_udp_receive_batches_total{");
    assert!(
        (1.0..=noerror + 50.0).contains(&batches),
        "receive batches {batches} for {noerror} UDP answers\n{m}"
    );
    assert!(
        m.contains("# TYPE shardgate_udp_coalescing_waits_total counter"),
        "coalescing waits not exported:\n{m}"
    );
    // Latency histograms: counts equal the timed answers, buckets cumulative.
    let hist_count = sum_samples(&m, "shardgate_request_duration_seconds_count{");
    assert!(hist_count >= 42.0, "latency histogram count {hist_count}");
    assert!(m.contains("# TYPE shardgate_request_duration_seconds histogram"));
    // UDP queries are timed wherever they are served (by default on the
    // shards' DNS worker threads, which publish this series themselves).
    let udp_timed = sum_samples_with(
        &m,
        "shardgate_request_duration_seconds_count{",
        &["protocol=\"dns-udp\""],
    );
    assert!(udp_timed >= 40.0, "UDP answers not timed: {udp_timed}\n{m}");
    // View hits: 20+ answers from `site`, 20 from `default` (per shard,
    // summed).
    let hits = |view: &str| -> f64 {
        m.lines()
            .filter(|l| {
                l.starts_with("shardgate_view_hits_total{")
                    && l.contains(&format!("view=\"{view}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(hits("site") >= 21.0 && hits("default") >= 20.0, "{m}");
    // Functions: both surfaces, by status; per function, by outcome.
    let fn_by = |protocol: &str, outcome: &str| -> f64 {
        m.lines()
            .filter(|l| {
                l.starts_with("shardgate_responses_total{")
                    && l.contains(&format!("protocol=\"{protocol}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(fn_by("fn-http", "200"), 5.0, "{m}");
    assert_eq!(fn_by("fn-http", "404"), 1.0, "{m}");
    assert_eq!(fn_by("fn-http", "413"), 1.0, "{m}");
    assert_eq!(fn_by("fn-udp", "200"), 5.0, "{m}");
    let ok: f64 = m
        .lines()
        .filter(|l| {
            l.starts_with("shardgate_function_invocations_total{")
                && l.contains("function=\"checksum\",outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(ok, 10.0, "{m}");
    assert!(m.contains("shardgate_function_ready_instances{"), "{m}");
    assert_eq!(
        sample(&m, "shardgate_functions_compiled{shard=\"process\"}"),
        Some(1.0)
    );
    let fn_timed = sum_samples_with(
        &m,
        "shardgate_request_duration_seconds_count{",
        &["protocol=\"fn-"],
    );
    assert!(
        fn_timed >= 10.0,
        "function invocations not timed: {fn_timed}"
    );
    // Process figures.
    assert!(sample(&m, "process_resident_memory_bytes{shard=\"process\"}").unwrap() > 1e6);
    assert!(sample(&m, "process_open_fds{shard=\"process\"}").unwrap() >= 5.0);
}

#[test]
fn deploy_prometheus_config_and_rules_pass_promtool() {
    let (ok, out) = promtool(
        &[
            "check",
            "config",
            repo("deploy/prometheus/prometheus.yml").to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = promtool(
        &[
            "check",
            "rules",
            repo("deploy/prometheus/alerts.yml").to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}");
    // The rules include the alerts the issue asks for.
    let rules = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    for alert in [
        "ShardgateTargetDown",
        "ShardgateHighErrorRatio",
        "ShardgateDnsLatencyP99High",
        "ShardgateHandoffRatioHigh",
        "ShardgateReloadFailed",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}")),
            "missing alert {alert}"
        );
    }
}

#[test]
fn every_metric_in_the_dashboard_and_alerts_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let fn_port = free_port();
    let cfg = config_with_functions(ports, shard_count(), fn_port, &dir.path().join("cache"));
    let s = Shardgate::start(dir.path(), ports, &cfg);
    mixed_traffic(&s);
    function_traffic(fn_port);
    published_metrics(&s, 40.0);
    let m = eventually(Duration::from_secs(5), || {
        let m = s.metrics();
        m.contains("shardgate_function_invocations_total{")
            .then_some(m)
    })
    .expect("function series not published");
    // The fleet-map series exist only with [cluster]: a node following a
    // real etcd adds them.
    let etcd = support::etcd::Etcd::start(dir.path());
    let fleet_dir = dir.path().join("fleet");
    std::fs::create_dir_all(&fleet_dir).unwrap();
    let fleet_ports = Ports::new();
    let fleet_cfg =
        config(fleet_ports, 1, "") + &format!("\n[cluster]\netcd = [\"{}\"]\n", etcd.url());
    let fleet = Shardgate::start(&fleet_dir, fleet_ports, &fleet_cfg);
    let fleet_metrics = eventually(Duration::from_secs(10), || {
        let m = fleet.metrics();
        m.contains("shardgate_cluster_etcd_up{shard=\"process\"} 1")
            .then_some(m)
    })
    .unwrap_or_else(|| panic!("the fleet node never reached etcd; log:\n{}", fleet.log()));
    let metrics_file = dir.path().join("metrics.txt");
    std::fs::write(&metrics_file, m + &fleet_metrics).unwrap();
    let out = Command::new(repo("scripts/check-metric-names.py"))
        .arg("--metrics")
        .arg(&metrics_file)
        .output()
        .expect("run scripts/check-metric-names.py (python3)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // The checker itself rejects a name that is not exported.
    let bogus = dir.path().join("bogus.yml");
    std::fs::write(&bogus, "expr: rate(shardgate_no_such_metric_total[5m])\n").unwrap();
    let out = Command::new(repo("scripts/check-metric-names.py"))
        .arg("--metrics")
        .arg(&metrics_file)
        .arg(&bogus)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("shardgate_no_such_metric_total"));
}

/// A Prometheus server run by the test; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Start Prometheus with the shipped scrape config and rules, pointed at
    /// `target` and scraping every second.
    fn start(dir: &std::path::Path, target: &str) -> Prometheus {
        let shipped = std::fs::read_to_string(repo("deploy/prometheus/prometheus.yml")).unwrap();
        assert!(shipped.contains("127.0.0.1:9353") && shipped.contains("scrape_interval: 5s"));
        let cfg = shipped
            .replace("127.0.0.1:9353", target)
            .replace("scrape_interval: 5s", "scrape_interval: 1s")
            .replace("scrape_timeout: 4s", "scrape_timeout: 900ms");
        std::fs::write(dir.join("prometheus.yml"), cfg).unwrap();
        std::fs::copy(repo("deploy/prometheus/alerts.yml"), dir.join("alerts.yml")).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus (apt-get install prometheus)");
        Prometheus {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// An instant query; the `data.result` array.
    fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let (status, body) = try_http(self.port, "GET", &path, None, None).ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"].as_array().cloned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_real_prometheus_scrapes_every_shard_and_sees_requests_move() {
    let dir = tempfile::tempdir().unwrap();
    let sg_dir = dir.path().join("shardgate");
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&sg_dir).unwrap();
    std::fs::create_dir_all(&prom_dir).unwrap();
    let shards = shard_count();
    let ports = Ports::new();
    let s = Shardgate::start(&sg_dir, ports, &config(ports, shards, ""));
    let prom = Prometheus::start(&prom_dir, &format!("127.0.0.1:{}", ports.admin));

    // Every shard shows up as its own series.
    let up = eventually(Duration::from_secs(40), || {
        let r = prom.query("shardgate_shard_up{job=\"shardgate\"} == 1")?;
        (r.len() == shards).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "Prometheus never saw {shards} shard(s) up; prometheus log:\n{}",
            prom.log()
        )
    });
    let mut seen: Vec<String> = up
        .iter()
        .map(|r| r["metric"]["shard"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, (0..shards).map(|i| i.to_string()).collect::<Vec<_>>());

    // A request counter moves between scrapes.
    let total = |prom: &Prometheus| -> Option<f64> {
        let r =
            prom.query("sum(shardgate_requests_total{job=\"shardgate\",protocol=\"dns-udp\"})")?;
        r.first()?["value"][1].as_str()?.parse().ok()
    };
    let before = eventually(Duration::from_secs(20), || total(&prom))
        .expect("no request counter in Prometheus");
    for i in 0..50u8 {
        s.ask(Ipv4Addr::new(127, 0, 0, 10 + (i % 100)));
    }
    let after = eventually(Duration::from_secs(30), || {
        total(&prom).filter(|&v| v >= before + 50.0)
    })
    .unwrap_or_else(|| {
        panic!(
            "counter did not move past {before} + 50; prometheus log:\n{}",
            prom.log()
        )
    });
    assert!(after >= before + 50.0);

    // The shipped alert rules loaded and evaluate without errors.
    let (status, body) = try_http(prom.port, "GET", "/api/v1/rules", None, None).unwrap();
    assert_eq!(status, 200);
    let rules: serde_json::Value = serde_json::from_str(&body).unwrap();
    let groups = rules["data"]["groups"].as_array().unwrap();
    assert!(groups.len() >= 4, "{body}");
    let healthy = eventually(Duration::from_secs(20), || {
        let (_, body) = try_http(prom.port, "GET", "/api/v1/rules", None, None).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let all: Vec<_> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        all.iter().all(|r| r["health"] == "ok").then_some(all.len())
    });
    assert!(healthy.is_some(), "some rule failed to evaluate: {body}");
    // The target is up and nothing fires on a healthy node.
    let target_down = prom
        .query("ALERTS{alertname=\"ShardgateTargetDown\"}")
        .unwrap_or_default();
    assert!(target_down.is_empty());
}

#[test]
fn admin_token_guards_everything_but_probes() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let token = "test-token-0123456789abcdef";
    let s = Shardgate::start(
        dir.path(),
        ports,
        &config(ports, 1, &format!("admin_token = \"{token}\"")),
    );
    let anon =
        |method: &str, path: &str| try_http(ports.admin, method, path, None, None).unwrap().0;
    assert_eq!(anon("GET", "/healthz"), 200);
    assert_eq!(anon("GET", "/readyz"), 200);
    assert_eq!(anon("GET", "/metrics"), 401);
    assert_eq!(anon("GET", "/v1/views"), 401);
    assert_eq!(anon("POST", "/v1/reload"), 401);
    assert_eq!(
        try_http(
            ports.admin,
            "GET",
            "/metrics",
            None,
            Some("wrong-token-0123456789")
        )
        .unwrap()
        .0,
        401
    );
    let s = s.with_token(token);
    assert_eq!(s.http("GET", "/v1/views", None).0, 200);
    assert!(s.metrics().contains("shardgate_admin_requests_total"));
}

#[test]
fn non_loopback_admin_without_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let cfg = config(ports, 1, "").replace(
        &format!("admin_listen = \"127.0.0.1:{}\"", ports.admin),
        &format!("admin_listen = \"0.0.0.0:{}\"", ports.admin),
    );
    let mut s = Shardgate::spawn(dir.path(), ports, &cfg);
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("shardgate kept running with an open admin port");
    assert!(!status.success());
    let log = s.log();
    assert!(
        log.contains("not a loopback address") && log.contains("admin_token"),
        "{log}"
    );
    // check-config says the same.
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(dir.path().join("shardgate.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("server.admin_listen")
            || String::from_utf8_lossy(&out.stderr).contains("server.admin_listen")
    );
}

#[test]
fn readyz_and_healthz_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let s = Shardgate::start(dir.path(), ports, &config(ports, 1, ""));
    assert_eq!(s.http("GET", "/healthz", None), (200, "ok\n".to_owned()));
    assert_eq!(s.http("GET", "/readyz", None), (200, "ready\n".to_owned()));
    assert_eq!(s.http("GET", "/nope", None).0, 404);
    assert_eq!(s.http("DELETE", "/metrics", None).0, 405);
    // A malformed request gets 400 and the listener keeps serving.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", ports.admin)).unwrap();
    raw.write_all(b"GET /metrics HTTP/1.1\r\nContent-Length: zz\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut raw, &mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(s.http("GET", "/healthz", None).0, 200);
}

/// Send `upf_query` as fast as the socket takes it for at most `within`
/// (bounded), reading whatever replies come back, until `done` says so.
fn flood_until(port: u16, within: Duration, mut done: impl FnMut() -> bool) {
    let client = UdpSocket::bind(("127.0.0.6", 0)).unwrap();
    client.set_nonblocking(true).unwrap();
    let q = upf_query(7);
    let mut buf = [0u8; 512];
    let end = std::time::Instant::now() + within;
    let mut sent = 0u64;
    while std::time::Instant::now() < end {
        for _ in 0..256 {
            if client.send_to(&q, ("127.0.0.1", port)).is_ok() {
                sent += 1;
            }
        }
        while client.recv_from(&mut buf).is_ok() {}
        if sent % 4096 < 256 && done() {
            return;
        }
    }
}

#[test]
fn bursts_are_answered_and_a_saturated_shard_coalesces() {
    // Batches of 16, waits of up to 5 ms from batches of 1 up. Bursts of 50
    // queries are all answered once each; then a flood saturates the one
    // shard, and a saturated shard waits to coalesce (the policy's load
    // measure and ramp run on the real loop).
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let text = config(ports, 1, "").replace(
        &format!("listen = [\"127.0.0.1:{}\"]\n", ports.dns),
        &format!(
            "listen = [\"127.0.0.1:{}\"]\nudp_batch = 16\nudp_coalesce_us = 5000\nudp_coalesce_min_batch = 1\n",
            ports.dns
        ),
    );
    assert!(text.contains("udp_coalesce_us = 5000"));
    let s = Shardgate::start(dir.path(), ports, &text);
    let client = UdpSocket::bind(("127.0.0.5", 0)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let (waves, per_wave) = (6u16, 50u16);
    let mut buf = [0u8; 512];
    for wave in 0..waves {
        let ids: Vec<u16> = (0..per_wave).map(|i| wave * per_wave + i).collect();
        for &id in &ids {
            client
                .send_to(&upf_query(id), ("127.0.0.1", ports.dns))
                .unwrap();
        }
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < ids.len() {
            let (n, _) = client.recv_from(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "wave {wave}: {} of {per_wave} answers, then {e}",
                    seen.len()
                )
            });
            let reply = &buf[..n];
            let id = u16::from_be_bytes([reply[0], reply[1]]);
            assert!(ids.contains(&id), "reply to an unknown ID {id}");
            assert_eq!(reply[3] & 0x0f, 0, "rcode of reply {id}");
            // The single A record of view `site` ends the answer.
            assert_eq!(&reply[n - 4..], &[10, 0, 1, 5], "answer of reply {id}");
            assert!(seen.insert(id), "two replies to ID {id}");
        }
    }
    let total = f64::from(waves * per_wave);
    let m = published_metrics(&s, total);
    let batches = sum_samples(&m, "shardgate_udp_receive_batches_total{");
    assert!(
        (1.0..=total).contains(&batches),
        "{batches} receive batches for {total} queries"
    );
    assert_eq!(
        sum_samples(&m, "shardgate_dropped_total{"),
        0.0,
        "queries dropped"
    );
    let waits = |s: &Shardgate| sum_samples(&s.metrics(), "shardgate_udp_coalescing_waits_total{");
    flood_until(ports.dns, Duration::from_secs(20), || waits(&s) >= 1.0);
    assert!(
        waits(&s) >= 1.0,
        "a shard flooded for 20 s never waited to coalesce:\n{}",
        s.metrics()
    );
}

/// The kernel's drop count of the UDP socket bound to `port` on 127.0.0.1
/// (the last column of /proc/net/udp), summed over SO_REUSEPORT sockets.
fn proc_udp_drops(port: u16) -> u64 {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn datagrams_dropped_at_a_stopped_shards_socket_are_counted() {
    // A small receive buffer (dns.udp_rcvbuf), the process stopped
    // (SIGSTOP) while 2,000 queries arrive: the kernel drops most of them,
    // and once the shard runs again the next query carries the kernel's
    // count into shardgate_udp_socket_drops_total.
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let text = config(ports, 1, "").replace("[dns]\n", "[dns]\nudp_rcvbuf = 16384\n");
    assert!(text.contains("udp_rcvbuf = 16384"));
    let s = Shardgate::start(dir.path(), ports, &text);
    let drops = |m: &str| {
        sum_samples_with(
            m,
            "shardgate_udp_socket_drops_total{",
            &[
                "protocol=\"dns-udp\"",
                &format!("listen=\"127.0.0.1:{}\"", ports.dns),
            ],
        )
    };
    let m = s.metrics();
    assert!(
        m.contains("shardgate_udp_socket_drops_total{"),
        "no drop counter before any drop:\n{m}"
    );
    assert_eq!(drops(&m), 0.0);
    let pid = s.pid() as i32;
    // SAFETY: signals to our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // The signal stops each thread when it next runs: wait until all have.
    let all_stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()
            .is_some_and(|tasks| {
                tasks.flatten().all(|t| {
                    std::fs::read_to_string(t.path().join("stat"))
                        .ok()
                        .and_then(|st| {
                            st.rsplit_once(')')
                                .map(|(_, rest)| rest.trim_start().starts_with('T'))
                        })
                        .unwrap_or(true)
                })
            })
    };
    assert!(
        eventually(Duration::from_secs(5), || all_stopped().then_some(())).is_some(),
        "shardgate's threads did not all stop"
    );
    let client = UdpSocket::bind(("127.0.0.7", 0)).unwrap();
    for id in 0..2000u16 {
        client
            .send_to(&upf_query(id), ("127.0.0.1", ports.dns))
            .unwrap();
    }
    let dropped_by_kernel = proc_udp_drops(ports.dns);
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert!(
        dropped_by_kernel > 1000,
        "a 16 KB buffer held {} of 2,000 queries",
        2000 - dropped_by_kernel
    );
    // The first query after the drops carries the count.
    assert_eq!(
        s.ask(Ipv4Addr::new(127, 0, 0, 8)),
        vec![Ipv4Addr::new(10, 0, 1, 5)]
    );
    let seen = eventually(Duration::from_secs(5), || {
        let d = drops(&s.metrics());
        (d >= dropped_by_kernel as f64).then_some(d)
    });
    assert_eq!(
        seen,
        Some(proc_udp_drops(ports.dns) as f64),
        "the metric should match the kernel's count:\n{}",
        s.metrics()
    );
}

#[test]
fn a_receive_buffer_above_the_kernel_limit_is_refused_at_start() {
    let rmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ask = (rmem_max + 1).max(4096);
    if ask > 1 << 30 {
        eprintln!("net.core.rmem_max = {rmem_max}: no setting above it is valid; nothing to test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let text = config(ports, 1, "").replace("[dns]\n", &format!("[dns]\nudp_rcvbuf = {ask}\n"));
    let mut s = Shardgate::spawn(dir.path(), ports, &text);
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|st| !st.success()),
        "shardgate did not refuse to start: {status:?}\n{}",
        s.log()
    );
    let log = s.log();
    assert!(
        log.contains("dns.udp_rcvbuf") && log.contains(&format!("net.core.rmem_max = {rmem_max}")),
        "the error should name the key and the kernel limit:\n{log}"
    );
}
