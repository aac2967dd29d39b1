//! One shard: a pinned glommio executor per core composing the services,
//! each shard owning its sockets, its handle to the address map and its
//! counters; nothing on the request path is shared-written or locked. By
//! default a shard's DNS UDP sockets are served by worker threads pinned to
//! the same core ([`dns_worker`]), which own their map handle and counters
//! the same way and report to their shard. The building blocks (UDP loops,
//! TCP reads, sockets, stop signal) are `runtime`'s.
//!
//! - [`pool`]: shard count, memlock and pinning checks, the shard pool, shutdown.
//! - [`services`]: what each shard binds and spawns (the place to add services).
//! - [`dns_worker`]: a shard's DNS UDP worker thread.
//! - [`tcp`]: DNS over TCP: framing, pipelining, limits.
//! - [`rrl`]: the shard's response rate limiting gate.
//! - [`handoff_port`]: requests the alternate handed to this node.
//! - [`state`]: the swapped address map generation and other shared state.
//! - [`context`]: the per-shard context handed to every task.
//! - [`control`]: per-shard command channels and the signal thread (reload, stop).
//! - [`stats`]: shard-local DNS counters and their periodic publication.
//! - [`meter`]: the shard's metric handles, published from its counters.
//! - [`health`]: what `/readyz` waits for (shards serving, functions compiled).

pub mod context;
pub mod control;
pub mod dns_worker;
pub mod handoff_port;
pub mod health;
pub mod meter;
pub mod pool;
pub mod rrl;
pub mod services;
pub mod state;
pub mod stats;
pub mod tcp;

use crate::config::Problem;

/// Format a configuration problem as `SOURCE:LINE: key: message` (line and
/// key omitted when unknown), the form `check-config` and reloads print.
pub fn format_problem(source: &str, p: &Problem) -> String {
    let mut s = String::from(source);
    if let Some(line) = p.line {
        s.push_str(&format!(":{line}"));
    }
    s.push_str(": ");
    if !p.key.is_empty() {
        s.push_str(&p.key);
        s.push_str(": ");
    }
    s.push_str(&p.message);
    s
}
