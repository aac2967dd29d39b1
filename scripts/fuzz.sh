#!/usr/bin/env bash
# Run every cargo-fuzz target (fuzz/fuzz_targets/*.rs) for a bounded time and
# report executions and crashes per target.
#
#   scripts/fuzz.sh [--seconds N] [--dev] [TARGET ...]
#
#   --seconds N  run each target for N seconds (default 60)
#   --dev        build the fuzz crate unoptimized (faster build, slower runs;
#                what scripts/test-fuzz.sh uses)
#   TARGET       only these targets (default: all)
#
# Needs the nightly toolchain and cargo-fuzz (installed with
# `cargo install cargo-fuzz --locked` when missing). Each target starts from
# its checked-in seeds (fuzz/seeds/TARGET) and the inputs kept by earlier
# runs (fuzz/corpus/TARGET, not checked in); crashes land in
# fuzz/artifacts/TARGET/. Add a crashing input to fuzz/seeds/TARGET once it is
# fixed: `cargo test --test fuzz_corpus` replays every seed without nightly.
# Exit status: 0 when no target crashed, 1 otherwise, 2 on usage errors.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=60
profile=()
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
        --seconds=*) seconds=${1#--seconds=}; shift ;;
        --dev) profile=(--dev); shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
case "$seconds" in
    ''|*[!0-9]*) echo "--seconds takes a whole number of seconds, not '$seconds'" >&2; exit 2 ;;
esac
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz/fuzz_targets/*.rs; do
        t=$(basename "$f" .rs)
        targets+=("$t")
    done
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked >/dev/null || { echo "cannot install cargo-fuzz" >&2; exit 2; }
fi

# One build for every target (sanitizers off: the targets are safe Rust;
# debug assertions stay on).
echo "building the fuzz targets ${profile[*]:-(release)}" >&2
if ! cargo +nightly fuzz build "${profile[@]}" --sanitizer none >&2; then
    echo "the fuzz crate does not build" >&2
    exit 1
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
crashed=0
printf '%-14s %12s %8s %s\n' target executions crashes note
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="$logs/$t.log"
    cargo +nightly fuzz run "${profile[@]}" --sanitizer none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -max_len=65536 \
        >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    note=""
    crashes=0
    if [ $rc -ne 0 ]; then
        crashes=1
        crashed=1
        note="exit $rc; see fuzz/artifacts/$t/ and the log below"
        tail -40 "$log" >&2
    fi
    printf '%-14s %12s %8s %s\n' "$t" "${execs:-?}" "$crashes" "$note"
done
exit $crashed
