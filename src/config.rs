//! Configuration: the TOML schema shardgate reads, its defaults, the embedded
//! default configuration, and validation that reports every problem with the
//! line and key it comes from (used by `shardgate check-config` and by reloads).
//!
//! The schema is plain serde structs; semantic checks live in [`validate`].
//! [`load`] runs every stage (TOML syntax and types, semantic checks, the
//! address-map build) and reports every problem it can find, each located by
//! its key path (`view[1].record[0].data`) and the line of the file it is on.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::IntoDeserializer;
use serde::Deserialize;
use toml_edit::{ImDocument, Item, Table, Value};

use crate::addrmap::AddressMap;

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
    /// The function service (`[functions]`); see `crate::functions::config`.
    #[serde(default)]
    pub functions: crate::functions::config::FunctionsConfig,
    /// Functions (`[[function]]`): name, module, limits.
    #[serde(default, rename = "function")]
    pub function: Vec<crate::functions::config::FunctionConfig>,
    /// Load-correcting hand-off to the paired alternate (`[handoff]`);
    /// absent = off. See `crate::handoff::config`.
    #[serde(default)]
    pub handoff: Option<crate::handoff::config::HandoffConfig>,
    /// Logging (`[log]`): level filter and line format; read at start-up.
    #[serde(default)]
    pub log: LogConfig,
    /// A fleet's shared address map in etcd (`[cluster]`); absent = this
    /// node's map is its own. See `crate::cluster`.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

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
    /// 0 = the kernel's default (`net.core.rmem_default`).
    pub udp_rcvbuf: u32,
    /// UDP: send buffer of each DNS UDP socket (`SO_SNDBUF`), bytes;
    /// 0 = the kernel's default (`net.core.wmem_default`).
    pub udp_sndbuf: u32,
    /// Removed: DNS UDP is always served by each shard's worker thread,
    /// hand-off included. Kept only so check-config can name it.
    pub udp_io: Option<toml::Value>,
    /// UDP: response rate limiting (`[dns.rrl]`, see `crate::dns::rrl`).
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

/// Problems of `[dns.rrl]` as (key, message).
pub fn validate_rrl(c: &RrlConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut range = |key: &str, v: u64, lo: u64, hi: u64| {
        if v < lo || v > hi {
            out.push((
                format!("dns.rrl.{key}"),
                format!(
                    "{v} is out of range: use {lo}..={hi} (see [dns.rrl] in config/shardgate.toml)"
                ),
            ));
        }
    };
    range("rate", c.rate.into(), 1, 1_000_000);
    range("slip", c.slip.into(), 0, 100);
    range("ipv4_prefix", c.ipv4_prefix.into(), 1, 32);
    range("ipv6_prefix", c.ipv6_prefix.into(), 1, 128);
    range("table_size", c.table_size.into(), 1, 1 << 24);
    out
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
            udp_rcvbuf: 0,
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
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");

// ---------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------

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

/// A configuration that passed every check, with the address map built from it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub map: AddressMap,
}

/// Parse, validate and build `text`. `base_dir` resolves relative paths in the
/// file (e.g. `prefixes_file`); use the config file's directory.
///
/// On failure returns every problem found, sorted by line. A TOML syntax
/// error stops at that error; otherwise every type, unknown-key and
/// missing-key error is reported; when the file deserializes, every semantic
/// problem and every address-map build problem is reported together.
pub fn load(text: &str, base_dir: &Path) -> Result<Loaded, Vec<Problem>> {
    let config = match Config::deserialize(parse(text)?.into_deserializer()) {
        Ok(config) => config,
        Err(first) => {
            // Only on failure: parse again (the first document was consumed)
            // to locate this error and look for the others.
            let doc = parse(text)?;
            return Err(deserialize_problems(first, &Locator::new(text, &doc)));
        }
    };

    let mut problems = validate(&config);
    problems.extend(crate::handoff::config::check_files(&config, base_dir));
    match AddressMap::build(&config, base_dir) {
        Ok(map) if problems.is_empty() => return Ok(Loaded { config, map }),
        Ok(_) => {}
        Err(errors) => {
            for e in errors {
                // One message per key: a semantic check already explained it.
                if !problems.iter().any(|p| p.key == e.key) {
                    problems.push(Problem::at(e.key, e.message));
                }
            }
        }
    }
    let doc = parse(text)?;
    let locator = Locator::new(text, &doc);
    for p in &mut problems {
        if p.line.is_none() {
            p.line = locator.line_of_key(&p.key);
        }
    }
    sort_problems(&mut problems);
    Err(problems)
}

/// Parse keeping spans; a syntax error is the one problem reported.
fn parse(text: &str) -> Result<ImDocument<String>, Vec<Problem>> {
    ImDocument::parse(text.to_owned()).map_err(|e| {
        let line = e.span().map(|s| LineIndex::new(text).line_of(s.start));
        vec![Problem {
            line,
            key: String::new(),
            message: format!("TOML syntax error: {}", one_line(e.message())),
        }]
    })
}

/// Read and [`load`] the file at `path`; relative paths inside it resolve
/// against the file's directory.
pub fn load_file(path: &Path) -> Result<Loaded, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem::at(
            String::new(),
            format!(
                "cannot read config file {}: {e}; check the path and its permissions, \
                 or run without --config to use the embedded default",
                path.display()
            ),
        )]
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    load(&text, base_dir)
}

/// [`load`] the embedded default configuration ([`EMBEDDED_DEFAULT`]).
pub fn load_embedded() -> Result<Loaded, Vec<Problem>> {
    load(EMBEDDED_DEFAULT, Path::new("."))
}

fn sort_problems(problems: &mut [Problem]) {
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
}

