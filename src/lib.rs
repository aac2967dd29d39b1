//! shardgate: a sharded thread-per-core network appliance.
//!
//! Sans-IO cores (`dns`, `addrmap`, `config`) are pure code tested on bytes;
//! `shard` is the thin glommio I/O layer that moves bytes between sockets and
//! those cores.

pub mod addrmap;
pub mod admin;
pub mod config;
pub mod ctl;
pub mod dns;
pub mod functions;
pub mod fuzzing;
pub mod handoff;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod shard;
