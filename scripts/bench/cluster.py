#!/usr/bin/env python3
"""The fleet map's figures (run by scripts/bench-cluster.sh; see there).

1. propagation: a real etcd and three nodes (127.0.0.2/.3/.4, one shard
   each); N record changes through node 1's API, one at a time; for each,
   the time from the API's acknowledgement until all three nodes answer the
   new address over DNS (UDP, polled). p50/p99/max.
2. sync: a fresh node joining a fleet map of P prefixes (spread over views
   of 1,000 prefixes each, written straight to etcd): time from start until
   it serves etcd's revision, and its resident memory, beside a node on the
   same config without [cluster] (the baseline, same run).
3. DNS cost under churn: node 1 (alone on CPU 0; everything else on CPU 1)
   offered a fixed UDP rate by dnsperf for D seconds, without and then with
   C changes/s streaming in through node 2 (alternating, R rounds, medians);
   answered queries per CPU-second of node 1 (its /proc utime+stime), and
   the ratio (target >= 0.95).

Loopback only; every loop is bounded in count and time.
"""

import argparse
import base64
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.join(REPO, "target", "release", "shardgate")
PREFIX = "/bench/"
CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, pred, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"bench-cluster: timed out waiting for {what}")


class Etcd:
    def __init__(self, root):
        os.makedirs(root, exist_ok=True)
        self.dir = os.path.join(root, "etcd")
        self.port = free_port()
        peer = f"http://127.0.0.1:{free_port()}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(root, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            ["etcd", "--name", "b", "--data-dir", self.dir,
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"b={peer}", "--log-level", "warn",
             "--quota-backend-bytes", str(4 << 30)],
            stdout=self.log, stderr=self.log)
        wait("etcd", self.healthy, 20)

    def call(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def healthy(self):
        try:
            self.call("/v3/kv/range", {"key": b64("/")})
            return True
        except Exception:
            return False

    def put(self, key, value):
        return self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def revision(self):
        return int(self.call("/v3/kv/range", {"key": b64("/")})["header"]["revision"])

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


BASE_CONFIG = """
[server]
shards = 1
admin_listen = "127.0.0.1:{admin}"
state_dir = "state"
shutdown_grace_ms = 500

[dns]
listen = ["{ip}:{dns}"]

[functions]
enabled = false

[[zone]]
name = "svc.example."
ttl = 30
soa = {{ mname = "ns1.svc.example.", rname = "hostmaster.svc.example." }}

[[view]]
name = "site"
prefixes = ["127.0.0.0/25"]
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.1.5"

[[view]]
name = "default"
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.9.5"
"""


class Node:
    def __init__(self, root, name, ip, etcd, cpu=None):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.ip, self.dns, self.admin = ip, free_port(), free_port()
        text = BASE_CONFIG.format(admin=self.admin, ip=ip, dns=self.dns)
        if etcd is not None:
            text += f'\n[cluster]\netcd = ["{etcd.url}"]\nprefix = "{PREFIX}"\n'
        cfg = os.path.join(self.dir, "shardgate.toml")
        with open(cfg, "w") as f:
            f.write(text)
        cmd = [BIN, "run", "--config", cfg]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu)] + cmd
        self.log = open(os.path.join(self.dir, "shardgate.log"), "ab")
        env = dict(os.environ, RUST_LOG="warn")
        env.pop("STATE_DIRECTORY", None)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env)
        wait(f"{name} ready", lambda: self.http("GET", "/readyz")[0] == 200, 120)

    def http(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", "Host": "127.0.0.1"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def metric(self, name):
        status, text = self.http("GET", "/metrics")
        for line in text.splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
        return None

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def dns_query(name, qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


def first_a(reply):
    """The first A record's address of a reply, or None."""
    if len(reply) < 12:
        return None
    an = struct.unpack(">H", reply[6:8])[0]
    i = 12
    while reply[i] != 0:  # question name
        i += reply[i] + 1
    i += 5
    for _ in range(an):
        if reply[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while reply[i] != 0:
                i += reply[i] + 1
            i += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", reply[i:i + 10])
        i += 10
        if rtype == 1 and rdlen == 4:
            return socket.inet_ntoa(reply[i:i + 4])
        i += rdlen
    return None


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def propagation(root, changes):
    etcd = Etcd(os.path.join(root, "prop"))
    nodes = [Node(os.path.join(root, "prop"), f"n{i}", f"127.0.0.{i + 2}", etcd) for i in range(3)]
    wait("etcd up on all nodes", lambda: all(n.metric("shardgate_cluster_etcd_up") == 1.0 for n in nodes), 20)
    socks = []
    for n in nodes:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.10", 0))
        s.settimeout(0.05)
        socks.append((s, n))
    lat, ack = [], []
    qid = 1
    for i in range(changes):
        addr = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        t0 = time.monotonic()
        status, body = nodes[0].http("PUT", "/v1/views/site/records/upf.svc.example./A",
                                     {"records": [{"data": addr}]})
        t_ack = time.monotonic()
        if status != 200:
            raise SystemExit(f"bench-cluster: change {i} got {status}: {body}")
        ack.append(t_ack - t0)
        pending = list(socks)
        deadline = t_ack + 10
        while pending and time.monotonic() < deadline:
            for s, n in list(pending):
                qid = (qid + 1) & 0xFFFF
                s.sendto(dns_query("upf.svc.example.", qid), (n.ip, n.dns))
                try:
                    reply = s.recv(2048)
                except socket.timeout:
                    continue
                if first_a(reply) == addr:
                    pending.remove((s, n))
        if pending:
            raise SystemExit(f"bench-cluster: change {i} not answered by {[n.ip for _, n in pending]} within 10 s")
        lat.append(time.monotonic() - t_ack)
    for n in nodes:
        n.stop()
    etcd.stop()
    ms = lambda v: v * 1000
    return {
        "changes": changes,
        "ack_p50_ms": ms(percentile(ack, 50)), "ack_p99_ms": ms(percentile(ack, 99)),
        "all_nodes_p50_ms": ms(percentile(lat, 50)), "all_nodes_p99_ms": ms(percentile(lat, 99)),
        "all_nodes_max_ms": ms(max(lat)),
    }


def sync(root, prefixes):
    base = os.path.join(root, f"sync{prefixes}")
    etcd = Etcd(base)
    per_view = 1000
    views = (prefixes + per_view - 1) // per_view
    t0 = time.monotonic()
    for v in range(views):
        nets = []
        for j in range(per_view):
            k = v * per_view + j
            if k >= prefixes:
                break
            nets.append(f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}/32")
        name = f"v{v:05d}"
        etcd.put(f"{PREFIX}views/{name}", json.dumps({"kind": "defined", "prefixes": nets}))
        etcd.put(f"{PREFIX}records/{name}/upf.svc.example./A", json.dumps([{"data": f"10.200.{v >> 8 & 255}.{v & 255}"}]))
    write_s = time.monotonic() - t0
    target = etcd.revision()
    baseline = Node(base, "plain", "127.0.0.5", None)
    baseline_rss = baseline.rss_bytes()
    baseline.stop()
    start = time.monotonic()
    node = Node(base, "joiner", "127.0.0.5", etcd)
    wait("the joiner to sync", lambda: (node.metric("shardgate_cluster_applied_revision") or 0) >= target, 600)
    synced = time.monotonic() - start
    # One of the etcd-defined views answers.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.10", 0))
    s.settimeout(1)
    rss = node.rss_bytes()
    node.stop()
    etcd.stop()
    return {"prefixes": prefixes, "views": views, "etcd_write_s": write_s, "sync_s": synced,
            "rss_mib": rss / 2**20, "baseline_rss_mib": baseline_rss / 2**20}


def dns_cost(root, seconds, rate, churn, rounds):
    base = os.path.join(root, "cost")
    # Node 1 alone on CPU 0; etcd, node 2, the churner and dnsperf on CPU 1
    # (inherited from this process), so node 1's CPU time is its own work.
    os.sched_setaffinity(0, {1})
    etcd = Etcd(base)
    nodes = [Node(base, f"n{i}", f"127.0.0.{i + 2}", etcd, cpu=0 if i == 0 else 1) for i in range(2)]
    wait("etcd up", lambda: all(n.metric("shardgate_cluster_etcd_up") == 1.0 for n in nodes), 20)
    qfile = os.path.join(base, "queries.txt")
    with open(qfile, "w") as f:
        f.write("upf.svc.example. A\n" * 10)

    def run(with_churn):
        stop = threading.Event()
        made = [0]

        def churner():
            i = 0
            next_t = time.monotonic()
            while not stop.is_set() and i < churn * (seconds + 5):
                nodes[1].http("PUT", "/v1/views/site/records/upf.svc.example./A",
                              {"records": [{"data": f"10.0.{(i >> 8) & 255}.{i & 255}"}]})
                i += 1
                made[0] = i
                next_t += 1 / churn
                time.sleep(max(0, next_t - time.monotonic()))

        t = threading.Thread(target=churner) if with_churn else None
        if t:
            t.start()
            time.sleep(0.5)
        cpu0 = nodes[0].cpu_seconds()
        out = subprocess.run(
            ["taskset", "-c", "1", "dnsperf", "-s", nodes[0].ip, "-p", str(nodes[0].dns), "-d", qfile,
             "-l", str(seconds), "-Q", str(rate), "-c", "4", "-t", "2", "-b", "4", "-x", "0"],
            capture_output=True, text=True, timeout=seconds + 30)
        cpu = nodes[0].cpu_seconds() - cpu0
        stop.set()
        if t:
            t.join()
        completed, avg_ms = 0, 0.0
        for line in out.stdout.splitlines():
            if "Queries completed:" in line:
                completed = int(line.split()[2])
            if "Average Latency (s):" in line:
                avg_ms = float(line.split()[3]) * 1000
        return {"answered": completed, "cpu_s": cpu, "q_per_core_s": completed / cpu if cpu else 0,
                "changes": made[0], "avg_latency_ms": avg_ms}

    # Alternate quiet and churn runs; each side's figure is its median.
    quiet, busy = [], []
    for _ in range(rounds):
        quiet.append(run(False))
        busy.append(run(True))
    for n in nodes:
        n.stop()
    etcd.stop()
    med = lambda runs: sorted(runs, key=lambda r: r["q_per_core_s"])[len(runs) // 2]
    q, b = med(quiet), med(busy)
    return {"rate": rate, "seconds": seconds, "rounds": rounds, "quiet": q, "churn": b,
            "quiet_runs": [r["q_per_core_s"] for r in quiet], "churn_runs": [r["q_per_core_s"] for r in busy],
            "changes_per_s": churn, "ratio": b["q_per_core_s"] / q["q_per_core_s"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--churn", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="propagation,sync,cost")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-cluster-")
    out = {}
    try:
        only = a.only.split(",")
        if "propagation" in only:
            out["propagation"] = propagation(root, a.changes)
            p = out["propagation"]
            print(f"propagation over {p['changes']} changes: ack p50 {p['ack_p50_ms']:.2f} ms p99 {p['ack_p99_ms']:.2f} ms; "
                  f"ack -> answered on all 3 nodes p50 {p['all_nodes_p50_ms']:.2f} ms p99 {p['all_nodes_p99_ms']:.2f} ms "
                  f"max {p['all_nodes_max_ms']:.2f} ms", flush=True)
        if "sync" in only:
            out["sync"] = []
            for size in [int(x) for x in a.sizes.split(",") if x]:
                s = sync(root, size)
                out["sync"].append(s)
                print(f"sync of {s['prefixes']} prefixes ({s['views']} views): {s['sync_s']:.2f} s to serve etcd's revision; "
                      f"RSS {s['rss_mib']:.1f} MiB (same node without the map: {s['baseline_rss_mib']:.1f} MiB); "
                      f"etcd writes took {s['etcd_write_s']:.1f} s", flush=True)
        if "cost" in only:
            c = dns_cost(root, a.seconds, a.rate, a.churn, a.rounds)
            out["cost"] = c
            print(f"DNS at {c['rate']} q/s, {c['rounds']} x {c['seconds']} s each way (medians): "
                  f"{c['quiet']['q_per_core_s']:.0f} q/core-s quiet (avg {c['quiet']['avg_latency_ms']:.3f} ms), "
                  f"{c['churn']['q_per_core_s']:.0f} q/core-s with {c['churn']['changes']} changes "
                  f"(~{c['changes_per_s']}/s; avg {c['churn']['avg_latency_ms']:.3f} ms): ratio {c['ratio']:.3f} "
                  f"(target >= 0.95); runs quiet {[round(x) for x in c['quiet_runs']]} churn {[round(x) for x in c['churn_runs']]}",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
