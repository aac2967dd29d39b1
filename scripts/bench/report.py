#!/usr/bin/env python3
"""Summaries for scripts/bench-dns.sh.

    report.py run DIR SERVER KIND ROUND CPU   one run: dnsperf outputs (or, for a
                                              capacity run, shardgate-load's
                                              load.json) + /proc samples
                                              -> DIR/summary.json, DIR/latency-us.tsv;
                                              the per-query lines of dnsperf -v are
                                              folded into the histogram and dropped
    report.py table OUTDIR CPU                every run -> the comparison table
    report.py sweep OUTDIR CPU                --sweep runs -> the per-rate table
                                              (stdout), OUTDIR/sweep.json and the
                                              plots' descriptions OUTDIR/sweep-plot.json
                                              (dnsperf) and sweep-plot-shardgate-load.json
"""

import glob
import json
import os
import statistics
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")
# A capacity run counts as saturating the server from this CPU busy share.
SATURATED = 0.90


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


def idle_clock(path, cpu):
    """(idle microseconds of `cpu` from cpuidle, wall ns) in a snapshot
    written by bench-dns.sh's cpu_snapshot, or None when it has neither."""
    idle = wall = None
    with open(path) as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == f"cpuidle_us{cpu}":
                idle = int(fields[1])
            elif fields and fields[0] == "wall_ns":
                wall = int(fields[1])
    return (idle, wall) if idle is not None and wall is not None else None


def share(d, cpu, before="stat.before", after="stat.after"):
    """(busy, total) of `cpu` between two snapshots, in jiffies. From the
    cpuidle idle residency (microseconds) and the wall clock when the
    snapshots have them: /proc/stat's busy fields are sampled at the tick,
    too coarse for a CPU 5-20% busy over a few seconds."""
    a = idle_clock(os.path.join(d, before), cpu)
    b = idle_clock(os.path.join(d, after), cpu)
    if a and b and b[1] > a[1]:
        wall_s = (b[1] - a[1]) / 1e9
        busy_s = min(max(wall_s - (b[0] - a[0]) / 1e6, 0.0), wall_s)
        return busy_s * CLK_TCK, wall_s * CLK_TCK
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


def udp_rcvbuf_errors(path):
    """The host's UDP receive-buffer drops (IPv4, /proc/net/snmp), or None."""
    try:
        with open(path) as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
    except OSError:
        return None
    if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
        return None
    return int(rows[1][rows[0].index("RcvbufErrors")])


def server_socket_drops(path):
    """shardgate's own sockets' kernel drops (its /metrics after the run), or None."""
    try:
        with open(path) as f:
            lines = [line for line in f if line.startswith("shardgate_udp_socket_drops_total")]
    except OSError:
        return None
    return sum(int(float(line.split()[-1])) for line in lines) if lines else None


# The event shardgate-load counts replies under that its own receive
# buffers dropped (load/src/udp.rs OWN_SOCKET_DROPS).
LOAD_OWN_DROPS = "replies dropped by the load tool's own socket buffers"


