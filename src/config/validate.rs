//! Semantic checks of a deserialized configuration: ranges, duplicates,
//! conflicts between surfaces. Problems carry key paths; [`super::load`]
//! adds their lines.

use std::net::SocketAddr;

use super::{valid_log_level, validate_cluster, Config, Problem, RrlConfig, ServerConfig};

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
        ("dns.udp_rcvbuf", dns.udp_rcvbuf.unwrap_or(0)),
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
    problems.extend(crate::config::functions::validate(
        &config.functions,
        &config.function,
    ));
    problems.extend(validate_server(&config.server));
    problems.extend(crate::config::handoff::validate(config));
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

/// Connections the admin listener serves at once.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Shortest accepted admin token.
pub const MIN_TOKEN_LEN: usize = 16;

/// Checks of the admin settings in `[server]` (part of [`validate`]).
pub fn validate_server(server: &ServerConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            line: None,
            key: key.to_owned(),
            message,
        })
    };
    if server.admin_token.is_some() && server.admin_token_file.is_some() {
        problem(
            "server.admin_token_file",
            "set either server.admin_token or server.admin_token_file, not both".into(),
        );
    }
    if let Some(token) = &server.admin_token {
        if token.trim().len() < MIN_TOKEN_LEN || token.trim() != token {
            problem(
                "server.admin_token",
                format!(
                    "the admin token must be at least {MIN_TOKEN_LEN} characters without surrounding spaces; \
                     generate one with `openssl rand -hex 24`"
                ),
            );
        }
    }
    for (i, h) in server.admin_hosts.iter().enumerate() {
        let bad = h.is_empty()
            || h.parse::<std::net::IpAddr>().is_ok()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if bad {
            problem(
                &format!("server.admin_hosts[{i}]"),
                format!(
                    "{h:?} is not a host name: list the names clients use in the Host header \
                     (e.g. \"admin.node7.example\", no port); IP addresses and localhost are always accepted"
                ),
            );
        }
    }
    if server.admin_header_timeout_ms == 0 || server.admin_request_timeout_ms == 0 {
        problem(
            "server.admin_header_timeout_ms",
            "admin_header_timeout_ms and admin_request_timeout_ms must be above 0 (defaults 5000 and 30000)".into(),
        );
    } else if server.admin_header_timeout_ms > server.admin_request_timeout_ms {
        problem(
            "server.admin_header_timeout_ms",
            format!(
                "{} exceeds server.admin_request_timeout_ms ({}): the head is part of the request; \
                 lower it or raise the request timeout",
                server.admin_header_timeout_ms, server.admin_request_timeout_ms
            ),
        );
    }
    if server.admin_connections_per_client == 0
        || server.admin_connections_per_client > MAX_ADMIN_CONNECTIONS
    {
        problem(
            "server.admin_connections_per_client",
            format!(
                "{} is outside 1..={}: one address may hold at most that many of the admin listener's {} \
                 connections (default 8)",
                server.admin_connections_per_client,
                MAX_ADMIN_CONNECTIONS,
                MAX_ADMIN_CONNECTIONS
            ),
        );
    }
    let has_token = server.admin_token.is_some() || server.admin_token_file.is_some();
    if !server.admin_listen.ip().is_loopback() && !has_token {
        problem(
            "server.admin_listen",
            format!(
                "{} is not a loopback address and no admin token is set: anyone who reaches it could change \
                 the address map. Set server.admin_token (or admin_token_file), or bind to 127.0.0.1",
                server.admin_listen
            ),
        );
    }
    problems
}
