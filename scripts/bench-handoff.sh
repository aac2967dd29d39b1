#!/usr/bin/env bash
# Hand-off under overload: what a paired alternate buys an overloaded node.
#
# Two nodes on loopback, one shard each: A (127.0.0.2, CPU 0) and B
# (127.0.0.3, CPU 1, idle but for what A hands it). A CPU-bound function
# (tests/handoff_fixtures/spin.wat, calibrated to ~400 us per call on A, so
# the load generator takes little CPU beside B) so capacity is
# function-bound. A is offered 1.8x and 1.5x its capacity
# (`shardgate-load fn-udp`, open loop, on CPU 1) twice: with hand-off
# (relay replies) and with A's [handoff] removed (same load). Reported per
# run: answered ratio, end-to-end p50/p99 of all requests, and from a
# low-rate probe beside the load, p50/p99 of requests A served itself vs
# requests B served (B runs a copy of the function that marks its output,
# so the probe can tell them apart), and the handed-off share (A's
# hand-offs over everything A was offered, from A's metrics) beside the
# share a perfect split needs, 1 - 1/factor. Not a test: prints figures.
#
#   scripts/bench-handoff.sh [--duration SECONDS] [--factors "1.8 1.5"] [--target-us 400]
#                            [--max-wait-us 2000] [--target-busy 97] [--reply relay|direct]
#                            [--no-build]
#
# --reply: how B answers handed-off requests (default relay: through A,
# which forwards; direct: raw socket from A's address, needs root or
# CAP_NET_RAW).
#
# On a 2-CPU machine B shares CPU 1 with the load generator and the probe
# (both pinned there, so A has CPU 0 to itself), so B's capacity for
# handed-off work is well below A's: read the 1.5x run as what the pair
# absorbs when B has the room. Each run also prints both CPUs' busy shares
# (/proc/stat) and how much of CPU 0 A's local calls account for: A busy
# near 100% with its local calls filling it is the work-conserving policy;
# CPU 1 near 100% means B had no room left.
#
# Bounded: about 2 x factors x (duration + 4) seconds plus calibration.
# Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=8
factors="1.8 1.5"
target_us=400
target_busy=97
reply=relay
max_wait_us=2000
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --factors) factors=$2; shift 2 ;;
    --target-us) target_us=$2; shift 2 ;;
    --target-busy) target_busy=$2; shift 2 ;;
    --max-wait-us) max_wait_us=$2; shift 2 ;;
    --reply) reply=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
for tool in taskset python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then echo "needs 2 CPUs (A on 0, B and the load on 1)" >&2; exit 2; fi
if [ "$build" = 1 ]; then cargo build --release --quiet --bin shardgate --bin shardgate-load; fi
SG=$PWD/target/release/shardgate
LOAD=$PWD/target/release/shardgate-load
SPIN=$PWD/tests/handoff_fixtures/spin.wat

work=$(mktemp -d /tmp/bench-handoff.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Ports below the ephemeral range, fixed per run of this script.
base=$((21000 + RANDOM % 9000))
A_FN=$base; A_DNS=$((base + 1)); A_ADMIN=$((base + 2)); A_HO=$((base + 3))
B_FN=$((base + 4)); B_DNS=$((base + 5)); B_ADMIN=$((base + 6)); B_HO=$((base + 7))
head -c 32 /dev/urandom >"$work/handoff.key"; chmod 600 "$work/handoff.key"
# B's copy marks its output: first byte 'B'.
sed 's/(i32.store (i32.const 0) (local.get $acc))/(i32.store (i32.const 0) (local.get $acc)) (i32.store8 (local.get $ptr) (i32.const 66))/' \
  "$SPIN" >"$work/spin_b.wat"
grep -q "i32.const 66" "$work/spin_b.wat" || { echo "could not derive spin_b.wat" >&2; exit 1; }

config() { # name ip fn dns admin ho peer_ip peer_ho module handoff(0/1)
  cat <<EOF
[server]
shards = 1
io_memory_kib = 128
admin_listen = "$2:$5"
shutdown_grace_ms = 200
state_dir = "$work/state-$1"
[dns]
listen = ["$2:$4"]
[[zone]]
name = "svc.example."
[zone.soa]
mname = "ns1.svc.example."
rname = "hostmaster.svc.example."
[[view]]
name = "default"
[functions]
listen = ["$2:$3"]
cache_dir = ""
[functions.defaults]
ring_depth = 32
[[function]]
name = "spin"
module = "$9"
deadline_ms = 1000
EOF
  if [ "${10}" = 1 ]; then
    cat <<EOF
[handoff]
alternate = "$7:$8"
listen = "$2:$6"
key_file = "$work/handoff.key"
reply = "$reply"
max_wait_us = $max_wait_us
target_busy_percent = $target_busy
heartbeat_interval_ms = 100
heartbeat_misses = 5
dns = false
EOF
  fi
}

start() { # name cpu config
  taskset -c "$2" "$SG" run --config "$3" >"$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 600); do
    grep -q "shardgate serving" "$work/$1.log" && return 0
    sleep 0.05
  done
  echo "node $1 did not start:" >&2; cat "$work/$1.log" >&2; exit 1
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}

metric() { # ip admin prefix
  python3 - "$1" "$2" "$3" <<'PY'
import sys, urllib.request
ip, port, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
text = urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=5).read().decode()
print(sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(prefix)))
PY
}

