//! LPM benchmark: lookup cost at 1,000,000 prefixes (IPv4, plus IPv6), build
//! time, and a linear-scan baseline ratio on a smaller table, same run.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate::addrmap::lpm::{mask_v4, mask_v6, Lpm};

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
                let host = if len == 32 { 0 } else { (r >> 32) as u32 & (u32::MAX >> len) };
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
                let host = if len == 128 { 0 } else { r & (u128::MAX >> len) };
                a | host
            } else {
                (r & !(0xffu128 << 120)) | (0xfdu128 << 120)
            }
        })
        .collect()
}

fn build_v4(prefixes: &[(u32, u8)]) -> Lpm {
    let mut lpm = Lpm::new();
    for (i, &(a, l)) in prefixes.iter().enumerate() {
        lpm.insert_v4(a, l, i as u32);
    }
    lpm
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

fn bench(c: &mut Criterion) {
    let mut rng = Rng(0x5eed);
    let p4 = v4_prefixes(&mut rng, 1_000_000);
    let t = Instant::now();
    let lpm = build_v4(&p4);
    let build = t.elapsed();
    eprintln!(
        "lpm: built {} IPv4 prefixes ({} distinct) in {:.0} ms, ~{} MiB",
        p4.len(),
        lpm.len_v4(),
        build.as_secs_f64() * 1e3,
        lpm.mem_size() >> 20
    );
    let q4 = v4_queries(&mut rng, &p4, BATCH);

    let mut g = c.benchmark_group("lpm");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("v4_lookup_1M_prefixes", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &a in &q4 {
                if let Some((l, v)) = lpm.lookup_v4(black_box(a), 32) {
                    acc = acc.wrapping_add(v ^ l as u32);
                }
            }
            acc
        })
    });

    let mut lpm6 = Lpm::new();
    let p6 = v6_prefixes(&mut rng, 200_000);
    for (i, &(a, l)) in p6.iter().enumerate() {
        lpm6.insert_v6(a, l, i as u32);
    }
    let q6 = v6_queries(&mut rng, &p6, BATCH);
    g.bench_function("v6_lookup_200k_prefixes", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &a in &q6 {
                if let Some((l, v)) = lpm6.lookup_v6(black_box(a), 128) {
                    acc = acc.wrapping_add(v ^ l as u32);
                }
            }
            acc
        })
    });

    // Baseline on a table small enough for a linear scan to be measurable.
    let small = &p4[..1000];
    let small_lpm = build_v4(small);
    let qs = v4_queries(&mut rng, small, BATCH);
    g.bench_function("v4_lookup_1k_prefixes", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &a in &qs {
                if let Some((l, v)) = small_lpm.lookup_v4(black_box(a), 32) {
                    acc = acc.wrapping_add(v ^ l as u32);
                }
            }
            acc
        })
    });
    g.bench_function("v4_linear_scan_1k_prefixes", |b| {
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
