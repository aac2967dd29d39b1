//! Unit tests of config loading and validation.

use std::path::Path;

use serde::de::IntoDeserializer;
use toml_edit::{ImDocument, Item, Value};

use super::load::*;
use super::*;
use crate::addrmap::{load, load_embedded, load_file};

fn problems(text: &str) -> Vec<Problem> {
    match load(text, Path::new(".")) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(p) => p,
    }
}

/// The one problem at `key`, failing with the full list if absent.
fn at<'p>(problems: &'p [Problem], key: &str) -> &'p Problem {
    let found: Vec<_> = problems.iter().filter(|p| p.key == key).collect();
    assert_eq!(found.len(), 1, "one problem at {key} in {problems:#?}");
    found[0]
}

const ZONE: &str = "[[zone]]\nname = \"svc.example.\"\nsoa = { mname = \"ns1.svc.example.\", rname = \"admin.svc.example.\" }\n";

#[test]
fn cluster_settings_are_checked_with_advice() {
    let ok = load(
        &format!("{ZONE}[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n"),
        Path::new("."),
    )
    .expect("a minimal [cluster] loads");
    let c = ok.config.cluster.expect("[cluster] is kept");
    assert_eq!(c.prefix, "/shardgate/");
    assert_eq!((c.dial_timeout_ms, c.request_timeout_ms), (2000, 5000));
    let cases = [
        ("etcd = []", "cluster.etcd", "at least one"),
        (
            "etcd = [\"127.0.0.1:2379\"]",
            "cluster.etcd[0]",
            "http://HOST:PORT",
        ),
        (
            "etcd = [\"http://127.0.0.1\"]",
            "cluster.etcd[0]",
            "a host and a port",
        ),
        (
            "etcd = [\"https://e:2379\"]",
            "cluster.ca_file",
            "CA certificate",
        ),
        (
            "etcd = [\"http://e:2379\"]\nca_file = \"ca.pem\"",
            "cluster.ca_file",
            "every endpoint is http://",
        ),
        (
            "etcd = [\"https://e:2379\"]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"",
            "cluster.cert_file",
            "together",
        ),
        (
            "etcd = [\"http://e:2379\"]\nuser = \"sg\"",
            "cluster.user",
            "together",
        ),
        (
            "etcd = [\"http://e:2379\"]\nprefix = \"shardgate\"",
            "cluster.prefix",
            "start and end",
        ),
        (
            "etcd = [\"http://e:2379\"]\nrequest_timeout_ms = 0",
            "cluster.request_timeout_ms",
            "100..=60000",
        ),
    ];
    for (table, key, want) in cases {
        let p = problems(&format!("{ZONE}[cluster]\n{table}\n"));
        let m = &at(&p, key).message;
        assert!(m.contains(want), "{table}: {m}");
    }
}

#[test]
fn display_has_line_key_and_message() {
    let p = Problem {
        line: Some(7),
        key: "dns.listen[1]".into(),
        message: "bad".into(),
    };
    assert_eq!(p.to_string(), "line 7: dns.listen[1]: bad");
    let p = Problem {
        line: None,
        key: String::new(),
        message: "cannot read".into(),
    };
    assert_eq!(p.to_string(), "cannot read");
}

#[test]
fn syntax_error_has_its_line() {
    let ps = problems("[server]\nshards = 1\n\n[dns\nlisten = []\n");
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].line, Some(4));
    assert!(ps[0].message.starts_with("TOML syntax error"), "{}", ps[0]);
    assert!(!ps[0].message.contains('\n'));
}

#[test]
fn udp_io_is_named_as_removed() {
    let ps = problems(&format!("[dns]\nudp_io = \"executor\"\n{ZONE}"));
    let p = at(&ps, "dns.udp_io");
    assert_eq!(p.line, Some(2), "{p}");
    assert!(p.message.starts_with("removed"), "{p}");
}

#[test]
fn unknown_key_is_rejected_at_its_line() {
    let ps = problems("[server]\nshards = 1\nshard = 2\n");
    let p = at(&ps, "server.shard");
    assert_eq!(p.line, Some(3));
    assert!(p.message.contains("unknown field `shard`"), "{p}");
    assert!(p.message.contains("`shards`"), "lists the valid keys: {p}");

    let ps = problems("colour = \"red\"\n");
    assert_eq!(at(&ps, "colour").line, Some(1));
}

