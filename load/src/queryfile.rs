//! Query files in dnsperf's format: one query per line, `name TYPE`
//! (whitespace separated), blank lines and lines starting with `;` or `#`
//! ignored. Names are taken as absolute (a trailing dot is optional) and may
//! use the master-file escapes `\.` and `\DDD`. Parsing is pure: text in,
//! wire-format names and type codes out.

use std::fmt;

/// One query from the file: the name in DNS wire format (length-prefixed
/// labels, ending with the root label) and the query type code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerySpec {
    pub name_wire: Vec<u8>,
    pub qtype: u16,
}

/// A line of the query file that could not be used, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFileError {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for QueryFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {} (expected `name TYPE`, e.g. `upf.svc.example. A`)",
            self.line, self.reason
        )
    }
}

impl std::error::Error for QueryFileError {}

/// Query types known by mnemonic; anything else can be written `TYPEnnn`.
const TYPES: &[(&str, u16)] = &[
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("HINFO", 13),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("LOC", 29),
    ("SRV", 33),
    ("NAPTR", 35),
    ("DS", 43),
    ("RRSIG", 46),
    ("NSEC", 47),
    ("DNSKEY", 48),
    ("TLSA", 52),
    ("SVCB", 64),
    ("HTTPS", 65),
    ("CAA", 257),
    ("AXFR", 252),
    ("ANY", 255),
];

/// The type code for a mnemonic (`A`, `aaaa`) or `TYPEnnn`.
pub fn parse_qtype(s: &str) -> Option<u16> {
    let upper = s.to_ascii_uppercase();
    if let Some(&(_, code)) = TYPES.iter().find(|(name, _)| *name == upper) {
        return Some(code);
    }
    upper.strip_prefix("TYPE")?.parse::<u16>().ok()
}

/// The mnemonic of a type code, or `TYPEnnn`.
pub fn qtype_name(code: u16) -> String {
    match TYPES.iter().find(|&&(_, c)| c == code) {
        Some((name, _)) => (*name).to_string(),
        None => format!("TYPE{code}"),
    }
}

/// Encode a presentation-format name (`upf.svc.example.`) as wire labels.
pub fn encode_name(name: &str) -> Result<Vec<u8>, String> {
    let mut wire = Vec::with_capacity(name.len() + 2);
    if name == "." {
        wire.push(0);
        return Ok(wire);
    }
    let bytes = name.as_bytes();
    let mut label: Vec<u8> = Vec::with_capacity(63);
    let mut i = 0;
    let mut ended_with_dot = false;
    while i < bytes.len() {
        ended_with_dot = false;
        match bytes[i] {
            b'.' => {
                if label.is_empty() {
                    return Err(format!("empty label in name `{name}`"));
                }
                push_label(&mut wire, &label, name)?;
                label.clear();
                ended_with_dot = true;
                i += 1;
            }
            b'\\' => {
                let rest = &bytes[i + 1..];
                if rest.len() >= 3 && rest[..3].iter().all(u8::is_ascii_digit) {
                    let v = (rest[0] - b'0') as u32 * 100
                        + (rest[1] - b'0') as u32 * 10
                        + (rest[2] - b'0') as u32;
                    if v > 255 {
                        return Err(format!("escape \\{v} out of range in `{name}`"));
                    }
                    label.push(v as u8);
                    i += 4;
                } else if let Some(&c) = rest.first() {
                    label.push(c);
                    i += 2;
                } else {
                    return Err(format!("dangling backslash in `{name}`"));
                }
            }
            c => {
                label.push(c);
                i += 1;
            }
        }
    }
    if !ended_with_dot {
        if label.is_empty() {
            return Err("empty name".to_string());
        }
        push_label(&mut wire, &label, name)?;
    }
    wire.push(0);
    if wire.len() > 255 {
        return Err(format!(
            "name `{name}` is {} bytes in wire format, over the limit of 255",
            wire.len()
        ));
    }
    Ok(wire)
}

fn push_label(wire: &mut Vec<u8>, label: &[u8], name: &str) -> Result<(), String> {
    if label.len() > 63 {
        return Err(format!(
            "label of {} bytes in `{name}`, over the limit of 63",
            label.len()
        ));
    }
    wire.push(label.len() as u8);
    wire.extend_from_slice(label);
    Ok(())
}

/// Parse a whole query file. Every bad line is reported (up to 20), so one
/// pass shows the operator everything to fix.
pub fn parse(text: &str) -> Result<Vec<QuerySpec>, Vec<QueryFileError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(q) => out.push(q),
            Err(reason) => {
                if errors.len() < 20 {
                    errors.push(QueryFileError {
                        line: n + 1,
                        reason,
                    });
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if out.is_empty() {
        return Err(vec![QueryFileError {
            line: 0,
            reason: "the file holds no queries".to_string(),
        }]);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<QuerySpec, String> {
    let mut fields = line.split_whitespace();
    let name = fields.next().ok_or("empty line")?;
    let ty = fields
        .next()
        .ok_or_else(|| format!("no query type after `{name}`"))?;
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected field `{extra}`"));
    }
    let qtype = parse_qtype(ty).ok_or_else(|| format!("unknown query type `{ty}`"))?;
    Ok(QuerySpec {
        name_wire: encode_name(name)?,
        qtype,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dnsperf_lines_and_skips_comments() {
        let text = "; comment\n\nupf.svc.example. A\n# other\n  smf.svc.example  aaaa \n_sip._udp.svc.example. SRV\nx. TYPE65\n";
        let q = parse(text).unwrap();
        assert_eq!(q.len(), 4);
        assert_eq!(q[0].name_wire, b"\x03upf\x03svc\x07example\x00");
        assert_eq!(q[0].qtype, 1);
        assert_eq!(q[1].name_wire, b"\x03smf\x03svc\x07example\x00");
        assert_eq!(q[1].qtype, 28);
        assert_eq!(q[2].qtype, 33);
        assert_eq!(q[3].qtype, 65);
    }

    #[test]
    fn reports_every_bad_line_with_its_number() {
        let text = "ok. A\nnotype.\nbad. BOGUS\na..b. A\nx. A extra\n";
        let errs = parse(text).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        assert!(errs[1].to_string().contains("BOGUS"));
    }

    #[test]
    fn empty_file_is_an_error() {
        assert!(parse("; nothing\n\n").is_err());
    }

    #[test]
    fn names_escapes_and_limits() {
        assert_eq!(encode_name(".").unwrap(), vec![0]);
        assert_eq!(encode_name("a\\.b.c").unwrap(), b"\x03a.b\x01c\x00");
        assert_eq!(encode_name("\\065.").unwrap(), b"\x01A\x00");
        assert!(encode_name(&"x".repeat(64)).is_err());
        assert!(encode_name(&"abcdefg.".repeat(40)).is_err());
        assert!(encode_name("\\999.").is_err());
        assert!(encode_name("a\\").is_err());
    }

    #[test]
    fn type_names_round_trip() {
        for &(name, code) in TYPES {
            assert_eq!(parse_qtype(name), Some(code));
            assert_eq!(qtype_name(code), name);
        }
        assert_eq!(parse_qtype("type1234"), Some(1234));
        assert_eq!(qtype_name(1234), "TYPE1234");
        assert_eq!(parse_qtype("TYPE99999"), None);
    }
}
