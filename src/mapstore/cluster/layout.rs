//! The fleet map's etcd key layout, as pure code: an [`Overlay`] (the API
//! changes over the configuration file) as etcd keys and JSON values, and
//! back. Under the configured prefix (default `/shardgate/`):
//!
//! | key | value |
//! |---|---|
//! | `PREFIX` `views/` VIEW | `{"kind":"defined","prefixes":[…]}`, `{"kind":"deleted"}` or `{"kind":"patch","add_prefixes":[…],"remove_prefixes":[…]}` |
//! | `PREFIX` `records/` VIEW `/` NAME `/` TYPE | the record set: `[{"data":"10.0.1.5","ttl":60}, …]` (`[]` = removed) |
//!
//! VIEW and NAME are percent-encoded where they hold `/`, `%` or control
//! characters; NAME is absolute and lower case, TYPE upper case. A view
//! with record keys but no `views/` key is a patch of the configured view
//! that only replaces record sets. Record sets of a `defined` view are its
//! records; of a `patch`, the sets that replace the configuration's.
//!
//! One key per view and record set keeps etcd values small (well under its
//! 1.5 MiB request limit however large the map) and lets two writers that
//! edit different views or record sets both succeed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::mapstore::overlay::{Overlay, Record, RecordData, RecordSet, ViewDelta};

/// The keys and values of a map, ordered as etcd orders them.
pub type Keys = BTreeMap<String, Vec<u8>>;

/// The `views/` value: a view's delta without its record sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ViewHead {
    Defined {
        prefixes: Vec<String>,
    },
    Deleted,
    Patch {
        #[serde(default)]
        add_prefixes: Vec<String>,
        #[serde(default)]
        remove_prefixes: Vec<String>,
    },
}

/// A key or value that does not fit the layout: which key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd key {:?}: {}", self.key, self.message)
    }
}

/// The key of view `view`'s head.
pub fn view_key(prefix: &str, view: &str) -> String {
    format!("{prefix}views/{}", escape(view))
}

/// The key of record set `name`/`rtype` of `view`.
pub fn record_key(prefix: &str, view: &str, name: &str, rtype: &str) -> String {
    format!(
        "{prefix}records/{}/{}/{}",
        escape(view),
        escape(name),
        escape(rtype)
    )
}

/// The prefix every record set key of `view` starts with.
pub fn view_records_prefix(prefix: &str, view: &str) -> String {
    format!("{prefix}records/{}/", escape(view))
}

/// `overlay` as keys and values.
pub fn encode(prefix: &str, overlay: &Overlay) -> Keys {
    let mut keys = Keys::new();
    for (view, delta) in &overlay.views {
        let (head, sets): (Option<ViewHead>, Vec<RecordSet>) = match delta {
            ViewDelta::Defined { prefixes, records } => (
                Some(ViewHead::Defined {
                    prefixes: prefixes.clone(),
                }),
                group_records(records),
            ),
            ViewDelta::Deleted => (Some(ViewHead::Deleted), Vec::new()),
            ViewDelta::Patch {
                add_prefixes,
                remove_prefixes,
                record_sets,
            } => {
                let head = (!add_prefixes.is_empty() || !remove_prefixes.is_empty()).then(|| {
                    ViewHead::Patch {
                        add_prefixes: add_prefixes.clone(),
                        remove_prefixes: remove_prefixes.clone(),
                    }
                });
                (head, record_sets.clone())
            }
        };
        if let Some(head) = head {
            keys.insert(view_key(prefix, view), to_json(&head));
        }
        for set in sets {
            keys.insert(
                record_key(prefix, view, &set.name, &set.rtype),
                to_json(&set.records),
            );
        }
    }
    keys
}

