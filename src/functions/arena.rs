//! The arena ring: per shard and function, ready instances built ahead of
//! requests (exports resolved when built, in batches sharing a `Store`). An
//! invocation takes a never-used instance (pointer swap), runs it once and
//! never touches it again; [`Ring::upkeep_step`] (run by a low-priority
//! task) releases used-up batches back to the pool, where each slot's
//! memory is reset, and builds fresh ones. No instance ever runs twice, so
//! every invocation starts from the module's pristine state.

use std::cell::Cell;
use std::sync::Arc;

use wasmtime::{Extern, Func, Memory, ResourceLimiter, Store, Trap, ValRaw};

use super::compile::LoadedFunction;
use super::outcome::InvokeError;
use crate::metrics::local::bump;

/// Per-store host state: the memory limit and whether a grow hit it.
pub struct ArenaData {
    max_memory_bytes: usize,
    memory_limit_hit: bool,
}

impl ResourceLimiter for ArenaData {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.memory_limit_hit = true;
            wasmtime::bail!("memory limit of {} bytes reached", self.max_memory_bytes);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The pool's table slot size bounds tables.
        Ok(true)
    }
}

/// The ABI exports of one instance.
///
/// `alloc` and `handle` are called with `Func::call_unchecked`: their
/// signatures were checked once when the module was loaded
/// (`compile::check_abi`), and a `TypedFunc` would root their types in the
/// engine-wide type registry (a shared lock and reference count) for every
/// instance built.
#[derive(Clone, Copy)]
struct Exports {
    memory: Memory,
    /// `alloc(len: i32) -> i32`
    alloc: Func,
    /// `handle(ptr: i32, len: i32) -> i64`
    handle: Func,
}

fn new_store(f: &LoadedFunction) -> Store<ArenaData> {
    let mut store = Store::new(
        f.module.engine(),
        ArenaData {
            max_memory_bytes: f.limits.max_memory_bytes,
            memory_limit_hit: false,
        },
    );
    store.limiter(|d| d);
    store
}

/// Instantiate `f` (from the pool) into `store` and resolve its exports.
fn instantiate(store: &mut Store<ArenaData>, f: &LoadedFunction) -> Result<Exports, String> {
    // The start function (if any) runs under the deadline too.
    store.set_epoch_deadline(f.deadline_ticks);
    let instance = f
        .pre
        .instantiate(&mut *store)
        .map_err(|e| format!("cannot instantiate: {e:#}"))?;
    let memory = match instance.get_module_export(&mut *store, &f.exports.memory) {
        Some(Extern::Memory(m)) => m,
        _ => return Err("export `memory` vanished".into()),
    };
    let mut func = |e| match instance.get_module_export(&mut *store, e) {
        Some(Extern::Func(func)) => Ok(func),
        _ => Err("ABI export vanished".to_string()),
    };
    let alloc = func(&f.exports.alloc)?;
    let handle = func(&f.exports.handle)?;
    Ok(Exports {
        memory,
        alloc,
        handle,
    })
}

/// Run one invocation in the instance `ex` of `store`: `alloc`, copy
/// `input` in, `handle`, append the output to `out`. `f.deadline_ticks`
/// epochs from now the call traps.
fn call(
    store: &mut Store<ArenaData>,
    ex: &Exports,
    input: &[u8],
    out: &mut Vec<u8>,
    f: &LoadedFunction,
) -> Result<(), InvokeError> {
    store.set_epoch_deadline(f.deadline_ticks);
    store.data_mut().memory_limit_hit = false;
    let len = input.len() as i32; // bounded by max_input_bytes (<= 16 MiB)
    let mut args = [ValRaw::i32(len)];
    // SAFETY: `alloc` has type (i32) -> i32 (checked at load for this
    // module); `args` holds its one parameter and has room for its one
    // result.
    unsafe { ex.alloc.call_unchecked(&mut *store, &mut args) }
        .map_err(|e| classify(e, store.data(), f))?;
    let ptr = args[0].get_i32();
    let mem = ex.memory.data_mut(&mut *store);
    let start = ptr as u32 as usize;
    match mem.get_mut(start..start + input.len()) {
        Some(dst) => dst.copy_from_slice(input),
        None => {
            return Err(InvokeError::BadOutput(format!(
                "alloc({}) returned {start:#x}, outside its {}-byte memory",
                input.len(),
                mem.len()
            )))
        }
    }
    let mut args = [ValRaw::i32(ptr), ValRaw::i32(len)];
    // SAFETY: `handle` has type (i32, i32) -> i64 (checked at load);
    // `args` holds both parameters and has room for the result.
    unsafe { ex.handle.call_unchecked(&mut *store, &mut args) }
        .map_err(|e| classify(e, store.data(), f))?;
    let packed = args[0].get_i64();
    let out_ptr = (packed as u64 >> 32) as usize;
    let out_len = (packed as u64 & 0xffff_ffff) as usize;
    if out_len > f.limits.max_output_bytes {
        return Err(InvokeError::OutputTooLarge {
            len: out_len,
            max: f.limits.max_output_bytes,
        });
    }
    let mem = ex.memory.data(&*store);
    match mem.get(out_ptr..out_ptr + out_len) {
        Some(src) => {
            out.extend_from_slice(src);
            Ok(())
        }
        None => Err(InvokeError::BadOutput(format!(
            "output {out_ptr:#x}+{out_len} lies outside its {}-byte memory",
            mem.len()
        ))),
    }
}

