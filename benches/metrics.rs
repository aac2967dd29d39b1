//! What metrics add to the DNS answer path, in-process and single-threaded
//! (benchmark, not a test): the shard's per-query work without metrics
//! (answer + the runtime's counters) against the same with metrics (two
//! clock reads and one latency record per batch of 32, a view hit per
//! query), in interleaved blocks so that other load on the machine hits both
//! alike. Reports ns per query for
//! each, the difference, and the ratio of throughputs.
//!
//!     cargo bench --bench metrics
//!
//! The end-to-end figure (queries per server core-second, sockets and kernel
//! included) is `scripts/bench-metrics.sh`; this one isolates the user-space
//! cost that the metrics add.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use domain::base::{MessageBuilder, Name, Rtype};
use shardgate::addrmap::AddressMap;
use shardgate::dns::{self, Transport};
use shardgate::metrics::Registry;
use shardgate::shard::meter::ShardMetrics;
use shardgate::shard::stats::ShardStats;

const BATCH: usize = 32;
const BLOCK_BATCHES: usize = 500;
const BLOCKS: usize = 60;

fn query(name: &str, rtype: Rtype, id: u16) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(id);
    b.header_mut().set_rd(true);
    let mut q = b.question();
    let name: Name<Vec<u8>> = name.parse().unwrap();
    q.push((name, rtype)).unwrap();
    q.into_message().into_octets()
}

/// One block of `BLOCK_BATCHES` batches of `BATCH` queries; ns per query.
fn block(
    map: &AddressMap,
    work: &[(Vec<u8>, IpAddr)],
    stats: &ShardStats,
    metrics: Option<&ShardMetrics>,
) -> f64 {
    let mut out = Vec::with_capacity(512);
    let t = Instant::now();
    for b in 0..BLOCK_BATCHES {
        if let Some(m) = metrics {
            m.begin_batch();
        }
        for i in 0..BATCH {
            let (q, from) = &work[(b * BATCH + i) % work.len()];
            let (outcome, seen) =
                dns::answer_with_client_view(map, black_box(q), *from, Transport::Udp, &mut out);
            if let Some(m) = metrics {
                m.answered_in_batch();
                m.count_view(map, *from, outcome, seen);
            }
            stats.record(Transport::Udp, outcome);
            black_box(&out);
        }
        if let Some(m) = metrics {
            m.end_batch();
        }
    }
    t.elapsed().as_nanos() as f64 / (BLOCK_BATCHES * BATCH) as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let views = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/views.toml");
    let loaded =
        shardgate::addrmap::load_file(&views).unwrap_or_else(|p| panic!("{views:?}: {p:?}"));
    let map = loaded.map;
    let sources: Vec<IpAddr> = ["127.0.0.5", "127.0.0.133", "127.0.1.1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let names = [
        ("upf.svc.example.", Rtype::A),
        ("upf.svc.example.", Rtype::AAAA),
        ("_pfcp._udp.svc.example.", Rtype::SRV),
        ("site.svc.example.", Rtype::TXT),
        ("nx.svc.example.", Rtype::A),
    ];
    let mut work = Vec::new();
    for (i, (n, t)) in names.iter().enumerate() {
        for (j, s) in sources.iter().enumerate() {
            work.push((query(n, *t, (i * 7 + j) as u16), *s));
        }
    }

    let (registry, recorder) = Registry::local(true);
    let metrics = metrics::with_local_recorder(&recorder, || {
        ShardMetrics::register_with(Some(&registry), 0)
    });
    metrics.set_views(map.views().iter().map(|v| v.name.as_str()));
    let stats = ShardStats::default();

    // Warm up both paths.
    block(&map, &work, &stats, None);
    block(&map, &work, &stats, Some(&metrics));
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for i in 0..BLOCKS {
        if i % 2 == 0 {
            off.push(block(&map, &work, &stats, None));
            on.push(block(&map, &work, &stats, Some(&metrics)));
        } else {
            on.push(block(&map, &work, &stats, Some(&metrics)));
            off.push(block(&map, &work, &stats, None));
        }
    }
    let (off, on) = (median(&mut off), median(&mut on));
    println!(
        "DNS answer path, one thread, {BLOCKS} interleaved blocks of {} queries each (medians)",
        BLOCK_BATCHES * BATCH
    );
    println!("  metrics disabled: {off:7.1} ns/query");
    println!("  metrics enabled:  {on:7.1} ns/query  (+{:.1} ns: batch timestamps and latency record per batch, view hit per query)", on - off);
    println!("  throughput ratio enabled/disabled: {:.3}", off / on);
    // Sanity: the enabled path did record what it timed.
    metrics.publish_latency();
    let text = registry.render();
    assert!(
        text.contains("shardgate_request_duration_seconds_count{shard=\"0\",protocol=\"dns-udp\"}")
    );
}
