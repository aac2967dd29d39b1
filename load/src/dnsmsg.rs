//! DNS queries for the load generator: query templates built once from the
//! query file (header, question, optional EDNS OPT), the 16-bit id patched
//! per send, and replies judged by id, QR bit, question echo and rcode.

use super::codec::{Outcome, UdpCodec};
use super::queryfile::QuerySpec;

/// Query options, as dnsperf's `-e` (EDNS), `-D` (DO bit) and RD default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsOptions {
    pub recursion_desired: bool,
    /// Add an OPT record advertising this UDP payload size.
    pub edns_payload: Option<u16>,
    pub dnssec_ok: bool,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            recursion_desired: true,
            edns_payload: None,
            dnssec_ok: false,
        }
    }
}

/// One prebuilt query (id bytes zero) and where its question ends.
#[derive(Debug, Clone)]
struct Template {
    wire: Vec<u8>,
    question_end: usize,
}

/// The DNS codec: every query of the file prebuilt.
#[derive(Debug, Clone)]
pub struct DnsCodec {
    templates: Vec<Template>,
    max_len: usize,
}

/// Name of an rcode as the summary prints it.
pub fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => "RCODE-other",
    }
}

/// Error kind for a reply with the TC bit set.
pub const TRUNCATED: &str = "truncated (TC)";
/// Error kind for a reply whose question is not the one asked.
pub const QUESTION_MISMATCH: &str = "question mismatch";

/// Build the query bytes for one spec with id 0.
pub fn build_query(spec: &QuerySpec, opts: &DnsOptions) -> Vec<u8> {
    let mut w = Vec::with_capacity(12 + spec.name_wire.len() + 4 + 11);
    w.extend_from_slice(&[0, 0]);
    w.push(if opts.recursion_desired { 0x01 } else { 0x00 });
    w.push(0);
    w.extend_from_slice(&1u16.to_be_bytes());
    w.extend_from_slice(&[0, 0, 0, 0]);
    w.extend_from_slice(&(opts.edns_payload.is_some() as u16).to_be_bytes());
    w.extend_from_slice(&spec.name_wire);
    w.extend_from_slice(&spec.qtype.to_be_bytes());
    w.extend_from_slice(&1u16.to_be_bytes());
    if let Some(payload) = opts.edns_payload {
        w.push(0);
        w.extend_from_slice(&41u16.to_be_bytes());
        w.extend_from_slice(&payload.to_be_bytes());
        w.extend_from_slice(&[0, 0, if opts.dnssec_ok { 0x80 } else { 0 }, 0]);
        w.extend_from_slice(&[0, 0]);
    }
    w
}

impl DnsCodec {
    pub fn new(specs: &[QuerySpec], opts: &DnsOptions) -> DnsCodec {
        let templates: Vec<Template> = specs
            .iter()
            .map(|s| Template {
                wire: build_query(s, opts),
                question_end: 12 + s.name_wire.len() + 4,
            })
            .collect();
        let max_len = templates.iter().map(|t| t.wire.len()).max().unwrap_or(0);
        DnsCodec { templates, max_len }
    }
}

impl UdpCodec for DnsCodec {
    fn id_space(&self) -> u32 {
        1 << 16
    }

    fn items(&self) -> usize {
        self.templates.len()
    }

    fn max_request_len(&self) -> usize {
        self.max_len
    }

    fn encode(&self, item: usize, id: u32, buf: &mut [u8]) -> usize {
        let t = &self.templates[item].wire;
        buf[..t.len()].copy_from_slice(t);
        buf[..2].copy_from_slice(&(id as u16).to_be_bytes());
        t.len()
    }

    fn reply_id(&self, reply: &[u8]) -> Option<u32> {
        if reply.len() < 12 || reply[2] & 0x80 == 0 {
            return None;
        }
        Some(u16::from_be_bytes([reply[0], reply[1]]) as u32)
    }

