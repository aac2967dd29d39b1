//! Address-map changes made through the admin API, as pure data: the
//! [`Change`] operations the API accepts, and the [`Overlay`] they add up to,
//! which is what the state directory persists and what is merged over the
//! configuration file at start-up and at every reload.
//!
//! The overlay records the *difference* from the configuration, per view:
//! a view the API defined wholesale (or created), a view it deleted, or a
//! patch (prefixes added, prefixes removed, record sets replaced). Only real
//! differences are kept, so the file stays small however many changes were
//! made, and a reload of an edited configuration keeps every API change that
//! still applies. No I/O here: [`apply`] and [`merge`] are plain functions.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::{Config, RecordConfig, ViewConfig};

/// Version of the persisted overlay format.
pub const FORMAT: u32 = 1;

/// One resource record as the API shows and takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Owner name, absolute (a missing trailing dot is added).
    pub name: String,
    /// `A`, `AAAA`, `SRV` or `TXT`.
    #[serde(rename = "type")]
    pub rtype: String,
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// Record data without owner and type (members of one record set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordData {
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// One change to the address map. A request carries one or several; they
/// are applied together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Create the view, or replace it wholesale (prefixes and records).
    PutView {
        view: String,
        #[serde(default)]
        prefixes: Vec<String>,
        #[serde(default)]
        records: Vec<Record>,
    },
    /// Delete the view.
    DeleteView { view: String },
    /// Add one record to its record set (same data again: TTL updated).
    AddRecord { view: String, record: Record },
    /// Replace the record set `name`/`type` (empty = delete it).
    ReplaceRecords {
        view: String,
        name: String,
        #[serde(rename = "type")]
        rtype: String,
        records: Vec<RecordData>,
    },
    /// Delete the record set `name`/`type`, or only the record with `data`.
    DeleteRecords {
        view: String,
        name: String,
        #[serde(rename = "type")]
        rtype: String,
        #[serde(default)]
        data: Option<String>,
    },
    /// Add source prefixes (a bare address is a /32 or /128).
    AddPrefixes { view: String, prefixes: Vec<String> },
    /// Remove source prefixes listed in the view.
    RemovePrefixes { view: String, prefixes: Vec<String> },
}

impl Change {
    /// The view the change is about.
    pub fn view(&self) -> &str {
        match self {
            Change::PutView { view, .. }
            | Change::DeleteView { view }
            | Change::AddRecord { view, .. }
            | Change::ReplaceRecords { view, .. }
            | Change::DeleteRecords { view, .. }
            | Change::AddPrefixes { view, .. }
            | Change::RemovePrefixes { view, .. } => view,
        }
    }
}

/// A record set replaced by the API: every record of `name`/`type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSet {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub records: Vec<RecordData>,
}

/// How one view differs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ViewDelta {
    /// Defined by the API: replaces the configuration's view of that name
    /// (or creates it).
    Defined {
        prefixes: Vec<String>,
        records: Vec<Record>,
    },
    /// Deleted by the API.
    Deleted,
    /// The configuration's view with these differences.
    Patch {
        #[serde(default)]
        add_prefixes: Vec<String>,
        #[serde(default)]
        remove_prefixes: Vec<String>,
        /// Record sets that replace the configuration's (empty = removed).
        #[serde(default)]
        record_sets: Vec<RecordSet>,
    },
}

/// All API changes, by view name. This is the persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    pub format: u32,
    pub views: BTreeMap<String, ViewDelta>,
}

impl Default for Overlay {
    fn default() -> Self {
        Overlay {
            format: FORMAT,
            views: BTreeMap::new(),
        }
    }
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }
}

/// Why a change was refused; nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeError {
    /// 400 (invalid) or 404 (no such view, record or prefix).
    pub status: u16,
    pub message: String,
}

