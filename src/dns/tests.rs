//! Behaviour tests of `dns::answer`: every response is parsed back with the
//! `domain` crate and checked field by field.

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use domain::base::iana::{Class, Opcode, Rtype};
use domain::base::opt::ClientSubnet;
use domain::base::{Message, MessageBuilder, Name};
use domain::rdata::AllRecordData;
use proptest::prelude::*;

use super::*;
use crate::config::Config;

pub(crate) const CONF: &str = r#"
[dns]
max_udp_payload = 1232
trusted_resolvers = ["192.0.2.53/32", "2001:db8::53/128"]

[[zone]]
name = "svc.example."
ttl = 30
ns = ["ns1.svc.example.", "ns2.svc.example."]
soa = { mname = "ns1.svc.example.", rname = "hostmaster.svc.example.", serial = 7, minimum = 20 }

[[zone]]
name = "sub.svc.example"
ttl = 60
soa = { mname = "ns.sub.svc.example.", rname = "h.sub.svc.example.", minimum = 120 }

[[view]]
name = "site-a"
prefixes = ["10.1.0.0/16", "fd00:a::/48"]
record = [
  { name = "upf.svc.example.", type = "A", data = "10.0.1.5" },
  { name = "upf.svc.example.", type = "AAAA", data = "fd00:1::5" },
  { name = "_pfcp._udp.svc.example.", type = "SRV", data = "10 20 8805 upf.svc.example." },
  { name = "only-a.svc.example.", type = "A", data = "10.9.9.9", ttl = 5 },
]

[[view]]
name = "site-b"
prefixes = ["10.2.0.0/16", "10.1.2.0/24"]
record = [
  { name = "upf.svc.example.", type = "a", data = "10.0.2.5" },
]

[[view]]
name = "canary"
prefixes = ["10.1.0.7", "fd00:a::7/128"]
record = [
  { name = "upf.svc.example.", type = "A", data = "10.0.3.5" },
]

[[view]]
name = "default"
record = [
  { name = "upf.svc.example.", type = "A", data = "10.0.9.5" },
  { name = "site.svc.example.", type = "TXT", data = "default" },
  { name = "x.sub.svc.example.", type = "A", data = "10.0.8.8" },
  { name = "many.svc.example.", type = "A", data = "10.0.0.1" },
  { name = "many.svc.example.", type = "A", data = "10.0.0.2" },
]
"#;

/// CONF with more records in the `default` view (inline-table TOML lines).
pub(crate) fn with_default_records(extra: &[String]) -> String {
    let marker = "name = \"default\"\nrecord = [\n";
    assert!(CONF.contains(marker));
    CONF.replace(marker, &format!("{marker}{}\n", extra.join(",\n") + ","))
}

/// CONF plus a name with enough records to overflow 512 and 1232 bytes.
pub(crate) fn conf_with_big() -> String {
    let extra: Vec<String> = (0..100)
        .map(|i| format!("{{ name = \"big.svc.example.\", type = \"A\", data = \"10.7.0.{i}\" }}"))
        .collect();
    with_default_records(&extra)
}

fn conf_with_txt(text: &str) -> String {
    with_default_records(&[format!(
        "{{ name = \"t.svc.example.\", type = \"TXT\", data = \"{text}\" }}"
    )])
}

pub(crate) fn build(toml_text: &str) -> AddressMap {
    let c: Config = toml::from_str(toml_text).expect("test config parses");
    AddressMap::build(&c, Path::new(".")).expect("test config builds")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[derive(Clone, Default)]
struct QOpt {
    udp: u16,
    version: u8,
    dnssec_ok: bool,
    ecs: Option<ClientSubnet>,
}

fn edns() -> Option<QOpt> {
    Some(QOpt {
        udp: 1232,
        ..Default::default()
    })
}

fn ecs(addr: &str, len: u8) -> Option<QOpt> {
    Some(QOpt {
        udp: 1232,
        ecs: Some(ClientSubnet::new(len, 0, ip(addr))),
        ..Default::default()
    })
}

fn query_full(
    id: u16,
    rd: bool,
    name: &str,
    qtype: Rtype,
    class: Class,
    opt: Option<QOpt>,
) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(id);
    b.header_mut().set_rd(rd);
    let mut b = b.question();
    b.push((Name::<Vec<u8>>::from_str(name).unwrap(), qtype, class))
        .unwrap();
    let mut b = b.additional();
    if let Some(o) = opt {
        b.opt(|ob| {
            ob.set_udp_payload_size(o.udp);
            ob.set_version(o.version);
            ob.set_dnssec_ok(o.dnssec_ok);
            if let Some(e) = &o.ecs {
                ob.push(e)?;
            }
            Ok(())
        })
        .unwrap();
    }
    b.finish()
}

fn query(name: &str, qtype: Rtype, opt: Option<QOpt>) -> Vec<u8> {
    query_full(0x1234, true, name, qtype, Class::IN, opt)
}

type Rr = (String, Rtype, u32, String);

/// A response as `domain` sees it.
#[derive(Debug)]
struct Resp {
    id: u16,
    aa: bool,
    tc: bool,
    rd: bool,
    cd: bool,
    rcode: u16,
    opcode: Opcode,
    qd: Option<(String, Rtype, Class)>,
    answer: Vec<Rr>,
    authority: Vec<Rr>,
    /// (udp size, version, DO, ECS)
    opt: Option<(u16, u8, bool, Option<ClientSubnet>)>,
    len: usize,
}

fn records(sec: domain::base::RecordSection<'_, Vec<u8>>) -> Vec<Rr> {
    sec.map(|rr| {
        let rec = rr
            .expect("record parses")
            .into_any_record::<AllRecordData<_, _>>()
            .expect("record data parses");
        (
            rec.owner().to_string(),
            rec.rtype(),
            rec.ttl().as_secs(),
            rec.data().to_string(),
        )
    })
    .collect()
}

