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
//! - [`policy`]: the work-conserving admission, the per-request decision,
//!   the HTTP verdict and the hop marker of redirects (sans-IO).
//! - [`frame`]: the versioned, MAC'd frame and its checks (sans-IO).
//! - [`replay`]: the node-wide, lock-free replay guard.
//! - [`liveness`]: the heartbeat state machine (sans-IO).
//! - [`reject`]: overload answers (DNS SERVFAIL, function error text).
//! - [`raw`]: IPv4/UDP packet building and the raw sender for direct replies.
//! - [`settings`]: thresholds and the MAC key from the `[handoff]` table
//!   ([`crate::config::handoff`]).
//! - [`per_shard`]: one shard's hand-off state, counters and sends.
//! - [`gate`]: the admission in front of a UDP answer path, the heartbeat.
//! - [`worker`]: the gate of a shard's DNS UDP worker thread.

pub mod frame;
pub mod gate;
pub mod liveness;
pub mod per_shard;
pub mod policy;
pub mod raw;
pub mod reject;
pub mod replay;
pub mod settings;
pub mod worker;

pub use per_shard::HandoffShard;

// The services' sides live with them: `functions::handoff` (gated function
// UDP, HTTP 307/503), `shard::handoff_port` (requests handed to this node).
