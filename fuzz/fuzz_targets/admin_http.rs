//! Fuzz the admin listener's HTTP/1.1 parser and browser policy.
//! The checks live in `shardgate::fuzzing::admin_http`, which `cargo test` also
//! runs on every file of `fuzz/corpus/admin_http/` (tests/fuzz_corpus.rs).
//!
//! Run: `cargo +nightly fuzz run admin_http` (from the repository root), or
//! `scripts/fuzz.sh --seconds N` for every target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shardgate::fuzzing::admin_http(data);
});
