//! Sans-IO DNS address service: query bytes + who asked -> answer bytes.
//!
//! The entry point:
//! - `answer(map: &AddressMap, query: &[u8], client: IpAddr, transport: Transport, out: &mut Vec<u8>) -> Outcome`
//!   clears `out` and writes the response there (reusing its capacity).
//! - `Outcome::{Answered { rcode, truncated }, Dropped(DropReason)}`
//!
//! # Behaviour
//! - Dropped (no response): shorter than 12 bytes; QR set (a response).
//! - NOTIMP: opcode other than QUERY (header only, no question).
//! - FORMERR: see [`parse`] for what is malformed. The question is echoed
//!   when it was readable; no OPT is sent back with a FORMERR.
//! - REFUSED: class other than IN (CH, ANY, ...), a name outside every
//!   zone, or a zone transfer (AXFR/IXFR): none is offered.
//! - NOERROR with records, NODATA (NOERROR, no answer, zone SOA in authority
//!   with TTL min(SOA TTL, minimum)) and NXDOMAIN (same authority) per the
//!   address map's view rules ([`crate::addrmap`]).
//! - qtype ANY: every record the name has for that client (no RFC 8482
//!   HINFO); over UDP it may well be truncated, then TCP gets it all.
//! - Header: ID, opcode, RD and CD copied; QR set; AA set on NOERROR and
//!   NXDOMAIN answers from our zones, clear on errors; RA clear.
//! - The question is echoed byte for byte (case as sent); matching is
//!   ASCII case-insensitive.
//! - EDNS(0): a query with OPT gets OPT back, advertising
//!   `dns.max_udp_payload`; DO copied. The UDP size limit is the requestor's
//!   payload size clamped to 512..=`dns.max_udp_payload` (512 without OPT);
//!   TCP allows 65535. An EDNS version other than 0 gets BADVERS
//!   (`Outcome` rcode 16). A response over the limit is sent with TC set,
//!   the question only, and OPT if the query had one.
//! - EDNS Client Subnet (RFC 7871): when the client address is inside
//!   `dns.trusted_resolvers` and the query has ECS, the view is the one of
//!   the ECS subnet's first address (a source of 0 means "do not use my
//!   address": only /0 prefixes or `default`, scope 0), and the answer
//!   echoes the option with SCOPE = the shortest prefix of that address
//!   whose every address gets the same view
//!   ([`AddressMap::select_ecs`](crate::addrmap::AddressMap)): the answer
//!   holds for the whole scope (RFC 7871 §7.2.1). It is longer than the
//!   source when other views' prefixes lie inside the source subnet
//!   (10.0.0.0/12 holding views' 10.1.0.0/16 and 10.2.0.0/16 gets /16).
//!   From an untrusted client ECS is ignored for view selection and echoed
//!   with SCOPE 0 (RFC 7871 §7.2.1: "not used for this answer").

pub mod parse;
pub mod rrl;

use std::net::IpAddr;

use crate::addrmap::names::{hash, NAME_BUF};
use crate::addrmap::records::{AXFR, CLASS_IN, IXFR};
use crate::addrmap::{AddressMap, RrSet, NONE};

use self::parse::{Query, Reject, BADVERS, NOERROR, NXDOMAIN, REFUSED, SERVFAIL};

pub use self::parse::{Ecs, Edns};

/// How the query arrived; decides size limits and truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp = 0,
    Tcp = 1,
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
///
/// `rcode` is the full (extended) response code: 0 NOERROR, 1 FORMERR,
/// 3 NXDOMAIN, 4 NOTIMP, 5 REFUSED, 16 BADVERS. `truncated` is the TC bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered { rcode: u8, truncated: bool },
    Dropped(DropReason),
}

/// Response codes `Outcome::Answered::rcode` can carry.
pub mod rcode {
    pub use super::parse::{BADVERS, FORMERR, NOERROR, NOTIMP, NXDOMAIN, REFUSED, SERVFAIL};
}

const OPT_HEADER_LEN: usize = 11;

/// What every response to a parsed query needs.
struct Ctx<'a> {
    query: &'a [u8],
    question: &'a [u8],
    q: &'a Query,
    /// Payload size our OPT advertises.
    payload: u16,
    /// ECS option to echo, with the scope to put in it.
    ecs: Option<(Ecs, u8)>,
}

#[inline]
fn answered(rcode: u8) -> Outcome {
    Outcome::Answered {
        rcode,
        truncated: false,
    }
}

