//! Building the address map from the checked config types, and the one
//! start-up/reload entry point ([`load`], [`load_file`]) that parses a
//! configuration and builds its map in one pass, used by start-up, SIGHUP
//! reloads and the map store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::config::{self, Config, Problem};

use super::lpm::Lpm;
use super::*;

/// A configuration that passed every check, with the address map built from it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub map: AddressMap,
}

impl config::load::KeyedProblem for BuildError {
    fn key(&self) -> &str {
        &self.key
    }
    fn message(&self) -> &str {
        &self.message
    }
}

/// Parse, validate and build `text` ([`config::load_with`] with
/// [`AddressMap::build`]): every problem of either stage, located by line.
pub fn load(text: &str, base_dir: &Path) -> Result<Loaded, Vec<Problem>> {
    config::load_with(text, base_dir, AddressMap::build).map(|(config, map)| Loaded { config, map })
}

/// Read and [`load`] the file at `path`; relative paths inside it resolve
/// against the file's directory.
pub fn load_file(path: &Path) -> Result<Loaded, Vec<Problem>> {
    let (text, base_dir) = config::read_file(path)?;
    load(&text, &base_dir)
}

/// [`load`] the embedded default configuration ([`config::EMBEDDED_DEFAULT`]).
pub fn load_embedded() -> Result<Loaded, Vec<Problem>> {
    load(
        config::EMBEDDED_DEFAULT,
        Path::new(config::EMBEDDED_BASE_DIR),
    )
}

