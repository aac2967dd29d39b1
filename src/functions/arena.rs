//! The arena ring: per shard and function, a few ready instances (each its
//! own `Store`, exports resolved when built). An invocation takes a ready
//! instance (pointer swap), runs it once, and hands it to the used queue;
//! [`Ring::upkeep_step`] (run by a low-priority task) releases used
//! instances back to the pool and builds fresh ones. No instance ever runs
//! twice, so every invocation starts from the module's pristine state.

use std::cell::Cell;
use std::sync::Arc;

use wasmtime::{Extern, Func, Memory, ResourceLimiter, Store, Trap, ValRaw};

use super::compile::LoadedFunction;
use super::outcome::InvokeError;

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

/// One ready instance of a function, with its ABI exports resolved.
///
/// `alloc` and `handle` are called with `Func::call_unchecked`: their
/// signatures were checked once when the module was loaded
/// (`compile::check_abi`), and a `TypedFunc` would root their types in the
/// engine-wide type registry (a shared lock and reference count) for every
/// instance built.
pub struct Arena {
    store: Store<ArenaData>,
    memory: Memory,
    /// `alloc(len: i32) -> i32`
    alloc: Func,
    /// `handle(ptr: i32, len: i32) -> i64`
    handle: Func,
}

impl Arena {
    /// Instantiate `f` in a new store (from the pool) and resolve its exports.
    pub fn new(f: &LoadedFunction) -> Result<Arena, String> {
        let mut store = Store::new(
            f.module.engine(),
            ArenaData {
                max_memory_bytes: f.limits.max_memory_bytes,
                memory_limit_hit: false,
            },
        );
        store.limiter(|d| d);
        // The start function (if any) runs under the deadline too.
        store.set_epoch_deadline(f.deadline_ticks);
        let instance = f
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("cannot instantiate: {e:#}"))?;
        let memory = match instance.get_module_export(&mut store, &f.exports.memory) {
            Some(Extern::Memory(m)) => m,
            _ => return Err("export `memory` vanished".into()),
        };
        let func = |store: &mut Store<ArenaData>, e| match instance.get_module_export(store, e) {
            Some(Extern::Func(func)) => Ok(func),
            _ => Err("ABI export vanished".to_string()),
        };
        let alloc = func(&mut store, &f.exports.alloc)?;
        let handle = func(&mut store, &f.exports.handle)?;
        Ok(Arena {
            store,
            memory,
            alloc,
            handle,
        })
    }

    /// Run one invocation: `alloc`, copy `input` in, `handle`, append the
    /// output to `out`. `f.deadline_ticks` epochs from now the call traps.
    pub fn call(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        f: &LoadedFunction,
    ) -> Result<(), InvokeError> {
        let store = &mut self.store;
        store.set_epoch_deadline(f.deadline_ticks);
        let len = input.len() as i32; // bounded by max_input_bytes (<= 16 MiB)
        let mut args = [ValRaw::i32(len)];
        // SAFETY: `alloc` has type (i32) -> i32 (checked at load for this
        // module); `args` holds its one parameter and has room for its one
        // result.
        unsafe { self.alloc.call_unchecked(&mut *store, &mut args) }
            .map_err(|e| classify(e, store.data(), f))?;
        let ptr = args[0].get_i32();
        let mem = self.memory.data_mut(&mut *store);
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
        unsafe { self.handle.call_unchecked(&mut *store, &mut args) }
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
        let mem = self.memory.data(&*store);
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
    /// Used instances released back to the pool.
    pub resets: Cell<u64>,
    /// Releases done on the request path because the used queue was full.
    pub inline_resets: Cell<u64>,
    /// Instances built (ring refills and misses).
    pub instantiations: Cell<u64>,
    pub instantiate_failures: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// A plain copy of [`RingStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
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
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
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

impl std::ops::AddAssign for StatsSnapshot {
    fn add_assign(&mut self, o: StatsSnapshot) {
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

/// Instance slots one ring can hold at once: `depth` ready, one in use,
/// up to `depth + 1` waiting for release. Size the pool with this.
pub fn slots_per_ring(depth: usize) -> usize {
    2 * depth + 2
}

/// The ring of one function on one shard.
pub struct Ring {
    func: Arc<LoadedFunction>,
    /// Ready, never-used instances; the request path pops the last one.
    ready: Vec<Arena>,
    /// Used instances waiting to be released to the pool.
    used: Vec<Arena>,
    pub stats: RingStats,
}

impl Ring {
    /// An empty ring; call [`Ring::fill`] (or let upkeep do it).
    pub fn new(func: Arc<LoadedFunction>) -> Ring {
        let depth = func.limits.ring_depth;
        Ring {
            func,
            ready: Vec::with_capacity(depth),
            used: Vec::with_capacity(depth + 1),
            stats: RingStats::default(),
        }
    }

    pub fn function(&self) -> &Arc<LoadedFunction> {
        &self.func
    }

    /// Ready instances now.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Used instances waiting for release.
    pub fn used_len(&self) -> usize {
        self.used.len()
    }

    fn build(&self) -> Result<Arena, String> {
        let r = Arena::new(&self.func);
        match &r {
            Ok(_) => bump(&self.stats.instantiations),
            Err(_) => bump(&self.stats.instantiate_failures),
        }
        r
    }

    /// Build instances until the ring is full; returns the first error.
    pub fn fill(&mut self) -> Result<(), String> {
        while self.ready.len() < self.func.limits.ring_depth {
            let a = self.build()?;
            self.ready.push(a);
        }
        Ok(())
    }

    /// The request path: run `input` through a never-used instance and
    /// append the output to `out`. The instance goes to the used queue
    /// whatever happens.
    pub fn invoke(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), InvokeError> {
        let stats = &self.stats;
        bump(&stats.invocations);
        if input.len() > self.func.limits.max_input_bytes {
            bump(&stats.rejected_inputs);
            return Err(InvokeError::InputTooLarge {
                len: input.len(),
                max: self.func.limits.max_input_bytes,
            });
        }
        let mut arena = match self.ready.pop() {
            Some(a) => a,
            None => {
                bump(&stats.ring_misses);
                if self.used.len() > self.func.limits.ring_depth {
                    self.release_one_inline();
                }
                self.build().map_err(InvokeError::Unavailable)?
            }
        };
        let r = arena.call(input, out, &self.func);
        let stats = &self.stats;
        match &r {
            Ok(()) => bump(&stats.ok),
            Err(InvokeError::Deadline { .. }) => bump(&stats.timeouts),
            Err(InvokeError::MemoryLimit { .. }) => bump(&stats.memory_limits),
            Err(InvokeError::Trap(_)) => bump(&stats.traps),
            Err(_) => bump(&stats.bad_outputs),
        }
        if self.used.len() > self.func.limits.ring_depth {
            self.release_one_inline();
        }
        self.used.push(arena);
        r
    }

    fn release_one_inline(&mut self) {
        if self.used.pop().is_some() {
            bump(&self.stats.resets);
            bump(&self.stats.inline_resets);
        }
    }

    /// Whether [`Ring::upkeep_step`] has anything to do.
    pub fn needs_upkeep(&self) -> bool {
        !self.used.is_empty() || self.ready.len() < self.func.limits.ring_depth
    }

    /// One unit of background work: release one used instance to the pool
    /// (its slot's memory is reset there) and build one fresh ready
    /// instance if the ring is short. Returns whether it did anything.
    pub fn upkeep_step(&mut self) -> bool {
        let mut did = false;
        if let Some(used) = self.used.pop() {
            drop(used);
            bump(&self.stats.resets);
            did = true;
        }
        if self.ready.len() < self.func.limits.ring_depth {
            match self.build() {
                Ok(a) => {
                    self.ready.push(a);
                    did = true;
                }
                Err(e) => {
                    tracing::warn!(function = %self.func.name, "cannot refill the arena ring: {e}");
                }
            }
        }
        did
    }
}
