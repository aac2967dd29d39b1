//! Fuzz the function surface's pipelined HTTP/1.1 parser.
//! The checks live in `shardgate::fuzzing::fn_http`, which `cargo test` also
//! runs on every file of `fuzz/corpus/fn_http/` (tests/fuzz_corpus.rs).
//!
//! Run: `cargo +nightly fuzz run fn_http` (from the repository root), or
//! `scripts/fuzz.sh --seconds N` for every target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shardgate::fuzzing::fn_http(data);
});
