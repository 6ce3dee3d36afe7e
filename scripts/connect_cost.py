#!/usr/bin/env python3
"""What one connect() costs as a (source, destination) pair fills up: the cause of C1M's wall.

    scripts/connect_cost.py [--conns 28000] [--bucket 2000] [--modes noport,explicit] [--json F]

Opens --conns connections to a `c10k serve --proto echo` on loopback, one at a time, nonblocking,
and times each connect() syscall (the port choice, the SYN and, on loopback, the handshake run
inside it). Modes:

- noport: every socket binds 127.0.0.200 with IP_BIND_ADDRESS_NO_PORT, so the kernel picks the
  source port inside connect() (__inet_hash_connect), for one (source, destination) pair.
- explicit: every socket binds its own (source address, source port) first — ports above
  net.ipv4.ip_local_port_range, over as many 127.0.0.x addresses as that needs — so connect()
  only checks the 4-tuple is free. What loadgen --source-ports does.

Prints, per occupancy bucket, the median / p99 / mean connect() time. Holders are child
processes of at most --per-proc sockets each (the 20,000-descriptor limit), killed by PID at the
end or on SIGINT/SIGTERM, as is the server.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C10K = os.path.join(ROOT, "target", "release", "c10k")
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h

HOLDER = r"""
import json, os, socket, sys, time
mode, target_port, first, count, sources, lo, hi = sys.argv[1:8]
target_port, first, count, lo, hi = int(target_port), int(first), int(count), int(lo), int(hi)
sources = sources.split(",")
per_source = hi - lo + 1
held, times, fallbacks = [], [], 0
for g in range(first, first + count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    if mode == "noport":
        s.setsockopt(socket.IPPROTO_IP, 24, 1)
        s.bind((sources[0], 0))
    else:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((sources[g // per_source], lo + g % per_source))
        except OSError:
            fallbacks += 1
            s.setsockopt(socket.IPPROTO_IP, 24, 1)
            s.bind((sources[g // per_source], 0))
    t0 = time.perf_counter_ns()
    rc = s.connect_ex(("127.0.0.1", target_port))
    t1 = time.perf_counter_ns()
    if rc not in (0, 115):  # EINPROGRESS
        print(json.dumps({"error": os.strerror(rc), "at": g}), flush=True)
        break
    held.append(s)
    times.append(t1 - t0)
print(json.dumps({"times": times, "fallbacks": fallbacks}), flush=True)
sys.stdin.read()  # hold until the parent closes our stdin
"""


def port_range():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lo, hi = map(int, f.read().split())
    return lo, hi


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=28_000)
    ap.add_argument("--bucket", type=int, default=2_000)
    ap.add_argument("--per-proc", type=int, default=14_000)
    ap.add_argument("--modes", default="noport,explicit")
    ap.add_argument("--json")
    args = ap.parse_args()
    eph_lo, eph_hi = port_range()
    started = []

    def stop_all(*_):
        for p in reversed(started):
            try:
                os.killpg(p.pid, signal.SIGKILL) if p.args[0] == C10K else p.kill()
            except ProcessLookupError:
                pass
            p.wait()
        started.clear()

    def on_signal(signum, _frame):
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    results = {}
    try:
        for mode in args.modes.split(","):
            workers = -(-args.conns // 18_000) + 1
            server = subprocess.Popen(
                [C10K, "serve", "--proto", "echo", "--listen", "127.0.0.1:0",
                 "--workers", str(workers), "--idle-timeout", "600"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                env=dict(os.environ, RUST_LOG="error"), start_new_session=True)
            started.append(server)
            ready = server.stdout.readline()
            port = int(ready.split()[2].rsplit(":", 1)[1])
            if mode == "noport":
                sources, lo, hi = ["127.0.0.200"], 0, 0
            else:
                lo, hi = eph_hi + 1, 65535
                n = -(-args.conns // (hi - lo + 1))
                sources = [f"127.0.1.{i + 1}" for i in range(n)]
            times, fallbacks = [], 0
            for first in range(0, args.conns, args.per_proc):
                count = min(args.per_proc, args.conns - first)
                holder = subprocess.Popen(
                    [sys.executable, "-c", HOLDER, mode, str(port), str(first), str(count),
                     ",".join(sources), str(lo), str(hi)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                started.append(holder)
                out = json.loads(holder.stdout.readline())
                if "error" in out:
                    print(f"{mode}: connect failed at {out['at']}: {out['error']}",
                          file=sys.stderr)
                    break
                times += out["times"]
                fallbacks += out["fallbacks"]
            rows = []
            for b in range(0, len(times), args.bucket):
                us = [t / 1000 for t in times[b:b + args.bucket]]
                rows.append({"occupancy_from": b, "occupancy_to": b + len(us),
                             "median_us": round(statistics.median(us), 1),
                             "p99_us": round(pct(us, 0.99), 1),
                             "mean_us": round(statistics.fmean(us), 1)})
            results[mode] = {"sources": len(sources), "bind_fallbacks": fallbacks,
                             "ephemeral_range": [eph_lo, eph_hi], "rows": rows}
            stop_all()
    finally:
        stop_all()
    for mode, r in results.items():
        print(f"\n{mode} ({r['sources']} source address(es), ephemeral range "
              f"{r['ephemeral_range'][0]}-{r['ephemeral_range'][1]})")
        print("| connections already open | connect() median µs | p99 µs | mean µs |")
        print("|---|---:|---:|---:|")
        for row in r["rows"]:
            print(f"| {row['occupancy_from']:,}–{row['occupancy_to']:,} | {row['median_us']} "
                  f"| {row['p99_us']} | {row['mean_us']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