/// One instance in its own store. Not used by the ring; for load-time
/// checks and for comparisons (benches: a reused instance, a fresh
/// instance per request).
pub struct Arena {
    store: Store<ArenaData>,
    ex: Exports,
}

impl Arena {
    /// Instantiate `f` in a new store (from the pool).
    pub fn new(f: &LoadedFunction) -> Result<Arena, String> {
        let mut store = new_store(f);
        let ex = instantiate(&mut store, f)?;
        Ok(Arena { store, ex })
    }

    /// Run one invocation in this instance (state persists between calls:
    /// no isolation).
    pub fn call(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        f: &LoadedFunction,
    ) -> Result<(), InvokeError> {
        call(&mut self.store, &self.ex, input, out, f)
    }
}

/// A store holding a batch of instances of one function; `ready` are the
/// never-used ones. Instances of a function import nothing, so instances
/// sharing a store share no state; batching amortizes the per-store costs
/// (creation, module registration, release). All of a batch's instance
/// slots return to the pool when the batch is dropped.
struct StoreBatch {
    store: Store<ArenaData>,
    ready: Vec<Exports>,
    /// Instances built in this store (used or not).
    built: usize,
}

impl StoreBatch {
    fn new(f: &LoadedFunction, capacity: usize) -> StoreBatch {
        StoreBatch {
            store: new_store(f),
            ready: Vec::with_capacity(capacity),
            built: 0,
        }
    }

    fn add(&mut self, f: &LoadedFunction) -> Result<(), String> {
        let ex = instantiate(&mut self.store, f)?;
        self.ready.push(ex);
        self.built += 1;
        Ok(())
    }
}

fn classify(e: wasmtime::Error, data: &ArenaData, f: &LoadedFunction) -> InvokeError {
    if data.memory_limit_hit {
        return InvokeError::MemoryLimit {
            max_bytes: f.limits.max_memory_bytes,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => InvokeError::Deadline {
            ms: f.limits.deadline_ms,
        },
        Some(trap) => InvokeError::Trap(trap.to_string()),
        None => InvokeError::Trap(format!("{e:#}")),
    }
}

/// Shard-local counters of one function, in `Cell`s so a metrics layer can
/// read them between requests.
#[derive(Debug, Default)]
pub struct RingStats {
    pub invocations: Cell<u64>,
    pub ok: Cell<u64>,
    pub traps: Cell<u64>,
    pub timeouts: Cell<u64>,
    pub memory_limits: Cell<u64>,
    pub bad_outputs: Cell<u64>,
    pub rejected_inputs: Cell<u64>,
    /// Requests that found the ring empty and instantiated inline.
    pub ring_misses: Cell<u64>,
    /// Instances released back to the pool (their slots reset).
    pub resets: Cell<u64>,
    /// Of those, released on the request path because upkeep was behind.
    pub inline_resets: Cell<u64>,
    /// Instances built (ring refills and misses).
    pub instantiations: Cell<u64>,
    pub instantiate_failures: Cell<u64>,
}

/// A plain copy of [`RingStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingCounts {
    pub invocations: u64,
    pub ok: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub memory_limits: u64,
    pub bad_outputs: u64,
    pub rejected_inputs: u64,
    pub ring_misses: u64,
    pub resets: u64,
    pub inline_resets: u64,
    pub instantiations: u64,
    pub instantiate_failures: u64,
}

