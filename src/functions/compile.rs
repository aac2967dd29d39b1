//! Building the node's wasmtime `Engine` (pooling allocator, copy-on-write
//! memory images, epoch interruption) and turning a module file into a
//! checked, instantiable function: compile once, cache the precompiled
//! artifact on disk keyed by module hash and engine settings, check the
//! function ABI, and prepare an `InstancePre`.
//!
//! A cached artifact is native code that wasmtime maps and runs unchecked,
//! so the cache trusts it only when (see [`ArtifactCache::open`]): the
//! directory is a real directory owned by this user and not writable by
//! group or others; and the file's trailer is an HMAC-SHA256 of the
//! artifact under a key generated per node (`cache.key`, 0600, in the
//! directory), which someone who can only drop files elsewhere cannot
//! forge. Files are written to an unpredictable temp name created with
//! `O_EXCL | O_NOFOLLOW`, then renamed; cache files are opened with
//! `O_NOFOLLOW`.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Enabled, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    ModuleExport, PoolingAllocationConfig, ValType,
};

use super::arena::ArenaData;
use crate::config::functions::{FunctionSpec, Limits};

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
    cache: Option<&ArtifactCache>,
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
    let (module, source) = compile_cached(engine, &bytes, cache)?;
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

/// Length of the MAC trailer (HMAC-SHA256 of the artifact) on cache files.
const TRAILER: usize = 32;

/// Name of the per-node MAC key file in the cache directory.
pub const KEY_FILE: &str = "cache.key";

/// The artifact path for a module in `dir`.
pub fn cache_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.cwasm"))
}

/// A checked cache directory and its MAC key.
pub struct ArtifactCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl ArtifactCache {
    /// Create `dir` (0700) if missing, check it, and read or create its
    /// key. `Err` says why the cache cannot be trusted and what to do; the
    /// caller then compiles without a cache.
    pub fn open(dir: &Path) -> Result<ArtifactCache, String> {
        if fs::symlink_metadata(dir).is_err() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    format!(
                        "cannot create the compiled-function cache {}: {e}; create it (owned by the \
                         shardgate user, mode 0700) or set functions.cache_dir = \"\" to disable the cache",
                        dir.display()
                    )
                })?;
        }
        check_dir(dir)?;
        let key = read_or_create_key(&dir.join(KEY_FILE))?;
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
            key,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn mac(&self, artifact: &[u8]) -> [u8; 32] {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key).expect("HMAC takes any key");
        m.update(artifact);
        m.finalize().into_bytes().into()
    }
}

