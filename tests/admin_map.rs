//! The live address-map API, end to end against the real binary: an
//! instance /32 added through the API is answered at once (real `dig -b`),
//! and still after a restart; changes racing with query load never yield a
//! wrong or mixed answer; a `kill -9` right after a 200 loses nothing; bad
//! requests apply nothing; `POST /v1/reload` does what SIGHUP does.

mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const INSTANCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);
const SITE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 78);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn put_instance_view(s: &Shardgate, view: &str, prefix: &str, answer: &str) -> u64 {
    let body = format!(
        r#"{{"prefixes":["{prefix}"],"records":[{{"name":"upf.svc.example.","type":"A","data":"{answer}"}}]}}"#
    );
    let (status, resp) = s.http("PUT", &format!("/v1/views/{view}"), Some(&body));
    assert_eq!(status, 200, "{resp}");
    json(&resp)["version"].as_u64().unwrap()
}

#[test]
fn an_instance_added_through_the_api_is_answered_at_once_and_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let cfg = config(ports, shard_count(), "");
    let mut s = Shardgate::start(dir.path(), ports, &cfg);
    assert_eq!(
        dig(ports.dns, "127.0.0.77", "upf.svc.example.", false),
        vec!["10.0.1.5"]
    );

    let v = put_instance_view(&s, "inst-77", "127.0.0.77", "10.77.0.1");
    assert!(v >= 2);
    // At once, over UDP and TCP, from the instance; its neighbours unchanged.
    assert_eq!(
        dig(ports.dns, "127.0.0.77", "upf.svc.example.", false),
        vec!["10.77.0.1"]
    );
    assert_eq!(
        dig(ports.dns, "127.0.0.77", "upf.svc.example.", true),
        vec!["10.77.0.1"]
    );
    assert_eq!(
        dig(ports.dns, "127.0.0.78", "upf.svc.example.", false),
        vec!["10.0.1.5"]
    );
    assert_eq!(
        dig(ports.dns, "127.0.1.1", "upf.svc.example.", false),
        vec!["10.0.9.5"]
    );

    // Listed by the API.
    let (status, body) = s.http("GET", "/v1/views/inst-77", None);
    assert_eq!(status, 200);
    assert_eq!(
        json(&body)["prefixes"],
        serde_json::json!(["127.0.0.77/32"])
    );
    let (_, body) = s.http("GET", "/v1/views", None);
    let names: Vec<String> = json(&body)["views"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["site", "default", "inst-77"]);

    // A second instance joins the view by prefix; a record is added.
    let (status, body) = s.http(
        "POST",
        "/v1/views/inst-77/prefixes",
        Some(r#"{"prefix":"127.0.0.79"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.http(
        "POST",
        "/v1/views/inst-77/records",
        Some(r#"{"name":"upf.svc.example.","type":"A","data":"10.77.0.2"}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        dig(ports.dns, "127.0.0.79", "upf.svc.example.", false),
        vec!["10.77.0.1", "10.77.0.2"]
    );

    // Restart: the changes are still there.
    s.stop();
    let s = Shardgate::start(dir.path(), ports, &cfg);
    assert_eq!(
        dig(ports.dns, "127.0.0.77", "upf.svc.example.", false),
        vec!["10.77.0.1", "10.77.0.2"]
    );
    assert_eq!(
        dig(ports.dns, "127.0.0.79", "upf.svc.example.", true),
        vec!["10.77.0.1", "10.77.0.2"]
    );
    assert_eq!(
        dig(ports.dns, "127.0.0.78", "upf.svc.example.", false),
        vec!["10.0.1.5"]
    );

    // Removing the prefix sends the instance back to its site's answer.
    let (status, body) = s.http("DELETE", "/v1/views/inst-77/prefixes/127.0.0.79/32", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        dig(ports.dns, "127.0.0.79", "upf.svc.example.", false),
        vec!["10.0.1.5"]
    );
    // Deleting one record, then the view.
    let (status, body) = s.http(
        "DELETE",
        "/v1/views/inst-77/records/upf.svc.example./A?data=10.77.0.1",
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        dig(ports.dns, "127.0.0.77", "upf.svc.example.", false),
        vec!["10.77.0.2"]
    );
    assert_eq!(s.http("DELETE", "/v1/views/inst-77", None).0, 200);
    assert_eq!(
        dig(ports.dns, "127.0.0.77", "upf.svc.example.", false),
        vec!["10.0.1.5"]
    );
    assert_eq!(s.http("DELETE", "/v1/views/inst-77", None).0, 404);
}

/// The two A records of generation `k`: 10.1.0.k and 10.2.0.k.
fn generation_body(k: u64) -> String {
    format!(r#"{{"records":[{{"data":"10.1.0.{k}"}},{{"data":"10.2.0.{k}"}}]}}"#)
}

/// The generation an answer belongs to; panics on a wrong or mixed one.
fn generation_of(answer: &[Ipv4Addr]) -> u64 {
    let mut a = answer.to_vec();
    a.sort();
    assert_eq!(a.len(), 2, "wrong answer {answer:?}");
    let (x, y) = (a[0].octets(), a[1].octets());
    assert!(
        x[0] == 10 && x[1] == 1 && x[2] == 0,
        "wrong answer {answer:?}"
    );
    assert!(
        y[0] == 10 && y[1] == 2 && y[2] == 0,
        "wrong answer {answer:?}"
    );
    assert_eq!(x[3], y[3], "mixed answer {answer:?}");
    u64::from(x[3])
}

#[test]
fn concurrent_changes_under_query_load_never_give_a_wrong_or_mixed_answer() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let s = Arc::new(Shardgate::start(
        dir.path(),
        ports,
        &config(ports, shard_count(), ""),
    ));
    put_instance_view(&s, "inst", "127.0.0.77", "10.1.0.1");
    let (status, body) = s.http(
        "PUT",
        "/v1/views/inst/records/upf.svc.example./A",
        Some(&generation_body(1)),
    );
    assert_eq!(status, 200, "{body}");

    let done = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(1));
    let checked = Arc::new(AtomicU64::new(0));
    let mut queriers = Vec::new();
    // Two instance flows (each its own socket, so possibly its own shard)
    // and two bystanders whose answers must never change.
    for (src, expect) in [
        (INSTANCE, None),
        (INSTANCE, None),
        (SITE, Some([10, 0, 1, 5])),
        (OTHER, Some([10, 0, 9, 5])),
    ] {
        let (done, acked, checked) = (done.clone(), acked.clone(), checked.clone());
        let port = ports.dns;
        queriers.push(std::thread::spawn(move || {
            let sock = UdpSocket::bind((src, 0)).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(700)))
                .unwrap();
            let mut last = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                let floor = acked.load(Ordering::Acquire);
                let answer = query_a_on(&sock, port, "upf.svc.example.").expect("answer");
                match expect {
                    Some(a) => assert_eq!(
                        answer,
                        vec![Ipv4Addr::from(a)],
                        "bystander {src} got a wrong answer"
                    ),
                    None => {
                        let k = generation_of(&answer);
                        // Never older than what was acknowledged before the
                        // query was sent, never going back for one flow.
                        assert!(
                            k >= floor,
                            "{src}: generation {k} after {floor} was acknowledged"
                        );
                        assert!(k >= last, "{src}: generation went back from {last} to {k}");
                        last = k;
                    }
                }
                checked.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let own = UdpSocket::bind((INSTANCE, 0)).unwrap();
    own.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    for k in 2..=120u64 {
        let (status, body) = s.http(
            "PUT",
            "/v1/views/inst/records/upf.svc.example./A",
            Some(&generation_body(k)),
        );
        assert_eq!(status, 200, "generation {k}: {body}");
        acked.store(k, Ordering::Release);
        // The acknowledged change is what the very next query sees.
        let answer = query_a_on(&own, ports.dns, "upf.svc.example.").unwrap();
        assert_eq!(
            generation_of(&answer),
            k,
            "right after the 200 for generation {k}"
        );
        // Every few changes, a prefix change of another view races too.
        if k % 10 == 0 {
            let p = format!(r#"{{"prefix":"10.200.{}.0/24"}}"#, k / 10);
            assert_eq!(s.http("POST", "/v1/views/site/prefixes", Some(&p)).0, 200);
        }
    }
    done.store(true, Ordering::Release);
    for q in queriers {
        q.join().expect("a query thread saw a wrong answer");
    }
    let n = checked.load(Ordering::Relaxed);
    assert!(n >= 400, "only {n} answers checked under load");
}

#[test]
fn kill_9_right_after_a_200_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let cfg = config(ports, shard_count(), "");
    let mut s = Shardgate::start(dir.path(), ports, &cfg);
    put_instance_view(&s, "inst", "127.0.0.90", "10.90.0.1");
    s.kill9();
    for i in 1..=5u8 {
        let s2 = Shardgate::start(dir.path(), ports, &cfg);
        // Everything acknowledged before the previous crash is served.
        for j in 0..i {
            let src = Ipv4Addr::new(127, 0, 0, 90 + j);
            assert_eq!(
                s2.ask(src),
                vec![Ipv4Addr::new(10, 90, 0, 1)],
                "{src} after {i} crash(es)"
            );
        }
        let body = format!(r#"{{"prefixes":["127.0.0.{}"]}}"#, 90 + i);
        let (status, resp) = s2.http("POST", "/v1/views/inst/prefixes", Some(&body));
        assert_eq!(status, 200, "{resp}");
        // SIGKILL the moment the 200 is in.
        s = s2;
        s.kill9();
    }
    let s = Shardgate::start(dir.path(), ports, &cfg);
    for j in 0..=5u8 {
        assert_eq!(
            dig(
                ports.dns,
                &format!("127.0.0.{}", 90 + j),
                "upf.svc.example.",
                false
            ),
            vec!["10.90.0.1"]
        );
    }
    let (_, state) = s.http("GET", "/v1/state", None);
    assert_eq!(
        json(&state)["changes"]["views"]["inst"]["prefixes"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    // No temporary files left behind in the state directory.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["address-map-changes.json"]);
}

#[test]
fn bad_requests_get_400_or_404_and_apply_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let s = Shardgate::start(dir.path(), ports, &config(ports, shard_count(), ""));
    let v0 = put_instance_view(&s, "inst", "127.0.0.77", "10.77.0.1");
    let state_before = std::fs::read(dir.path().join("state/address-map-changes.json")).unwrap();
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("PUT", "/v1/views/x", Some("{not json"), 400, "invalid JSON"),
        (
            "PUT",
            "/v1/views/x",
            Some(r#"{"prefixes":[],"surprise":1}"#),
            400,
            "unknown field",
        ),
        ("PUT", "/v1/views/x", None, 400, "JSON body"),
        (
            "POST",
            "/v1/views/inst/prefixes",
            Some(r#"{"prefix":"10.1.0.300"}"#),
            400,
            "not a prefix",
        ),
        (
            "POST",
            "/v1/views/inst/records",
            Some(r#"{"name":"upf.svc.example.","type":"A","data":"not-an-ip"}"#),
            400,
            "invalid",
        ),
        (
            "POST",
            "/v1/views/inst/records",
            Some(r#"{"name":"upf.elsewhere.example.","type":"A","data":"10.0.0.1"}"#),
            400,
            "invalid",
        ),
        (
            "POST",
            "/v1/views/nope/prefixes",
            Some(r#"{"prefix":"10.1.0.1"}"#),
            404,
            "no view",
        ),
        (
            "DELETE",
            "/v1/views/inst/prefixes/10.9.9.9/32",
            None,
            404,
            "not in view",
        ),
        (
            "DELETE",
            "/v1/views/inst/records/upf.svc.example./AAAA",
            None,
            404,
            "no AAAA",
        ),
        (
            "POST",
            "/v1/changes",
            Some(
                r#"[{"op":"add_prefixes","view":"inst","prefixes":["127.0.0.80"]},{"op":"add_prefixes","view":"nope","prefixes":["127.0.0.81"]}]"#,
            ),
            404,
            "change 2",
        ),
    ];
    for (method, path, body, want, says) in cases {
        let (status, resp) = s.http(method, path, *body);
        assert_eq!(status, *want, "{method} {path}: {resp}");
        assert!(
            resp.contains(says),
            "{method} {path}: expected {says:?} in {resp}"
        );
    }
    // Nothing was applied: same version, same state file, same answers.
    let (_, views) = s.http("GET", "/v1/views", None);
    assert_eq!(json(&views)["version"].as_u64().unwrap(), v0);
    assert_eq!(
        std::fs::read(dir.path().join("state/address-map-changes.json")).unwrap(),
        state_before
    );
    assert_eq!(s.ask(INSTANCE), vec![Ipv4Addr::new(10, 77, 0, 1)]);
    assert_eq!(
        s.ask(Ipv4Addr::new(127, 0, 0, 80)),
        vec![Ipv4Addr::new(10, 0, 1, 5)]
    );
    // A batch that is valid applies as one version.
    let (status, resp) = s.http(
        "POST",
        "/v1/changes",
        Some(r#"{"changes":[{"op":"add_prefixes","view":"inst","prefixes":["127.0.0.80"]},{"op":"add_record","view":"inst","record":{"name":"upf.svc.example.","type":"A","data":"10.77.0.2"}}]}"#),
    );
    assert_eq!(status, 200, "{resp}");
    assert_eq!(json(&resp)["version"].as_u64().unwrap(), v0 + 1);
    let mut a = s.ask(Ipv4Addr::new(127, 0, 0, 80));
    a.sort();
    assert_eq!(
        a,
        vec![Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)]
    );
    let m = s.metrics();
    assert!(
        sample(
            &m,
            "shardgate_map_changes_total{shard=\"process\",result=\"rejected\"}"
        )
        .unwrap()
            >= 6.0,
        "{m}"
    );
}

#[test]
fn post_reload_does_what_sighup_does_and_keeps_api_changes() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let cfg = config(ports, shard_count(), "");
    let s = Shardgate::start(dir.path(), ports, &cfg);
    put_instance_view(&s, "inst", "127.0.0.77", "10.77.0.1");
    let cfg_path = dir.path().join("shardgate.toml");

    // A valid edit: the default view answers differently.
    std::fs::write(&cfg_path, cfg.replace("10.0.9.5", "10.0.9.6")).unwrap();
    let (status, body) = s.http("POST", "/v1/reload", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.ask(OTHER), vec![Ipv4Addr::new(10, 0, 9, 6)]);
    assert_eq!(
        s.ask(INSTANCE),
        vec![Ipv4Addr::new(10, 77, 0, 1)],
        "API change lost by the reload"
    );

    // An invalid edit: 400 with the problems; the old map keeps serving.
    std::fs::write(&cfg_path, cfg.replace("10.0.9.5", "10.0.9.999")).unwrap();
    let (status, body) = s.http("POST", "/v1/reload", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        json(&body)["problems"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{body}"
    );
    assert_eq!(s.ask(OTHER), vec![Ipv4Addr::new(10, 0, 9, 6)]);

    // SIGHUP takes the same path and is counted the same way.
    s.sighup();
    let m = eventually(Duration::from_secs(5), || {
        let m = s.metrics();
        (sample(
            &m,
            "shardgate_config_reloads_total{shard=\"process\",trigger=\"sighup\",result=\"error\"}",
        ) == Some(1.0))
        .then_some(m)
    })
    .expect("SIGHUP with a bad file not counted");
    assert_eq!(
        sample(
            &m,
            "shardgate_config_reloads_total{shard=\"process\",trigger=\"api\",result=\"ok\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "shardgate_config_reloads_total{shard=\"process\",trigger=\"api\",result=\"error\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "shardgate_config_last_reload_success{shard=\"process\"}"
        ),
        Some(0.0)
    );
    std::fs::write(&cfg_path, cfg.replace("10.0.9.5", "10.0.9.7")).unwrap();
    s.sighup();
    assert!(eventually(Duration::from_secs(5), || (s.ask(OTHER)
        == vec![Ipv4Addr::new(10, 0, 9, 7)])
    .then_some(()))
    .is_some());
    assert_eq!(s.ask(INSTANCE), vec![Ipv4Addr::new(10, 77, 0, 1)]);
    let m = s.metrics();
    assert_eq!(
        sample(
            &m,
            "shardgate_config_last_reload_success{shard=\"process\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn persisted_changes_that_no_longer_fit_the_config_stop_start_up_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let cfg = config(ports, 1, "");
    let mut s = Shardgate::start(dir.path(), ports, &cfg);
    put_instance_view(&s, "inst", "127.0.0.77", "10.77.0.1");
    s.stop();
    // The operator renames the zone: the persisted record is now outside it.
    let renamed = cfg.replace("svc.example.", "svc2.example.");
    let mut s = Shardgate::spawn(dir.path(), ports, &renamed);
    let status = s
        .wait_exit(Duration::from_secs(15))
        .expect("started despite unusable persisted changes");
    assert!(!status.success());
    let log = s.log();
    assert!(log.contains("address-map-changes.json"), "{log}");
}
