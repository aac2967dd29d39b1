//! The function runtime without sockets: example functions compute the
//! right thing, every invocation sees pristine state (also after each
//! failure mode), failures are specific, config and module errors are
//! reported by name while the other functions run, and the artifact cache
//! makes a restart skip compilation.

mod support;
use support::repo;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shardgate::config::functions::{FunctionSpec, FunctionsConfig, Limits};
use shardgate::functions::{ArtifactSource, FunctionNode, FunctionShard, InvokeError, Status};

fn settings(cache: &Path) -> FunctionsConfig {
    FunctionsConfig {
        cache_dir: cache.to_path_buf(),
        ..FunctionsConfig::default()
    }
}

fn spec(name: &str, module: PathBuf) -> FunctionSpec {
    FunctionSpec {
        name: name.into(),
        module,
        limits: Limits::default(),
    }
}

fn probe_spec() -> FunctionSpec {
    let mut s = spec("probe", repo("tests/functions_fixtures/probe.wat"));
    s.limits.deadline_ms = 50;
    s.limits.ring_depth = 3;
    s
}

const PRISTINE: [u32; 4] = [0, 0x3056_4753, 1, 7];

fn report(out: &[u8]) -> [u32; 4] {
    assert!(out.len() >= 16, "short probe output: {out:?}");
    let w = |i: usize| u32::from_le_bytes(out[i * 4..i * 4 + 4].try_into().unwrap());
    [w(0), w(1), w(2), w(3)]
}

fn call(shard: &FunctionShard, name: &str, input: &[u8]) -> Result<Vec<u8>, InvokeError> {
    let mut out = Vec::new();
    shard.invoke(name.as_bytes(), input, &mut out).map(|()| out)
}

#[test]
fn examples_compute_the_right_thing() {
    let cache = tempfile::tempdir().unwrap();
    let node = FunctionNode::start(
        &settings(cache.path()),
        vec![
            spec("checksum", repo("functions/checksum.wat")),
            spec("classify", repo("functions/classify.wat")),
            spec("header_rewrite", repo("functions/header_rewrite.wat")),
        ],
        1,
    )
    .unwrap();
    assert!(node.failures().is_empty(), "{:?}", node.failures());
    let shard = FunctionShard::new(&node);

    // RFC 1071 section 3 example: sum 0xddf2, checksum 0x220d.
    let rfc = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(call(&shard, "checksum", &rfc).unwrap(), [0x22, 0x0d]);
    // A real IPv4 header (checksum 0xb861) sums to zero with its checksum...
    let mut ip = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    assert_eq!(call(&shard, "checksum", &ip).unwrap(), [0, 0]);
    // ... and yields it with the field zeroed.
    ip[10] = 0;
    ip[11] = 0;
    assert_eq!(call(&shard, "checksum", &ip).unwrap(), [0xb8, 0x61]);
    // Odd lengths and every tail length agree with a plain reference.
    for len in 0..67 {
        let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        assert_eq!(
            call(&shard, "checksum", &data).unwrap(),
            reference_checksum(&data),
            "len {len}"
        );
    }

    let udp_dns = packet_v4(17, 53);
    assert_eq!(call(&shard, "classify", &udp_dns).unwrap(), b"ipv4/udp/dns");
    assert_eq!(
        call(&shard, "classify", &packet_v4(6, 443)).unwrap(),
        b"ipv4/tcp/https"
    );
    assert_eq!(
        call(&shard, "classify", &packet_v4(17, 443)).unwrap(),
        b"ipv4/udp/quic"
    );
    assert_eq!(
        call(&shard, "classify", &packet_v4(6, 8080)).unwrap(),
        b"ipv4/tcp/other"
    );
    assert_eq!(
        call(&shard, "classify", &packet_v4(1, 0)).unwrap(),
        b"ipv4/icmp/-"
    );
    assert_eq!(
        call(&shard, "classify", &packet_v4(47, 0)).unwrap(),
        b"ipv4/other/-"
    );
    assert_eq!(
        call(&shard, "classify", &packet_v6(6, 80)).unwrap(),
        b"ipv6/tcp/http"
    );
    assert_eq!(
        call(&shard, "classify", &packet_v6(58, 0)).unwrap(),
        b"ipv6/icmp/-"
    );
    assert_eq!(
        call(&shard, "classify", &udp_dns[..22]).unwrap(),
        b"invalid"
    );
    assert_eq!(call(&shard, "classify", b"").unwrap(), b"invalid");
    assert_eq!(call(&shard, "classify", &[0x55; 40]).unwrap(), b"invalid");

    let req = b"GET /x HTTP/1.1\r\nHost: Example.COM\r\nX-Trace-ID: AbC\r\n\r\nBODY: Keep";
    assert_eq!(
        call(&shard, "header_rewrite", req).unwrap(),
        b"GET /x HTTP/1.1\r\nVia: 1.1 shardgate\r\nhost: Example.COM\r\nx-trace-id: AbC\r\n\r\nBODY: Keep".to_vec()
    );
    assert_eq!(
        call(&shard, "header_rewrite", b"no line break").unwrap(),
        b"no line break"
    );
}