/// Every type and unknown-key error, not just serde's `first`: each failing
/// node is deserialized again on its own (its key or element wrapped in a
/// bare skeleton of its ancestors, spans kept), then each of its children, so
/// one bad key does not hide the next one.
fn deserialize_problems(first: toml_edit::de::Error, locator: &Locator<'_>) -> Vec<Problem> {
    let mut errors = vec![first];
    let root = Node::Item(locator.doc.as_item());
    let mut budget = MAX_REFINE_STEPS;
    for (seg, _, child) in root.children() {
        refine(&mut vec![(root, seg)], child, &mut errors, &mut budget);
    }

    let mut problems: Vec<Problem> = Vec::new();
    let mut seen: Vec<(Option<Range<usize>>, String)> = Vec::new();
    for e in errors {
        let id = (e.span(), e.message().to_owned());
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let (line, key) = match e.span() {
            Some(span) => (
                Some(locator.lines.line_of(span.start)),
                locator.key_at(span.start),
            ),
            None => (None, String::new()),
        };
        let message = with_hint(one_line(e.message()));
        problems.push(Problem { line, key, message });
    }
    sort_problems(&mut problems);
    problems
}

/// Bound on the re-deserializations one failing document may cost.
const MAX_REFINE_STEPS: usize = 10_000;

/// Deserialize `node` alone (inside a skeleton of `ancestors`); if that fails,
/// record the error and look for more in each child.
fn refine<'a>(
    ancestors: &mut Vec<(Node<'a>, Seg)>,
    node: Node<'a>,
    errors: &mut Vec<toml_edit::de::Error>,
    budget: &mut usize,
) {
    if *budget == 0 {
        return;
    }
    *budget -= 1;
    let Some(skeleton) = skeleton(ancestors, node) else {
        return;
    };
    let Err(e) = Config::deserialize(skeleton.into_deserializer()) else {
        return;
    };
    // Errors without a span come from the bare skeleton (e.g. a required key
    // of an ancestor that the skeleton left out): not real problems.
    if e.span().is_none() {
        return;
    }
    errors.push(e);
    for (seg, _, child) in node.children() {
        ancestors.push((node, seg));
        refine(ancestors, child, errors, budget);
        ancestors.pop();
    }
}

/// A document holding only `leaf` (cloned, so its spans still point into the
/// original text) under bare copies of its ancestors.
fn skeleton(ancestors: &[(Node<'_>, Seg)], leaf: Node<'_>) -> Option<toml_edit::DocumentMut> {
    let mut cur = match leaf {
        Node::Item(i) => Item::clone(i),
        Node::Table(t) => Item::Table(t.clone()),
        Node::Value(v) => Item::Value(v.clone()),
    };
    for (parent, seg) in ancestors.iter().rev() {
        cur = match (parent, seg) {
            (Node::Item(Item::ArrayOfTables(_)), Seg::Index(_)) => {
                let mut a = toml_edit::ArrayOfTables::new();
                a.push(cur.into_table().ok()?);
                Item::ArrayOfTables(a)
            }
            (_, Seg::Index(_)) => {
                let mut a = toml_edit::Array::new();
                a.push_formatted(cur.into_value().ok()?);
                Item::Value(Value::Array(a))
            }
            (_, Seg::Key(k)) if parent.as_table().is_some() => {
                let mut t = Table::new();
                t.insert(k, cur);
                Item::Table(t)
            }
            (_, Seg::Key(k)) => {
                let mut t = toml_edit::InlineTable::new();
                t.insert(k, cur.into_value().ok()?);
                Item::Value(Value::InlineTable(t))
            }
        };
    }
    Some(toml_edit::DocumentMut::from(cur.into_table().ok()?))
}

/// Add what to write instead to serde messages that do not say it.
fn with_hint(message: String) -> String {
    let hint = if message.contains("invalid socket address syntax") {
        "write IP:PORT, e.g. \"127.0.0.1:8053\" or \"[::1]:8053\""
    } else if message.contains("invalid IP address syntax") {
        "write a prefix such as \"10.0.0.0/8\" or \"2001:db8::/32\""
    } else {
        return message;
    };
    format!("{message}; {hint}")
}

/// Multi-line parser messages on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Byte offset -> 1-based line number.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }
}

/// Maps key paths to lines and byte offsets to key paths, using the spans of
/// the parsed document.
struct Locator<'a> {
    lines: LineIndex,
    doc: &'a ImDocument<String>,
}