fn parse_resp(bytes: &[u8]) -> Resp {
    let msg = Message::from_octets(bytes.to_vec()).expect("response has a header");
    let h = msg.header();
    assert!(h.qr(), "QR must be set");
    assert!(!h.ra(), "RA must be clear");
    let counts = msg.header_counts();
    let qd = if counts.qdcount() == 0 {
        None
    } else {
        let q = msg.sole_question().expect("one question");
        Some((q.qname().to_string(), q.qtype(), q.qclass()))
    };
    let answer = records(msg.answer().expect("answer section"));
    let authority = records(msg.authority().expect("authority section"));
    let additional: Vec<_> = msg
        .additional()
        .expect("additional section")
        .map(|r| r.expect("additional record"))
        .collect();
    assert!(additional.len() <= 1, "only OPT in additional");
    let opt = msg.opt().map(|o| {
        assert_eq!(additional[0].rtype(), Rtype::OPT);
        let ecs = o.as_ref().first::<ClientSubnet>();
        (o.udp_payload_size(), o.version(), o.dnssec_ok(), ecs)
    });
    // Counts consistent with what was there and nothing trailing: walking
    // every section must land exactly on the end.
    let mut end = msg
        .question()
        .answer()
        .unwrap()
        .next_section()
        .unwrap()
        .unwrap();
    for r in &mut end {
        r.unwrap();
    }
    let mut add = end.next_section().unwrap().unwrap();
    for r in &mut add {
        r.unwrap();
    }
    assert_eq!(add.pos(), bytes.len(), "no trailing bytes in response");
    Resp {
        id: h.id(),
        aa: h.aa(),
        tc: h.tc(),
        rd: h.rd(),
        cd: h.cd(),
        rcode: msg.opt_rcode().to_int(),
        opcode: h.opcode(),
        qd,
        answer,
        authority,
        opt,
        len: bytes.len(),
    }
}

fn ask(map: &AddressMap, q: &[u8], client: &str, t: Transport) -> (Outcome, Resp, Vec<u8>) {
    let mut out = Vec::new();
    let o = answer(map, q, ip(client), t, &mut out);
    let r = parse_resp(&out);
    if let Outcome::Answered { rcode, truncated } = o {
        assert_eq!(rcode as u16, r.rcode, "Outcome rcode matches the wire");
        assert_eq!(truncated, r.tc, "Outcome truncated matches the wire");
    }
    (o, r, out)
}

fn udp(map: &AddressMap, q: &[u8], client: &str) -> Resp {
    ask(map, q, client, Transport::Udp).1
}

fn a_data(r: &Resp) -> Vec<String> {
    r.answer.iter().map(|x| x.3.clone()).collect()
}

fn soa_authority(r: &Resp, zone: &str, ttl: u32) {
    assert_eq!(r.authority.len(), 1, "{r:?}");
    let (owner, t, got_ttl, _) = &r.authority[0];
    assert_eq!(owner, zone);
    assert_eq!(*t, Rtype::SOA);
    assert_eq!(*got_ttl, ttl);
}

#[test]
fn views_by_source_address() {
    let m = build(CONF);
    let q = query("upf.svc.example.", Rtype::A, None);
    for (client, want) in [
        ("10.1.0.5", "10.0.1.5"),        // site-a /16
        ("10.1.2.9", "10.0.2.5"),        // site-b /24 inside site-a's /16: longest wins
        ("10.1.0.7", "10.0.3.5"),        // canary exact /32
        ("::ffff:10.1.0.7", "10.0.3.5"), // IPv4-mapped IPv6 is IPv4
        ("10.2.200.1", "10.0.2.5"),      // site-b /16
        ("10.3.0.1", "10.0.9.5"),        // nothing covers: default
        ("fd00:a::5", "10.0.1.5"),       // site-a /48
        ("fd00:a::7", "10.0.3.5"),       // canary exact /128
        ("fd00:b::1", "10.0.9.5"),       // default
    ] {
        let r = udp(&m, &q, client);
        assert_eq!(r.rcode, 0, "{client}");
        assert_eq!(a_data(&r), vec![want.to_string()], "{client}");
        assert_eq!(r.answer[0].0, "upf.svc.example", "{client}");
        assert_eq!(r.answer[0].1, Rtype::A);
        assert_eq!(r.answer[0].2, 30, "zone TTL applies");
        assert!(r.aa && r.rd && !r.tc);
        assert!(r.authority.is_empty());
        assert!(r.opt.is_none(), "no OPT without EDNS in the query");
    }
}

#[test]
fn per_name_fallback_to_default() {
    let m = build(CONF);
    // canary has records at upf (A only): AAAA there is NODATA, not default's.
    let r = udp(
        &m,
        &query("upf.svc.example.", Rtype::AAAA, None),
        "10.1.0.7",
    );
    assert_eq!(r.rcode, 0);
    assert!(r.answer.is_empty());
    soa_authority(&r, "svc.example", 20);
    // site-a has its own AAAA
    let r = udp(
        &m,
        &query("upf.svc.example.", Rtype::AAAA, None),
        "10.1.0.5",
    );
    assert_eq!(a_data(&r), vec!["fd00:1::5"]);
    // site has records only in default: every view falls back to them
    for c in ["10.1.0.5", "10.2.0.5", "10.1.0.7", "192.0.2.1"] {
        let r = udp(&m, &query("site.svc.example.", Rtype::TXT, None), c);
        assert_eq!(a_data(&r), vec!["\"default\""], "{c}");
    }
    // SRV from site-a
    let r = udp(
        &m,
        &query("_pfcp._udp.svc.example.", Rtype::SRV, None),
        "10.1.0.5",
    );
    assert_eq!(a_data(&r), vec!["10 20 8805 upf.svc.example"]);
    // record TTL override
    let r = udp(
        &m,
        &query("only-a.svc.example.", Rtype::A, None),
        "10.1.0.5",
    );
    assert_eq!(r.answer[0].2, 5);
}