impl ChangeError {
    fn bad(message: impl Into<String>) -> ChangeError {
        ChangeError {
            status: 400,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> ChangeError {
        ChangeError {
            status: 404,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A source prefix in canonical form (`10.1.0.7` -> `10.1.0.7/32`).
pub fn canonical_prefix(text: &str) -> Result<String, ChangeError> {
    let t = text.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        return Ok(net.to_string());
    }
    if let Ok(addr) = t.parse::<IpAddr>() {
        return Ok(IpNet::from(addr).to_string());
    }
    Err(ChangeError::bad(format!(
        "{text:?} is not a prefix: use an address (10.1.0.7, fd00::7) or a prefix (10.1.0.0/16)"
    )))
}

/// Same prefix, however written? Unparsable text compares as written.
fn same_prefix(a: &str, b: &str) -> bool {
    match (canonical_prefix(a), canonical_prefix(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.trim() == b.trim(),
    }
}

/// An owner name in canonical form: trimmed, lower case, absolute.
pub fn canonical_name(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

fn canonical_type(rtype: &str) -> String {
    rtype.trim().to_ascii_uppercase()
}

/// Same record data for `rtype`? Addresses compare as addresses.
fn same_data(rtype: &str, a: &str, b: &str) -> bool {
    match rtype {
        "A" | "AAAA" => match (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => a.trim() == b.trim(),
        },
        _ => a.trim() == b.trim(),
    }
}

fn check_view_name(view: &str) -> Result<(), ChangeError> {
    if view.is_empty() || view.len() > 128 || view.chars().any(|c| c.is_control()) {
        return Err(ChangeError::bad(format!(
            "{view:?} is not a usable view name: 1 to 128 printable characters"
        )));
    }
    Ok(())
}

fn normalize_record(r: &Record) -> Result<Record, ChangeError> {
    if r.name.trim().is_empty() {
        return Err(ChangeError::bad("record name is empty"));
    }
    Ok(Record {
        name: canonical_name(&r.name),
        rtype: canonical_type(&r.rtype),
        data: r.data.trim().to_owned(),
        ttl: r.ttl,
    })
}

fn record_to_config(r: &Record) -> RecordConfig {
    RecordConfig {
        name: r.name.clone(),
        rtype: r.rtype.clone(),
        data: r.data.clone(),
        ttl: r.ttl,
    }
}

/// The API form of a configured record.
pub fn record_from_config(r: &RecordConfig) -> Record {
    Record {
        name: r.name.clone(),
        rtype: r.rtype.clone(),
        data: r.data.clone(),
        ttl: r.ttl,
    }
}

fn is_key(r: &RecordConfig, name: &str, rtype: &str) -> bool {
    canonical_name(&r.name) == name && canonical_type(&r.rtype) == rtype
}

/// The configuration with the overlay merged over it. The second value
/// lists overlay entries that no longer apply (their view left the
/// configuration); they are kept in the overlay but have no effect.
pub fn merge(base: &Config, overlay: &Overlay) -> (Config, Vec<String>) {
    let mut config = base.clone();
    let mut notes = Vec::new();
    for (name, delta) in &overlay.views {
        let pos = config.views.iter().position(|v| &v.name == name);
        match delta {
            ViewDelta::Defined { prefixes, records } => {
                let view = ViewConfig {
                    name: name.clone(),
                    prefixes: prefixes.clone(),
                    prefixes_file: None,
                    records: records.iter().map(record_to_config).collect(),
                };
                match pos {
                    Some(i) => config.views[i] = view,
                    None => config.views.push(view),
                }
            }
            ViewDelta::Deleted => {
                if let Some(i) = pos {
                    config.views.remove(i);
                }
            }
            ViewDelta::Patch {
                add_prefixes,
                remove_prefixes,
                record_sets,
            } => {
                let Some(i) = pos else {
                    notes.push(format!(
                        "view {name:?} has persisted changes but is no longer in the configuration; they are ignored until it is back"
                    ));
                    continue;
                };
                let view = &mut config.views[i];
                view.prefixes
                    .retain(|p| !remove_prefixes.iter().any(|r| same_prefix(p, r)));
                view.prefixes.extend(add_prefixes.iter().cloned());
                for set in record_sets {
                    view.records.retain(|r| !is_key(r, &set.name, &set.rtype));
                    view.records
                        .extend(set.records.iter().map(|d| RecordConfig {
                            name: set.name.clone(),
                            rtype: set.rtype.clone(),
                            data: d.data.clone(),
                            ttl: d.ttl,
                        }));
                }
            }
        }
    }
    (config, notes)
}

mod apply;
pub use apply::apply;

#[cfg(test)]
mod tests;
