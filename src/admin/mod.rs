//! The admin plane: the admin HTTP listener (`/metrics`, `/healthz`,
//! `/readyz`, the `/v1` address-map API) and its access policy (bearer
//! token, loopback-only without one). The map it changes is
//! `mapstore`'s; what `/readyz` waits for is `shard::health`.
//!
//! - [`http`]: sans-IO HTTP/1.1 request parsing and response bytes.
//! - [`api`]: routes and handlers over a [`api::Backend`].
//! - [`access`]: browser defence (Host, Origin) and the bearer token.
//! - [`slots`]: who gets one of the listener's connection slots.
//! - [`server`]: the listener thread (never on a shard).
//!
//! [`prepare`] and [`Prepared::start`] wire them to the running process.

pub mod access;
pub mod api;
pub mod http;
pub mod server;
pub mod slots;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, Problem, ServerConfig, MIN_TOKEN_LEN};
use crate::shard::control::{self, Command, Controller};
use crate::shard::state::{ReloadOutcome, Shared};

use crate::mapstore::cluster;
use crate::mapstore::overlay::{self, Change, Overlay};
use crate::mapstore::store::{self, Applied, Refused};
use crate::shard::health;
use api::{Backend, Readiness, Reloaded};

/// The state directory: `server.state_dir` (relative to `base_dir`, the
/// config file's directory), else `$STATE_DIRECTORY` (set by systemd's
/// `StateDirectory=`), else `shardgate-state` next to the config file (in
/// the current directory for the embedded default).
pub fn state_dir(server: &ServerConfig, base_dir: &Path) -> PathBuf {
    if let Some(dir) = &server.state_dir {
        return base_dir.join(dir);
    }
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may list several, separated by ':'; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    base_dir.join("shardgate-state")
}

/// The admin token from the config (inline or file), if any.
pub fn load_token(server: &ServerConfig, base_dir: &Path) -> anyhow::Result<Option<String>> {
    if let Some(t) = &server.admin_token {
        return Ok(Some(t.clone()));
    }
    let Some(file) = &server.admin_token_file else {
        return Ok(None);
    };
    let path = base_dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read server.admin_token_file {}: {e}; check the path and that shardgate may read it",
            path.display()
        )
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < MIN_TOKEN_LEN {
        anyhow::bail!(
            "the admin token in {} is shorter than {MIN_TOKEN_LEN} characters; put a longer one on its first line \
             (e.g. `openssl rand -hex 24 > {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(Some(token))
}

/// The listener's policy from `[server]` and the loaded token.
pub fn policy(server: &ServerConfig, token: Option<String>) -> server::Policy {
    server::Policy {
        token,
        hosts: server.admin_hosts.clone(),
        header_timeout: std::time::Duration::from_millis(server.admin_header_timeout_ms),
        request_timeout: std::time::Duration::from_millis(server.admin_request_timeout_ms),
        per_client: server.admin_connections_per_client,
    }
}

/// Bind the admin listener. Refuses a non-loopback address without a token
/// (also checked by `check-config`; checked again here because a token file
/// is only read at start).
pub fn bind(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "refusing to bind the admin listener to {addr} without an admin token: set server.admin_token \
             (or admin_token_file), or use a loopback address such as 127.0.0.1:{}",
            addr.port()
        );
    }
    TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!(
            "cannot bind the admin listener to {addr}: {e}; choose a free port with server.admin_listen"
        )
    })
}

/// What start-up prepared for the admin plane before the shards start.
pub struct Prepared {
    listener: TcpListener,
    policy: server::Policy,
    health: &'static health::Health,
    /// With `[cluster]`: its settings, the state directory and the fleet
    /// map the node serves until etcd answers.
    cluster: Option<(
        crate::config::ClusterConfig,
        PathBuf,
        cluster::mirror::Mirror,
    )>,
    base_dir: PathBuf,
}

/// Why start-up preparation failed.
pub enum PrepareError {
    /// The persisted API changes do not fit the configuration.
    Config(Vec<Problem>),
    Other(anyhow::Error),
}

