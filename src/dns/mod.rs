//! Sans-IO DNS address service: query bytes + who asked -> answer bytes.
//!
//! INTERFACE CONTRACT (owned by the dns/addrmap helper; the runtime relies on
//! exactly these items):
//! - `answer(map: &AddressMap, query: &[u8], client: IpAddr, transport: Transport, out: &mut Vec<u8>) -> Outcome`
//!   clears `out` and writes the response there (reusing its capacity).
//! - `Outcome::{Answered { rcode, truncated }, Dropped(DropReason)}`

use std::net::IpAddr;

use crate::addrmap::AddressMap;

/// How the query arrived; decides size limits and truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Why a datagram got no response at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than a DNS header: nothing to echo an ID into.
    TooShort,
    /// QR bit set: a response, never answered (avoids reflection loops).
    NotAQuery,
}

/// What `answer` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered { rcode: u8, truncated: bool },
    Dropped(DropReason),
}

/// Answer one DNS query. Never panics on any input.
pub fn answer(
    _map: &AddressMap,
    query: &[u8],
    _client: IpAddr,
    _transport: Transport,
    out: &mut Vec<u8>,
) -> Outcome {
    out.clear();
    if query.len() < 12 {
        return Outcome::Dropped(DropReason::TooShort);
    }
    Outcome::Dropped(DropReason::NotAQuery)
}
