//! Function-service configuration: the `[functions]` table and the
//! `[[function]]` entries, their defaults, per-function limits resolved
//! against `[functions.defaults]`, and range checks reported as
//! [`crate::config::Problem`]s with key paths such as `function[2].deadline_ms`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Problem;

/// The prefix of a `module` that names an example built into the binary
/// (`builtin:checksum.wat`, see `functions::examples`).
pub const BUILTIN_MODULE_PREFIX: &str = "builtin:";

/// Whether `module` (as written in the config) names a built-in example.
pub fn is_builtin(module: &Path) -> bool {
    module
        .to_str()
        .is_some_and(|s| s.starts_with(BUILTIN_MODULE_PREFIX))
}

/// The `[functions]` table: surfaces, node-wide engine settings and the
/// default limits every function gets unless its `[[function]]` entry says
/// otherwise.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionsConfig {
    /// Serve functions at all.
    pub enabled: bool,
    /// Addresses to serve on: UDP invocation frames and HTTP/1.1 on TCP, each.
    pub listen: Vec<SocketAddr>,
    /// Optional directory: every `*.wat` / `*.wasm` file in it becomes a
    /// function named by its file stem, with the default limits. A
    /// `[[function]]` entry with the same name wins.
    pub dir: Option<PathBuf>,
    /// Where compiled artifacts are cached so a restart does not recompile;
    /// an empty path disables the cache.
    pub cache_dir: PathBuf,
    /// Bytes of each linear memory the pooling allocator keeps resident (and
    /// zeroes with memset) when an instance is released; beyond it pages are
    /// given back with madvise. Size it to what functions touch.
    pub keep_resident_kib: u32,
    /// Period of the epoch ticker that enforces deadlines, milliseconds.
    pub epoch_tick_ms: u32,
    /// HTTP: largest request head (request line + headers), bytes.
    pub http_max_header_bytes: u32,
    /// HTTP: idle time before a connection is closed, milliseconds.
    pub http_idle_timeout_ms: u64,
    /// HTTP: open connections per shard; more are closed at once.
    pub http_max_connections_per_shard: u32,
    /// HTTP: open connections one client (IPv4 address, IPv6 /64) may hold
    /// per shard; 0 = no per-client cap.
    pub http_max_connections_per_client: u32,
    /// UDP: receive buffer of each invocation socket (`SO_RCVBUF`), bytes;
    /// 0 = the kernel's default; unset = as `dns.udp_rcvbuf` unset.
    pub udp_rcvbuf: Option<u32>,
    /// UDP: send buffer of each invocation socket (`SO_SNDBUF`), bytes;
    /// 0 = the kernel's default.
    pub udp_sndbuf: u32,
    /// Limits for functions that do not set their own.
    pub defaults: LimitsConfig,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        FunctionsConfig {
            enabled: true,
            listen: vec!["127.0.0.1:8054".parse().unwrap()],
            dir: None,
            cache_dir: PathBuf::from("/var/cache/shardgate/functions"),
            keep_resident_kib: 64,
            epoch_tick_ms: 1,
            http_max_header_bytes: 8192,
            http_idle_timeout_ms: 10_000,
            http_max_connections_per_shard: 1024,
            http_max_connections_per_client: 64,
            udp_rcvbuf: None,
            udp_sndbuf: 0,
            defaults: LimitsConfig::default(),
        }
    }
}

/// Per-function limits as written in the file; unset keys fall back to
/// `[functions.defaults]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest linear memory the function may grow to, KiB (64 KiB pages).
    pub max_memory_kib: u32,
    /// Wall-clock budget of one invocation, milliseconds.
    pub deadline_ms: u32,
    /// Largest accepted input, bytes.
    pub max_input_bytes: u32,
    /// Largest output returned, bytes; a larger one fails the request.
    pub max_output_bytes: u32,
    /// Ready instances kept per shard at least (the arena ring; built in
    /// batches of up to 8, so up to twice this many are ready at times).
    pub ring_depth: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_memory_kib: 1024,
            deadline_ms: 20,
            max_input_bytes: 65_536,
            max_output_bytes: 65_536,
            ring_depth: 4,
        }
    }
}

/// One `[[function]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Name used in `POST /fn/<name>` and in invocation frames.
    pub name: String,
    /// `.wat` or `.wasm` file; relative paths resolve against the config
    /// file's directory.
    pub module: PathBuf,
    #[serde(default)]
    pub max_memory_kib: Option<u32>,
    #[serde(default)]
    pub deadline_ms: Option<u32>,
    #[serde(default)]
    pub max_input_bytes: Option<u32>,
    #[serde(default)]
    pub max_output_bytes: Option<u32>,
    #[serde(default)]
    pub ring_depth: Option<u32>,
}

/// Resolved limits of one function, in the units the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_memory_bytes: usize,
    pub deadline_ms: u32,
    pub max_input_bytes: usize,
    pub max_output_bytes: usize,
    pub ring_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&LimitsConfig::default())
    }
}

