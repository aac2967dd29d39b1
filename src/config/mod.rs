//! Configuration as data: the TOML schema shardgate reads, its defaults and
//! the embedded default configuration. Nothing here builds runtime state;
//! the address map is built from these types by `addrmap::load`.
//!
//! - [`load`](mod@load): parse, deserialize and locate every problem by key
//!   path and line ([`load_with`] runs a caller's build step in the same pass).
//! - [`validate`](mod@validate): semantic checks over the deserialized types.
//! - [`functions`], [`handoff`], [`cluster`]: the `[functions]`/`[[function]]`,
//!   `[handoff]` and `[cluster]` tables and their checks.

pub mod cluster;
pub mod functions;
pub mod handoff;
pub mod load;
pub mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use cluster::{validate_cluster, ClusterConfig};
pub use load::{load_with, read_file, EMBEDDED_BASE_DIR};
pub use validate::*;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    /// Authoritative zones served by the address service.
    #[serde(default, rename = "zone")]
    pub zones: Vec<ZoneConfig>,
    /// Views: source prefixes and the records they answer with.
    /// The view named `default` answers sources no other view covers.
    #[serde(default, rename = "view")]
    pub views: Vec<ViewConfig>,
    /// The function service (`[functions]`); see `crate::config::functions`.
    #[serde(default)]
    pub functions: crate::config::functions::FunctionsConfig,
    /// Functions (`[[function]]`): name, module, limits.
    #[serde(default, rename = "function")]
    pub function: Vec<crate::config::functions::FunctionConfig>,
    /// Load-correcting hand-off to the paired alternate (`[handoff]`);
    /// absent = off. See [`handoff`].
    #[serde(default)]
    pub handoff: Option<crate::config::handoff::HandoffConfig>,
    /// Logging (`[log]`): level filter and line format; read at start-up.
    #[serde(default)]
    pub log: LogConfig,
    /// A fleet's shared address map in etcd (`[cluster]`); absent = this
    /// node's map is its own. See [`cluster`].
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// `[log]`: what is logged and how lines look. Applies at start-up (a
/// reload keeps the running values); `RUST_LOG` overrides `level`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: a level (`error`, `warn`, `info`, `debug`,
    /// `trace`) or directives such as `info,shardgate::admin=debug`.
    pub level: String,
    /// `text` (one human-readable line per event) or `json` (one JSON
    /// object per line).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Whether `level` is a usable log filter: comma-separated directives, each
/// `LEVEL`, `TARGET=LEVEL` or a bare module path (`shardgate::admin`).
pub fn valid_log_level(level: &str) -> bool {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    !level.trim().is_empty()
        && level.split(',').all(|d| {
            let d = d.trim();
            match d.split_once('=') {
                Some((target, lvl)) => {
                    !target.is_empty() && LEVELS.contains(&lvl.to_ascii_lowercase().as_str())
                }
                // A bare word is a level; a bare module path (with `::`)
                // enables everything of that target.
                None => {
                    LEVELS.contains(&d.to_ascii_lowercase().as_str())
                        || (d.contains("::")
                            && d.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                }
            }
        })
}

/// Process-wide runtime settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Number of shards (pinned executors); 0 = one per online CPU.
    pub shards: usize,
    /// glommio io_memory per shard, KiB. Must fit the memlock limit.
    pub io_memory_kib: usize,
    /// Where the admin HTTP listener binds (metrics, health, API).
    pub admin_listen: SocketAddr,
    /// How long SIGTERM waits for in-flight TCP queries, milliseconds.
    pub shutdown_grace_ms: u64,
    /// Bearer token the admin listener requires on every path but
    /// `/healthz` and `/readyz`. Required when `admin_listen` is not a
    /// loopback address. At least 16 characters.
    pub admin_token: Option<String>,
    /// File whose first line is the admin token (instead of `admin_token`);
    /// relative to the config file's directory.
    pub admin_token_file: Option<PathBuf>,
    /// Directory where address-map changes made through the admin API are
    /// persisted (relative to the config file's directory). Unset:
    /// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`, i.e.
    /// /var/lib/shardgate), else `shardgate-state` next to the config file.
    pub state_dir: Option<PathBuf>,
    /// Time every request and publish per-shard metrics (false only to
    /// measure what metrics cost; /metrics then has process series only).
    pub metrics: bool,
    /// Names the admin listener answers to in the `Host` header besides IP
    /// literals and `localhost` (DNS-rebinding defence).
    pub admin_hosts: Vec<String>,
    /// Admin: a request head must arrive within this (milliseconds) of the
    /// connection opening or the previous response.
    pub admin_header_timeout_ms: u64,
    /// Admin: the whole request must arrive within this (milliseconds).
    pub admin_request_timeout_ms: u64,
    /// Admin: connections one source address may hold.
    pub admin_connections_per_client: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shards: 0,
            io_memory_kib: 1024,
            admin_listen: "127.0.0.1:9353".parse().unwrap(),
            shutdown_grace_ms: 5000,
            admin_token: None,
            admin_token_file: None,
            state_dir: None,
            metrics: true,
            admin_hosts: Vec::new(),
            admin_header_timeout_ms: 5000,
            admin_request_timeout_ms: 30_000,
            admin_connections_per_client: 8,
        }
    }
}