fn reference_checksum(data: &[u8]) -> [u8; 2] {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = (u32::from(chunk[0]) << 8) | chunk.get(1).map_or(0, |&b| u32::from(b));
        sum += word;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

fn packet_v4(proto: u8, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[8] = 64;
    p[9] = proto;
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p
}

fn packet_v6(next: u8, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x60;
    p[6] = next;
    p[42..44].copy_from_slice(&dport.to_be_bytes());
    p
}

#[test]
fn c_example_decrements_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("ttl_decrement.wasm");
    let built = std::process::Command::new("clang")
        .args([
            "--target=wasm32",
            "-nostdlib",
            "-O2",
            "-Wl,--no-entry",
            "-Wl,--strip-all",
            "-o",
        ])
        .arg(&wasm)
        .arg(repo("functions/c/ttl_decrement.c"))
        .status();
    if !matches!(built, Ok(s) if s.success()) {
        eprintln!(
            "clang with the wasm32 target and wasm-ld are not installed: C example not checked"
        );
        return;
    }
    let node = FunctionNode::start(&settings(dir.path()), vec![spec("ttl", wasm)], 1).unwrap();
    assert!(node.failures().is_empty(), "{:?}", node.failures());
    let shard = FunctionShard::new(&node);
    let ip = [
        0x45u8, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7, 0xaa, 0xbb,
    ];
    let out = call(&shard, "ttl", &ip).unwrap();
    assert_eq!(out.len(), ip.len());
    assert_eq!(out[8], 0x3f);
    // The patched checksum is what a full recomputation gives.
    let mut zeroed = out[..20].to_vec();
    zeroed[10] = 0;
    zeroed[11] = 0;
    assert_eq!(out[10..12], reference_checksum(&zeroed));
    assert_eq!(out[20..], ip[20..]);
    let mut expired = ip;
    expired[8] = 1;
    assert_eq!(call(&shard, "ttl", &expired).unwrap(), b"");
    assert_eq!(call(&shard, "ttl", b"short").unwrap(), b"");
}

