//! Build tests: error key paths and messages, prefixes files, view
//! selection, and what the built map reports.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::config::Config;

const ZONE: &str = r#"
[[zone]]
name = "svc.example."
soa = { mname = "ns1.svc.example.", rname = "hostmaster.svc.example." }
"#;

fn config(text: &str) -> Config {
    toml::from_str(text).expect("test TOML parses")
}

fn errors(text: &str, base: &Path) -> Vec<BuildError> {
    match AddressMap::build(&config(text), base) {
        Ok(_) => panic!("expected build errors for:\n{text}"),
        Err(e) => e,
    }
}

fn keys(errs: &[BuildError]) -> Vec<&str> {
    errs.iter().map(|e| e.key.as_str()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn reports_every_problem_with_its_key() {
    let text = r#"
[dns]
max_udp_payload = 100
trusted_resolvers = ["192.0.2.1/24"]

[[zone]]
name = "svc..example."
soa = { mname = "ns1.svc.example.", rname = "hostmaster.svc.example." }

[[zone]]
name = "ok.example."
ns = ["ns1.ok.example.", "bad..ns."]
soa = { mname = "m..", rname = "r.ok.example." }

[[zone]]
name = "OK.example"
soa = { mname = "ns1.ok.example.", rname = "hostmaster.ok.example." }

[[view]]
name = "a"
prefixes = ["10.0.0.0/8", "10.0.0.1/8", "nonsense", "10.0.0.0/40"]
record = [
  { name = "x.ok.example.", type = "MX", data = "10 mail." },
  { name = "x.ok.example.", type = "A", data = "fd00::1" },
  { name = "x.elsewhere.", type = "A", data = "10.0.0.1" },
  { name = "srv.ok.example.", type = "SRV", data = "1 2 three target." },
  { name = "t.ok.example.", type = "A", data = "10.0.0.1", ttl = 30 },
  { name = "t.ok.example.", type = "A", data = "10.0.0.2", ttl = 60 },
  { name = "huge.ok.example.", type = "A", data = "10.0.0.3", ttl = 4294967295 },
]

[[view]]
name = "a"
prefixes = ["10.0.0.0/8"]
"#;
    let errs = errors(text, Path::new("."));
    let k = keys(&errs);
    for want in [
        "dns.max_udp_payload",
        "dns.trusted_resolvers[0]",
        "zone[0].name",
        "zone[1].ns[1]",
        "zone[1].soa.mname",
        "zone[2].name", // duplicate of zone[1], case-insensitively
        "view[0].prefixes[1]",
        "view[0].prefixes[2]",
        "view[0].prefixes[3]",
        "view[0].record[0].type",
        "view[0].record[1].data",
        "view[0].record[2].name",
        "view[0].record[3].data",
        "view[0].record[5].ttl",
        "view[0].record[6].ttl",
        "view[1].name",
        "view[1].prefixes[0]",
    ] {
        assert!(k.contains(&want), "missing {want} in {errs:#?}");
    }
    // nothing reported twice, nothing unexpected
    assert_eq!(k.len(), 17, "{errs:#?}");
    let msg = |key: &str| errs.iter().find(|e| e.key == key).unwrap().message.clone();
    assert!(
        msg("view[0].prefixes[1]").contains("10.0.0.0/8"),
        "suggests the fix"
    );
    assert!(msg("view[0].record[2].name").contains("outside every configured zone"));
    assert!(
        msg("view[0].record[2].name").contains("ok.example."),
        "lists zones"
    );
    assert!(msg("view[1].prefixes[0]").contains("view[0].prefixes[0]"));
    assert!(msg("view[0].record[5].ttl").contains("view[0].record[4]"));
    assert!(msg("dns.max_udp_payload").contains("512"));
    for e in &errs {
        assert!(e.to_string().starts_with(&e.key));
    }
}

#[test]
fn prefix_in_two_views_is_an_error_but_not_within_one() {
    let ok = format!(
        "{ZONE}\n[[view]]\nname = \"a\"\nprefixes = [\"10.0.0.0/8\", \"10.0.0.0/8\", \"fd00::/8\"]\n\
         [[view]]\nname = \"b\"\nprefixes = [\"10.0.0.0/9\", \"fd00::/9\"]\n"
    );
    let m = AddressMap::build(&config(&ok), Path::new(".")).unwrap();
    assert_eq!(m.prefix_count(), (2, 2));
    assert_eq!(m.views()[0].prefixes, 2);

    let bad = format!(
        "{ZONE}\n[[view]]\nname = \"a\"\nprefixes = [\"fd00::/8\"]\n\
         [[view]]\nname = \"b\"\nprefixes = [\"10.0.0.1\", \"FD00::/8\"]\n\
         [[view]]\nname = \"c\"\nprefixes = [\"10.0.0.1/32\", \"::ffff:10.0.0.1\"]\n"
    );
    let errs = errors(&bad, Path::new("."));
    assert_eq!(
        keys(&errs),
        vec![
            "view[2].prefixes[0]",
            "view[2].prefixes[1]",
            "view[1].prefixes[1]"
        ],
        "{errs:#?}"
    );
}

#[test]
fn prefixes_file_relative_to_base_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("site-b.txt")).unwrap();
    writeln!(
        f,
        "# site B instances\n10.2.0.0/16\n\n10.1.0.9   # one instance\nfd00:b::/48"
    )
    .unwrap();
    drop(f);
    let text = format!(
        "{ZONE}\n[[view]]\nname = \"a\"\nprefixes = [\"10.1.0.0/16\"]\n\
         [[view]]\nname = \"b\"\nprefixes_file = \"site-b.txt\"\nprefixes = [\"192.0.2.0/24\"]\n\
         [[view]]\nname = \"default\"\n"
    );
    let m = AddressMap::build(&config(&text), dir.path()).unwrap();
    assert_eq!(m.views()[1].prefixes, 4);
    assert_eq!(m.view_names(), vec!["a", "b", "default"]);
    assert_eq!(m.default_view(), Some(2));
    let sel = |s: &str| m.select_view(ip(s));
    assert_eq!(
        sel("10.1.0.9"),
        ViewMatch {
            view: Some(1),
            prefix_len: Some(32)
        }
    );
    assert_eq!(
        sel("10.1.0.8"),
        ViewMatch {
            view: Some(0),
            prefix_len: Some(16)
        }
    );
    assert_eq!(
        sel("10.2.3.4"),
        ViewMatch {
            view: Some(1),
            prefix_len: Some(16)
        }
    );
    assert_eq!(
        sel("fd00:b::1"),
        ViewMatch {
            view: Some(1),
            prefix_len: Some(48)
        }
    );
    assert_eq!(
        sel("192.0.2.77"),
        ViewMatch {
            view: Some(1),
            prefix_len: Some(24)
        }
    );
    assert_eq!(
        sel("8.8.8.8"),
        ViewMatch {
            view: Some(2),
            prefix_len: None
        }
    );
    assert_eq!(m.base_dir(), dir.path());
    assert_eq!(m.config().views.len(), 3);

    // absolute path works from any base
    let abs = text.replace(
        "\"site-b.txt\"",
        &format!("{:?}", dir.path().join("site-b.txt")),
    );
    assert!(AddressMap::build(&config(&abs), Path::new("/")).is_ok());
}

