#!/usr/bin/env bash
# DNS benchmark (not a test): shardgate vs Knot DNS, same views, same load.
#
#   scripts/bench-dns.sh [--duration S] [--rounds N] [--rate QPS] [--only shardgate|knot]
#                        [--rt] [--reflector] [--handoff] [--sweep [RATES]] [--no-build]
#
# Both servers are configured from one description, scripts/bench/views.toml
# (scripts/bench/gen.py writes shardgate's config and Knot's zone file plus a
# geoip-module subnet file). Before measuring, every query of
# scripts/bench/queries.txt is asked with dig from each view's source address
# and both servers must give the same rcode, flags, answer and authority, or
# the bench aborts.
#
# Each run: the server alone on CPU 1 (shardgate --shards 1; knotd with one
# UDP worker; every thread re-pinned with `taskset -a -p -c 1`), one dnsperf
# per view source (127.0.0.x) pinned on CPU 0, all sending the same query
# file for --duration seconds. Rounds alternate which server goes first.
# Three kinds of run, all interleaved: dnsperf as fast as it can ("dnsperf
# max"), capacity, and fixed rate (--rate QPS in total, default 20000).
#
# The figure to compare is queries per server core-second: completed
# queries divided by the busy time of CPU 1 during the run (the wall time
# less CPU 1's idle residency from /sys/devices/system/cpu/cpu1/cpuidle;
# /proc/stat, sampled at the tick, where there is no cpuidle). dnsperf on one core saturates before either server (on a slow host
# at ~165k QPS, with the server's CPU 1 only 60-70% busy), so "dnsperf max"
# measures efficiency at dnsperf's own limit, not at the server's. The
# capacity run does saturate the server: shardgate-load (target/release/
# shardgate-load, closed loop, BENCH_CAP_OUTSTANDING queries outstanding,
# default 256, one socket per view source, batched sends) on CPU 0 sends
# the same query file from the same sources, and the summary says whether
# CPU 1 really was >= 90% busy. The headline ratio is the capacity run's.
# Also reported: QPS, latency avg/p99 (dnsperf -v per-query latencies; the
# load tool's own for capacity runs), CPU 1's busy share and the server
# process's own CPU share (a cross-check: if CPU 1 is much busier than the
# server, something else ran there and the run is noisy).
#
# --rt runs the servers and dnsperf as SCHED_FIFO (chrt -f 10) so that other
# work on a shared machine cannot delay them; the figure to trust then is
# "per (server threads + irq) second", which does not count other processes.
#
# --reflector adds a third "server" to every round: examples/udp_reflector.rs,
# a shard's own UDP loop (runtime::udp::serve_blocking: recvmmsg of 64, GSO
# replies, adaptive receive coalescing) with a handler that sends each query
# back with QR set and does no other work. Its queries per core-second is
# the ceiling our loop and the loopback UDP path put on the DNS path; the
# summary then says how far from it each server is.
#
# --handoff adds "sg-handoff" to every round: the same shardgate with a
# [handoff] table and a live alternate node (127.0.0.3, on the dnsperf CPU,
# idle unless handed work), so the summary says what configuring a pair
# costs the DNS fast path (target: within 5% of queries per core-second).
#
# --sweep runs every server at each fixed rate of RATES (QPS in total,
# comma-separated; default 10000,20000,50000,100000,200000) as well as
# dnsperf max and capacity, interleaved as above, and reports per rate:
# latency avg and p99, queries lost, CPU 1's busy share; then queries per
# core-second at capacity, the highest rate Knot sustains without loss, and whether
# shardgate is no slower and no busier than Knot at every rate up to it.
# Every fixed rate runs twice: with dnsperf (one process per view source,
# six threads on CPU 0, latency as dnsperf sees it once scheduled) and with
# shardgate-load (one thread, open loop, latency to the kernel's receive
# timestamp, so the client core's scheduling adds less); the summary
# checks both.
# The tables go to sweep.txt, the plots (latency vs rate, both servers,
# drawn by `shardgate-load plot-xy`) to sweep.png (dnsperf's runs) and
# sweep-shardgate-load.png.
#
# Lost queries are attributed: each run records the host's UDP
# receive-buffer drops (RcvbufErrors in /proc/net/snmp) and shardgate's own
# sockets' (shardgate_udp_socket_drops_total from its /metrics); the rest
# were dropped at dnsperf's sockets, whose buffers are BENCH_DNSPERF_BUF_KIB
# (default 4096, dnsperf -b; 0 = the kernel's default).
#
# Raw outputs and the summary go to results/bench-dns-<timestamp>/.
# Needs: dnsperf, knotd + knot-module-geoip, dig, python3 >= 3.11, taskset,
# 2+ CPUs. Run as root (or a user allowed to run knotd and bind the ports).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PYTHONDONTWRITEBYTECODE=1

DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
RATE=${BENCH_RATE:-20000}
PORT=${BENCH_PORT:-15350} # shardgate DNS; +1 Knot DNS; +2 shardgate admin; +3 reflector
ONLY=""
BUILD=1
RT=()
REFLECTOR=0
HANDOFF=0
ALT_PID=""
SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}
LOADGEN=$ROOT/target/release/shardgate-load
CAP_OUTSTANDING=${BENCH_CAP_OUTSTANDING:-256}
REFLECTOR_BIN=$ROOT/target/release/examples/udp_reflector
SERVER_CPU=1
CLIENT_CPU=0
# dnsperf's socket buffers in KiB (-b; capped by net.core.rmem_max and
# wmem_max): its own receive buffer overflows first as CPU 0 fills.
DNSPERF_BUF=(-b "${BENCH_DNSPERF_BUF_KIB:-4096}")
[ "${BENCH_DNSPERF_BUF_KIB:-4096}" = 0 ] && DNSPERF_BUF=()

usage() { sed -n '2,76p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
SWEEP=""
while [ $# -gt 0 ]; do
    case $1 in
        --duration) DURATION=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --rt) RT=(chrt -f 10); shift ;;
        --reflector) REFLECTOR=1; shift ;;
        --handoff) HANDOFF=1; shift ;;
        --sweep)
            SWEEP=10000,20000,50000,100000,200000
            if [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+(,[0-9]+)*$ ]]; then SWEEP=$2; shift; fi
            shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
