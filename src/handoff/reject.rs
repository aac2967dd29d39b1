//! Overload answers (sans-IO) for when this shard is overloaded and its
//! alternate is down: a DNS SERVFAIL echoing the query's ID, flags and
//! question, and the text the function surfaces send with their
//! `Unavailable` status / HTTP 503.

/// Text of the function overload error.
pub const FUNCTION_OVERLOADED: &str =
    "overloaded and the hand-off alternate is down: retry in a moment";
/// `Retry-After` seconds of the HTTP 503.
pub const RETRY_AFTER_S: u32 = 1;

/// Write a SERVFAIL response to `query` into `out` (cleared). Returns false
/// (nothing to send) when the datagram is not a DNS query (too short, or a
/// response): never answer those.
pub fn dns_servfail(query: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return false;
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    // The first question, when it parses (labels, then type and class).
    let question = (qdcount >= 1)
        .then(|| question_end(query))
        .flatten()
        .map(|end| &query[12..end]);
    out.extend_from_slice(&query[..2]);
    // QR=1, opcode and RD copied, AA=0, TC=0; RA=0, RCODE=2 (SERVFAIL).
    out.push(0x80 | (query[2] & 0x79));
    out.push(2);
    out.extend_from_slice(&[0, question.is_some() as u8, 0, 0, 0, 0, 0, 0]);
    if let Some(q) = question {
        out.extend_from_slice(q);
    }
    true
}

fn question_end(q: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    let end = i + 4;
    (end <= q.len()).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> Vec<u8> {
        let mut q = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x03upf\x03svc\x07example\x00\x00\x01\x00\x01");
        q
    }

    #[test]
    fn servfail_echoes_id_rd_and_question() {
        let q = query();
        let mut out = Vec::new();
        assert!(dns_servfail(&q, &mut out));
        assert_eq!(&out[..2], &[0xAB, 0xCD]);
        assert_eq!(out[2], 0x81, "QR and RD");
        assert_eq!(out[3] & 0x0F, 2, "SERVFAIL");
        assert_eq!(&out[4..6], &[0, 1]);
        assert_eq!(&out[12..], &q[12..]);
    }

    #[test]
    fn responses_and_runts_get_nothing() {
        let mut out = Vec::new();
        let mut q = query();
        q[2] |= 0x80;
        assert!(!dns_servfail(&q, &mut out));
        assert!(!dns_servfail(&[1, 2, 3], &mut out));
        // A broken question still gets a header-only SERVFAIL.
        let mut q = query();
        q.truncate(20);
        assert!(dns_servfail(&q, &mut out));
        assert_eq!(out.len(), 12);
    }
}
