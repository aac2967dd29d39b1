//! systemd readiness (issue 7): with `NOTIFY_SOCKET` pointing at a socket the
//! test listens on, `shardgate run` sends `READY=1` only once its DNS port
//! answers, and `STOPPING=1` when it receives SIGTERM.

mod support;
use support::dns::upf_query;
use support::{free_port, Process, BIN};

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

fn dns_answers(port: u16) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    sock.send_to(&upf_query(0x5151), ("127.0.0.1", port))
        .unwrap();
    let mut buf = [0u8; 512];
    matches!(sock.recv(&mut buf), Ok(n) if n >= 12 && buf[..2] == [0x51, 0x51])
}

#[test]
fn ready_after_ports_answer_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_port();
    let admin_port = free_port();
    let fn_port = free_port();
    let config = format!(
        r#"
[server]
shards = 1
admin_listen = "127.0.0.1:{admin_port}"
state_dir = "state"
[dns]
listen = ["127.0.0.1:{dns_port}"]
[functions]
enabled = false
listen = ["127.0.0.1:{fn_port}"]
[[zone]]
name = "svc.example."
soa = {{ mname = "ns1.svc.example.", rname = "hostmaster.svc.example." }}
[[view]]
name = "default"
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.9.9"
"#
    );
    let config_path = dir.path().join("shardgate.toml");
    std::fs::write(&config_path, config).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &socket_path)
        // Watchdog keep-alives every second (the server sends them no more
        // often than every 2 s, once every shard has published).
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID");
    let mut server = Process::spawn(cmd, None);

    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("no READY=1 within 20 s");
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(message.contains("READY=1"), "first notification: {message}");
    // READY=1 promised that the ports serve: the very first query answers.
    assert!(dns_answers(dns_port), "READY=1 sent before DNS answered");

    // Then the status line and, while every shard publishes, WATCHDOG=1.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut status_line, mut watchdog) = (None, false);
    while Instant::now() < deadline && !(status_line.is_some() && watchdog) {
        let n = notify
            .recv(&mut buf)
            .expect("no STATUS= and WATCHDOG=1 after READY=1");
        let m = String::from_utf8_lossy(&buf[..n]).to_string();
        if let Some(s) = m.strip_prefix("STATUS=") {
            status_line = Some(s.to_string());
        }
        watchdog |= m == "WATCHDOG=1";
    }
    let status_line = status_line.expect("no STATUS= after READY=1");
    assert!(
        status_line.contains("serving DNS on 127.0.0.1:")
            && status_line.contains("1 shard(s)")
            && status_line.contains("config generation"),
        "{status_line}"
    );
    assert!(watchdog, "no WATCHDOG=1 within 10 s of READY=1");

    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        match notify.recv(&mut buf) {
            Ok(n) => stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"),
            Err(e) => panic!("no STOPPING=1 after SIGTERM: {e}"),
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("shardgate exits after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
