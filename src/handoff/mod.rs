//! Load-correcting hand-off to the statically paired alternate node.
//!
//! When a shard is overloaded, or a request names a function that is not
//! warm on it, the shard wraps the client's datagram in an authenticated
//! frame and sends it to its node's alternate, without asking the alternate
//! anything first; for a cold function it starts warming it so later
//! requests stay local. The alternate serves a handed-off request itself
//! (never handing it on) and answers the client directly from the first
//! node's service address (raw socket) or relays the answer back through
//! the first node, which keeps no per-request state either way.
//!
//! - [`policy`]: the work-conserving admission and the per-request
//!   decision (sans-IO).
//! - [`frame`]: the versioned, MAC'd frame and its checks (sans-IO).
//! - [`replay`]: the node-wide, lock-free replay guard.
//! - [`liveness`]: the heartbeat state machine (sans-IO).
//! - [`reject`]: overload answers (DNS SERVFAIL, function error text).
//! - [`raw`]: IPv4/UDP packet building and the raw sender for direct replies.
//! - [`config`]: the `[handoff]` table and its checks.
//! - [`shard`]: one shard's hand-off state, counters and sends.
//! - [`io`]: the gated UDP handlers, the hand-off port, the heartbeat, HTTP.
//! - [`worker`]: the gate of a shard's DNS UDP worker thread.

pub mod config;
pub mod frame;
pub mod io;
pub mod liveness;
pub mod policy;
pub mod raw;
pub mod reject;
pub mod replay;
pub mod shard;
pub mod worker;

pub use shard::HandoffShard;
