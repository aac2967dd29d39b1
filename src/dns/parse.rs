//! Query parsing: bytes -> [`Query`] or the reason it cannot be answered.
//!
//! Owns the DNS wire-format rules for queries. A hand-written fast path
//! handles the common query (header, one uncompressed question, optionally
//! one OPT record at the end); any other additional section (several
//! records, TSIG, compressed owners, ...) is walked with NLnet Labs'
//! `domain` crate. Both paths share the EDNS option checks.
//!
//! Strictness (anything else is FORMERR): QDCOUNT = 1; ANCOUNT = NSCOUNT = 0;
//! the question name uses no compression pointers, has labels of at most 63
//! bytes and at most 255 bytes in all; exactly the records the counts
//! announce and no trailing bytes; at most one OPT, owned by the root;
//! well-formed EDNS options; at most one, well-formed, Client Subnet option
//! (RFC 7871 §6: family 1 or 2, prefix length within the family, address
//! exactly as long as the prefix needs and zero past it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use domain::dep::octseq::parse::Parser;

use crate::addrmap::names::{copy_fold_hash, MAX_NAME, NAME_BUF};
use crate::addrmap::records::OPT;

use super::DropReason;

pub const NOERROR: u8 = 0;
pub const FORMERR: u8 = 1;
pub const SERVFAIL: u8 = 2;
pub const NXDOMAIN: u8 = 3;
pub const NOTIMP: u8 = 4;
pub const REFUSED: u8 = 5;
/// Extended RCODE 16 (upper 8 bits in OPT, lower 4 in the header).
pub const BADVERS: u8 = 16;

const OPT_ECS: u16 = 8;

/// A validated EDNS Client Subnet option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecs {
    /// 1 = IPv4, 2 = IPv6.
    pub family: u16,
    pub source_len: u8,
    /// Address with bits past `source_len` zero.
    pub addr: IpAddr,
    /// Address bytes as sent (`ceil(source_len / 8)` of them).
    pub addr_len: u8,
}

/// EDNS(0) facts of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size as sent (not yet clamped).
    pub udp_size: u16,
    pub version: u8,
    /// DNSSEC OK bit (copied to the response, RFC 3225).
    pub dnssec_ok: bool,
    pub ecs: Option<Ecs>,
}

/// A parsed query. The question is `bytes[12..question_end]`; the
/// lowercase question name is in the buffer given to [`parse`].
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub id: u16,
    /// Bytes 2 and 3 of the header as sent.
    pub flags: [u8; 2],
    /// Wire length of the question name (including the root label).
    pub qname_len: usize,
    /// Hash of the lowercase question name.
    pub hash: u64,
    /// Offset in the message where the question ends.
    pub question_end: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

/// Why a query is answered with an error, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Drop(DropReason),
    /// Respond with `rcode`; echo the question when `question_end > 12`.
    Error {
        rcode: u8,
        question_end: usize,
    },
}

#[inline]
fn formerr(question_end: usize) -> Reject {
    Reject::Error {
        rcode: FORMERR,
        question_end,
    }
}

/// Parse a query; the lowercase question name goes to `lname` (zero
/// padded) and its hash to `Query::hash`. Never panics; every index is
/// checked.
#[inline]
pub fn parse(msg: &[u8], lname: &mut [u8; NAME_BUF]) -> Result<Query, Reject> {
    if msg.len() < 12 {
        return Err(Reject::Drop(DropReason::TooShort));
    }
    let flags = [msg[2], msg[3]];
    if flags[0] & 0x80 != 0 {
        return Err(Reject::Drop(DropReason::NotAQuery));
    }
    if (flags[0] >> 3) & 0x0f != 0 {
        return Err(Reject::Error {
            rcode: NOTIMP,
            question_end: 0,
        });
    }
    let count = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 {
        return Err(formerr(0));
    }

    // Question name: walk the label lengths (no pointers, <= 63 each,
    // <= 255 in all), then copy and lowercase it in one go.
    let mut pos = 12usize;
    loop {
        let Some(&len) = msg.get(pos) else {
            return Err(formerr(0));
        };
        if len > 63 {
            // 0xC0 pointer or the reserved 0x40/0x80 label types
            return Err(formerr(0));
        }
        pos += len as usize + 1;
        if pos - 12 > MAX_NAME {
            return Err(formerr(0));
        }
        if len == 0 {
            break;
        }
    }
    let n = pos - 12;
    let Some(name) = msg.get(12..) else {
        return Err(formerr(0));
    };
    let hash = copy_fold_hash(name, n, lname);
    let Some(tc) = msg.get(pos..pos + 4) else {
        return Err(formerr(0));
    };
    let qtype = u16::from_be_bytes([tc[0], tc[1]]);
    let qclass = u16::from_be_bytes([tc[2], tc[3]]);
    let question_end = pos + 4;
    let mut q = Query {
        id: u16::from_be_bytes([msg[0], msg[1]]),
        flags,
        qname_len: n,
        hash,
        question_end,
        qtype,
        qclass,
        edns: None,
    };
    if an != 0 || ns != 0 {
        return Err(formerr(question_end));
    }

    let rest = &msg[question_end..];
    match ar {
        0 if rest.is_empty() => Ok(q),
        0 => Err(formerr(question_end)),
        // The common case: a root-owned OPT that ends the message.
        1 if rest.len() >= 11 && rest[0] == 0 && u16::from_be_bytes([rest[1], rest[2]]) == OPT => {
            let rdlen = u16::from_be_bytes([rest[9], rest[10]]) as usize;
            if rest.len() != 11 + rdlen {
                return Err(formerr(question_end));
            }
            q.edns = Some(
                edns(
                    u16::from_be_bytes([rest[3], rest[4]]),
                    [rest[5], rest[6], rest[7], rest[8]],
                    &rest[11..],
                )
                .ok_or(formerr(question_end))?,
            );
            Ok(q)
        }
        _ => {
            q.edns = additional_slow(msg, question_end, ar).ok_or(formerr(question_end))?;
            Ok(q)
        }
    }
}