input() { # rounds -> file
  python3 -c 'import struct,sys; sys.stdout.buffer.write(b"spin" + struct.pack("<I", int(sys.argv[1])) + b"x" * 24)' "$1" >"$work/in.bin"
}

# --- calibration: A alone, no hand-off, closed loop ---------------------------
config A 127.0.0.2 $A_FN $A_DNS $A_ADMIN $A_HO 127.0.0.3 $B_HO "$SPIN" 0 >"$work/a-plain.toml"
start A 0 "$work/a-plain.toml"
capacity() { # rounds -> calls/s
  input "$1"
  taskset -c 1 "$LOAD" fn-udp --target 127.0.0.2:$A_FN -F spin --data-file "$work/in.bin" \
    -n 16 -d 2s --warmup 500ms --quiet --brief --json "$work/cal.json" >/dev/null 2>&1
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["throughput_per_s"])' "$work/cal.json"
}
rounds=20000
c0=$(capacity $rounds)
rounds=$(python3 -c "print(max(1, int($rounds * $target_us * 1e-6 * $c0)))")
cap=$(capacity $rounds)
stop_all
echo "calibration: spin rounds $rounds -> capacity of A alone ~$(printf %.0f "$cap") calls/s (~$(python3 -c "print(round(1e6/$cap,1))") us per call)"

probe() { # seconds -> prints "local_n local_p50 local_p99 b_n b_p50 b_p99 lost"
  taskset -c 1 python3 - "$1" 127.0.0.2 $A_FN "$rounds" <<'PY'
import select, socket, struct, sys, time
secs, ip, port, rounds = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); s.setblocking(False)
sent, got = {}, {}
def frame(i):
    name = b"spin"
    payload = b"spin" + struct.pack("<I", rounds) + b"probe"
    return b"SGFN\x01\x00" + struct.pack(">Q", i) + bytes([len(name)]) + name + payload
def drain():
    while True:
        try:
            d = s.recv(65536)
        except BlockingIOError:
            return
        if len(d) < 15 or d[:4] != b"SGFN": continue
        i = struct.unpack(">Q", d[6:14])[0]
        if i in sent and i not in got:
            got[i] = (time.perf_counter() - sent[i], d[15:16] == b"B", d[14])
end = time.perf_counter() + secs; i = 0; nxt = time.perf_counter()
# Sleep in select() until the next send or a reply (no polling: the probe
# shares CPU 1 with B and the load generator).
while time.perf_counter() < end:
    now = time.perf_counter()
    if now >= nxt:
        i += 1; sent[i] = now; s.sendto(frame(i), (ip, port)); nxt += 0.004
    select.select([s], [], [], max(0.0, nxt - time.perf_counter()))
    drain()
stop = time.perf_counter() + 1.2
while time.perf_counter() < stop:
    select.select([s], [], [], 0.05); drain()
def pct(v, q):
    if not v: return "-"
    v = sorted(v); return round(v[min(len(v) - 1, int(q * len(v)))] * 1e6)
