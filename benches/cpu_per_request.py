#!/usr/bin/env python3
"""Server CPU time per request, c10k against its peers, measured with wrk in one interleaved run.

On a 2-core machine wrk saturates its core long before a good server does, so plain req/s
mostly measures wrk. What tells servers apart is the CPU time the *server* spends per request
(utime + stime from /proc/PID/stat over the run, divided by the requests wrk completed), and
throughput with pipelining, where the server becomes the bottleneck.

Each round runs every server once, in order, so that drift on a shared machine spreads evenly;
the report gives the median over rounds and the ratio to the first server listed (the
reference, cepoll by default: a minimal C epoll loop, the practical one-core limit).

    benches/cpu_per_request.py [--rounds 3] [--duration 10] [--conns 256] [--pipeline 16]
                               [--servers cepoll,c10k-epoll,nginx1,tokio1]

Server names: c10k-BACKEND[-edge][@BINARY] (e.g. c10k-epoll, c10k-poll, c10k-epoll-edge, or
c10k-epoll@../base/target/release/c10k to measure an older build in the same rounds), or any peer
of ../shared/baselines/peer (cepoll, nginx1, nginx2, tokio1, tokio2, asyncio). Needs wrk
(apt-get install wrk; nginx for the nginx peers). The server is pinned to CPU 0 and wrk to CPU 1.
Everything runs on 127.0.0.1, each wrk run is bounded by --duration, and every process started
is stopped by its PID.
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shared baselines sit beside the canonical checkout (../shared) or, from a worktree under
# wt/, one level further up.
BASELINES = next(
    (d for d in (os.path.join(ROOT, "..", "shared", "baselines"),
                 os.path.join(ROOT, "..", "..", "shared", "baselines"))
     if os.path.exists(os.path.join(d, "peer"))),
    os.path.join(ROOT, "..", "shared", "baselines"),
)
PEER = os.path.join(BASELINES, "peer")
PIPELINE_LUA = os.path.join(BASELINES, "wrk-pipeline.lua")
C10K = os.path.join(ROOT, "target", "release", "c10k")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    """utime + stime of a process and all its descendants (nginx workers, c10k workers)."""
    total = 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    total += cpu_ticks(int(child))
    except FileNotFoundError:
        pass
    return total


def start(name, port):
    if name.startswith("c10k-"):
        backend, _, binary = name[len("c10k-"):].partition("@")
        args = [binary or C10K, "serve", "--listen", f"127.0.0.1:{port}"]
        if backend.endswith("-edge"):
            backend = backend[: -len("-edge")]
            args.append("--edge")
        args += ["--backend", backend]
        env = dict(os.environ, RUST_LOG="warn")
    else:
        args = [PEER, name, "--port", str(port)]
        env = dict(os.environ)
    proc = subprocess.Popen(
        ["taskset", "-c", "0"] + args,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        proc.kill()
        sys.exit(f"{name} did not start: {line!r}")
    return proc


def server_pid(proc, name):
    """The process whose CPU time counts: the peer script execs nothing, so find its child."""
    if name.startswith("c10k-"):
        return proc.pid
    # `peer` is a bash script that starts the server in the background and waits on it.
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        children = [int(c) for c in f.read().split()]
    return children[0] if children else proc.pid


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_wrk(port, conns, duration, pipeline):
    args = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration}s"]
    url = f"http://127.0.0.1:{port}/plaintext"
    if pipeline > 1:
        args += ["-s", PIPELINE_LUA, url, "--", str(pipeline)]
    else:
        args.append(url)
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not m:
        sys.exit(f"wrk output not understood:\n{out}")
    return int(m.group(1)), int(errors.group(1)) if errors else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", type=int, default=256)
    ap.add_argument("--pipeline", type=int, default=1, help="requests per write (wrk-pipeline.lua)")
    ap.add_argument("--servers", default="cepoll,c10k-epoll,nginx1,tokio1")
    ap.add_argument("--port", type=int, default=18190)
    args = ap.parse_args()
    if not os.path.exists(C10K):
        sys.exit("build first: cargo build --release")
    servers = args.servers.split(",")
    results = {name: [] for name in servers}
    for round_no in range(1, args.rounds + 1):
        for i, name in enumerate(servers):
            port = args.port + i
            proc = start(name, port)
            pid = server_pid(proc, name)
            before = cpu_ticks(pid)
            requests, errors = run_wrk(port, args.conns, args.duration, args.pipeline)
            after = cpu_ticks(pid)
            stop(proc)
            cpu_us = (after - before) * 1e6 / TICK
            per_request = cpu_us / requests if requests else float("nan")
            results[name].append((requests / args.duration, per_request, errors))
            print(
                f"round {round_no} {name:<16} {requests / args.duration:>12,.0f} req/s "
                f"{per_request:6.3f} µs CPU/request  non-2xx {errors}",
                file=sys.stderr,
                flush=True,
            )
    ref = servers[0]
    ref_cpu = statistics.median(r[1] for r in results[ref])
    mode = f"pipelined x{args.pipeline}" if args.pipeline > 1 else "no pipelining"
    print(f"\nwrk -t1 -c{args.conns} -d{args.duration}s, {mode}, {args.rounds} interleaved rounds, "
          f"server on CPU 0, wrk on CPU 1; medians")
    print(f"| server | req/s | server CPU µs/request | vs {ref} |")
    print("|---|---:|---:|---:|")
    for name in servers:
        rps = statistics.median(r[0] for r in results[name])
        cpu = statistics.median(r[1] for r in results[name])
        print(f"| {name} | {rps:,.0f} | {cpu:.3f} | {cpu / ref_cpu:.2f}x |")


if __name__ == "__main__":
    main()
