//! Serverless WebAssembly functions with arenas recycled by pointer swap.
//!
//! The node compiles every function once ([`FunctionNode`]: engine with a
//! pooling allocator, on-disk artifact cache, epoch ticker); each shard keeps
//! a ring of ready instances per function ([`FunctionShard`]) and invokes a
//! never-used instance for every request, releasing and refilling in a
//! low-priority task. Surfaces: UDP frames ([`frame`]) and HTTP/1.1
//! ([`http`]), served by [`server`]; [`client`] is `shardgate invoke`.

pub mod arena;
pub mod client;
pub mod compile;
pub mod examples;
pub mod frame;
pub mod handoff;
pub mod http;
pub mod node;
pub mod outcome;
pub mod per_shard;
pub mod server;

pub use crate::config::functions::{
    FunctionConfig, FunctionSpec, FunctionsConfig, Limits, LimitsConfig,
};
pub use arena::{Ring, RingCounts};
pub use compile::{ArtifactSource, LoadedFunction};
pub use node::{FunctionNode, LoadFailure};
pub use outcome::{InvokeError, Status};
pub use per_shard::{FunctionShard, Lookup};
