#!/usr/bin/env bash
# Test-suite section (picked up by scripts/test.sh): every fuzz target runs
# briefly from its seeds, so a target that no longer builds or crashes on
# its corpus fails the suite. Bounded: an unoptimized build of the fuzz crate
# and FUZZ_SECONDS (default 5) per target. Long runs: scripts/fuzz.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
exec scripts/fuzz.sh --dev --seconds "${FUZZ_SECONDS:-5}"