case $ONLY in ""|shardgate|knot) ;; *) echo "--only takes shardgate or knot" >&2; exit 2 ;; esac
SERVERS=(shardgate knot)
[ -n "$ONLY" ] && SERVERS=("$ONLY")
VERIFY=$([ ${#SERVERS[@]} -eq 2 ] && echo 1 || echo 0)
[ "$REFLECTOR" = 1 ] && SERVERS+=(reflector)
[ "$HANDOFF" = 1 ] && SERVERS+=(sg-handoff)

die() { echo "bench-dns: $*" >&2; exit 1; }
log() { printf '[bench-dns %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

for cmd in dnsperf dig python3 taskset knotd; do
    command -v "$cmd" >/dev/null || die "$cmd not found (apt-get install dnsperf dnsutils knot knot-module-geoip util-linux python3)"
done
python3 -c 'import tomllib' 2>/dev/null || die "python3 >= 3.11 needed (tomllib)"
compgen -G "/usr/lib/*/knot/modules-*/geoip.so" >/dev/null || die "Knot geoip module missing: apt-get install knot-module-geoip"
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs: dnsperf on CPU $CLIENT_CPU, the server on CPU $SERVER_CPU"
for p in "$PORT" $((PORT + 1)) $((PORT + 2)) $((PORT + 3)) $((PORT + 4)) $((PORT + 5)) $((PORT + 6)) $((PORT + 7)); do
    if ss -Hlntu | awk '{print $5}' | grep -q ":$p\$"; then die "port $p is in use; set BENCH_PORT to another base"; fi
done

if [[ " ${SERVERS[*]} " == *" shardgate "* ]]; then
    if [ "$BUILD" = 1 ]; then
        log "building shardgate (release)"
        cargo build --release --quiet --bin shardgate
    fi
    [ -x "$SHARDGATE" ] || die "$SHARDGATE missing: run cargo build --release"
fi
[ "$BUILD" = 1 ] && cargo build --release --quiet -p shardgate-load
[ -x "$LOADGEN" ] || die "$LOADGEN missing (the capacity runs' load): run cargo build --release -p shardgate-load"
if [ "$REFLECTOR" = 1 ]; then
    [ "$BUILD" = 1 ] && cargo build --release --quiet --example udp_reflector
    [ -x "$REFLECTOR_BIN" ] || die "$REFLECTOR_BIN missing: run cargo build --release --example udp_reflector"
fi

OUT=$ROOT/results/bench-dns-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/config" "$OUT/runs"
python3 scripts/bench/gen.py scripts/bench/views.toml "$OUT/config" \
    --shardgate-port "$PORT" --knot-port $((PORT + 1)) --admin-port $((PORT + 2))
cp scripts/bench/queries.txt "$OUT/queries.txt"
if [ "$HANDOFF" = 1 ]; then
    # A: the bench config plus [handoff]; B: the same map on 127.0.0.3.
    head -c 32 /dev/urandom >"$OUT/config/handoff.key"; chmod 600 "$OUT/config/handoff.key"
    handoff_table() { # listen alternate
        printf '\n[handoff]\nalternate = "%s"\nlisten = "%s"\nkey_file = "%s"\nreply = "relay"\n' \
            "$2" "$1" "$OUT/config/handoff.key"
    }
    { cat "$OUT/config/shardgate.toml"; handoff_table "127.0.0.1:$((PORT + 6))" "127.0.0.3:$((PORT + 7))"; } \
        >"$OUT/config/shardgate-handoff.toml"
    { sed -e "s/127.0.0.1:$PORT\"/127.0.0.3:$((PORT + 4))\"/" -e "s/127.0.0.1:$((PORT + 2))/127.0.0.3:$((PORT + 5))/" \
        "$OUT/config/shardgate.toml"
      handoff_table "127.0.0.3:$((PORT + 7))" "127.0.0.1:$((PORT + 6))"; } >"$OUT/config/alternate.toml"
fi
mapfile -t SOURCES < <(awk '{print $2}' "$OUT/config/sources.txt")
{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm), $(nproc --all) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
    echo "dnsperf: $(dnsperf -h 2>&1 | awk '/^Version/{print $2}')"
    echo "knotd: $(knotd --version)"
    [ -x "$SHARDGATE" ] && echo "shardgate: $SHARDGATE ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes'))"
    echo "duration: ${DURATION}s, rounds: $ROUNDS, fixed rate: $RATE QPS, sources: ${SOURCES[*]}${RT[*]:+, scheduling: ${RT[*]}}"
} >"$OUT/env.txt"

# --- servers ---------------------------------------------------------------
SERVER_PID=""
cleanup() {
    if [ -n "$ALT_PID" ]; then
        kill "$ALT_PID" 2>/dev/null || true
        wait "$ALT_PID" 2>/dev/null || true
        ALT_PID=""
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

port_of() {
    case $1 in
        shardgate|sg-handoff) echo "$PORT" ;;
        knot) echo $((PORT + 1)) ;;
        reflector) echo $((PORT + 3)) ;;
    esac
}

# start SERVER LOGFILE: start it pinned to CPU 1, wait until it answers.
start() {
    local server=$1 logfile=$2 port
    port=$(port_of "$server")
    case $server in
        shardgate)
            "${RT[@]}" taskset -c "$SERVER_CPU" "$SHARDGATE" run --config "$OUT/config/shardgate.toml" --shards 1 \
                >"$logfile" 2>&1 &
            ;;
        sg-handoff)
            taskset -c "$CLIENT_CPU" "$SHARDGATE" run --config "$OUT/config/alternate.toml" --shards 1 \
                >"$logfile.alternate" 2>&1 &
            ALT_PID=$!
            "${RT[@]}" taskset -c "$SERVER_CPU" "$SHARDGATE" run --config "$OUT/config/shardgate-handoff.toml" --shards 1 \
                >"$logfile" 2>&1 &
            ;;
        knot)
            rm -rf "$OUT/config/knot-db" && mkdir -p "$OUT/config/knot-db" "$OUT/config/knot-run"
            "${RT[@]}" taskset -c "$SERVER_CPU" knotd -c "$OUT/config/knot.conf" >"$logfile" 2>&1 &
            ;;
        reflector)
            "${RT[@]}" taskset -c "$SERVER_CPU" "$REFLECTOR_BIN" "127.0.0.1:$port" >"$logfile" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    local i
    for i in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$logfile" >&2; die "$server exited at start (log: $logfile)"; }
        if [ "$server" = reflector ]; then
            # It answers with the query itself: any reply will do.
            if dig -p "$port" @127.0.0.1 upf.svc.example +tries=1 +time=1 >/dev/null 2>&1; then break; fi
        elif dig -p "$port" @127.0.0.1 upf.svc.example +tries=1 +time=1 +short 2>/dev/null | grep -q .; then
            break
        fi
        [ "$i" = 100 ] && { tail -20 "$logfile" >&2; die "$server does not answer on 127.0.0.1:$port after 20 s (log: $logfile)"; }
        sleep 0.2
    done
    # Servers pin their own workers (glommio executors, Knot UDP workers):
    # move every thread to the server CPU.
    taskset -a -p -c "$SERVER_CPU" "$SERVER_PID" >/dev/null
}

stop() {
    cleanup
}

