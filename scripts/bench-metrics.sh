#!/usr/bin/env bash
# What metrics cost (benchmark, not a test): shardgate with metrics enabled
# vs disabled (`[server] metrics = false`), same views, same load, same run.
#
#   scripts/bench-metrics.sh [--duration S] [--rounds N] [--no-build]
#
# Built on the DNS bench (scripts/bench-dns.sh): the config comes from
# scripts/bench/views.toml through scripts/bench/gen.py, the load is one
# dnsperf per view source pinned on CPU 0 sending scripts/bench/queries.txt as
# fast as it can, the server runs alone on CPU 1 with one shard, and each run
# is summarized by scripts/bench/report.py. Rounds alternate which variant
# goes first.
#
# The figure is queries per server core-second (completed queries / busy
# seconds of CPU 1) for each variant, and the ratio enabled/disabled
# (target >= 0.97); also per second of CPU time of the shardgate process
# itself, which other load on CPU 1 disturbs less. Each enabled run also checks, from its /metrics, that
# every answered query was timed into the latency histogram, and each
# disabled run that none was.
#
# Raw outputs and the summary go to results/bench-metrics-<timestamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PYTHONDONTWRITEBYTECODE=1

DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-4}
PORT=${BENCH_PORT:-15370} # shardgate DNS; +1 admin
BUILD=1
SHARDGATE=${SHARDGATE_BIN:-$ROOT/target/release/shardgate}
SERVER_CPU=1
CLIENT_CPU=0

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --duration) DURATION=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done

die() { echo "bench-metrics: $*" >&2; exit 1; }
log() { printf '[bench-metrics %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

for cmd in dnsperf dig python3 taskset curl; do
    command -v "$cmd" >/dev/null || die "$cmd not found (apt-get install dnsperf dnsutils util-linux python3 curl)"
done
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs: dnsperf on CPU $CLIENT_CPU, the server on CPU $SERVER_CPU"
for p in "$PORT" $((PORT + 1)); do
    if ss -Hlntu | awk '{print $5}' | grep -q ":$p\$"; then die "port $p is in use; set BENCH_PORT to another base"; fi
done
if [ "$BUILD" = 1 ]; then
    log "building shardgate (release)"
    cargo build --release --quiet --bin shardgate
fi
[ -x "$SHARDGATE" ] || die "$SHARDGATE missing: run cargo build --release"

OUT=$ROOT/results/bench-metrics-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/config" "$OUT/runs"
python3 scripts/bench/gen.py scripts/bench/views.toml "$OUT/config" \
    --shardgate-port "$PORT" --knot-port $((PORT + 2)) --admin-port $((PORT + 1))
grep -q '^\[server\]$' "$OUT/config/shardgate.toml" || die "generated config has no [server] table"
sed 's/^\[server\]$/[server]\nmetrics = true/' "$OUT/config/shardgate.toml" >"$OUT/config/on.toml"
sed 's/^\[server\]$/[server]\nmetrics = false/' "$OUT/config/shardgate.toml" >"$OUT/config/off.toml"
cp scripts/bench/queries.txt "$OUT/queries.txt"
mapfile -t SOURCES < <(awk '{print $2}' "$OUT/config/sources.txt")
{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm), $(nproc --all) CPUs"
    echo "shardgate: $SHARDGATE ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes'))"
    echo "duration: ${DURATION}s, rounds: $ROUNDS, sources: ${SOURCES[*]}"
} >"$OUT/env.txt"

SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# measure VARIANT ROUND: one saturating run of shardgate with metrics on|off.
measure() {
    local variant=$1 round=$2
    local dir="$OUT/runs/$round-$variant-sat"
    mkdir -p "$dir"
    rm -rf "$OUT/config/state"
    taskset -c "$SERVER_CPU" "$SHARDGATE" run --config "$OUT/config/$variant.toml" --shards 1 >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    local i
    for i in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$dir/server.log" >&2; die "shardgate exited at start"; }
        dig -p "$PORT" @127.0.0.1 upf.svc.example +tries=1 +time=1 +short 2>/dev/null | grep -q . && break
        [ "$i" = 100 ] && die "shardgate does not answer on 127.0.0.1:$PORT"
        sleep 0.2
    done
    taskset -a -p -c "$SERVER_CPU" "$SERVER_PID" >/dev/null
    sleep 1
    grep -E '^cpu[0-9]* ' /proc/stat >"$dir/stat.before"
    cat "/proc/$SERVER_PID/stat" >"$dir/pidstat.before"
    date +%s.%N >"$dir/time.before"
    local -a pids=()
    local src
    for src in "${SOURCES[@]}"; do
        taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -a "$src" -d "$OUT/queries.txt" \
            -l "$DURATION" -t 1 -v >"$dir/dnsperf-$src.out" 2>&1 &
        pids+=($!)
    done
    local p rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    date +%s.%N >"$dir/time.after"
    cat "/proc/$SERVER_PID/stat" >"$dir/pidstat.after"
    grep -E '^cpu[0-9]* ' /proc/stat >"$dir/stat.after"
    sleep 1.5 # one more publish period: every answer is in /metrics
    curl -fsS "http://127.0.0.1:$((PORT + 1))/metrics" >"$dir/metrics.txt" || die "cannot read /metrics"
    cleanup
    [ "$rc" = 0 ] || die "dnsperf failed in $dir"
    python3 scripts/bench/report.py run "$dir" "$variant" sat "$round" "$SERVER_CPU"
}

