//! Test support shared by every suite (`mod support;`): one process
//! harness, one DNS query builder, free ports, and the helpers of the
//! admin-plane, etcd and load-generator suites.
//!
//! - [`process`]: spawn a binary with its log captured, wait for a line or
//!   the exit, signal, stop; killed on drop.
//! - [`admin`]: a `shardgate` on loopback with its own ports and state
//!   directory, HTTP to its admin listener, metrics samples, DNS from a
//!   chosen source address.
//! - [`dns`]: DNS queries on the `domain` crate and readers of answers.
//! - [`ports`]: ports no other socket can be given meanwhile.
//! - [`etcd`]: a real etcd on loopback.
//! - [`load`]: run `shardgate-load`; in-test DNS and function responders.
#![allow(dead_code, unused_imports)]

pub mod admin;
pub mod dns;
pub mod etcd;
pub mod load;
pub mod ports;
pub mod process;

pub use admin::*;
pub use ports::free_port;
pub use process::{Process, BIN};
