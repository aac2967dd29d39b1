#!/usr/bin/env bash
# The fleet map's figures ([cluster], a real etcd on loopback):
#
# 1. propagation: three nodes (127.0.0.2/.3/.4, one shard each); --changes
#    record changes through node 1's API, one at a time; for each, the time
#    from the API's acknowledgement until all three nodes answer the new
#    address over DNS. p50/p99/max (and the acknowledgement's own p50/p99).
# 2. sync: a fresh node joining a map of each of --sizes prefixes (views of
#    1,000 prefixes each, written straight to etcd): time until it serves
#    etcd's revision, and its resident memory beside the same node without
#    [cluster] (baseline, same run).
# 3. DNS cost under churn: node 1 (CPU 0) offered --rate q/s by dnsperf (CPU
#    1) for --seconds, without and then with --churn changes/s streaming in
#    through node 2: answered queries per CPU-second of node 1, and the
#    ratio (target >= 0.95).
#
#   scripts/bench-cluster.sh [--changes 1000] [--sizes 100000,1000000]
#                            [--seconds 10] [--rate 20000] [--churn 100] [--rounds 3]
#                            [--only propagation,sync,cost] [--json FILE] [--no-build]
#
# Bounded: each wait has a deadline; about 2-6 minutes with the defaults
# (the 1M-prefix sync dominates). Needs etcd, etcdctl, dnsperf, taskset.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0; shift ;;
    --changes|--sizes|--seconds|--rate|--churn|--rounds|--only|--json) args+=("$1" "$2"); shift 2 ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
for tool in etcd dnsperf taskset python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (scripts/test.sh installs it)" >&2; exit 2; }
done
if [ "$build" = 1 ]; then
  cargo build --release --quiet
fi
exec python3 scripts/bench/cluster.py "${args[@]}"