#[test]
fn nxdomain_and_nodata_with_soa() {
    let m = build(CONF);
    let r = udp(&m, &query("nope.svc.example.", Rtype::A, None), "10.1.0.5");
    assert_eq!(r.rcode, 3);
    assert!(r.aa);
    assert!(r.answer.is_empty());
    soa_authority(&r, "svc.example", 20); // min(ttl 30, minimum 20)
                                          // deeper unknown names too
    let r = udp(&m, &query("a.b.c.svc.example.", Rtype::A, None), "10.1.0.5");
    assert_eq!(r.rcode, 3);
    soa_authority(&r, "svc.example", 20);

    // name only site-a has: NXDOMAIN for site-b and default clients
    let r = udp(
        &m,
        &query("only-a.svc.example.", Rtype::A, None),
        "10.2.0.1",
    );
    assert_eq!(r.rcode, 3);
    let r = udp(
        &m,
        &query("only-a.svc.example.", Rtype::A, None),
        "10.3.0.1",
    );
    assert_eq!(r.rcode, 3);
    // existing name, other type: NODATA
    let r = udp(
        &m,
        &query("only-a.svc.example.", Rtype::MX, None),
        "10.1.0.5",
    );
    assert_eq!((r.rcode, r.answer.len()), (0, 0));
    soa_authority(&r, "svc.example", 20);

    // empty non-terminal of a site-a name: NODATA for site-a, NXDOMAIN else
    let r = udp(&m, &query("_udp.svc.example.", Rtype::A, None), "10.1.0.5");
    assert_eq!((r.rcode, r.answer.len()), (0, 0));
    soa_authority(&r, "svc.example", 20);
    let r = udp(&m, &query("_udp.svc.example.", Rtype::A, None), "10.2.0.5");
    assert_eq!(r.rcode, 3);

    // nested zone: its own SOA (min(60, 120) = 60)
    let r = udp(&m, &query("y.sub.svc.example.", Rtype::A, None), "10.3.0.1");
    assert_eq!(r.rcode, 3);
    soa_authority(&r, "sub.svc.example", 60);
    let r = udp(&m, &query("x.sub.svc.example.", Rtype::A, None), "10.3.0.1");
    assert_eq!(a_data(&r), vec!["10.0.8.8"]);
    assert_eq!(r.answer[0].2, 60, "nested zone's TTL");
}

#[test]
fn apex_soa_and_ns() {
    let m = build(CONF);
    let r = udp(&m, &query("svc.example.", Rtype::SOA, None), "10.1.0.5");
    assert_eq!(r.rcode, 0);
    assert_eq!(r.answer.len(), 1);
    assert_eq!(r.answer[0].2, 30);
    assert_eq!(
        r.answer[0].3,
        "ns1.svc.example. hostmaster.svc.example. 7 3600 600 86400 20"
    );
    let r = udp(&m, &query("svc.example.", Rtype::NS, None), "10.1.0.5");
    let mut ns = a_data(&r);
    ns.sort();
    assert_eq!(ns, vec!["ns1.svc.example.", "ns2.svc.example."]);
    let r = udp(&m, &query("svc.example.", Rtype::A, None), "10.1.0.5");
    assert_eq!((r.rcode, r.answer.len()), (0, 0));
    soa_authority(&r, "svc.example", 20);
    // a zone without ns: NODATA for NS
    let r = udp(&m, &query("sub.svc.example.", Rtype::NS, None), "10.1.0.5");
    assert_eq!((r.rcode, r.answer.len()), (0, 0));
}

#[test]
fn refused_outside_zones_other_classes_and_transfers() {
    let m = build(CONF);
    for q in [
        query("example.org.", Rtype::A, None),
        query("example.", Rtype::A, None),
        query(".", Rtype::NS, None),
        query_full(9, false, "upf.svc.example.", Rtype::A, Class::CH, None),
        query_full(9, false, "upf.svc.example.", Rtype::A, Class::ANY, None),
        query("svc.example.", Rtype::AXFR, None),
        query("svc.example.", Rtype::IXFR, None),
    ] {
        let (o, r, _) = ask(&m, &q, "10.1.0.5", Transport::Tcp);
        assert_eq!(
            o,
            Outcome::Answered {
                rcode: 5,
                truncated: false
            }
        );
        assert!(!r.aa);
        assert!(r.qd.is_some(), "question echoed");
        assert!(r.answer.is_empty() && r.authority.is_empty());
    }
}

#[test]
fn any_returns_every_record_of_the_name() {
    let m = build(CONF);
    let r = udp(&m, &query("upf.svc.example.", Rtype::ANY, None), "10.1.0.5");
    let mut got: Vec<_> = r.answer.iter().map(|x| (x.1, x.3.clone())).collect();
    got.sort_by_key(|x| x.0.to_int());
    assert_eq!(
        got,
        vec![
            (Rtype::A, "10.0.1.5".to_string()),
            (Rtype::AAAA, "fd00:1::5".to_string())
        ]
    );
    let r = udp(&m, &query("svc.example.", Rtype::ANY, None), "10.1.0.5");
    assert_eq!(r.answer.len(), 3, "SOA + 2 NS");
}

#[test]
fn header_echo_and_case_preserved() {
    let m = build(CONF);
    for (id, rd) in [(0u16, false), (0xbeef, true), (0xffff, false)] {
        let mut q = query_full(id, rd, "UpF.SvC.ExAmPlE.", Rtype::A, Class::IN, None);
        q[3] |= 0x10; // CD
        let (_, r, out) = ask(&m, &q, "10.1.0.5", Transport::Udp);
        assert_eq!(r.id, id);
        assert_eq!(r.rd, rd);
        assert!(r.cd);
        assert_eq!(r.opcode, Opcode::QUERY);
        assert_eq!(&out[12..q.len()], &q[12..], "question echoed byte for byte");
        assert_eq!(r.qd.as_ref().unwrap().0, "UpF.SvC.ExAmPlE");
        assert_eq!(a_data(&r), vec!["10.0.1.5"]);
        // the answer owner points at the question: same spelling
        assert_eq!(r.answer[0].0, "UpF.SvC.ExAmPlE");
    }
    // negative answers point into the question for the apex, too
    let q = query("NoPe.SVC.example.", Rtype::A, None);
    let r = udp(&m, &q, "10.1.0.5");
    assert_eq!(r.rcode, 3);
    assert_eq!(r.authority[0].0, "SVC.example");
}

