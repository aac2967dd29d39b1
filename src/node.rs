//! Start-up of a node, on top of every layer: load the configuration and
//! build its map, place the shards, prepare the admin plane (metrics
//! recorder, persisted or fleet map, token, listener), compile the
//! functions off the shards, then hand the shared state to the shard pool
//! and serve until a stop signal.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};

use crate::addrmap;
use crate::config::Problem;
use crate::shard::control::{self, Controller};
use crate::shard::pool;
use crate::shard::state::{ConfigSource, Shared};

/// What `shardgate run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Config file; `None` = the embedded default.
    pub config: Option<PathBuf>,
    /// Shard count override (`--shards`).
    pub shards: Option<usize>,
}

/// Why `run` failed.
#[derive(Debug)]
pub enum RunError {
    /// The configuration is invalid; `source` names it for messages.
    Config {
        source: String,
        problems: Vec<Problem>,
    },
    /// Anything else that stopped start-up or serving.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for RunError {
    fn from(e: anyhow::Error) -> Self {
        RunError::Runtime(e)
    }
}

/// Run shardgate until SIGTERM/SIGINT. Returns after every shard has stopped.
pub fn run(opts: RunOptions) -> Result<(), RunError> {
    let source = match &opts.config {
        Some(path) => ConfigSource::File(path.clone()),
        None => ConfigSource::Embedded,
    };
    let loaded = match &opts.config {
        Some(path) => addrmap::load_file(path),
        None => addrmap::load_embedded(),
    }
    .map_err(|problems| RunError::Config {
        source: source_name(&source),
        problems,
    })?;
    let placement = pool::plan(&loaded.config, opts.shards)?;
    let n = placement.shards;

    // Admin plane: metrics recorder, persisted API map changes merged over
    // the config, admin token and listener (bound now so a bad address stops
    // start-up).
    let (loaded, map_store, admin) =
        crate::admin::prepare(loaded, &source.base_dir(), n).map_err(|e| match e {
            crate::admin::PrepareError::Config(problems) => RunError::Config {
                source: source_name(&source),
                problems,
            },
            crate::admin::PrepareError::Other(e) => RunError::Runtime(e),
        })?;
    let health = admin.health();
    // Functions compile here, off the shards, once for all of them.
    let functions = crate::functions::FunctionNode::for_run(&loaded.config, &source.base_dir(), n)
        .map_err(|e| anyhow!("{e}"))?;
    if let Some(node) = &functions {
        crate::admin::report_functions(health, node);
    }
    let shared = Arc::new(
        Shared::new(loaded, source.clone(), n)
            .with_map_store(map_store)
            .with_functions(functions),
    );
    let (ctl, shard_fds) = Controller::new(n).context("cannot create shard control channels")?;
    let ctl = Arc::new(ctl);
    let admin_addr = admin.start(shared.clone(), ctl.clone())?;
    tracing::info!(
        "admin listener on http://{admin_addr} (/metrics, /healthz, /readyz, /v1/views)"
    );
    control::spawn_signal_thread(shared.clone(), ctl.clone())
        .context("cannot install signal handlers")?;
    pool::serve(placement, shared, ctl, shard_fds, health)?;
    Ok(())
}

/// The configuration's name in messages.
fn source_name(source: &ConfigSource) -> String {
    match source {
        ConfigSource::Embedded => "<embedded default>".to_string(),
        ConfigSource::File(p) => p.display().to_string(),
    }
}
