//! Parsing and checking of command-line values: durations (`10s`, `250ms`,
//! `20us`, `2m`, plain seconds), source-address lists (`127.0.0.2,127.0.0.3`
//! or ranges `127.0.0.2-127.0.0.20`), and the loopback-only target rule.
//! Pure functions; messages say what to type instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Most sources accepted (one socket each per thread).
pub const MAX_SOURCES: usize = 1024;

/// `10s`, `1.5s`, `250ms`, `20us`, `2m`, `100ns`, or a plain number of seconds.
pub fn parse_duration_ns(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ns") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e9)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e9)
    } else {
        (s, 1e9)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 10s, 250ms, 20us or 2m"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{s}`: a duration must be zero or more"));
    }
    let ns = v * mult;
    if ns > 86_400e9 {
        return Err(format!(
            "`{s}` is longer than a day; give a shorter duration"
        ));
    }
    Ok(ns as u64)
}

/// Source addresses from comma-separated items, each an address or an IPv4
/// range `first-last` (inclusive).
pub fn parse_sources(items: &[String]) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for item in items.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if let Some((a, b)) = item.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().map_err(|_| bad_source(item))?;
            let b: Ipv4Addr = b.trim().parse().map_err(|_| bad_source(item))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a {
                return Err(format!(
                    "source range `{item}` runs backwards; write low-high"
                ));
            }
            if (b - a) as usize >= MAX_SOURCES {
                return Err(format!(
                    "source range `{item}` holds more than {MAX_SOURCES} addresses"
                ));
            }
            out.extend((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        } else {
            out.push(item.parse().map_err(|_| bad_source(item))?);
        }
        if out.len() > MAX_SOURCES {
            return Err(format!("more than {MAX_SOURCES} source addresses"));
        }
    }
    Ok(out)
}

fn bad_source(item: &str) -> String {
    format!("`{item}` is not a source address; write e.g. 127.0.0.2 or 127.0.0.2-127.0.0.9")
}

/// Whether an address is loopback (127.0.0.0/8, ::1, or IPv4-mapped 127/8).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Refuse non-loopback targets unless allowed; sources must match the
/// target's address family.
pub fn check_target(
    target: SocketAddr,
    sources: &[IpAddr],
    allow_remote: bool,
) -> Result<(), String> {
    if !allow_remote && !is_loopback(target.ip()) {
        return Err(format!(
            "refusing to load {target}: it is not a loopback address. Load tests can hurt \
             production traffic; pass --allow-remote if you mean to test that host"
        ));
    }
    if target.port() == 0 {
        return Err(format!("target {target} has no port; write ADDRESS:PORT"));
    }
    for s in sources {
        if s.is_ipv4() != target.is_ipv4() {
            return Err(format!(
                "source {s} and target {target} are of different address families"
            ));
        }
    }
    Ok(())
}

/// Resolve `ADDR:PORT` (a name such as `localhost:8053` works too); the
/// first address wins.
pub fn resolve_target(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve target `{s}`: {e}; write ADDRESS:PORT"))?
        .next()
        .ok_or_else(|| format!("target `{s}` resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("10s").unwrap(), 10_000_000_000);
        assert_eq!(parse_duration_ns("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_duration_ns("250ms").unwrap(), 250_000_000);
        assert_eq!(parse_duration_ns("20us").unwrap(), 20_000);
        assert_eq!(parse_duration_ns("2m").unwrap(), 120_000_000_000);
        assert_eq!(parse_duration_ns("3").unwrap(), 3_000_000_000);
        assert_eq!(parse_duration_ns("0").unwrap(), 0);
        assert!(parse_duration_ns("ten").unwrap_err().contains("10s"));
        assert!(parse_duration_ns("-1s").is_err());
        assert!(parse_duration_ns("2d").is_err());
        assert!(parse_duration_ns("100000000s").is_err());
    }

    #[test]
    fn sources_lists_and_ranges() {
        let s = parse_sources(&["127.0.0.2,127.0.0.5-127.0.0.7".into(), "::1".into()]).unwrap();
        let want: Vec<IpAddr> = ["127.0.0.2", "127.0.0.5", "127.0.0.6", "127.0.0.7", "::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(s, want);
        assert!(parse_sources(&["127.0.0.9-127.0.0.2".into()]).is_err());
        assert!(parse_sources(&["10.0.0.0-10.1.0.0".into()]).is_err());
        assert!(parse_sources(&["nope".into()])
            .unwrap_err()
            .contains("127.0.0.2"));
        assert!(parse_sources(&[]).unwrap().is_empty());
    }

    #[test]
    fn loopback_rule() {
        let lo: SocketAddr = "127.0.0.1:8053".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8053".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.9]:53".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:53".parse().unwrap();
        assert!(check_target(lo, &[], false).is_ok());
        assert!(check_target(lo6, &[], false).is_ok());
        assert!(check_target(mapped, &[], false).is_ok());
        let e = check_target(remote, &[], false).unwrap_err();
        assert!(e.contains("--allow-remote"), "{e}");
        assert!(check_target(remote, &[], true).is_ok());
        assert!(check_target("127.0.0.1:0".parse().unwrap(), &[], false).is_err());
        let v6src: IpAddr = "::1".parse().unwrap();
        assert!(check_target(lo, &[v6src], false).is_err());
    }

    #[test]
    fn targets_resolve() {
        assert_eq!(
            resolve_target("127.0.0.1:53").unwrap(),
            "127.0.0.1:53".parse::<SocketAddr>().unwrap()
        );
        assert!(is_loopback(resolve_target("localhost:53").unwrap().ip()));
        assert!(resolve_target("no port").is_err());
    }
}