impl RingStats {
    pub fn snapshot(&self) -> RingCounts {
        RingCounts {
            invocations: self.invocations.get(),
            ok: self.ok.get(),
            traps: self.traps.get(),
            timeouts: self.timeouts.get(),
            memory_limits: self.memory_limits.get(),
            bad_outputs: self.bad_outputs.get(),
            rejected_inputs: self.rejected_inputs.get(),
            ring_misses: self.ring_misses.get(),
            resets: self.resets.get(),
            inline_resets: self.inline_resets.get(),
            instantiations: self.instantiations.get(),
            instantiate_failures: self.instantiate_failures.get(),
        }
    }
}

impl std::ops::AddAssign for RingCounts {
    fn add_assign(&mut self, o: RingCounts) {
        self.invocations += o.invocations;
        self.ok += o.ok;
        self.traps += o.traps;
        self.timeouts += o.timeouts;
        self.memory_limits += o.memory_limits;
        self.bad_outputs += o.bad_outputs;
        self.rejected_inputs += o.rejected_inputs;
        self.ring_misses += o.ring_misses;
        self.resets += o.resets;
        self.inline_resets += o.inline_resets;
        self.instantiations += o.instantiations;
        self.instantiate_failures += o.instantiate_failures;
    }
}

/// Largest batch of instances per store.
pub const MAX_BATCH: usize = 8;

/// Instances per store and full spare batches kept for a ring of `depth`.
fn batching(depth: usize) -> (usize, usize) {
    let batch = depth.clamp(1, MAX_BATCH);
    (batch, depth.max(1).div_ceil(batch))
}

/// Instance slots one ring can hold at once: the current batch, the full
/// spares, one batch being built, up to `spares + 1` exhausted batches
/// waiting for release, and one instance built on a ring miss. Size the
/// pool with this.
pub fn slots_per_ring(depth: usize) -> usize {
    let (batch, spares) = batching(depth);
    batch * (1 + spares + 1 + spares + 1) + 1
}

/// The ring of one function on one shard.
///
/// Ready instances live in batches (one store each): the request path pops
/// a never-used instance from the current batch; when the current batch is
/// used up it is retired and the next full spare batch takes its place (a
/// pointer swap). Upkeep releases retired batches to the pool and builds
/// new spares, one instance per step.
pub struct Ring {
    func: Arc<LoadedFunction>,
    batch_size: usize,
    spares_wanted: usize,
    /// Never empty when `Some`.
    current: Option<StoreBatch>,
    /// Full batches; the request path takes the last one.
    spare: Vec<StoreBatch>,
    /// The batch upkeep is filling.
    building: Option<StoreBatch>,
    /// Used-up batches waiting to be released to the pool.
    retired: Vec<StoreBatch>,
    pub stats: RingStats,
}

impl Ring {
    /// An empty ring; call [`Ring::fill`] (or let upkeep fill it).
    pub fn new(func: Arc<LoadedFunction>) -> Ring {
        let (batch_size, _) = batching(func.limits.ring_depth);
        Ring::with_batch_size(func, batch_size)
    }

    /// A ring building `batch_size` instances per store (1..=`MAX_BATCH`;
    /// 1 = a store per instance). [`Ring::new`] picks the size; this is for
    /// measuring the choice. A ring uses at most
    /// `slots_per_ring(ring_depth)` pool slots only at the size `new` picks.
    pub fn with_batch_size(func: Arc<LoadedFunction>, batch_size: usize) -> Ring {
        let batch_size = batch_size.clamp(1, MAX_BATCH);
        let spares_wanted = func.limits.ring_depth.max(1).div_ceil(batch_size);
        Ring {
            func,
            batch_size,
            spares_wanted,
            current: None,
            spare: Vec::with_capacity(spares_wanted),
            building: None,
            retired: Vec::with_capacity(spares_wanted + 1),
            stats: RingStats::default(),
        }
    }

    pub fn function(&self) -> &Arc<LoadedFunction> {
        &self.func
    }