/// Start-up, before the shards: install the metrics recorder, open the
/// state directory and merge the persisted API changes over `loaded`, read
/// the admin token, bind the admin listener (so a bad address stops
/// start-up). Returns what to serve, the map store, and what
/// [`Prepared::start`] needs once the shards' controller exists.
pub fn prepare(
    loaded: crate::addrmap::Loaded,
    base_dir: &Path,
    shards: usize,
) -> Result<(crate::addrmap::Loaded, store::MapStore, Prepared), PrepareError> {
    let server = loaded.config.server.clone();
    crate::metrics::install(server.metrics).map_err(|e| PrepareError::Other(anyhow::anyhow!(e)))?;
    crate::metrics::register_process_series();
    let dir = state_dir(&server, base_dir);
    let open_error = |e| match e {
        store::OpenError::Invalid(problems) => PrepareError::Config(problems),
        store::OpenError::State(m) => PrepareError::Other(anyhow::anyhow!(m)),
    };
    let (store, loaded, following) = match loaded.config.cluster.clone() {
        None => {
            let (store, loaded) =
                store::MapStore::open(&dir, loaded, base_dir).map_err(open_error)?;
            (store, loaded, None)
        }
        Some(c) => {
            let (store, loaded, mirror) =
                cluster::open(&dir, &c, loaded, base_dir).map_err(open_error)?;
            (store, loaded, Some((c, dir.clone(), mirror)))
        }
    };
    let token = load_token(&server, base_dir).map_err(PrepareError::Other)?;
    let listener = bind(server.admin_listen, token.as_deref()).map_err(PrepareError::Other)?;
    let health = health::init(shards);
    Ok((
        loaded,
        store,
        Prepared {
            listener,
            policy: policy(&server, token),
            health,
            cluster: following,
            base_dir: base_dir.to_path_buf(),
        },
    ))
}

impl Prepared {
    /// The health record shards report to (`set_shard_serving`).
    pub fn health(&self) -> &'static health::Health {
        self.health
    }

    /// Start following the fleet map (with `[cluster]`) and serving the
    /// admin listener; returns the listener's address.
    pub fn start(self, shared: Arc<Shared>, ctl: Arc<Controller>) -> anyhow::Result<SocketAddr> {
        let fleet = match self.cluster {
            None => None,
            Some((config, dir, mirror)) => {
                let (publish_shared, publish_ctl) = (shared.clone(), ctl.clone());
                let check_shared = shared.clone();
                let base_dir = self.base_dir.clone();
                let check_dir = self.base_dir.clone();
                Some(cluster::ClusterMap::start(
                    &config,
                    &self.base_dir,
                    &dir,
                    mirror,
                    move |overlay| {
                        publish_shared
                            .map_store
                            .replace_overlay(overlay, &base_dir, |loaded| {
                                publish(&publish_shared, &publish_ctl, loaded)
                            })
                    },
                    move |current, changes| {
                        check_shared
                            .map_store
                            .check_changes(current, changes, &check_dir)
                    },
                )?)
            }
        };
        start(self.listener, self.policy, shared, ctl, self.health, fleet)
    }
}

/// Tell `/readyz` which functions the configuration names and how their
/// compilation ended (compiled, or failed with the reason).
pub fn report_functions(health: &health::Health, node: &crate::functions::FunctionNode) {
    let loaded = node.functions().iter().map(|f| f.name.as_str());
    let failed = node.failures().iter().map(|f| f.name.as_str());
    health.expect_functions(loaded.chain(failed));
    for f in node.functions() {
        health.set_function(&f.name, health::FunctionState::Ready);
    }
    for f in node.failures() {
        health.set_function(&f.name, health::FunctionState::Failed(f.reason.clone()));
    }
}