#[test]
fn prefixes_file_problems() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.txt"), "10.0.0.0/8\nnope\n10.0.0.1/8\n").unwrap();
    std::fs::write(dir.path().join("dup.txt"), "# dup\n192.0.2.0/24\n").unwrap();
    let text = format!(
        "{ZONE}\n[[view]]\nname = \"a\"\nprefixes_file = \"bad.txt\"\n\
         [[view]]\nname = \"b\"\nprefixes_file = \"missing.txt\"\n\
         [[view]]\nname = \"c\"\nprefixes = [\"192.0.2.0/24\"]\n\
         [[view]]\nname = \"d\"\nprefixes_file = \"dup.txt\"\n"
    );
    let errs = errors(&text, dir.path());
    assert_eq!(
        keys(&errs),
        vec![
            "view[0].prefixes_file",
            "view[0].prefixes_file",
            "view[1].prefixes_file",
            "view[3].prefixes_file"
        ],
        "{errs:#?}"
    );
    assert!(
        errs[0].message.contains("bad.txt:2:"),
        "{}",
        errs[0].message
    );
    assert!(errs[1].message.contains("bad.txt:3:"));
    assert!(errs[1].message.contains("10.0.0.0/8"));
    assert!(errs[2].message.contains("missing.txt"));
    assert!(errs[2].message.contains("cannot read"));
    assert!(
        errs[3].message.contains("dup.txt:2:"),
        "{}",
        errs[3].message
    );
    assert!(errs[3].message.contains("view[2].prefixes[0]"));
}

#[test]
fn many_bad_lines_are_capped_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let body: String = (0..250).map(|i| format!("bad{i}\n")).collect();
    std::fs::write(dir.path().join("p.txt"), body).unwrap();
    let text = format!("{ZONE}\n[[view]]\nname = \"a\"\nprefixes_file = \"p.txt\"\n");
    let errs = errors(&text, dir.path());
    assert_eq!(errs.len(), MAX_LISTED + 1);
    assert!(errs.last().unwrap().message.contains("150 more"));
}

#[test]
fn large_prefixes_file_loads() {
    // 200,000 lines (the 1M case is timed in benches/lpm.rs).
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::with_capacity(200_000 * 16);
    for i in 0..200_000u32 {
        let a = std::net::Ipv4Addr::from(0x0a00_0000 | (i << 3));
        body.push_str(&format!("{a}/29\n"));
    }
    std::fs::write(dir.path().join("p.txt"), body).unwrap();
    let text = format!(
        "{ZONE}\n[[view]]\nname = \"a\"\nprefixes_file = \"p.txt\"\n[[view]]\nname = \"default\"\n"
    );
    let m = AddressMap::build(&config(&text), dir.path()).unwrap();
    assert_eq!(m.prefix_count(), (200_000, 0));
    assert_eq!(m.select_view(ip("10.0.0.9")).prefix_len, Some(29));
    assert_eq!(
        m.select_view(ip("10.24.105.255")),
        ViewMatch {
            view: Some(0),
            prefix_len: Some(29)
        }
    );
    assert_eq!(
        m.select_view(ip("10.24.106.0")),
        ViewMatch {
            view: Some(1),
            prefix_len: None
        }
    );
}

