//! The shard runtime's building blocks, below every service: the stop
//! signal, the batched UDP loop (recvmmsg/sendmmsg, GSO, coalescing, kernel
//! drop counters), bounded TCP reads, socket set-up and pinning, per-client
//! connection caps, and the screen hook of a DNS UDP worker. Nothing here
//! knows DNS answers, functions or the hand-off; the services build on it
//! and `shard` composes them.

pub mod client_cap;
pub mod coalesce;
pub mod mmsg;
pub mod screen;
pub mod sockets;
pub mod stop;
pub mod tcp;
pub mod udp;
