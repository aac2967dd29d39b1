//! DNS messages for the tests, on the `domain` crate: one query builder
//! and the readers of an answer (header, A records).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::str::FromStr;

use domain::base::iana::Rcode;
use domain::base::{Message, MessageBuilder, Name, Rtype};
use domain::rdata::A;

pub const QTYPE_A: u16 = 1;

/// A query for `name` (absolute or not) of type `qtype` with RD set, and
/// with `edns` an OPT record advertising 1232 bytes.
pub fn query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(id);
    b.header_mut().set_rd(true);
    let mut q = b.question();
    let name = Name::<Vec<u8>>::from_str(name).expect("a valid name");
    q.push((name, Rtype::from_int(qtype)))
        .expect("question fits");
    if !edns {
        return q.into_message().into_octets();
    }
    let mut a = q.additional();
    a.opt(|opt| {
        opt.set_udp_payload_size(1232);
        Ok(())
    })
    .expect("OPT fits");
    a.into_message().into_octets()
}

/// The A query for `upf.svc.example.` most tests ask.
pub fn upf_query(id: u16) -> Vec<u8> {
    query(id, "upf.svc.example.", QTYPE_A, false)
}

/// The A records of an answer.
pub fn a_records(resp: &[u8]) -> BTreeSet<Ipv4Addr> {
    let msg = Message::from_octets(resp.to_vec()).expect("a DNS message");
    msg.answer()
        .expect("answer section")
        .limit_to::<A>()
        .map(|r| r.expect("A record").data().addr())
        .collect()
}

/// `(id, qr, rcode)` of a message.
pub fn header(resp: &[u8]) -> (u16, bool, Rcode) {
    let msg = Message::from_octets(resp.to_vec()).expect("a DNS message");
    let h = msg.header();
    (h.id(), h.qr(), h.rcode())
}