#[test]
fn every_invocation_is_pristine_across_failures() {
    let cache = tempfile::tempdir().unwrap();
    let node = FunctionNode::start(&settings(cache.path()), vec![probe_spec()], 1).unwrap();
    assert!(node.failures().is_empty(), "{:?}", node.failures());
    let shard = FunctionShard::new(&node);
    let ok = |shard: &FunctionShard| report(&call(shard, "probe", b"o").unwrap());

    for i in 0..10_000 {
        assert_eq!(ok(&shard), PRISTINE, "invocation {i}");
        if i % 4 == 3 {
            // Background upkeep only every fourth call (the ring holds
            // three): ring misses and refills interleave with requests.
            shard.upkeep_now();
        }
    }
    let failures: [(&[u8], Status); 6] = [
        (b"t", Status::Trap),
        (b"l", Status::Deadline),
        (b"g", Status::MemoryLimit),
        (b"p", Status::BadOutput),
        (b"b", Status::OutputTooLarge),
        (&[b'o'; 70_000], Status::InputTooLarge),
    ];
    for (input, want) in failures {
        let err = call(&shard, "probe", input).unwrap_err();
        assert_eq!(err.status(), want, "{err}");
        assert_eq!(ok(&shard), PRISTINE, "after {want:?}");
        assert_eq!(ok(&shard), PRISTINE, "after {want:?}, twice");
        shard.upkeep_now();
    }
    assert_eq!(call(&shard, "probe", b"eXY").unwrap()[16..], *b"eXY");
    assert_eq!(
        call(&shard, "nope", b"").unwrap_err(),
        InvokeError::NotFound
    );
    shard.upkeep_now();

    let t = shard.totals();
    assert_eq!(t.invocations, 10_000 + 6 + 12 + 1);
    assert_eq!(
        (t.traps, t.timeouts, t.memory_limits, t.bad_outputs),
        (1, 1, 1, 2)
    );
    assert_eq!(t.rejected_inputs, 1);
    assert!(
        t.ring_misses >= 2_500,
        "misses: upkeep ran every fourth call: {t:?}"
    );
    // Every instance that ran was built for it; all but those of the batch
    // still in use (3 instances per batch at ring_depth 3) were released.
    let used_instances = t.invocations - t.rejected_inputs;
    assert!(t.instantiations >= used_instances, "{t:?}");
    assert!(
        t.resets <= used_instances && t.resets + 3 > used_instances,
        "{t:?}"
    );
}

#[test]
fn deadline_is_enforced_near_its_value() {
    let cache = tempfile::tempdir().unwrap();
    let mut s = probe_spec();
    s.limits.deadline_ms = 30;
    let node = FunctionNode::start(&settings(cache.path()), vec![s], 1).unwrap();
    let shard = FunctionShard::new(&node);
    let t0 = std::time::Instant::now();
    let err = call(&shard, "probe", b"l").unwrap_err();
    let took = t0.elapsed();
    assert_eq!(err, InvokeError::Deadline { ms: 30 });
    assert!(
        took >= std::time::Duration::from_millis(30),
        "stopped early: {took:?}"
    );
    assert!(
        took < std::time::Duration::from_millis(1000),
        "stopped late: {took:?}"
    );
}

