//! Building the node's wasmtime `Engine` (pooling allocator, copy-on-write
//! memory images, epoch interruption) and turning a module file into a
//! checked, instantiable function: compile once, cache the precompiled
//! artifact on disk keyed by module hash and engine settings, check the
//! function ABI, and prepare an `InstancePre`.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Enabled, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    ModuleExport, PoolingAllocationConfig, ValType,
};

use super::arena::ArenaData;
use super::config::{FunctionSpec, Limits};

/// Node-wide engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// Bytes of each memory kept resident (and zeroed) when a slot is released.
    pub keep_resident_bytes: usize,
    /// Largest memory any function may have (pool slot size), bytes.
    pub max_memory_bytes: usize,
    /// Pool capacity: instances (= memories = tables) alive at once.
    pub total_instances: u32,
}

/// Build the engine every function of this node is compiled for and
/// instantiated by.
pub fn build_engine(s: &EngineSettings) -> Result<Engine, String> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(s.total_instances)
        .total_memories(s.total_instances)
        .total_tables(s.total_instances)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_memory_size(s.max_memory_bytes)
        .linear_memory_keep_resident(s.keep_resident_bytes)
        .table_keep_resident(s.keep_resident_bytes)
        // Linux >= 6.7: reset only the pages an instance dirtied, not the
        // whole keep-resident prefix (falls back to memset elsewhere).
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| {
        format!(
            "cannot create the WebAssembly engine ({} instance slots of {} KiB): {e:#}; \
             lower ring_depth, max_memory_kib or the number of functions/shards, \
             or raise the address-space limit (ulimit -v)",
            s.total_instances,
            s.max_memory_bytes / 1024
        )
    })
}

/// Where a module's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactSource {
    /// Compiled now (and written to the cache when one is configured).
    Compiled,
    /// Loaded from the on-disk cache: no compilation.
    Cache,
}

/// A loaded function: compiled code shared by all shards, ready to
/// instantiate without any name lookups.
pub struct LoadedFunction {
    pub name: String,
    pub limits: Limits,
    pub source: ArtifactSource,
    /// Epoch ticks from call start to the deadline trap.
    pub deadline_ticks: u64,
    pub module: Module,
    pub(crate) pre: InstancePre<ArenaData>,
    pub(crate) exports: AbiExports,
}

impl std::fmt::Debug for LoadedFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedFunction")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Pre-resolved export indices of the function ABI.
#[derive(Clone, Copy)]
pub(crate) struct AbiExports {
    pub memory: ModuleExport,
    pub alloc: ModuleExport,
    pub handle: ModuleExport,
}

/// Compile (or load from `cache_dir`) and check one function.
/// The error says what is wrong with the module and what to do.
pub fn load_function(
    engine: &Engine,
    spec: &FunctionSpec,
    cache_dir: Option<&Path>,
    tick_ms: u32,
) -> Result<LoadedFunction, String> {
    let bytes = if super::examples::is_builtin(&spec.module) {
        super::examples::read(&spec.module)?.to_vec()
    } else {
        fs::read(&spec.module).map_err(|e| {
            format!(
                "cannot read module {}: {e}; check the path (relative paths resolve against the config file's directory)",
                spec.module.display()
            )
        })?
    };
    let (module, source) = compile_cached(engine, &bytes, cache_dir)?;
    let exports = check_abi(&module, &spec.limits)?;
    let linker = Linker::<ArenaData>::new(engine);
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| format!("cannot prepare instantiation: {e:#}"))?;
    Ok(LoadedFunction {
        name: spec.name.clone(),
        limits: spec.limits,
        source,
        deadline_ticks: deadline_ticks(spec.limits.deadline_ms, tick_ms),
        module,
        pre,
        exports,
    })
}

/// Epoch ticks for a deadline: whole tick periods covering `deadline_ms`,
/// plus one because the first tick may come right after the call starts.
pub fn deadline_ticks(deadline_ms: u32, tick_ms: u32) -> u64 {
    u64::from(deadline_ms.div_ceil(tick_ms.max(1))) + 1
}

/// Feeds `Hash` output into SHA-256 (for the engine compatibility hash).
struct ShaHasher<'a>(&'a mut Sha256);

