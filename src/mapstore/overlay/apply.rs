//! Applying API changes to an overlay: [`apply`] checks each [`Change`]
//! against the base configuration and the overlay so far, and records only
//! real differences.

use super::*;

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
            let canon = canonical_prefixes(prefixes)?;
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
            let canon = canonical_prefixes(prefixes)?;
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

/// The prefixes of an add or remove, in canonical form; refuses an empty list.
fn canonical_prefixes(prefixes: &[String]) -> Result<Vec<String>, ChangeError> {
    if prefixes.is_empty() {
        return Err(ChangeError::bad("no prefix given"));
    }
    prefixes.iter().map(|p| canonical_prefix(p)).collect()
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