def load_tool_result(d):
    """A capacity run's figures from shardgate-load's JSON: completed, lost,
    qps, latency avg/p99 (ms), the load tool's own socket drops."""
    with open(os.path.join(d, "load.json")) as f:
        r = json.load(f)
    c, lat = r["counts"], r["latency"]
    own = sum(n for kind, n in c["events"] if kind == LOAD_OWN_DROPS)
    return {
        "completed": c["answered"],
        "lost": c["lost"],
        "qps": r["throughput_per_s"],
        "latency_avg_ms": lat["mean_us"] / 1000 if lat["count"] else None,
        "latency_p99_ms": lat["p99_us"] / 1000 if lat["count"] else None,
        "load_own_drops": own,
    }


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
    host_before = udp_rcvbuf_errors(os.path.join(d, "snmp.before"))
    host_after = udp_rcvbuf_errors(os.path.join(d, "snmp.after"))
    host_drops = host_after - host_before if host_before is not None and host_after is not None else None
    server_drops = server_socket_drops(os.path.join(d, "metrics.after"))
    load_drops = host_drops - server_drops if host_drops is not None and server_drops is not None else None
    tool = load_tool_result(d) if os.path.exists(os.path.join(d, "load.json")) else None
    if tool:
        completed, lost, qps = tool["completed"], tool["lost"], tool["qps"]
        # The load tool counts its own sockets' drops itself.
        load_drops = tool["load_own_drops"]
    summary = {
        "server": server,
        "kind": kind,
        "round": int(rnd),
        "completed": completed,
        "lost": lost,
        "qps": qps,
        "rcodes": rcodes,
        # Receive-buffer drops of the run: the host's (every socket), the
        # server's own (shardgate only) and the rest (dnsperf's sockets).
        "host_rcvbuf_drops": host_drops,
        "server_socket_drops": server_drops,
        "load_socket_drops": load_drops,
        "latency_avg_ms": tool["latency_avg_ms"] if tool else (sum(us * c for us, c in hist.items()) / n / 1000) if n else None,
        "latency_p50_ms": percentile(hist, n, 0.50) / 1000 if n else None,
        "latency_p99_ms": tool["latency_p99_ms"] if tool else percentile(hist, n, 0.99) / 1000 if n else None,
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
        + (f" (socket drops: host {host_drops}" if lost or host_drops else "")
        + (f", server {server_drops}, dnsperf {load_drops}" if (lost or host_drops) and server_drops is not None else "")
        + (")" if lost or host_drops else "")
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
    titles = (
        ("sat", "dnsperf max (dnsperf as fast as one core allows)"),
        ("cap", "capacity (shardgate-load closed loop: the server saturated)"),
        ("fixed", "fixed rate"),
    )
    for kind, title in titles:
        if not any(r["kind"] == kind for r in runs):
            continue
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
        row("load CPU 0 busy share", lambda s: fmt(med(per[s], "client_cpu_busy_share"), ".1%"))
        row("queries per server core-second", lambda s: fmt(med(per[s], "queries_per_core_second"), ",.0f"))
        row("  per (server threads + irq) second", lambda s: fmt(med(per[s], "queries_per_own_core_second"), ",.0f"))
        row("  per server-process CPU second", lambda s: fmt(med(per[s], "queries_per_process_cpu_second"), ",.0f"))
        row("  per round", lambda s: "[" + ", ".join(fmt(r["queries_per_core_second"], ".0f") for r in per[s]) + "]")
        lost = {s: sum(r["lost"] for r in per[s]) for s in servers}
        row("queries lost (all rounds)", lambda s: str(lost[s]))
        w("")
    peak = "cap" if "cap" in results else "sat"
    for s in servers:
        busy = results[peak][s].get("server_cpu_busy_share")
        if peak == "cap" and busy is not None and busy < SATURATED:
            w(f"WARNING: {s}'s CPU {cpu} was only {busy:.1%} busy in the capacity runs: not saturated, "
              f"raise BENCH_CAP_OUTSTANDING")
    if "shardgate" in servers and "knot" in servers:
        sg, kn = results[peak]["shardgate"], results[peak]["knot"]
        ratio = sg["queries_per_core_second"] / kn["queries_per_core_second"]
        w(f"shardgate/Knot queries per server core-second at {'capacity' if peak == 'cap' else 'dnsperf max'}: "
          f"{ratio:.2f}x  (target >= 2.0x)")
        own = sg["queries_per_own_core_second"] / kn["queries_per_own_core_second"]
        w(
            f"  same from the servers' own CPU time + irq on CPU {cpu}: {own:.2f}x"
            + ("  <- use this one: CPU was shared with other work" if t and b / t > 0.10 else "")
        )
        if peak == "cap" and "sat" in results:
            ds, dk = results["sat"]["shardgate"], results["sat"]["knot"]
            w(f"  at dnsperf's own limit (neither server saturated): "
              f"{ds['queries_per_core_second'] / dk['queries_per_core_second']:.2f}x")
        fs, fk = results["fixed"]["shardgate"], results["fixed"]["knot"]
        w(
            f"latency at fixed rate, shardgate vs Knot: avg {fs['latency_avg_ms']:.3f} vs {fk['latency_avg_ms']:.3f} ms, "
            f"p99 {fs['latency_p99_ms']:.3f} vs {fk['latency_p99_ms']:.3f} ms "
            f"({'no worse' if fs['latency_p99_ms'] <= fk['latency_p99_ms'] and fs['latency_avg_ms'] <= fk['latency_avg_ms'] else 'WORSE'} than Knot)"
        )
    if "shardgate" in servers and "sg-handoff" in servers:
        sg, ho = results[peak]["shardgate"], results[peak]["sg-handoff"]
        ratio = ho["queries_per_core_second"] / sg["queries_per_core_second"]
        w(
            f"[handoff] configured / not: queries per server core-second {ratio:.3f}x "
            f"(target >= 0.95); fixed-rate latency avg {results['fixed']['sg-handoff']['latency_avg_ms']:.3f} "
            f"vs {results['fixed']['shardgate']['latency_avg_ms']:.3f} ms"
        )
    if "reflector" in servers:
        ceiling = results[peak]["reflector"]["queries_per_core_second"]
        w(
            f"kernel-path ceiling (udp_reflector: no work, same batching): {ceiling:,.0f} queries per core-second"
            + (f" = {ceiling / results[peak]['knot']['queries_per_core_second']:.2f}x Knot" if "knot" in servers else "")
        )
        for s in ("shardgate", "knot"):
            if s in servers:
                w(f"  {s} reaches {results[peak][s]['queries_per_core_second'] / ceiling:.0%} of it")
    for s in servers:
        sh = results[peak][s]
        if sh.get("server_cpu_busy_share") and sh.get("server_process_share"):
            extra = sh["server_cpu_busy_share"] - sh["server_process_share"]
            if extra > 0.10:
                w(
                    f"note: CPU {cpu} was {extra:.0%} busier than {s} itself (softirq of its replies, "
                    f"or other processes on CPU {cpu}); compare with the background share above"
                )
    w(f"rounds: {rounds}; raw outputs: {out}/runs/<round>-<server>-<sat|cap|fixed>/")
    print("\n".join(lines))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(results, f, indent=2)


def load_runs(out):
    runs = []
    for path in glob.glob(os.path.join(out, "runs", "*", "summary.json")):
        with open(path) as f:
            runs.append(json.load(f))
    if not runs:
        raise SystemExit("report.py: no runs")
    return runs


def lost_cell(m):
    """Lost queries, and whose receive buffer dropped: "lost (server
    sockets / dnsperf sockets)" when the server counts its own, "lost
    (host)" otherwise."""
    lost = m["lost"]
    if m.get("server_socket_drops") is not None and m.get("load_socket_drops") is not None:
        return f"{lost} ({m['server_socket_drops']} / {m['load_socket_drops']})"
    if m.get("host_rcvbuf_drops") is not None:
        return f"{lost} (host {m['host_rcvbuf_drops']})"
    return f"{lost}"


# Fixed-rate kinds of a sweep: (prefix, what measured them).
RATE_LOADS = (("r", "dnsperf"), ("l", "shardgate-load"))


def sweep_cells(runs, servers, kinds):
    """Per (server, kind): medians of the figures, sums of losses and drops."""
    cell = {}
    for s in servers:
        for kind in kinds:
            rs = [r for r in runs if r["server"] == s and r["kind"] == kind]
            if rs:
                m = {k: med(rs, k) for k in ("qps", "latency_avg_ms", "latency_p99_ms", "server_cpu_busy_share", "queries_per_core_second")}
                m["lost"] = sum(r["lost"] for r in rs)
                for key in ("host_rcvbuf_drops", "server_socket_drops", "load_socket_drops"):
                    vals = [r.get(key) for r in rs]
                    m[key] = sum(vals) if all(v is not None for v in vals) else None
                m["sent"] = sum(r["lost"] + r["completed"] for r in rs)
                cell[(s, kind)] = m
    return cell


def rate_rows(w, servers, rates, cell, prefix, cpu):
    w("| rate (QPS) | " + " | ".join(f"{s} avg / p99 | {s} lost | {s} CPU {cpu}" for s in servers) + " |")
    w("|" + "---|" * (1 + 3 * len(servers)))
    for q in rates:
        row = [f"{q:,}"]
        for s in servers:
            m = cell.get((s, f"{prefix}{q}"))
            if not m:
                row += ["n/a"] * 3
                continue
            row.append(f"{m['latency_avg_ms'] * 1000:.0f} / {m['latency_p99_ms'] * 1000:.0f}" if m["latency_avg_ms"] is not None else "n/a")
            row.append(lost_cell(m))
            row.append(fmt(m["server_cpu_busy_share"], ".1%"))
        w("| " + " | ".join(row) + " |")


def rate_checks(w, rates, cell, prefix, tool, cpu, sg_peak):
    """The fixed-rate targets, on the runs one load tool measured."""
    lossless = [q for q in rates if cell.get(("knot", f"{prefix}{q}")) and cell[("knot", f"{prefix}{q}")]["lost"] == 0]
    knot_max = max(lossless) if lossless else None
    w(f"[{tool}] highest rate Knot sustains without loss: {knot_max:,} QPS" if knot_max else f"[{tool}] Knot lost queries at every rate")
    worse = []
    for q in rates:
        if knot_max is None or q > knot_max:
            continue
        sg, kn = cell.get(("shardgate", f"{prefix}{q}")), cell.get(("knot", f"{prefix}{q}"))
        if not sg or not kn:
            continue
        for key, name in (("latency_avg_ms", "avg"), ("latency_p99_ms", "p99"), ("server_cpu_busy_share", f"CPU {cpu}")):
            if sg[key] is not None and kn[key] is not None and sg[key] > kn[key]:
                worse.append(f"{q:,} QPS {name}")
    w(f"[{tool}] shardgate no slower and no busier than Knot at every rate up to it: "
      + ("yes" if not worse else "NO (" + ", ".join(worse) + ")"))
    if sg_peak and sg_peak.get("qps"):
        # 80% of what the server answers saturated (capacity, else dnsperf's max).
        cap = 0.8 * sg_peak["qps"]
        runs_upto = [(q, cell[("shardgate", f"{prefix}{q}")]) for q in rates if q <= cap and cell.get(("shardgate", f"{prefix}{q}"))]
        lossy = [(q, m) for q, m in runs_upto if m["lost"]]
        w(f"[{tool}] shardgate loss at fixed rates up to 80% of its saturation ({cap:,.0f} QPS): "
          + ("none" if not lossy else "at " + ", ".join(f"{q:,} ({lost_cell(m)})" for q, m in lossy) + " QPS"))
        for key, whose in (("server_socket_drops", "shardgate's own"), ("load_socket_drops", f"{tool}'s")):
            drops = [m.get(key) for _, m in runs_upto]
            if drops and all(v is not None for v in drops):
                w(f"[{tool}] {whose} socket drops at those rates: {sum(drops)}")


def sweep(out, cpu):
    """Per fixed rate (kinds rN: dnsperf, lN: shardgate-load) and server:
    medians of latency avg/p99, lost queries (sum), CPU busy share;
    saturation throughput; the targets of the adaptive-coalescing issue."""
    runs = load_runs(out)
    servers = [s for s in ("shardgate", "knot", "reflector") if any(r["server"] == s for r in runs)]
    rates = sorted({int(r["kind"][1:]) for r in runs if r["kind"][0] in "rl" and r["kind"][1:].isdigit()})
    rounds = max(r["round"] for r in runs)
    cell = sweep_cells(runs, servers, ["sat", "cap"] + [f"{p}{q}" for p, _ in RATE_LOADS for q in rates])
    lines = []
    w = lines.append
    w(f"DNS rate sweep: medians of {rounds} round(s); latency in microseconds; CPU {cpu} busy share")
    w(open(os.path.join(out, "env.txt")).read().rstrip())
    b, t = share(out, cpu, "idle.before", "idle.after")
    if t:
        w(f"background busy share of CPU {cpu} with no server running: {b / t:.1%}")
    w("")
    w("lost: queries unanswered (all rounds); in brackets the receive-buffer drops of those runs,")
    w("shardgate's own sockets / the load's (dnsperf: the host's RcvbufErrors less shardgate's;")
    w("shardgate-load: its own count), or the host's for Knot")
    for prefix, tool in RATE_LOADS:
        if not any(k.startswith(prefix) for _, k in cell):
            continue
        w("")
        w(f"fixed rates, load and latency by {tool}"
          + (" (one process per view source, latency as dnsperf sees it)" if prefix == "r"
             else " (one thread, open loop, latency from the intended send time to the reply's kernel timestamp)"))
        rate_rows(w, servers, rates, cell, prefix, cpu)
    w("")
    w("| peak | " + " | ".join(f"{s} | {s} lost | {s} CPU {cpu}" for s in servers) + " |")
    w("|" + "---|" * (1 + 3 * len(servers)))
    for kind, label in (("sat", "dnsperf max"), ("cap", "capacity")):
        if not any(k == kind for _, k in cell):
            continue
        row = [label]
        for s in servers:
            m = cell.get((s, kind), {})
            row.append(f"{fmt(m.get('qps'), ',.0f')} QPS, {fmt(m.get('queries_per_core_second'), ',.0f')} q/core-s")
            row.append(lost_cell(m) if m else "n/a")
            row.append(fmt(m.get("server_cpu_busy_share"), ".1%"))
        w("| " + " | ".join(row) + " |")
    w("")
    w("dnsperf max: dnsperf as fast as CPU 0 allows (usually below either server's limit);")
    w("capacity: shardgate-load closed loop, the server's CPU saturated (queries per core-second at saturation)")
    peak = "cap" if any(k == "cap" for _, k in cell) else "sat"
    for s in servers:
        m = cell.get((s, peak))
        if peak == "cap" and m and m["server_cpu_busy_share"] is not None and m["server_cpu_busy_share"] < SATURATED:
            w(f"WARNING: {s}'s CPU {cpu} was only {m['server_cpu_busy_share']:.1%} busy at capacity: not saturated")
    if "shardgate" in servers and "knot" in servers:
        sg_sat, kn_sat = cell.get(("shardgate", peak)), cell.get(("knot", peak))
        if sg_sat and kn_sat and kn_sat["queries_per_core_second"]:
            ratio = sg_sat["queries_per_core_second"] / kn_sat["queries_per_core_second"]
            per_round = []
            for rnd in range(1, rounds + 1):
                a = [r for r in runs if r["server"] == "shardgate" and r["kind"] == peak and r["round"] == rnd]
                b = [r for r in runs if r["server"] == "knot" and r["kind"] == peak and r["round"] == rnd]
                if a and b and a[0]["queries_per_core_second"] and b[0]["queries_per_core_second"]:
                    per_round.append(f"{a[0]['queries_per_core_second'] / b[0]['queries_per_core_second']:.2f}x")
            w(f"saturation ({'capacity' if peak == 'cap' else 'dnsperf max'}): shardgate/Knot queries per core-second "
              f"{ratio:.2f}x (target >= 1.5x; per round {', '.join(per_round)})")
            ds, dk = cell.get(("shardgate", "sat")), cell.get(("knot", "sat"))
            if peak == "cap" and ds and dk and dk["queries_per_core_second"]:
                w(f"  at dnsperf's limit: {ds['queries_per_core_second'] / dk['queries_per_core_second']:.2f}x")
        for prefix, tool in RATE_LOADS:
            if any(k.startswith(prefix) for _, k in cell):
                rate_checks(w, rates, cell, prefix, tool, cpu, sg_sat)
    print("\n".join(lines))
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump({f"{s}/{k}": v for (s, k), v in cell.items()}, f, indent=2)
    for prefix, tool in RATE_LOADS:
        name = "sweep-plot.json" if prefix == "r" else f"sweep-plot-{tool}.json"
        write_sweep_plot(os.path.join(out, name), servers, rates, cell, prefix, tool)


def write_sweep_plot(path, servers, rates, cell, prefix, tool):
    """The latency-against-rate plot's description for `shardgate-load
    plot-xy`: average (solid) and p99 (dashed) per server, one colour each,
    of the fixed-rate runs one load tool measured (kinds `prefix`N)."""
    series = []
    for colour, s in enumerate(servers):
        for key, name, dashed in (("latency_avg_ms", "avg", False), ("latency_p99_ms", "p99", True)):
            points = [[q, cell[(s, f"{prefix}{q}")][key] * 1000] for q in rates
                      if cell.get((s, f"{prefix}{q}")) and cell[(s, f"{prefix}{q}")][key] is not None]
            if points:
                series.append({"label": f"{s} {name}", "points": points, "colour": colour, "dashed": dashed})
    if not series:
        return
    with open(path, "w") as f:
        json.dump({"title": f"DNS latency against offered rate (medians; load and latency: {tool})",
                   "x_label": "offered rate (QPS, log scale)", "y_label": "latency (µs)",
                   "log_x": True, "series": series}, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "run" and len(sys.argv) == 7:
        run(*sys.argv[2:])
    elif len(sys.argv) >= 2 and sys.argv[1] == "sweep" and len(sys.argv) == 4:
        sweep(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "table" and len(sys.argv) == 4:
        table(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
