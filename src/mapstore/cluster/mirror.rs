//! A node's copy of the fleet map's etcd keys at one revision: what it last
//! applied, the `mod_revision` of each key (what a write compares against),
//! and the state file that lets a node restarted while etcd is down serve
//! its last applied map. Pure data; the follower feeds it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::layout::{self, Keys, LayoutError};
use crate::mapstore::overlay::Overlay;

/// Version of the persisted mirror format.
pub const FORMAT: u32 = 1;

/// One key's value and the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub value: String,
    pub mod_revision: i64,
}

/// One change of one key, as a watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put {
        key: String,
        value: Vec<u8>,
        mod_revision: i64,
    },
    Delete {
        key: String,
        revision: i64,
    },
}

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub format: u32,
    /// The key prefix this mirror follows.
    pub prefix: String,
    /// The etcd revision the entries are at (0: never synced).
    pub revision: i64,
    pub entries: BTreeMap<String, Entry>,
}

impl Mirror {
    /// An empty mirror of `prefix` (nothing synced yet).
    pub fn empty(prefix: &str) -> Mirror {
        Mirror {
            format: FORMAT,
            prefix: prefix.to_owned(),
            revision: 0,
            entries: BTreeMap::new(),
        }
    }

    /// A snapshot read at `revision`: every key under the prefix.
    pub fn from_snapshot(
        prefix: &str,
        revision: i64,
        kvs: impl IntoIterator<Item = (String, Vec<u8>, i64)>,
    ) -> Mirror {
        let entries = kvs
            .into_iter()
            .map(|(key, value, mod_revision)| {
                (
                    key,
                    Entry {
                        value: String::from_utf8_lossy(&value).into_owned(),
                        mod_revision,
                    },
                )
            })
            .collect();
        Mirror {
            format: FORMAT,
            prefix: prefix.to_owned(),
            revision,
            entries,
        }
    }

    /// Apply watch `events` (whole transactions) and move to `revision`.
    /// Events at or below the mirror's revision were seen already and are
    /// skipped (a resumed watch may repeat them).
    pub fn apply(&mut self, events: &[Event], revision: i64) {
        for event in events {
            match event {
                Event::Put {
                    key,
                    value,
                    mod_revision,
                } if *mod_revision > self.revision => {
                    self.entries.insert(
                        key.clone(),
                        Entry {
                            value: String::from_utf8_lossy(value).into_owned(),
                            mod_revision: *mod_revision,
                        },
                    );
                }
                Event::Delete { key, revision } if *revision > self.revision => {
                    self.entries.remove(key);
                }
                _ => {}
            }
        }
        self.revision = self.revision.max(revision);
    }

    /// The overlay these keys hold.
    pub fn overlay(&self) -> Result<Overlay, LayoutError> {
        layout::decode(
            &self.prefix,
            self.entries
                .iter()
                .map(|(k, e)| (k.as_str(), e.value.as_bytes())),
        )
    }

    /// Keys and values, for a diff.
    pub fn keys(&self) -> Keys {
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), e.value.as_bytes().to_vec()))
            .collect()
    }

    /// The revision that last wrote `key`; 0 when it does not exist (what
    /// etcd compares a missing key's `mod_revision` as).
    pub fn mod_revision(&self, key: &str) -> i64 {
        self.entries.get(key).map_or(0, |e| e.mod_revision)
    }

    /// The newest `mod_revision` among keys starting with `start`.
    pub fn newest_under(&self, start: &str) -> i64 {
        self.entries
            .range(start.to_owned()..)
            .take_while(|(k, _)| k.starts_with(start))
            .map(|(_, e)| e.mod_revision)
            .max()
            .unwrap_or(0)
    }

    /// The state file's bytes.
    pub fn to_file(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("a mirror always encodes");
        bytes.push(b'\n');
        bytes
    }

    /// Parse a state file written by [`Mirror::to_file`] for `prefix`.
    pub fn from_file(bytes: &[u8], prefix: &str) -> Result<Mirror, String> {
        let m: Mirror = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if m.format != FORMAT {
            return Err(format!(
                "format {} is not the supported format {FORMAT}",
                m.format
            ));
        }
        if m.prefix != prefix {
            return Err(format!(
                "it follows prefix {:?}, not cluster.prefix {prefix:?}",
                m.prefix
            ));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, rev: i64) -> Event {
        Event::Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            mod_revision: rev,
        }
    }

    #[test]
    fn events_move_the_mirror_and_repeats_are_skipped() {
        let mut m = Mirror::from_snapshot(
            "/p/",
            10,
            [(
                "/p/views/a".to_string(),
                br#"{"kind":"deleted"}"#.to_vec(),
                7,
            )],
        );
        m.apply(
            &[
                put("/p/views/b", r#"{"kind":"defined","prefixes":[]}"#, 11),
                Event::Delete {
                    key: "/p/views/a".into(),
                    revision: 11,
                },
            ],
            11,
        );
        assert_eq!(m.revision, 11);
        assert_eq!(m.mod_revision("/p/views/a"), 0);
        assert_eq!(m.mod_revision("/p/views/b"), 11);
        // A resumed watch repeats revision 11: nothing changes.
        let before = m.clone();
        m.apply(&[put("/p/views/b", "garbage", 11)], 11);
        assert_eq!(m, before);
        assert!(m.overlay().unwrap().views.contains_key("b"));
        assert_eq!(m.newest_under("/p/views/"), 11);
        assert_eq!(m.newest_under("/p/records/"), 0);
    }

    #[test]
    fn the_state_file_round_trips_and_checks_its_prefix() {
        let mut m = Mirror::empty("/p/");
        m.apply(&[put("/p/views/b", r#"{"kind":"deleted"}"#, 3)], 3);
        let back = Mirror::from_file(&m.to_file(), "/p/").unwrap();
        assert_eq!(back, m);
        assert!(Mirror::from_file(&m.to_file(), "/q/")
            .unwrap_err()
            .contains("cluster.prefix"));
        assert!(Mirror::from_file(b"{", "/p/").is_err());
    }
}