/// Keys and values (all under `prefix`) as an overlay. Every key must fit
/// the layout: a map with a foreign or broken key is refused whole, so a
/// node never serves a guess.
pub fn decode<'a>(
    prefix: &str,
    entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Overlay, LayoutError> {
    let mut heads: BTreeMap<String, ViewHead> = BTreeMap::new();
    let mut sets: BTreeMap<String, Vec<RecordSet>> = BTreeMap::new();
    for (key, value) in entries {
        let err = |message: String| LayoutError {
            key: key.to_owned(),
            message,
        };
        let Some(rest) = key.strip_prefix(prefix) else {
            return Err(err(format!("outside the prefix {prefix:?}")));
        };
        if let Some(view) = rest.strip_prefix("views/") {
            let view = unescape(view).map_err(err)?;
            let head: ViewHead = serde_json::from_slice(value).map_err(|e| {
                err(format!(
                    "not a view value ({e}); write {{\"kind\":\"defined\",\"prefixes\":[...]}}, {{\"kind\":\"deleted\"}} \
                     or {{\"kind\":\"patch\",\"add_prefixes\":[...],\"remove_prefixes\":[...]}}"
                ))
            })?;
            heads.insert(view, head);
        } else if let Some(path) = rest.strip_prefix("records/") {
            let parts: Vec<&str> = path.split('/').collect();
            let [view, name, rtype] = parts[..] else {
                return Err(err(
                    "a record set key is records/VIEW/NAME/TYPE (escape '/' in names as %2F)"
                        .into(),
                ));
            };
            let (view, name, rtype) = (
                unescape(view).map_err(err)?,
                unescape(name).map_err(err)?,
                unescape(rtype).map_err(err)?,
            );
            let records: Vec<RecordData> = serde_json::from_slice(value).map_err(|e| {
                err(format!(
                    "not a record set ({e}); write [{{\"data\":\"10.0.1.5\",\"ttl\":60}}, ...]"
                ))
            })?;
            sets.entry(view).or_default().push(RecordSet {
                name,
                rtype,
                records,
            });
        } else {
            return Err(err(
                "not part of the map layout: keys under the prefix are views/VIEW or records/VIEW/NAME/TYPE"
                    .into(),
            ));
        }
    }
    let mut overlay = Overlay::default();
    for (view, head) in &heads {
        let view_sets = sets.remove(view).unwrap_or_default();
        let delta = match head {
            ViewHead::Defined { prefixes } => ViewDelta::Defined {
                prefixes: prefixes.clone(),
                records: view_sets
                    .into_iter()
                    .flat_map(|set| {
                        set.records.into_iter().map(move |d| Record {
                            name: set.name.clone(),
                            rtype: set.rtype.clone(),
                            data: d.data,
                            ttl: d.ttl,
                        })
                    })
                    .collect(),
            },
            ViewHead::Deleted => {
                if !view_sets.is_empty() {
                    return Err(LayoutError {
                        key: view_key(prefix, view),
                        message: format!(
                            "view {view:?} is deleted but still has record sets under records/; delete them too"
                        ),
                    });
                }
                ViewDelta::Deleted
            }
            ViewHead::Patch {
                add_prefixes,
                remove_prefixes,
            } => ViewDelta::Patch {
                add_prefixes: add_prefixes.clone(),
                remove_prefixes: remove_prefixes.clone(),
                record_sets: view_sets,
            },
        };
        overlay.views.insert(view.clone(), delta);
    }
    for (view, record_sets) in sets {
        overlay.views.insert(
            view,
            ViewDelta::Patch {
                add_prefixes: Vec::new(),
                remove_prefixes: Vec::new(),
                record_sets,
            },
        );
    }
    Ok(overlay)
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOp {
    Put(String, Vec<u8>),
    Delete(String),
}

impl KeyOp {
    pub fn key(&self) -> &str {
        match self {
            KeyOp::Put(k, _) | KeyOp::Delete(k) => k,
        }
    }
}

/// The writes that turn `from` into `to`, in key order.
pub fn diff(from: &Keys, to: &Keys) -> Vec<KeyOp> {
    let mut ops = Vec::new();
    for (k, v) in to {
        if from.get(k) != Some(v) {
            ops.push(KeyOp::Put(k.clone(), v.clone()));
        }
    }
    for k in from.keys() {
        if !to.contains_key(k) {
            ops.push(KeyOp::Delete(k.clone()));
        }
    }
    ops.sort_by(|a, b| a.key().cmp(b.key()));
    ops
}

/// Records grouped into sets by (name, type), in key order; members keep
/// their order.
fn group_records(records: &[Record]) -> Vec<RecordSet> {
    let mut sets: BTreeMap<(String, String), Vec<RecordData>> = BTreeMap::new();
    for r in records {
        sets.entry((r.name.clone(), r.rtype.clone()))
            .or_default()
            .push(RecordData {
                data: r.data.clone(),
                ttl: r.ttl,
            });
    }
    sets.into_iter()
        .map(|((name, rtype), records)| RecordSet {
            name,
            rtype,
            records,
        })
        .collect()
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("map values always encode")
}

fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        if c == '/' || c == '%' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(part: &str) -> Result<String, String> {
    if part.is_empty() {
        return Err("an empty key component".into());
    }
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{part:?} has a '%' not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{part:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/shardgate/";

    fn record(name: &str, rtype: &str, data: &str) -> Record {
        Record {
            name: name.into(),
            rtype: rtype.into(),
            data: data.into(),
            ttl: Some(30),
        }
    }

    fn sample() -> Overlay {
        let mut o = Overlay::default();
        o.views.insert(
            "inst/7".into(),
            ViewDelta::Defined {
                prefixes: vec!["10.7.0.0/16".into()],
                records: vec![
                    record("upf.svc.example.", "A", "10.0.7.1"),
                    record("upf.svc.example.", "A", "10.0.7.2"),
                    record("amf.svc.example.", "AAAA", "fd00::7"),
                ],
            },
        );
        o.views.insert("gone".into(), ViewDelta::Deleted);
        o.views.insert(
            "site-a".into(),
            ViewDelta::Patch {
                add_prefixes: vec!["10.1.9.0/24".into()],
                remove_prefixes: vec![],
                record_sets: vec![RecordSet {
                    name: "upf.svc.example.".into(),
                    rtype: "A".into(),
                    records: vec![],
                }],
            },
        );
        o.views.insert(
            "site-b".into(),
            ViewDelta::Patch {
                add_prefixes: vec![],
                remove_prefixes: vec![],
                record_sets: vec![RecordSet {
                    name: "upf.svc.example.".into(),
                    rtype: "A".into(),
                    records: vec![RecordData {
                        data: "10.0.2.9".into(),
                        ttl: None,
                    }],
                }],
            },
        );
        o
    }

    fn decode_keys(keys: &Keys) -> Result<Overlay, LayoutError> {
        decode(P, keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    #[test]
    fn the_layout_is_one_key_per_view_and_record_set() {
        let keys = encode(P, &sample());
        let names: Vec<&str> = keys.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "/shardgate/records/inst%2F7/amf.svc.example./AAAA",
                "/shardgate/records/inst%2F7/upf.svc.example./A",
                "/shardgate/records/site-a/upf.svc.example./A",
                "/shardgate/records/site-b/upf.svc.example./A",
                "/shardgate/views/gone",
                "/shardgate/views/inst%2F7",
                "/shardgate/views/site-a",
            ]
        );
        assert_eq!(
            keys["/shardgate/records/inst%2F7/upf.svc.example./A"],
            br#"[{"data":"10.0.7.1","ttl":30},{"data":"10.0.7.2","ttl":30}]"#
        );
        assert_eq!(keys["/shardgate/views/gone"], br#"{"kind":"deleted"}"#);
        assert_eq!(
            keys["/shardgate/records/site-a/upf.svc.example./A"], b"[]",
            "a removed set stays as an empty one"
        );
    }

    #[test]
    fn keys_decode_back_to_the_same_map() {
        let keys = encode(P, &sample());
        let back = decode_keys(&keys).unwrap();
        assert_eq!(encode(P, &back), keys);
        // Defined records come back grouped by set, in key order.
        let ViewDelta::Defined { records, .. } = &back.views["inst/7"] else {
            panic!("{back:?}")
        };
        assert_eq!(records[0].rtype, "AAAA");
        assert_eq!(records.len(), 3);
        assert_eq!(back.views["site-b"], sample().views["site-b"]);
        assert_eq!(back.views["gone"], ViewDelta::Deleted);
    }

    #[test]
    fn broken_keys_and_values_are_refused_with_the_key() {
        let bad: [(&str, &[u8], &str); 6] = [
            ("/shardgate/views/x", b"{not json", "not a view value"),
            (
                "/shardgate/views/x",
                br#"{"kind":"odd"}"#,
                "not a view value",
            ),
            ("/shardgate/records/x/a./A", b"[1]", "not a record set"),
            ("/shardgate/records/x/A", b"[]", "records/VIEW/NAME/TYPE"),
            ("/shardgate/other", b"1", "not part of the map layout"),
            (
                "/shardgate/views/%zz",
                br#"{"kind":"deleted"}"#,
                "two hex digits",
            ),
        ];
        for (key, value, want) in bad {
            let err = decode(P, [(key, value)]).unwrap_err();
            assert_eq!(err.key, key);
            assert!(err.message.contains(want), "{key}: {}", err.message);
        }
        let deleted_with_records = decode(
            P,
            [
                ("/shardgate/views/x", br#"{"kind":"deleted"}"#.as_slice()),
                ("/shardgate/records/x/a./A", b"[]".as_slice()),
            ],
        )
        .unwrap_err();
        assert!(deleted_with_records.message.contains("delete them too"));
    }

    #[test]
    fn diff_writes_only_what_changed() {
        let from = encode(P, &sample());
        let mut next = sample();
        next.views.remove("gone");
        if let Some(ViewDelta::Patch { add_prefixes, .. }) = next.views.get_mut("site-a") {
            add_prefixes.push("10.1.10.0/24".into());
        }
        let to = encode(P, &next);
        let ops = diff(&from, &to);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert_eq!(ops[0], KeyOp::Delete("/shardgate/views/gone".into()));
        assert!(matches!(&ops[1], KeyOp::Put(k, _) if k == "/shardgate/views/site-a"));
        assert!(diff(&to, &to).is_empty());
    }

    #[test]
    fn escaping_round_trips_odd_names() {
        for s in ["a/b", "100%", "tab\there", "ünï/cödé", "plain"] {
            assert_eq!(unescape(&escape(s)).unwrap(), s);
            assert!(!escape(s).contains('/'));
        }
    }
}