/// Answer one DNS query. Never panics on any input.
pub fn answer(
    map: &AddressMap,
    query: &[u8],
    client: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Outcome {
    answer_with_client_view(map, query, client, transport, out).0
}

/// The view of the client's address as [`answer`] looked it up
/// ([`crate::addrmap::ViewMatch::view`]: `Some(None)` = no view covers
/// it); `None` when the answer did not need it, or an ECS subnet chose the
/// view instead.
pub type ClientView = Option<Option<usize>>;

/// [`answer`], plus the view of the client's address when the answer
/// looked it up, so a caller counting answers by view (the shard's
/// metrics) need not look the prefix up a second time.
pub fn answer_with_client_view(
    map: &AddressMap,
    query: &[u8],
    client: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> (Outcome, ClientView) {
    let mut client_view = None;
    let outcome = answer_into(map, query, client, transport, out, &mut client_view);
    (outcome, client_view.map(|v| map.view_index_of(v)))
}

fn answer_into(
    map: &AddressMap,
    query: &[u8],
    client: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
    client_view: &mut Option<u32>,
) -> Outcome {
    out.clear();
    let mut lname_buf = [0u8; NAME_BUF];
    let q = match parse::parse(query, &mut lname_buf) {
        Ok(q) => q,
        Err(Reject::Drop(r)) => return Outcome::Dropped(r),
        Err(Reject::Error {
            rcode,
            question_end,
        }) => {
            let question = query.get(12..question_end).unwrap_or(&[]);
            let qd = !question.is_empty() as u16;
            header(out, query, rcode, false, false, [qd, 0, 0, 0]);
            out.extend_from_slice(question);
            return answered(rcode);
        }
    };
    let mut ctx = Ctx {
        query,
        question: query.get(12..q.question_end).unwrap_or(&[]),
        q: &q,
        payload: map.max_udp_payload,
        ecs: None,
    };

    // EDNS: version, then ECS (which may pick the view).
    let mut selected: Option<u32> = None;
    if let Some(e) = q.edns {
        if e.version != 0 {
            respond_bare(&ctx, out, BADVERS);
            return answered(BADVERS);
        }
        if let Some(ecs) = e.ecs {
            if map.is_trusted(client) {
                let (view, scope) = map.select_ecs(ecs.addr, ecs.source_len);
                ctx.ecs = Some((ecs, scope));
                selected = Some(view);
            } else {
                ctx.ecs = Some((ecs, 0));
            }
        }
    }

    if q.qclass != CLASS_IN || q.qtype == AXFR || q.qtype == IXFR {
        respond_bare(&ctx, out, REFUSED);
        return answered(REFUSED);
    }

    // Name -> zone and (answer RRset | NODATA | NXDOMAIN); the view is
    // looked up only when the answer depends on it.
    let lname = lname_buf.get(..q.qname_len).unwrap_or(&[]);
    let mut view = || {
        *selected.get_or_insert_with(|| {
            let v = map.select(client, None).view;
            *client_view = Some(v);
            v
        })
    };
    let (zone, found): (u32, Result<Option<RrSet>, ()>) = match map.entry(lname, q.hash) {
        Some(e) => {
            let table = if e.overrides.is_empty() {
                e.base
            } else {
                let v = view();
                match e.overrides.binary_search_by_key(&v, |o| o.0) {
                    Ok(i) => e.overrides[i].1,
                    Err(_) => e.base,
                }
            };
            if table != NONE {
                (e.zone, Ok(map.rrset(table, q.qtype)))
            } else if e.visible_all || e.visible.binary_search(&view()).is_ok() {
                (e.zone, Ok(None))
            } else {
                (e.zone, Err(()))
            }
        }
        None => match enclosing_zone(map, lname) {
            Some(z) => (z, Err(())),
            None => {
                respond_bare(&ctx, out, REFUSED);
                return answered(REFUSED);
            }
        },
    };

    let limit = match (transport, q.edns) {
        (Transport::Tcp, _) => 65535,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(e)) => e.udp_size.clamp(512, map.max_udp_payload.max(512)) as usize,
    };
    let opt_len = q.edns.map_or(0, |_| {
        OPT_HEADER_LEN + ctx.ecs.map_or(0, |(e, _)| 8 + e.addr_len as usize)
    });
    let edns = q.edns.is_some() as u16;

    if let Ok(Some(set)) = found {
        let body = map.wire(set);
        let size = 12 + ctx.question.len() + body.len() + opt_len;
        if size > limit {
            return truncated(&ctx, out, NOERROR);
        }
        out.reserve(size);
        header(out, query, NOERROR, true, false, [1, set.count, 0, edns]);
        out.extend_from_slice(ctx.question);
        out.extend_from_slice(body);
        push_opt(out, &q, ctx.payload, NOERROR, ctx.ecs);
        return answered(NOERROR);
    }

    // NODATA or NXDOMAIN: the zone's SOA in authority.
    let rcode = if found.is_ok() { NOERROR } else { NXDOMAIN };
    let Some(z) = map.zones.get(zone as usize) else {
        respond_bare(&ctx, out, SERVFAIL);
        return answered(SERVFAIL);
    };
    let size = 12 + ctx.question.len() + 2 + z.neg_soa.len() + opt_len;
    if size > limit {
        return truncated(&ctx, out, rcode);
    }
    out.reserve(size);
    header(out, query, rcode, true, false, [1, 0, 1, edns]);
    out.extend_from_slice(ctx.question);
    // Owner: a pointer to where the apex starts inside the question name.
    let ptr = 12 + q.qname_len.saturating_sub(z.apex.len());
    out.extend_from_slice(&(0xC000 | ptr as u16).to_be_bytes());
    out.extend_from_slice(&z.neg_soa);
    push_opt(out, &q, ctx.payload, rcode, ctx.ecs);
    answered(rcode)
}

/// Zone of a name the map does not know: the longest known ancestor's.
fn enclosing_zone(map: &AddressMap, lname: &[u8]) -> Option<u32> {
    let mut i = 0usize;
    while let Some(&l) = lname.get(i) {
        if l == 0 {
            return None;
        }
        i += l as usize + 1;
        let suffix = lname.get(i..)?;
        if let Some(e) = map.entry(suffix, hash(suffix)) {
            return Some(e.zone);
        }
    }
    None
}

/// Header: ID, opcode, RD, CD copied from the query.
#[inline(always)]
fn header(out: &mut Vec<u8>, query: &[u8], rcode: u8, aa: bool, tc: bool, counts: [u16; 4]) {
    let (id0, id1, f0, f1) = (query[0], query[1], query[2], query[3]);
    let b2 = 0x80 | (f0 & 0x78) | ((aa as u8) << 2) | ((tc as u8) << 1) | (f0 & 0x01);
    let b3 = (f1 & 0x10) | (rcode & 0x0f);
    let [c0, c1, c2, c3] = counts;
    let [a, b] = c0.to_be_bytes();
    let [c, d] = c1.to_be_bytes();
    let [e, f] = c2.to_be_bytes();
    let [g, h] = c3.to_be_bytes();
    out.extend_from_slice(&[id0, id1, b2, b3, a, b, c, d, e, f, g, h]);
}

/// OPT record of the response, when the query had one: advertised payload
/// `payload`, extended RCODE bits, DO copied, ECS echoed with its scope.
#[inline(always)]
fn push_opt(out: &mut Vec<u8>, q: &Query, payload: u16, rcode: u8, ecs: Option<(Ecs, u8)>) {
    let Some(e) = q.edns else { return };
    let [p0, p1] = payload.to_be_bytes();
    let rdlen = ecs.map_or(0, |(e, _)| 8 + e.addr_len as u16);
    let [r0, r1] = rdlen.to_be_bytes();
    out.extend_from_slice(&[
        0,
        0,
        41,
        p0,
        p1,
        rcode >> 4,
        0,
        (e.dnssec_ok as u8) << 7,
        0,
        r0,
        r1,
    ]);
    if let Some((ecs, scope)) = ecs {
        let [f0, f1] = ecs.family.to_be_bytes();
        let [l0, l1] = (4 + ecs.addr_len as u16).to_be_bytes();
        out.extend_from_slice(&[0, 8, l0, l1, f0, f1, ecs.source_len, scope]);
        let mut bytes = [0u8; 16];
        match ecs.addr {
            IpAddr::V4(a) => bytes[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => bytes = a.octets(),
        }
        out.extend_from_slice(bytes.get(..ecs.addr_len as usize).unwrap_or(&[]));
    }
}

/// A response without records: header, question, OPT.
fn respond_bare(ctx: &Ctx<'_>, out: &mut Vec<u8>, rcode: u8) {
    header(
        out,
        ctx.query,
        rcode,
        false,
        false,
        [1, 0, 0, ctx.q.edns.is_some() as u16],
    );
    out.extend_from_slice(ctx.question);
    push_opt(out, ctx.q, ctx.payload, rcode, ctx.ecs);
}

/// TC response: the question and OPT only.
fn truncated(ctx: &Ctx<'_>, out: &mut Vec<u8>, rcode: u8) -> Outcome {
    out.clear();
    let aa = rcode == NOERROR || rcode == NXDOMAIN;
    header(
        out,
        ctx.query,
        rcode,
        aa,
        true,
        [1, 0, 0, ctx.q.edns.is_some() as u16],
    );
    out.extend_from_slice(ctx.question);
    push_opt(out, ctx.q, ctx.payload, rcode, ctx.ecs);
    Outcome::Answered {
        rcode,
        truncated: true,
    }
}

#[cfg(test)]
pub(crate) mod tests;