impl Limits {
    /// Convert a (validated) limits table; memory rounds up to whole pages.
    pub fn from_config(c: &LimitsConfig) -> Limits {
        let kib = (c.max_memory_kib as usize).div_ceil(64) * 64;
        Limits {
            max_memory_bytes: kib * 1024,
            deadline_ms: c.deadline_ms,
            max_input_bytes: c.max_input_bytes as usize,
            max_output_bytes: c.max_output_bytes as usize,
            ring_depth: c.ring_depth as usize,
        }
    }
}

/// Valid ranges (inclusive). Memory: one 64 KiB page to 1 GiB.
pub const MAX_MEMORY_KIB: (u32, u32) = (64, 1024 * 1024);
/// Deadlines: a call runs on its shard's core to completion (the epoch
/// deadline traps it, it never yields), so every other request of the
/// shard waits behind it; 5 s bounds what one request can hold a shard for.
pub const DEADLINE_MS: (u32, u32) = (1, 5_000);
/// Inputs and outputs: up to 16 MiB (UDP frames are further bounded by the
/// datagram size).
pub const MAX_IO_BYTES: (u32, u32) = (1, 16 * 1024 * 1024);
pub const RING_DEPTH: (u32, u32) = (1, 64);
pub const KEEP_RESIDENT_KIB: (u32, u32) = (0, 16 * 1024);
pub const EPOCH_TICK_MS: (u32, u32) = (1, 100);
pub const HTTP_MAX_HEADER_BYTES: (u32, u32) = (256, 65_536);
pub const HTTP_IDLE_TIMEOUT_MS: (u64, u64) = (100, 3_600_000);
pub const HTTP_MAX_CONNECTIONS: (u32, u32) = (1, 1_000_000);
/// Longest function name (it travels in a one-byte length field).
pub const MAX_NAME_LEN: usize = 64;

/// A function to load: its name, where its module is, its resolved limits.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub name: String,
    pub module: PathBuf,
    pub limits: Limits,
}

impl FunctionsConfig {
    /// The functions to load: every module in `dir` (named by file stem, with
    /// the defaults), then every `[[function]]` entry (replacing a directory
    /// function of the same name). Relative paths resolve against
    /// `base_dir`. A directory that cannot be read yields an error message.
    pub fn specs(
        &self,
        entries: &[FunctionConfig],
        base_dir: &Path,
    ) -> (Vec<FunctionSpec>, Vec<String>) {
        let mut specs: Vec<FunctionSpec> = Vec::new();
        let mut errors = Vec::new();
        let defaults = &self.defaults;
        if let Some(dir) = &self.dir {
            let dir = base_dir.join(dir);
            match std::fs::read_dir(&dir) {
                Ok(rd) => {
                    let mut files: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| {
                            matches!(p.extension().and_then(|e| e.to_str()), Some("wat" | "wasm"))
                        })
                        .collect();
                    files.sort();
                    for path in files {
                        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                            continue;
                        };
                        if !valid_name(name) {
                            errors.push(format!(
                                "{}: skipped, file stem is not a valid function name \
                                 (1-{MAX_NAME_LEN} of A-Z a-z 0-9 _ - .)",
                                path.display()
                            ));
                            continue;
                        }
                        // foo.wasm beside foo.wat: the first (sorted) wins.
                        if specs.iter().any(|s| s.name == name) {
                            continue;
                        }
                        specs.push(FunctionSpec {
                            name: name.to_owned(),
                            module: path.clone(),
                            limits: Limits::from_config(defaults),
                        });
                    }
                }
                Err(e) => errors.push(format!(
                    "functions.dir {}: cannot read it: {e}; create it or fix the path",
                    dir.display()
                )),
            }
        }
        for f in entries {
            let c = LimitsConfig {
                max_memory_kib: f.max_memory_kib.unwrap_or(defaults.max_memory_kib),
                deadline_ms: f.deadline_ms.unwrap_or(defaults.deadline_ms),
                max_input_bytes: f.max_input_bytes.unwrap_or(defaults.max_input_bytes),
                max_output_bytes: f.max_output_bytes.unwrap_or(defaults.max_output_bytes),
                ring_depth: f.ring_depth.unwrap_or(defaults.ring_depth),
            };
            let spec = FunctionSpec {
                name: f.name.clone(),
                module: if is_builtin(&f.module) {
                    f.module.clone()
                } else {
                    base_dir.join(&f.module)
                },
                limits: Limits::from_config(&c),
            };
            match specs.iter_mut().find(|s| s.name == f.name) {
                Some(existing) => *existing = spec,
                None => specs.push(spec),
            }
        }
        (specs, errors)
    }
}

/// Function names: 1..=64 bytes of `A-Z a-z 0-9 _ - .`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn problem(key: String, message: String) -> Problem {
    Problem {
        line: None,
        key,
        message,
    }
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    out: &mut Vec<Problem>,
    key: String,
    value: T,
    (min, max): (T, T),
    unit: &str,
) {
    if value < min || value > max {
        out.push(problem(
            key,
            format!("{value} is out of range: use {min}..={max}{unit}"),
        ));
    }
}

