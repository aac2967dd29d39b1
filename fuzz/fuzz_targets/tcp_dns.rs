//! Fuzz DNS-over-TCP length framing feeding the answer path.
//! The checks live in `shardgate::fuzzing::tcp_dns`, which `cargo test` also
//! runs on every file of `fuzz/corpus/tcp_dns/` (tests/fuzz_corpus.rs).
//!
//! Run: `cargo +nightly fuzz run tcp_dns` (from the repository root), or
//! `scripts/fuzz.sh --seconds N` for every target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shardgate::fuzzing::tcp_dns(data);
});