impl Hasher for ShaHasher<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The cache key: SHA-256 over a format tag, the engine's precompile
/// compatibility hash (wasmtime version, target, compiler settings) and the
/// module file bytes.
pub fn cache_key(engine: &Engine, module_bytes: &[u8]) -> String {
    let mut sha = Sha256::new();
    sha.update(b"shardgate-fn-artifact-v1\0");
    engine
        .precompile_compatibility_hash()
        .hash(&mut ShaHasher(&mut sha));
    sha.update((module_bytes.len() as u64).to_le_bytes());
    sha.update(module_bytes);
    hex(&sha.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Length of the integrity trailer (SHA-256 of the artifact) on cache files.
const TRAILER: usize = 32;

/// The artifact path for a module in `dir`.
pub fn cache_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.cwasm"))
}

fn compile_cached(
    engine: &Engine,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> Result<(Module, ArtifactSource), String> {
    let path = cache_dir.map(|dir| cache_path(dir, &cache_key(engine, bytes)));
    if let Some(path) = &path {
        if let Some(module) = read_cached(engine, path) {
            return Ok((module, ArtifactSource::Cache));
        }
    }
    let artifact = engine
        .precompile_module(bytes)
        .map_err(|e| format!("invalid module: {e:#}"))?;
    // SAFETY: `artifact` was produced just now by `precompile_module` of
    // this very engine.
    let module = unsafe { Module::deserialize(engine, &artifact) }.map_err(|e| {
        format!(
            "cannot load compiled module: {e:#} (a memory larger than every function's \
             max_memory_kib does not fit the instance pool: raise max_memory_kib)"
        )
    })?;
    if let Some(path) = &path {
        if let Err(e) = write_cached(path, &artifact) {
            tracing::warn!(
                path = %path.display(),
                "cannot write the compiled-function cache: {e}; the module will be \
                 recompiled on the next start (create the directory or set \
                 functions.cache_dir = \"\" to disable the cache)"
            );
        }
    }
    Ok((module, ArtifactSource::Compiled))
}

/// Load a cached artifact if it is intact and compatible; anything else
/// (missing, torn, from another engine) is a miss.
fn read_cached(engine: &Engine, path: &Path) -> Option<Module> {
    let data = fs::read(path).ok()?;
    if data.len() <= TRAILER {
        return None;
    }
    let (artifact, trailer) = data.split_at(data.len() - TRAILER);
    if Sha256::digest(artifact).as_slice() != trailer {
        tracing::warn!(path = %path.display(), "corrupt compiled-function cache entry; recompiling");
        return None;
    }
    // SAFETY: the file carries a SHA-256 of an artifact this process family
    // wrote with `precompile_module` (the cache directory must only be
    // writable by shardgate); wasmtime additionally rejects artifacts from an
    // incompatible engine.
    match unsafe { Module::deserialize(engine, artifact) } {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(path = %path.display(), "unusable compiled-function cache entry ({e}); recompiling");
            None
        }
    }
}

/// Write artifact + SHA-256 trailer to a temp file, fsync, rename.
fn write_cached(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(artifact)?;
        f.write_all(&Sha256::digest(artifact))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn describe(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "a function",
        ExternType::Memory(_) => "a memory",
        ExternType::Global(_) => "a global",
        ExternType::Table(_) => "a table",
        _ => "something else",
    }
}

fn func_sig_is(ty: &ExternType, params: &[ValType], results: &[ValType]) -> bool {
    let ExternType::Func(f) = ty else {
        return false;
    };
    let same = |a: &mut dyn ExactSizeIterator<Item = ValType>, b: &[ValType]| {
        a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
    };
    same(&mut f.params(), params) && same(&mut f.results(), results)
}

/// Check the function ABI: no imports; exports `memory` (32-bit, not shared,
/// initial size within the limit), `alloc(i32) -> i32`,
/// `handle(i32, i32) -> i64`.
fn check_abi(module: &Module, limits: &Limits) -> Result<AbiExports, String> {
    if let Some(import) = module.imports().next() {
        return Err(format!(
            "module imports {}::{}; functions may not import anything (the host provides no imports): \
             build it without imports (e.g. clang -nostdlib)",
            import.module(),
            import.name()
        ));
    }
    const ABI: &str =
        "exports `memory`, `alloc(len: i32) -> i32` and `handle(ptr: i32, len: i32) -> i64`";
    let get = |name: &str| -> Result<ExternType, String> {
        module
            .get_export(name)
            .ok_or_else(|| format!("module does not export `{name}`; the function ABI {ABI}"))
    };
    match get("memory")? {
        ExternType::Memory(m) => {
            if m.is_64() || m.is_shared() {
                return Err("`memory` must be a 32-bit, non-shared memory".into());
            }
            let initial = m.minimum().saturating_mul(65_536);
            if initial > limits.max_memory_bytes as u64 {
                return Err(format!(
                    "the module's initial memory ({} KiB) exceeds its max_memory_kib ({} KiB): raise max_memory_kib",
                    initial / 1024,
                    limits.max_memory_bytes / 1024
                ));
            }
        }
        other => {
            return Err(format!(
                "`memory` is {}, not a memory; the function ABI {ABI}",
                describe(&other)
            ))
        }
    }
    if !func_sig_is(&get("alloc")?, &[ValType::I32], &[ValType::I32]) {
        return Err(format!(
            "`alloc` has the wrong type; the function ABI {ABI}"
        ));
    }
    if !func_sig_is(
        &get("handle")?,
        &[ValType::I32, ValType::I32],
        &[ValType::I64],
    ) {
        return Err(format!(
            "`handle` has the wrong type; the function ABI {ABI}"
        ));
    }
    let index = |name: &str| module.get_export_index(name).expect("export checked above");
    Ok(AbiExports {
        memory: index("memory"),
        alloc: index("alloc"),
        handle: index("handle"),
    })
}
