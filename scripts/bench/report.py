#!/usr/bin/env python3
"""Summaries for scripts/bench-dns.sh.

    report.py run DIR SERVER KIND ROUND CPU   one run: dnsperf outputs + /proc samples
                                              -> DIR/summary.json, DIR/latency-us.tsv;
                                              the per-query lines of dnsperf -v are
                                              folded into the histogram and dropped
    report.py table OUTDIR CPU                every run -> the comparison table
"""

import glob
import json
import os
import statistics
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(path, cpu):
    """(busy, total) jiffies of `cpu` in a saved /proc/stat."""
    with open(path) as f:
        for line in f:
            fields = line.split()
            if fields[0] == f"cpu{cpu}":
                v = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
                idle = v[3] + v[4]
                return sum(v) - idle, sum(v)
    raise SystemExit(f"report.py: cpu{cpu} not in {path}")


def irq_times(path, cpu):
    """irq + softirq jiffies of `cpu` in a saved /proc/stat."""
    with open(path) as f:
        for line in f:
            fields = line.split()
            if fields[0] == f"cpu{cpu}":
                return int(fields[6]) + int(fields[7])
    raise SystemExit(f"report.py: cpu{cpu} not in {path}")


def share(d, cpu, before="stat.before", after="stat.after"):
    b0, t0 = cpu_times(os.path.join(d, before), cpu)
    b1, t1 = cpu_times(os.path.join(d, after), cpu)
    return (b1 - b0), (t1 - t0)


def proc_ticks(path):
    with open(path) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # fields after the comm: state is index 0, utime is field 14 -> index 11
    return int(rest[11]) + int(rest[12])


def percentile(hist, total, q):
    """Smallest latency (us) with at least q of the samples at or below it."""
    need = q * total
    seen = 0
    for us in sorted(hist):
        seen += hist[us]
        if seen >= need:
            return us
    return 0


def run(d, server, kind, rnd, cpu):
    cpu = int(cpu)
    hist = {}
    completed = lost = 0
    qps = 0.0
    rcodes = {}
    for path in sorted(glob.glob(os.path.join(d, "dnsperf-*.out"))):
        kept = []
        with open(path) as f:
            for line in f:
                if line.startswith("> "):
                    parts = line.split()
                    rcodes[parts[1]] = rcodes.get(parts[1], 0) + 1
                    try:
                        us = round(float(parts[-1]) * 1e6)
                    except ValueError:
                        continue
                    hist[us] = hist.get(us, 0) + 1
                    continue
                kept.append(line)
                s = line.strip()
                if s.startswith("Queries completed:"):
                    completed += int(s.split()[2])
                elif s.startswith("Queries lost:"):
                    lost += int(s.split()[2])
                elif s.startswith("Queries per second:"):
                    qps += float(s.split()[3])
        with open(path, "w") as f:
            f.writelines(kept)
    with open(os.path.join(d, "latency-us.tsv"), "w") as f:
        f.write("latency_us\tcount\n")
        for us in sorted(hist):
            f.write(f"{us}\t{hist[us]}\n")
    n = sum(hist.values())
    busy, total = share(d, cpu)
    cbusy, ctotal = share(d, 0)
    with open(os.path.join(d, "time.before")) as f:
        t0 = float(f.read())
    with open(os.path.join(d, "time.after")) as f:
        t1 = float(f.read())
    wall = t1 - t0
    pticks = proc_ticks(os.path.join(d, "pidstat.after")) - proc_ticks(os.path.join(d, "pidstat.before"))
    # The server's own threads plus the interrupt work on its CPU (the
    # delivery of its replies): what the server costs even when other
    # processes share the CPU.
    own = pticks + irq_times(os.path.join(d, "stat.after"), cpu) - irq_times(os.path.join(d, "stat.before"), cpu)
    summary = {
        "server": server,
        "kind": kind,
        "round": int(rnd),
        "completed": completed,
        "lost": lost,
        "qps": qps,
        "rcodes": rcodes,
        "latency_avg_ms": (sum(us * c for us, c in hist.items()) / n / 1000) if n else None,
        "latency_p50_ms": percentile(hist, n, 0.50) / 1000 if n else None,
        "latency_p99_ms": percentile(hist, n, 0.99) / 1000 if n else None,
        "latency_p999_ms": percentile(hist, n, 0.999) / 1000 if n else None,
        "server_cpu_busy_share": busy / total if total else None,
        "server_process_share": pticks / CLK_TCK / wall if wall else None,
        "client_cpu_busy_share": cbusy / ctotal if ctotal else None,
        "queries_per_core_second": completed / (busy / CLK_TCK) if busy else None,
        "queries_per_process_cpu_second": completed / (pticks / CLK_TCK) if pticks else None,
        "queries_per_own_core_second": completed / (own / CLK_TCK) if own else None,
        "wall_s": wall,
    }
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(
        f"    {server:9} {kind:5} QPS {qps:9.0f}  busy {summary['server_cpu_busy_share']:.1%}  "
        f"q/core-s {summary['queries_per_core_second'] or 0:9.0f}  "
        f"avg {summary['latency_avg_ms'] or 0:.3f} ms  p99 {summary['latency_p99_ms'] or 0:.3f} ms"
        + (f"  LOST {lost}" if lost else "")
    )