/// The directory must be a directory (not a symlink), owned by this
/// process's user, and not writable by group or others.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let md = fs::symlink_metadata(dir).map_err(|e| {
        format!(
            "cannot inspect the compiled-function cache {}: {e}",
            dir.display()
        )
    })?;
    if !md.file_type().is_dir() {
        return Err(format!(
            "the compiled-function cache {} is not a directory (a symlink or a file); \
             point functions.cache_dir at a real directory",
            dir.display()
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me {
        return Err(format!(
            "the compiled-function cache {} is owned by uid {}, not by shardgate's uid {me}: \
             another user could plant native code there; `chown` it to the shardgate user",
            dir.display(),
            md.uid()
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(format!(
            "the compiled-function cache {} is writable by group or others (mode {:o}): \
             anyone who can write there could plant native code; `chmod 700` it",
            dir.display(),
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Read the 32-byte key, or create it (0600, `O_EXCL | O_NOFOLLOW`) from
/// the kernel's random source.
fn read_or_create_key(path: &Path) -> Result<[u8; 32], String> {
    let open = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    match open {
        Ok(mut f) => {
            let md = f.metadata().map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            if md.uid() != me || md.mode() & 0o077 != 0 {
                return Err(format!(
                    "the cache key {} must be owned by shardgate's uid {me} and readable by it alone \
                     (mode 600); remove it to have a new one generated",
                    path.display()
                ));
            }
            let mut key = [0u8; 32];
            let mut rest = Vec::new();
            f.read_exact(&mut key)
                .and_then(|()| f.read_to_end(&mut rest).map(|_| ()))
                .map_err(|e| format!("cannot read the cache key {}: {e}", path.display()))?;
            if !rest.is_empty() {
                return Err(format!(
                    "the cache key {} is not 32 bytes; remove it to have a new one generated",
                    path.display()
                ));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_bytes()?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| format!("cannot create the cache key {}: {e}", path.display()))?;
            f.write_all(&key)
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot write the cache key {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!(
            "cannot open the cache key {}: {e} (a symlink is refused); remove it to have a new one generated",
            path.display()
        )),
    }
}

/// 32 bytes from the kernel's random source.
fn random_bytes() -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    let mut f = fs::File::open("/dev/urandom")
        .map_err(|e| format!("cannot open /dev/urandom for the cache key: {e}"))?;
    f.read_exact(&mut key)
        .map_err(|e| format!("cannot read /dev/urandom for the cache key: {e}"))?;
    Ok(key)
}

fn compile_cached(
    engine: &Engine,
    bytes: &[u8],
    cache: Option<&ArtifactCache>,
) -> Result<(Module, ArtifactSource), String> {
    let path = cache.map(|c| cache_path(&c.dir, &cache_key(engine, bytes)));
    if let (Some(cache), Some(path)) = (cache, &path) {
        if let Some(module) = read_cached(engine, cache, path) {
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
    if let (Some(cache), Some(path)) = (cache, &path) {
        if let Err(e) = write_cached(cache, path, &artifact) {
            tracing::warn!(
                path = %path.display(),
                "cannot write the compiled-function cache: {e}; the module will be \
                 recompiled on the next start (check the directory, or set \
                 functions.cache_dir = \"\" to disable the cache)"
            );
        }
    }
    Ok((module, ArtifactSource::Compiled))
}

/// Load a cached artifact if its MAC verifies and it is compatible;
/// anything else (missing, torn, forged, a symlink, from another engine)
/// is a miss.
fn read_cached(engine: &Engine, cache: &ArtifactCache, path: &Path) -> Option<Module> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).ok()?;
    if data.len() <= TRAILER {
        return None;
    }
    let (artifact, trailer) = data.split_at(data.len() - TRAILER);
    let mut m = <HmacSha256 as Mac>::new_from_slice(&cache.key).expect("HMAC takes any key");
    m.update(artifact);
    if m.verify_slice(trailer).is_err() {
        tracing::warn!(path = %path.display(), "compiled-function cache entry fails its MAC (torn, or not written by this node); recompiling");
        return None;
    }
    // SAFETY: the trailer is a MAC under this node's secret key over an
    // artifact this node wrote with `precompile_module`, in a directory
    // only shardgate's user can write; wasmtime additionally rejects
    // artifacts from an incompatible engine.
    match unsafe { Module::deserialize(engine, artifact) } {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(path = %path.display(), "unusable compiled-function cache entry ({e}); recompiling");
            None
        }
    }
}

/// Write artifact + MAC trailer to an unpredictable temp name (created
/// with `O_EXCL | O_NOFOLLOW`, mode 0600), fsync, rename.
fn write_cached(cache: &ArtifactCache, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let suffix: String = random_bytes()
        .map_err(std::io::Error::other)?
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("artifact");
    let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(artifact)?;
        f.write_all(&cache.mac(artifact))?;
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const WAT: &[u8] = b"(module (func (export \"f\")))";

    fn compile(cache: Option<&ArtifactCache>) -> ArtifactSource {
        compile_cached(&Engine::default(), WAT, cache).unwrap().1
    }

    #[test]
    fn cache_is_used_only_with_a_valid_mac() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let key_md = fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(key_md.mode() & 0o777, 0o600);
        assert_eq!(key_md.len(), 32);
        assert_eq!(compile(Some(&cache)), ArtifactSource::Compiled);
        assert_eq!(compile(Some(&cache)), ArtifactSource::Cache);
        // no temp files left behind
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        // A planted artifact with a bare SHA-256 trailer (what an attacker
        // can compute) is not trusted.
        let path = cache_path(dir.path(), &cache_key(&Engine::default(), WAT));
        let data = fs::read(&path).unwrap();
        let artifact = &data[..data.len() - TRAILER];
        let mut forged = artifact.to_vec();
        forged.extend_from_slice(&Sha256::digest(artifact));
        fs::write(&path, &forged).unwrap();
        assert_eq!(compile(Some(&cache)), ArtifactSource::Compiled);
        assert_eq!(compile(Some(&cache)), ArtifactSource::Cache);

        // Another node's key (the same directory re-keyed) does not verify.
        fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let rekeyed = ArtifactCache::open(dir.path()).unwrap();
        assert_ne!(rekeyed.key, cache.key, "keys are random per node");
        assert_eq!(compile(Some(&rekeyed)), ArtifactSource::Compiled);

        // A symlink at the artifact's path is not followed.
        let elsewhere = dir.path().join("elsewhere");
        fs::rename(&path, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(read_cached(&Engine::default(), &rekeyed, &path).is_none());
    }

    #[test]
    fn unsafe_cache_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("cache");
        fs::create_dir(&d).unwrap();
        for mode in [0o777, 0o775, 0o757] {
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
            let e = ArtifactCache::open(&d).unwrap_err();
            assert!(e.contains("writable by group or others"), "{mode:o}: {e}");
        }
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(ArtifactCache::open(&d).is_ok());
        // a symlink to a good directory is refused too
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(ArtifactCache::open(&link)
            .unwrap_err()
            .contains("not a directory"));
        // a key readable by others is refused
        fs::set_permissions(d.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ArtifactCache::open(&d).unwrap_err().contains("mode 600"));
        // a directory owned by someone else (root only can chown)
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let other = dir.path().join("other");
            fs::DirBuilder::new().mode(0o700).create(&other).unwrap();
            std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
            assert!(ArtifactCache::open(&other)
                .unwrap_err()
                .contains("owned by uid 65534"));
        }
        // created fresh: 0700
        let fresh = dir.path().join("a/b");
        ArtifactCache::open(&fresh).unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
    }
}
