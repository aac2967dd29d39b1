//! The address map: zones, views keyed by source prefixes (longest-prefix
//! match over IPv4 and IPv6), and per-view records pre-encoded for the DNS
//! answer builder. Built once from a [`Config`](crate::config::Config),
//! immutable afterwards; a change builds a new map that the runtime swaps in.
//!
//! - [`build`]: the map from the config types, and [`load`]/[`load_file`],
//!   the one start-up/reload function (config and map in one pass).
//!
//! # Semantics
//! - A query name belongs to the zone with the longest matching apex; the
//!   apex carries the zone's SOA and NS records.
//! - The view of a client is the one owning the longest prefix covering its
//!   address (IPv4-mapped IPv6 counts as IPv4); the view named `default`
//!   answers everyone else. Without a `default` view, uncovered clients see
//!   only the zones' SOA/NS (every other name is NXDOMAIN for them).
//! - Per owner name: if the client's view has records there, the answer
//!   comes from the view; otherwise from the `default` view's records.
//!   A name exists for a view when it (or a name below it: an empty
//!   non-terminal) has records in that view or in `default`, or is an apex.
//! - Every answer RRset is encoded here once, as wire bytes whose owner is a
//!   compression pointer to the question (`0xC00C`), so the DNS layer
//!   answers by copying.
//! - No wildcard expansion: a configured `*` label only matches itself.

pub mod build;
pub mod lpm;
pub mod names;
pub mod prefixes;
pub mod records;

pub use build::{load, load_embedded, load_file, Loaded};

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;

use self::lpm::{Key, Lpm, Match};
use self::names::{display, label_offsets, lower, parse_name, NameTable};
use self::prefixes::{canonical, parse_prefix, parse_prefix_lines, Net};
use self::records::{push_rr_tail, MAX_TTL};

/// A problem found while building the map, located by its config key path
/// (e.g. `view[1].prefixes[3]`) so `check-config` can point at the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for BuildError {}

/// Sentinel: no view / no table.
pub(crate) const NONE: u32 = u32::MAX;

/// At most this many problems are listed per prefixes file and for
/// cross-view duplicates; a summary line counts the rest.
const MAX_LISTED: usize = 100;

/// Largest RRset (wire bytes) accepted, so any answer fits a DNS message.
const MAX_RRSET_WIRE: usize = 60_000;

/// Which view answers an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewMatch {
    /// Index of the view (position in the config's `[[view]]` array and in
    /// [`AddressMap::views`]); `None` when no prefix covers the address and
    /// there is no `default` view.
    pub view: Option<usize>,
    /// Length of the prefix that matched; `None` when nothing matched and the
    /// `default` view (if any) answers.
    pub prefix_len: Option<u8>,
}

/// What the map reports about one view (for the admin API and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewInfo {
    pub name: String,
    /// Prefixes selecting this view (inline and from its file).
    pub prefixes: usize,
    /// Records configured in this view.
    pub records: usize,
}

/// A served zone.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    /// As configured (presentation form).
    pub name: String,
    /// Lowercase wire form of the apex.
    pub apex: Vec<u8>,
    /// The SOA record after its owner (TYPE..RDATA), TTL = min(ttl, minimum),
    /// for the authority section of negative answers.
    pub neg_soa: Vec<u8>,
}

/// One RRset (or the ANY pseudo-set) as answer-section wire bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RrSet {
    pub rtype: u16,
    pub count: u16,
    pub off: u32,
    pub len: u32,
}

/// All RRsets of one owner name as one view sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RrTable {
    /// Range in `AddressMap::rrsets`.
    pub start: u32,
    pub end: u32,
    /// Every record of the name (qtype ANY).
    pub any: RrSet,
}

/// A name known to the map: an apex, an owner, or an empty non-terminal.
#[derive(Debug, Clone)]
pub(crate) struct NameEntry {
    pub zone: u32,
    /// Exists for every client (apex, or records at/below it in `default`).
    pub visible_all: bool,
    /// Other views for which it exists (sorted).
    pub visible: Box<[u32]>,
    /// Table of the `default` view (plus SOA/NS at an apex), or NONE.
    pub base: u32,
    /// Per view with its own records here: (view, table), sorted by view.
    pub overrides: Box<[(u32, u32)]>,
}

/// Result of selecting a view, with what ECS scope needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Selected {
    /// View index or NONE.
    pub view: u32,
    /// The deciding prefix, if one matched.
    pub matched: Option<Match>,
}

/// Immutable address map.
#[derive(Debug)]
pub struct AddressMap {
    config: Config,
    base_dir: PathBuf,
    views: Vec<ViewInfo>,
    default_view: u32,
    pub(crate) zones: Vec<Zone>,
    lpm: Lpm,
    trusted: Lpm,
    pub(crate) max_udp_payload: u16,
    names: NameTable,
    entries: Vec<NameEntry>,
    tables: Vec<RrTable>,
    rrsets: Vec<RrSet>,
    wire: Vec<u8>,
    record_count: usize,
}

impl AddressMap {
    // ----- request path (used by `dns`) -----

    /// The entry of a lowercase wire name with its hash.
    #[inline]
    pub(crate) fn entry(&self, lname: &[u8], h: u64) -> Option<&NameEntry> {
        let i = self.names.get(lname, h)?;
        self.entries.get(i as usize)
    }

    /// The RRset of `qtype` in table `t` (ANY: every record).
    #[inline]
    pub(crate) fn rrset(&self, t: u32, qtype: u16) -> Option<RrSet> {
        let table = self.tables.get(t as usize)?;
        if qtype == records::ANY {
            return Some(table.any);
        }
        self.rrsets
            .get(table.start as usize..table.end as usize)?
            .iter()
            .find(|s| s.rtype == qtype)
            .copied()
    }

