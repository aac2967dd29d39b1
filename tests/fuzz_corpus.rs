//! Replays every checked-in fuzz seed (`fuzz/seeds/<target>/`) and every
//! input the fuzzer has kept locally (`fuzz/corpus/<target>/`, when
//! present) through the same entry points the cargo-fuzz targets call
//! (`shardgate::fuzzing`), so a crash once found stays fixed without a
//! nightly toolchain. Also checks that every target has a fuzz binary and
//! seeds.

mod support;
use support::repo;

use std::path::{Path, PathBuf};

use shardgate::fuzzing::TARGETS;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_corpus_entry_replays_without_a_crash() {
    let mut replayed = 0;
    for (target, entry) in TARGETS {
        assert!(
            repo(&format!("fuzz/fuzz_targets/{target}.rs")).is_file(),
            "fuzz target {target} has no fuzz/fuzz_targets/{target}.rs"
        );
        let seeds = files(&repo(&format!("fuzz/seeds/{target}")));
        assert!(
            seeds.len() >= 3,
            "fuzz/seeds/{target} holds {} seeds; check in a few",
            seeds.len()
        );
        let local = files(&repo(&format!("fuzz/corpus/{target}")));
        for path in seeds.iter().chain(&local) {
            let data = std::fs::read(path).unwrap();
            let result = std::panic::catch_unwind(|| entry(&data));
            assert!(result.is_ok(), "{target}: {} crashes", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= 7 * 3);
}
