//! Fuzz the function-invocation UDP frame decoder (request and reply).
//! The checks live in `shardgate::fuzzing::fn_frame`, which `cargo test` also
//! runs on every file of `fuzz/corpus/fn_frame/` (tests/fuzz_corpus.rs).
//!
//! Run: `cargo +nightly fuzz run fn_frame` (from the repository root), or
//! `scripts/fuzz.sh --seconds N` for every target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shardgate::fuzzing::fn_frame(data);
});
