//! The fleet map in a real etcd: three `shardgate` nodes on 127.0.0.2,
//! .3 and .4 follow the keys under one prefix; a change made through one
//! node's API is answered by `dig` on the others; conflicting writes get
//! 409; nodes ride out etcd going away (and restarts while it is away);
//! a compacted revision makes a node read a fresh snapshot.

mod support;

use std::path::Path;
use std::time::Duration;

use support::etcd::Etcd;
use support::*;

const PREFIX: &str = "/fleet-test/";

struct Node {
    sg: Shardgate,
    ip: String,
}

fn node_config(ports: Ports, ip: &str, etcd: &Etcd) -> String {
    config(ports, 1, "").replace(
        &format!("listen = [\"127.0.0.1:{}\"]", ports.dns),
        &format!("listen = [\"{ip}:{}\"]", ports.dns),
    ) + &format!(
        "\n[cluster]\netcd = [\"{}\"]\nprefix = \"{PREFIX}\"\ndial_timeout_ms = 1000\nrequest_timeout_ms = 3000\n",
        etcd.url()
    )
}

fn start_node(root: &Path, n: usize, etcd: &Etcd) -> Node {
    let ip = format!("127.0.0.{}", n + 2);
    let dir = root.join(format!("node{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let ports = Ports::new();
    let sg = Shardgate::start(&dir, ports, &node_config(ports, &ip, etcd));
    Node { sg, ip }
}

fn restart_node(node: &mut Node, etcd: &Etcd) {
    node.sg.kill9();
    let ports = node.sg.ports;
    let dir = node.sg.dir.clone();
    node.sg = Shardgate::start(&dir, ports, &node_config(ports, &node.ip, etcd));
}

impl Node {
    /// The A answer for `name` asked from a source in view `site`.
    fn answer(&self, name: &str) -> Vec<String> {
        dig_at(&self.ip, self.sg.ports.dns, "127.0.0.10", name, false)
    }

    fn metric(&self, prefix: &str) -> f64 {
        sample(&self.sg.metrics(), prefix).unwrap_or(-1.0)
    }

    fn applied_revision(&self) -> u64 {
        self.metric("shardgate_cluster_applied_revision") as u64
    }

    fn etcd_up(&self) -> bool {
        self.metric("shardgate_cluster_etcd_up") == 1.0
    }
}

fn set_upf(node: &Node, data: &str, revision: Option<u64>) -> (u16, serde_json::Value) {
    let path = match revision {
        Some(r) => format!("/v1/views/site/records/upf.svc.example./A?revision={r}"),
        None => "/v1/views/site/records/upf.svc.example./A".to_owned(),
    };
    let body = format!(r#"{{"records":[{{"data":"{data}"}}]}}"#);
    let (status, text) = node.sg.http("PUT", &path, Some(&body));
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn wait_answer(node: &Node, name: &str, want: &str) {
    let got = eventually(Duration::from_secs(10), || {
        let a = node.answer(name);
        (a == [want]).then_some(a)
    });
    assert!(
        got.is_some(),
        "{} never answered {name} with {want} (now {:?}); log:\n{}",
        node.ip,
        node.answer(name),
        node.sg.log()
    );
}

fn three_nodes(root: &Path, etcd: &Etcd) -> Vec<Node> {
    (0..3).map(|n| start_node(root, n, etcd)).collect()
}

#[test]
fn a_change_on_one_node_is_answered_by_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let nodes = three_nodes(dir.path(), &etcd);
    for n in &nodes {
        assert_eq!(n.answer("upf.svc.example."), ["10.0.1.5"], "config base");
        assert!(
            eventually(Duration::from_secs(10), || n.etcd_up().then_some(())).is_some(),
            "{} never reached etcd; log:\n{}",
            n.ip,
            n.sg.log()
        );
    }

    let (status, reply) = set_upf(&nodes[0], "10.0.1.77", None);
    assert_eq!(status, 200, "{reply}");
    let revision = reply["revision"]
        .as_u64()
        .expect("the reply names the revision");
    assert_eq!(reply["changed"], true);
    // Acknowledged = applied on the node that took it.
    assert_eq!(nodes[0].answer("upf.svc.example."), ["10.0.1.77"]);
    for n in &nodes[1..] {
        wait_answer(n, "upf.svc.example.", "10.0.1.77");
        assert!(n.applied_revision() >= revision);
    }
    // The documented layout: one key per record set, JSON value.
    let key = format!("{PREFIX}records/site/upf.svc.example./A");
    let got = etcd.ctl(&["get", &key, "--print-value-only"]).unwrap();
    assert_eq!(got.trim(), r#"[{"data":"10.0.1.77"}]"#);
    // Reads carry the revision for the next write's ?revision=.
    let (_, views) = nodes[2].sg.http("GET", "/v1/views/site", None);
    let views: serde_json::Value = serde_json::from_str(&views).unwrap();
    assert!(views["revision"].as_u64().unwrap() >= revision, "{views}");

    // An etcd transaction of two keys (written straight to etcd) is one
    // generation: the view and its records arrive together.
    let view_key = format!("{PREFIX}views/inst-9");
    let records_key = format!("{PREFIX}records/inst-9/upf.svc.example./A");
    etcd.txn_put(&[
        (
            &view_key,
            r#"{"kind":"defined","prefixes":["127.0.0.99/32"]}"#,
        ),
        (&records_key, r#"[{"data":"10.9.9.9"}]"#),
    ]);
    for n in &nodes {
        let got = eventually(Duration::from_secs(10), || {
            let a = dig_at(
                &n.ip,
                n.sg.ports.dns,
                "127.0.0.99",
                "upf.svc.example.",
                false,
            );
            (a == ["10.9.9.9"]).then_some(())
        });
        assert!(got.is_some(), "{} did not apply the txn", n.ip);
    }

    // A broken value is refused whole: the node keeps serving and says why.
    etcd.ctl(&["put", &format!("{PREFIX}views/broken"), "{not json"])
        .unwrap();
    for n in &nodes {
        let rejected = eventually(Duration::from_secs(10), || {
            (n.metric("shardgate_cluster_changes_total{shard=\"process\",result=\"rejected\"}")
                >= 1.0)
                .then_some(())
        });
        assert!(rejected.is_some(), "{} did not reject the broken key", n.ip);
        assert_eq!(n.answer("upf.svc.example."), ["10.0.1.77"]);
        let (status, body) = n.sg.http("GET", "/readyz", None);
        assert_eq!(status, 200, "degraded, still serving: {body}");
        assert!(body.contains("views/broken"), "{body}");
    }
    etcd.ctl(&["del", &format!("{PREFIX}views/broken")])
        .unwrap();
    for n in &nodes {
        let ok = eventually(Duration::from_secs(10), || {
            (n.sg.http("GET", "/readyz", None).1 == "ready\n").then_some(())
        });
        assert!(ok.is_some(), "{} still degraded after the fix", n.ip);
    }
}

#[test]
fn conflicting_edits_one_wins_the_other_gets_409() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let nodes = three_nodes(dir.path(), &etcd);
    for n in &nodes {
        assert!(eventually(Duration::from_secs(10), || n.etcd_up().then_some(())).is_some());
    }
    for round in 0..4 {
        // Both writers read the same revision, then edit the same record set.
        let read = nodes[0].applied_revision();
        let a = format!("10.0.1.{}", 100 + round);
        let b = format!("10.0.1.{}", 200 + round);
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| set_upf(&nodes[0], &a, Some(read)));
            let tb = s.spawn(|| set_upf(&nodes[1], &b, Some(read)));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let mut statuses = [ra.0, rb.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {ra:?} {rb:?}");
        let winner = if ra.0 == 200 { &a } else { &b };
        let loser = if ra.0 == 200 { &rb.1 } else { &ra.1 };
        assert!(
            loser["error"].as_str().unwrap_or("").contains("retry"),
            "{loser}"
        );
        for n in &nodes {
            wait_answer(n, "upf.svc.example.", winner);
        }
        // Waiting for every node keeps the next round's read current.
        let top = nodes.iter().map(|n| n.applied_revision()).max().unwrap();
        for n in &nodes {
            assert!(
                eventually(Duration::from_secs(5), || (n.applied_revision() == top)
                    .then_some(()))
                .is_some()
            );
        }
    }
    let m = nodes[0].sg.metrics();
    assert!(
        sum_samples_with(&m, "shardgate_map_changes_total", &["result=\"conflict\""])
            + sum_samples_with(
                &nodes[1].sg.metrics(),
                "shardgate_map_changes_total",
                &["result=\"conflict\""]
            )
            >= 4.0
    );
}

#[test]
fn nodes_ride_out_etcd_outages_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    let mut nodes = three_nodes(dir.path(), &etcd);
    for n in &nodes {
        assert!(eventually(Duration::from_secs(10), || n.etcd_up().then_some(())).is_some());
    }
    let (status, reply) = set_upf(&nodes[0], "10.0.1.31", None);
    assert_eq!(status, 200, "{reply}");
    for n in &nodes {
        wait_answer(n, "upf.svc.example.", "10.0.1.31");
    }

    // etcd goes away: answers stay, the API says 503, /readyz degraded.
    etcd.kill();
    for n in &nodes {
        let down = eventually(Duration::from_secs(15), || (!n.etcd_up()).then_some(()));
        assert!(down.is_some(), "{} did not notice etcd leaving", n.ip);
        assert_eq!(n.answer("upf.svc.example."), ["10.0.1.31"]);
        let (status, body) = n.sg.http("GET", "/readyz", None);
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("degraded") && body.contains("etcd unreachable"),
            "{body}"
        );
    }
    let (status, reply) = set_upf(&nodes[1], "10.0.1.32", None);
    assert_eq!(status, 503, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("etcd"), "{reply}");

    // A node restarted while etcd is down serves its last applied map.
    restart_node(&mut nodes[2], &etcd);
    assert_eq!(nodes[2].answer("upf.svc.example."), ["10.0.1.31"]);
    assert!(nodes[2]
        .sg
        .log()
        .contains("serving the last applied fleet map"));

    // etcd is back: every node reconnects and follows again.
    etcd.restart();
    for n in &nodes {
        let up = eventually(Duration::from_secs(15), || n.etcd_up().then_some(()));
        assert!(
            up.is_some(),
            "{} did not reconnect; log:\n{}",
            n.ip,
            n.sg.log()
        );
    }
    let (status, reply) = set_upf(&nodes[1], "10.0.1.33", None);
    assert_eq!(status, 200, "{reply}");
    for n in &nodes {
        wait_answer(n, "upf.svc.example.", "10.0.1.33");
    }

    // Compaction: node 3 is away while changes land and etcd compacts
    // them; back, it cannot resume and reads a fresh snapshot, losing nothing.
    nodes[2].sg.kill9();
    for (i, view) in ["c1", "c2", "c3"].iter().enumerate() {
        let body = format!(
            r#"{{"prefixes":["127.0.0.{}/32"],"records":[{{"name":"upf.svc.example.","type":"A","data":"10.3.0.{}"}}]}}"#,
            110 + i,
            i + 1
        );
        let (status, reply) = nodes[0]
            .sg
            .http("PUT", &format!("/v1/views/{view}"), Some(&body));
        assert_eq!(status, 200, "{reply}");
    }
    let (status, _) = set_upf(&nodes[0], "10.0.1.34", None);
    assert_eq!(status, 200);
    let rev = etcd.revision();
    etcd.ctl(&["compact", &rev.to_string()]).unwrap();
    let ports = nodes[2].sg.ports;
    let node_dir = nodes[2].sg.dir.clone();
    nodes[2].sg = Shardgate::start(&node_dir, ports, &node_config(ports, &nodes[2].ip, &etcd));
    let n = &nodes[2];
    wait_answer(n, "upf.svc.example.", "10.0.1.34");
    for i in 0..3 {
        let src = format!("127.0.0.{}", 110 + i);
        let a = dig_at(&n.ip, n.sg.ports.dns, &src, "upf.svc.example.", false);
        assert_eq!(a, [format!("10.3.0.{}", i + 1)], "view c{}", i + 1);
    }
    assert_eq!(
        n.metric(
            "shardgate_cluster_snapshot_reloads_total{shard=\"process\",reason=\"compacted\"}"
        ),
        1.0,
        "log:\n{}",
        n.sg.log()
    );
}