#[test]
fn every_type_error_is_reported_not_only_the_first() {
    let text = "\
[server]
shard = 2
shutdown_grace_ms = \"soon\"

[dns]
listen = [
  \"127.0.0.1:8053\",
  \"localhost\",
]

[[view]]
name = 5

[[view]]
name = \"b\"
[[view.record]]
name = \"upf.svc.example.\"
type = \"A\"
data = 7
";
    let ps = problems(text);
    assert_eq!(at(&ps, "server.shard").line, Some(2));
    assert_eq!(at(&ps, "server.shutdown_grace_ms").line, Some(3));
    let listen = at(&ps, "dns.listen[1]");
    assert_eq!(listen.line, Some(8));
    assert!(listen.message.contains("IP:PORT"), "{listen}");
    assert_eq!(at(&ps, "view[0].name").line, Some(12));
    assert_eq!(at(&ps, "view[1].record[0].data").line, Some(19));
    assert_eq!(ps.len(), 5, "{ps:#?}");
    let lines: Vec<_> = ps.iter().map(|p| p.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "sorted by line");
}

#[test]
fn missing_required_key_points_at_its_table() {
    let ps = problems("[server]\nshards = 1\n\n[[zone]]\nname = \"svc.example.\"\n");
    let p = at(&ps, "zone[0]");
    assert_eq!(p.line, Some(4));
    assert!(p.message.contains("missing field `soa`"), "{p}");
}

#[test]
fn inline_tables_and_arrays_of_inline_tables_are_located() {
    let text = "[[zone]]\nname = \"a.\"\nsoa = { mname = \"ns.a.\", rname = 1 }\n\n[[view]]\nname = \"v\"\nrecord = [\n  { name = \"x.a.\", type = \"A\", data = \"10.0.0.1\" },\n  { name = \"y.a.\", type = \"A\", data = \"10.0.0.2\", tll = 5 },\n]\n";
    let ps = problems(text);
    assert_eq!(at(&ps, "zone[0].soa.rname").line, Some(3));
    let p = at(&ps, "view[0].record[1].tll");
    assert_eq!(p.line, Some(9));
    assert!(p.message.contains("unknown field `tll`"), "{p}");
}

