//! The `[handoff]` table: the paired alternate, the hand-off port, the
//! shared key, the reply mode, the overload thresholds and the heartbeat;
//! its semantic checks (a node paired with itself, a port another surface
//! uses) and the key-file check, all reported as [`Problem`]s.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, Problem};

/// Shortest accepted hand-off key, bytes.
pub const MIN_KEY_LEN: usize = 32;

/// Defaults of the overload thresholds (`handoff::policy::Thresholds`).
pub const DEFAULT_MAX_WAIT_US: u64 = 2_000;
pub const DEFAULT_TARGET_BUSY_PERCENT: u8 = 97;
pub const DEFAULT_ALTERNATE_SATURATED_PERCENT: u8 = 95;

/// How the alternate answers a handed-off request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplyMode {
    /// Straight to the client over a raw socket, from the original service
    /// address (needs CAP_NET_RAW and a network that accepts the source).
    Direct,
    /// Back to the first node in a frame; it forwards the answer.
    #[default]
    Relay,
}

impl ReplyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyMode::Direct => "direct",
            ReplyMode::Relay => "relay",
        }
    }
}

/// `[handoff]`: present = hand-off is on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    /// The paired node's hand-off address, "IP:PORT" (required).
    pub alternate: Option<SocketAddr>,
    /// This node's hand-off address (UDP); the alternate must list exactly
    /// this address as its `alternate`.
    pub listen: SocketAddr,
    /// File holding the shared key (at least 32 bytes; the same on both
    /// nodes). Relative to the config file's directory.
    pub key_file: PathBuf,
    /// How this node answers requests handed to it.
    pub reply: ReplyMode,
    /// Addresses the alternate's clients reach it on, besides the IP of
    /// its hand-off address: a direct reply goes out with the frame's
    /// original service address as its source only when that address's IP
    /// is one of these (or the alternate's hand-off IP); any other frame
    /// is answered in relay mode, so a peer cannot make this node spoof an
    /// arbitrary source.
    pub alternate_service_ips: Vec<IpAddr>,
    /// Latency budget: local work queued ahead of a request, at most, µs;
    /// past it requests are handed off (see `policy::Admission`).
    pub max_wait_us: u64,
    /// Share of each shard's core kept busy with local work before the
    /// excess is handed off, percent.
    pub target_busy_percent: u8,
    /// The alternate's reported busy share (heartbeat) at which it counts
    /// as saturated: the handed-off share stops growing, the excess is
    /// refused here. Percent.
    pub alternate_saturated_percent: u8,
    /// Removed (the adaptive backlog budget gave way to the
    /// work-conserving admission); named by check-config if set.
    pub backlog_wait_us: Option<toml::Value>,
    /// Frames whose timestamp is further than this from our clock are
    /// dropped as stale, ms.
    pub window_ms: u64,
    /// Heartbeat period, ms.
    pub heartbeat_interval_ms: u64,
    /// Consecutive unanswered heartbeats that mark the alternate down.
    pub heartbeat_misses: u32,
    /// Base URL of the alternate's function HTTP surface, for `307`
    /// redirects (e.g. "http://10.0.0.2:8054"). Unset: HTTP requests are
    /// always served here.
    pub alternate_http: Option<String>,
    /// Hand off DNS queries too when overloaded.
    pub dns: bool,
    /// Build a function's arenas on a shard only when a request first names
    /// it (that request is handed off while they are built). false: every
    /// shard builds every function's arenas at start.
    pub warm_on_demand: bool,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            alternate: None,
            listen: "127.0.0.1:8055".parse().unwrap(),
            key_file: PathBuf::from("/etc/shardgate/handoff.key"),
            reply: ReplyMode::Relay,
            alternate_service_ips: Vec::new(),
            max_wait_us: DEFAULT_MAX_WAIT_US,
            target_busy_percent: DEFAULT_TARGET_BUSY_PERCENT,
            alternate_saturated_percent: DEFAULT_ALTERNATE_SATURATED_PERCENT,
            backlog_wait_us: None,
            window_ms: 2_000,
            heartbeat_interval_ms: 200,
            heartbeat_misses: 3,
            alternate_http: None,
            dns: true,
            warm_on_demand: false,
        }
    }
}

impl HandoffConfig {
    /// Whether a direct reply may carry `source` (a frame's original
    /// service address) as its source address.
    pub fn direct_source_allowed(&self, source: &SocketAddr) -> bool {
        let ip = source.ip().to_canonical();
        self.alternate.is_some_and(|a| a.ip().to_canonical() == ip)
            || self
                .alternate_service_ips
                .iter()
                .any(|a| a.to_canonical() == ip)
    }

