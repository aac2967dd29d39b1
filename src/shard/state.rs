//! State shared by all shards, written only off the request path: the
//! served address map behind an `ArcSwap` plus a version counter, the stats
//! board, and where the configuration came from (for reloads).
//!
//! Writers (reloads on the signal thread, the admin API, the fleet-map
//! follower through `mapstore`) build a new
//! [`Served`] completely, store it, then bump the version. Each shard reads
//! the version once per receive batch (a read-only load of a line nobody
//! writes between reloads) and only on a change fetches the new `Arc`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::addrmap;
use crate::addrmap::AddressMap;
use crate::config::{Config, DnsConfig, Problem};
use crate::mapstore::store::MapStore;

use super::stats::StatsBoard;

/// What the shards serve: one immutable generation of the address map with
/// the DNS settings that came with it.
#[derive(Debug)]
pub struct Served {
    /// 1 for the configuration loaded at start, +1 per accepted change.
    pub version: u64,
    pub map: AddressMap,
    /// DNS settings of this generation (TCP limits apply to new reads and
    /// connections; listen addresses only change with a restart).
    pub dns: DnsConfig,
}

/// Where the running configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `crate::config::EMBEDDED_DEFAULT`: nothing to reload.
    Embedded,
    File(PathBuf),
}

impl ConfigSource {
    /// Directory relative paths in the config resolve against (the config
    /// file's directory; the current one for the embedded default).
    pub fn base_dir(&self) -> PathBuf {
        match self {
            ConfigSource::File(path) => match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            },
            ConfigSource::Embedded => PathBuf::from("."),
        }
    }
}

/// Process-wide state; every shard holds an `Arc` of it.
#[derive(Debug)]
pub struct Shared {
    served: ArcSwap<Served>,
    version: AtomicU64,
    /// Serializes writers (reloads, the admin API); readers never take it.
    write_lock: Mutex<()>,
    pub stats: StatsBoard,
    pub source: ConfigSource,
    /// The configuration the process started with (restart-only settings).
    pub startup: Config,
    /// The base config and the admin API's changes over it; every new map
    /// (reload or API change) is built and published through it.
    pub map_store: MapStore,
    /// The function service (engine + compiled functions), when configured;
    /// each shard builds its arenas from it. Changes need a restart.
    pub functions: Option<Arc<crate::functions::FunctionNode>>,
    /// The hand-off replay guard, one per node (every shard opens frames
    /// against it), when `[handoff]` is configured.
    pub handoff_replay: Option<Arc<crate::handoff::replay::ReplayTable>>,
}

/// Result of a reload attempt.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new generation is being served.
    Swapped { version: u64 },
    /// Running on the embedded default: there is no file to re-read.
    NothingToReload,
    /// The file is invalid; the old generation keeps serving.
    Rejected(Vec<Problem>),
}

impl Shared {
    pub fn new(loaded: addrmap::Loaded, source: ConfigSource, shards: usize) -> Shared {
        let served = Served {
            version: 1,
            map: loaded.map,
            dns: loaded.config.dns.clone(),
        };
        Shared {
            served: ArcSwap::from_pointee(served),
            version: AtomicU64::new(1),
            write_lock: Mutex::new(()),
            stats: StatsBoard::new(shards),
            source,
            map_store: MapStore::detached(&loaded.config),
            functions: None,
            handoff_replay: loaded.config.handoff.as_ref().map(|_| {
                Arc::new(crate::handoff::replay::ReplayTable::new(
                    crate::handoff::replay::SLOT_BITS,
                    crate::handoff::per_shard::unix_us(),
                ))
            }),
            startup: loaded.config,
        }
    }

    /// Use `store` (opened with the persisted API changes, see
    /// `mapstore::store::MapStore::open`) instead of a detached one.
    pub fn with_map_store(mut self, store: MapStore) -> Shared {
        self.map_store = store;
        self
    }

    /// Serve `node`'s functions (see `FunctionNode::for_run`).
    pub fn with_functions(mut self, node: Option<Arc<crate::functions::FunctionNode>>) -> Shared {
        self.functions = node;
        self
    }

    /// Directory relative paths in the config resolve against.
    pub fn base_dir(&self) -> PathBuf {
        self.source.base_dir()
    }

    /// The current version number (cheap; read once per batch by shards).
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Served> {
        self.served.load_full()
    }