#[test]
fn edns_opt_payload_do_and_badvers() {
    let m = build(CONF);
    let q = query(
        "upf.svc.example.",
        Rtype::A,
        Some(QOpt {
            udp: 4096,
            dnssec_ok: true,
            ..Default::default()
        }),
    );
    let r = udp(&m, &q, "10.1.0.5");
    assert_eq!(r.rcode, 0);
    assert_eq!(
        r.opt,
        Some((1232, 0, true, None)),
        "we advertise max_udp_payload"
    );
    let r = udp(&m, &query("upf.svc.example.", Rtype::A, edns()), "10.1.0.5");
    assert_eq!(r.opt.map(|o| o.2), Some(false));

    let q = query(
        "upf.svc.example.",
        Rtype::A,
        Some(QOpt {
            udp: 1232,
            version: 1,
            ..Default::default()
        }),
    );
    let (o, r, _) = ask(&m, &q, "10.1.0.5", Transport::Udp);
    assert_eq!(
        o,
        Outcome::Answered {
            rcode: 16,
            truncated: false
        }
    );
    assert_eq!(r.rcode, 16, "BADVERS");
    assert_eq!(r.opt.map(|o| o.1), Some(0), "we speak version 0");
    assert!(r.answer.is_empty());
    // NXDOMAIN with EDNS keeps the OPT
    let r = udp(
        &m,
        &query("nope.svc.example.", Rtype::A, edns()),
        "10.1.0.5",
    );
    assert_eq!(r.rcode, 3);
    assert!(r.opt.is_some());
}

#[test]
fn truncation_over_udp_and_full_answer_over_tcp() {
    let m = build(&conf_with_big());
    // 100 A records: 12 + 21 + 100*16 = 1633 bytes
    let plain = query("big.svc.example.", Rtype::A, None);
    let (o, r, out) = ask(&m, &plain, "10.3.0.1", Transport::Udp);
    assert_eq!(
        o,
        Outcome::Answered {
            rcode: 0,
            truncated: true
        }
    );
    assert!(r.tc && r.aa);
    assert!(r.answer.is_empty() && r.authority.is_empty() && r.opt.is_none());
    assert_eq!(out.len(), plain.len(), "question only");
    // EDNS 4096 is capped at max_udp_payload 1232: still truncated, OPT kept
    let q = query(
        "big.svc.example.",
        Rtype::A,
        Some(QOpt {
            udp: 4096,
            ..Default::default()
        }),
    );
    let (o, r, _) = ask(&m, &q, "10.3.0.1", Transport::Udp);
    assert_eq!(
        o,
        Outcome::Answered {
            rcode: 0,
            truncated: true
        }
    );
    assert_eq!(r.opt.map(|o| o.0), Some(1232));
    // TCP: everything
    let (o, r, _) = ask(&m, &plain, "10.3.0.1", Transport::Tcp);
    assert_eq!(
        o,
        Outcome::Answered {
            rcode: 0,
            truncated: false
        }
    );
    assert_eq!(r.answer.len(), 100);
    assert!(r.len > 1232);

    // 2 records fit in 512; advertised sizes below 512 count as 512
    let q = query(
        "many.svc.example.",
        Rtype::A,
        Some(QOpt {
            udp: 100,
            ..Default::default()
        }),
    );
    let (o, r, _) = ask(&m, &q, "10.3.0.1", Transport::Udp);
    assert_eq!(
        o,
        Outcome::Answered {
            rcode: 0,
            truncated: false
        }
    );
    assert_eq!(r.answer.len(), 2);
}

#[test]
fn truncation_limit_is_exact() {
    // A TXT whose answer is exactly 512 bytes fits; one byte more does not.
    let q = query("t.svc.example.", Rtype::TXT, None);
    // header 12 + question (q.len()-12) + RR: 2 + 10 + rdata (n bytes in
    // two character-strings, 256 < n < 510: two length bytes)
    let fixed = 12 + (q.len() - 12) + 12 + 2;
    for (n, tc) in [(512 - fixed, false), (512 - fixed + 1, true)] {
        let m = build(&conf_with_txt(&"x".repeat(n)));
        let (o, _, out) = ask(&m, &q, "10.3.0.1", Transport::Udp);
        assert_eq!(
            o,
            Outcome::Answered {
                rcode: 0,
                truncated: tc
            },
            "n={n}"
        );
        if !tc {
            assert_eq!(out.len(), 512);
        }
    }
}

#[test]
fn long_txt_is_split_into_255_byte_strings() {
    let m = build(&conf_with_txt(&"y".repeat(300)));
    let (_, r, out) = ask(
        &m,
        &query("t.svc.example.", Rtype::TXT, None),
        "1.1.1.1",
        Transport::Tcp,
    );
    let msg = Message::from_octets(out).unwrap();
    let rr = msg
        .answer()
        .unwrap()
        .limit_to::<domain::rdata::Txt<_>>()
        .next()
        .unwrap()
        .unwrap();
    let strings: Vec<usize> = rr.data().iter().map(|s| s.len()).collect();
    assert_eq!(strings, vec![255, 45]);
    assert_eq!(r.answer.len(), 1);
}

