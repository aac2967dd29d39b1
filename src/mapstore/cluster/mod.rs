//! A fleet's shared address map in etcd (`[cluster]`). Every node follows
//! the keys under `cluster.prefix`: it reads a consistent snapshot at one
//! revision, then watches from the next revision and applies each watch
//! response (one or more whole etcd transactions) as one new map
//! generation, so no query ever sees half a transaction. The config file's
//! views stay the base; the etcd keys are the overlay over it, exactly what
//! the local state file holds on a node without `[cluster]`.
//!
//! - [`layout`]: the overlay as etcd keys and JSON values (pure).
//! - [`mirror`]: the node's copy of those keys at its applied revision and
//!   the state file that lets it restart while etcd is down (pure).
//! - [`follower`]: the control thread (a tokio runtime of its own) that
//!   talks to etcd; nothing on the shards' request path waits on it.
//!
//! [`ClusterMap`] is what the admin API writes through: a change is checked
//! against this node's base, written to etcd in one transaction that
//! compares every key it touches with the `mod_revision` this node applied
//! (a concurrent edit of the same keys makes one writer win and the other
//! get 409), and answered once the watch has applied it here.

pub mod follower;
pub mod layout;
pub mod mirror;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::addrmap::Loaded;
use crate::config::ClusterConfig;

use super::overlay::{Change, Overlay};
use super::store::{Applied, Refused};
use mirror::Mirror;

/// File name of the applied fleet map inside the state directory.
pub const STATE_FILE: &str = "cluster-map.json";

/// Where a node that follows the fleet map starts from: its last applied
/// map (from the state file), or nothing yet.
pub fn load_state(state_dir: &Path, config: &ClusterConfig) -> Result<Mirror, String> {
    let file = state_dir.join(STATE_FILE);
    match super::persist::read_if_exists(&file) {
        Err(e) => Err(format!(
            "cannot read {}: {e}; check its permissions",
            file.display()
        )),
        Ok(None) => Ok(Mirror::empty(&config.prefix)),
        Ok(Some(bytes)) => Mirror::from_file(&bytes, &config.prefix).map_err(|e| {
            format!(
                "{} is not a usable fleet map state file ({e}); move it away to start from etcd's map",
                file.display()
            )
        }),
    }
}

/// Serves an overlay: `Ok(Some(map version))`, `Ok(None)` when it is served
/// already, or the problems that keep it from serving.
type PublishFn = dyn Fn(Overlay) -> Result<Option<u64>, Vec<crate::config::Problem>> + Send + Sync;
/// Checks API changes over a fleet overlay against this node's base.
type CheckFn = dyn Fn(&Overlay, &[Change]) -> Result<Option<Overlay>, Refused> + Send + Sync;

/// What the follower knows, shared with the admin API's writers.
#[derive(Debug)]
struct State {
    /// The keys as last applied here (what writes compare against).
    mirror: Mirror,
    /// The overlay those keys decode to.
    overlay: Overlay,
    /// The newest revision etcd reported.
    etcd_revision: i64,
    /// Since when etcd has been unreachable, and why (`None`: reachable).
    down: Option<(Instant, String)>,
    /// A revision that could not be applied here, and why.
    rejected: Option<(i64, String)>,
    /// The map version the last applied revision published.
    version: u64,
}

/// See the module documentation.
pub struct ClusterMap {
    config: ClusterConfig,
    state_file: PathBuf,
    state: Mutex<State>,
    applied: Condvar,
    publish: Box<PublishFn>,
    check: Box<CheckFn>,
    client: follower::Link,
}

impl std::fmt::Debug for ClusterMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMap")
            .field("prefix", &self.config.prefix)
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

