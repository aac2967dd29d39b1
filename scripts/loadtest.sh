#!/usr/bin/env bash
# The common shardgate load tests, results in one folder.
#
#   scripts/loadtest.sh [--out DIR] [--duration 10s] [--warmup 2s]
#                       [--rate 50000] [--fn-rate 5000] [--threads 1]
#                       [--connections 16] [--function checksum] [--data STR]
#                       [--dns ADDR:PORT --fn ADDR:PORT] [--handoff]
#
# Without --dns/--fn it builds shardgate and starts it on a generated config
# (two views on 127.0.0.0/25 and 127.0.0.128/25, the example functions from
# functions/; DNS 127.0.0.1:47453, functions 127.0.0.1:47454, admin
# 127.0.0.1:47455) and stops it at the end. With them it loads that running
# shardgate (loopback only; shardgate-load refuses other targets).
#
# Runs, each writing DIR/<run>.json and DIR/<run>.txt (full output):
#   dns-max    DNS, closed loop, 256 outstanding, sources 127.0.0.2-127.0.0.254
#              (so both views answer): the throughput ceiling
#   dns-rate   DNS, open loop at --rate, same sources: honest latency
#   fn-udp     function datagrams, open loop at --fn-rate
#   fn-http    function POSTs, open loop at --fn-rate over --connections
# then DIR/latency.png (open-loop runs overlaid), DIR/latency-max.png and
# DIR/summary.txt (every run's summary table).
# --handoff also runs the hand-off pair (scripts/bench-handoff.sh: nodes A
# and B on 127.0.0.2/.3, A offered 2x and 1.5x its capacity, with and
# without hand-off) into DIR/handoff.txt and appends its table to the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

out=""
duration=10s
warmup=2s
rate=50000
fn_rate=5000
threads=1
connections=16
function=checksum
data="shardgate load test payload: 64 bytes of data to checksum......"
dns=""
fn=""
handoff=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --fn-rate) fn_rate=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --function) function=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --dns) dns=$2; shift 2 ;;
    --fn) fn=$2; shift 2 ;;
    --handoff) handoff=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see $0 --help)" >&2; exit 2 ;;
  esac
done
out=${out:-results/loadtest-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -f "$repo/Cargo.toml" ]; then
  cargo build --release --quiet --bin shardgate --bin shardgate-load
  LOAD=$repo/target/release/shardgate-load
  SG=$repo/target/release/shardgate
else
  # Installed by the Debian package as /usr/share/shardgate/scripts/:
  # the binaries are on PATH, the example functions in ../functions.
  LOAD=$(command -v shardgate-load) || { echo "shardgate-load not on PATH" >&2; exit 2; }
  SG=$(command -v shardgate) || { echo "shardgate not on PATH" >&2; exit 2; }
fi

server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if [ -z "$dns" ] && [ -z "$fn" ]; then
  dns=127.0.0.1:47453
  fn=127.0.0.1:47454
  cat >"$out/shardgate.toml" <<T
[server]
admin_listen = "127.0.0.1:47455"
state_dir = "$out/state"

[dns]
listen = ["$dns"]

[functions]
listen = ["$fn"]
dir = "$repo/functions"
cache_dir = "$out/cache"

[[zone]]
name = "svc.example."
ttl = 30
soa = { mname = "ns1.svc.example.", rname = "hostmaster.svc.example." }

[[view]]
name = "site-a"
prefixes = ["127.0.0.0/25"]
record = [
  { name = "upf.svc.example.", type = "A", data = "10.0.1.5" },
  { name = "upf.svc.example.", type = "AAAA", data = "fd00:1::5" },
  { name = "_pfcp._udp.svc.example.", type = "SRV", data = "10 10 8805 upf.svc.example." },
]

[[view]]
name = "site-b"
prefixes = ["127.0.0.128/25"]
record = [
  { name = "upf.svc.example.", type = "A", data = "10.0.2.5" },
  { name = "upf.svc.example.", type = "AAAA", data = "fd00:2::5" },
  { name = "_pfcp._udp.svc.example.", type = "SRV", data = "10 10 8805 upf.svc.example." },
]

[[view]]
name = "default"
record = [{ name = "upf.svc.example.", type = "A", data = "10.0.9.5" }]
T
  "$SG" run --config "$out/shardgate.toml" >"$out/shardgate.log" 2>&1 &
  server_pid=$!
  ready=0
  for _ in $(seq 300); do
    if curl -fsS http://127.0.0.1:47455/readyz >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$ready" != 1 ]; then
    echo "shardgate did not become ready; its log:" >&2
    cat "$out/shardgate.log" >&2
    exit 1
  fi
  echo "shardgate started (pid $server_pid), config $out/shardgate.toml"
fi

cat >"$out/queries.txt" <<'Q'
upf.svc.example. A
upf.svc.example. AAAA
_pfcp._udp.svc.example. SRV
nx.svc.example. A
Q

: >"$out/summary.txt"
# run NAME ARGS...: one shardgate-load run into DIR/NAME.{json,txt}.
run() {
  local name=$1
  shift
  echo "== $name"
  "$LOAD" "$@" --duration "$duration" --warmup "$warmup" --threads "$threads" \
    --label "$name" --json "$out/$name.json" --quiet >"$out/$name.txt"
  # The summary table is the last block of the output.
  awk '/^shardgate-load /{p=1} p' "$out/$name.txt" | tee -a "$out/summary.txt"
  echo >>"$out/summary.txt"
}

sources=127.0.0.2-127.0.0.254
open=()
if [ -n "$dns" ]; then
  run dns-max dns --target "$dns" -f "$out/queries.txt" --source "$sources" -n 256
  run dns-rate dns --target "$dns" -f "$out/queries.txt" --source "$sources" --rate "$rate"
  open+=("$out/dns-rate.json")
fi
if [ -n "$fn" ]; then
  run fn-udp fn-udp --target "$fn" -F "$function" --data "$data" --rate "$fn_rate"
  run fn-http fn-http --target "$fn" -F "$function" --data "$data" --rate "$fn_rate" -c "$connections"
  open+=("$out/fn-udp.json" "$out/fn-http.json")
fi
if [ ${#open[@]} -gt 0 ]; then
  "$LOAD" plot "${open[@]}" -o "$out/latency.png" --title "shardgate open-loop latency"
fi
if [ -n "$dns" ]; then
  "$LOAD" plot "$out/dns-max.json" -o "$out/latency-max.png" --title "DNS, closed loop (256 outstanding)"
fi
if [ "$handoff" = 1 ]; then
  echo "== handoff (scripts/bench-handoff.sh)"
  "$repo/scripts/bench-handoff.sh" --no-build >"$out/handoff.txt" 2>&1
  { echo "hand-off pair (scripts/bench-handoff.sh):"; tail -n 20 "$out/handoff.txt"; } | tee -a "$out/summary.txt"
fi
echo "results in $out (summary.txt, latency.png)"
