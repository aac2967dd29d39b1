//! Configuration: the TOML schema shardgate reads, its defaults, the embedded
//! default configuration, and validation that reports every problem with the
//! line and key it comes from (used by `shardgate check-config` and by reloads).
//!
//! The schema is plain serde structs; semantic checks live in [`validate`].

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shards: 0,
            io_memory_kib: 1024,
            admin_listen: "127.0.0.1:9353".parse().unwrap(),
            shutdown_grace_ms: 5000,
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
    /// TCP: largest accepted query length prefix (bytes); larger closes the connection.
    pub tcp_max_query_bytes: u16,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec!["127.0.0.1:8053".parse().unwrap()],
            max_udp_payload: 1232,
            trusted_resolvers: Vec::new(),
            tcp_idle_timeout_ms: 10_000,
            tcp_max_connections_per_shard: 1024,
            tcp_max_query_bytes: 4096,
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
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");