#[test]
fn ecs_from_trusted_resolver_picks_view_and_scope() {
    let m = build(CONF);
    let trusted = "192.0.2.53";
    for (addr, len, want, scope) in [
        ("10.1.2.0", 24, "10.0.2.5", 24), // site-b's /24, nothing inside it
        ("10.1.0.7", 32, "10.0.3.5", 32), // canary /32
        // site-a's /16 has other views' prefixes inside (site-b's
        // 10.1.2.0/24, canary's 10.1.0.7): the scope is the widest block
        // around the subnet's first address that excludes them (RFC 7871
        // §7.2.1), 10.1.0.0/30, longer than the source
        ("10.1.0.0", 24, "10.0.1.5", 30),
        ("10.1.0.0", 20, "10.0.1.5", 30),
        ("10.1.0.8", 29, "10.0.1.5", 29),
        ("10.2.0.0", 24, "10.0.2.5", 16), // site-b /16, nothing inside
        ("10.3.0.0", 16, "10.0.9.5", 16), // default: 10.3/16 is all default
        ("10.0.0.0", 12, "10.0.9.5", 16), // 10.0/16, not the /12 holding 10.1 and 10.2
        ("10.4.0.0", 24, "10.0.9.5", 14), // 10.4.0.0/14 is all default
        ("0.0.0.0", 0, "10.0.9.5", 0),    // "don't use my address"
    ] {
        let q = query("upf.svc.example.", Rtype::A, ecs(addr, len));
        let r = udp(&m, &q, trusted);
        assert_eq!(a_data(&r), vec![want], "{addr}/{len}");
        let e = r.opt.as_ref().and_then(|o| o.3).expect("ECS echoed");
        assert_eq!(e.addr(), ip(addr));
        assert_eq!(e.source_prefix_len(), len);
        assert_eq!(e.scope_prefix_len(), scope, "{addr}/{len}");
    }
    // IPv6 from the IPv6 trusted resolver
    let q = query("upf.svc.example.", Rtype::A, ecs("fd00:a::", 64));
    let r = udp(&m, &q, "2001:db8::53");
    assert_eq!(a_data(&r), vec!["10.0.1.5"]);
    let e = r.opt.unwrap().3.unwrap();
    assert_eq!(
        e.scope_prefix_len(),
        126,
        "site-a /48 holds canary's fd00:a::7/128: fd00:a::/126 excludes it"
    );
    // an IPv4-mapped IPv6 subnet selects like the IPv4 one
    let q = query("upf.svc.example.", Rtype::A, ecs("::ffff:10.1.2.0", 120));
    let r = udp(&m, &q, trusted);
    assert_eq!(a_data(&r), vec!["10.0.2.5"]);
    assert_eq!(r.opt.unwrap().3.unwrap().scope_prefix_len(), 120);
    let q = query("upf.svc.example.", Rtype::A, ecs("::ffff:10.1.0.0", 112));
    let r = udp(&m, &q, trusted);
    assert_eq!(
        a_data(&r),
        vec!["10.0.1.5"],
        "/16 cannot pick the /24 inside"
    );
    // NXDOMAIN answers carry the ECS echo too
    let q = query("only-a.svc.example.", Rtype::A, ecs("10.2.0.0", 24));
    let r = udp(&m, &q, trusted);
    assert_eq!(r.rcode, 3);
    assert_eq!(r.opt.unwrap().3.unwrap().scope_prefix_len(), 16);
}

#[test]
fn ecs_from_untrusted_client_is_ignored_and_echoed_with_scope_zero() {
    let m = build(CONF);
    let q = query("upf.svc.example.", Rtype::A, ecs("10.2.0.0", 24));
    let r = udp(&m, &q, "10.1.0.5");
    assert_eq!(
        a_data(&r),
        vec!["10.0.1.5"],
        "client's own view, not the ECS one"
    );
    let e = r.opt.unwrap().3.unwrap();
    assert_eq!((e.source_prefix_len(), e.scope_prefix_len()), (24, 0));
    // trusted resolver without ECS: its own address decides (default here)
    let r = udp(
        &m,
        &query("upf.svc.example.", Rtype::A, edns()),
        "192.0.2.53",
    );
    assert_eq!(a_data(&r), vec!["10.0.9.5"]);
    assert_eq!(r.opt.unwrap().3, None);
}

#[test]
fn dropped_packets() {
    let m = build(CONF);
    let mut out = vec![1, 2, 3];
    for n in 0..12 {
        let q = vec![0u8; n];
        assert_eq!(
            answer(&m, &q, ip("10.1.0.5"), Transport::Udp, &mut out),
            Outcome::Dropped(DropReason::TooShort)
        );
        assert!(out.is_empty());
    }
    let mut q = query("upf.svc.example.", Rtype::A, None);
    q[2] |= 0x80;
    assert_eq!(
        answer(&m, &q, ip("10.1.0.5"), Transport::Udp, &mut out),
        Outcome::Dropped(DropReason::NotAQuery)
    );
    assert!(out.is_empty());
}

#[test]
fn notimp_for_other_opcodes() {
    let m = build(CONF);
    for opcode in [1u8, 2, 4, 5, 15] {
        let mut q = query("upf.svc.example.", Rtype::A, None);
        q[2] = (q[2] & 0x87) | (opcode << 3);
        let (o, r, _) = ask(&m, &q, "10.1.0.5", Transport::Udp);
        assert_eq!(
            o,
            Outcome::Answered {
                rcode: 4,
                truncated: false
            }
        );
        assert_eq!(r.opcode.to_int(), opcode, "opcode copied");
        assert_eq!(r.id, 0x1234);
    }
}

/// FORMERR with or without the question echoed.
fn formerr(m: &AddressMap, q: &[u8], echo: bool) {
    let (o, r, _) = ask(m, q, "10.1.0.5", Transport::Udp);
    assert_eq!(
        o,
        Outcome::Answered {
            rcode: 1,
            truncated: false
        },
        "{q:02x?}"
    );
    assert_eq!(r.qd.is_some(), echo, "{q:02x?}");
    assert!(r.answer.is_empty() && r.opt.is_none());
    assert_eq!(r.id, u16::from_be_bytes([q[0], q[1]]));
}

