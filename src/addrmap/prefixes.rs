//! Source prefixes as views list them: parsing `10.1.0.0/16`, `fd00::/48`,
//! bare addresses (= /32, /128), and `prefixes_file` contents (one per
//! line, `#` comments). IPv4-mapped IPv6 prefixes become IPv4 ones, the same
//! way client addresses do.

use std::net::{IpAddr, Ipv6Addr};

use super::lpm::Key;

/// A parsed prefix, host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    V4(u32, u8),
    V6(u128, u8),
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Net::V4(a, l) => write!(f, "{}/{l}", std::net::Ipv4Addr::from(a)),
            Net::V6(a, l) => write!(f, "{}/{l}", Ipv6Addr::from(a)),
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as IPv4, anything else as is.
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

const MAPPED: u128 = 0xffff_0000_0000;

/// Parse one prefix; errors say what to write instead.
pub fn parse_prefix(text: &str) -> Result<Net, String> {
    let t = text.trim();
    let (addr_s, len_s) = match t.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (t, None),
    };
    let addr: IpAddr = addr_s.parse().map_err(|_| {
        format!(
            "`{t}` is not an IP prefix: write an address (`10.1.0.7`, `fd00::7`) \
             or address/length (`10.1.0.0/16`, `fd00:a::/48`)"
        )
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len_s {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(l) if l <= max => l,
            _ => {
                return Err(format!(
                    "`{t}`: prefix length must be a number from 0 to {max}"
                ))
            }
        },
    };
    let net = match addr {
        IpAddr::V4(a) => {
            let a = u32::from(a);
            if a.mask(len) != a {
                return Err(format!(
                    "`{t}` has bits set past the prefix length: write `{}/{len}` \
                     (or `{}/32` for that single address)",
                    std::net::Ipv4Addr::from(a.mask(len)),
                    std::net::Ipv4Addr::from(a)
                ));
            }
            Net::V4(a, len)
        }
        IpAddr::V6(a) => {
            let a = u128::from(a);
            if a.mask(len) != a {
                return Err(format!(
                    "`{t}` has bits set past the prefix length: write `{}/{len}` \
                     (or `{}/128` for that single address)",
                    Ipv6Addr::from(a.mask(len)),
                    Ipv6Addr::from(a)
                ));
            }
            if len >= 96 && a.mask(96) == MAPPED {
                Net::V4(a as u32, len - 96)
            } else {
                Net::V6(a, len)
            }
        }
    };
    Ok(net)
}

/// Prefixes of a file with their line numbers, and bad lines with messages.
pub type FileLines = (Vec<(u32, Net)>, Vec<(u32, String)>);

/// Parse the text of a prefixes file: `(line number, prefix)` for every
/// prefix, and `(line number, message)` for every bad line.
pub fn parse_prefix_lines(text: &str) -> FileLines {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = (i + 1) as u32;
        let content = match line.find('#') {
            Some(p) => &line[..p],
            None => line,
        }
        .trim();
        if content.is_empty() {
            continue;
        }
        match parse_prefix(content) {
            Ok(n) => ok.push((line_no, n)),
            Err(e) => bad.push((line_no, e)),
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_prefix("10.1.0.0/16"), Ok(Net::V4(0x0a01_0000, 16)));
        assert_eq!(parse_prefix(" 10.1.0.7 "), Ok(Net::V4(0x0a01_0007, 32)));
        assert_eq!(parse_prefix("0.0.0.0/0"), Ok(Net::V4(0, 0)));
        assert_eq!(parse_prefix("::1"), Ok(Net::V6(1, 128)));
        assert_eq!(
            parse_prefix("fd00:a::/48"),
            Ok(Net::V6(0xfd00_000a_0000u128 << 80, 48))
        );
        assert_eq!(
            parse_prefix("::ffff:10.0.0.0/104"),
            Ok(Net::V4(0x0a00_0000, 8))
        );
        assert_eq!(
            parse_prefix("::ffff:10.0.0.7"),
            Ok(Net::V4(0x0a00_0007, 32))
        );
    }

    #[test]
    fn errors_say_what_to_write() {
        let e = parse_prefix("10.1.2.3/16").unwrap_err();
        assert!(e.contains("10.1.0.0/16"), "{e}");
        assert!(parse_prefix("10.1.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(parse_prefix("fd00::/129").unwrap_err().contains("0 to 128"));
        assert!(parse_prefix("banana").is_err());
        assert!(parse_prefix("10.0.0.0/x").is_err());
        assert!(parse_prefix("").is_err());
    }

    #[test]
    fn file_lines_with_comments() {
        let (ok, bad) = parse_prefix_lines(
            "# instances\n10.0.0.1\n\n  10.2.0.0/16  # site b\nnope\nfd00::/8\n",
        );
        assert_eq!(
            ok,
            vec![
                (2, Net::V4(0x0a00_0001, 32)),
                (4, Net::V4(0x0a02_0000, 16)),
                (6, Net::V6(0xfdu128 << 120, 8))
            ]
        );
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 5);
    }

    #[test]
    fn mapped_clients_are_ipv4() {
        let ip: IpAddr = "::ffff:127.0.0.5".parse().unwrap();
        assert_eq!(canonical(ip), "127.0.0.5".parse::<IpAddr>().unwrap());
        let ip: IpAddr = "::1".parse().unwrap();
        assert_eq!(canonical(ip), ip);
    }
}
