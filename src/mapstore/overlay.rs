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

/// The overlay after `changes`, applied in order on top of `overlay` over
/// `base`. Refuses the whole list at the first change that cannot apply;
/// whether the result is a valid map is for the caller to check (it builds
/// the map from [`merge`]).
pub fn apply(base: &Config, overlay: &Overlay, changes: &[Change]) -> Result<Overlay, ChangeError> {
    if changes.is_empty() {
        return Err(ChangeError::bad("no change given"));
    }
    let mut next = overlay.clone();
    for (i, change) in changes.iter().enumerate() {
        apply_one(base, &mut next, change).map_err(|e| {
            if changes.len() > 1 {
                ChangeError {
                    status: e.status,
                    message: format!("change {} ({}): {}", i + 1, change.view(), e.message),
                }
            } else {
                e
            }
        })?;
    }
    Ok(next)
}

fn apply_one(base: &Config, overlay: &mut Overlay, change: &Change) -> Result<(), ChangeError> {
    check_view_name(change.view())?;
    let base_view = base.views.iter().find(|v| v.name == change.view());
    match change {
        Change::PutView {
            view,
            prefixes,
            records,
        } => {
            let mut canon: Vec<String> = Vec::with_capacity(prefixes.len());
            for p in prefixes {
                let c = canonical_prefix(p)?;
                if !canon.contains(&c) {
                    canon.push(c);
                }
            }
            let records = records
                .iter()
                .map(normalize_record)
                .collect::<Result<Vec<_>, _>>()?;
            overlay.views.insert(
                view.clone(),
                ViewDelta::Defined {
                    prefixes: canon,
                    records,
                },
            );
            Ok(())
        }
        Change::DeleteView { view } => {
            match overlay.views.get(view) {
                Some(ViewDelta::Deleted) => return Err(no_view(view)),
                None if base_view.is_none() => return Err(no_view(view)),
                _ => {}
            }
            if base_view.is_some() {
                overlay.views.insert(view.clone(), ViewDelta::Deleted);
            } else {
                overlay.views.remove(view);
            }
            Ok(())
        }
        Change::AddPrefixes { view, prefixes } => {
            if prefixes.is_empty() {
                return Err(ChangeError::bad("no prefix given"));
            }
            let canon = prefixes
                .iter()
                .map(|p| canonical_prefix(p))
                .collect::<Result<Vec<_>, _>>()?;
            let delta = delta_mut(overlay, base_view, view)?;
            for p in canon {
                match delta {
                    ViewDelta::Defined { prefixes, .. } => {
                        if !prefixes.iter().any(|q| same_prefix(q, &p)) {
                            prefixes.push(p);
                        }
                    }
                    ViewDelta::Patch {
                        add_prefixes,
                        remove_prefixes,
                        ..
                    } => {
                        remove_prefixes.retain(|q| !same_prefix(q, &p));
                        let in_base = base_view
                            .is_some_and(|b| b.prefixes.iter().any(|q| same_prefix(q, &p)));
                        if !in_base && !add_prefixes.iter().any(|q| same_prefix(q, &p)) {
                            add_prefixes.push(p);
                        }
                    }
                    ViewDelta::Deleted => unreachable_deleted()?,
                }
            }
            tidy(overlay, view);
            Ok(())
        }
        Change::RemovePrefixes { view, prefixes } => {
            if prefixes.is_empty() {
                return Err(ChangeError::bad("no prefix given"));
            }
            let canon = prefixes
                .iter()
                .map(|p| canonical_prefix(p))
                .collect::<Result<Vec<_>, _>>()?;
            let delta = delta_mut(overlay, base_view, view)?;
            for p in canon {
                match delta {
                    ViewDelta::Defined { prefixes, .. } => {
                        let before = prefixes.len();
                        prefixes.retain(|q| !same_prefix(q, &p));
                        if prefixes.len() == before {
                            return Err(ChangeError::not_found(format!(
                                "prefix {p} is not in view {view:?}"
                            )));
                        }
                    }
                    ViewDelta::Patch {
                        add_prefixes,
                        remove_prefixes,
                        ..
                    } => {
                        let in_base = base_view
                            .is_some_and(|b| b.prefixes.iter().any(|q| same_prefix(q, &p)));
                        let removed = remove_prefixes.iter().any(|q| same_prefix(q, &p));
                        let added = add_prefixes.iter().any(|q| same_prefix(q, &p));
                        if !added && (!in_base || removed) {
                            let from_file = base_view.and_then(|b| b.prefixes_file.as_ref());
                            return Err(match from_file {
                                Some(file) if !removed => ChangeError::bad(format!(
                                    "prefix {p} is not among the prefixes listed in view {view:?}; \
                                     if it comes from its prefixes_file {}, edit that file and reload",
                                    file.display()
                                )),
                                _ => ChangeError::not_found(format!(
                                    "prefix {p} is not in view {view:?}"
                                )),
                            });
                        }
                        add_prefixes.retain(|q| !same_prefix(q, &p));
                        if in_base {
                            remove_prefixes.push(p);
                        }
                    }
                    ViewDelta::Deleted => unreachable_deleted()?,
                }
            }
            tidy(overlay, view);
            Ok(())
        }
        Change::AddRecord { view, record } => {
            let record = normalize_record(record)?;
            let mut set = current_set(overlay, base_view, view, &record.name, &record.rtype)?;
            match set
                .iter_mut()
                .find(|d| same_data(&record.rtype, &d.data, &record.data))
            {
                Some(existing) => existing.ttl = record.ttl,
                None => set.push(RecordData {
                    data: record.data.clone(),
                    ttl: record.ttl,
                }),
            }
            set_records(overlay, base_view, view, &record.name, &record.rtype, set)
        }
        Change::ReplaceRecords {
            view,
            name,
            rtype,
            records,
        } => {
            let (name, rtype) = (canonical_name(name), canonical_type(rtype));
            // Fails for a missing view.
            current_set(overlay, base_view, view, &name, &rtype)?;
            let mut set: Vec<RecordData> = Vec::with_capacity(records.len());
            for r in records {
                let d = RecordData {
                    data: r.data.trim().to_owned(),
                    ttl: r.ttl,
                };
                if !set.iter().any(|x| same_data(&rtype, &x.data, &d.data)) {
                    set.push(d);
                }
            }
            set_records(overlay, base_view, view, &name, &rtype, set)
        }
        Change::DeleteRecords {
            view,
            name,
            rtype,
            data,
        } => {
            let (name, rtype) = (canonical_name(name), canonical_type(rtype));
            let mut set = current_set(overlay, base_view, view, &name, &rtype)?;
            if set.is_empty() {
                return Err(ChangeError::not_found(format!(
                    "view {view:?} has no {rtype} records for {name}"
                )));
            }
            match data {
                Some(data) => {
                    let before = set.len();
                    set.retain(|d| !same_data(&rtype, &d.data, data));
                    if set.len() == before {
                        return Err(ChangeError::not_found(format!(
                            "view {view:?} has no {rtype} record {name} with data {data:?}"
                        )));
                    }
                }
                None => set.clear(),
            }
            set_records(overlay, base_view, view, &name, &rtype, set)
        }
    }
}