#[test]
fn formerr_for_malformed_queries() {
    let m = build(CONF);
    let base = query("upf.svc.example.", Rtype::A, None);
    let hdr = |qd: u16, an: u16, ns: u16, ar: u16| {
        let mut h = vec![0xab, 0xcd, 0x01, 0x00];
        for c in [qd, an, ns, ar] {
            h.extend_from_slice(&c.to_be_bytes());
        }
        h
    };
    // qdcount 0 and 2
    formerr(&m, &hdr(0, 0, 0, 0), false);
    let mut two = hdr(2, 0, 0, 0);
    two.extend_from_slice(&base[12..]);
    two.extend_from_slice(&base[12..]);
    formerr(&m, &two, false);
    // truncated question at every length
    for cut in 12..base.len() {
        formerr(&m, &base[..cut], false);
    }
    // label length 64 (0x40 label type), 0x80 type, a 0xC0 pointer
    for bad in [0x40u8, 0x80, 0xC0] {
        let mut q = hdr(1, 0, 0, 0);
        q.extend_from_slice(&[3, b'u', b'p', b'f', bad, 12, 0, 0, 1, 0, 1]);
        formerr(&m, &q, false);
    }
    // pointer to itself in the question (a loop)
    let mut q = hdr(1, 0, 0, 0);
    q.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    formerr(&m, &q, false);
    // a name longer than 255 bytes
    let mut q = hdr(1, 0, 0, 0);
    for _ in 0..5 {
        q.push(63);
        q.extend_from_slice(&[b'a'; 63]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    formerr(&m, &q, false);
    // trailing garbage after the question
    let mut q = base.clone();
    q.push(0);
    formerr(&m, &q, true);
    // answer / authority records in a query
    for (i, _) in [(6usize, ()), (8, ())] {
        let mut q = base.clone();
        q[i + 1] = 1;
        formerr(&m, &q, true);
    }
    // arcount says 1 but nothing follows
    let mut q = base.clone();
    q[11] = 1;
    formerr(&m, &q, true);
}

#[test]
fn formerr_for_bad_opt_and_ecs() {
    let m = build(CONF);
    let with_opt = query("upf.svc.example.", Rtype::A, edns());
    let qend = with_opt.len() - 11;
    // two OPT records
    let mut q = with_opt.clone();
    q[11] = 2;
    q.extend_from_slice(&with_opt[qend..]);
    formerr(&m, &q, true);
    // OPT not owned by the root: owner "a."
    let mut q = with_opt[..qend].to_vec();
    q.extend_from_slice(&[1, b'a', 0]);
    q.extend_from_slice(&with_opt[qend + 1..]);
    formerr(&m, &q, true);
    // OPT rdlen past the end, and an option overrunning the rdata
    let mut q = with_opt.clone();
    q[qend + 10] = 4;
    formerr(&m, &q, true);
    let mut q = with_opt.clone();
    q[qend + 10] = 4;
    q.extend_from_slice(&[0, 10, 0, 9]);
    formerr(&m, &q, true);
    // trailing byte after OPT
    let mut q = with_opt.clone();
    q.push(0);
    formerr(&m, &q, true);

    let ecs_opt = |data: &[u8]| {
        let mut q = with_opt[..qend].to_vec();
        q.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0]);
        q.extend_from_slice(&((data.len() + 4) as u16).to_be_bytes());
        q.extend_from_slice(&[0, 8]);
        q.extend_from_slice(&(data.len() as u16).to_be_bytes());
        q.extend_from_slice(data);
        q
    };
    // sanity: a well-formed one is answered
    let (o, _, _) = ask(
        &m,
        &ecs_opt(&[0, 1, 24, 0, 10, 1, 2]),
        "10.1.0.5",
        Transport::Udp,
    );
    assert_eq!(
        o,
        Outcome::Answered {
            rcode: 0,
            truncated: false
        }
    );
    for bad in [
        &[0, 3, 24, 0, 10, 1, 2][..],   // unknown family
        &[0, 1, 24, 0, 10, 1, 2, 0],    // address longer than the prefix needs
        &[0, 1, 24, 0, 10, 1],          // shorter
        &[0, 1, 23, 0, 10, 1, 3],       // bit set past /23
        &[0, 1, 33, 0, 10, 1, 2, 3, 4], // prefix longer than IPv4
        &[0, 2, 129, 0],                // prefix longer than IPv6
        &[0, 1],                        // truncated option
    ] {
        formerr(&m, &ecs_opt(bad), true);
    }
    // two ECS options
    let mut q = with_opt[..qend].to_vec();
    q.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 22]);
    for _ in 0..2 {
        q.extend_from_slice(&[0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2]);
    }
    formerr(&m, &q, true);
}

#[test]
fn slow_path_additional_sections() {
    let m = build(CONF);
    let with_opt = query("upf.svc.example.", Rtype::A, edns());
    let qend = with_opt.len() - 11;
    // OPT followed by another record (owner compressed to the question)
    let mut q = with_opt.clone();
    q[11] = 2;
    q.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 0, 0, 2, 1, b'x']);
    let r = udp(&m, &q, "10.1.0.5");
    assert_eq!(a_data(&r), vec!["10.0.1.5"]);
    assert!(r.opt.is_some(), "OPT found by the slow path");
    // record first, then OPT
    let mut q = with_opt[..qend].to_vec();
    q[11] = 2;
    q.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(&with_opt[qend..]);
    let r = udp(&m, &q, "10.1.0.5");
    assert!(r.opt.is_some());
    // an additional record without OPT: no OPT back
    let mut q = with_opt[..qend].to_vec();
    q[11] = 1;
    q.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 0, 0, 0]);
    let r = udp(&m, &q, "10.1.0.5");
    assert_eq!(r.rcode, 0);
    assert!(r.opt.is_none());
    // compression loop in the additional section: pointer to itself
    let mut q = with_opt[..qend].to_vec();
    q[11] = 1;
    let here = q.len() as u8;
    q.extend_from_slice(&[0xC0, here, 0, 16, 0, 1, 0, 0, 0, 0, 0, 0]);
    formerr(&m, &q, true);
    // forward pointer
    let mut q = with_opt[..qend].to_vec();
    q[11] = 1;
    let fwd = q.len() as u8 + 2;
    q.extend_from_slice(&[0xC0, fwd, 0, 0, 16, 0, 1, 0, 0, 0, 0, 0, 0]);
    formerr(&m, &q, true);
}

