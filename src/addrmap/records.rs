//! Record types the address map serves and their RDATA: parsing the
//! configuration's presentation text (`10.0.1.5`, `10 10 8805 upf.svc.`, ...)
//! into wire-format RDATA, and encoding whole resource records.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::names::parse_name;

pub const A: u16 = 1;
pub const NS: u16 = 2;
pub const SOA: u16 = 6;
pub const TXT: u16 = 16;
pub const AAAA: u16 = 28;
pub const SRV: u16 = 33;
pub const OPT: u16 = 41;
pub const IXFR: u16 = 251;
pub const AXFR: u16 = 252;
pub const ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

/// Largest TTL RFC 2181 §8 allows.
pub const MAX_TTL: u32 = 0x7fff_ffff;

/// Mnemonic of a type code, for messages.
pub fn type_name(t: u16) -> String {
    match t {
        A => "A".into(),
        NS => "NS".into(),
        SOA => "SOA".into(),
        TXT => "TXT".into(),
        AAAA => "AAAA".into(),
        SRV => "SRV".into(),
        _ => format!("TYPE{t}"),
    }
}

/// The configurable record types (case-insensitive).
pub fn parse_type(text: &str) -> Result<u16, String> {
    match text.trim().to_ascii_uppercase().as_str() {
        "A" => Ok(A),
        "AAAA" => Ok(AAAA),
        "SRV" => Ok(SRV),
        "TXT" => Ok(TXT),
        _ => Err(format!(
            "record type `{text}` is not supported: use A, AAAA, SRV or TXT"
        )),
    }
}

/// RDATA of a record of type `rtype` from its configured `data`.
pub fn parse_rdata(rtype: u16, data: &str) -> Result<Vec<u8>, String> {
    match rtype {
        A => data
            .trim()
            .parse::<Ipv4Addr>()
            .map(|a| a.octets().to_vec())
            .map_err(|_| {
                format!("`{data}` is not an IPv4 address (A record data is like `10.0.1.5`)")
            }),
        AAAA => data
            .trim()
            .parse::<Ipv6Addr>()
            .map(|a| a.octets().to_vec())
            .map_err(|_| {
                format!("`{data}` is not an IPv6 address (AAAA record data is like `fd00::5`)")
            }),
        SRV => parse_srv(data),
        TXT => Ok(txt_rdata(data.as_bytes())),
        _ => Err(format!(
            "record type {} cannot be configured",
            type_name(rtype)
        )),
    }
}

fn parse_srv(data: &str) -> Result<Vec<u8>, String> {
    let usage =
        "SRV record data is `priority weight port target.`, e.g. `10 10 8805 upf.svc.example.`";
    let parts: Vec<&str> = data.split_whitespace().collect();
    if parts.len() != 4 {
        return Err(format!("`{data}`: {usage}"));
    }
    let mut out = Vec::with_capacity(6 + parts[3].len() + 2);
    for (what, p) in ["priority", "weight", "port"].iter().zip(&parts[..3]) {
        let v: u16 = p.parse().map_err(|_| {
            format!("`{data}`: {what} `{p}` must be a number from 0 to 65535; {usage}")
        })?;
        out.extend_from_slice(&v.to_be_bytes());
    }
    let target = parse_name(parts[3]).map_err(|e| format!("SRV target: {e}"))?;
    out.extend_from_slice(&target);
    Ok(out)
}

/// TXT RDATA: the text split into character-strings of at most 255 bytes
/// (an empty text is one empty string).
pub fn txt_rdata(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 255 + 1);
    if text.is_empty() {
        out.push(0);
    }
    for chunk in text.chunks(255) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    out
}

/// SOA RDATA.
pub fn soa_rdata(mname: &[u8], rname: &[u8], serial: u32, times: [u32; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mname.len() + rname.len() + 20);
    out.extend_from_slice(mname);
    out.extend_from_slice(rname);
    out.extend_from_slice(&serial.to_be_bytes());
    for t in times {
        out.extend_from_slice(&t.to_be_bytes());
    }
    out
}

/// Append the part of a resource record after its owner name:
/// TYPE, CLASS IN, TTL, RDLENGTH, RDATA.
pub fn push_rr_tail(out: &mut Vec<u8>, rtype: u16, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        assert_eq!(parse_type("a"), Ok(A));
        assert_eq!(parse_type("Aaaa"), Ok(AAAA));
        assert_eq!(parse_type("SRV"), Ok(SRV));
        assert_eq!(parse_type("txt"), Ok(TXT));
        assert!(parse_type("MX")
            .unwrap_err()
            .contains("A, AAAA, SRV or TXT"));
    }

    #[test]
    fn rdata() {
        assert_eq!(parse_rdata(A, "10.0.1.5").unwrap(), vec![10, 0, 1, 5]);
        assert!(parse_rdata(A, "fd00::1").is_err());
        assert_eq!(parse_rdata(AAAA, "::1").unwrap()[15], 1);
        assert!(parse_rdata(AAAA, "10.0.0.1").is_err());
        assert_eq!(
            parse_rdata(SRV, "10 20 8805 upf.svc.").unwrap(),
            b"\x00\x0a\x00\x14\x22\x65\x03upf\x03svc\x00".to_vec()
        );
        assert!(parse_rdata(SRV, "10 20 upf.svc.").is_err());
        assert!(parse_rdata(SRV, "10 20 70000 upf.svc.")
            .unwrap_err()
            .contains("port"));
        assert!(parse_rdata(SRV, "1 2 3 a..b").is_err());
    }

    #[test]
    fn txt_chunks() {
        assert_eq!(txt_rdata(b""), vec![0]);
        assert_eq!(txt_rdata(b"hi"), b"\x02hi".to_vec());
        let long = vec![b'x'; 600];
        let r = txt_rdata(&long);
        assert_eq!(r.len(), 603);
        assert_eq!(r[0], 255);
        assert_eq!(r[256], 255);
        assert_eq!(r[512], 90);
    }
}