/// Start the admin listener for the running process. Returns the bound
/// address. Call after the metrics recorder is installed.
pub fn start(
    listener: TcpListener,
    policy: server::Policy,
    shared: Arc<Shared>,
    ctl: Arc<Controller>,
    health: &'static health::Health,
    fleet: Option<Arc<cluster::ClusterMap>>,
) -> anyhow::Result<SocketAddr> {
    crate::metrics::set_map_version(shared.version());
    let backend = Arc::new(RuntimeBackend {
        shared,
        ctl,
        health,
        fleet,
    });
    let addr = server::spawn(listener, backend, policy)
        .map_err(|e| anyhow::anyhow!("cannot start the admin listener thread: {e}"))?;
    // Exporter housekeeping, off the shards.
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            if let Some(r) = crate::metrics::global() {
                r.run_upkeep();
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the metrics upkeep thread: {e}"))?;
    Ok(addr)
}

/// Serve `loaded` on every shard now: swap it in, wake idle shards, tell
/// `/metrics`. Returns the new map version.
fn publish(shared: &Shared, ctl: &Controller, loaded: crate::addrmap::Loaded) -> u64 {
    let version = shared.publish(loaded.map, loaded.config.dns);
    ctl.broadcast(Command::Refresh);
    crate::metrics::set_map_version(version);
    version
}

/// The running process as the admin API sees it.
struct RuntimeBackend {
    shared: Arc<Shared>,
    ctl: Arc<Controller>,
    health: &'static health::Health,
    /// With `[cluster]`: where API changes go.
    fleet: Option<Arc<cluster::ClusterMap>>,
}

impl Backend for RuntimeBackend {
    fn metrics(&self) -> String {
        crate::metrics::global()
            .map(|r| r.render())
            .unwrap_or_default()
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            waiting_for: self.health.waiting_for(),
            degraded: self
                .fleet
                .as_ref()
                .map(|f| f.degraded())
                .unwrap_or_default(),
        }
    }

    fn map(&self) -> (Config, Overlay, u64, Option<String>) {
        let (config, overlay) = self.shared.map_store.snapshot();
        let file = match &self.fleet {
            Some(f) => Some(f.state_file().display().to_string()),
            None => self
                .shared
                .map_store
                .state_file()
                .map(|p| p.display().to_string()),
        };
        (config, overlay, self.shared.version(), file)
    }

    fn change(&self, changes: &[Change], read_revision: Option<u64>) -> Result<Applied, Refused> {
        if let Some(fleet) = &self.fleet {
            let applied = fleet.change(changes, read_revision)?;
            if let (Some(version), Some(revision)) = (applied.version, applied.revision) {
                tracing::info!(
                    "admin API: {} change(s) written to the fleet map at revision {revision}; serving address map version {version}",
                    changes.len()
                );
            }
            return Ok(applied);
        }
        if read_revision.is_some() {
            return Err(Refused::Change(overlay::ChangeError {
                status: 400,
                message:
                    "?revision= applies to a fleet map ([cluster]); this node keeps its own map"
                        .into(),
            }));
        }
        let base_dir = self.shared.base_dir();
        let applied = self.shared.map_store.change(changes, &base_dir, |loaded| {
            publish(&self.shared, &self.ctl, loaded)
        })?;
        if let Some(version) = applied.version {
            tracing::info!(
                "admin API: {} change(s) applied; serving address map version {version}",
                changes.len()
            );
        }
        Ok(applied)
    }

    fn revision(&self) -> Option<u64> {
        self.fleet.as_ref().map(|f| f.revision())
    }

    fn reload(&self) -> Reloaded {
        match control::reload(&self.shared, &self.ctl, "api") {
            ReloadOutcome::Swapped { version } => Reloaded::Swapped { version },
            ReloadOutcome::NothingToReload => Reloaded::NothingToReload,
            ReloadOutcome::Rejected(problems) => Reloaded::Rejected(problems),
        }
    }

    fn version(&self) -> u64 {
        self.shared.version()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate_server as validate;

    #[test]
    fn non_loopback_admin_needs_a_token() {
        let mut s = ServerConfig::default();
        assert!(validate(&s).is_empty());
        s.admin_listen = "0.0.0.0:9353".parse().unwrap();
        let p = validate(&s);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "server.admin_listen");
        assert!(p[0].message.contains("admin token"));
        assert!(bind(s.admin_listen, None).is_err());
        s.admin_token = Some("short".into());
        assert_eq!(validate(&s)[0].key, "server.admin_token");
        s.admin_token = Some("0123456789abcdef0123".into());
        assert!(validate(&s).is_empty());
        s.admin_token_file = Some("t".into());
        assert_eq!(validate(&s)[0].key, "server.admin_token_file");
    }

    #[test]
    fn token_file_and_state_dir_resolve_against_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "0123456789abcdef0123\nignored\n").unwrap();
        let mut s = ServerConfig {
            admin_token_file: Some("tok".into()),
            ..ServerConfig::default()
        };
        assert_eq!(
            load_token(&s, dir.path()).unwrap().as_deref(),
            Some("0123456789abcdef0123")
        );
        std::fs::write(dir.path().join("tok"), "short\n").unwrap();
        assert!(load_token(&s, dir.path()).is_err());
        s.admin_token_file = Some("missing".into());
        assert!(load_token(&s, dir.path())
            .unwrap_err()
            .to_string()
            .contains("missing"));
        s.state_dir = Some("st".into());
        assert_eq!(state_dir(&s, dir.path()), dir.path().join("st"));
        s.state_dir = Some("/abs".into());
        assert_eq!(state_dir(&s, dir.path()), PathBuf::from("/abs"));
    }
}
