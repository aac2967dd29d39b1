#!/usr/bin/env bash
# Client efficiency of the bundled load generator against dnsperf.
#
# Same target, same offered rate, one client core (taskset -c 0; the target
# is pinned to CPU 1): CPU time the client spends per answered query,
# `shardgate-load dns` vs `dnsperf`, interleaved rounds, median ratio
# (target: <= 0.5). Then the highest rate each client reaches from one core
# (closed loop); there the target's core may be the limit, so its busy
# share is printed too.
#
# Target: shardgate (`shardgate run`, one shard) when it answers DNS,
# otherwise Knot DNS (knotd) with a trivial zone. Not a test: prints figures.
#
#   scripts/bench-load.sh [--target auto|shardgate|knot] [--rates "20000 50000 100000"]
#                         [--duration SECONDS] [--rounds N] [--tick auto|DURATION]
#                         [--batch N] [--no-build]
# (--tick/--batch: shardgate-load's open-loop batching. --batch defaults to 32 here,
# 8 in shardgate-load itself: 32 requests per wake-up cut its CPU by about a
# third at 50k/s and up, at the cost of burstier load: 640 us between bursts at 50k/s.)
set -euo pipefail
cd "$(dirname "$0")/.."

target=auto
rates="20000 50000 100000"
duration=5
rounds=3
tick=auto
batch=32
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --tick) tick=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

for tool in dnsperf taskset dig; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install dnsperf util-linux dnsutils" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then echo "needs 2 CPUs (client on 0, target on 1)" >&2; exit 2; fi

if [ "$build" = 1 ]; then cargo build --release --quiet --bin shardgate --bin shardgate-load; fi
LOAD=$PWD/target/release/shardgate-load
SG=$PWD/target/release/shardgate

work=$(mktemp -d /tmp/bench-load.XXXXXX)
port=47353
admin=47354
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/queries.txt" <<'Q'
upf.svc.example. A
upf.svc.example. AAAA
site.svc.example. TXT
_pfcp._udp.svc.example. SRV
Q

answers() { dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 upf.svc.example A 2>/dev/null | grep -c '^10\.' || true; }

start_shardgate() {
  cat > "$work/shardgate.toml" <<T
[server]
shards = 1
admin_listen = "127.0.0.1:$admin"
state_dir = "$work/state"

[dns]
listen = ["127.0.0.1:$port"]

[functions]
enabled = false

[[zone]]
name = "svc.example."
ttl = 30
soa = { mname = "ns1.svc.example.", rname = "hostmaster.svc.example." }

[[view]]
name = "default"
record = [
  { name = "upf.svc.example.", type = "A", data = "10.0.9.5" },
  { name = "upf.svc.example.", type = "AAAA", data = "fd00:9::5" },
  { name = "site.svc.example.", type = "TXT", data = "default" },
  { name = "_pfcp._udp.svc.example.", type = "SRV", data = "10 10 8805 upf.svc.example." },
]
T
  taskset -c 1 "$SG" run --config "$work/shardgate.toml" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 50); do [ "$(answers)" -ge 1 ] && return 0; sleep 0.1; done
  kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""
  return 1
}

start_knot() {
  command -v knotd >/dev/null || { echo "missing knotd: apt-get install knot" >&2; exit 2; }
  cat > "$work/knot.conf" <<K
server:
    rundir: "$work"
    listen: 127.0.0.1@$port
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$work"
log:
  - target: stderr
    any: warning
zone:
  - domain: svc.example.
    storage: "$work"
    file: "svc.example.zone"
K
  cat > "$work/svc.example.zone" <<'Z'
$ORIGIN svc.example.
$TTL 30
@ SOA ns1 hostmaster 1 3600 600 86400 30
@ NS ns1
ns1 A 127.0.0.1
upf A 10.0.9.5
upf AAAA fd00:9::5
site TXT "default"
_pfcp._udp SRV 10 10 8805 upf
Z
  knotd -c "$work/knot.conf" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 50); do [ "$(answers)" -ge 1 ] && break; sleep 0.1; done
  [ "$(answers)" -ge 1 ] || { echo "knotd does not answer; log:" >&2; cat "$work/server.log" >&2; exit 1; }
  # Knot pins its workers itself: re-pin every thread to CPU 1.
  taskset -a -p -c 1 "$server_pid" >/dev/null
}

case "$target" in
  shardgate) start_shardgate || { echo "shardgate does not answer DNS; log:" >&2; cat "$work/server.log" >&2; exit 1; } ; name=shardgate ;;
  knot) start_knot; name=knot ;;
  auto) if start_shardgate; then name=shardgate; else start_knot; name=knot; fi ;;
  *) echo "--target auto|shardgate|knot" >&2; exit 2 ;;
esac
echo "target: $name on 127.0.0.1:$port (CPU 1); clients on CPU 0; ${duration}s per run, $rounds round(s); shardgate-load --tick $tick --batch $batch"

