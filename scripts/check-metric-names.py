#!/usr/bin/env python3
"""Check that every metric name the alert rules and the Grafana dashboard use
exists in a live shardgate /metrics output.

Usage:
  scripts/check-metric-names.py --metrics http://127.0.0.1:9353/metrics
  scripts/check-metric-names.py --metrics metrics.txt [--token TOKEN] [FILE ...]

FILEs default to deploy/prometheus/alerts.yml and deploy/grafana/shardgate.json.
Every token that looks like one of shardgate's metric names (shardgate_* or
process_*) anywhere in those files must be a sample name in the /metrics
output (histograms count as their _bucket, _sum and _count samples).
Exit 0 when all exist; 1 listing the missing ones; 2 on usage errors.
"""

import argparse
import os
import re
import sys
import urllib.request

NAME = re.compile(r"\b((?:shardgate|process)_[a-zA-Z0-9_]*[a-zA-Z0-9])\b")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{|\s)")


def read_metrics(source, token):
    if source.startswith("http://") or source.startswith("https://"):
        req = urllib.request.Request(source)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read().decode("utf-8")
    with open(source, encoding="utf-8") as f:
        return f.read()


def sample_names(text):
    names = set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if m:
            names.add(m.group(1))
    return names


def used_names(path):
    with open(path, encoding="utf-8") as f:
        return set(NAME.findall(f.read()))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metrics", required=True, help="/metrics URL or a file holding its output")
    ap.add_argument("--token", default=os.environ.get("SHARDGATE_ADMIN_TOKEN"), help="admin bearer token")
    ap.add_argument("files", nargs="*", default=[
        os.path.join(root, "deploy/prometheus/alerts.yml"),
        os.path.join(root, "deploy/grafana/shardgate.json"),
    ])
    args = ap.parse_args()

    try:
        exported = sample_names(read_metrics(args.metrics, args.token))
    except OSError as e:
        print(f"cannot read metrics from {args.metrics}: {e}", file=sys.stderr)
        return 2
    if not exported:
        print(f"{args.metrics} holds no samples: is it shardgate's /metrics?", file=sys.stderr)
        return 2

    missing = {}
    total = 0
    for path in args.files:
        try:
            used = used_names(path)
        except OSError as e:
            print(f"cannot read {path}: {e}", file=sys.stderr)
            return 2
        if not used:
            print(f"{path} uses no shardgate metric at all: wrong file?", file=sys.stderr)
            return 2
        total += len(used)
        for name in sorted(used - exported):
            missing.setdefault(name, []).append(path)

    if missing:
        for name, paths in sorted(missing.items()):
            print(f"missing from /metrics: {name} (used in {', '.join(paths)})")
        return 1
    print(f"ok: {total} metric name(s) used in {len(args.files)} file(s), all exported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