#[test]
fn ranges_are_checked_with_line_and_key() {
    let text = format!(
        "\
[server]
shards = 5000
io_memory_kib = 16
shutdown_grace_ms = 900000

[dns]
listen = [\"127.0.0.1:8053\"]
max_udp_payload = 100
tcp_idle_timeout_ms = 0
tcp_max_connections_per_shard = 0
tcp_max_query_bytes = 12
udp_batch = 0
udp_coalesce_us = 20000
udp_coalesce_min_batch = 5000

{ZONE}ttl = 4294967295
"
    );
    let ps = problems(&text);
    for (key, line) in [
        ("server.shards", 2),
        ("server.io_memory_kib", 3),
        ("server.shutdown_grace_ms", 4),
        ("dns.max_udp_payload", 8),
        ("dns.tcp_idle_timeout_ms", 9),
        ("dns.tcp_max_connections_per_shard", 10),
        ("dns.tcp_max_query_bytes", 11),
        ("dns.udp_batch", 12),
        ("dns.udp_coalesce_us", 13),
        ("dns.udp_coalesce_min_batch", 14),
        ("zone[0].ttl", 19),
    ] {
        let p = at(&ps, key);
        assert_eq!(p.line, Some(line), "{p}");
        assert!(p.message.contains("out of range"), "{p}");
    }
    assert_eq!(ps.len(), 11, "{ps:#?}");
    assert!(at(&ps, "dns.max_udp_payload")
        .message
        .contains("512..=65535"));
}

#[test]
fn hardening_keys_are_checked() {
    let text = format!(
        "\
[server]
admin_hosts = [\"bad host\", \"10.0.0.1\", \"ok.example\"]
admin_header_timeout_ms = 40000
admin_connections_per_client = 0

[dns]
listen = [\"127.0.0.1:8053\"]
tcp_max_connections_per_shard = 10
tcp_max_connections_per_client = 2000000

[dns.rrl]
enabled = true
rate = 0
slip = 101
ipv4_prefix = 33
ipv6_prefix = 0
table_size = 0

[functions]
http_max_connections_per_shard = 5
http_max_connections_per_client = 2000000

{ZONE}"
    );
    let ps = problems(&text);
    for key in [
        "server.admin_hosts[0]",
        "server.admin_hosts[1]",
        "server.admin_header_timeout_ms",
        "server.admin_connections_per_client",
        "dns.tcp_max_connections_per_client",
        "dns.rrl.rate",
        "dns.rrl.slip",
        "dns.rrl.ipv4_prefix",
        "dns.rrl.ipv6_prefix",
        "dns.rrl.table_size",
        "functions.http_max_connections_per_client",
    ] {
        at(&ps, key);
    }
    assert_eq!(ps.len(), 11, "{ps:#?}");
    // off: the limiter's settings are not checked (nothing uses them)
    let off = text.replace("enabled = true", "enabled = false");
    assert!(problems(&off).iter().all(|p| !p.key.starts_with("dns.rrl")));
}

#[test]
fn listen_addresses_are_checked() {
    let text = "\
[server]
admin_listen = \"127.0.0.1:8053\"

[dns]
listen = [
  \"127.0.0.1:8053\",
  \"127.0.0.1:8053\",
  \"0.0.0.0:9000\",
  \"10.0.0.1:9000\",
  \"[::1]:0\",
  \"[::1]:9000\",
]
";
    let ps = problems(text);
    let admin = at(&ps, "server.admin_listen");
    assert_eq!(admin.line, Some(2));
    assert!(admin.message.contains("of dns.listen[0]"), "{admin}");
    let dup = at(&ps, "dns.listen[1]");
    assert_eq!(dup.line, Some(7));
    assert!(dup.message.contains("listed twice"), "{dup}");
    let wild = at(&ps, "dns.listen[3]");
    assert_eq!(wild.line, Some(9));
    assert!(wild.message.contains("wildcard"), "{wild}");
    let zero = at(&ps, "dns.listen[4]");
    assert_eq!(zero.line, Some(10));
    assert!(zero.message.contains("port 0"), "{zero}");
    // [::1]:9000 is another family than the 0.0.0.0 wildcard: fine.
    assert_eq!(ps.len(), 4, "{ps:#?}");

    let ps = problems("[dns]\nlisten = []\n");
    let p = at(&ps, "dns.listen");
    assert_eq!(p.line, Some(2));
    assert!(p.message.contains("add one"), "{p}");
}

#[test]
fn surfaces_may_not_share_an_address() {
    let text = "\
[server]
admin_listen = \"127.0.0.1:9000\"

[dns]
listen = [\"0.0.0.0:8053\", \"[::1]:8054\"]

[functions]
listen = [\"127.0.0.1:8053\", \"[::1]:8054\", \"0.0.0.0:9000\", \"127.0.0.1:8055\"]
";
    let ps = problems(text);
    let wild = at(&ps, "functions.listen[0]");
    assert_eq!(wild.line, Some(8));
    assert!(wild.message.contains("of dns.listen[0]"), "{wild}");
    assert!(at(&ps, "functions.listen[1]")
        .message
        .contains("of dns.listen[1]"));
    // TCP admin listener vs the functions' TCP listener on 0.0.0.0:9000.
    let admin = at(&ps, "server.admin_listen");
    assert!(admin.message.contains("of functions.listen[2]"), "{admin}");
    assert_eq!(ps.len(), 3, "{ps:#?}");

    // A disabled surface binds nothing and conflicts with nothing.
    let off = text.replace("[functions]\n", "[functions]\nenabled = false\n");
    assert!(load(&off, Path::new(".")).is_ok());
}

#[test]
fn duplicate_zone_and_view_names_are_reported() {
    let text = format!(
        "{ZONE}\n[[zone]]\nname = \"SVC.example\"\nsoa = {{ mname = \"a.\", rname = \"b.\" }}\n\n[[view]]\nname = \"site-a\"\n\n[[view]]\nname = \"site-b\"\n\n[[view]]\nname = \"site-a\"\n\n[[view]]\nname = \" \"\n"
    );
    let ps = problems(&text);
    let zone = at(&ps, "zone[1].name");
    assert_eq!(zone.line, Some(6));
    assert!(zone.message.contains("zone[0]"), "{zone}");
    let view = at(&ps, "view[2].name");
    assert_eq!(view.line, Some(16));
    assert!(view.message.contains("view[0]"), "{view}");
    let empty = at(&ps, "view[3].name");
    assert_eq!(empty.line, Some(19));
    assert_eq!(ps.len(), 3, "{ps:#?}");
}

#[test]
fn record_ttl_over_rfc2181_limit() {
    let text = format!(
        "{ZONE}\n[[view]]\nname = \"default\"\n[[view.record]]\nname = \"upf.svc.example.\"\ntype = \"A\"\ndata = \"10.0.0.1\"\nttl = 2147483648\n"
    );
    let ps = problems(&text);
    let p = at(&ps, "view[0].record[0].ttl");
    assert_eq!(p.line, Some(11));
    assert_eq!(ps.len(), 1, "{ps:#?}");
}

#[test]
fn address_map_problems_get_their_lines() {
    let text = format!(
        "\
{ZONE}
[[view]]
name = \"site-a\"
prefixes = [
  \"10.1.0.0/16\",
  \"10.1.0.0/99\",
]

[[view]]
name = \"site-b\"
[[view.record]]
name = \"upf.svc.example.\"
type = \"A\"
data = \"not-an-address\"
[[view.record]]
name = \"upf.elsewhere.example.\"
type = \"A\"
data = \"10.0.0.1\"
"
    );
    let ps = problems(&text);
    assert_eq!(at(&ps, "view[0].prefixes[1]").line, Some(9));
    assert_eq!(at(&ps, "view[1].record[0].data").line, Some(17));
    assert_eq!(at(&ps, "view[1].record[1].name").line, Some(19));
    assert!(ps.iter().all(|p| p.line.is_some()), "{ps:#?}");
}

#[test]
fn key_paths_map_to_lines() {
    let text = "\
[server]
shards = 2

[dns]
listen = [
  \"127.0.0.1:8053\",
  \"[::1]:8053\",
]

[[view]]
name = \"a\"

[[view]]
name = \"b\"
prefixes = [\"10.2.0.0/16\", \"10.3.0.0/16\"]

[[view.record]]
name = \"x.svc.example.\"
type = \"A\"

[[view.record]]
name = \"y.svc.example.\"
data = \"10.0.0.1\"
";
    let doc = ImDocument::parse(text.to_owned()).unwrap();
    let loc = Locator::new(text, &doc);
    for (key, line) in [
        ("server", Some(1)),
        ("server.shards", Some(2)),
        ("dns.listen", Some(5)),
        ("dns.listen[1]", Some(7)),
        ("view[0]", Some(10)),
        ("view[1]", Some(13)),
        ("view[1].name", Some(14)),
        ("view[1].prefixes[1]", Some(15)),
        ("view[1].record[0]", Some(17)),
        ("view[1].record[1].data", Some(23)),
        // Absent keys fall back to the nearest ancestor in the file.
        ("view[1].record[0].data", Some(17)),
        ("view[1].prefixes_file", Some(13)),
        ("server.admin_listen", Some(1)),
        ("view[7].name", Some(10)),
        ("zone[0].name", None),
        ("", None),
    ] {
        assert_eq!(loc.line_of_key(key), line, "{key}");
    }
    // And back: an offset inside a value names its key path.
    let off = text.find("10.3.0.0").unwrap();
    assert_eq!(loc.key_at(off), "view[1].prefixes[1]");
    let off = text.find("y.svc").unwrap();
    assert_eq!(loc.key_at(off), "view[1].record[1].name");
}

#[test]
fn unreadable_file_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let ps = load_file(&path).unwrap_err();
    assert_eq!(ps.len(), 1);
    assert!(ps[0].message.contains("missing.toml"), "{}", ps[0]);
    assert!(ps[0].message.contains("--config"), "{}", ps[0]);
}

#[test]
fn log_table_is_checked() {
    assert!(valid_log_level("info"));
    assert!(valid_log_level("warn,shardgate::admin=debug"));
    assert!(!valid_log_level(""));
    assert!(!valid_log_level("loud"));
    assert!(!valid_log_level("shardgate=loud"));
    let base = std::path::Path::new(".");
    let text = format!("{EMBEDDED_DEFAULT}\n[log]\nlevel = \"debug\"\nformat = \"json\"\n");
    let loaded = load(&text, base).unwrap();
    assert_eq!(loaded.config.log.format, LogFormat::Json);
    let text = format!("{EMBEDDED_DEFAULT}\n[log]\nlevel = \"loud\"\n");
    let problems = load(&text, base).unwrap_err();
    assert_eq!(problems[0].key, "log.level");
    assert!(problems[0].line.is_some());
    let text = format!("{EMBEDDED_DEFAULT}\n[log]\nformat = \"xml\"\n");
    assert!(load(&text, base).is_err());
}

#[test]
fn load_file_reports_lines_of_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[dns]\n\nmax_udp_payload = 1\n").unwrap();
    let ps = load_file(&path).unwrap_err();
    assert_eq!(at(&ps, "dns.max_udp_payload").line, Some(3));
}

#[test]
fn embedded_default_loads_without_problems() {
    let loaded = load_embedded().unwrap_or_else(|ps| panic!("{ps:#?}"));
    assert!(!loaded.config.zones.is_empty());
    assert!(loaded.config.views.iter().any(|v| v.name == "default"));
}

#[test]
fn shipped_example_loads_without_problems() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let loaded = load_file(&dir.join("shardgate.toml")).unwrap_or_else(|ps| panic!("{ps:#?}"));
    let embedded = load_embedded().unwrap_or_else(|ps| panic!("{ps:#?}"));
    // The commented example serves the same address map as the default.
    assert_eq!(loaded.config.zones, embedded.config.zones);
    assert_eq!(loaded.config.views, embedded.config.views);
}

/// Keys the schema keeps only so that check-config can name them as
/// removed; the example does not show them.
const REMOVED_KEYS: &[&str] = &["dns.udp_io", "handoff.backlog_wait_us"];

/// `config/shardgate.toml` documents every key of every table it has
/// (commented-out keys count). The list of valid keys comes from serde
/// itself: a probe key added to each table is rejected with "expected one
/// of ...", so keys added to the schema later are covered too.
#[test]
fn shipped_example_shows_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shardgate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc = ImDocument::parse(text.clone()).unwrap();
    let mut tables = Vec::new();
    collect_tables(Node::Item(doc.as_item()), &mut Vec::new(), &mut tables);
    assert!(tables.len() >= 6, "{tables:?}");
    let mut missing = Vec::new();
    for path in &tables {
        let mut probe = doc.clone().into_mut();
        let table = navigate(probe.as_table_mut(), path).expect("path from the same document");
        table.insert("zz_probe", toml_edit::value(0));
        let err = Config::deserialize(probe.into_deserializer())
            .expect_err("an unknown key must be rejected");
        let msg = err.message();
        assert!(msg.contains("unknown field `zz_probe`"), "{msg}");
        let expected = &msg[msg.find("expected").unwrap_or(msg.len())..];
        for field in expected.split('`').skip(1).step_by(2) {
            let key = format!("{}.{field}", path_string(path));
            if REMOVED_KEYS.contains(&key.as_str()) {
                continue;
            }
            if !documented(&text, field) {
                missing.push(format!("{}.{field}", path_string(path)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys not shown in config/shardgate.toml: {missing:?}"
    );
}

fn collect_tables(node: Node<'_>, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    let table_like =
        node.as_table().is_some() || matches!(node.as_value(), Some(Value::InlineTable(_)));
    if table_like {
        out.push(path.clone());
    }
    for (seg, _, child) in node.children() {
        path.push(seg);
        collect_tables(child, path, out);
        path.pop();
    }
}

fn navigate<'a>(
    table: &'a mut dyn toml_edit::TableLike,
    path: &[Seg],
) -> Option<&'a mut dyn toml_edit::TableLike> {
    match path {
        [] => Some(table),
        [Seg::Key(k), Seg::Index(i), rest @ ..] => {
            let next: &mut dyn toml_edit::TableLike = match table.get_mut(k)? {
                Item::ArrayOfTables(a) => a.get_mut(*i)?,
                Item::Value(Value::Array(a)) => a.get_mut(*i)?.as_inline_table_mut()?,
                _ => return None,
            };
            navigate(next, rest)
        }
        [Seg::Key(k), rest @ ..] => navigate(table.get_mut(k)?.as_table_like_mut()?, rest),
        [Seg::Index(_), ..] => None,
    }
}

fn path_string(path: &[Seg]) -> String {
    let s: String = path.iter().map(|s| s.to_string()).collect();
    s.trim_start_matches('.').to_owned()
}

/// `field = ...`, `[... field]` or `[[... field]]`, commented out or not.
fn documented(text: &str, field: &str) -> bool {
    text.lines().any(|line| {
        let l = line.trim_start_matches(|c: char| c == '#' || c.is_whitespace());
        let assigned = l
            .strip_prefix(field)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        let header = l.starts_with('[')
            && l.trim_end_matches(']')
                .trim_start_matches('[')
                .rsplit('.')
                .next()
                .is_some_and(|last| last.trim() == field);
        let inline = l.contains(&format!(" {field} =")) || l.contains(&format!("{{{field} ="));
        assigned || header || inline
    })
}