/// A node of the parsed document while walking a key path.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }

    fn as_table(self) -> Option<&'a Table> {
        match self {
            Node::Item(Item::Table(t)) | Node::Table(t) => Some(t),
            _ => None,
        }
    }

    fn as_value(self) -> Option<&'a Value> {
        match self {
            Node::Item(Item::Value(v)) | Node::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The child under `key` and the span of the key itself.
    fn child(self, key: &str) -> Option<(Option<Range<usize>>, Node<'a>)> {
        if let Some(t) = self.as_table() {
            let (k, item) = t.get_key_value(key)?;
            return Some((k.span(), Node::Item(item)));
        }
        if let Some(Value::InlineTable(t)) = self.as_value() {
            let (k, item) = t.get_key_value(key)?;
            return Some((k.span(), Node::Item(item)));
        }
        None
    }

    fn element(self, index: usize) -> Option<Node<'a>> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.get(index).map(Node::Table),
            _ => match self.as_value() {
                Some(Value::Array(a)) => a.get(index).map(Node::Value),
                _ => None,
            },
        }
    }

    /// Every child with its path segment and key span.
    fn children(self) -> Vec<(Seg, Option<Range<usize>>, Node<'a>)> {
        let mut out = Vec::new();
        if let Some(t) = self.as_table() {
            for (k, item) in t.iter() {
                let span = t.key(k).and_then(|k| k.span());
                out.push((Seg::Key(k.to_owned()), span, Node::Item(item)));
            }
        } else if let Node::Item(Item::ArrayOfTables(a)) = self {
            for (i, t) in a.iter().enumerate() {
                out.push((Seg::Index(i), None, Node::Table(t)));
            }
        } else {
            match self.as_value() {
                Some(Value::InlineTable(t)) => {
                    for (k, v) in t.iter() {
                        let span = t.key(k).and_then(|k| k.span());
                        out.push((Seg::Key(k.to_owned()), span, Node::Value(v)));
                    }
                }
                Some(Value::Array(a)) => {
                    for (i, v) in a.iter().enumerate() {
                        out.push((Seg::Index(i), None, Node::Value(v)));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// One step of a key path: a key in a table or an index in an array.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

impl fmt::Display for Seg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seg::Key(k) => write!(f, ".{k}"),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

fn contains(span: &Option<Range<usize>>, offset: usize) -> bool {
    span.as_ref()
        .is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

/// Split `view[1].record[0].data` into `view`, `[1]`, `record`, `[0]`, `data`.
fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Key(name.to_owned()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            match stripped[..end].parse() {
                Ok(i) => out.push(Seg::Index(i)),
                Err(_) => out.push(Seg::Key(stripped[..end].to_owned())),
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

impl<'a> Locator<'a> {
    fn new(text: &str, doc: &'a ImDocument<String>) -> Locator<'a> {
        Locator {
            lines: LineIndex::new(text),
            doc,
        }
    }

    /// The line of the deepest part of `path` present in the file: the value
    /// (or array element, or `[[table]]` header) when the whole path exists,
    /// else the nearest ancestor. `None` when not even the first key is in
    /// the file (a default value).
    fn line_of_key(&self, path: &str) -> Option<usize> {
        let mut node = Node::Item(self.doc.as_item());
        let mut best: Option<Range<usize>> = None;
        for seg in segments(path) {
            let next = match seg {
                Seg::Key(k) => node.child(&k).map(|(key_span, child)| {
                    // Prefer the key's own line: a multi-line value starts there.
                    (key_span.or_else(|| child.span()), child)
                }),
                Seg::Index(i) => node.element(i).map(|child| (child.span(), child)),
            };
            match next {
                Some((span, child)) => {
                    if span.is_some() {
                        best = span;
                    }
                    node = child;
                }
                None => break,
            }
        }
        best.map(|s| self.lines.line_of(s.start))
    }

    /// The deepest key path whose key or value span contains `offset`.
    fn key_at(&self, offset: usize) -> String {
        let mut path = String::new();
        let mut node = Node::Item(self.doc.as_item());
        'descend: loop {
            for (seg, key_span, child) in node.children() {
                if contains(&key_span, offset)
                    || contains(&child.span(), offset)
                    || encloses(child, offset)
                {
                    path.push_str(&seg.to_string());
                    node = child;
                    continue 'descend;
                }
            }
            break;
        }
        path.trim_start_matches('.').to_owned()
    }
}

/// Whether some descendant of `node` (e.g. a key inside a `[[view]]` table,
/// whose header span does not cover its body) contains `offset`.
fn encloses(node: Node<'_>, offset: usize) -> bool {
    node.children().into_iter().any(|(_, key_span, child)| {
        contains(&key_span, offset) || contains(&child.span(), offset) || encloses(child, offset)
    })
}

/// Largest TTL a record may carry (RFC 2181 section 8).
pub const MAX_TTL: u32 = (1 << 31) - 1;

/// Semantic checks on a deserialized config: ranges, duplicates, conflicts.
/// Problems carry key paths but no lines (no source text here); [`load`]
/// adds the lines. Record data, names and prefixes are checked by
/// [`AddressMap::build`].
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    if config.dns.udp_io.is_some() {
        problems.push(Problem::at(
            "dns.udp_io",
            "removed: every shard serves DNS UDP on its worker thread (hand-off included); \
             delete this key",
        ));
    }
    let mut range = |key: &str, value: u64, min: u64, max: u64, hint: &str| {
        if value < min || value > max {
            problems.push(Problem::at(
                key,
                format!("{value} is out of range: use {min}..={max}{hint}"),
            ));
        }
    };

    let server = &config.server;
    range(
        "server.shards",
        server.shards as u64,
        0,
        MAX_SHARDS as u64,
        " (0 = one shard per online CPU)",
    );
    range(
        "server.io_memory_kib",
        server.io_memory_kib as u64,
        MIN_IO_MEMORY_KIB as u64,
        MAX_IO_MEMORY_KIB as u64,
        " KiB per shard; all shards together must fit the memlock limit (ulimit -l)",
    );
    range(
        "server.shutdown_grace_ms",
        server.shutdown_grace_ms,
        0,
        MAX_SHUTDOWN_GRACE_MS,
        " milliseconds",
    );

    let dns = &config.dns;
    range(
        "dns.max_udp_payload",
        dns.max_udp_payload as u64,
        512,
        65535,
        " bytes (1232 avoids IP fragmentation)",
    );
    range(
        "dns.tcp_idle_timeout_ms",
        dns.tcp_idle_timeout_ms,
        100,
        MAX_TCP_IDLE_TIMEOUT_MS,
        " milliseconds",
    );
    range(
        "dns.tcp_max_connections_per_shard",
        dns.tcp_max_connections_per_shard as u64,
        1,
        MAX_TCP_CONNECTIONS_PER_SHARD as u64,
        "",
    );
    range(
        "dns.tcp_max_connections_per_client",
        u64::from(dns.tcp_max_connections_per_client),
        0,
        MAX_TCP_CONNECTIONS_PER_SHARD as u64,
        " (0 = no per-client cap; above dns.tcp_max_connections_per_shard it has no effect)",
    );
    range(
        "dns.tcp_max_query_bytes",
        dns.tcp_max_query_bytes as u64,
        512,
        u64::from(MAX_TCP_QUERY_BYTES),
        " bytes (a query is a question and a few records: 4096 is plenty)",
    );
    range(
        "dns.udp_batch",
        dns.udp_batch as u64,
        1,
        MAX_UDP_BATCH as u64,
        " datagrams per receive/send call",
    );
    range(
        "dns.udp_coalesce_us",
        dns.udp_coalesce_us,
        0,
        MAX_UDP_COALESCE_US,
        " microseconds (0 = never wait)",
    );
    range(
        "dns.udp_coalesce_min_batch",
        dns.udp_coalesce_min_batch as u64,
        1,
        MAX_UDP_BATCH as u64,
        " datagrams",
    );
    for (key, bytes) in [
        ("dns.udp_rcvbuf", dns.udp_rcvbuf),
        ("dns.udp_sndbuf", dns.udp_sndbuf),
    ] {
        if let Some(message) = socket_buffer_problem(bytes) {
            problems.push(Problem::at(key, message));
        }
    }

    if dns.rrl.enabled {
        for (key, message) in validate_rrl(&dns.rrl) {
            problems.push(Problem::at(&key, message));
        }
    }

    if dns.listen.is_empty() {
        problems.push(Problem::at(
            "dns.listen",
            "no address to serve DNS on: add one, e.g. listen = [\"127.0.0.1:8053\"]",
        ));
    }
    for (i, addr) in dns.listen.iter().enumerate() {
        let key = format!("dns.listen[{i}]");
        if addr.port() == 0 {
            problems.push(Problem::at(
                &key,
                format!("{addr}: port 0 would give every shard a different random port; choose a fixed port such as 8053"),
            ));
        }
        if let Some(j) = dns.listen[..i].iter().position(|a| a == addr) {
            problems.push(Problem::at(
                &key,
                format!("{addr} is listed twice (also dns.listen[{j}]); remove one"),
            ));
        } else if let Some(j) = dns.listen.iter().position(|a| {
            a.port() == addr.port()
                && a.ip().is_unspecified()
                && !addr.ip().is_unspecified()
                && a.is_ipv4() == addr.is_ipv4()
        }) {
            problems.push(Problem::at(
                &key,
                format!(
                    "{addr} is already covered by the wildcard {} (dns.listen[{j}]); remove one",
                    dns.listen[j]
                ),
            ));
        }
    }
    problems.extend(surface_conflicts(config));

    let mut zone_names: Vec<String> = Vec::new();
    for (i, zone) in config.zones.iter().enumerate() {
        let name = normalize_name(&zone.name);
        if let Some(j) = zone_names.iter().position(|n| *n == name) {
            problems.push(Problem::at(
                format!("zone[{i}].name"),
                format!(
                    "zone `{}` is already defined by zone[{j}]; merge the two",
                    zone.name
                ),
            ));
        }
        zone_names.push(name);
        for (key, ttl) in [
            (format!("zone[{i}].ttl"), zone.ttl),
            (format!("zone[{i}].soa.minimum"), zone.soa.minimum),
        ] {
            if ttl > MAX_TTL {
                problems.push(Problem::at(
                    key,
                    format!("{ttl} is out of range: use 0..={MAX_TTL} seconds"),
                ));
            }
        }
    }

    let mut view_names: Vec<&str> = Vec::new();
    for (i, view) in config.views.iter().enumerate() {
        if view.name.trim().is_empty() {
            problems.push(Problem::at(
                format!("view[{i}].name"),
                "a view needs a name (the view named `default` answers sources no other view covers)",
            ));
        } else if let Some(j) = view_names.iter().position(|n| *n == view.name) {
            problems.push(Problem::at(
                format!("view[{i}].name"),
                format!(
                    "view `{}` is already defined by view[{j}]; give each view its own name",
                    view.name
                ),
            ));
        }
        view_names.push(&view.name);
        for (r, record) in view.records.iter().enumerate() {
            if let Some(ttl) = record.ttl.filter(|&t| t > MAX_TTL) {
                problems.push(Problem::at(
                    format!("view[{i}].record[{r}].ttl"),
                    format!("{ttl} is out of range: use 0..={MAX_TTL} seconds"),
                ));
            }
        }
    }
    problems.extend(crate::functions::config::validate(
        &config.functions,
        &config.function,
    ));
    problems.extend(crate::admin::validate(&config.server));
    problems.extend(crate::handoff::config::validate(config));
    if let Some(cluster) = &config.cluster {
        problems.extend(validate_cluster(cluster));
    }
    if !valid_log_level(&config.log.level) {
        problems.push(Problem::at(
            "log.level",
            format!(
                "{:?} is not a log filter: use error, warn, info, debug or trace, or directives \
                 like \"info,shardgate::admin=debug\"",
                config.log.level
            ),
        ));
    }
    problems
}

/// Addresses two surfaces share. Every listener binds with SO_REUSEPORT, so
/// two surfaces on one address and protocol would not fail to start: the
/// kernel would silently split packets between the DNS and function sockets.
fn surface_conflicts(config: &Config) -> Vec<Problem> {
    const UDP: u8 = 1;
    const TCP: u8 = 2;
    let mut surfaces: Vec<(String, SocketAddr, u8)> = Vec::new();
    for (i, a) in config.dns.listen.iter().enumerate() {
        surfaces.push((format!("dns.listen[{i}]"), *a, UDP | TCP));
    }
    if config.functions.enabled {
        for (i, a) in config.functions.listen.iter().enumerate() {
            surfaces.push((format!("functions.listen[{i}]"), *a, UDP | TCP));
        }
    }
    surfaces.push((
        "server.admin_listen".into(),
        config.server.admin_listen,
        TCP,
    ));

    let section = |key: &str| key.split(['.', '[']).next().unwrap_or("").to_owned();
    let overlap = |a: &SocketAddr, b: &SocketAddr| {
        a.port() == b.port()
            && a.is_ipv4() == b.is_ipv4()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    };
    let mut problems = Vec::new();
    for (i, (key, addr, protos)) in surfaces.iter().enumerate() {
        let clash = surfaces[..i].iter().find(|(other, o_addr, o_protos)| {
            section(other) != section(key) && protos & o_protos != 0 && overlap(addr, o_addr)
        });
        if let Some((other, o_addr, _)) = clash {
            problems.push(Problem::at(
                key.as_str(),
                format!(
                    "{addr} overlaps {o_addr} of {other}; every surface needs its own port \
                     (defaults: DNS 8053, functions 8054, admin 9353)"
                ),
            ));
        }
    }
    problems
}

/// Upper bound for `server.shards`.
pub const MAX_SHARDS: usize = 1024;
/// Bounds for `server.io_memory_kib`.
pub const MIN_IO_MEMORY_KIB: usize = 128;
pub const MAX_IO_MEMORY_KIB: usize = 64 * 1024;
/// Upper bound for `server.shutdown_grace_ms` (5 minutes).
pub const MAX_SHUTDOWN_GRACE_MS: u64 = 300_000;
/// Upper bound for `dns.tcp_idle_timeout_ms` (1 hour).
pub const MAX_TCP_IDLE_TIMEOUT_MS: u64 = 3_600_000;
/// Upper bound for `dns.udp_batch` and `dns.udp_coalesce_min_batch`.
pub const MAX_UDP_BATCH: usize = 1024;
/// Upper bound for `dns.udp_coalesce_us` (10 ms).
pub const MAX_UDP_COALESCE_US: u64 = 10_000;
/// Bounds of a UDP socket buffer setting (`dns.udp_rcvbuf` and the like),
/// bytes; 0 means the kernel's default.
pub const MIN_SOCKET_BUFFER: u32 = 4096;
pub const MAX_SOCKET_BUFFER: u32 = 1 << 30;

/// What is wrong with a socket buffer setting of `bytes`, if anything.
pub fn socket_buffer_problem(bytes: u32) -> Option<String> {
    (bytes != 0 && !(MIN_SOCKET_BUFFER..=MAX_SOCKET_BUFFER).contains(&bytes)).then(|| {
        format!(
            "{bytes} is out of range: use 0 (the kernel's default) or \
             {MIN_SOCKET_BUFFER}..={MAX_SOCKET_BUFFER} bytes"
        )
    })
}

/// Upper bound for `dns.tcp_max_query_bytes`: four times the default. Real
/// queries (a question, EDNS with padding or cookies, TSIG) stay far below
/// it, and reading a longer message would cost a shard more than three
/// plain queries (`benches/dns_adversarial.rs`).
pub const MAX_TCP_QUERY_BYTES: u16 = 16_384;

/// Upper bound for `dns.tcp_max_connections_per_shard`.
pub const MAX_TCP_CONNECTIONS_PER_SHARD: usize = 1_000_000;

/// Lower-case, absolute (trailing dot) form of a domain name, for comparisons.
fn normalize_name(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        match load(text, Path::new(".")) {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(p) => p,
        }
    }

    /// The one problem at `key`, failing with the full list if absent.
    fn at<'p>(problems: &'p [Problem], key: &str) -> &'p Problem {
        let found: Vec<_> = problems.iter().filter(|p| p.key == key).collect();
        assert_eq!(found.len(), 1, "one problem at {key} in {problems:#?}");
        found[0]
    }

    const ZONE: &str = "[[zone]]\nname = \"svc.example.\"\nsoa = { mname = \"ns1.svc.example.\", rname = \"admin.svc.example.\" }\n";

    #[test]
    fn cluster_settings_are_checked_with_advice() {
        let ok = load(
            &format!("{ZONE}[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n"),
            Path::new("."),
        )
        .expect("a minimal [cluster] loads");
        let c = ok.config.cluster.expect("[cluster] is kept");
        assert_eq!(c.prefix, "/shardgate/");
        assert_eq!((c.dial_timeout_ms, c.request_timeout_ms), (2000, 5000));
        let cases = [
            ("etcd = []", "cluster.etcd", "at least one"),
            (
                "etcd = [\"127.0.0.1:2379\"]",
                "cluster.etcd[0]",
                "http://HOST:PORT",
            ),
            (
                "etcd = [\"http://127.0.0.1\"]",
                "cluster.etcd[0]",
                "a host and a port",
            ),
            (
                "etcd = [\"https://e:2379\"]",
                "cluster.ca_file",
                "CA certificate",
            ),
            (
                "etcd = [\"http://e:2379\"]\nca_file = \"ca.pem\"",
                "cluster.ca_file",
                "every endpoint is http://",
            ),
            (
                "etcd = [\"https://e:2379\"]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"",
                "cluster.cert_file",
                "together",
            ),
            (
                "etcd = [\"http://e:2379\"]\nuser = \"sg\"",
                "cluster.user",
                "together",
            ),
            (
                "etcd = [\"http://e:2379\"]\nprefix = \"shardgate\"",
                "cluster.prefix",
                "start and end",
            ),
            (
                "etcd = [\"http://e:2379\"]\nrequest_timeout_ms = 0",
                "cluster.request_timeout_ms",
                "100..=60000",
            ),
        ];
        for (table, key, want) in cases {
            let p = problems(&format!("{ZONE}[cluster]\n{table}\n"));
            let m = &at(&p, key).message;
            assert!(m.contains(want), "{table}: {m}");
        }
    }

    #[test]
    fn display_has_line_key_and_message() {
        let p = Problem {
            line: Some(7),
            key: "dns.listen[1]".into(),
            message: "bad".into(),
        };
        assert_eq!(p.to_string(), "line 7: dns.listen[1]: bad");
        let p = Problem {
            line: None,
            key: String::new(),
            message: "cannot read".into(),
        };
        assert_eq!(p.to_string(), "cannot read");
    }

    #[test]
    fn syntax_error_has_its_line() {
        let ps = problems("[server]\nshards = 1\n\n[dns\nlisten = []\n");
        assert_eq!(ps.len(), 1, "{ps:#?}");
        assert_eq!(ps[0].line, Some(4));
        assert!(ps[0].message.starts_with("TOML syntax error"), "{}", ps[0]);
        assert!(!ps[0].message.contains('\n'));
    }

    #[test]
    fn udp_io_is_named_as_removed() {
        let ps = problems(&format!("[dns]\nudp_io = \"executor\"\n{ZONE}"));
        let p = at(&ps, "dns.udp_io");
        assert_eq!(p.line, Some(2), "{p}");
        assert!(p.message.starts_with("removed"), "{p}");
    }

    #[test]
    fn unknown_key_is_rejected_at_its_line() {
        let ps = problems("[server]\nshards = 1\nshard = 2\n");
        let p = at(&ps, "server.shard");
        assert_eq!(p.line, Some(3));
        assert!(p.message.contains("unknown field `shard`"), "{p}");
        assert!(p.message.contains("`shards`"), "lists the valid keys: {p}");

        let ps = problems("colour = \"red\"\n");
        assert_eq!(at(&ps, "colour").line, Some(1));
    }

    #[test]
    fn every_type_error_is_reported_not_only_the_first() {
        let text = "\
[server]
shard = 2
shutdown_grace_ms = \"soon\"

[dns]
listen = [
  \"127.0.0.1:8053\",
  \"localhost\",
]

[[view]]
name = 5

[[view]]
name = \"b\"
[[view.record]]
name = \"upf.svc.example.\"
type = \"A\"
data = 7
";
        let ps = problems(text);
        assert_eq!(at(&ps, "server.shard").line, Some(2));
        assert_eq!(at(&ps, "server.shutdown_grace_ms").line, Some(3));
        let listen = at(&ps, "dns.listen[1]");
        assert_eq!(listen.line, Some(8));
        assert!(listen.message.contains("IP:PORT"), "{listen}");
        assert_eq!(at(&ps, "view[0].name").line, Some(12));
        assert_eq!(at(&ps, "view[1].record[0].data").line, Some(19));
        assert_eq!(ps.len(), 5, "{ps:#?}");
        let lines: Vec<_> = ps.iter().map(|p| p.line).collect();
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted, "sorted by line");
    }

    #[test]
    fn missing_required_key_points_at_its_table() {
        let ps = problems("[server]\nshards = 1\n\n[[zone]]\nname = \"svc.example.\"\n");
        let p = at(&ps, "zone[0]");
        assert_eq!(p.line, Some(4));
        assert!(p.message.contains("missing field `soa`"), "{p}");
    }

    #[test]
    fn inline_tables_and_arrays_of_inline_tables_are_located() {
        let text = "[[zone]]\nname = \"a.\"\nsoa = { mname = \"ns.a.\", rname = 1 }\n\n[[view]]\nname = \"v\"\nrecord = [\n  { name = \"x.a.\", type = \"A\", data = \"10.0.0.1\" },\n  { name = \"y.a.\", type = \"A\", data = \"10.0.0.2\", tll = 5 },\n]\n";
        let ps = problems(text);
        assert_eq!(at(&ps, "zone[0].soa.rname").line, Some(3));
        let p = at(&ps, "view[0].record[1].tll");
        assert_eq!(p.line, Some(9));
        assert!(p.message.contains("unknown field `tll`"), "{p}");
    }

    #[test]
    fn ranges_are_checked_with_line_and_key() {
        let text = format!(
            "\
[server]
shards = 5000
io_memory_kib = 16
shutdown_grace_ms = 900000

[dns]
listen = [\"127.0.0.1:8053\"]
max_udp_payload = 100
tcp_idle_timeout_ms = 0
tcp_max_connections_per_shard = 0
tcp_max_query_bytes = 12
udp_batch = 0
udp_coalesce_us = 20000
udp_coalesce_min_batch = 5000

{ZONE}ttl = 4294967295
"
        );
        let ps = problems(&text);
        for (key, line) in [
            ("server.shards", 2),
            ("server.io_memory_kib", 3),
            ("server.shutdown_grace_ms", 4),
            ("dns.max_udp_payload", 8),
            ("dns.tcp_idle_timeout_ms", 9),
            ("dns.tcp_max_connections_per_shard", 10),
            ("dns.tcp_max_query_bytes", 11),
            ("dns.udp_batch", 12),
            ("dns.udp_coalesce_us", 13),
            ("dns.udp_coalesce_min_batch", 14),
            ("zone[0].ttl", 19),
        ] {
            let p = at(&ps, key);
            assert_eq!(p.line, Some(line), "{p}");
            assert!(p.message.contains("out of range"), "{p}");
        }
        assert_eq!(ps.len(), 11, "{ps:#?}");
        assert!(at(&ps, "dns.max_udp_payload")
            .message
            .contains("512..=65535"));
    }

    #[test]
    fn hardening_keys_are_checked() {
        let text = format!(
            "\
[server]
admin_hosts = [\"bad host\", \"10.0.0.1\", \"ok.example\"]
admin_header_timeout_ms = 40000
admin_connections_per_client = 0

[dns]
listen = [\"127.0.0.1:8053\"]
tcp_max_connections_per_shard = 10
tcp_max_connections_per_client = 2000000

[dns.rrl]
enabled = true
rate = 0
slip = 101
ipv4_prefix = 33
ipv6_prefix = 0
table_size = 0

[functions]
http_max_connections_per_shard = 5
http_max_connections_per_client = 2000000

{ZONE}"
        );
        let ps = problems(&text);
        for key in [
            "server.admin_hosts[0]",
            "server.admin_hosts[1]",
            "server.admin_header_timeout_ms",
            "server.admin_connections_per_client",
            "dns.tcp_max_connections_per_client",
            "dns.rrl.rate",
            "dns.rrl.slip",
            "dns.rrl.ipv4_prefix",
            "dns.rrl.ipv6_prefix",
            "dns.rrl.table_size",
            "functions.http_max_connections_per_client",
        ] {
            at(&ps, key);
        }
        assert_eq!(ps.len(), 11, "{ps:#?}");
        // off: the limiter's settings are not checked (nothing uses them)
        let off = text.replace("enabled = true", "enabled = false");
        assert!(problems(&off).iter().all(|p| !p.key.starts_with("dns.rrl")));
    }

    #[test]
    fn listen_addresses_are_checked() {
        let text = "\
[server]
admin_listen = \"127.0.0.1:8053\"

[dns]
listen = [
  \"127.0.0.1:8053\",
  \"127.0.0.1:8053\",
  \"0.0.0.0:9000\",
  \"10.0.0.1:9000\",
  \"[::1]:0\",
  \"[::1]:9000\",
]
";
        let ps = problems(text);
        let admin = at(&ps, "server.admin_listen");
        assert_eq!(admin.line, Some(2));
        assert!(admin.message.contains("of dns.listen[0]"), "{admin}");
        let dup = at(&ps, "dns.listen[1]");
        assert_eq!(dup.line, Some(7));
        assert!(dup.message.contains("listed twice"), "{dup}");
        let wild = at(&ps, "dns.listen[3]");
        assert_eq!(wild.line, Some(9));
        assert!(wild.message.contains("wildcard"), "{wild}");
        let zero = at(&ps, "dns.listen[4]");
        assert_eq!(zero.line, Some(10));
        assert!(zero.message.contains("port 0"), "{zero}");
        // [::1]:9000 is another family than the 0.0.0.0 wildcard: fine.
        assert_eq!(ps.len(), 4, "{ps:#?}");

        let ps = problems("[dns]\nlisten = []\n");
        let p = at(&ps, "dns.listen");
        assert_eq!(p.line, Some(2));
        assert!(p.message.contains("add one"), "{p}");
    }

    #[test]
    fn surfaces_may_not_share_an_address() {
        let text = "\
[server]
admin_listen = \"127.0.0.1:9000\"

[dns]
listen = [\"0.0.0.0:8053\", \"[::1]:8054\"]

[functions]
listen = [\"127.0.0.1:8053\", \"[::1]:8054\", \"0.0.0.0:9000\", \"127.0.0.1:8055\"]
";
        let ps = problems(text);
        let wild = at(&ps, "functions.listen[0]");
        assert_eq!(wild.line, Some(8));
        assert!(wild.message.contains("of dns.listen[0]"), "{wild}");
        assert!(at(&ps, "functions.listen[1]")
            .message
            .contains("of dns.listen[1]"));
        // TCP admin listener vs the functions' TCP listener on 0.0.0.0:9000.
        let admin = at(&ps, "server.admin_listen");
        assert!(admin.message.contains("of functions.listen[2]"), "{admin}");
        assert_eq!(ps.len(), 3, "{ps:#?}");

        // A disabled surface binds nothing and conflicts with nothing.
        let off = text.replace("[functions]\n", "[functions]\nenabled = false\n");
        assert!(load(&off, Path::new(".")).is_ok());
    }

    #[test]
    fn duplicate_zone_and_view_names_are_reported() {
        let text = format!(
            "{ZONE}\n[[zone]]\nname = \"SVC.example\"\nsoa = {{ mname = \"a.\", rname = \"b.\" }}\n\n[[view]]\nname = \"site-a\"\n\n[[view]]\nname = \"site-b\"\n\n[[view]]\nname = \"site-a\"\n\n[[view]]\nname = \" \"\n"
        );
        let ps = problems(&text);
        let zone = at(&ps, "zone[1].name");
        assert_eq!(zone.line, Some(6));
        assert!(zone.message.contains("zone[0]"), "{zone}");
        let view = at(&ps, "view[2].name");
        assert_eq!(view.line, Some(16));
        assert!(view.message.contains("view[0]"), "{view}");
        let empty = at(&ps, "view[3].name");
        assert_eq!(empty.line, Some(19));
        assert_eq!(ps.len(), 3, "{ps:#?}");
    }

    #[test]
    fn record_ttl_over_rfc2181_limit() {
        let text = format!(
            "{ZONE}\n[[view]]\nname = \"default\"\n[[view.record]]\nname = \"upf.svc.example.\"\ntype = \"A\"\ndata = \"10.0.0.1\"\nttl = 2147483648\n"
        );
        let ps = problems(&text);
        let p = at(&ps, "view[0].record[0].ttl");
        assert_eq!(p.line, Some(11));
        assert_eq!(ps.len(), 1, "{ps:#?}");
    }

    #[test]
    fn address_map_problems_get_their_lines() {
        let text = format!(
            "\
{ZONE}
[[view]]
name = \"site-a\"
prefixes = [
  \"10.1.0.0/16\",
  \"10.1.0.0/99\",
]

[[view]]
name = \"site-b\"
[[view.record]]
name = \"upf.svc.example.\"
type = \"A\"
data = \"not-an-address\"
[[view.record]]
name = \"upf.elsewhere.example.\"
type = \"A\"
data = \"10.0.0.1\"
"
        );
        let ps = problems(&text);
        assert_eq!(at(&ps, "view[0].prefixes[1]").line, Some(9));
        assert_eq!(at(&ps, "view[1].record[0].data").line, Some(17));
        assert_eq!(at(&ps, "view[1].record[1].name").line, Some(19));
        assert!(ps.iter().all(|p| p.line.is_some()), "{ps:#?}");
    }

    #[test]
    fn key_paths_map_to_lines() {
        let text = "\
[server]
shards = 2

[dns]
listen = [
  \"127.0.0.1:8053\",
  \"[::1]:8053\",
]

[[view]]
name = \"a\"

[[view]]
name = \"b\"
prefixes = [\"10.2.0.0/16\", \"10.3.0.0/16\"]

[[view.record]]
name = \"x.svc.example.\"
type = \"A\"

[[view.record]]
name = \"y.svc.example.\"
data = \"10.0.0.1\"
";
        let doc = ImDocument::parse(text.to_owned()).unwrap();
        let loc = Locator::new(text, &doc);
        for (key, line) in [
            ("server", Some(1)),
            ("server.shards", Some(2)),
            ("dns.listen", Some(5)),
            ("dns.listen[1]", Some(7)),
            ("view[0]", Some(10)),
            ("view[1]", Some(13)),
            ("view[1].name", Some(14)),
            ("view[1].prefixes[1]", Some(15)),
            ("view[1].record[0]", Some(17)),
            ("view[1].record[1].data", Some(23)),
            // Absent keys fall back to the nearest ancestor in the file.
            ("view[1].record[0].data", Some(17)),
            ("view[1].prefixes_file", Some(13)),
            ("server.admin_listen", Some(1)),
            ("view[7].name", Some(10)),
            ("zone[0].name", None),
            ("", None),
        ] {
            assert_eq!(loc.line_of_key(key), line, "{key}");
        }
        // And back: an offset inside a value names its key path.
        let off = text.find("10.3.0.0").unwrap();
        assert_eq!(loc.key_at(off), "view[1].prefixes[1]");
        let off = text.find("y.svc").unwrap();
        assert_eq!(loc.key_at(off), "view[1].record[1].name");
    }

    #[test]
    fn unreadable_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let ps = load_file(&path).unwrap_err();
        assert_eq!(ps.len(), 1);
        assert!(ps[0].message.contains("missing.toml"), "{}", ps[0]);
        assert!(ps[0].message.contains("--config"), "{}", ps[0]);
    }

    #[test]
    fn log_table_is_checked() {
        assert!(valid_log_level("info"));
        assert!(valid_log_level("warn,shardgate::admin=debug"));
        assert!(!valid_log_level(""));
        assert!(!valid_log_level("loud"));
        assert!(!valid_log_level("shardgate=loud"));
        let base = std::path::Path::new(".");
        let text = format!("{EMBEDDED_DEFAULT}\n[log]\nlevel = \"debug\"\nformat = \"json\"\n");
        let loaded = load(&text, base).unwrap();
        assert_eq!(loaded.config.log.format, LogFormat::Json);
        let text = format!("{EMBEDDED_DEFAULT}\n[log]\nlevel = \"loud\"\n");
        let problems = load(&text, base).unwrap_err();
        assert_eq!(problems[0].key, "log.level");
        assert!(problems[0].line.is_some());
        let text = format!("{EMBEDDED_DEFAULT}\n[log]\nformat = \"xml\"\n");
        assert!(load(&text, base).is_err());
    }

    #[test]
    fn load_file_reports_lines_of_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[dns]\n\nmax_udp_payload = 1\n").unwrap();
        let ps = load_file(&path).unwrap_err();
        assert_eq!(at(&ps, "dns.max_udp_payload").line, Some(3));
    }

    #[test]
    fn embedded_default_loads_without_problems() {
        let loaded = load_embedded().unwrap_or_else(|ps| panic!("{ps:#?}"));
        assert!(!loaded.config.zones.is_empty());
        assert!(loaded.config.views.iter().any(|v| v.name == "default"));
    }

    #[test]
    fn shipped_example_loads_without_problems() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let loaded = load_file(&dir.join("shardgate.toml")).unwrap_or_else(|ps| panic!("{ps:#?}"));
        let embedded = load_embedded().unwrap_or_else(|ps| panic!("{ps:#?}"));
        // The commented example serves the same address map as the default.
        assert_eq!(loaded.config.zones, embedded.config.zones);
        assert_eq!(loaded.config.views, embedded.config.views);
    }

    /// Keys the schema keeps only so that check-config can name them as
    /// removed; the example does not show them.
    const REMOVED_KEYS: &[&str] = &["dns.udp_io", "handoff.backlog_wait_us"];

    /// `config/shardgate.toml` documents every key of every table it has
    /// (commented-out keys count). The list of valid keys comes from serde
    /// itself: a probe key added to each table is rejected with "expected one
    /// of ...", so keys added to the schema later are covered too.
    #[test]
    fn shipped_example_shows_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shardgate.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let doc = ImDocument::parse(text.clone()).unwrap();
        let mut tables = Vec::new();
        collect_tables(Node::Item(doc.as_item()), &mut Vec::new(), &mut tables);
        assert!(tables.len() >= 6, "{tables:?}");
        let mut missing = Vec::new();
        for path in &tables {
            let mut probe = doc.clone().into_mut();
            let table = navigate(probe.as_table_mut(), path).expect("path from the same document");
            table.insert("zz_probe", toml_edit::value(0));
            let err = Config::deserialize(probe.into_deserializer())
                .expect_err("an unknown key must be rejected");
            let msg = err.message();
            assert!(msg.contains("unknown field `zz_probe`"), "{msg}");
            let expected = &msg[msg.find("expected").unwrap_or(msg.len())..];
            for field in expected.split('`').skip(1).step_by(2) {
                let key = format!("{}.{field}", path_string(path));
                if REMOVED_KEYS.contains(&key.as_str()) {
                    continue;
                }
                if !documented(&text, field) {
                    missing.push(format!("{}.{field}", path_string(path)));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "keys not shown in config/shardgate.toml: {missing:?}"
        );
    }

    fn collect_tables(node: Node<'_>, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
        let table_like =
            node.as_table().is_some() || matches!(node.as_value(), Some(Value::InlineTable(_)));
        if table_like {
            out.push(path.clone());
        }
        for (seg, _, child) in node.children() {
            path.push(seg);
            collect_tables(child, path, out);
            path.pop();
        }
    }

    fn navigate<'a>(
        table: &'a mut dyn toml_edit::TableLike,
        path: &[Seg],
    ) -> Option<&'a mut dyn toml_edit::TableLike> {
        match path {
            [] => Some(table),
            [Seg::Key(k), Seg::Index(i), rest @ ..] => {
                let next: &mut dyn toml_edit::TableLike = match table.get_mut(k)? {
                    Item::ArrayOfTables(a) => a.get_mut(*i)?,
                    Item::Value(Value::Array(a)) => a.get_mut(*i)?.as_inline_table_mut()?,
                    _ => return None,
                };
                navigate(next, rest)
            }
            [Seg::Key(k), rest @ ..] => navigate(table.get_mut(k)?.as_table_like_mut()?, rest),
            [Seg::Index(_), ..] => None,
        }
    }

    fn path_string(path: &[Seg]) -> String {
        let s: String = path.iter().map(|s| s.to_string()).collect();
        s.trim_start_matches('.').to_owned()
    }

    /// `field = ...`, `[... field]` or `[[... field]]`, commented out or not.
    fn documented(text: &str, field: &str) -> bool {
        text.lines().any(|line| {
            let l = line.trim_start_matches(|c: char| c == '#' || c.is_whitespace());
            let assigned = l
                .strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with('='));
            let header = l.starts_with('[')
                && l.trim_end_matches(']')
                    .trim_start_matches('[')
                    .rsplit('.')
                    .next()
                    .is_some_and(|last| last.trim() == field);
            let inline = l.contains(&format!(" {field} =")) || l.contains(&format!("{{{field} ="));
            assigned || header || inline
        })
    }
}
