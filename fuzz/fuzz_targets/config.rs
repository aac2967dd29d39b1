//! Fuzz the TOML config loader (validation and address-map build).
//! The checks live in `shardgate::fuzzing::config`, which `cargo test` also
//! runs on every file of `fuzz/corpus/config/` (tests/fuzz_corpus.rs).
//!
//! Run: `cargo +nightly fuzz run config` (from the repository root), or
//! `scripts/fuzz.sh --seconds N` for every target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shardgate::fuzzing::config(data);
});
