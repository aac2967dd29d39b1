//! What the load generator needs from a request/reply protocol carried in
//! datagrams: build request `item` with a request id into a buffer, find the
//! id in a reply, and judge a reply against the request it answers. Pure
//! functions on bytes; the DNS and function-frame codecs implement it.

/// How one reply turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A good answer (for DNS: NOERROR or NXDOMAIN, not truncated).
    Ok,
    /// An answer that reports a failure; the kind is its name in the report
    /// (`SERVFAIL`, `trap`, `http-500`, ...).
    Error(&'static str),
}

/// A datagram request/reply protocol.
pub trait UdpCodec: Send + Sync {
    /// Request ids are `0..id_space()`; each socket has its own id space.
    fn id_space(&self) -> u32;
    /// Number of distinct requests (query-file lines, payloads); the load
    /// cycles through them.
    fn items(&self) -> usize;
    /// Largest encoded request, bytes.
    fn max_request_len(&self) -> usize;
    /// Write request `item` (< `items()`) carrying `id` into `buf` (at least
    /// `max_request_len()` long); returns its length.
    fn encode(&self, item: usize, id: u32, buf: &mut [u8]) -> usize;
    /// The request id a reply carries, or `None` when the datagram is not a
    /// reply of this protocol at all.
    fn reply_id(&self, reply: &[u8]) -> Option<u32>;
    /// Judge a reply already matched by id to request `item`.
    fn classify(&self, item: usize, reply: &[u8]) -> Outcome;
}
