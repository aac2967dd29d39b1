#!/usr/bin/env bash
# Real-systemd test (issue 13): the packaged unit must start, reload and report
# under systemd 252 as PID 1, as operators run it. Called by scripts/test.sh
# after the release build; run it alone with
#
#   scripts/test-systemd.sh
#
# 1. installs systemd-container and debootstrap when missing, and builds (once,
#    ~30 s to a few minutes) a minimal Debian bookworm tree cached in
#    $SHARDGATE_TEST_TREE (default /var/cache/shardgate-test/bookworm-minbase),
#    from the mirror of this machine's own apt sources;
# 2. builds the .deb (cargo deb --no-build) and installs it with dpkg -i into a
#    throw-away copy of the tree;
# 3. boots the copy with systemd-nspawn -b (private network, its own cgroup
#    directories so two runs never collide) and drives it from outside with
#    nsenter ... systemctl;
# 4. checks: the unit reaches active (READY=1) with a STATUS= line; dig -b gets
#    each view's answer of the packaged config; shards on distinct CPUs;
#    Seccomp 2, NoNewPrivs 1, CapEff = CAP_NET_BIND_SERVICE + CAP_NET_RAW; no
#    error-priority journal line on a clean start; `systemctl reload` with a
#    broken config fails and the old answers stay; with a good change it
#    succeeds and the answer changes; `shardgate ctl status` works; `systemctl
#    stop` is clean.
#
# Needs root (skips with a message otherwise). Bounded: every wait has a
# timeout; about a minute once the tree is cached. Cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "test-systemd: $*"; }
fail() {
    echo "test-systemd: FAIL: $*" >&2
    dump_journal >&2 || true
    exit 1
}
skip() {
    echo "test-systemd: SKIP: $*"
    exit 0
}

[ "$(uname -s)" = Linux ] || skip "not Linux"
[ "$(id -u)" = 0 ] || skip "not root: booting a container with systemd-nspawn needs root"

TREE=${SHARDGATE_TEST_TREE:-/var/cache/shardgate-test/bookworm-minbase}
DNS_PORT=8053
SUITE=bookworm

# ---- 1. tools and the cached tree ----------------------------------------
need=()
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq || fail "apt-get update failed"
    timeout 600 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        fail "apt-get install ${need[*]} failed; install them and run again"
fi

# The .../debian mirror of this machine's apt sources (one-line or deb822).
apt_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        grep -hoE '(https?|file)://[^ ]*/debian/?( |$)' "$f" | head -n 1 | tr -d ' '
    done | head -n 1
}

if [ ! -e "$TREE/.shardgate-tree-complete" ]; then
    mirror=$(apt_mirror)
    [ -n "$mirror" ] || fail "no .../debian mirror in /etc/apt/sources.list*; set one there"
    say "building the minbase $SUITE tree in $TREE from $mirror (once; cached afterwards)"
    rm -rf "$TREE.tmp"
    mkdir -p "$(dirname "$TREE")"
    timeout 900 debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,procps,adduser,dnsutils \
        "$SUITE" "$TREE.tmp" "$mirror" >"$(dirname "$TREE")/debootstrap.log" 2>&1 ||
        fail "debootstrap failed; see $(dirname "$TREE")/debootstrap.log"
    rm -rf "$TREE"
    mv "$TREE.tmp" "$TREE"
    touch "$TREE/.shardgate-tree-complete"
fi

# ---- 2. the package, installed into a copy ---------------------------------
[ -x target/release/shardgate ] || cargo build --release --quiet
if ! command -v cargo-deb >/dev/null 2>&1; then
    say "installing cargo-deb"
    cargo install cargo-deb --locked --quiet
fi
rm -rf target/man
target/release/shardgate generate-man target/man
cargo deb --no-build --quiet >/dev/null
deb=$(ls -t target/debian/shardgate_*.deb | head -n 1)