/// Issue 16, finding 1: a chain of compression pointers in one record's
/// data, with later owners pointing at its end. Owner names are skipped,
/// never followed, so the chain costs nothing; more records than
/// `MAX_ADDITIONAL` are FORMERR without being walked.
fn pointer_chain_query(base: &[u8], owners: u16, links: usize) -> Vec<u8> {
    let mut q = base.to_vec();
    q[10..12].copy_from_slice(&(1 + owners).to_be_bytes());
    // A TXT-typed record (owner: the question name) whose RDATA is the chain:
    // link i is a pointer to link i-1, link 0 points at the question name.
    q.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 0]);
    q.extend_from_slice(&((links * 2) as u16).to_be_bytes());
    let chain_start = q.len();
    for i in 0..links {
        let target = if i == 0 {
            12
        } else {
            chain_start + 2 * (i - 1)
        };
        q.extend_from_slice(&(0xC000 | target as u16).to_be_bytes());
    }
    let chain_end = chain_start + 2 * (links - 1);
    for _ in 0..owners {
        q.extend_from_slice(&(0xC000 | chain_end as u16).to_be_bytes());
        q.extend_from_slice(&[0, 16, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
    q
}

#[test]
fn compression_pointer_chains_are_not_followed() {
    let m = build(CONF);
    let base = query("upf.svc.example.", Rtype::A, None);
    // The issue's attack: ~300 owners into a 254-link chain in 4 KB: FORMERR.
    let attack = pointer_chain_query(&base, 300, 254);
    assert!(attack.len() > 3000, "{}", attack.len());
    formerr(&m, &attack, true);
    // As many records as allowed, each owner a pointer into the chain: the
    // owners are not decompressed, the query is answered.
    let most = crate::dns::parse::MAX_ADDITIONAL - 1;
    let r = udp(&m, &pointer_chain_query(&base, most, 254), "10.1.0.5");
    assert_eq!(r.rcode, 0);
    assert_eq!(a_data(&r), vec!["10.0.1.5"]);
    // One more record than allowed: FORMERR.
    formerr(&m, &pointer_chain_query(&base, most + 1, 2), true);
    // An owner pointing at itself or forward is still FORMERR (tested in
    // slow_path_additional_sections); a pointer to a root label is not an
    // OPT owner (RFC 6891: the owner is the root, one zero byte).
    let with_opt = query("upf.svc.example.", Rtype::A, edns());
    let qend = with_opt.len() - 11;
    let mut q = with_opt[..qend].to_vec();
    let root_at = q.len() - 5; // the question name's root label
    assert_eq!(q[root_at], 0);
    q[11] = 1;
    q.extend_from_slice(&(0xC000 | root_at as u16).to_be_bytes());
    q.extend_from_slice(&with_opt[qend + 1..]);
    formerr(&m, &q, true);
}

#[test]
fn output_buffer_is_reused() {
    let m = build(CONF);
    let q = query("upf.svc.example.", Rtype::A, ecs("10.1.2.0", 24));
    let mut out = Vec::with_capacity(4096);
    let ptr = out.as_ptr();
    for _ in 0..100 {
        answer(&m, &q, ip("192.0.2.53"), Transport::Udp, &mut out);
        assert_eq!(out.as_ptr(), ptr, "no reallocation");
    }
    assert_eq!(out.capacity(), 4096);
}

#[test]
fn no_default_view_means_only_apex_data_for_uncovered_clients() {
    let conf = CONF.replace("name = \"default\"", "name = \"fallback\"");
    let m = build(&conf);
    assert_eq!(m.default_view(), None);
    let r = udp(&m, &query("upf.svc.example.", Rtype::A, None), "10.3.0.1");
    assert_eq!(r.rcode, 3);
    let r = udp(&m, &query("svc.example.", Rtype::SOA, None), "10.3.0.1");
    assert_eq!(r.answer.len(), 1);
    // covered clients are unaffected
    let r = udp(&m, &query("upf.svc.example.", Rtype::A, None), "10.1.0.5");
    assert_eq!(a_data(&r), vec!["10.0.1.5"]);
}

// ----- properties -----

/// (id, lowercase qname wire, qtype, qclass, OPT facts) as `domain` sees them.
type DomainView = (
    u16,
    Vec<u8>,
    u16,
    u16,
    Option<(u16, u8, bool, Option<ClientSubnet>)>,
);

/// What our parser extracts, compared with `domain`'s view of the same bytes.
fn domain_view(bytes: &[u8]) -> Option<DomainView> {
    let msg = Message::from_octets(bytes).ok()?;
    let q = msg.sole_question().ok()?;
    let mut wire = Vec::new();
    for l in q.qname().iter() {
        wire.push(l.len() as u8);
        wire.extend(l.as_slice().iter().map(|b| b.to_ascii_lowercase()));
    }
    let opt = msg.opt().map(|o| {
        (
            o.udp_payload_size(),
            o.version(),
            o.dnssec_ok(),
            o.as_ref().first::<ClientSubnet>(),
        )
    });
    Some((
        msg.header().id(),
        wire,
        q.qtype().to_int(),
        q.qclass().to_int(),
        opt,
    ))
}

fn arb_label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-]{1,20}"
}