/// Collects problems; keys are built lazily by the callers.
struct Problems(Vec<BuildError>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(BuildError {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Where a prefix came from, for messages: inline index or file line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Src {
    Inline(u32),
    Line(u32),
}

/// Records of one RRset: (rdata, ttl, record index in its view).
type RrList = Vec<(Vec<u8>, u32, usize)>;

/// Records of one (name, view-or-default) grouped by type.
type TypeMap = BTreeMap<u16, RrList>;

#[derive(Default)]
struct NameBuild {
    zone: u32,
    visible_all: bool,
    visible: BTreeSet<u32>,
    is_apex: bool,
    /// None = the default view.
    records: BTreeMap<Option<u32>, TypeMap>,
}

/// The zones of `[[zone]]`: apexes, and the SOA and NS data served at them.
struct ZonesBuild {
    zones: Vec<Zone>,
    by_apex: HashMap<Vec<u8>, u32>,
    /// Per zone: NS names.
    ns: Vec<Vec<Vec<u8>>>,
    /// Per zone: (TTL, SOA rdata).
    soa: Vec<(u32, Vec<u8>)>,
}

/// Every view's prefixes, each listed once, and how many each view has.
struct PrefixesBuild {
    v4: Vec<(u32, u8, u32)>,
    v6: Vec<(u128, u8, u32)>,
    counts: Vec<usize>,
}

/// The names that exist, with their records per view.
struct RecordsBuild {
    names: BTreeMap<Vec<u8>, NameBuild>,
    count: usize,
    /// Per view.
    counts: Vec<usize>,
}

impl AddressMap {
    /// Build the map from a validated config. `base_dir` resolves relative
    /// `prefixes_file` paths (the config file's directory). Every stage
    /// runs even when an earlier one found problems, so one pass reports
    /// them all.
    pub fn build(config: &Config, base_dir: &Path) -> Result<AddressMap, Vec<BuildError>> {
        let mut p = Problems(Vec::new());
        let trusted = check_dns(&config.dns, &mut p);
        let zones = build_zones(config, &mut p);
        let default_view = check_view_names(config, &mut p);
        let prefixes = collect_prefixes(config, base_dir, &mut p);
        let records = collect_records(config, &zones, default_view, &mut p);
        let built = Built {
            default_view,
            zones,
            prefixes,
            records,
            trusted,
        };
        let map = AddressMap::encode(config, base_dir, built, &mut p);
        if p.0.is_empty() {
            Ok(map)
        } else {
            Err(p.0)
        }
    }

    /// The served form: the prefix tables, and every name's RRsets per view
    /// encoded as wire data.
    fn encode(config: &Config, base_dir: &Path, built: Built, p: &mut Problems) -> AddressMap {
        let Built {
            default_view,
            zones,
            prefixes,
            records,
            trusted,
        } = built;
        let ZonesBuild {
            zones,
            ns: zone_ns,
            soa: zone_soa,
            ..
        } = zones;
        let PrefixesBuild {
            v4: v4_entries,
            v6: v6_entries,
            counts: prefix_counts,
        } = prefixes;
        let RecordsBuild {
            names: names_build,
            count: record_count,
            counts: record_counts,
        } = records;
        let lpm = Lpm::build(v4_entries, v6_entries);
        let mut map = AddressMap {
            config: config.clone(),
            base_dir: base_dir.to_path_buf(),
            views: config
                .views
                .iter()
                .enumerate()
                .map(|(i, v)| ViewInfo {
                    name: v.name.clone(),
                    prefixes: prefix_counts[i],
                    records: record_counts[i],
                })
                .collect(),
            default_view,
            zones,
            lpm,
            trusted,
            max_udp_payload: config.dns.max_udp_payload.max(512),
            names: NameTable::default(),
            entries: Vec::new(),
            tables: Vec::new(),
            rrsets: Vec::new(),
            wire: Vec::new(),
            record_count,
        };
        let mut items = Vec::with_capacity(names_build.len());
        for (name, nb) in names_build {
            let apex_sets: TypeMap = if nb.is_apex {
                let zi = nb.zone as usize;
                let mut m = TypeMap::new();
                let (ttl, soa) = &zone_soa[zi];
                m.insert(records::SOA, vec![(soa.clone(), *ttl, 0)]);
                if !zone_ns[zi].is_empty() {
                    m.insert(
                        records::NS,
                        zone_ns[zi].iter().map(|n| (n.clone(), *ttl, 0)).collect(),
                    );
                }
                m
            } else {
                TypeMap::new()
            };
            let mut base = NONE;
            let mut overrides = Vec::new();
            let mut records = nb.records;
            if nb.is_apex || records.contains_key(&None) {
                let own = records.remove(&None).unwrap_or_default();
                match map.encode_table(&apex_sets, &own) {
                    Ok(t) => base = t,
                    Err(e) => {
                        let key = if default_view == NONE {
                            "view".to_string()
                        } else {
                            format!("view[{default_view}]")
                        };
                        p.add(key, format!("{}: {e}", display(&name)))
                    }
                }
            }
            for (view, own) in records {
                let Some(v) = view else { continue };
                match map.encode_table(&apex_sets, &own) {
                    Ok(t) => overrides.push((v, t)),
                    Err(e) => p.add(format!("view[{v}]"), format!("{}: {e}", display(&name))),
                }
            }
            let idx = map.entries.len() as u32;
            map.entries.push(NameEntry {
                zone: nb.zone,
                visible_all: nb.visible_all,
                visible: nb.visible.into_iter().collect(),
                base,
                overrides: overrides.into_boxed_slice(),
            });
            items.push((name, idx));
        }
        map.names = NameTable::build(items);

        map
    }

    /// Encode the RRsets of one name (apex sets first, own records after;
    /// the own records win on a type clash, which cannot happen with the
    /// configurable types) and return the table index.
    fn encode_table(&mut self, apex: &TypeMap, own: &TypeMap) -> Result<u32, String> {
        let start = self.rrsets.len() as u32;
        let any_off = self.wire.len();
        let mut any_count = 0usize;
        let mut types: BTreeMap<u16, &RrList> = BTreeMap::new();
        for (t, v) in apex.iter().chain(own.iter()) {
            types.insert(*t, v);
        }
        for (t, rrs) in types {
            let off = self.wire.len();
            for (rdata, ttl, _) in rrs.iter() {
                self.wire.extend_from_slice(&[0xC0, 0x0C]);
                push_rr_tail(&mut self.wire, t, *ttl, rdata);
            }
            let len = self.wire.len() - off;
            if len > MAX_RRSET_WIRE {
                return Err(format!(
                    "the {} records here add up to {len} bytes, more than a DNS message can carry; \
                     use fewer or shorter records",
                    records::type_name(t)
                ));
            }
            any_count += rrs.len();
            self.rrsets.push(RrSet {
                rtype: t,
                count: rrs.len() as u16,
                off: off as u32,
                len: len as u32,
            });
        }
        let any_len = self.wire.len() - any_off;
        let any = RrSet {
            rtype: records::ANY,
            count: any_count.min(u16::MAX as usize) as u16,
            off: any_off as u32,
            len: any_len as u32,
        };
        self.tables.push(RrTable {
            start,
            end: self.rrsets.len() as u32,
            any,
        });
        Ok(self.tables.len() as u32 - 1)
    }
}

/// The checked parts of a config, before encoding.
struct Built {
    default_view: u32,
    zones: ZonesBuild,
    prefixes: PrefixesBuild,
    records: RecordsBuild,
    trusted: Lpm,
}

/// `[dns]` checks the map depends on; returns the trusted resolvers' prefixes.
fn check_dns(dns: &config::DnsConfig, p: &mut Problems) -> Lpm {
    if dns.max_udp_payload < 512 {
        p.add(
            "dns.max_udp_payload",
            format!(
                "{} is below 512, the size every DNS client accepts; use 512..=65535 \
                 (1232 avoids IP fragmentation)",
                dns.max_udp_payload
            ),
        );
    }
    let mut trusted4 = Vec::new();
    let mut trusted6 = Vec::new();
    for (i, net) in dns.trusted_resolvers.iter().enumerate() {
        match parse_prefix(&net.to_string()) {
            Ok(Net::V4(a, l)) => trusted4.push((a, l, 0)),
            Ok(Net::V6(a, l)) => trusted6.push((a, l, 0)),
            Err(e) => p.add(format!("dns.trusted_resolvers[{i}]"), e),
        }
    }

    Lpm::build(trusted4, trusted6)
}

/// Parse `[[zone]]`. A zone with errors is kept (with a placeholder SOA,
/// never served: the build fails) so its records are still checked.
fn build_zones(config: &Config, p: &mut Problems) -> ZonesBuild {
    let mut zones: Vec<Zone> = Vec::new();
    let mut zone_by_apex: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut seen_apex: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut zone_ns: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut zone_soa: Vec<(u32, Vec<u8>)> = Vec::new();
    for (zi, z) in config.zones.iter().enumerate() {
        let key = |f: &str| format!("zone[{zi}].{f}");
        let apex = match parse_name(&z.name) {
            Ok(w) => lower(&w),
            Err(e) => {
                p.add(key("name"), e);
                continue;
            }
        };
        if let Some(&other) = seen_apex.get(&apex) {
            p.add(
                key("name"),
                format!(
                    "zone `{}` is already configured as zone[{other}]; remove one of them",
                    z.name
                ),
            );
            continue;
        }
        seen_apex.insert(apex.clone(), zi);
        if z.ttl > MAX_TTL {
            p.add(
                key("ttl"),
                format!("{} exceeds the largest TTL, {MAX_TTL}", z.ttl),
            );
        }
        let mname = parse_name(&z.soa.mname).map_err(|e| p.add(key("soa.mname"), e));
        let rname = parse_name(&z.soa.rname).map_err(|e| {
            p.add(
                key("soa.rname"),
                format!("{e} (the mailbox `hostmaster@svc.example` is written `hostmaster.svc.example.`)"),
            )
        });
        let mut ns = Vec::new();
        for (ni, n) in z.ns.iter().enumerate() {
            match parse_name(n) {
                Ok(w) => ns.push(w),
                Err(e) => p.add(key(&format!("ns[{ni}]")), e),
            }
        }
        // On errors keep the zone (with a placeholder SOA, never served:
        // the build fails) so its records are still checked.
        let mname = mname.unwrap_or_else(|_| vec![0]);
        let rname = rname.unwrap_or_else(|_| vec![0]);
        let soa = records::soa_rdata(
            &mname,
            &rname,
            z.soa.serial,
            [z.soa.refresh, z.soa.retry, z.soa.expire, z.soa.minimum],
        );
        let mut neg_soa = Vec::new();
        push_rr_tail(&mut neg_soa, records::SOA, z.ttl.min(z.soa.minimum), &soa);
        zone_by_apex.insert(apex.clone(), zones.len() as u32);
        zones.push(Zone {
            name: z.name.clone(),
            apex,
            neg_soa,
        });
        zone_ns.push(ns);
        zone_soa.push((z.ttl, soa));
    }

    ZonesBuild {
        zones,
        by_apex: zone_by_apex,
        ns: zone_ns,
        soa: zone_soa,
    }
}

/// View names are non-empty and unique; returns the index of the view
/// named `default` (or [`NONE`]).
fn check_view_names(config: &Config, p: &mut Problems) -> u32 {
    let mut default_view = NONE;
    let mut view_by_name: HashMap<&str, usize> = HashMap::new();
    if config.views.len() as u64 > lpm::MAX_VALUE as u64 {
        p.add(
            "view",
            format!("at most {} views are supported", lpm::MAX_VALUE),
        );
    }
    for (vi, v) in config.views.iter().enumerate() {
        if v.name.trim().is_empty() {
            p.add(format!("view[{vi}].name"), "a view needs a non-empty name");
        } else if let Some(&other) = view_by_name.get(v.name.as_str()) {
            p.add(
                format!("view[{vi}].name"),
                format!(
                    "view `{}` is already defined as view[{other}]; view names must be unique",
                    v.name
                ),
            );
        } else {
            view_by_name.insert(v.name.as_str(), vi);
            if v.name == "default" {
                default_view = vi as u32;
            }
        }
    }

    default_view
}

/// Every view's inline prefixes and `prefixes_file`, each prefix in one view only.
fn collect_prefixes(config: &Config, base_dir: &Path, p: &mut Problems) -> PrefixesBuild {
    let mut v4: Vec<(u32, u8, u32, Src)> = Vec::new();
    let mut v6: Vec<(u128, u8, u32, Src)> = Vec::new();
    let mut prefix_counts = vec![0usize; config.views.len()];
    let mut files: Vec<Option<String>> = vec![None; config.views.len()];
    for (vi, v) in config.views.iter().enumerate() {
        for (pi, text) in v.prefixes.iter().enumerate() {
            match parse_prefix(text) {
                Ok(Net::V4(a, l)) => v4.push((a, l, vi as u32, Src::Inline(pi as u32))),
                Ok(Net::V6(a, l)) => v6.push((a, l, vi as u32, Src::Inline(pi as u32))),
                Err(e) => p.add(format!("view[{vi}].prefixes[{pi}]"), e),
            }
        }
        if let Some(file) = &v.prefixes_file {
            let path = if file.is_absolute() {
                file.clone()
            } else {
                base_dir.join(file)
            };
            files[vi] = Some(path.display().to_string());
            let key = format!("view[{vi}].prefixes_file");
            match std::fs::read_to_string(&path) {
                Err(e) => p.add(
                    key,
                    format!(
                        "cannot read {}: {e} (relative paths are taken from the config file's directory, {})",
                        path.display(),
                        base_dir.display()
                    ),
                ),
                Ok(text) => {
                    let (ok, bad) = parse_prefix_lines(&text);
                    for (line, e) in bad.iter().take(MAX_LISTED) {
                        p.add(key.clone(), format!("{}:{line}: {e}", path.display()));
                    }
                    if bad.len() > MAX_LISTED {
                        p.add(
                            key.clone(),
                            format!("{}: {} more bad lines not listed", path.display(), bad.len() - MAX_LISTED),
                        );
                    }
                    for (line, n) in ok {
                        match n {
                            Net::V4(a, l) => v4.push((a, l, vi as u32, Src::Line(line))),
                            Net::V6(a, l) => v6.push((a, l, vi as u32, Src::Line(line))),
                        }
                    }
                }
            }
        }
    }
    let mut dup_listed = 0usize;
    let mut dup_more = 0usize;
    let mut dup = |vi: u32, src: Src, net: Net, first_view: u32, first_src: Src| {
        if dup_listed >= MAX_LISTED {
            dup_more += 1;
            return;
        }
        dup_listed += 1;
        let where_first = match first_src {
            Src::Inline(i) => format!("view[{first_view}].prefixes[{i}]"),
            Src::Line(l) => format!(
                "{}:{l} (view[{first_view}].prefixes_file)",
                files[first_view as usize].as_deref().unwrap_or("?")
            ),
        };
        let first_name = &config.views[first_view as usize].name;
        let msg = format!(
            "prefix {net} is also listed in view `{first_name}` ({where_first}); a prefix can select only one view: \
             remove it from one of them"
        );
        match src {
            Src::Inline(i) => p.add(format!("view[{vi}].prefixes[{i}]"), msg),
            Src::Line(l) => p.add(
                format!("view[{vi}].prefixes_file"),
                format!(
                    "{}:{l}: {msg}",
                    files[vi as usize].as_deref().unwrap_or("?")
                ),
            ),
        }
    };
    let v4_entries = dedup_prefixes(&mut v4, &mut prefix_counts, |e, f| {
        dup(e.2, e.3, Net::V4(e.0, e.1), f.2, f.3)
    });
    let v6_entries = dedup_prefixes(&mut v6, &mut prefix_counts, |e, f| {
        dup(e.2, e.3, Net::V6(e.0, e.1), f.2, f.3)
    });
    if dup_more > 0 {
        p.add(
            "view",
            format!("{dup_more} more prefixes listed in two views are not shown"),
        );
    }

    PrefixesBuild {
        v4: v4_entries,
        v6: v6_entries,
        counts: prefix_counts,
    }
}

/// Every view's records, checked and grouped by owner name, view and type;
/// zone apexes and the ancestors of owners exist as names.
fn collect_records(
    config: &Config,
    zone_build: &ZonesBuild,
    default_view: u32,
    p: &mut Problems,
) -> RecordsBuild {
    let ZonesBuild {
        zones,
        by_apex: zone_by_apex,
        soa: zone_soa,
        ..
    } = zone_build;
    let zone_list = if zones.is_empty() {
        "none; add a [[zone]]".to_string()
    } else {
        zones
            .iter()
            .map(|z| z.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };

    let mut names_build: BTreeMap<Vec<u8>, NameBuild> = BTreeMap::new();
    for (zi, z) in zones.iter().enumerate() {
        let nb = names_build.entry(z.apex.clone()).or_default();
        nb.zone = zi as u32;
        nb.visible_all = true;
        nb.is_apex = true;
    }
    let mut record_count = 0usize;
    let mut record_counts = vec![0usize; config.views.len()];
    for (vi, v) in config.views.iter().enumerate() {
        let view_key = if vi as u32 == default_view {
            None
        } else {
            Some(vi as u32)
        };
        for (ri, r) in v.records.iter().enumerate() {
            let key = |f: &str| format!("view[{vi}].record[{ri}].{f}");
            let owner = match parse_name(&r.name) {
                Ok(w) => lower(&w),
                Err(e) => {
                    p.add(key("name"), e);
                    continue;
                }
            };
            let offs = label_offsets(&owner);
            let zone = offs
                .iter()
                .find_map(|&o| zone_by_apex.get(&owner[o..]).map(|&z| (z, o)));
            let Some((zi, apex_off)) = zone else {
                p.add(
                    key("name"),
                    format!(
                        "`{}` is outside every configured zone (zones: {zone_list}); fix the name or add a [[zone]] for it",
                        r.name
                    ),
                );
                continue;
            };
            let rtype = match records::parse_type(&r.rtype) {
                Ok(t) => t,
                Err(e) => {
                    p.add(key("type"), e);
                    continue;
                }
            };
            let rdata = match records::parse_rdata(rtype, &r.data) {
                Ok(d) => d,
                Err(e) => {
                    p.add(key("data"), e);
                    continue;
                }
            };
            if rdata.len() > 65535 {
                p.add(
                    key("data"),
                    "record data longer than 65535 bytes cannot be sent",
                );
                continue;
            }
            let zone_ttl = zone_soa.get(zi as usize).map(|s| s.0).unwrap_or(0);
            let ttl = r.ttl.unwrap_or(zone_ttl);
            if ttl > MAX_TTL {
                p.add(
                    key("ttl"),
                    format!("{ttl} exceeds the largest TTL, {MAX_TTL}"),
                );
                continue;
            }
            record_count += 1;
            record_counts[vi] += 1;
            // owner and its ancestors below the apex exist for this view
            for &o in offs.iter().filter(|&&o| o <= apex_off) {
                let nb = names_build.entry(owner[o..].to_vec()).or_default();
                nb.zone = zi;
                match view_key {
                    None => nb.visible_all = true,
                    Some(v) => {
                        nb.visible.insert(v);
                    }
                }
            }
            let nb = names_build.entry(owner.clone()).or_default();
            let set = nb
                .records
                .entry(view_key)
                .or_default()
                .entry(rtype)
                .or_default();
            if let Some((_, first_ttl, first_ri)) = set.first() {
                if *first_ttl != ttl {
                    p.add(
                        key("ttl"),
                        format!(
                            "TTL {ttl} differs from TTL {first_ttl} of view[{vi}].record[{first_ri}] \
                             (same name and type); records of one RRset must share a TTL"
                        ),
                    );
                    continue;
                }
            }
            if !set.iter().any(|(d, _, _)| *d == rdata) {
                set.push((rdata, ttl, ri));
            }
        }
    }

    RecordsBuild {
        names: names_build,
        count: record_count,
        counts: record_counts,
    }
}

/// Sort prefixes, report cross-view duplicates through `dup(entry, first)`,
/// count per view, and return the distinct `(addr, len, view)` list.
fn dedup_prefixes<K: lpm::Key>(
    list: &mut [(K, u8, u32, Src)],
    counts: &mut [usize],
    mut dup: impl FnMut(&(K, u8, u32, Src), &(K, u8, u32, Src)),
) -> Vec<(K, u8, u32)> {
    list.sort_unstable_by_key(|e| (e.0, e.1, e.2, e.3));
    let mut out: Vec<(K, u8, u32)> = Vec::with_capacity(list.len());
    let mut i = 0;
    while i < list.len() {
        let first = list[i];
        out.push((first.0, first.1, first.2));
        if let Some(c) = counts.get_mut(first.2 as usize) {
            *c += 1;
        }
        let mut j = i + 1;
        while j < list.len() && list[j].0 == first.0 && list[j].1 == first.1 {
            if list[j].2 != first.2 {
                dup(&list[j], &first);
            }
            j += 1;
        }
        i = j;
    }
    out
}
