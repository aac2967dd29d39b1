//! Per-invocation cost of a function, single thread, same 64-byte input
//! (`functions/checksum.wat`), all variants in one run, interleaved:
//!
//! (a) one reused instance: the floor, no isolation;
//! (b) new Store + instantiate per request, default (on-demand) allocator,
//!     exports looked up by name: what a naive host does;
//! (c) new Store + pooled instantiate per request (CoW, keep-resident);
//! (d) shardgate's arena ring at the default `ring_depth` (4): the request
//!     path alone (groups of 4 calls on a full ring, the timer's own cost
//!     subtracted, refills untimed) and the total with the release + refill
//!     each request causes (instances are built in batches sharing a store,
//!     so the total is the average over a batch); for comparison the same
//!     ring with one store per instance.
//!
//! Targets: (d) request path <= 150 ns and <= 2.5 x (a); (d) total <= 2.5 us.
//! Run: `cargo bench --bench functions`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardgate::config::functions::{FunctionSpec, FunctionsConfig, Limits};
use shardgate::functions::arena::Arena;
use shardgate::functions::{FunctionNode, LoadedFunction, Ring};
use wasmtime::{Config, Engine, Linker, Module, Store};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The default `ring_depth`: what a configuration that sets none runs.
const RING_DEPTH: usize = 4;
const ROUNDS: usize = 15;
const ROUND_TIME: Duration = Duration::from_millis(40);