    /// Never-used instances ready for requests now.
    pub fn ready_len(&self) -> usize {
        self.current.as_ref().map_or(0, |b| b.ready.len())
            + self.spare.iter().map(|b| b.ready.len()).sum::<usize>()
    }

    /// Used-up batches waiting for release.
    pub fn retired_len(&self) -> usize {
        self.retired.len()
    }

    /// Build until the spares are full; returns the first error.
    pub fn fill(&mut self) -> Result<(), String> {
        while self.spare.len() < self.spares_wanted {
            self.build_step()?;
        }
        Ok(())
    }

    /// Add one instance to the batch being built; a full batch becomes a
    /// spare.
    fn build_step(&mut self) -> Result<(), String> {
        let f = &self.func;
        let size = self.batch_size;
        let b = self
            .building
            .get_or_insert_with(|| StoreBatch::new(f, size));
        match b.add(f) {
            Ok(()) => bump(&self.stats.instantiations),
            Err(e) => {
                bump(&self.stats.instantiate_failures);
                return Err(e);
            }
        }
        if b.ready.len() >= size {
            if let Some(full) = self.building.take() {
                self.spare.push(full);
            }
        }
        Ok(())
    }

    fn retire(&mut self, b: StoreBatch) {
        if self.retired.len() > self.spares_wanted {
            // Upkeep is behind: release the oldest here.
            let old = self.retired.remove(0);
            self.stats
                .resets
                .set(self.stats.resets.get() + old.built as u64);
            self.stats
                .inline_resets
                .set(self.stats.inline_resets.get() + old.built as u64);
        }
        self.retired.push(b);
    }

    /// Make `current` a batch with a ready instance: the next spare, or on
    /// a ring miss a one-instance batch built here.
    fn advance(&mut self) -> Result<(), InvokeError> {
        if let Some(b) = self.spare.pop() {
            self.current = Some(b);
            return Ok(());
        }
        bump(&self.stats.ring_misses);
        let mut b = StoreBatch::new(&self.func, 1);
        match b.add(&self.func) {
            Ok(()) => bump(&self.stats.instantiations),
            Err(e) => {
                bump(&self.stats.instantiate_failures);
                return Err(InvokeError::Unavailable(e));
            }
        }
        self.current = Some(b);
        Ok(())
    }

    /// The request path: run `input` through a never-used instance and
    /// append the output to `out`. The instance is never used again,
    /// whatever happens.
    pub fn invoke(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), InvokeError> {
        bump(&self.stats.invocations);
        if input.len() > self.func.limits.max_input_bytes {
            bump(&self.stats.rejected_inputs);
            return Err(InvokeError::InputTooLarge {
                len: input.len(),
                max: self.func.limits.max_input_bytes,
            });
        }
        if self.current.is_none() {
            self.advance()?;
        }
        let Some(batch) = self.current.as_mut() else {
            return Err(InvokeError::Unavailable("no instance".into()));
        };
        let Some(ex) = batch.ready.pop() else {
            return Err(InvokeError::Unavailable("no instance".into()));
        };
        let r = call(&mut batch.store, &ex, input, out, &self.func);
        let used_up = batch.ready.is_empty();
        let stats = &self.stats;
        match &r {
            Ok(()) => bump(&stats.ok),
            Err(InvokeError::Deadline { .. }) => bump(&stats.timeouts),
            Err(InvokeError::MemoryLimit { .. }) => bump(&stats.memory_limits),
            Err(InvokeError::Trap(_)) => bump(&stats.traps),
            Err(_) => bump(&stats.bad_outputs),
        }
        if used_up {
            if let Some(b) = self.current.take() {
                self.retire(b);
            }
            self.current = self.spare.pop();
        }
        r
    }

    /// One unit of background work: release one used-up batch to the pool
    /// (its slots' memory is reset there), or add one instance to the
    /// spare batch being built. Returns whether it did anything.
    pub fn upkeep_step(&mut self) -> bool {
        if let Some(b) = self.retired.pop() {
            self.stats
                .resets
                .set(self.stats.resets.get() + b.built as u64);
            drop(b);
            return true;
        }
        if self.spare.len() < self.spares_wanted {
            return match self.build_step() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(function = %self.func.name, "cannot refill the arena ring: {e}");
                    false
                }
            };
        }
        false
    }
}