    /// Wire bytes of an RRset.
    #[inline]
    pub(crate) fn wire(&self, s: RrSet) -> &[u8] {
        self.wire
            .get(s.off as usize..(s.off + s.len) as usize)
            .unwrap_or(&[])
    }

    /// View for a client address, optionally considering only prefixes no
    /// longer than `max_len` (ECS: the resolver revealed that many bits).
    #[inline]
    pub(crate) fn select(&self, ip: IpAddr, max_len: Option<u8>) -> Selected {
        let m = match canonical(ip) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                // an IPv4-mapped IPv6 subnet: its first 96 bits are the mapping
                let max_len = match ip {
                    IpAddr::V6(_) => max_len.map(|l| l.saturating_sub(96)),
                    IpAddr::V4(_) => max_len,
                };
                match max_len {
                    None => self.lpm.v4.lookup(a),
                    Some(l) => self.lpm.v4.lookup_limited(a, l),
                }
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                match max_len {
                    None => self.lpm.v6.lookup(a),
                    Some(l) => self.lpm.v6.lookup_limited(a, l),
                }
            }
        };
        match m {
            Some(m) => Selected {
                view: m.value,
                matched: Some(m),
            },
            None => Selected {
                view: self.default_view,
                matched: None,
            },
        }
    }

    /// View and ECS scope for a client subnet `ip/source_len` sent by a
    /// trusted resolver (RFC 7871). The subnet's first address picks the
    /// view by longest-prefix match; the scope is the shortest prefix of
    /// that address whose every address gets the same view (RFC 7871
    /// §7.2.1: the answer must hold for the whole scope). It is shorter
    /// than the source when the deciding prefix is, and longer when other
    /// views' prefixes lie inside the source subnet (10.0.0.0/12 holding
    /// 10.1.0.0/16 of another view answers with scope /16), telling the
    /// resolver its source prefix was not specific enough. A source of 0
    /// ("do not use my address") keeps scope 0 and the views of /0
    /// prefixes only. An IPv4-mapped subnet is matched as IPv4 and its
    /// scope counts the 96 mapping bits.
    pub(crate) fn select_ecs(&self, ip: IpAddr, source_len: u8) -> (u32, u8) {
        if source_len == 0 {
            return (self.select(ip, Some(0)).view, 0);
        }
        let (m, scope) = match canonical(ip) {
            IpAddr::V4(a) => {
                let (len, mapped) = match ip {
                    IpAddr::V6(_) => (source_len.saturating_sub(96), 96u8),
                    IpAddr::V4(_) => (source_len, 0),
                };
                let a = u32::from(a).mask(len);
                let t = &self.lpm.v4;
                (t.lookup(a), t.uniform_len(a).saturating_add(mapped))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a).mask(source_len);
                let t = &self.lpm.v6;
                (t.lookup(a), t.uniform_len(a))
            }
        };
        let view = m.map_or(self.default_view, |m| m.value);
        (view, scope)
    }

    /// Whether ECS from this client may pick the view.
    #[inline]
    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => self.trusted.v4.lookup(u32::from(a)).is_some(),
            IpAddr::V6(a) => self.trusted.v6.lookup(u128::from(a)).is_some(),
        }
    }

    // ----- reporting -----

    /// The view answering `ip` and the prefix length that decided it.
    pub fn select_view(&self, ip: IpAddr) -> ViewMatch {
        let s = self.select(ip, None);
        ViewMatch {
            view: (s.view != NONE).then_some(s.view as usize),
            prefix_len: s.matched.map(|m| m.len),
        }
    }

    /// [`ViewMatch::view`] of a view as the answer path holds it.
    #[inline]
    pub(crate) fn view_index_of(&self, view: u32) -> Option<usize> {
        (view != NONE).then_some(view as usize)
    }

    /// The configuration this map was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Directory relative `prefixes_file` paths were resolved against.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Every view, in config order (index = `ViewMatch::view`).
    pub fn views(&self) -> &[ViewInfo] {
        &self.views
    }

    pub fn view_names(&self) -> Vec<&str> {
        self.views.iter().map(|v| v.name.as_str()).collect()
    }

    #[cfg(test)]
    /// Index of the view called `name`.
    pub fn view_index(&self, name: &str) -> Option<usize> {
        self.views.iter().position(|v| v.name == name)
    }

    /// Index of the `default` view, if configured.
    pub fn default_view(&self) -> Option<usize> {
        (self.default_view != NONE).then_some(self.default_view as usize)
    }

    /// Served zone apexes as configured.
    pub fn zone_names(&self) -> Vec<&str> {
        self.zones.iter().map(|z| z.name.as_str()).collect()
    }

    /// Records configured over all views.
    pub fn record_count(&self) -> usize {
        self.record_count
    }

    /// Distinct prefixes (IPv4, IPv6) in the LPM tables.
    pub fn prefix_count(&self) -> (usize, usize) {
        (self.lpm.v4.len(), self.lpm.v6.len())
    }

    #[cfg(test)]
    /// Names known to the map (apexes, owners, empty non-terminals).
    pub fn name_count(&self) -> usize {
        self.entries.len()
    }

    /// Largest UDP response size (`dns.max_udp_payload`, at least 512).
    pub fn max_udp_payload(&self) -> u16 {
        self.max_udp_payload
    }
}

#[cfg(test)]
mod tests;