    /// Swap in a new map (and its DNS settings); returns the new version.
    /// Shards pick it up at their next batch; a query sees one generation.
    pub fn publish(&self, map: AddressMap, dns: DnsConfig) -> u64 {
        let _w = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let version = self.version.load(Ordering::Relaxed) + 1;
        self.served.store(Arc::new(Served { version, map, dns }));
        self.version.store(version, Ordering::Release);
        version
    }

    /// Re-read the configuration file, validate it and build its map on the
    /// calling thread (never a shard), then swap it in if valid.
    pub fn reload(&self) -> ReloadOutcome {
        let ConfigSource::File(path) = &self.source else {
            return ReloadOutcome::NothingToReload;
        };
        // The map store merges the admin API's changes over the new file.
        let reloaded = self.map_store.reload(
            || addrmap::load_file(path),
            &self.base_dir(),
            |loaded| {
                for note in restart_only_changes(&self.startup, &loaded.config) {
                    tracing::warn!(
                        "reload: {note} changed; this takes effect only after a restart"
                    );
                }
                self.publish(loaded.map, loaded.config.dns)
            },
        );
        match reloaded {
            Err(problems) => ReloadOutcome::Rejected(problems),
            Ok(version) => ReloadOutcome::Swapped { version },
        }
    }
}

/// Settings a reload cannot apply to running shards.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (old, new);
    [
        ("dns.listen", o.dns.listen != n.dns.listen),
        ("dns.udp_batch", o.dns.udp_batch != n.dns.udp_batch),
        (
            "dns.udp_coalesce_us",
            o.dns.udp_coalesce_us != n.dns.udp_coalesce_us,
        ),
        (
            "dns.udp_coalesce_min_batch",
            o.dns.udp_coalesce_min_batch != n.dns.udp_coalesce_min_batch,
        ),
        ("dns.udp_rcvbuf", o.dns.udp_rcvbuf != n.dns.udp_rcvbuf),
        ("dns.udp_sndbuf", o.dns.udp_sndbuf != n.dns.udp_sndbuf),
        ("server.shards", o.server.shards != n.server.shards),
        (
            "server.io_memory_kib",
            o.server.io_memory_kib != n.server.io_memory_kib,
        ),
        (
            "server.admin_listen",
            o.server.admin_listen != n.server.admin_listen,
        ),
        (
            "server.shutdown_grace_ms",
            o.server.shutdown_grace_ms != n.server.shutdown_grace_ms,
        ),
        ("cluster", o.cluster != n.cluster),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_a_reload_cannot_apply_are_named() {
        let old = addrmap::load_embedded().expect("embedded default").config;
        let mut new = old.clone();
        assert!(restart_only_changes(&old, &new).is_empty());
        new.dns.udp_coalesce_us += 1;
        new.dns.udp_batch += 1;
        new.server.shards += 1;
        new.dns.max_udp_payload += 1; // applied by a reload: not named
        assert_eq!(
            restart_only_changes(&old, &new),
            vec!["dns.udp_batch", "dns.udp_coalesce_us", "server.shards"]
        );
    }

    #[test]
    fn publish_bumps_version_and_swaps_generation() {
        let loaded = addrmap::load_embedded().expect("embedded default is valid");
        let shared = Shared::new(loaded, ConfigSource::Embedded, 1);
        assert_eq!(shared.version(), 1);
        assert_eq!(shared.current().version, 1);
        let again = addrmap::load_embedded().unwrap();
        let v = shared.publish(again.map, again.config.dns);
        assert_eq!(v, 2);
        assert_eq!(shared.version(), 2);
        assert_eq!(shared.current().version, 2);
        assert!(matches!(shared.reload(), ReloadOutcome::NothingToReload));
    }

    #[test]
    fn reload_rejects_invalid_file_and_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, crate::config::EMBEDDED_DEFAULT).unwrap();
        let loaded = addrmap::load_file(&path).unwrap();
        let shared = Shared::new(loaded, ConfigSource::File(path.clone()), 1);
        std::fs::write(&path, "[dns]\nlisten = 5\n").unwrap();
        match shared.reload() {
            ReloadOutcome::Rejected(p) => assert!(!p.is_empty()),
            other => panic!("expected rejection, got {other:?}"),
        }
        assert_eq!(shared.version(), 1);
        std::fs::write(&path, crate::config::EMBEDDED_DEFAULT).unwrap();
        assert!(matches!(
            shared.reload(),
            ReloadOutcome::Swapped { version: 2 }
        ));
        assert_eq!(shared.current().version, 2);
    }
}