/// Most additional records a query may carry (OPT, TSIG, SIG(0), cookies
/// ride in OPT); more is FORMERR. Bounds the records parsed per input.
pub const MAX_ADDITIONAL: u16 = 8;

/// Walk an additional section that is not a lone root OPT, with `domain`'s
/// parser. `None` = malformed. `Some(edns)` otherwise (non-OPT records are
/// ignored).
///
/// Owner names are *skipped*, never decompressed: a compression pointer
/// ends the name and is only checked to point backwards, before the
/// owner itself (RFC 1035 §4.1.4 "a prior occurrence"). Following it would
/// let a crafted query chain thousands of pointer hops per record (issue
/// 16: ~75k hops in one 4 KB datagram). The work per record is therefore
/// linear in its own bytes, and at most [`MAX_ADDITIONAL`] records are
/// parsed.
fn additional_slow(msg: &[u8], start: usize, count: u16) -> Option<Option<Edns>> {
    if count > MAX_ADDITIONAL {
        return None;
    }
    let mut parser = Parser::from_ref(msg);
    parser.seek(start).ok()?;
    let mut found: Option<Edns> = None;
    for _ in 0..count {
        let owner_start = parser.pos();
        let owner_len = skip_owner(msg, owner_start)?;
        parser.advance(owner_len).ok()?;
        let owner = &msg[owner_start..owner_start + owner_len];
        let rtype = parser.parse_u16_be().ok()?;
        let class = parser.parse_u16_be().ok()?;
        let ttl = parser.parse_u32_be().ok()?.to_be_bytes();
        let rdlen = parser.parse_u16_be().ok()?;
        let data_start = parser.pos();
        parser.advance(rdlen as usize).ok()?;
        if rtype != OPT {
            continue;
        }
        // RFC 6891 §6.1.2: the OPT owner is the root, one zero byte.
        if found.is_some() || owner != [0] {
            return None;
        }
        let rdata = msg.get(data_start..parser.pos())?;
        found = Some(edns(class, ttl, rdata)?);
    }
    if parser.remaining() != 0 {
        return None;
    }
    Some(found)
}

/// Wire length of the record owner name at `start`, without following
/// compression pointers: labels until the root label or a pointer, at most
/// 255 bytes of labels; a pointer must point before `start`. `None` =
/// malformed (reserved label types, truncated, too long, forward pointer).
fn skip_owner(msg: &[u8], start: usize) -> Option<usize> {
    let mut pos = start;
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1 - start),
            1..=63 => {
                pos += len as usize + 1;
                if pos - start > MAX_NAME {
                    return None;
                }
            }
            0xc0..=0xff => {
                let lo = *msg.get(pos + 1)?;
                let target = u16::from_be_bytes([len & 0x3f, lo]) as usize;
                return (target < start).then_some(pos + 2 - start);
            }
            _ => return None,
        }
    }
}

/// EDNS facts from OPT's CLASS, TTL and RDATA; `None` if malformed.
/// (Inlined: returned through memory it cost a store-forwarding stall.)
#[inline(always)]
fn edns(class: u16, ttl: [u8; 4], mut opts: &[u8]) -> Option<Edns> {
    let mut e = Edns {
        udp_size: class,
        version: ttl[1],
        dnssec_ok: ttl[2] & 0x80 != 0,
        ecs: None,
    };
    while !opts.is_empty() {
        let hdr = opts.get(..4)?;
        let code = u16::from_be_bytes([hdr[0], hdr[1]]);
        let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        let data = opts.get(4..4 + len)?;
        if code == OPT_ECS {
            if e.ecs.is_some() {
                return None;
            }
            e.ecs = Some(ecs(data)?);
        }
        opts = &opts[4 + len..];
    }
    Some(e)
}

/// RFC 7871 §6 Client Subnet option data; `None` if malformed. The scope
/// sent in a query is ignored (it must be 0; RFC 7871 names no error).
fn ecs(data: &[u8]) -> Option<Ecs> {
    let hdr = data.get(..4)?;
    let family = u16::from_be_bytes([hdr[0], hdr[1]]);
    let source_len = hdr[2];
    let addr_bytes = &data[4..];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source_len > max || addr_bytes.len() != (source_len as usize).div_ceil(8) {
        return None;
    }
    let mut buf = [0u8; 16];
    buf[..addr_bytes.len()].copy_from_slice(addr_bytes);
    // No bits past the source prefix length.
    if source_len % 8 != 0 {
        let last = addr_bytes[addr_bytes.len() - 1];
        if last & (0xffu8 >> (source_len % 8)) != 0 {
            return None;
        }
    }
    let addr = if family == 1 {
        IpAddr::V4(Ipv4Addr::new(buf[0], buf[1], buf[2], buf[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(buf))
    };
    Some(Ecs {
        family,
        source_len,
        addr,
        addr_len: addr_bytes.len() as u8,
    })
}
