use super::*;

fn base() -> Config {
    let mut c: Config = toml::from_str(
        r#"
        [[zone]]
        name = "svc.example."
        soa = { mname = "ns.svc.example.", rname = "admin.svc.example." }

        [[view]]
        name = "a"
        prefixes = ["10.1.0.0/16"]
        [[view.record]]
        name = "upf.svc.example."
        type = "A"
        data = "10.0.1.5"

        [[view]]
        name = "default"
        prefixes = []
        [[view.record]]
        name = "upf.svc.example."
        type = "A"
        data = "10.0.0.5"
        "#,
    )
    .unwrap();
    c.views[0].prefixes_file = None;
    c
}

fn rec(name: &str, rtype: &str, data: &str) -> Record {
    Record {
        name: name.into(),
        rtype: rtype.into(),
        data: data.into(),
        ttl: None,
    }
}

fn view<'a>(c: &'a Config, name: &str) -> &'a ViewConfig {
    c.views.iter().find(|v| v.name == name).unwrap()
}

#[test]
fn instance_view_with_its_own_answer_is_added_and_merged() {
    let base = base();
    let ov = apply(
        &base,
        &Overlay::default(),
        &[Change::PutView {
            view: "inst-7".into(),
            prefixes: vec!["10.1.0.7".into()],
            records: vec![rec("UPF.svc.example", "a", "10.0.7.5")],
        }],
    )
    .unwrap();
    let (merged, notes) = merge(&base, &ov);
    assert!(notes.is_empty());
    let v = view(&merged, "inst-7");
    assert_eq!(v.prefixes, vec!["10.1.0.7/32"]);
    assert_eq!(v.records[0].name, "upf.svc.example.");
    assert_eq!(v.records[0].rtype, "A");
    assert_eq!(merged.views.len(), 3);
    // The persisted form round-trips.
    let json = serde_json::to_string(&ov).unwrap();
    assert_eq!(serde_json::from_str::<Overlay>(&json).unwrap(), ov);
}

#[test]
fn prefix_changes_keep_only_differences() {
    let base = base();
    let add = |ov: &Overlay, p: &str| {
        apply(
            &base,
            ov,
            &[Change::AddPrefixes {
                view: "a".into(),
                prefixes: vec![p.into()],
            }],
        )
    };
    let remove = |ov: &Overlay, p: &str| {
        apply(
            &base,
            ov,
            &[Change::RemovePrefixes {
                view: "a".into(),
                prefixes: vec![p.into()],
            }],
        )
    };
    let ov = add(&Overlay::default(), "10.9.0.1").unwrap();
    assert_eq!(
        view(&merge(&base, &ov).0, "a").prefixes,
        vec!["10.1.0.0/16", "10.9.0.1/32"]
    );
    // Adding what the config already has changes nothing.
    assert_eq!(
        add(&Overlay::default(), "10.1.0.0/16").unwrap(),
        Overlay::default()
    );
    // Remove the added one: back to no overlay at all.
    assert_eq!(remove(&ov, "10.9.0.1/32").unwrap(), Overlay::default());
    // Remove a configured prefix, then add it back.
    let ov = remove(&Overlay::default(), "10.1.0.0/16").unwrap();
    assert!(view(&merge(&base, &ov).0, "a").prefixes.is_empty());
    assert_eq!(remove(&ov, "10.1.0.0/16").unwrap_err().status, 404);
    assert_eq!(add(&ov, "10.1.0.0/16").unwrap(), Overlay::default());
    // Unknown prefix, bad prefix, unknown view.
    assert_eq!(
        remove(&Overlay::default(), "10.2.0.0/16")
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        add(&Overlay::default(), "10.1.0.300").unwrap_err().status,
        400
    );
    let e = apply(
        &base,
        &Overlay::default(),
        &[Change::AddPrefixes {
            view: "zz".into(),
            prefixes: vec!["10.0.0.1".into()],
        }],
    )
    .unwrap_err();
    assert_eq!(e.status, 404);
    assert!(e.message.contains("PUT /v1/views/zz"), "{e}");
}

#[test]
fn removing_a_prefix_from_a_prefixes_file_says_what_to_do() {
    let mut base = base();
    base.views[0].prefixes_file = Some("big.txt".into());
    let e = apply(
        &base,
        &Overlay::default(),
        &[Change::RemovePrefixes {
            view: "a".into(),
            prefixes: vec!["10.200.0.0/16".into()],
        }],
    )
    .unwrap_err();
    assert_eq!(e.status, 400);
    assert!(e.message.contains("big.txt"), "{e}");
}