#[test]
fn counts_and_names() {
    let m = AddressMap::build(&config(crate::dns::tests::CONF), Path::new(".")).unwrap();
    assert_eq!(m.zone_names(), vec!["svc.example.", "sub.svc.example"]);
    assert_eq!(
        m.view_names(),
        vec!["site-a", "site-b", "canary", "default"]
    );
    assert_eq!(m.view_index("canary"), Some(2));
    assert_eq!(m.view_index("nope"), None);
    assert_eq!(m.record_count(), 4 + 1 + 1 + 5);
    let recs: Vec<usize> = m.views().iter().map(|v| v.records).collect();
    assert_eq!(recs, vec![4, 1, 1, 5]);
    assert_eq!(m.prefix_count(), (4, 2));
    assert_eq!(m.max_udp_payload(), 1232);
    // apexes 2 + upf, _pfcp._udp, _udp, only-a, site, x.sub, many
    assert_eq!(m.name_count(), 9);
    // IPv4-mapped clients select like IPv4
    assert_eq!(
        m.select_view(ip("::ffff:10.1.2.3")),
        ViewMatch {
            view: Some(1),
            prefix_len: Some(24)
        }
    );
}

#[test]
fn embedded_default_config_builds() {
    let c: Config = toml::from_str(crate::config::EMBEDDED_DEFAULT).unwrap();
    let m = AddressMap::build(&c, Path::new(".")).unwrap();
    assert!(m.default_view().is_some());
    assert!(m.record_count() > 0);
}

#[test]
fn oversized_rrset_is_rejected() {
    let recs: Vec<String> = (0..300)
        .map(|i| {
            format!(
                "{{ name = \"t.svc.example.\", type = \"TXT\", data = \"{}{i}\" }}",
                "z".repeat(250)
            )
        })
        .collect();
    let text = format!(
        "{ZONE}\n[[view]]\nname = \"default\"\nrecord = [\n{}\n]\n",
        recs.join(",\n")
    );
    let errs = errors(&text, Path::new("."));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].message.contains("t.svc.example."),
        "{}",
        errs[0].message
    );
    assert!(errs[0].message.contains("TXT"));
}

#[test]
fn ecs_scope_holds_for_the_whole_scope() {
    // Issue 16 finding 7: 10.1.0.0/12 (first address 10.0.0.0) is answered
    // from `default`, but 10.1.0.0/16 and 10.2.0.0/16 inside it have views
    // of their own: the scope must exclude them (/16), not be the /12.
    let c: Config = toml::from_str(crate::config::EMBEDDED_DEFAULT).unwrap();
    let m = AddressMap::build(&c, Path::new(".")).unwrap();
    let default = m.default_view().unwrap() as u32;
    let view = |n: &str| m.view_index(n).unwrap() as u32;
    for (addr, source, want_view, want_scope) in [
        ("10.1.0.0", 12, default, 16),
        ("10.0.0.0", 8, default, 16),
        ("10.3.0.0", 16, default, 16),
        // the deciding prefix is shorter than the source: its length
        ("10.3.7.0", 24, default, 16),
        ("10.1.2.0", 24, view("site-a"), 16),
        ("10.2.0.0", 16, view("site-b"), 16),
        // canary's /32 inside site-a's 127.0.0.0/25
        ("127.0.0.0", 24, view("site-a"), 30),
        ("127.0.0.7", 32, view("canary"), 32),
        ("127.0.0.0", 25, view("site-a"), 30),
        ("127.0.0.128", 25, view("site-b"), 25),
        ("0.0.0.0", 0, default, 0),
        ("fd00:a::", 48, view("site-a"), 48),
        ("fd00::", 16, default, 29),
        ("::ffff:10.1.0.0", 108, default, 112),
        ("::ffff:10.2.0.0", 120, view("site-b"), 112),
    ] {
        assert_eq!(
            m.select_ecs(ip(addr), source),
            (want_view, want_scope),
            "{addr}/{source}"
        );
    }
    // Every address inside each answered scope selects the same view.
    for (addr, source) in [("10.1.0.0", 12), ("127.0.0.0", 24), ("10.0.0.0", 8)] {
        let (v, scope) = m.select_ecs(ip(addr), source);
        let IpAddr::V4(a) = ip(addr) else {
            unreachable!()
        };
        // the scope is a prefix of the subnet's first address
        let first = u32::from(a) & (u32::MAX << (32 - source)) & (u32::MAX << (32 - scope));
        for k in (0..1u32 << (32 - scope)).step_by(((1u32 << (32 - scope)) / 4096).max(1) as usize)
        {
            let probe = IpAddr::V4((first + k).into());
            assert_eq!(m.select(probe, None).view, v, "{probe} in {addr}/{scope}");
        }
    }
}
