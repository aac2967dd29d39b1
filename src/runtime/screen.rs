//! The hook in front of a DNS UDP worker thread's answer path
//! (`shard::dns_worker`): a service with state of its own (the hand-off
//! gate) sees every batch and may deal with a datagram itself.

use std::net::SocketAddr;

/// Something in front of the worker's answer path with state of its own
/// (the hand-off gate, `handoff::worker`): it sees every batch and
/// may deal with a datagram itself.
pub trait Screen: Send {
    fn begin_batch(&mut self);
    /// `None`: the worker answers; `Some(send)`: the screen dealt with it
    /// (`send`: a reply was written into `out`).
    fn screen(&mut self, d: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> Option<bool>;
    /// After the batch's replies went out.
    fn end_batch(&mut self);
    /// The next datagram reached the socket at `realtime_ns` (see
    /// [`super::udp::DatagramHandler::received_at`]).
    fn received_at(&mut self, _realtime_ns: u64) {}
}