ok = [x for x in got.values() if x[2] == 0]
loc = [t for t, b, _ in ok if not b]; rem = [t for t, b, _ in ok if b]
print(len(loc), pct(loc, .5), pct(loc, .99), len(rem), pct(rem, .5), pct(rem, .99), len(sent) - len(got))
PY
}

run() { # label handoff(0/1)
  config A 127.0.0.2 $A_FN $A_DNS $A_ADMIN $A_HO 127.0.0.3 $B_HO "$SPIN" "$2" >"$work/a.toml"
  config B 127.0.0.3 $B_FN $B_DNS $B_ADMIN $B_HO 127.0.0.2 $A_HO "$work/spin_b.wat" "$2" >"$work/b.toml"
  start A 0 "$work/a.toml"
  start B 1 "$work/b.toml"
  if [ "$2" = 1 ]; then
    for _ in $(seq 1 100); do
      [ "$(metric 127.0.0.2 $A_ADMIN shardgate_handoff_alternate_up)" != "0.0" ] && break
      sleep 0.1
    done
  fi
  input "$rounds"
  probe "$((duration + 1))" >"$work/probe.txt" &
  local probe_pid=$!
  local cpu0_before cpu0_after
  cpu0_before=$(awk '$1 == "cpu0" || $1 == "cpu1" {printf "%s %s ", $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
  taskset -c 1 "$LOAD" fn-udp --target 127.0.0.2:$A_FN -F spin --data-file "$work/in.bin" \
    --rate "$rate" -d "${duration}s" --warmup 1s --timeout 1s --quiet --brief --json "$work/r.json" >/dev/null 2>&1
  cpu0_after=$(awk '$1 == "cpu0" || $1 == "cpu1" {printf "%s %s ", $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
  wait "$probe_pid"
  sleep 1.2 # one metrics publish
  local over local_ok
  over=$(metric 127.0.0.2 $A_ADMIN 'shardgate_handoffs_total{shard="0",reason="overloaded"}')
  local_ok=$(metric 127.0.0.2 $A_ADMIN 'shardgate_function_invocations_total{shard="0",function="spin",outcome="ok"}')
  python3 - "$work/r.json" "$1" "$over" "$local_ok" "$factor" $(cat "$work/probe.txt") $cpu0_before $cpu0_after "$cap" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); label, over = sys.argv[2], float(sys.argv[3])
local_ok, factor = float(sys.argv[4]), float(sys.argv[5])
ln, lp50, lp99, bn, bp50, bp99, plost = sys.argv[6:13]
b0, t0, c0, u0, b1, t1, c1, u1, cap = (float(x) for x in sys.argv[13:22])
busy = (b1 - b0) / max(1.0, t1 - t0)
busy1 = (c1 - c0) / max(1.0, u1 - u0)
secs = (t1 - t0) / 100.0  # USER_HZ ticks of CPU 0
work = local_ok / cap / max(secs, 1e-9)  # share of CPU 0 the local calls need
share = 100.0 * over / max(1.0, over + local_ok)
needed = 100.0 * (1 - 1 / factor)
c, l = r["counts"], r["latency"]
print(f"{label:<22} answered {c['ok']}/{c['sent']} = {100.0 * c['ok'] / max(1, c['sent']):.2f}% "
      f"(errors {c['errors']}, lost {c['lost']}); all: p50 {l['p50_us']:.0f} us, p99 {l['p99_us']:.0f} us; "
      f"handed off {over:.0f} (share {share:.1f}%, needed {needed:.1f}%; A served {local_ok:.0f})")
print(f"{'':<22} probe: served by A {ln} (p50 {lp50} us, p99 {lp99} us), by B {bn} (p50 {bp50} us, p99 {bp99} us), lost {plost}")
per = (busy - work) * secs / over * 1e6 if over else 0.0
print(f"{'':<22} A's CPU 0: busy {100 * busy:.1f}%, local calls {100 * work:.1f}% of it"
      + (f", the rest {per:.0f} us per handed-off request" if over else "")
      + f"; CPU 1 (B, load generator, probe): busy {100 * busy1:.1f}%")
PY
  stop_all
}

for factor in $factors; do
  rate=$(python3 -c "print(int($cap * $factor))")
  echo
  echo "offered to A: $rate calls/s (x$factor), open loop, ${duration}s measured, 1s timeout"
  run "with hand-off" 1
  run "hand-off disabled" 0
done
