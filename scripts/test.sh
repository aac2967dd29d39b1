#!/usr/bin/env bash
# The whole shardgate test suite: the one command of the README and of .ci/run.
#
#   scripts/test.sh
#
# 1. installs what the tests need when it is missing (apt-get, quietly, only
#    for commands not found; needs root or sudo), and rustfmt/clippy;
# 2. cargo fmt --check; cargo clippy --all-targets -D warnings; the layer
#    order of src/lib.rs (scripts/check-layers.py);
# 3. builds once in release and runs every test in release (unit, integration
#    with real clients such as dig/kdig/dnsperf, doc tests);
# 4. checks that the benchmarks build (cargo bench --no-run);
# 5. runs every extra suite scripts/test-*.sh (e.g. the package test).
#
# Every section runs even if an earlier one failed; the summary lists the
# failed ones and the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-always}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

failed=()
started=$(date +%s)

section() {
    printf '\n\033[1m==== %s ====\033[0m\n' "$*"
}

# run NAME CMD...: a section; records NAME as failed when CMD fails.
run() {
    local name=$1
    shift
    section "$name"
    local t0=$SECONDS
    if "$@"; then
        printf -- '---- %s: ok (%ds)\n' "$name" $((SECONDS - t0))
    else
        printf -- '---- %s: FAILED (%ds)\n' "$name" $((SECONDS - t0))
        failed+=("$name")
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -E "$@"
    else
        echo "need root to run: $*" >&2
        return 1
    fi
}

install_prerequisites() {
    # package: the command (or file) that shows it is installed
    local -a wanted=(
        "dnsutils:dig"
        "dnsperf:dnsperf"
        "knot:knotd"
        "knot-dnsutils:kdig"
        "knot-module-geoip:file:/usr/lib/$(uname -m)-linux-gnu/knot/modules-*/geoip.so"
        "prometheus:prometheus"
        "clang:clang"
        "lld:wasm-ld"
        "python3:python3"
        "protobuf-compiler:protoc"
        # protoc's well-known types (google/protobuf/*.proto), only a
        # Recommends of protobuf-compiler: etcd-client's build needs them
        "libprotobuf-dev:file:/usr/include/google/protobuf/descriptor.proto"
        "etcd-server:etcd"
        "etcd-client:etcdctl"
    )
    local -a missing=()
    local entry pkg probe
    for entry in "${wanted[@]}"; do
        pkg=${entry%%:*}
        probe=${entry#*:}
        if [[ $probe == file:* ]]; then
            # shellcheck disable=SC2086 # the glob is meant to expand
            compgen -G "${probe#file:}" >/dev/null && continue
        else
            command -v "$probe" >/dev/null 2>&1 && continue
        fi
        missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        as_root apt-get update -qq || return 1
        as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
            echo "apt-get install ${missing[*]} failed; install them and run again" >&2
            return 1
        }
    else
        echo "system packages: all present"
    fi

    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install Rust (https://rustup.rs), then run again" >&2
        return 1
    fi
    local component
    for component in rustfmt clippy; do
        if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
            echo "installing rust component $component"
            rustup component add "$component" || return 1
        fi
    done
    cargo --version
}

run "prerequisites" install_prerequisites
run "cargo fmt --check" cargo fmt --all -- --check
run "cargo clippy" cargo clippy --all-targets -- -D warnings
run "layer order (src/lib.rs)" bash -c 'python3 scripts/check-layers.py --self-test && python3 scripts/check-layers.py src'
# One release build serves the tests, the integration tests' binaries and the
# benchmarks (profile.bench inherits release). `cargo test` alone builds only
# the binaries of packages with integration tests (not `shardgate-load`), so
# the workspace's binaries are built first, by name.
run "build (release)" bash -c 'cargo build --release --workspace --bins && cargo test --release --no-run'
run "cargo test --release" cargo test --release --no-fail-fast
run "cargo bench --no-run" cargo bench --no-run

for extra in scripts/test-*.sh; do
    [ -x "$extra" ] || continue
    run "$extra" "$extra"
done

section "summary"
elapsed=$(($(date +%s) - started))
if [ ${#failed[@]} -eq 0 ]; then
    printf 'all sections passed in %dm%02ds\n' $((elapsed / 60)) $((elapsed % 60))
    exit 0
fi
printf 'FAILED sections (%d) after %dm%02ds:\n' ${#failed[@]} $((elapsed / 60)) $((elapsed % 60))
printf '  - %s\n' "${failed[@]}"
exit 1