def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def table(out, cpu):
    runs = []
    for path in glob.glob(os.path.join(out, "runs", "*", "summary.json")):
        with open(path) as f:
            runs.append(json.load(f))
    if not runs:
        raise SystemExit("report.py: no runs")
    servers = [s for s in ("shardgate", "sg-handoff", "knot", "reflector") if any(r["server"] == s for r in runs)]
    rounds = max(r["round"] for r in runs)
    b, t = share(out, cpu, "idle.before", "idle.after")
    env = open(os.path.join(out, "env.txt")).read()
    lines = []
    w = lines.append
    w("DNS benchmark: shardgate vs Knot DNS (geoip views), same query file and load")
    w(env.rstrip())
    w(f"background busy share of CPU {cpu} with no server running: {b / t:.1%}" if t else "")
    if t and b / t > 0.10:
        w(f"WARNING: other processes kept CPU {cpu} busy: the per-core figures below are not meaningful")
    w("medians over rounds; per-round values of queries per core-second in brackets")
    w("")
    col = 24
    results = {}
    for kind, title in (("sat", "saturating (dnsperf as fast as one core allows)"), ("fixed", "fixed rate")):
        w(f"== {title}")
        w("  " + "".ljust(34) + "".join(s.rjust(col) for s in servers))
        per = {s: sorted((r for r in runs if r["server"] == s and r["kind"] == kind), key=lambda r: r["round"]) for s in servers}
        results[kind] = {
            s: {k: med(per[s], k) for k, v in per[s][0].items() if isinstance(v, (int, float))} if per[s] else {}
            for s in servers
        }

        def row(label, f):
            w("  " + label.ljust(34) + "".join(f(s).rjust(col) for s in servers))

        row("QPS", lambda s: fmt(med(per[s], "qps"), ",.0f"))
        row("latency avg / p99 (ms)", lambda s: f"{fmt(med(per[s], 'latency_avg_ms'), '.3f')} / {fmt(med(per[s], 'latency_p99_ms'), '.3f')}")
        row(f"CPU {cpu} busy share", lambda s: fmt(med(per[s], "server_cpu_busy_share"), ".1%"))
        row("server process CPU share", lambda s: fmt(med(per[s], "server_process_share"), ".1%"))
        row("dnsperf CPU 0 busy share", lambda s: fmt(med(per[s], "client_cpu_busy_share"), ".1%"))
        row("queries per server core-second", lambda s: fmt(med(per[s], "queries_per_core_second"), ",.0f"))
        row("  per (server threads + irq) second", lambda s: fmt(med(per[s], "queries_per_own_core_second"), ",.0f"))
        row("  per server-process CPU second", lambda s: fmt(med(per[s], "queries_per_process_cpu_second"), ",.0f"))
        row("  per round", lambda s: "[" + ", ".join(fmt(r["queries_per_core_second"], ".0f") for r in per[s]) + "]")
        lost = {s: sum(r["lost"] for r in per[s]) for s in servers}
        row("queries lost (all rounds)", lambda s: str(lost[s]))
        w("")
    if "shardgate" in servers and "knot" in servers:
        sg, kn = results["sat"]["shardgate"], results["sat"]["knot"]
        ratio = sg["queries_per_core_second"] / kn["queries_per_core_second"]
        w(f"shardgate/Knot queries per server core-second: {ratio:.2f}x  (target >= 2.0x)")
        own = sg["queries_per_own_core_second"] / kn["queries_per_own_core_second"]
        w(
            f"  same from the servers' own CPU time + irq on CPU {cpu}: {own:.2f}x"
            + ("  <- use this one: CPU was shared with other work" if t and b / t > 0.10 else "")
        )
        fs, fk = results["fixed"]["shardgate"], results["fixed"]["knot"]
        w(
            f"latency at fixed rate, shardgate vs Knot: avg {fs['latency_avg_ms']:.3f} vs {fk['latency_avg_ms']:.3f} ms, "
            f"p99 {fs['latency_p99_ms']:.3f} vs {fk['latency_p99_ms']:.3f} ms "
            f"({'no worse' if fs['latency_p99_ms'] <= fk['latency_p99_ms'] and fs['latency_avg_ms'] <= fk['latency_avg_ms'] else 'WORSE'} than Knot)"
        )
    if "shardgate" in servers and "sg-handoff" in servers:
        sg, ho = results["sat"]["shardgate"], results["sat"]["sg-handoff"]
        ratio = ho["queries_per_core_second"] / sg["queries_per_core_second"]
        w(
            f"[handoff] configured / not: queries per server core-second {ratio:.3f}x "
            f"(target >= 0.95); fixed-rate latency avg {results['fixed']['sg-handoff']['latency_avg_ms']:.3f} "
            f"vs {results['fixed']['shardgate']['latency_avg_ms']:.3f} ms"
        )
    if "reflector" in servers:
        ceiling = results["sat"]["reflector"]["queries_per_core_second"]
        w(
            f"kernel-path ceiling (udp_reflector: no work, same batching): {ceiling:,.0f} queries per core-second"
            + (f" = {ceiling / results['sat']['knot']['queries_per_core_second']:.2f}x Knot" if "knot" in servers else "")
        )
        for s in ("shardgate", "knot"):
            if s in servers:
                w(f"  {s} reaches {results['sat'][s]['queries_per_core_second'] / ceiling:.0%} of it")
    for s in servers:
        sh = results["sat"][s]
        if sh.get("server_cpu_busy_share") and sh.get("server_process_share"):
            extra = sh["server_cpu_busy_share"] - sh["server_process_share"]
            if extra > 0.10:
                w(
                    f"note: CPU {cpu} was {extra:.0%} busier than {s} itself (softirq of its replies, "
                    f"or other processes on CPU {cpu}); compare with the background share above"
                )
    w(f"rounds: {rounds}; raw outputs: {out}/runs/<round>-<server>-<sat|fixed>/")
    print("\n".join(lines))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "run" and len(sys.argv) == 7:
        run(*sys.argv[2:])
    elif len(sys.argv) >= 2 and sys.argv[1] == "table" and len(sys.argv) == 4:
        table(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
