#!/usr/bin/env bash
# Build the Debian package: target/debian/shardgate_<version>_<arch>.deb.
# Installs cargo-deb when missing. Usage: scripts/package.sh [--no-build]
# (--no-build: use the existing release build).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "package.sh: installing cargo-deb (cargo install cargo-deb --locked)" >&2
    cargo install cargo-deb --locked --quiet
fi
if [ "${1:-}" != "--no-build" ]; then
    cargo build --release
fi
# Man pages from the CLI (clap_mangen), installed to /usr/share/man/man1.
rm -rf target/man
target/release/shardgate generate-man target/man
cargo deb --no-build --no-strip
ls -1 target/debian/*.deb | tail -n 1