/// The DNS address service surface.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Addresses to serve DNS on, UDP and TCP each.
    pub listen: Vec<SocketAddr>,
    /// Largest UDP response we send, whatever the client's EDNS size (bytes).
    pub max_udp_payload: u16,
    /// Resolvers whose EDNS Client Subnet option is trusted to pick the view.
    pub trusted_resolvers: Vec<ipnet::IpNet>,
    /// TCP: idle time before a connection is closed, milliseconds.
    pub tcp_idle_timeout_ms: u64,
    /// TCP: open connections per shard; more are refused (closed at once).
    pub tcp_max_connections_per_shard: usize,
    /// TCP: open connections one client (IPv4 address, IPv6 /64) may hold
    /// per shard; 0 = no per-client cap.
    pub tcp_max_connections_per_client: u32,
    /// TCP: largest accepted query length prefix (bytes, at most
    /// [`MAX_TCP_QUERY_BYTES`]); larger closes the connection.
    pub tcp_max_query_bytes: u16,
    /// UDP: datagrams per `recvmmsg`/`sendmmsg` call.
    pub udp_batch: usize,
    /// UDP: the longest receive-coalescing wait (microseconds): near
    /// saturation, after a batch of at least `udp_coalesce_min_batch`
    /// datagrams that did not fill the batch, the shard waits up to this
    /// long (growing with its load) before the next receive so it carries
    /// more; a shard with headroom never waits. 0 = never wait.
    pub udp_coalesce_us: u64,
    /// UDP: the batch size from which the shard counts as busy and coalesces.
    pub udp_coalesce_min_batch: usize,
    /// UDP: receive buffer of each DNS UDP socket (`SO_RCVBUF`), bytes;
    /// 0 = the kernel's default (`net.core.rmem_default`); unset = 1 MiB,
    /// or `net.core.rmem_max` if that is lower
    /// (`runtime::sockets::DEFAULT_UDP_RCVBUF`).
    pub udp_rcvbuf: Option<u32>,
    /// UDP: send buffer of each DNS UDP socket (`SO_SNDBUF`), bytes;
    /// 0 = the kernel's default (`net.core.wmem_default`).
    pub udp_sndbuf: u32,
    /// Removed: DNS UDP is always served by each shard's worker thread,
    /// hand-off included. Kept only so check-config can name it.
    pub udp_io: Option<toml::Value>,
    /// UDP: response rate limiting (`[dns.rrl]`, see `dns::rrl`).
    pub rrl: RrlConfig,
}