grep -E '^cpu[0-9]* ' /proc/stat >"$OUT/idle.before"
sleep 2
grep -E '^cpu[0-9]* ' /proc/stat >"$OUT/idle.after"

for round in $(seq "$ROUNDS"); do
    order=(on off)
    [ $((round % 2)) = 0 ] && order=(off on)
    for variant in "${order[@]}"; do
        log "round $round/$ROUNDS: metrics $variant, saturating for ${DURATION}s"
        measure "$variant" "$round"
    done
done

python3 - "$OUT" "$SERVER_CPU" <<'EOF' | tee "$OUT/summary.txt"
import glob, json, os, statistics, sys
sys.path.insert(0, "scripts/bench")
import report
out, cpu = sys.argv[1], int(sys.argv[2])
runs = {"on": [], "off": []}
for path in sorted(glob.glob(os.path.join(out, "runs", "*", "summary.json"))):
    with open(path) as f:
        r = json.load(f)
    d = os.path.dirname(path)
    with open(os.path.join(d, "metrics.txt")) as f:
        m = f.read()
    timed = sum(float(l.rsplit(" ", 1)[1]) for l in m.splitlines()
                if l.startswith("shardgate_request_duration_seconds_count{") and 'protocol="dns-udp"' in l)
    answered = sum(float(l.rsplit(" ", 1)[1]) for l in m.splitlines()
                   if l.startswith("shardgate_responses_total{") and 'protocol="dns-udp"' in l)
    r["timed"], r["answered_metric"] = timed, answered
    if r["server"] == "on" and (timed == 0 or timed < r["completed"]):
        sys.exit(f"{d}: metrics on but only {timed:.0f} of {r['completed']} answers timed")
    if r["server"] == "off" and timed != 0:
        sys.exit(f"{d}: metrics off but {timed:.0f} answers timed")
    runs[r["server"]].append(r)
b, t = report.share(out, cpu, "idle.before", "idle.after")
print(open(os.path.join(out, "env.txt")).read().rstrip())
print(f"background busy share of CPU {cpu} with no server running: {b / t:.1%}")
print("saturating runs, one shard on CPU 1; medians over rounds")
for v in ("on", "off"):
    q = [r["queries_per_core_second"] for r in runs[v]]
    print(f"  metrics {v:3}: QPS {statistics.median(r['qps'] for r in runs[v]):9,.0f}  "
          f"CPU {cpu} busy {statistics.median(r['server_cpu_busy_share'] for r in runs[v]):.1%}  "
          f"queries per server core-second {statistics.median(q):9,.0f}  per round {[round(x) for x in q]}")
for v in ("on", "off"):
    q = [r["queries_per_process_cpu_second"] for r in runs[v]]
    print(f"  metrics {v:3}: queries per shardgate-process CPU second {statistics.median(q):9,.0f}  per round {[round(x) for x in q]}")
on = statistics.median(r["queries_per_core_second"] for r in runs["on"])
off = statistics.median(r["queries_per_core_second"] for r in runs["off"])
pon = statistics.median(r["queries_per_process_cpu_second"] for r in runs["on"])
poff = statistics.median(r["queries_per_process_cpu_second"] for r in runs["off"])
print(f"ratio enabled/disabled, queries per server core-second: {on / off:.3f}  (target >= 0.97)")
print(f"ratio enabled/disabled, per shardgate-process CPU second: {pon / poff:.3f}  (less sensitive to other load on CPU {cpu})")
if b / t > 0.10:
    print(f"WARNING: CPU {cpu} was {b / t:.0%} busy with no server running: other processes spoil these figures; run again on an idle machine")
EOF
log "raw outputs: $OUT"