fn check_limits(out: &mut Vec<Problem>, prefix: &str, c: &LimitsConfig) {
    range(
        out,
        format!("{prefix}.max_memory_kib"),
        c.max_memory_kib,
        MAX_MEMORY_KIB,
        " KiB",
    );
    range(
        out,
        format!("{prefix}.deadline_ms"),
        c.deadline_ms,
        DEADLINE_MS,
        " milliseconds",
    );
    range(
        out,
        format!("{prefix}.max_input_bytes"),
        c.max_input_bytes,
        MAX_IO_BYTES,
        " bytes",
    );
    range(
        out,
        format!("{prefix}.max_output_bytes"),
        c.max_output_bytes,
        MAX_IO_BYTES,
        " bytes",
    );
    range(
        out,
        format!("{prefix}.ring_depth"),
        c.ring_depth,
        RING_DEPTH,
        " instances",
    );
}

/// Semantic checks of the function configuration: ranges, names, duplicates.
/// Whether modules exist and compile is checked when they are loaded
/// (`functions::FunctionNode::start`).
pub fn validate(functions: &FunctionsConfig, entries: &[FunctionConfig]) -> Vec<Problem> {
    let mut out = Vec::new();
    check_limits(&mut out, "functions.defaults", &functions.defaults);
    range(
        &mut out,
        "functions.keep_resident_kib".into(),
        functions.keep_resident_kib,
        KEEP_RESIDENT_KIB,
        " KiB",
    );
    range(
        &mut out,
        "functions.epoch_tick_ms".into(),
        functions.epoch_tick_ms,
        EPOCH_TICK_MS,
        " milliseconds",
    );
    range(
        &mut out,
        "functions.http_max_header_bytes".into(),
        functions.http_max_header_bytes,
        HTTP_MAX_HEADER_BYTES,
        " bytes",
    );
    range(
        &mut out,
        "functions.http_idle_timeout_ms".into(),
        functions.http_idle_timeout_ms,
        HTTP_IDLE_TIMEOUT_MS,
        " milliseconds",
    );
    range(
        &mut out,
        "functions.http_max_connections_per_shard".into(),
        functions.http_max_connections_per_shard,
        HTTP_MAX_CONNECTIONS,
        "",
    );
    range(
        &mut out,
        "functions.http_max_connections_per_client".into(),
        functions.http_max_connections_per_client,
        (0, HTTP_MAX_CONNECTIONS.1),
        " (0 = no per-client cap; above functions.http_max_connections_per_shard it has no effect)",
    );
    for (key, bytes) in [
        ("functions.udp_rcvbuf", functions.udp_rcvbuf.unwrap_or(0)),
        ("functions.udp_sndbuf", functions.udp_sndbuf),
    ] {
        if let Some(message) = super::socket_buffer_problem(bytes) {
            out.push(problem(key.into(), message));
        }
    }
    if functions.enabled && functions.listen.is_empty() {
        out.push(problem(
            "functions.listen".into(),
            "no address to serve functions on: add one (e.g. \"127.0.0.1:8054\") or set enabled = false".into(),
        ));
    }
    for (i, f) in entries.iter().enumerate() {
        let key = |k: &str| format!("function[{i}].{k}");
        if !valid_name(&f.name) {
            out.push(problem(
                key("name"),
                format!(
                    "{:?} is not a valid function name: use 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 _ - .",
                    f.name
                ),
            ));
        }
        if entries[..i].iter().any(|g| g.name == f.name) {
            out.push(problem(
                key("name"),
                format!(
                    "function {:?} is defined twice: rename or remove one",
                    f.name
                ),
            ));
        }
        match f.module.extension().and_then(|e| e.to_str()) {
            Some("wat" | "wasm") => {}
            _ => out.push(problem(
                key("module"),
                format!(
                    "{} is neither a .wat nor a .wasm file: point it at a WebAssembly module",
                    f.module.display()
                ),
            )),
        }
        let opt = |out: &mut Vec<Problem>, k: &str, v: Option<u32>, r: (u32, u32), unit: &str| {
            if let Some(v) = v {
                range(out, key(k), v, r, unit);
            }
        };
        opt(
            &mut out,
            "max_memory_kib",
            f.max_memory_kib,
            MAX_MEMORY_KIB,
            " KiB",
        );
        opt(
            &mut out,
            "deadline_ms",
            f.deadline_ms,
            DEADLINE_MS,
            " milliseconds",
        );
        opt(
            &mut out,
            "max_input_bytes",
            f.max_input_bytes,
            MAX_IO_BYTES,
            " bytes",
        );
        opt(
            &mut out,
            "max_output_bytes",
            f.max_output_bytes,
            MAX_IO_BYTES,
            " bytes",
        );
        opt(
            &mut out,
            "ring_depth",
            f.ring_depth,
            RING_DEPTH,
            " instances",
        );
    }
    out
}