impl ClusterMap {
    /// Follow the fleet map from `mirror` (what start-up serves), publishing
    /// every new generation through `publish`; starts the control thread.
    pub fn start(
        config: &ClusterConfig,
        base_dir: &Path,
        state_dir: &Path,
        mirror: Mirror,
        publish: impl Fn(Overlay) -> Result<Option<u64>, Vec<crate::config::Problem>>
            + Send
            + Sync
            + 'static,
        check: impl Fn(&Overlay, &[Change]) -> Result<Option<Overlay>, Refused> + Send + Sync + 'static,
    ) -> anyhow::Result<Arc<ClusterMap>> {
        let overlay = mirror.overlay().unwrap_or_default();
        let link = follower::Link::new(config, base_dir)?;
        crate::metrics::cluster::register();
        crate::metrics::cluster::set_applied(mirror.revision);
        crate::metrics::cluster::set_etcd_revision(mirror.revision);
        crate::metrics::cluster::set_lag(0);
        crate::metrics::cluster::set_up(false);
        let map = Arc::new(ClusterMap {
            config: config.clone(),
            state_file: state_dir.join(STATE_FILE),
            state: Mutex::new(State {
                etcd_revision: mirror.revision,
                mirror,
                overlay,
                down: Some((Instant::now(), "not connected yet".into())),
                rejected: None,
                version: 0,
            }),
            applied: Condvar::new(),
            publish: Box::new(publish),
            check: Box::new(check),
            client: link,
        });
        follower::spawn(map.clone())?;
        Ok(map)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    /// The revision applied here.
    pub fn revision(&self) -> u64 {
        self.lock().mirror.revision.max(0) as u64
    }

    /// The applied fleet map's state file.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// Why `/readyz` should say degraded, if it should.
    pub fn degraded(&self) -> Vec<String> {
        let st = self.lock();
        let mut out = Vec::new();
        if let Some((since, why)) = &st.down {
            out.push(format!(
                "etcd unreachable for {:.0} s ({why}); serving the last applied address map (revision {}), map changes are refused until it is back",
                since.elapsed().as_secs_f64(),
                st.mirror.revision
            ));
        }
        if let Some((rev, why)) = &st.rejected {
            out.push(format!(
                "the fleet map at revision {rev} cannot be served here ({why}); serving revision {}",
                st.mirror.revision
            ));
        }
        out
    }

    /// The fleet map moved to `next` (a snapshot, or events applied to the
    /// current keys): serve it, persist it, wake writers waiting for it.
    /// A map this node cannot serve keeps the previous one serving.
    fn apply(&self, next: Mirror, etcd_revision: i64) {
        let etcd_revision = etcd_revision.max(next.revision);
        let changed = {
            let st = self.lock();
            st.mirror.entries != next.entries
        };
        if !changed {
            // What etcd holds is what is served (e.g. a rejected key was
            // deleted again): nothing is pending.
            let mut st = self.lock();
            st.rejected = None;
            st.mirror.revision = st.mirror.revision.max(next.revision);
            st.etcd_revision = st.etcd_revision.max(etcd_revision);
            publish_revisions(&st);
            drop(st);
            self.applied.notify_all();
            return;
        }
        let decoded = next.overlay().map_err(|e| vec![e.to_string()]);
        let served = decoded.and_then(|overlay| {
            (self.publish)(overlay.clone())
                .map(|version| (overlay, version))
                .map_err(|problems| problems.iter().map(|p| p.to_string()).collect())
        });
        match served {
            Ok((overlay, version)) => {
                if let Err(e) = super::persist::write_atomic(&self.state_file, &next.to_file()) {
                    tracing::warn!(
                        "cluster: revision {} is served but could not be saved to {} ({e}); a restart while etcd is down would serve an older map",
                        next.revision,
                        self.state_file.display()
                    );
                }
                crate::metrics::cluster::record_change("applied");
                let mut st = self.lock();
                tracing::info!(
                    "cluster: applied fleet map revision {}{}",
                    next.revision,
                    version.map_or(String::new(), |v| format!(
                        "; serving address map version {v}"
                    ))
                );
                st.mirror = next;
                st.overlay = overlay;
                if let Some(v) = version {
                    st.version = v;
                }
                st.rejected = None;
                st.etcd_revision = st.etcd_revision.max(etcd_revision);
                publish_revisions(&st);
            }
            Err(problems) => {
                crate::metrics::cluster::record_change("rejected");
                let why = problems.join("; ");
                tracing::error!(
                    "cluster: the fleet map at revision {} cannot be served on this node and is not applied: {why}; \
                     fix the keys under {} (or this node's config); the previous map keeps serving",
                    next.revision,
                    self.config.prefix
                );
                let mut st = self.lock();
                st.rejected = Some((next.revision, why));
                st.etcd_revision = st.etcd_revision.max(etcd_revision);
                publish_revisions(&st);
            }
        }
        self.applied.notify_all();
    }

    fn set_down(&self, why: Option<String>) {
        let mut st = self.lock();
        match (why, &st.down) {
            (None, _) => st.down = None,
            (Some(why), Some((since, _))) => st.down = Some((*since, why)),
            (Some(why), None) => st.down = Some((Instant::now(), why)),
        }
        crate::metrics::cluster::set_up(st.down.is_none());
    }

    /// Wait until the applied revision reaches `revision` or `deadline`.
    fn wait_applied(&self, revision: i64, deadline: Instant) -> bool {
        let mut st = self.lock();
        while st.mirror.revision < revision {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .applied
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Apply API `changes` through etcd; see the module documentation.
    pub fn change(
        &self,
        changes: &[Change],
        read_revision: Option<u64>,
    ) -> Result<Applied, Refused> {
        let deadline = Instant::now() + self.request_timeout();
        if let Some((_, why)) = &self.lock().down {
            return Err(Refused::Unavailable(format!(
                "the fleet map cannot be changed now: etcd is unreachable ({why}); this node keeps serving its last \
                 applied map. Retry when etcd is back (see /readyz)"
            )));
        }
        if let Some(r) = read_revision {
            if !self.wait_applied(r as i64, deadline) {
                return Err(Refused::Unavailable(format!(
                    "this node has not yet applied revision {r} (it is at {}); retry shortly",
                    self.revision()
                )));
            }
        }
        let (current, applied) = {
            let st = self.lock();
            (st.overlay.clone(), st.mirror.revision)
        };
        let Some(next) = (self.check)(&current, changes)? else {
            return Ok(Applied {
                version: None,
                warning: None,
                revision: Some(applied.max(0) as u64),
            });
        };
        let views: BTreeSet<&str> = changes.iter().map(|c| c.view()).collect();
        let prefix = &self.config.prefix;
        let touched = |o: &Overlay| {
            let mut part = Overlay::default();
            for v in &views {
                if let Some(d) = o.views.get(*v) {
                    part.views.insert((*v).to_owned(), d.clone());
                }
            }
            layout::encode(prefix, &part)
        };
        let ops = layout::diff(&touched(&current), &touched(&next));
        // Every key written, and every view head touched, must still be at
        // the revision this node applied (0 = still absent).
        let compares: Vec<(String, i64)> = {
            let st = self.lock();
            if st.mirror.revision != applied {
                return Err(Refused::Conflict(format!(
                    "the fleet map moved from revision {applied} to {} while the change was checked; retry",
                    st.mirror.revision
                )));
            }
            let mut keys: BTreeSet<String> = ops.iter().map(|op| op.key().to_owned()).collect();
            keys.extend(views.iter().map(|v| layout::view_key(prefix, v)));
            if let Some(r) = read_revision {
                for v in &views {
                    let newest = st
                        .mirror
                        .newest_under(&layout::view_records_prefix(prefix, v))
                        .max(st.mirror.mod_revision(&layout::view_key(prefix, v)));
                    if newest > r as i64 {
                        return Err(Refused::Conflict(format!(
                            "view {v:?} changed at revision {newest}, after the revision {r} you read; read it again and retry"
                        )));
                    }
                }
            }
            keys.into_iter()
                .map(|k| {
                    let m = st.mirror.mod_revision(&k);
                    (k, m)
                })
                .collect()
        };
        let written = self.client.write(&compares, &ops, self.request_timeout());
        let revision = match written {
            Ok(follower::Written::Committed(rev)) => rev,
            Ok(follower::Written::Conflict) => {
                return Err(Refused::Conflict(format!(
                    "another writer changed view(s) {} after revision {applied}, which this change was made against; \
                     nothing was written: read again (GET /v1/views/VIEW) and retry",
                    views.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ")
                )))
            }
            // Only the follower's watch decides whether etcd is down: one
            // slow transaction must not make every later write a 503.
            Err(e) => {
                return Err(Refused::Unavailable(format!(
                    "the change could not be written to etcd ({e}); nothing was applied. Retry when etcd is back"
                )));
            }
        };
        if !self.wait_applied(
            revision,
            deadline.max(Instant::now() + Duration::from_secs(1)),
        ) {
            return Ok(Applied {
                version: None,
                warning: Some(format!(
                    "written to etcd at revision {revision} but not yet applied on this node (it is at {}); it will be",
                    self.revision()
                )),
                revision: Some(revision as u64),
            });
        }
        let rejected = self.lock().rejected.clone();
        if let Some((rev, why)) = rejected.filter(|(rev, _)| *rev >= revision) {
            return Ok(Applied {
                version: None,
                warning: Some(format!(
                    "written to etcd at revision {revision}, but this node cannot serve the fleet map at revision {rev}: {why}"
                )),
                revision: Some(revision as u64),
            });
        }
        let version = self.lock().version;
        Ok(Applied {
            version: Some(version),
            warning: None,
            revision: Some(revision as u64),
        })
    }
}

fn publish_revisions(st: &State) {
    crate::metrics::cluster::set_applied(st.mirror.revision);
    crate::metrics::cluster::set_etcd_revision(st.etcd_revision);
    crate::metrics::cluster::set_lag(st.etcd_revision - st.mirror.revision);
}

/// Start-up of a node with `[cluster]`: what to serve before etcd answers
/// (the last applied fleet map from the state file, over `loaded`).
pub fn open(
    state_dir: &Path,
    config: &ClusterConfig,
    loaded: Loaded,
    base_dir: &Path,
) -> Result<(super::store::MapStore, Loaded, Mirror), super::store::OpenError> {
    super::persist::prepare_dir(state_dir).map_err(|e| {
        super::store::OpenError::State(format!(
            "cannot use state directory {}: {e}; set server.state_dir to a directory shardgate may write",
            state_dir.display()
        ))
    })?;
    let mirror = load_state(state_dir, config).map_err(super::store::OpenError::State)?;
    let overlay = mirror.overlay().map_err(|e| {
        super::store::OpenError::State(format!(
            "{}: {e}; move it away to start from etcd's map",
            state_dir.join(STATE_FILE).display()
        ))
    })?;
    if mirror.revision > 0 {
        tracing::info!(
            "cluster: serving the last applied fleet map (revision {}) until etcd answers",
            mirror.revision
        );
    }
    let local = state_dir.join(super::store::STATE_FILE);
    if local.exists() {
        tracing::warn!(
            "{} holds local API changes, which are not served while [cluster] is set: the fleet map in etcd is. \
             Move them into etcd (PUT them through the API) and delete the file",
            local.display()
        );
    }
    let (store, serving) = super::store::MapStore::open_following(loaded, overlay, base_dir)?;
    Ok((store, serving, mirror))
}