fn arb_query() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u16>(),
        any::<bool>(),
        prop::collection::vec(arb_label(), 0..5),
        prop_oneof![
            Just(1u16),
            Just(28),
            Just(33),
            Just(16),
            Just(255),
            any::<u16>()
        ],
        prop::option::of((
            any::<u16>(),
            0u8..3,
            any::<bool>(),
            prop::option::of(prop_oneof![
                (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| ClientSubnet::new(
                    l,
                    0,
                    IpAddr::from(a)
                )),
                (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, l)| ClientSubnet::new(
                    l,
                    0,
                    IpAddr::from(a)
                )),
            ]),
        )),
    )
        .prop_map(|(id, rd, labels, qtype, opt)| {
            let mut name = labels.join(".");
            name.push_str(if labels.is_empty() {
                "."
            } else {
                ".svc.example."
            });
            query_full(
                id,
                rd,
                &name,
                Rtype::from_int(qtype),
                Class::IN,
                opt.map(|(udp, version, dnssec_ok, ecs)| QOpt {
                    udp,
                    version,
                    dnssec_ok,
                    ecs,
                }),
            )
        })
}

/// A valid query with a few bytes flipped, cut or appended.
fn arb_mangled() -> impl Strategy<Value = Vec<u8>> {
    (
        arb_query(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(mut q, flips, cut, tail)| {
            for (i, b) in flips {
                let i = i.index(q.len());
                q[i] = b;
            }
            if let Some(c) = cut {
                q.truncate(c.index(q.len() + 1));
            }
            q.extend_from_slice(&tail);
            q
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bytes: never a panic; a response, when there is one, parses
    /// and echoes the ID.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let m = build(CONF);
        let mut out = Vec::new();
        for t in [Transport::Udp, Transport::Tcp] {
            match answer(&m, &bytes, ip("192.0.2.53"), t, &mut out) {
                Outcome::Dropped(_) => prop_assert!(out.is_empty()),
                Outcome::Answered { .. } => {
                    let r = parse_resp(&out);
                    prop_assert_eq!(r.id, u16::from_be_bytes([bytes[0], bytes[1]]));
                }
            }
        }
    }

    /// Our parse of well-formed and mangled queries agrees with `domain`:
    /// whatever we accept, domain accepts with the same fields; valid
    /// queries we never reject.
    #[test]
    fn parser_agrees_with_domain(q in prop_oneof![arb_query(), arb_mangled()]) {
        let mut buf = [0u8; crate::addrmap::names::NAME_BUF];
        let ours = parse::parse(&q, &mut buf);
        let theirs = domain_view(&q);
        if let Ok(p) = &ours {
            let t = theirs.clone();
            prop_assert!(t.is_some(), "we accepted what domain rejects: {:02x?}", q);
            let (id, lname, qtype, qclass, opt) = t.unwrap();
            prop_assert_eq!(p.id, id);
            prop_assert_eq!(&buf[..p.qname_len], &lname[..]);
            prop_assert_eq!((p.qtype, p.qclass), (qtype, qclass));
            let ours_opt = p.edns.map(|e| (e.udp_size, e.version, e.dnssec_ok, e.ecs.map(|x| (x.addr, x.source_len))));
            let theirs_opt = opt.map(|(u, v, d, e)| (u, v, d, e.map(|x| (x.addr(), x.source_prefix_len()))));
            prop_assert_eq!(ours_opt, theirs_opt);
        }
    }

    #[test]
    fn well_formed_queries_are_never_formerr(q in arb_query()) {
        let m = build(CONF);
        let mut out = Vec::new();
        let o = answer(&m, &q, ip("192.0.2.53"), Transport::Udp, &mut out);
        let Outcome::Answered { rcode, .. } = o else { panic!("dropped a valid query") };
        prop_assert_ne!(rcode, 1);
        let r = parse_resp(&out);
        prop_assert!(r.qd.is_some());
        let qend = domain_qend(&q);
        prop_assert_eq!(&out[12..qend], &q[12..qend], "question echoed");
    }

    /// Every truncation of a valid query is answered with FORMERR or dropped.
    #[test]
    fn truncated_queries(q in arb_query(), cut in any::<prop::sample::Index>()) {
        let m = build(CONF);
        let n = cut.index(q.len());
        let mut out = Vec::new();
        match answer(&m, &q[..n], ip("10.1.0.5"), Transport::Udp, &mut out) {
            Outcome::Dropped(DropReason::TooShort) => prop_assert!(n < 12),
            Outcome::Answered { rcode, .. } => {
                prop_assert_eq!(rcode, 1);
                parse_resp(&out);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

/// End of the question of a well-formed query.
fn domain_qend(q: &[u8]) -> usize {
    let mut i = 12;
    while q[i] != 0 {
        i += q[i] as usize + 1;
    }
    i + 5
}

/// The view `answer_with_client_view` hands the metrics is the view of the
/// client's address whenever it gives one, and it gives none when an ECS
/// subnet chose the view; the answer bytes are those of `answer`.
#[test]
fn the_client_view_reported_is_the_clients_own() {
    let map = build(CONF);
    let clients = [
        "10.1.0.7",
        "10.1.2.9",
        "10.2.3.4",
        "10.1.200.1",
        "192.0.2.99",
        "fd00:a::7",
        "::1",
    ];
    let names = [
        "upf.svc.example.",
        "site.svc.example.",
        "only-a.svc.example.",
        "nope.svc.example.",
        "x.sub.svc.example.",
    ];
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    let mut reported = 0;
    for c in clients {
        for n in names {
            let q = query(n, Rtype::A, None);
            let (o, seen) = answer_with_client_view(&map, &q, ip(c), Transport::Udp, &mut out_a);
            assert_eq!(o, answer(&map, &q, ip(c), Transport::Udp, &mut out_b));
            assert_eq!(out_a, out_b);
            if let Some(view) = seen {
                assert_eq!(view, map.select_view(ip(c)).view, "{c} {n}");
                reported += 1;
            }
        }
    }
    assert!(reported > 0, "names with per-view records need the view");
    // A trusted resolver's ECS subnet picks the view: not the client's.
    let q = query("upf.svc.example.", Rtype::A, ecs("10.2.0.1", 24));
    let (_, seen) = answer_with_client_view(&map, &q, ip("192.0.2.53"), Transport::Udp, &mut out_a);
    assert_eq!(seen, None);
}
