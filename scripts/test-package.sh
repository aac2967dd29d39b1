#!/usr/bin/env bash
# Package test (issue 7): build the .deb from the release build, check its file
# list, install it, verify the systemd unit and its security exposure, then
# remove and purge it. Installing needs root; without root only the build and
# file-list checks run. Called by scripts/test.sh after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-package: FAIL: $*" >&2; exit 1; }

if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "test-package: installing cargo-deb" >&2
    cargo install cargo-deb --locked --quiet
fi
rm -rf target/man
target/release/shardgate generate-man target/man
cargo deb --no-build --quiet >/dev/null
deb=$(ls -t target/debian/shardgate_*.deb | head -n 1)
echo "test-package: built $deb ($(du -h "$deb" | cut -f1))"

listing=$(dpkg-deb -c "$deb" | awk '{print $6}')
for want in ./usr/bin/shardgate ./etc/shardgate/shardgate.toml \
            ./usr/share/doc/shardgate/README.md ./usr/share/doc/shardgate/tuning.md \
            ./usr/share/shardgate/check-host.sh ./usr/share/shardgate/prometheus/prometheus.yml \
            ./usr/share/shardgate/grafana/shardgate.json \
            ./usr/bin/shardgate-load ./usr/share/shardgate/scripts/loadtest.sh \
            ./usr/share/man/man1/shardgate.1.gz ./usr/share/man/man1/shardgate-ctl.1.gz \
            ./usr/share/man/man1/shardgate-check-config.1.gz; do
    grep -qx -- "$want" <<<"$listing" || fail "$deb lacks $want"
done
grep -qE '^\./(usr/)?lib/systemd/system/shardgate\.service$' <<<"$listing" || fail "$deb lacks the systemd unit"
grep -qE '^\./usr/share/shardgate/functions/.+\.wat$' <<<"$listing" || fail "$deb lacks example functions"
dpkg-deb -I "$deb" conffiles | grep -qx /etc/shardgate/shardgate.toml || fail "config is not a conffile"
dpkg-deb -I "$deb" postinst | grep -q 'adduser --system' || fail "postinst does not create the shardgate user"
echo "test-package: file list ok"

score=$(systemd-analyze security --offline=yes deploy/systemd/shardgate.service 2>/dev/null \
        | sed -n 's/.*Overall exposure level for shardgate.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "systemd-analyze security printed no exposure level"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure $score > 2.0"
echo "test-package: systemd-analyze security exposure $score (<= 2.0)"

if [ "$(id -u)" != 0 ]; then
    echo "test-package: not root, skipping install/remove"
    exit 0
fi
if dpkg -s shardgate >/dev/null 2>&1; then
    fail "a shardgate package is already installed on this host; not touching it"
fi
user_existed=no
getent passwd shardgate >/dev/null && user_existed=yes
cleanup() {
    dpkg -P shardgate >/dev/null 2>&1 || true
    # The package keeps its system user on purge; this test removes the one
    # it created.
    if [ "$user_existed" = no ] && getent passwd shardgate >/dev/null; then
        deluser --system shardgate >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
dpkg -i "$deb" >/dev/null
getent passwd shardgate >/dev/null || fail "user shardgate not created"
[ -d /var/lib/shardgate ] || fail "/var/lib/shardgate missing"
[ "$(stat -c %U /var/lib/shardgate)" = shardgate ] || fail "/var/lib/shardgate not owned by shardgate"
unit=$(ls /lib/systemd/system/shardgate.service /usr/lib/systemd/system/shardgate.service 2>/dev/null | head -n 1)
[ -n "$unit" ] || fail "unit not installed"
systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
systemd-analyze verify deploy/systemd/shardgate.service || fail "systemd-analyze verify deploy/systemd/shardgate.service"
/usr/bin/shardgate check-config /etc/shardgate/shardgate.toml >/dev/null || fail "installed config does not pass check-config"
echo "test-package: installed, unit verified, config valid"
mkdir -p /var/cache/shardgate/functions
dpkg -r shardgate >/dev/null
[ ! -e /usr/bin/shardgate ] || fail "binary left after dpkg -r"
[ -e /etc/shardgate/shardgate.toml ] || fail "conffile removed by dpkg -r (should stay until purge)"
dpkg -P shardgate >/dev/null
[ ! -e /etc/shardgate/shardgate.toml ] || fail "conffile left after purge"
[ ! -d /var/lib/shardgate ] || fail "/var/lib/shardgate left after purge"
[ ! -d /var/cache/shardgate ] || fail "/var/cache/shardgate left after purge"
getent passwd shardgate >/dev/null || fail "user shardgate removed by purge (policy: kept)"
cleanup
trap - EXIT
echo "test-package: removed and purged cleanly"
