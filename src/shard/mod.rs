//! The glommio runtime: one pinned executor per core, each owning its
//! sockets, its handle to the address map and its counters; nothing on the
//! request path is shared-written or locked. By default a shard's DNS UDP
//! sockets are served by worker threads pinned to the same core
//! ([`dns_worker`]), which own their map handle and counters the same way
//! and report to their shard.
//!
//! - [`pool`]: start-up (config, shard count, memlock), the shard pool, shutdown.
//! - [`services`]: what each shard binds and spawns (the place to add services).
//! - [`udp`]: batched `recvmmsg`/`sendmmsg` loops (and the plain baseline).
//! - [`coalesce`]: the adaptive receive-coalescing policy of those loops.
//! - [`dns_worker`]: a shard's DNS UDP worker thread.
//! - [`tcp`]: DNS over TCP: framing, pipelining, limits.
//! - [`sockets`]: SO_REUSEPORT + SO_INCOMING_CPU sockets via socket2.
//! - [`state`]: the swapped address map generation and other shared state.
//! - [`context`]: the per-shard context handed to every task.
//! - [`control`]: per-shard command channels and the signal thread (reload, stop).
//! - [`stats`]: shard-local counters and their periodic publication.
//! - [`stop`]: the shard-local stop signal.

pub mod client_cap;
pub mod coalesce;
pub mod context;
pub mod control;
pub mod dns_worker;
pub mod pool;
pub mod rrl;
pub mod services;
pub mod sockets;
pub mod state;
pub mod stats;
pub mod stop;
pub mod tcp;
pub mod udp;

pub use pool::{run, RunError, RunOptions};

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