fn no_view(view: &str) -> ChangeError {
    ChangeError::not_found(format!(
        "no view named {view:?}: create it with PUT /v1/views/{view}"
    ))
}

fn unreachable_deleted() -> Result<(), ChangeError> {
    // `delta_mut` never hands out a deleted view.
    Err(ChangeError {
        status: 500,
        message: "internal error: change applied to a deleted view".into(),
    })
}

/// The overlay entry of an existing view, created as an empty patch when the
/// view so far comes from the configuration alone.
fn delta_mut<'a>(
    overlay: &'a mut Overlay,
    base_view: Option<&ViewConfig>,
    view: &str,
) -> Result<&'a mut ViewDelta, ChangeError> {
    match overlay.views.get(view) {
        Some(ViewDelta::Deleted) => return Err(no_view(view)),
        None if base_view.is_none() => return Err(no_view(view)),
        _ => {}
    }
    Ok(overlay
        .views
        .entry(view.to_owned())
        .or_insert_with(|| ViewDelta::Patch {
            add_prefixes: Vec::new(),
            remove_prefixes: Vec::new(),
            record_sets: Vec::new(),
        }))
}

/// The current records of `name`/`type` in the view (config + overlay).
fn current_set(
    overlay: &Overlay,
    base_view: Option<&ViewConfig>,
    view: &str,
    name: &str,
    rtype: &str,
) -> Result<Vec<RecordData>, ChangeError> {
    let from_config = |records: &[RecordConfig]| {
        records
            .iter()
            .filter(|r| is_key(r, name, rtype))
            .map(|r| RecordData {
                data: r.data.clone(),
                ttl: r.ttl,
            })
            .collect()
    };
    match (overlay.views.get(view), base_view) {
        (Some(ViewDelta::Deleted), _) | (None, None) => Err(no_view(view)),
        (Some(ViewDelta::Defined { records, .. }), _) => Ok(records
            .iter()
            .filter(|r| r.name == name && r.rtype == rtype)
            .map(|r| RecordData {
                data: r.data.clone(),
                ttl: r.ttl,
            })
            .collect()),
        (Some(ViewDelta::Patch { record_sets, .. }), base) => {
            match record_sets
                .iter()
                .find(|s| s.name == name && s.rtype == rtype)
            {
                Some(s) => Ok(s.records.clone()),
                None => Ok(base.map(|b| from_config(&b.records)).unwrap_or_default()),
            }
        }
        (None, Some(b)) => Ok(from_config(&b.records)),
    }
}

