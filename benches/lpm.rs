//! LPM benchmark: lookup cost of shardgate's range-table LPM at 1,000,000
//! IPv4 prefixes (and 200,000 IPv6), next to the `prefix-trie` crate on the
//! same prefixes and queries, plus a linear-scan baseline on 1,000 prefixes;
//! build times are printed. Every group does BATCH lookups per iteration, so
//! divide the reported time by 4096 (or read the Melem/s throughput).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prefix_trie::PrefixMap;
use shardgate::addrmap::lpm::{mask_v4, mask_v6, Table};

/// splitmix64: deterministic, dependency-free random numbers.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Instance-map-like mix: half exact /32 entries, 30% /24, the rest /8../31.
fn v4_prefixes(rng: &mut Rng, n: usize) -> Vec<(u32, u8)> {
    (0..n)
        .map(|_| {
            let r = rng.next();
            let len = match r % 10 {
                0..=4 => 32,
                5..=7 => 24,
                _ => 8 + ((r >> 8) % 24) as u8,
            };
            (mask_v4((r >> 32) as u32, len), len)
        })
        .collect()
}

fn v6_prefixes(rng: &mut Rng, n: usize) -> Vec<(u128, u8)> {
    (0..n)
        .map(|_| {
            let r = rng.next();
            let len = match r % 10 {
                0..=4 => 128,
                5..=7 => 64,
                _ => 16 + ((r >> 8) % 112) as u8,
            };
            let a = ((rng.next() as u128) << 64) | rng.next() as u128;
            // keep them under fd00::/8 so lookups have something to find
            let a = (a & !(0xffu128 << 120)) | (0xfdu128 << 120);
            (mask_v6(a, len), len)
        })
        .collect()
}

/// Addresses to look up: half inside stored prefixes, half uniformly random.
fn v4_queries(rng: &mut Rng, prefixes: &[(u32, u8)], n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| {
            let r = rng.next();
            if i % 2 == 0 {
                let (a, len) = prefixes[(r as usize) % prefixes.len()];
                let host = if len == 32 {
                    0
                } else {
                    (r >> 32) as u32 & (u32::MAX >> len)
                };
                a | host
            } else {
                (r >> 16) as u32
            }
        })
        .collect()
}

fn v6_queries(rng: &mut Rng, prefixes: &[(u128, u8)], n: usize) -> Vec<u128> {
    (0..n)
        .map(|i| {
            let r = ((rng.next() as u128) << 64) | rng.next() as u128;
            if i % 2 == 0 {
                let (a, len) = prefixes[(r as usize) % prefixes.len()];
                let host = if len == 128 {
                    0
                } else {
                    r & (u128::MAX >> len)
                };
                a | host
            } else {
                (r & !(0xffu128 << 120)) | (0xfdu128 << 120)
            }
        })
        .collect()
}

fn build_v4(prefixes: &[(u32, u8)]) -> Table<u32> {
    Table::build(
        prefixes
            .iter()
            .enumerate()
            .map(|(i, &(a, l))| (a, l, i as u32 & 0xffff))
            .collect(),
    )
}

fn trie_v4(prefixes: &[(u32, u8)]) -> PrefixMap<(u32, u8), u32> {
    let mut m = PrefixMap::new();
    for (i, &(a, l)) in prefixes.iter().enumerate() {
        m.entry((a, l)).or_insert(i as u32 & 0xffff);
    }
    m
}

fn linear_v4(prefixes: &[(u32, u8)], addr: u32) -> Option<(u8, u32)> {
    let mut best: Option<(u8, u32)> = None;
    for (i, &(a, l)) in prefixes.iter().enumerate() {
        if mask_v4(addr, l) == a && best.is_none_or(|(bl, _)| l > bl) {
            best = Some((l, i as u32));
        }
    }
    best
}

const BATCH: usize = 4096;

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    eprintln!("lpm: {what}: {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    r
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(0x5eed);
    let p4 = v4_prefixes(&mut rng, 1_000_000);
    let lpm = timed("build range table, 1M IPv4 prefixes", || build_v4(&p4));
    let trie = timed("build prefix-trie, 1M IPv4 prefixes", || trie_v4(&p4));
    eprintln!(
        "lpm: {} distinct prefixes -> {} ranges, {} MiB (prefix-trie {} MiB)",
        lpm.len(),
        lpm.ranges(),
        lpm.mem_size() >> 20,
        trie.mem_size() >> 20
    );
    let q4 = v4_queries(&mut rng, &p4, BATCH);
    // Same answers, or the comparison is meaningless.
    for &a in &q4 {
        let want = trie.get_lpm(&(a, 32)).map(|((_, l), v)| (l, *v));
        assert_eq!(lpm.lookup(a).map(|m| (m.len, m.value)), want);
    }

    let mut g = c.benchmark_group("lpm");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("v4_1M/range_table", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &a in &q4 {
                if let Some(m) = lpm.lookup(black_box(a)) {
                    acc = acc.wrapping_add(m.value ^ m.len as u32);
                }
            }
            acc
        })
    });
    g.bench_function("v4_1M/prefix_trie", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &a in &q4 {
                if let Some(((_, l), v)) = trie.get_lpm(&(black_box(a), 32)) {
                    acc = acc.wrapping_add(*v ^ l as u32);
                }
            }
            acc
        })
    });
    drop(trie);

    let p6 = v6_prefixes(&mut rng, 200_000);
    let e6: Vec<(u128, u8, u32)> = p6
        .iter()
        .enumerate()
        .map(|(i, &(a, l))| (a, l, i as u32 & 0xffff))
        .collect();
    let lpm6 = timed("build range table, 200k IPv6 prefixes", || {
        Table::<u128>::build(e6.clone())
    });
    let mut trie6: PrefixMap<(u128, u8), u32> = PrefixMap::new();
    for &(a, l, v) in &e6 {
        trie6.entry((a, l)).or_insert(v);
    }
    let q6 = v6_queries(&mut rng, &p6, BATCH);
    for &a in &q6 {
        let want = trie6.get_lpm(&(a, 128)).map(|((_, l), v)| (l, *v));
        assert_eq!(lpm6.lookup(a).map(|m| (m.len, m.value)), want);
    }
    g.bench_function("v6_200k/range_table", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &a in &q6 {
                if let Some(m) = lpm6.lookup(black_box(a)) {
                    acc = acc.wrapping_add(m.value ^ m.len as u32);
                }
            }
            acc
        })
    });
    g.bench_function("v6_200k/prefix_trie", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &a in &q6 {
                if let Some(((_, l), v)) = trie6.get_lpm(&(black_box(a), 128)) {
                    acc = acc.wrapping_add(*v ^ l as u32);
                }
            }
            acc
        })
    });

    // Baseline on a table small enough for a linear scan to be measurable.
    let small = &p4[..1000];
    let small_lpm = build_v4(small);
    let qs = v4_queries(&mut rng, small, BATCH);
    g.bench_function("v4_1k/range_table", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &a in &qs {
                if let Some(m) = small_lpm.lookup(black_box(a)) {
                    acc = acc.wrapping_add(m.value ^ m.len as u32);
                }
            }
            acc
        })
    });
    g.bench_function("v4_1k/linear_scan", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &a in &qs {
                if let Some((l, v)) = linear_v4(small, black_box(a)) {
                    acc = acc.wrapping_add(v ^ l as u32);
                }
            }
            acc
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