# --- equivalence check -----------------------------------------------------
# answer SERVER SOURCE NAME TYPE: normalized rcode, flags, answer, authority.
answer() {
    dig -p "$(port_of "$1")" @127.0.0.1 -b "$2" "$3" "$4" +norec +nocookie +tries=2 +time=2 \
        +noall +comments +answer +authority 2>&1 |
        awk '/->>HEADER<<-/ { for (i = 1; i <= NF; i++) if ($i == "status:") print "status", $(i + 1) }
             /^;; flags:/ { match($0, /flags:[^;]*/); print substr($0, RSTART, RLENGTH) }
             /^[^;]/ && NF { $1 = tolower($1); print }' |
        sed 's/,$//' | tr -s ' \t' ' ' | sort
}

verify() {
    log "verifying both servers answer alike from every view"
    local server src name type
    for server in shardgate knot; do
        start "$server" "$OUT/verify-$server.log"
        while read -r name type; do
            for src in "${SOURCES[@]}"; do
                answer "$server" "$src" "$name" "$type" >"$OUT/verify/$server-$src-$name-$type.txt"
            done
        done < <(sort -u "$OUT/queries.txt")
        stop
    done
    local bad=0 f
    for f in "$OUT"/verify/shardgate-*.txt; do
        local k=${f#"$OUT/verify/shardgate-"}
        if ! diff -u "$f" "$OUT/verify/knot-$k" >"$OUT/verify/diff-$k"; then
            echo "MISMATCH for ${k%.txt} (source-name-type):" >&2
            cat "$OUT/verify/diff-$k" >&2
            bad=1
        else
            rm -f "$OUT/verify/diff-$k"
        fi
        grep -q '^status' "$f" || { echo "no answer in $f" >&2; bad=1; }
    done
    [ "$bad" = 0 ] || die "shardgate and Knot answer differently: not measuring (see $OUT/verify)"
    # The views must really differ, or the bench would not exercise them.
    [ "$(cat "$OUT"/verify/knot-*-upf.svc.example-A.txt | grep '^upf' | sort -u | wc -l)" -ge 2 ] ||
        die "every view answers upf.svc.example A the same: the description does not exercise views"
    log "answers identical: $(find "$OUT/verify" -name 'knot-*' | wc -l) queries x views"
}

# cpu_snapshot: /proc/stat's cpu lines, each CPU's idle residency from
# cpuidle (microseconds, exact where /proc/stat's busy fields are sampled
# at the tick) and the wall clock. A CPU's residency counts an idle period
# only once it ends, so the server CPU is woken first (a `true` on it).
cpu_snapshot() {
    taskset -c "$SERVER_CPU" true
    grep -E '^cpu[0-9]* ' /proc/stat
    local c n
    for c in /sys/devices/system/cpu/cpu[0-9]*/cpuidle; do
        [ -d "$c" ] || continue
        n=${c%/cpuidle}; n=${n##*/cpu}
        echo "cpuidle_us$n $(cat "$c"/state*/time | awk '{s += $1} END {printf "%.0f\n", s}')"
    done
    echo "wall_ns $(date +%s%N)"
}

# --- one measured run ------------------------------------------------------
# measure SERVER KIND ROUND: KIND is sat (as fast as dnsperf can), cap
# (capacity: shardgate-load closed loop), fixed (--rate QPS) or rN (N QPS,
# --sweep).
measure() {
    local server=$1 kind=$2 round=$3
    local dir="$OUT/runs/$round-$server-$kind" port rate=$RATE
    port=$(port_of "$server")
    mkdir -p "$dir"
    start "$server" "$dir/server.log"
    sleep 1 # let start-up work settle
    local -a rate_args=()
    [[ $kind == r* ]] && rate=${kind#r}
    if [ "$kind" != sat ]; then
        rate_args=(-Q $(((rate + ${#SOURCES[@]} - 1) / ${#SOURCES[@]})))
    fi
    cpu_snapshot >"$dir/stat.before"
    cat /proc/net/snmp >"$dir/snmp.before"
    cat "/proc/$SERVER_PID/stat" >"$dir/pidstat.before"
    date +%s.%N >"$dir/time.before"
    local -a pids=()
    local src
    if [ "$kind" = cap ] || [[ $kind == l* ]]; then
        # No warm-up: the /proc samples frame exactly the measured window.
        # Capacity: a query lost at a saturated server's socket frees its
        # slot after 100 ms, not the default second (lost slots would idle
        # the server). lN: open loop at N QPS, latency from each query's
        # intended send time to its reply's kernel receive timestamp.
        local -a load_sources=() load_args=(-n "$CAP_OUTSTANDING" --timeout 100ms)
        for src in "${SOURCES[@]}"; do load_sources+=(-s "$src"); done
        [[ $kind == l* ]] && load_args=(-r "${kind#l}")
        "${RT[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN" dns --target "127.0.0.1:$port" -f "$OUT/queries.txt" \
            -d "${DURATION}s" --warmup 0s "${load_args[@]}" "${load_sources[@]}" -q --brief \
            --json "$dir/load.json" >"$dir/load.out" 2>&1 &
        pids+=($!)
    else
        for src in "${SOURCES[@]}"; do
            "${RT[@]}" taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -a "$src" -d "$OUT/queries.txt" \
                -l "$DURATION" -t 1 -v "${DNSPERF_BUF[@]}" "${rate_args[@]}" >"$dir/dnsperf-$src.out" 2>&1 &
            pids+=($!)
        done
    fi
    local p rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    date +%s.%N >"$dir/time.after"
    cat "/proc/$SERVER_PID/stat" >"$dir/pidstat.after"
    cpu_snapshot >"$dir/stat.after"
    cat /proc/net/snmp >"$dir/snmp.after"
    # Whose buffer dropped: the host counts every socket's receive-buffer
    # drops (RcvbufErrors), shardgate its own sockets' (SO_RXQ_OVFL); the
    # rest were dnsperf's.
    if [ "$server" = shardgate ]; then
        curl -s -m 2 "http://127.0.0.1:$((PORT + 2))/metrics" >"$dir/metrics.after" || true
    fi
    stop
    [ "$rc" = 0 ] || die "the load ($([ -f "$dir/load.out" ] && echo shardgate-load || echo dnsperf)) failed in $dir"
    python3 scripts/bench/report.py run "$dir" "$server" "$kind" "$round" "$SERVER_CPU"
}

mkdir -p "$OUT/verify"
if [ "$VERIFY" = 1 ]; then
    verify
else
    log "--only $ONLY: skipping the equivalence check"
fi

# Background load on the server CPU with no server running: anything else
# running there is counted as server time and spoils the per-core figures.
cpu_snapshot >"$OUT/idle.before"
sleep 2
cpu_snapshot >"$OUT/idle.after"
background=$(python3 -c "
import sys; sys.path.insert(0, 'scripts/bench'); import report
b, t = report.share('$OUT', $SERVER_CPU, 'idle.before', 'idle.after'); print(round(100 * b / t))")
if [ "$background" -gt 10 ]; then
    log "WARNING: CPU $SERVER_CPU is ${background}% busy with no server running (other processes):"
    log "WARNING: per-core figures will be wrong; stop other work (builds, tests) and run again"
fi

KINDS=(sat cap fixed)
if [ -n "$SWEEP" ]; then
    KINDS=(sat cap)
    for r in ${SWEEP//,/ }; do KINDS+=("r$r"); done
    for r in ${SWEEP//,/ }; do KINDS+=("l$r"); done
fi
for round in $(seq "$ROUNDS"); do
    order=("${SERVERS[@]}")
    if [ $((round % 2)) = 0 ] && [ ${#SERVERS[@]} -ge 2 ]; then order=("${SERVERS[1]}" "${SERVERS[0]}" "${SERVERS[@]:2}"); fi
    for kind in "${KINDS[@]}"; do
        for server in "${order[@]}"; do
            case $kind in
                sat) what="dnsperf as fast as it can" ;;
                cap) what="capacity (shardgate-load, $CAP_OUTSTANDING outstanding)" ;;
                fixed) what="$RATE QPS" ;;
                l*) what="${kind#l} QPS (shardgate-load)" ;;
                *) what="${kind#r} QPS" ;;
            esac
            log "round $round/$ROUNDS: $server, $what for ${DURATION}s"
            measure "$server" "$kind" "$round"
        done
    done
done

if [ -n "$SWEEP" ]; then
    python3 scripts/bench/report.py sweep "$OUT" "$SERVER_CPU" | tee "$OUT/sweep.txt"
    "$LOADGEN" plot-xy "$OUT/sweep-plot.json" -o "$OUT/sweep.png"
    "$LOADGEN" plot-xy "$OUT/sweep-plot-shardgate-load.json" -o "$OUT/sweep-shardgate-load.png"
    log "raw outputs: $OUT"
    exit 0
fi
python3 scripts/bench/report.py table "$OUT" "$SERVER_CPU" | tee "$OUT/summary.txt"
log "raw outputs: $OUT"
