#!/bin/sh
# Build the C example functions (functions/c/*.c) to WebAssembly modules in
# functions/ with clang's wasm32 target. Needs clang and lld (wasm-ld):
#   apt-get install clang lld
# Without them it says so and exits 0 (the WAT examples need no toolchain).
set -eu
cd "$(dirname "$0")/.."
CLANG=${CLANG:-clang}
if ! command -v "$CLANG" >/dev/null 2>&1 || ! command -v wasm-ld >/dev/null 2>&1; then
    echo "build-functions: clang and wasm-ld not found; skipping the C examples (apt-get install clang lld)" >&2
    exit 0
fi
if ! "$CLANG" --print-targets 2>/dev/null | grep -q wasm32; then
    echo "build-functions: $CLANG has no wasm32 target; skipping the C examples" >&2
    exit 0
fi
for src in functions/c/*.c; do
    name=$(basename "$src" .c)
    out="functions/$name.wasm"
    "$CLANG" --target=wasm32 -nostdlib -O2 -Wall -Werror \
        -Wl,--no-entry -Wl,--strip-all \
        -o "$out" "$src"
    echo "built $out ($(wc -c <"$out") bytes)"
done
