//! The address-map store: the configuration as last loaded from its file
//! (the base), the API changes over it (the [`Overlay`]), and the state file
//! that persists them. Every writer of the served map goes through here, one
//! at a time: a reload (SIGHUP or `POST /v1/reload`) replaces the base and
//! keeps the overlay; an API change replaces the overlay and keeps the base.
//! Either way the merged configuration is validated and its map built off
//! the shards, persisted when the overlay changed, and only then published
//! (the `publish` callback swaps it into every shard). A change that fails
//! any step changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::addrmap::AddressMap;
use crate::addrmap::Loaded;
use crate::config::{self, Config, Problem};

use super::overlay::{self, Change, ChangeError, Overlay};
use super::persist;

/// File name of the persisted changes inside the state directory.
pub const STATE_FILE: &str = "address-map-changes.json";

/// Why the store could not open at start-up.
#[derive(Debug)]
pub enum OpenError {
    /// The state directory or file cannot be used.
    State(String),
    /// The persisted changes do not fit the configuration.
    Invalid(Vec<Problem>),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::State(m) => f.write_str(m),
            OpenError::Invalid(problems) => {
                for (i, p) in problems.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
        }
    }
}

/// A change that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The map version now served; `None` when the change changed nothing
    /// (e.g. adding a prefix the view already has).
    pub version: Option<u64>,
    /// Applied and persisted, but not surely durable (the state
    /// directory's fsync failed), or written to the fleet map but not yet
    /// applied here: what to tell the operator.
    pub warning: Option<String>,
    /// The fleet map's etcd revision that holds the change (`[cluster]`).
    pub revision: Option<u64>,
}

/// A change that was refused; nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The change itself cannot apply (400 or 404).
    Change(ChangeError),
    /// The resulting map would be invalid (400).
    Invalid(Vec<Problem>),
    /// The change could not be persisted (500).
    Persist(String),
    /// Someone else changed what the change touches since the revision it
    /// was made against (409): read again and retry.
    Conflict(String),
    /// The fleet map cannot be written now (503): etcd is unreachable.
    Unavailable(String),
}

struct Inner {
    base: Config,
    overlay: Overlay,
}

/// See the module documentation.
pub struct MapStore {
    file: Option<PathBuf>,
    inner: Mutex<Inner>,
    /// fsyncs the state directory after a rename (a failing one in tests).
    sync_dir: fn(&Path) -> std::io::Result<()>,
}

