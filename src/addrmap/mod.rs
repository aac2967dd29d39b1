//! The address map: zones, views keyed by source prefixes (longest-prefix
//! match over IPv4 and IPv6), and per-view records pre-encoded for the DNS
//! answer builder. Built once from a [`Config`](crate::config::Config),
//! immutable afterwards; a change builds a new map that the runtime swaps in.
//!
//! INTERFACE CONTRACT (owned by the dns/addrmap helper; the runtime relies on
//! exactly these items):
//! - `AddressMap::build(&Config, base_dir: &Path) -> Result<AddressMap, Vec<BuildError>>`
//! - `BuildError { key: String /* e.g. "view[1].record[0].data" */, message: String }`

pub mod lpm;

use std::path::Path;

use crate::config::Config;

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

/// Immutable address map.
#[derive(Debug)]
pub struct AddressMap {}

impl AddressMap {
    /// Build the map from a validated config. `base_dir` resolves relative
    /// `prefixes_file` paths (the config file's directory).
    pub fn build(_config: &Config, _base_dir: &Path) -> Result<AddressMap, Vec<BuildError>> {
        Ok(AddressMap {})
    }
}
