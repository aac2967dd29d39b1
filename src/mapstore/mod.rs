//! The served address map's state, below the shards and the admin plane:
//! the configuration's map with the API changes merged over it, their
//! crash-safe persistence, and, with `[cluster]`, the fleet map in etcd the
//! node follows instead of its local state file.
//!
//! - [`store`]: the single writer of the served map (reloads and API changes).
//! - [`overlay`]: API changes as data, and their merge over the config.
//! - [`persist`]: crash-safe state files (temp, fsync, rename, dir fsync).
//! - [`cluster`]: the fleet map in etcd (snapshot, watch, transactions).

pub mod cluster;
pub mod overlay;
pub mod persist;
pub mod store;

pub use store::{Applied, MapStore, OpenError, Refused};
