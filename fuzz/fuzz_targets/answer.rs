//! Fuzz the DNS answer path on arbitrary query bytes (UDP and TCP, trusted resolver or not).
//! The checks live in `shardgate::fuzzing::dns_message`, which `cargo test` also
//! runs on every file of `fuzz/corpus/answer/` (tests/fuzz_corpus.rs).
//!
//! Run: `cargo +nightly fuzz run answer` (from the repository root), or
//! `scripts/fuzz.sh --seconds N` for every target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shardgate::fuzzing::dns_message(data);
});
