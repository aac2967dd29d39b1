//! Fuzz the hand-off frame decoder (layout parse, re-seal round trip).
//! The checks live in `shardgate::fuzzing::handoff_frame`, which `cargo test` also
//! runs on every file of `fuzz/corpus/handoff_frame/` (tests/fuzz_corpus.rs).
//!
//! Run: `cargo +nightly fuzz run handoff_frame` (from the repository root), or
//! `scripts/fuzz.sh --seconds N` for every target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shardgate::fuzzing::handoff_frame(data);
});