#[test]
fn record_changes_on_configured_and_defined_views() {
    let base = base();
    let ov = apply(
        &base,
        &Overlay::default(),
        &[Change::AddRecord {
            view: "a".into(),
            record: rec("upf.svc.example.", "A", "10.0.1.6"),
        }],
    )
    .unwrap();
    let merged = merge(&base, &ov).0;
    let datas: Vec<_> = view(&merged, "a")
        .records
        .iter()
        .map(|r| r.data.as_str())
        .collect();
    assert_eq!(datas, ["10.0.1.5", "10.0.1.6"]);
    // Delete one, then the other: the set is gone from the merged view.
    let ov = apply(
        &base,
        &ov,
        &[
            Change::DeleteRecords {
                view: "a".into(),
                name: "upf.svc.example.".into(),
                rtype: "A".into(),
                data: Some("10.0.1.5".into()),
            },
            Change::DeleteRecords {
                view: "a".into(),
                name: "upf.svc.example.".into(),
                rtype: "a".into(),
                data: None,
            },
        ],
    )
    .unwrap();
    assert!(view(&merge(&base, &ov).0, "a").records.is_empty());
    // Deleting again: 404 and the error names the change.
    let e = apply(
        &base,
        &ov,
        &[
            Change::AddPrefixes {
                view: "a".into(),
                prefixes: vec!["10.3.0.0/16".into()],
            },
            Change::DeleteRecords {
                view: "a".into(),
                name: "upf.svc.example.".into(),
                rtype: "A".into(),
                data: None,
            },
        ],
    )
    .unwrap_err();
    assert_eq!(e.status, 404);
    assert!(e.message.starts_with("change 2 (a): "), "{e}");
    // Replacing with exactly the configured set drops the patch.
    let ov = apply(
        &base,
        &ov,
        &[Change::ReplaceRecords {
            view: "a".into(),
            name: "upf.svc.example".into(),
            rtype: "A".into(),
            records: vec![RecordData {
                data: "10.0.1.5".into(),
                ttl: None,
            }],
        }],
    )
    .unwrap();
    assert_eq!(ov, Overlay::default());

    // On an API-defined view the records are edited in place.
    let ov = apply(
        &base,
        &Overlay::default(),
        &[
            Change::PutView {
                view: "b".into(),
                prefixes: vec![],
                records: vec![rec("x.svc.example.", "A", "10.0.0.1")],
            },
            Change::AddRecord {
                view: "b".into(),
                record: rec("x.svc.example.", "A", "10.0.0.1"),
            },
            Change::AddRecord {
                view: "b".into(),
                record: rec("y.svc.example.", "TXT", "hello"),
            },
        ],
    )
    .unwrap();
    let b = view(&merge(&base, &ov).0, "b").clone();
    assert_eq!(b.records.len(), 2);
}

#[test]
fn deleting_views() {
    let base = base();
    let ov = apply(
        &base,
        &Overlay::default(),
        &[Change::DeleteView { view: "a".into() }],
    )
    .unwrap();
    let merged = merge(&base, &ov).0;
    assert!(merged.views.iter().all(|v| v.name != "a"));
    assert_eq!(
        apply(&base, &ov, &[Change::DeleteView { view: "a".into() }])
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        apply(
            &base,
            &ov,
            &[Change::AddRecord {
                view: "a".into(),
                record: rec("x.svc.example.", "A", "10.0.0.1")
            }]
        )
        .unwrap_err()
        .status,
        404
    );
    // A view the API created and then deleted leaves nothing behind.
    let ov = apply(
        &base,
        &Overlay::default(),
        &[
            Change::PutView {
                view: "c".into(),
                prefixes: vec![],
                records: vec![],
            },
            Change::DeleteView { view: "c".into() },
        ],
    )
    .unwrap();
    assert_eq!(ov, Overlay::default());
}

#[test]
fn a_patch_whose_view_left_the_config_is_reported_not_applied() {
    let base = base();
    let ov = apply(
        &base,
        &Overlay::default(),
        &[Change::AddPrefixes {
            view: "a".into(),
            prefixes: vec!["10.9.0.0/24".into()],
        }],
    )
    .unwrap();
    let mut edited = base.clone();
    edited.views.retain(|v| v.name != "a");
    let (merged, notes) = merge(&edited, &ov);
    assert_eq!(merged, edited);
    assert_eq!(notes.len(), 1);
}

#[test]
fn parses_changes_from_json_and_rejects_unknown_fields() {
    let c: Vec<Change> = serde_json::from_str(
        r#"[{"op":"add_prefixes","view":"a","prefixes":["10.1.0.7"]},
            {"op":"add_record","view":"a","record":{"name":"x.svc.example.","type":"A","data":"10.0.0.1","ttl":5}}]"#,
    )
    .unwrap();
    assert_eq!(c.len(), 2);
    assert!(serde_json::from_str::<Change>(
        r#"{"op":"add_prefixes","view":"a","prefixes":[],"x":1}"#
    )
    .is_err());
    assert!(serde_json::from_str::<Change>(r#"{"op":"nope","view":"a"}"#).is_err());
    assert!(apply(&base(), &Overlay::default(), &[]).is_err());
}
