//! The admin listener against a browser and against connection
//! exhaustion, over real sockets against the real binary (issue 16,
//! findings 4 and 5): a page's cross-site `text/plain` POST, any request
//! with an `Origin`, and a rebinding page's `Host` are refused and change
//! nothing; 64 idle sockets do not keep `/healthz` from being answered; one
//! address holding requests open gets at most its share of the slots; a
//! request trickling in a byte at a time is cut at the request deadline.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use support::*;

/// Send raw request bytes from `src`; the status and the whole response.
fn raw_from(src: Ipv4Addr, port: u16, request: &str) -> (u16, String) {
    let mut s = connect_from(src, port);
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

fn raw(port: u16, request: &str) -> (u16, String) {
    raw_from(Ipv4Addr::LOCALHOST, port, request)
}

/// A TCP connection to the admin port from source address `src`.
fn connect_from(src: Ipv4Addr, port: u16) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())
        .unwrap();
    sock.connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)).into(),
        Duration::from_secs(2),
    )
    .unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn views_count(s: &Shardgate) -> usize {
    let (status, body) = s.http("GET", "/v1/views", None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["views"].as_array().unwrap().len()
}

#[test]
fn browser_originated_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let cfg = config(ports, 1, "admin_hosts = [\"admin.node7.example\"]");
    let s = Shardgate::start(dir.path(), ports, &cfg);
    let before = views_count(&s);
    let change = r#"{"prefixes":["127.0.0.99"],"records":[{"name":"upf.svc.example.","type":"A","data":"10.9.9.9"}]}"#;
    let put = |headers: &str| {
        format!(
            "PUT /v1/views/evil HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{change}",
            change.len()
        )
    };
    // A page's form or no-cors fetch: text/plain, no preflight.
    let (status, body) = raw(
        ports.admin,
        &put("Host: 127.0.0.1:9353\r\nContent-Type: text/plain\r\n"),
    );
    assert_eq!(status, 415, "{body}");
    // Any Origin, even with the JSON type (a preflighted fetch).
    let (status, body) = raw(
        ports.admin,
        &put(
            "Host: 127.0.0.1\r\nOrigin: https://evil.example\r\nContent-Type: application/json\r\n",
        ),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Origin"), "{body}");
    let (status, _) = raw(
        ports.admin,
        &put("Host: 127.0.0.1\r\nSec-Fetch-Site: cross-site\r\nContent-Type: application/json\r\n"),
    );
    assert_eq!(status, 403);
    // DNS rebinding: the page's own name in Host, reading views.
    let (status, body) = raw(
        ports.admin,
        "GET /v1/views HTTP/1.1\r\nHost: rebind.evil.example:9353\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("site"), "no view leaked: {body}");
    // POST /v1/reload without a body is a simple request too.
    let (status, _) = raw(
        ports.admin,
        "POST /v1/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 415);
    assert_eq!(views_count(&s), before, "nothing was applied");

    // Tools: an IP literal, localhost or a configured name; JSON changes.
    for host in [
        "127.0.0.1:9353",
        "localhost",
        "[::1]:9353",
        "admin.node7.example",
    ] {
        let (status, body) = raw(
            ports.admin,
            &format!("GET /v1/views HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 200, "{host}: {body}");
    }
    let (status, body) = raw(
        ports.admin,
        &put("Host: localhost:9353\r\nContent-Type: application/json\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(views_count(&s), before + 1);
    let (status, body) = raw(
        ports.admin,
        "DELETE /v1/views/evil HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    let metrics = s.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shardgate_admin_requests_total")
                && l.contains("route=\"refused\"")
                && l.contains("status=\"403\"")),
        "refusals are counted:\n{metrics}"
    );
}

#[test]
fn idle_sockets_do_not_take_the_admin_slots() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let s = Shardgate::start(dir.path(), ports, &config(ports, 1, ""));
    // 64 connections that never send a byte (the listener's whole capacity),
    // then 16 more, each from its own address (so no per-address cap is
    // what makes room).
    let idle: Vec<TcpStream> = (1..=80)
        .map(|i| connect_from(Ipv4Addr::new(127, 0, 1, i), ports.admin))
        .collect();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = s.http("GET", path, None);
        assert_eq!(status, 200, "{path} with 80 idle sockets open: {body}");
    }
    // The oldest idle sockets were closed to make room.
    let mut first = &idle[0];
    let mut byte = [0u8; 1];
    assert_eq!(
        first.read(&mut byte).unwrap_or(0),
        0,
        "the oldest idle socket was closed"
    );
    drop(idle);
}

#[test]
fn one_address_gets_at_most_its_share_of_busy_slots() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let cfg = config(ports, 1, "admin_connections_per_client = 4");
    let s = Shardgate::start(dir.path(), ports, &cfg);
    let hog = Ipv4Addr::new(127, 0, 0, 1);
    // Requests whose head came but whose body never does: busy slots.
    let head = "POST /v1/changes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n[";
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = connect_from(hog, ports.admin);
        c.write_all(head.as_bytes()).unwrap();
        held.push(c);
    }
    // Let the server read those heads (an idle connection's slot may be
    // taken; a busy one's may not).
    std::thread::sleep(Duration::from_secs(1));
    // The head is seen before the next connection is admitted: ask for a
    // probe on one more connection from the same address until it is
    // refused (bounded; each probe is one request).
    let mut refused = false;
    for _ in 0..50 {
        let (status, _) = raw_from(
            hog,
            ports.admin,
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        );
        if status == 503 {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        refused,
        "a fifth busy connection from one address is refused"
    );
    // Another address is served meanwhile.
    let (status, body) = raw_from(
        Ipv4Addr::new(127, 0, 0, 2),
        ports.admin,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    // Finishing one held request frees its slot for the same address.
    let mut c = held.pop().unwrap();
    let body = format!("{}]", " ".repeat(98));
    c.write_all(body.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 "), "{resp}");
    let (status, _) = s.http("GET", "/healthz", None);
    assert_eq!(status, 200);
}

#[test]
fn a_trickled_request_is_cut_at_the_request_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let cfg = config(
        ports,
        1,
        "admin_header_timeout_ms = 300\nadmin_request_timeout_ms = 600",
    );
    let _s = Shardgate::start(dir.path(), ports, &cfg);
    let mut c = connect_from(Ipv4Addr::LOCALHOST, ports.admin);
    // The head at once, then the body a byte every 10 ms: every read gets
    // data long before any per-read timeout could fire, but the whole
    // request (4 s of trickle) cannot arrive within 600 ms.
    let head = "POST /v1/changes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n";
    c.write_all(head.as_bytes()).unwrap();
    let mut cut = false;
    for _ in 0..400 {
        if c.write_all(b" ").is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut resp = Vec::new();
    let _ = c.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    assert!(
        cut || resp.starts_with("HTTP/1.1 408"),
        "the server answers 408 and closes before the body is whole: {resp:?}"
    );
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 408"),
        "{resp:?}"
    );
}