fn input() -> Vec<u8> {
    (0..64u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect()
}

/// Run `f(iters)` (which returns the time it measured) until a round takes
/// about `ROUND_TIME`; returns ns per iteration.
fn round(iters: &mut u64, mut f: impl FnMut(u64) -> Duration) -> f64 {
    loop {
        let t = f(*iters);
        if t < ROUND_TIME / 4 {
            *iters *= 2;
            continue;
        }
        return t.as_nanos() as f64 / *iters as f64;
    }
}

struct Variant {
    name: &'static str,
    iters: u64,
    samples: Vec<f64>,
}

impl Variant {
    fn new(name: &'static str) -> Variant {
        Variant {
            name,
            iters: 64,
            samples: Vec::new(),
        }
    }
    fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        s[s.len() / 2]
    }
    fn min(&self) -> f64 {
        self.samples.iter().cloned().fold(f64::INFINITY, f64::min)
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs us in test
    // mode: do one short pass to check the code still works.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { ROUNDS };

    let module_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/checksum.wat");
    let cache = std::env::temp_dir().join(format!("shardgate-bench-fn-{}", std::process::id()));
    let settings = FunctionsConfig {
        cache_dir: cache.clone(),
        ..FunctionsConfig::default()
    };
    let limits = Limits {
        ring_depth: RING_DEPTH,
        ..Limits::default()
    };
    // Two names for the same module: the second runs a ring with one store
    // per instance, to show what batching instances per store buys.
    let spec = |name: &str| FunctionSpec {
        name: name.into(),
        module: module_path.clone(),
        limits,
    };
    let node = FunctionNode::start(&settings, vec![spec("checksum"), spec("checksum1")], 1)
        .expect("engine");
    assert!(node.failures().is_empty(), "{:?}", node.failures());
    let f: Arc<LoadedFunction> = node.function("checksum").unwrap().clone();
    let input = input();
    let mut out = Vec::with_capacity(64);

    // Expected output, and a check that every variant computes it.
    let mut expect = Vec::new();
    Arena::new(&f)
        .unwrap()
        .call(&input, &mut expect, &f)
        .unwrap();
    assert_eq!(expect.len(), 2);

    // (b) setup: default allocator, same compiler settings otherwise.
    let mut cfg = Config::new();
    cfg.epoch_interruption(true);
    let naive_engine = Engine::new(&cfg).unwrap();
    let naive_module = Module::from_file(&naive_engine, &module_path).unwrap();
    let naive_pre = Linker::<()>::new(&naive_engine)
        .instantiate_pre(&naive_module)
        .unwrap();
    let naive = |input: &[u8], out: &mut Vec<u8>| {
        let mut store = Store::new(&naive_engine, ());
        store.set_epoch_deadline(1_000);
        let inst = naive_pre.instantiate(&mut store).unwrap();
        let mem = inst.get_memory(&mut store, "memory").unwrap();
        let alloc = inst
            .get_typed_func::<i32, i32>(&mut store, "alloc")
            .unwrap();
        let handle = inst
            .get_typed_func::<(i32, i32), i64>(&mut store, "handle")
            .unwrap();
        let p = alloc.call(&mut store, input.len() as i32).unwrap();
        mem.write(&mut store, p as usize, input).unwrap();
        let r = handle.call(&mut store, (p, input.len() as i32)).unwrap() as u64;
        let (op, ol) = ((r >> 32) as usize, (r & 0xffff_ffff) as usize);
        out.extend_from_slice(&mem.data(&store)[op..op + ol]);
    };
    out.clear();
    naive(&input, &mut out);
    assert_eq!(out, expect);

    let timer = timer_overhead();
    let mut reused = Arena::new(&f).unwrap();
    let mut ring = Ring::new(f.clone());
    ring.fill().unwrap();
    let f1 = node.function("checksum1").unwrap().clone();
    let mut ring1 = Ring::with_batch_size(f1, 1);
    ring1.fill().unwrap();

    let mut a = Variant::new("(a) reused instance (no isolation)");
    let mut b = Variant::new("(b) new Store + instantiate, default allocator");
    let mut c = Variant::new("(c) new Store + pooled instantiate");
    let mut d_path = Variant::new("(d) arena ring: request path");
    let mut d_total = Variant::new("(d) arena ring: total with release + refill");
    let mut d1_total = Variant::new("    same, one store per instance (no batching)");

    for _ in 0..rounds {
        let s = round(&mut a.iters, |n| {
            let t = Instant::now();
            for _ in 0..n {
                out.clear();
                reused.call(black_box(&input), &mut out, &f).unwrap();
                black_box(&out);
            }
            t.elapsed()
        });
        a.samples.push(s);

        let s = round(&mut b.iters, |n| {
            let t = Instant::now();
            for _ in 0..n {
                out.clear();
                naive(black_box(&input), &mut out);
                black_box(&out);
            }
            t.elapsed()
        });
        b.samples.push(s);

        let s = round(&mut c.iters, |n| {
            let t = Instant::now();
            for _ in 0..n {
                out.clear();
                let mut arena = Arena::new(&f).unwrap();
                arena.call(black_box(&input), &mut out, &f).unwrap();
                black_box(&out);
            }
            t.elapsed()
        });
        c.samples.push(s);

        // Request path alone: time RING_DEPTH invocations on a full ring
        // (less the timer's own cost), then release and refill untimed.
        let s = round(&mut d_path.iters, |n| {
            let mut timed = Duration::ZERO;
            let mut done = 0;
            while done < n {
                let batch = (n - done).min(RING_DEPTH as u64);
                let t = Instant::now();
                for _ in 0..batch {
                    out.clear();
                    ring.invoke(black_box(&input), &mut out).unwrap();
                    black_box(&out);
                }
                timed += t.elapsed().saturating_sub(timer);
                done += batch;
                while ring.upkeep_step() {}
            }
            timed
        });
        d_path.samples.push(s);

        // Total: each request plus the upkeep it causes (releasing used-up
        // batches, building replacements), run to completion each time.
        let s = round(&mut d_total.iters, |n| {
            let t = Instant::now();
            for _ in 0..n {
                out.clear();
                ring.invoke(black_box(&input), &mut out).unwrap();
                black_box(&out);
                while ring.upkeep_step() {}
            }
            t.elapsed()
        });
        d_total.samples.push(s);

        let s = round(&mut d1_total.iters, |n| {
            let t = Instant::now();
            for _ in 0..n {
                out.clear();
                ring1.invoke(black_box(&input), &mut out).unwrap();
                black_box(&out);
                while ring1.upkeep_step() {}
            }
            t.elapsed()
        });
        d1_total.samples.push(s);
    }
    assert_eq!(out, expect);
    let st = ring.stats.snapshot();
    assert_eq!(
        st.ring_misses, 0,
        "the request path measurement must not miss: {st:?}"
    );
    let _ = std::fs::remove_dir_all(&cache);

    println!(
        "timer overhead subtracted per group of {RING_DEPTH} request-path calls: {} ns",
        timer.as_nanos()
    );
    println!(
        "function invocation, 64-byte input, checksum.wat, single thread, {rounds} interleaved rounds (median / min ns per invocation):"
    );
    for v in [&a, &b, &c, &d_path, &d_total, &d1_total] {
        println!("  {:<50} {:>9.1} / {:>9.1}", v.name, v.median(), v.min());
    }
    let (am, bm, cm, pm, tm) = (
        a.median(),
        b.median(),
        c.median(),
        d_path.median(),
        d_total.median(),
    );
    println!("ratios (medians):");
    println!(
        "  (d) request path / (a) = {:.2}x   (target <= 2.5x)",
        pm / am
    );
    println!(
        "  (b) / (d) request path = {:.0}x   (b) / (d) total = {:.1}x",
        bm / pm,
        bm / tm
    );
    println!(
        "  (c) / (d) request path = {:.0}x   (c) / (d) total = {:.2}x",
        cm / pm,
        cm / tm
    );
    println!(
        "  (d) total / one store per instance = {:.2}x",
        tm / d1_total.median()
    );
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("targets:");
    println!(
        "  request path <= 150 ns: {:.1} ns, {}",
        pm,
        verdict(pm <= 150.0)
    );
    println!(
        "  request path <= 2.5 x (a): {:.2}x, {}",
        pm / am,
        verdict(pm <= 2.5 * am)
    );
    println!("  total <= 2.5 us: {:.0} ns, {}", tm, verdict(tm <= 2500.0));
}

/// What an `Instant::now()` .. `elapsed()` pair adds to the interval it
/// measures (best of 5 averages over 100,000 empty intervals).
fn timer_overhead() -> Duration {
    let n = 100_000u32;
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let mut sum = Duration::ZERO;
        for _ in 0..n {
            let t = Instant::now();
            sum += black_box(t.elapsed());
        }
        best = best.min(sum / n);
    }
    best
}
