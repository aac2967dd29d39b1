//! shardgate: a sharded thread-per-core network appliance.
//!
//! Sans-IO cores (`config`, `addrmap`, `dns`, the frame and policy modules
//! of `functions` and `handoff`) are pure code tested on bytes; `runtime`
//! holds the shard's I/O building blocks, the services build on it, and
//! `shard` composes them into one pinned executor per core.
//!
//! # Layers
//!
//! Imports go one way: a module may use only modules of layers below its
//! own (tests excepted), so no two top-level modules import each other.
//! `scripts/check-layers.py` reads this list and every `crate::` path under
//! `src/`, and fails the test command on an import that climbs.
//!
//! 1. `config`, `http`, `notify`: configuration as data (schema, load, checks); HTTP
//!    response heads; systemd notify.
//! 2. `logging`, `metrics`: log set-up; the metrics registry and shard-local instruments.
//! 3. `addrmap`: the address map, built from the config types.
//! 4. `dns`: DNS query to answer over the map (sans-IO).
//! 5. `mapstore`: the served map's state: API overlay, persistence, the fleet map in etcd.
//! 6. `runtime`: stop signal, batched UDP, bounded TCP reads, sockets, client caps.
//! 7. `handoff`: frames, admission policy, replay guard, liveness, the UDP gate.
//! 8. `functions`: WebAssembly functions: engine, arenas, frames, HTTP, their servers.
//! 9. `shard`: one shard: context, DNS drivers, services, hand-off port, pool, control.
//! 10. `admin`: the admin HTTP plane (metrics, health, the map API).
//! 11. `node`: start-up of a node over every layer.
//! 12. `ctl`, `fuzzing`: tools (admin client, fuzz entry points).
//!
//! The load generator is its own crate in the workspace (`load/`,
//! `shardgate-load`) on top of this library.

pub mod addrmap;
pub mod admin;
pub mod config;
pub mod ctl;
pub mod dns;
pub mod functions;
pub mod fuzzing;
pub mod handoff;
pub mod http;
pub mod logging;
pub mod mapstore;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod runtime;
pub mod shard;