#[test]
fn bad_modules_are_reported_by_name_and_the_rest_run() {
    let dir = tempfile::tempdir().unwrap();
    let invalid = dir.path().join("invalid.wasm");
    std::fs::write(&invalid, b"\0asm\x01\0\0\0garbage").unwrap();
    let bad_wat = dir.path().join("bad.wat");
    std::fs::write(
        &bad_wat,
        "(module (func (export \"handle\") (result i32) (i64.const 1)))",
    )
    .unwrap();
    let no_abi = dir.path().join("no_abi.wat");
    std::fs::write(&no_abi, "(module (memory (export \"memory\") 1))").unwrap();
    let imports = dir.path().join("imports.wat");
    std::fs::write(
        &imports,
        "(module (import \"env\" \"f\" (func)) (memory (export \"memory\") 1))",
    )
    .unwrap();
    let wrong_sig = dir.path().join("wrong_sig.wat");
    std::fs::write(
        &wrong_sig,
        "(module (memory (export \"memory\") 1) (func (export \"alloc\") (param i32) (result i32) i32.const 0)
           (func (export \"handle\") (param i32 i32) (result i32) i32.const 0))",
    )
    .unwrap();
    let too_big = dir.path().join("too_big.wat");
    std::fs::write(
        &too_big,
        "(module (memory (export \"memory\") 32) (func (export \"alloc\") (param i32) (result i32) i32.const 0)
           (func (export \"handle\") (param i32 i32) (result i64) i64.const 0))",
    )
    .unwrap();
    let traps_at_start = dir.path().join("start.wat");
    std::fs::write(
        &traps_at_start,
        "(module (memory (export \"memory\") 1) (func $s unreachable) (start $s)
           (func (export \"alloc\") (param i32) (result i32) i32.const 0)
           (func (export \"handle\") (param i32 i32) (result i64) i64.const 0))",
    )
    .unwrap();
    let specs = vec![
        spec("missing", dir.path().join("missing.wat")),
        spec("invalid", invalid),
        spec("bad_wat", bad_wat),
        spec("no_abi", no_abi),
        spec("imports", imports),
        spec("wrong_sig", wrong_sig),
        spec("too_big", too_big),
        spec("start_traps", traps_at_start),
        probe_spec(),
    ];
    let node = FunctionNode::start(&settings(dir.path()), specs, 2).unwrap();
    let reasons: Vec<(&str, &str)> = node
        .failures()
        .iter()
        .map(|f| (f.name.as_str(), f.reason.as_str()))
        .collect();
    let reason = |name: &str| {
        reasons
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} not reported: {reasons:?}"))
            .1
    };
    assert_eq!(reasons.len(), 8, "{reasons:?}");
    assert!(
        reason("missing").contains("cannot read module"),
        "{}",
        reason("missing")
    );
    assert!(
        reason("invalid").contains("invalid module"),
        "{}",
        reason("invalid")
    );
    assert!(
        reason("bad_wat").contains("invalid module"),
        "{}",
        reason("bad_wat")
    );
    assert!(
        reason("no_abi").contains("does not export `alloc`"),
        "{}",
        reason("no_abi")
    );
    assert!(
        reason("imports").contains("imports env::f"),
        "{}",
        reason("imports")
    );
    assert!(
        reason("wrong_sig").contains("`handle` has the wrong type"),
        "{}",
        reason("wrong_sig")
    );
    assert!(
        reason("too_big").contains("max_memory_kib"),
        "{}",
        reason("too_big")
    );
    assert!(
        reason("start_traps").contains("cannot instantiate"),
        "{}",
        reason("start_traps")
    );

    // The good one runs; a failed one answers Unavailable with its reason.
    let shard = FunctionShard::new(&node);
    assert_eq!(report(&call(&shard, "probe", b"o").unwrap()), PRISTINE);
    match call(&shard, "invalid", b"") {
        Err(InvokeError::Unavailable(why)) => assert!(why.contains("invalid module"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn restart_loads_from_the_cache_instead_of_compiling() {
    let cache = tempfile::tempdir().unwrap();
    let specs = || {
        vec![
            probe_spec(),
            spec("checksum", repo("functions/checksum.wat")),
        ]
    };
    let first = FunctionNode::start(&settings(cache.path()), specs(), 1).unwrap();
    assert!(first
        .functions()
        .iter()
        .all(|f| f.source == ArtifactSource::Compiled));
    drop(first);
    let second = FunctionNode::start(&settings(cache.path()), specs(), 1).unwrap();
    assert!(second
        .functions()
        .iter()
        .all(|f| f.source == ArtifactSource::Cache));
    assert_eq!(
        report(&call(&FunctionShard::new(&second), "probe", b"o").unwrap()),
        PRISTINE
    );
    drop(second);

    // A torn or corrupted entry is detected and recompiled.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let third = FunctionNode::start(&settings(cache.path()), specs(), 1).unwrap();
    assert!(third.failures().is_empty());
    assert!(third
        .functions()
        .iter()
        .all(|f| f.source == ArtifactSource::Compiled));
    assert_eq!(
        report(&call(&FunctionShard::new(&third), "probe", b"o").unwrap()),
        PRISTINE
    );

    // Another engine configuration (keep-resident size) does not share entries.
    let mut other = settings(cache.path());
    other.keep_resident_kib = 128;
    let fourth = FunctionNode::start(&other, specs(), 1).unwrap();
    let fourth_sources: Vec<ArtifactSource> = fourth.functions().iter().map(|f| f.source).collect();
    // The keep-resident size is a runtime setting, not a compile setting:
    // the artifact is compatible and reused.
    assert!(
        fourth_sources.iter().all(|s| *s == ArtifactSource::Cache),
        "{fourth_sources:?}"
    );
}

#[test]
fn config_limits_out_of_range_are_reported_with_their_keys() {
    let text = r#"
[functions]
epoch_tick_ms = 0
[functions.defaults]
deadline_ms = 0
ring_depth = 65

[[function]]
name = "a"
module = "functions/checksum.wat"
max_memory_kib = 16
max_output_bytes = 0

[[function]]
name = "a"
module = "functions/checksum.txt"

[[function]]
name = "bad/name"
module = "x.wat"
"#;
    let problems = match shardgate::addrmap::load(text, Path::new(env!("CARGO_MANIFEST_DIR"))) {
        Ok(_) => panic!("invalid limits accepted"),
        Err(p) => p,
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for want in [
        "functions.epoch_tick_ms",
        "functions.defaults.deadline_ms",
        "functions.defaults.ring_depth",
        "function[0].max_memory_kib",
        "function[0].max_output_bytes",
        "function[1].name",
        "function[1].module",
        "function[2].name",
    ] {
        assert!(keys.contains(&want), "{want} not reported: {problems:#?}");
    }
    // Problems carry lines from the file.
    let p = problems
        .iter()
        .find(|p| p.key == "function[0].max_memory_kib")
        .unwrap();
    assert_eq!(p.line, Some(11), "{p:?}");
    assert!(p.message.contains("out of range"), "{}", p.message);
}

#[test]
fn functions_dir_and_entries_merge() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("functions/checksum.wat"),
        dir.path().join("checksum.wat"),
    )
    .unwrap();
    std::fs::copy(
        repo("functions/classify.wat"),
        dir.path().join("classify.wat"),
    )
    .unwrap();
    std::fs::write(dir.path().join("README.txt"), "not a module").unwrap();
    let cfg = FunctionsConfig {
        dir: Some(dir.path().to_path_buf()),
        cache_dir: PathBuf::new(),
        ..FunctionsConfig::default()
    };
    let entries = vec![shardgate::functions::FunctionConfig {
        name: "classify".into(),
        module: repo("functions/classify.wat"),
        max_memory_kib: None,
        deadline_ms: Some(5),
        max_input_bytes: None,
        max_output_bytes: None,
        ring_depth: Some(2),
    }];
    let (specs, errors) = cfg.specs(&entries, Path::new("/"));
    assert!(errors.is_empty(), "{errors:?}");
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["checksum", "classify"]);
    assert_eq!(specs[1].limits.deadline_ms, 5);
    assert_eq!(specs[1].limits.ring_depth, 2);
    assert_eq!(specs[0].limits, Limits::default());
    // With the cache disabled, both still load.
    let node = FunctionNode::start(&cfg, specs, 1).unwrap();
    assert_eq!(node.functions().len(), 2);
    let _: &Arc<_> = node.function("classify").unwrap();
}

#[test]
fn ring_swaps_batches_and_stays_within_its_pool_slots() {
    let cache = tempfile::tempdir().unwrap();
    let mut s = probe_spec();
    s.limits.ring_depth = 4;
    // The pool holds exactly what one shard's ring may use.
    let node = FunctionNode::start(&settings(cache.path()), vec![s], 1).unwrap();
    let f = node.function("probe").unwrap().clone();
    let mut ring = shardgate::functions::Ring::new(f);
    ring.fill().unwrap();
    assert_eq!(ring.ready_len(), 4);
    let mut out = Vec::new();
    let mut ok = |ring: &mut shardgate::functions::Ring| {
        out.clear();
        ring.invoke(b"o", &mut out).unwrap();
        assert_eq!(report(&out), PRISTINE);
    };
    // Four from the ready batch: no miss; the batch is retired.
    for _ in 0..4 {
        ok(&mut ring);
    }
    assert_eq!((ring.ready_len(), ring.retired_len()), (0, 1));
    assert_eq!(ring.stats.ring_misses.get(), 0);
    // Upkeep releases it and builds a new spare.
    while ring.upkeep_step() {}
    assert_eq!((ring.ready_len(), ring.retired_len()), (4, 0));
    assert_eq!(ring.stats.resets.get(), 4);
    // Upkeep starved: requests miss and release inline, never running out
    // of pool slots.
    for _ in 0..300 {
        ok(&mut ring);
    }
    let st = ring.stats.snapshot();
    assert_eq!(st.ring_misses, 296, "{st:?}");
    assert!(st.inline_resets >= 290, "{st:?}");
    assert_eq!(st.instantiate_failures, 0, "{st:?}");
    while ring.upkeep_step() {}
    assert_eq!(ring.ready_len(), 4);
    ok(&mut ring);
}