impl std::fmt::Debug for MapStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStore")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl MapStore {
    /// A store without a state file: API changes last until the process
    /// exits (tests, and runs without a usable state directory).
    pub fn detached(base: &Config) -> MapStore {
        MapStore {
            file: None,
            sync_dir: persist::sync_dir,
            inner: Mutex::new(Inner {
                base: base.clone(),
                overlay: Overlay::default(),
            }),
        }
    }

    /// Start-up: prepare `state_dir`, read the persisted changes and merge
    /// them over `loaded`. Returns the store and what to serve.
    pub fn open(
        state_dir: &Path,
        loaded: Loaded,
        base_dir: &Path,
    ) -> Result<(MapStore, Loaded), OpenError> {
        persist::prepare_dir(state_dir).map_err(|e| {
            OpenError::State(format!(
                "cannot use state directory {}: {e}; set server.state_dir to a directory shardgate may write",
                state_dir.display()
            ))
        })?;
        let file = state_dir.join(STATE_FILE);
        let overlay = match persist::read_if_exists(&file) {
            Err(e) => {
                return Err(OpenError::State(format!(
                    "cannot read {}: {e}; check its permissions",
                    file.display()
                )))
            }
            Ok(None) => Overlay::default(),
            Ok(Some(bytes)) => parse_overlay(&bytes).map_err(|e| {
                OpenError::State(format!(
                    "{} is not a valid address-map state file ({e}); fix it, or move it away to start without the changes it holds",
                    file.display()
                ))
            })?,
        };
        let store = MapStore {
            file: Some(file),
            sync_dir: persist::sync_dir,
            inner: Mutex::new(Inner {
                base: loaded.config.clone(),
                overlay,
            }),
        };
        let serving = {
            let inner = store.lock();
            store.merged(&inner.base, &inner.overlay, Some(loaded), base_dir)
        }
        .map_err(OpenError::Invalid)?;
        Ok((store, serving))
    }

    /// Start-up of a node that follows a fleet map (`[cluster]`): the
    /// overlay comes from the node's last applied fleet map, not from the
    /// local state file (the follower persists its own). API changes reach
    /// the store only through [`MapStore::replace_overlay`].
    pub fn open_following(
        loaded: Loaded,
        overlay: Overlay,
        base_dir: &Path,
    ) -> Result<(MapStore, Loaded), OpenError> {
        let store = MapStore::detached(&loaded.config);
        let serving = {
            let mut inner = store.lock();
            inner.overlay = overlay;
            store.merged(&inner.base, &inner.overlay, Some(loaded), base_dir)
        }
        .map_err(OpenError::Invalid)?;
        Ok((store, serving))
    }

    /// The fleet map moved: serve `next` over the base. Validated and built
    /// first; on a problem the current map keeps serving. Returns the
    /// version published (`None`: `next` is what is served already).
    pub fn replace_overlay(
        &self,
        next: Overlay,
        base_dir: &Path,
        publish: impl FnOnce(Loaded) -> u64,
    ) -> Result<Option<u64>, Vec<Problem>> {
        let mut inner = self.lock();
        if next == inner.overlay {
            return Ok(None);
        }
        let serving = self.merged(&inner.base, &next, None, base_dir)?;
        inner.overlay = next;
        Ok(Some(publish(serving)))
    }

    /// What `changes` make of `current` (a fleet map's overlay) over this
    /// node's base, validated like a local change but neither served nor
    /// persisted. `Ok(None)`: they change nothing.
    pub fn check_changes(
        &self,
        current: &Overlay,
        changes: &[Change],
        base_dir: &Path,
    ) -> Result<Option<Overlay>, Refused> {
        let inner = self.lock();
        let next = overlay::apply(&inner.base, current, changes).map_err(Refused::Change)?;
        if &next == current {
            return Ok(None);
        }
        self.merged(&inner.base, &next, None, base_dir)
            .map_err(Refused::Invalid)?;
        Ok(Some(next))
    }

    /// The state file, when changes are persisted.
    pub fn state_file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The configuration as served (base with the overlay merged) and the
    /// overlay itself.
    pub fn snapshot(&self) -> (Config, Overlay) {
        let inner = self.lock();
        (
            overlay::merge(&inner.base, &inner.overlay).0,
            inner.overlay.clone(),
        )
    }

    /// Reload: `load` the configuration file afresh, merge the overlay,
    /// validate, build and `publish`. On any problem the old map keeps
    /// serving and the problems are returned.
    pub fn reload(
        &self,
        load: impl FnOnce() -> Result<Loaded, Vec<Problem>>,
        base_dir: &Path,
        publish: impl FnOnce(Loaded) -> u64,
    ) -> Result<u64, Vec<Problem>> {
        let mut inner = self.lock();
        let loaded = load()?;
        let base = loaded.config.clone();
        let serving = self.merged(&base, &inner.overlay, Some(loaded), base_dir)?;
        inner.base = base;
        Ok(publish(serving))
    }

    /// Apply API `changes`: all of them or none. Validated, persisted, then
    /// published, in that order, before this returns.
    pub fn change(
        &self,
        changes: &[Change],
        base_dir: &Path,
        publish: impl FnOnce(Loaded) -> u64,
    ) -> Result<Applied, Refused> {
        let mut inner = self.lock();
        let next = overlay::apply(&inner.base, &inner.overlay, changes).map_err(Refused::Change)?;
        if next == inner.overlay {
            return Ok(Applied {
                version: None,
                warning: None,
                revision: None,
            });
        }
        let serving = self
            .merged(&inner.base, &next, None, base_dir)
            .map_err(Refused::Invalid)?;
        let mut warning = None;
        if let Some(file) = &self.file {
            let mut bytes = serde_json::to_vec_pretty(&next)
                .map_err(|e| Refused::Persist(format!("cannot encode the state: {e}")))?;
            bytes.push(b'\n');
            let written = persist::write_atomic_with(file, &bytes, self.sync_dir).map_err(|e| {
                Refused::Persist(format!(
                    "cannot write {}: {e}; nothing was applied (check the disk and the state directory's permissions)",
                    file.display()
                ))
            })?;
            if let persist::Written::DirSyncFailed(e) = written {
                let m = format!(
                    "the change was applied and {} replaced, but syncing its directory failed ({e}): \
                     a power cut may bring back the previous state; check the disk",
                    file.display()
                );
                tracing::warn!("{m}");
                warning = Some(m);
            }
        }
        inner.overlay = next;
        Ok(Applied {
            version: Some(publish(serving)),
            warning,
            revision: None,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `base` with `overlay` merged, validated and built. When the overlay is
    /// empty and `loaded` (built from `base`) is given, it is used as is.
    fn merged(
        &self,
        base: &Config,
        overlay: &Overlay,
        loaded: Option<Loaded>,
        base_dir: &Path,
    ) -> Result<Loaded, Vec<Problem>> {
        if overlay.is_empty() {
            if let Some(loaded) = loaded {
                return Ok(loaded);
            }
        }
        let (merged, notes) = overlay::merge(base, overlay);
        for note in notes {
            tracing::warn!("{note}");
        }
        build(merged, base_dir).map_err(|problems| {
            let origin = match &self.file {
                Some(f) => format!("with the API changes in {}", f.display()),
                None => "with the API changes".to_owned(),
            };
            problems
                .into_iter()
                .map(|p| Problem {
                    message: format!("{} ({origin})", p.message),
                    ..p
                })
                .collect()
        })
    }
}

/// Validate `config` and build its map, reporting view problems by view
/// name (`view "inst-7".record[0].data`) since API users never see indexes.
fn build(config: Config, base_dir: &Path) -> Result<Loaded, Vec<Problem>> {
    let mut problems = config::validate(&config);
    match AddressMap::build(&config, base_dir) {
        Ok(map) if problems.is_empty() => return Ok(Loaded { config, map }),
        Ok(_) => {}
        Err(errors) => config::load::add_build_problems(&mut problems, errors),
    }
    for p in &mut problems {
        p.line = None;
        p.key = name_views(&p.key, &config);
    }
    Err(problems)
}

/// `view[3].record[0]` -> `view "inst-7".record[0]`.
fn name_views(key: &str, config: &Config) -> String {
    let Some(rest) = key.strip_prefix("view[") else {
        return key.to_owned();
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return key.to_owned();
    };
    match index
        .parse::<usize>()
        .ok()
        .and_then(|i| config.views.get(i))
    {
        Some(v) => format!("view {:?}{tail}", v.name),
        None => key.to_owned(),
    }
}

fn parse_overlay(bytes: &[u8]) -> Result<Overlay, String> {
    let overlay: Overlay = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if overlay.format != overlay::FORMAT {
        return Err(format!(
            "format {} is not the supported format {}",
            overlay.format,
            overlay::FORMAT
        ));
    }
    Ok(overlay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapstore::overlay::Record;

    fn loaded() -> Loaded {
        crate::addrmap::load_embedded().expect("embedded default is valid")
    }

    fn add_instance(view: &str, prefix: &str) -> Change {
        let name = loaded()
            .config
            .views
            .iter()
            .flat_map(|v| v.records.iter())
            .find(|r| r.rtype == "A")
            .map(|r| r.name.clone())
            .unwrap_or_else(|| "upf.svc.example.".into());
        Change::PutView {
            view: view.into(),
            prefixes: vec![prefix.into()],
            records: vec![Record {
                name,
                rtype: "A".into(),
                data: "10.77.0.1".into(),
                ttl: None,
            }],
        }
    }

    #[test]
    fn changes_persist_and_come_back_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (store, serving) = MapStore::open(dir.path(), loaded(), Path::new(".")).unwrap();
        assert_eq!(serving.config, loaded().config);
        let mut published = Vec::new();
        let applied = store
            .change(
                &[add_instance("inst-1", "127.0.0.77")],
                Path::new("."),
                |l| {
                    published.push(l.config.clone());
                    7
                },
            )
            .unwrap();
        assert_eq!(applied.version, Some(7));
        assert!(published[0].views.iter().any(|v| v.name == "inst-1"));
        assert!(dir.path().join(STATE_FILE).exists());
        // The same change again changes nothing and publishes nothing.
        let again = store
            .change(
                &[add_instance("inst-1", "127.0.0.77")],
                Path::new("."),
                |_| unreachable!(),
            )
            .unwrap();
        assert_eq!(again.version, None);

        let (reopened, serving) = MapStore::open(dir.path(), loaded(), Path::new(".")).unwrap();
        assert!(serving.config.views.iter().any(|v| v.name == "inst-1"));
        assert_eq!(reopened.snapshot().1, store.snapshot().1);
    }

    #[test]
    fn a_failed_directory_sync_reports_the_change_applied_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = MapStore::open(dir.path(), loaded(), Path::new(".")).unwrap();
        store.sync_dir = |_| Err(std::io::Error::other("injected EIO"));
        let applied = store
            .change(
                &[add_instance("inst-1", "127.0.0.77")],
                Path::new("."),
                |_| 9,
            )
            .expect("the file was replaced: the change is applied, not refused");
        assert_eq!(applied.version, Some(9));
        let w = applied.warning.expect("a warning about durability");
        assert!(w.contains("applied") && w.contains("injected EIO"), "{w}");
        // Served and persisted: it comes back at the next open.
        assert!(store.snapshot().1.views.contains_key("inst-1"));
        let (_, serving) = MapStore::open(dir.path(), loaded(), Path::new(".")).unwrap();
        assert!(serving.config.views.iter().any(|v| v.name == "inst-1"));
    }

    #[test]
    fn an_invalid_change_is_refused_and_not_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = MapStore::open(dir.path(), loaded(), Path::new(".")).unwrap();
        let bad = Change::PutView {
            view: "bad".into(),
            prefixes: vec![],
            records: vec![Record {
                name: "outside.invalid.".into(),
                rtype: "A".into(),
                data: "not-an-address".into(),
                ttl: None,
            }],
        };
        match store.change(&[bad], Path::new("."), |_| unreachable!()) {
            Err(Refused::Invalid(problems)) => {
                assert!(!problems.is_empty());
                assert!(
                    problems.iter().any(|p| p.key.starts_with("view \"bad\"")),
                    "{problems:?}"
                );
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert!(!dir.path().join(STATE_FILE).exists());
        assert!(store.snapshot().1.is_empty());
    }

    #[test]
    fn reload_keeps_the_overlay_and_rejects_a_bad_file() {
        let store = MapStore::detached(&loaded().config);
        store
            .change(
                &[add_instance("inst-2", "127.0.0.78")],
                Path::new("."),
                |_| 2,
            )
            .unwrap();
        let mut served = None;
        let v = store
            .reload(
                || Ok(loaded()),
                Path::new("."),
                |l| {
                    served = Some(l.config);
                    3
                },
            )
            .unwrap();
        assert_eq!(v, 3);
        assert!(served.unwrap().views.iter().any(|v| v.name == "inst-2"));
        let problems = store
            .reload(
                || {
                    Err(vec![Problem {
                        line: Some(1),
                        key: String::new(),
                        message: "broken".into(),
                    }])
                },
                Path::new("."),
                |_| unreachable!(),
            )
            .unwrap_err();
        assert_eq!(problems[0].message, "broken");
    }

    #[test]
    fn a_corrupt_state_file_stops_start_up_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let err = MapStore::open(dir.path(), loaded(), Path::new("."))
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("move it away"), "{msg}");
    }

    #[test]
    fn names_views_in_problem_keys() {
        let c = loaded().config;
        if let Some(first) = c.views.first() {
            assert_eq!(
                name_views("view[0].record[1].data", &c),
                format!("view {:?}.record[1].data", first.name)
            );
        }
        assert_eq!(name_views("view[999].x", &c), "view[999].x");
        assert_eq!(name_views("dns.listen", &c), "dns.listen");
    }
}