    /// The key file's path, resolved against `base_dir`.
    pub fn key_path(&self, base_dir: &Path) -> PathBuf {
        base_dir.join(&self.key_file)
    }

    /// Read and check the key. A text key (printable ASCII, e.g. from
    /// `openssl rand -hex 32`) loses its trailing newline and spaces; a
    /// binary key (`head -c 32 /dev/urandom`) is used byte for byte, so a
    /// random key that happens to end in 0x20 or 0x0a keeps its length.
    /// A key file readable or writable by others is refused, and so is a
    /// key shorter than [`MIN_KEY_LEN`]. `handoff` turns the bytes into its
    /// MAC key.
    pub fn read_key_bytes(&self, base_dir: &Path) -> Result<Vec<u8>, String> {
        let path = self.key_path(base_dir);
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read the hand-off key file {}: {e}; create it with \
                 `head -c 32 /dev/urandom > {}` (the same file on both nodes) and make it readable by shardgate",
                path.display(),
                path.display()
            )
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(&path) {
                let mode = meta.permissions().mode();
                if mode & 0o007 != 0 {
                    return Err(format!(
                        "{}: the key file is accessible to every user (mode {:o}); \
                         `chmod 640 {}` (readable by shardgate's group only)",
                        path.display(),
                        mode & 0o777,
                        path.display()
                    ));
                }
            }
        }
        let key = key_bytes(&bytes);
        if key.len() < MIN_KEY_LEN {
            return Err(format!(
                "{}: the hand-off key has {} bytes; use at least {MIN_KEY_LEN} random bytes \
                 (e.g. `head -c 32 /dev/urandom > KEYFILE`, the same file on both nodes)",
                path.display(),
                key.len()
            ));
        }
        Ok(key.to_vec())
    }
}

/// The key in a key file's bytes: text keys lose trailing whitespace,
/// binary keys are kept whole (see [`HandoffConfig::read_key_bytes`]).
pub fn key_bytes(file: &[u8]) -> &[u8] {
    let text = file
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if text {
        file.trim_ascii_end()
    } else {
        file
    }
}

fn problem(key: &str, message: String) -> Problem {
    Problem {
        line: None,
        key: key.to_owned(),
        message,
    }
}

/// Semantic checks of `[handoff]` (no file access).
pub fn validate(config: &Config) -> Vec<Problem> {
    let Some(h) = &config.handoff else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let mut p = |key: &str, msg: String| problems.push(problem(key, msg));
    match h.alternate {
        None => p(
            "handoff.alternate",
            "missing: name the paired node's hand-off address, e.g. alternate = \"10.0.0.2:8055\" \
             (or remove [handoff] to turn hand-off off)"
                .into(),
        ),
        Some(alt) => {
            let same_ip = alt.ip() == h.listen.ip()
                || (h.listen.ip().is_unspecified() && (alt.ip().is_loopback()));
            if alt.port() == h.listen.port() && same_ip {
                p(
                    "handoff.alternate",
                    format!(
                        "{alt} is this node's own hand-off address (handoff.listen = {}): \
                         a node cannot be paired with itself; name the other node",
                        h.listen
                    ),
                );
            }
            if alt.port() == 0 || alt.ip().is_unspecified() {
                p(
                    "handoff.alternate",
                    format!("{alt}: give the alternate's real address and port"),
                );
            }
        }
    }
    if h.listen.ip().is_unspecified() {
        p(
            "handoff.listen",
            format!(
                "{}: a wildcard address cannot be the source of direct replies nor the address \
                 the alternate names; give this node's own address (the one the alternate lists \
                 as its `alternate`)",
                h.listen
            ),
        );
    }
    if h.backlog_wait_us.is_some() {
        p(
            "handoff.backlog_wait_us",
            "removed: the hand-off keeps the work it can serve within handoff.max_wait_us and \
             measures the rest; delete this key (see target_busy_percent)"
                .into(),
        );
    }
    if h.listen.port() == 0 {
        p(
            "handoff.listen",
            format!(
                "{}: port 0 would give every shard a different port; use a fixed one such as 8055",
                h.listen
            ),
        );
    }
    let mut udp_surfaces: Vec<(String, SocketAddr)> = config
        .dns
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("dns.listen[{i}]"), *a))
        .collect();
    if config.functions.enabled {
        udp_surfaces.extend(
            config
                .functions
                .listen
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("functions.listen[{i}]"), *a)),
        );
    }
    for (key, a) in udp_surfaces {
        let overlap = a.port() == h.listen.port()
            && a.is_ipv4() == h.listen.is_ipv4()
            && (a.ip() == h.listen.ip()
                || a.ip().is_unspecified()
                || h.listen.ip().is_unspecified());
        if overlap {
            p(
                "handoff.listen",
                format!(
                    "{} overlaps {a} of {key}; the hand-off port needs its own port (default 8055)",
                    h.listen
                ),
            );
        }
    }
    let mut range = |key: &str, v: u64, min: u64, max: u64, unit: &str| {
        if v < min || v > max {
            p(key, format!("{v} is out of range: use {min}..={max}{unit}"));
        }
    };
    range(
        "handoff.max_wait_us",
        h.max_wait_us,
        1,
        10_000_000,
        " microseconds",
    );
    range(
        "handoff.target_busy_percent",
        u64::from(h.target_busy_percent),
        50,
        100,
        " percent",
    );
    range(
        "handoff.alternate_saturated_percent",
        u64::from(h.alternate_saturated_percent),
        50,
        100,
        " percent",
    );
    range(
        "handoff.window_ms",
        h.window_ms,
        10,
        600_000,
        " milliseconds",
    );
    range(
        "handoff.heartbeat_interval_ms",
        h.heartbeat_interval_ms,
        10,
        60_000,
        " milliseconds",
    );
    range(
        "handoff.heartbeat_misses",
        u64::from(h.heartbeat_misses),
        1,
        1000,
        "",
    );
    if let Some(url) = &h.alternate_http {
        let ok = url
            .strip_prefix("http://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
        if !ok {
            problems.push(problem(
                "handoff.alternate_http",
                format!(
                    "{url:?} is not an http:// URL: give the alternate's function HTTP base, \
                     e.g. \"http://10.0.0.2:8054\""
                ),
            ));
        }
    }
    problems
}