    fn classify(&self, item: usize, reply: &[u8]) -> Outcome {
        let Some(t) = self.templates.get(item) else {
            return Outcome::Error(QUESTION_MISMATCH);
        };
        let qdcount = u16::from_be_bytes([reply[4], reply[5]]);
        // Replies without a question (some FORMERR/NOTIMP) are judged by rcode.
        if qdcount != 0 {
            let q = &t.wire[12..t.question_end];
            let echoed = reply.get(12..t.question_end);
            if qdcount != 1 || !echoed.is_some_and(|e| e.eq_ignore_ascii_case(q)) {
                return Outcome::Error(QUESTION_MISMATCH);
            }
        }
        let rcode = reply[3] & 0x0f;
        if rcode != 0 && rcode != 3 {
            return Outcome::Error(rcode_name(rcode));
        }
        if reply[2] & 0x02 != 0 {
            return Outcome::Error(TRUNCATED);
        }
        Outcome::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queryfile;

    fn codec(opts: DnsOptions) -> DnsCodec {
        let specs = queryfile::parse("upf.svc.example. A\nsmf.svc.example. AAAA\n").unwrap();
        DnsCodec::new(&specs, &opts)
    }

    /// A reply as a server builds it: the query with QR set, rcode, and an
    /// answer appended.
    fn reply_to(query: &[u8], rcode: u8, tc: bool) -> Vec<u8> {
        let mut r = query.to_vec();
        r[2] |= 0x80 | if tc { 0x02 } else { 0 };
        r[3] = (r[3] & 0xf0) | rcode;
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 1, 5]);
        r
    }

    #[test]
    fn query_bytes_are_well_formed() {
        let c = codec(DnsOptions::default());
        let mut buf = [0u8; 512];
        let n = c.encode(0, 0xbeef, &mut buf);
        assert_eq!(
            &buf[..n],
            b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03upf\x03svc\x07example\x00\x00\x01\x00\x01"
        );
        let c = codec(DnsOptions {
            recursion_desired: false,
            edns_payload: Some(1232),
            dnssec_ok: true,
        });
        let n = c.encode(1, 7, &mut buf);
        assert_eq!(&buf[..4], b"\x00\x07\x00\x00");
        assert_eq!(&buf[10..12], b"\x00\x01", "ARCOUNT 1 with EDNS");
        assert_eq!(
            &buf[n - 11..n],
            b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"
        );
        assert_eq!(c.max_request_len(), n);
    }

    #[test]
    fn replies_are_matched_and_judged() {
        let c = codec(DnsOptions::default());
        let mut q = [0u8; 512];
        let n = c.encode(0, 42, &mut q);
        assert_eq!(c.reply_id(&q[..n]), None, "a query is not a reply");
        let ok = reply_to(&q[..n], 0, false);
        assert_eq!(c.reply_id(&ok), Some(42));
        assert_eq!(c.classify(0, &ok), Outcome::Ok);
        assert_eq!(c.classify(0, &reply_to(&q[..n], 3, false)), Outcome::Ok);
        assert_eq!(
            c.classify(0, &reply_to(&q[..n], 2, false)),
            Outcome::Error("SERVFAIL")
        );
        assert_eq!(
            c.classify(0, &reply_to(&q[..n], 5, false)),
            Outcome::Error("REFUSED")
        );
        assert_eq!(
            c.classify(0, &reply_to(&q[..n], 0, true)),
            Outcome::Error(TRUNCATED)
        );
        // Answer to the other question in the file.
        assert_eq!(c.classify(1, &ok), Outcome::Error(QUESTION_MISMATCH));
        // Case of the echoed name does not matter.
        let mut upper = ok.clone();
        upper[13..16].copy_from_slice(b"UPF");
        assert_eq!(c.classify(0, &upper), Outcome::Ok);
        // Header-only FORMERR without a question.
        let formerr = [0, 42, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(c.classify(0, &formerr), Outcome::Error("FORMERR"));
        // Truncated reply claiming a question.
        assert_eq!(c.classify(0, &ok[..20]), Outcome::Error(QUESTION_MISMATCH));
    }

    #[test]
    fn short_or_garbage_never_panics() {
        let c = codec(DnsOptions::default());
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 0x81) as u8).collect();
            if c.reply_id(&junk).is_some() {
                let _ = c.classify(0, &junk);
                let _ = c.classify(99, &junk);
            }
        }
    }
}
