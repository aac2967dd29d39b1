//! `[cluster]`: where a fleet's shared address map lives in etcd (v3) and
//! how to reach it, with its checks.

use serde::Deserialize;

use super::Problem;

/// `[cluster]`: where the fleet's address map lives in etcd (v3) and how to
/// reach it. Read at start-up (a reload keeps the running values).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd client URLs, e.g. `["http://10.0.0.1:2379", "http://10.0.0.2:2379"]`.
    pub etcd: Vec<String>,
    /// Key prefix of the map; every node of a fleet uses the same one.
    #[serde(default = "default_cluster_prefix")]
    pub prefix: String,
    /// CA certificate (PEM) that signed the etcd servers' certificates;
    /// needed for `https://` endpoints.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate and key (PEM) when etcd asks for one.
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    /// etcd user (role-based access); the password comes from
    /// `password_file` (first line).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
    /// How long one connection attempt may take.
    #[serde(default = "default_cluster_dial_timeout_ms")]
    pub dial_timeout_ms: u64,
    /// How long one etcd request (snapshot read, transaction) may take.
    #[serde(default = "default_cluster_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_cluster_prefix() -> String {
    "/shardgate/".into()
}

fn default_cluster_dial_timeout_ms() -> u64 {
    2_000
}

fn default_cluster_request_timeout_ms() -> u64 {
    5_000
}

/// Config checks of `[cluster]` (part of [`validate`]).
pub fn validate_cluster(c: &ClusterConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    if c.etcd.is_empty() {
        problems.push(Problem::at(
            "cluster.etcd",
            "list at least one etcd client URL, e.g. etcd = [\"http://127.0.0.1:2379\"]",
        ));
    }
    let mut tls = false;
    for (i, url) in c.etcd.iter().enumerate() {
        let rest = if let Some(r) = url.strip_prefix("https://") {
            tls = true;
            r
        } else if let Some(r) = url.strip_prefix("http://") {
            r
        } else {
            problems.push(Problem::at(
                format!("cluster.etcd[{i}]"),
                format!("{url:?} is not an etcd client URL: write http://HOST:PORT or https://HOST:PORT"),
            ));
            continue;
        };
        let hostport = rest.trim_end_matches('/');
        let port_ok = hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok || hostport.contains('/') {
            problems.push(Problem::at(
                format!("cluster.etcd[{i}]"),
                format!("{url:?} needs a host and a port and no path, e.g. http://127.0.0.1:2379"),
            ));
        }
    }
    if tls && c.ca_file.is_none() {
        problems.push(Problem::at(
            "cluster.ca_file",
            "https:// etcd endpoints need cluster.ca_file: the CA certificate (PEM) that signed etcd's certificates",
        ));
    }
    if !tls && (c.ca_file.is_some() || c.cert_file.is_some()) {
        problems.push(Problem::at(
            "cluster.ca_file",
            "TLS files are set but every endpoint is http://: write the endpoints as https:// or drop the TLS files",
        ));
    }
    if c.cert_file.is_some() != c.key_file.is_some() {
        problems.push(Problem::at(
            "cluster.cert_file",
            "set cluster.cert_file and cluster.key_file together (a client certificate needs its key)",
        ));
    }
    if c.user.is_some() != c.password_file.is_some() {
        problems.push(Problem::at(
            "cluster.user",
            "set cluster.user and cluster.password_file together",
        ));
    }
    let prefix_ok = c.prefix.starts_with('/')
        && c.prefix.ends_with('/')
        && c.prefix.len() <= 256
        && !c.prefix.chars().any(|ch| ch.is_control());
    if !prefix_ok {
        problems.push(Problem::at(
            "cluster.prefix",
            format!(
                "{:?} is not a usable key prefix: start and end it with '/', e.g. \"/shardgate/\" (at most 256 printable characters)",
                c.prefix
            ),
        ));
    }
    for (key, v) in [
        ("cluster.dial_timeout_ms", c.dial_timeout_ms),
        ("cluster.request_timeout_ms", c.request_timeout_ms),
    ] {
        if !(100..=60_000).contains(&v) {
            problems.push(Problem::at(
                key,
                format!("{v} is out of range: use 100..=60000 (defaults: dial 2000, request 5000)"),
            ));
        }
    }
    problems
}
