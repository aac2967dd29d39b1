//! The node-wide part of the function service: one `Engine`, every function
//! compiled once (off the shards, on loader threads) and shared by all
//! shards, the list of functions that failed to load, and the epoch ticker
//! thread that enforces deadlines.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

use super::arena::slots_per_ring;
use super::compile::{build_engine, load_function, ArtifactCache, EngineSettings, LoadedFunction};
use crate::config::functions::{FunctionSpec, FunctionsConfig};
use crate::config::Config;

/// A function that could not be loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    pub name: String,
    pub module: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "function {:?} ({}): {}",
            self.name,
            self.module.display(),
            self.reason
        )
    }
}

/// Everything the shards share: engine, compiled functions, settings.
pub struct FunctionNode {
    engine: Engine,
    settings: FunctionsConfig,
    /// Sorted by name.
    functions: Vec<Arc<LoadedFunction>>,
    failures: Vec<LoadFailure>,
    _ticker: Ticker,
}

impl std::fmt::Debug for FunctionNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionNode")
            .field("functions", &self.functions)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_ticker(engine: &Engine, tick_ms: u32) -> Result<Ticker, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let engine = engine.clone();
    let flag = stop.clone();
    let period = Duration::from_millis(u64::from(tick_ms.max(1)));
    let thread = std::thread::Builder::new()
        .name("fn-epoch".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(period);
                engine.increment_epoch();
            }
        })
        .map_err(|e| format!("cannot start the epoch ticker thread: {e}"))?;
    Ok(Ticker {
        stop,
        thread: Some(thread),
    })
}

impl FunctionNode {
    /// Build the engine, start the epoch ticker and load every function of
    /// `config` (relative paths against `base_dir`) for `shards` shards.
    pub fn from_config(
        config: &Config,
        base_dir: &Path,
        shards: usize,
    ) -> Result<Arc<FunctionNode>, String> {
        let (specs, dir_errors) = config.functions.specs(&config.function, base_dir);
        let node = FunctionNode::start(&config.functions, specs, shards)?;
        for e in dir_errors {
            tracing::error!("{e}");
        }
        Ok(node)
    }

    /// For `shardgate run`: the node when the config enables functions and
    /// names at least one (a `[[function]]` or `functions.dir`), else `None`
    /// (nothing is bound on the function port). Logs what it loaded.
    pub fn for_run(
        config: &Config,
        base_dir: &Path,
        shards: usize,
    ) -> Result<Option<Arc<FunctionNode>>, String> {
        let f = &config.functions;
        if !f.enabled || (f.dir.is_none() && config.function.is_empty()) {
            tracing::info!("functions: none configured (add [[function]] entries or functions.dir to serve them)");
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let node = FunctionNode::from_config(config, base_dir, shards)?;
        let cached = node
            .functions()
            .iter()
            .filter(|f| f.source == super::compile::ArtifactSource::Cache)
            .count();
        tracing::info!(
            "functions: {} loaded ({} from the compile cache), {} failed, in {} ms",
            node.functions().len(),
            cached,
            node.failures().len(),
            started.elapsed().as_millis()
        );
        Ok(Some(node))
    }

    /// Build the engine (pool sized for `shards` shards), start the epoch
    /// ticker and compile or load from cache every spec, in parallel on
    /// loader threads. A function that fails is logged and listed in
    /// [`FunctionNode::failures`]; the others run. Errors only when the
    /// engine itself cannot be built.
    pub fn start(
        settings: &FunctionsConfig,
        specs: Vec<FunctionSpec>,
        shards: usize,
    ) -> Result<Arc<FunctionNode>, String> {
        let shards = shards.max(1);
        let per_shard: usize = specs
            .iter()
            .map(|s| slots_per_ring(s.limits.ring_depth))
            .sum();
        // + one slot per function for the load-time check instance.
        let total = (per_shard * shards + specs.len()).max(1);
        let max_memory = specs
            .iter()
            .map(|s| s.limits.max_memory_bytes)
            .max()
            .unwrap_or(65_536);
        let engine = build_engine(&EngineSettings {
            keep_resident_bytes: settings.keep_resident_kib as usize * 1024,
            max_memory_bytes: max_memory,
            total_instances: u32::try_from(total).map_err(|_| {
                "too many instance slots: lower ring_depth or the number of functions".to_string()
            })?,
        })?;
        // The ticker runs before loading: a module's start function is
        // bounded by the deadline too.
        let ticker = start_ticker(&engine, settings.epoch_tick_ms)?;
        let cache = (!settings.cache_dir.as_os_str().is_empty())
            .then(|| ArtifactCache::open(&settings.cache_dir))
            .and_then(|r| {
                r.map_err(|e| {
                    tracing::warn!("not using the compiled-function cache: {e}; functions are compiled at every start")
                })
                .ok()
            });
        let cache = cache.as_ref();

        let results: Vec<Mutex<Option<Result<LoadedFunction, String>>>> =
            specs.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(specs.len())
            .max(1);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(spec) = specs.get(i) else { break };
                    let r =
                        load_function(&engine, spec, cache, settings.epoch_tick_ms).and_then(|f| {
                            check_instantiates(&f)?;
                            Ok(f)
                        });
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                });
            }
        });

        let mut functions = Vec::new();
        let mut failures = Vec::new();
        for (spec, slot) in specs.iter().zip(results) {
            let r = slot
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(|| Err("loader thread did not finish".into()));
            match r {
                Ok(f) => {
                    tracing::info!(function = %f.name, source = ?f.source, "function loaded");
                    functions.push(Arc::new(f));
                }
                Err(reason) => {
                    let failure = LoadFailure {
                        name: spec.name.clone(),
                        module: spec.module.clone(),
                        reason,
                    };
                    tracing::error!("{failure}; the other functions still run");
                    failures.push(failure);
                }
            }
        }
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Arc::new(FunctionNode {
            engine,
            settings: settings.clone(),
            functions,
            failures,
            _ticker: ticker,
        }))
    }
}

/// Instantiate and drop one instance: catches modules whose start function
/// or data segments fail at instantiation, so they are reported at load.
fn check_instantiates(f: &LoadedFunction) -> Result<(), String> {
    super::arena::Arena::new(f).map(drop)
}

impl FunctionNode {
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The `[functions]` settings the node runs with.
    pub fn settings(&self) -> &FunctionsConfig {
        &self.settings
    }

    /// Loaded functions, sorted by name.
    pub fn functions(&self) -> &[Arc<LoadedFunction>] {
        &self.functions
    }

    /// Functions that failed to load, with the reason.
    pub fn failures(&self) -> &[LoadFailure] {
        &self.failures
    }

    /// The function named `name`, if it loaded.
    pub fn function(&self, name: &str) -> Option<&Arc<LoadedFunction>> {
        self.functions
            .binary_search_by(|f| f.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.functions[i])
    }
}