WORK=$(mktemp -d /var/tmp/shardgate-systemd.XXXXXX)
ROOT=$WORK/root
CG=shardgate-test-$$
NSPAWN=
LEADER=
cleanup() {
    set +e
    if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
        kill -TERM "$NSPAWN" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$NSPAWN" 2>/dev/null
        wait "$NSPAWN" 2>/dev/null
    fi
    local h
    for h in systemd unified; do
        [ -d "/sys/fs/cgroup/$h/$CG" ] || continue
        # Anything left in the run's cgroup goes with it.
        if [ -s "/sys/fs/cgroup/$h/$CG/cgroup.procs" ]; then
            xargs -r kill -KILL <"/sys/fs/cgroup/$h/$CG/cgroup.procs" 2>/dev/null
            sleep 0.5
        fi
        find "/sys/fs/cgroup/$h/$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

t0=$SECONDS
cp -a "$TREE" "$ROOT"
cp "$deb" "$ROOT/tmp/shardgate.deb"
timeout 120 chroot "$ROOT" dpkg -i /tmp/shardgate.deb >"$WORK/dpkg.log" 2>&1 ||
    { cat "$WORK/dpkg.log" >&2; fail "dpkg -i $deb in the container tree failed"; }
rm -f "$ROOT/tmp/shardgate.deb"
say "installed $(basename "$deb") into a copy of the tree ($((SECONDS - t0)) s)"

# ---- 3. boot ---------------------------------------------------------------
for h in systemd unified; do
    [ -d "/sys/fs/cgroup/$h" ] || fail "/sys/fs/cgroup/$h missing: this script expects the hybrid cgroup layout of these machines"
    mkdir "/sys/fs/cgroup/$h/$CG"
done
(
    for h in systemd unified; do echo "$BASHPID" >"/sys/fs/cgroup/$h/$CG/cgroup.procs"; done
    exec systemd-nspawn -q -D "$ROOT" -b --register=no --keep-unit --console=read-only \
        --private-network --capability=CAP_BPF --system-call-filter=bpf
) >"$WORK/console.log" 2>&1 &
NSPAWN=$!

our_pidns=$(readlink /proc/self/ns/pid)
deadline=$((SECONDS + 20))
while [ -z "$LEADER" ]; do
    [ $SECONDS -lt $deadline ] || { cat "$WORK/console.log" >&2; fail "no container leader after 20 s"; }
    kill -0 "$NSPAWN" 2>/dev/null || { cat "$WORK/console.log" >&2; fail "systemd-nspawn exited"; }
    for child in $(cat /proc/"$NSPAWN"/task/*/children 2>/dev/null); do
        if [ "$(readlink "/proc/$child/ns/pid" 2>/dev/null)" != "$our_pidns" ]; then
            LEADER=$child
        fi
    done
    [ -n "$LEADER" ] || sleep 0.1
done
deadline=$((SECONDS + 30))
until [ -S "/proc/$LEADER/root/run/systemd/private" ]; do
    [ $SECONDS -lt $deadline ] || fail "systemd in the container did not come up in 30 s"
    sleep 0.1
done

# inside CMD...: run CMD in the container (all namespaces), bounded.
inside() { timeout 60 nsenter -t "$LEADER" -a "$@"; }
# Journal of the unit in this boot at priority P or more important.
journal() { inside journalctl -b -u shardgate --no-pager -o cat -p "$1"; }
dump_journal() {
    [ -n "$LEADER" ] || return 0
    echo "---- journalctl -u shardgate (last 40 lines)"
    timeout 10 nsenter -t "$LEADER" -a journalctl -b -u shardgate --no-pager -n 40 -o short-monotonic
}
state=$(inside systemctl is-system-running --wait 2>/dev/null || true)
say "container booted (systemd $(inside systemctl --version | head -n 1 | awk '{print $2}'), system $state)"

# ---- 4. checks -------------------------------------------------------------
passed=0
ok() {
    passed=$((passed + 1))
    say "ok: $*"
}

# dig VIEW-SOURCE NAME TYPE: the answer data as dig +short prints it.
ask() { inside dig +short +time=2 +tries=2 -b "$1" -p "$DNS_PORT" @127.0.0.1 "$2" "$3"; }

# Package policy: a fresh install neither enables nor starts the service.
[ "$(inside systemctl is-enabled shardgate 2>/dev/null || true)" = disabled ] ||
    fail "a fresh install enabled shardgate.service (policy: the operator enables it)"
inside systemctl enable --now shardgate >/dev/null 2>&1 || fail "systemctl enable --now shardgate failed"
[ "$(inside systemctl is-active shardgate)" = active ] || fail "shardgate is not active after start"
status=$(inside systemctl show -p StatusText --value shardgate)
grep -q "serving DNS on .*config generation" <<<"$status" || fail "no STATUS= line (StatusText: '$status')"
ok "unit active after READY=1; StatusText: $status"

check_views() {
    local got
    got=$(ask 127.0.0.1 upf.svc.example. A)
    [ "$got" = 10.0.1.5 ] || fail "site-a (127.0.0.1) got '$got', want 10.0.1.5"
    got=$(ask 127.0.0.200 upf.svc.example. A)
    [ "$got" = 10.0.2.5 ] || fail "site-b (127.0.0.200) got '$got', want 10.0.2.5"
    got=$(ask 127.0.0.7 upf.svc.example. A)
    [ "$got" = "$1" ] || fail "canary (127.0.0.7) got '$got', want $1"
    got=$(ask 127.0.0.7 site.svc.example. TXT)
    [ "$got" = '"canary"' ] || fail "canary TXT got '$got'"
}
check_views 10.0.3.5
ok "dig -b answers by view: site-a 10.0.1.5, site-b 10.0.2.5, canary 10.0.3.5"

pid=$(inside systemctl show -p MainPID --value shardgate)
[ "$pid" -gt 0 ] || fail "no MainPID"
cpus=$(inside nproc)
# Executor threads are named shard-N by glommio (its blocking-pool threads,
# created later, share the name): the first thread of each name, in thread-id
# order, is the executor.
threads=$(inside ps -L -o tid=,psr=,comm= -p "$pid" | sort -n)
shard_cpus=$(awk '$3 ~ /^shard-[0-9]+$/ && !seen[$3]++ {print $2}' <<<"$threads" | sort -n)
nshards=$(grep -c . <<<"$shard_cpus" || true)
ndistinct=$(sort -u <<<"$shard_cpus" | grep -c . || true)
[ "$nshards" -ge 1 ] || fail "no shard-N threads in ps -L of $pid: $threads"
if [ "$cpus" -ge 2 ]; then
    [ "$nshards" -ge 2 ] && [ "$ndistinct" = "$nshards" ] ||
        fail "shards not on distinct CPUs: $(tr '\n' ' ' <<<"$shard_cpus") ($cpus CPUs)"
fi
ok "$nshards shard(s) on CPU(s) $(tr '\n' ' ' <<<"$shard_cpus")"

st=$(inside cat "/proc/$pid/status")
field() { awk -v k="$1:" '$1 == k {print $2}' <<<"$st"; }
[ "$(field Seccomp)" = 2 ] || fail "Seccomp is $(field Seccomp), want 2 (SystemCallFilter= not in force)"
[ "$(field NoNewPrivs)" = 1 ] || fail "NoNewPrivs is $(field NoNewPrivs), want 1"
# CAP_NET_BIND_SERVICE (10) | CAP_NET_RAW (13)
[ "$(field CapEff)" = 0000000000002400 ] ||
    fail "CapEff is $(field CapEff), want 0000000000002400 (CAP_NET_BIND_SERVICE CAP_NET_RAW only)"
[ "$(field CapBnd)" = 0000000000002400 ] || fail "CapBnd is $(field CapBnd), want 0000000000002400"
ok "hardening in force: Seccomp 2, NoNewPrivs 1, CapEff/CapBnd = CAP_NET_BIND_SERVICE CAP_NET_RAW"

warnings=$(journal warning)
errors=$(journal err)
[ -z "$errors" ] || fail "error-priority journal lines on a clean start: $errors"
journal info | grep -q "shardgate serving DNS" || fail "the start-up info line is not in the journal"
! grep -q "shardgate serving DNS" <<<"$warnings" || fail "info lines reach the journal at warning priority"
! journal info | grep -q "Cannot allocate memory" || fail "glommio's io_uring dump reached the journal"
if [ -n "$warnings" ]; then
    say "journal warnings on start:"
    sed 's/^/    /' <<<"$warnings"
fi
ok "journal: $(wc -l < <(journal info)) line(s) at info or above, $(grep -c . <<<"$warnings" || true) warning(s), no errors"

out=$(inside shardgate ctl status) || fail "shardgate ctl status failed: $out"
ok "shardgate ctl status: $out"

conf=$ROOT/etc/shardgate/shardgate.toml
cp -p "$conf" "$WORK/good.toml"
# Broken: an address that is not one.
sed 's/"10\.0\.3\.5" }/"10.0.3.500" }/' "$WORK/good.toml" >"$conf"
! cmp -s "$conf" "$WORK/good.toml" || fail "could not make the broken config (packaged config changed?)"
if inside systemctl reload shardgate 2>"$WORK/reload.err"; then
    fail "systemctl reload succeeded with a broken config"
fi
[ "$(inside systemctl is-active shardgate)" = active ] || fail "shardgate not active after a rejected reload"
check_views 10.0.3.5
journal err | grep -q "rejected" || fail "the rejected reload is not in the journal at error priority"
ok "reload of a broken config fails (systemctl reload exit non-zero), old answers stay, error logged at err"

sed 's/"10\.0\.3\.5" }/"10.0.3.6" }/' "$WORK/good.toml" >"$conf"
inside systemctl reload shardgate || fail "systemctl reload of a good config failed"
check_views 10.0.3.6
status=$(inside systemctl show -p StatusText --value shardgate)
ok "reload of a good change succeeds; canary now 10.0.3.6; StatusText: $status"

inside systemctl stop shardgate || fail "systemctl stop failed"
[ "$(inside systemctl is-active shardgate || true)" = inactive ] || fail "shardgate not inactive after stop"
result=$(inside systemctl show -p Result --value shardgate)
[ "$result" = success ] || fail "stop result '$result', want success"
journal info | grep -q "stopped" || fail "no 'stopped' line in the journal"
ok "systemctl stop is clean (Result=success)"

# A filter that denies sched_setaffinity (a drop-in taking @resources away
# again): start-up fails, and the journal says why and what to change.
dropin=$ROOT/etc/systemd/system/shardgate.service.d
mkdir -p "$dropin"
printf '[Service]\nSystemCallFilter=~@resources\nRestart=no\n' >"$dropin/deny-resources.conf"
inside systemctl daemon-reload
if inside systemctl start shardgate 2>/dev/null; then
    fail "shardgate started although its SystemCallFilter denies sched_setaffinity"
fi
why=$(journal err | grep "sched_setaffinity" || true)
grep -q "pinning shards to CPU .*Operation not permitted.*SystemCallFilter" <<<"$why" ||
    fail "the pinning failure is not explained at error priority: '$why'"
rm -rf "$dropin"
inside systemctl daemon-reload
inside systemctl reset-failed shardgate 2>/dev/null || true
ok "with sched_setaffinity denied start-up fails with: $(tail -n 1 <<<"$why")"

say "PASS: $passed checks in $((SECONDS - t0)) s (tree $TREE)"