/// Make `set` the records of `name`/`type` in the view.
fn set_records(
    overlay: &mut Overlay,
    base_view: Option<&ViewConfig>,
    view: &str,
    name: &str,
    rtype: &str,
    set: Vec<RecordData>,
) -> Result<(), ChangeError> {
    let base_set: Vec<RecordData> = base_view
        .map(|b| {
            b.records
                .iter()
                .filter(|r| is_key(r, name, rtype))
                .map(|r| RecordData {
                    data: r.data.clone(),
                    ttl: r.ttl,
                })
                .collect()
        })
        .unwrap_or_default();
    match delta_mut(overlay, base_view, view)? {
        ViewDelta::Defined { records, .. } => {
            let at = records
                .iter()
                .position(|r| r.name == name && r.rtype == rtype)
                .unwrap_or(records.len());
            records.retain(|r| !(r.name == name && r.rtype == rtype));
            let at = at.min(records.len());
            let new = set.into_iter().map(|d| Record {
                name: name.to_owned(),
                rtype: rtype.to_owned(),
                data: d.data,
                ttl: d.ttl,
            });
            records.splice(at..at, new);
        }
        ViewDelta::Patch { record_sets, .. } => {
            record_sets.retain(|s| !(s.name == name && s.rtype == rtype));
            if set != base_set {
                record_sets.push(RecordSet {
                    name: name.to_owned(),
                    rtype: rtype.to_owned(),
                    records: set,
                });
                record_sets.sort_by(|a, b| (&a.name, &a.rtype).cmp(&(&b.name, &b.rtype)));
            }
        }
        ViewDelta::Deleted => unreachable_deleted()?,
    }
    tidy(overlay, view);
    Ok(())
}

/// Drop a patch that no longer changes anything.
fn tidy(overlay: &mut Overlay, view: &str) {
    if let Some(ViewDelta::Patch {
        add_prefixes,
        remove_prefixes,
        record_sets,
    }) = overlay.views.get(view)
    {
        if add_prefixes.is_empty() && remove_prefixes.is_empty() && record_sets.is_empty() {
            overlay.views.remove(view);
        }
    }
}

#[cfg(test)]
mod tests {
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
}