/// `[dns.rrl]` settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RrlConfig {
    /// Off by default.
    pub enabled: bool,
    /// Answers per second per source prefix (1..=1000000).
    pub rate: u32,
    /// Every `slip`-th limited answer is sent truncated (0..=100; 0 = none).
    pub slip: u32,
    /// IPv4 clients are grouped by this prefix length (1..=32).
    pub ipv4_prefix: u8,
    /// IPv6 clients are grouped by this prefix length (1..=128).
    pub ipv6_prefix: u8,
    /// Sources never limited.
    pub whitelist: Vec<ipnet::IpNet>,
    /// Buckets per shard (a power of two is not required; 1..=16777216).
    pub table_size: u32,
}

impl Default for RrlConfig {
    fn default() -> Self {
        RrlConfig {
            enabled: false,
            rate: 20,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            whitelist: Vec::new(),
            table_size: 65_536,
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec!["127.0.0.1:8053".parse().unwrap()],
            max_udp_payload: 1232,
            trusted_resolvers: Vec::new(),
            tcp_idle_timeout_ms: 10_000,
            tcp_max_connections_per_shard: 1024,
            tcp_max_connections_per_client: 64,
            tcp_max_query_bytes: 4096,
            udp_batch: 64,
            udp_coalesce_us: 200,
            udp_coalesce_min_batch: 8,
            udp_rcvbuf: None,
            udp_sndbuf: 0,
            udp_io: None,
            rrl: RrlConfig::default(),
        }
    }
}

/// One authoritative zone, e.g. `svc.example.`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Zone apex, absolute (trailing dot optional).
    pub name: String,
    /// Default TTL of records in this zone that set none (seconds).
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Name servers listed at the apex (NS records); empty = none.
    #[serde(default)]
    pub ns: Vec<String>,
    pub soa: SoaConfig,
}

fn default_ttl() -> u32 {
    30
}

/// The zone's SOA, served at the apex and in the authority section of
/// NXDOMAIN/NODATA answers (negative TTL = min(soa ttl, minimum)).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SoaConfig {
    pub mname: String,
    pub rname: String,
    #[serde(default = "default_serial")]
    pub serial: u32,
    #[serde(default = "default_refresh")]
    pub refresh: u32,
    #[serde(default = "default_retry")]
    pub retry: u32,
    #[serde(default = "default_expire")]
    pub expire: u32,
    #[serde(default = "default_ttl")]
    pub minimum: u32,
}

fn default_serial() -> u32 {
    1
}
fn default_refresh() -> u32 {
    3600
}
fn default_retry() -> u32 {
    600
}
fn default_expire() -> u32 {
    86400
}

/// A view: who it covers (prefixes) and what it answers (records).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    pub name: String,
    /// Source prefixes (IPv4/IPv6; a bare address means /32 or /128).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Optional file with one prefix per line (# comments), for large maps.
    #[serde(default)]
    pub prefixes_file: Option<PathBuf>,
    #[serde(default, rename = "record")]
    pub records: Vec<RecordConfig>,
}

/// One resource record in presentation form.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// Owner name, absolute, inside one configured zone.
    pub name: String,
    /// `A`, `AAAA`, `SRV` or `TXT`.
    #[serde(rename = "type")]
    pub rtype: String,
    /// A: `10.0.1.5`; AAAA: `fd00::5`; SRV: `priority weight port target.`;
    /// TXT: the text (split into 255-byte strings as needed).
    pub data: String,
    /// Seconds; defaults to the zone's `ttl`.
    #[serde(default)]
    pub ttl: Option<u32>,
}

/// The configuration shardgate runs when given no `--config`: it serves an
/// example address map on 127.0.0.1.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.toml");

/// One problem in a configuration: where it is and what to do about it.
///
/// `key` is a path such as `dns.listen[1]` or `view[1].record[0].data`
/// (`view[1]` is the second `[[view]]` table); it is empty when the problem is
/// not about one key (a syntax error, an unreadable file). `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl Problem {
    fn at(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            line: None,
            key: key.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests;
