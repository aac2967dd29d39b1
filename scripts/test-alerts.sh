#!/usr/bin/env bash
# Alert rule tests: `promtool check rules` and `promtool test rules` on
# deploy/prometheus/alerts.yml with deploy/prometheus/alerts.test.yml, and
# that every alert has a test case in which it fires and a runbook_url that
# points at a section of deploy/runbook.md. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-alerts: FAIL: $*" >&2; exit 1; }
command -v promtool >/dev/null 2>&1 ||
    fail "promtool not found (apt-get install prometheus; scripts/test.sh installs it)"

cd deploy/prometheus
promtool check rules alerts.yml >/dev/null || fail "promtool check rules alerts.yml"
timeout 120 promtool test rules alerts.test.yml || fail "promtool test rules alerts.test.yml"

python3 - <<'PY' || exit 1
import re, sys
import yaml

rules = yaml.safe_load(open("alerts.yml"))
tests = yaml.safe_load(open("alerts.test.yml"))
runbook = open("../runbook.md").read()
# GitHub-style anchors of the runbook's headings.
anchors = set()
for h in re.findall(r"^#+ (.+)$", runbook, re.M):
    anchors.add(re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-"))
fired = set()
for t in tests["tests"]:
    for case in t.get("alert_rule_test", []):
        if case.get("exp_alerts"):
            fired.add(case["alertname"])
problems = []
count = 0
for g in rules["groups"]:
    for r in g["rules"]:
        name = r.get("alert")
        if not name:
            continue
        count += 1
        if name not in fired:
            problems.append(f"{name}: no test case in alerts.test.yml where it fires")
        url = r.get("annotations", {}).get("runbook_url", "")
        anchor = url.partition("#")[2]
        if not url.startswith("file:///usr/share/doc/shardgate/runbook.md#") or anchor not in anchors:
            problems.append(f"{name}: runbook_url {url!r} does not point at a section of deploy/runbook.md")
for p in problems:
    print("test-alerts: FAIL: " + p, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"test-alerts: {count} alerts, each fired by a promtool test case, each with a runbook section")
PY
