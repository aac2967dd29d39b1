//! A real etcd (Debian `etcd-server`) for the fleet-map tests: one member
//! on loopback ports of its own, data in a directory the test owns, killed
//! on drop. `etcdctl` (Debian `etcd-client`) reads and writes keys.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::free_port;

pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    dir: PathBuf,
}

impl Etcd {
    /// Start etcd with its data under `dir/etcd`; returns once it answers.
    pub fn start(dir: &Path) -> Etcd {
        let mut e = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir: dir.to_path_buf(),
        };
        e.restart();
        e
    }

    /// The client URL, as `[cluster] etcd` lists it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Start it again on the same ports and data (after [`Etcd::kill`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd already runs");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd (apt-get install etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ctl(&["endpoint", "health"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy; log:\n{}",
                std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL etcd (the nodes see it vanish).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run `etcdctl ARGS` against this etcd; stdout, or the error output.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url(), "--command-timeout=3s"])
            .args(args)
            .output()
            .map_err(|e| format!("run etcdctl (apt-get install etcd-client): {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Put every `(key, value)` in one etcd transaction (through etcd's
    /// JSON gateway, `POST /v3/kv/txn`); the revision it committed at.
    pub fn txn_put(&self, kvs: &[(&str, &str)]) -> u64 {
        let ops: Vec<serde_json::Value> = kvs
            .iter()
            .map(|(k, v)| {
                serde_json::json!({ "request_put": { "key": BASE64.encode(k), "value": BASE64.encode(v) } })
            })
            .collect();
        let body = serde_json::json!({ "success": ops }).to_string();
        let (status, reply) =
            super::admin::try_http(self.client_port, "POST", "/v3/kv/txn", Some(&body), None)
                .expect("etcd txn");
        assert_eq!(status, 200, "{reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).expect("txn reply JSON");
        assert_eq!(v["succeeded"], true, "{reply}");
        v["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("a revision")
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        let out = self
            .ctl(&["endpoint", "status", "-w", "json"])
            .expect("etcdctl endpoint status");
        let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
        v[0]["Status"]["header"]["revision"]
            .as_u64()
            .expect("a revision")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