# Children's user+sys CPU seconds of this shell so far: bash `times`
# (second line), run in this shell (not a subshell) and parsed from a file.
child_cpu() { awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } } END { printf "%.3f", t }' "$1"; }
# Busy and total jiffies of one CPU from /proc/stat.
cpu_jiffies() { awk -v c="cpu$1" '$1 == c { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat; }

# run_client TOOL RATE(0 = as fast as it goes): writes
# "answered cpu_seconds qps target_busy wall_seconds" to $work/result.
run_client() {
  local tool=$1 rate=$2 before after answered s0 s1
  s0=$(cpu_jiffies 1)
  local w0 w1
  w0=$(date +%s.%N)
  times >"$work/t0"
  if [ "$tool" = dnsperf ]; then
    local rateopt=()
    if [ "$rate" != 0 ]; then rateopt=(-Q "$rate"); else rateopt=(-q 256); fi
    taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -l "$duration" "${rateopt[@]}" >"$work/out" 2>&1
  else
    local loadopt=()
    if [ "$rate" != 0 ]; then loadopt=(--rate "$rate" --tick "$tick" --batch "$batch"); else loadopt=(-n 256); fi
    taskset -c 0 "$LOAD" dns --target "127.0.0.1:$port" -f "$work/queries.txt" -d "${duration}s" --warmup 0 \
      --timeout 1s "${loadopt[@]}" --quiet --brief --json "$work/r.json" >"$work/out" 2>&1
  fi
  # Right after the client: the parsing below runs more child processes.
  times >"$work/t1"
  w1=$(date +%s.%N)
  if [ "$tool" = dnsperf ]; then
    answered=$(awk '/Queries completed:/ { print $3 }' "$work/out")
  else
    answered=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["counts"]; print(c["answered"])' "$work/r.json")
  fi
  before=$(child_cpu "$work/t0")
  after=$(child_cpu "$work/t1")
  s1=$(cpu_jiffies 1)
  awk -v a="$answered" -v b="$before" -v e="$after" -v d="$duration" -v s0="$s0" -v s1="$s1" \
      -v w0="$w0" -v w1="$w1" 'BEGIN {
    split(s0, x, " "); split(s1, y, " ");
    busy = (y[2] > x[2]) ? (y[1] - x[1]) / (y[2] - x[2]) : 0;
    printf "%d %.3f %.0f %.2f %.3f\n", a, e - b, a / d, busy, w1 - w0 }' >"$work/result"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo
printf '%-8s %-15s %10s %8s %12s\n' rate client answered cpu_s "us/answer"
for rate in $rates; do
  : >"$work/ratios"
  for round in $(seq "$rounds"); do
    run_client dnsperf "$rate"; read -r pa pc _ _ _ <"$work/result"
    run_client load "$rate"; read -r la lc _ _ _ <"$work/result"
    pu=$(awk -v c="$pc" -v a="$pa" 'BEGIN { printf "%.3f", a ? c * 1e6 / a : 0 }')
    lu=$(awk -v c="$lc" -v a="$la" 'BEGIN { printf "%.3f", a ? c * 1e6 / a : 0 }')
    printf '%-8s %-15s %10s %8s %12s\n' "$rate" dnsperf "$pa" "$pc" "$pu"
    printf '%-8s %-15s %10s %8s %12s\n' "$rate" shardgate-load "$la" "$lc" "$lu"
    awk -v l="$lu" -v p="$pu" 'BEGIN { if (p > 0) printf "%.3f\n", l / p }' >>"$work/ratios"
  done
  echo "rate $rate: CPU per answered query, shardgate-load / dnsperf = $(median <"$work/ratios") (median of $rounds; target <= 0.5)"
done

echo
echo "highest rate from one client core (closed loop, 256 outstanding). When the"
echo "target's core is saturated (busy ~1.00) the target is the limit: the client's"
echo "own ceiling is then estimated as rate / (client CPU seconds per wall second)."
for round in $(seq "$rounds"); do
  run_client dnsperf 0; read -r _ pc pq pb pw <"$work/result"
  run_client load 0; read -r _ lc lq lb lw <"$work/result"
  awk -v pc="$pc" -v pq="$pq" -v pb="$pb" -v pw="$pw" -v lc="$lc" -v lq="$lq" -v lb="$lb" -v lw="$lw" -v r="$round" 'BEGIN {
    pu = pc / pw; lu = lc / lw;
    printf "  round %s: dnsperf %d/s (client core %.2f, ceiling ~%d/s, target busy %.2f)   shardgate-load %d/s (client core %.2f, ceiling ~%d/s, target busy %.2f)\n",
      r, pq, pu, (pu > 0 ? pq / pu : 0), pb, lq, lu, (lu > 0 ? lq / lu : 0), lb }'
done