/// The checks that read files: the key exists, is readable and has at
/// least [`MIN_KEY_LEN`] bytes.
pub fn check_files(config: &Config, base_dir: &Path) -> Vec<Problem> {
    let Some(h) = &config.handoff else {
        return Vec::new();
    };
    match h.read_key_bytes(base_dir) {
        Ok(_) => Vec::new(),
        Err(e) => vec![problem(
            "handoff.key_file",
            if e.contains("bytes;") {
                format!("{e} (a key shorter than {MIN_KEY_LEN} bytes is too short)")
            } else {
                e
            },
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_handoff(h: HandoffConfig) -> Config {
        let mut c: Config = toml::from_str("").unwrap();
        c.handoff = Some(h);
        c
    }

    #[test]
    fn a_wildcard_listen_is_refused() {
        let h = HandoffConfig {
            alternate: Some("10.0.0.2:8055".parse().unwrap()),
            listen: "0.0.0.0:8055".parse().unwrap(),
            ..HandoffConfig::default()
        };
        let problems = validate(&with_handoff(h));
        assert!(
            problems
                .iter()
                .any(|p| p.key == "handoff.listen" && p.message.contains("wildcard")),
            "{problems:?}"
        );
    }

    #[test]
    fn direct_replies_only_from_the_alternates_addresses() {
        let mut h = HandoffConfig {
            alternate: Some("10.0.0.2:8055".parse().unwrap()),
            ..HandoffConfig::default()
        };
        assert!(h.direct_source_allowed(&"10.0.0.2:53".parse().unwrap()));
        assert!(h.direct_source_allowed(&"[::ffff:10.0.0.2]:53".parse().unwrap()));
        assert!(!h.direct_source_allowed(&"192.0.2.9:53".parse().unwrap()));
        assert!(!h.direct_source_allowed(&"[2001:db8::2]:53".parse().unwrap()));
        h.alternate_service_ips = vec!["2001:db8::2".parse().unwrap()];
        assert!(h.direct_source_allowed(&"[2001:db8::2]:53".parse().unwrap()));
    }

    #[test]
    fn binary_keys_keep_trailing_whitespace_bytes_and_text_keys_lose_a_newline() {
        let mut binary = vec![0x9au8; 31];
        binary.push(b' ');
        assert_eq!(
            key_bytes(&binary).len(),
            32,
            "a random key ending in 0x20 keeps it"
        );
        binary[0] = 0x0a;
        *binary.last_mut().unwrap() = b'\n';
        assert_eq!(key_bytes(&binary).len(), 32);
        let text = b"0123456789abcdef0123456789abcdef0123456789abcdef\n";
        assert_eq!(key_bytes(text), &text[..48]);
    }

    #[test]
    fn a_world_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, [7u8; 32]).unwrap();
        let cfg = HandoffConfig {
            key_file: path.clone(),
            ..HandoffConfig::default()
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = cfg.read_key_bytes(dir.path()).unwrap_err();
        assert!(e.contains("chmod 640"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(cfg.read_key_bytes(dir.path()).is_ok());
    }
}
