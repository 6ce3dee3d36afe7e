#!/usr/bin/env python3
"""User-space memory per idle connection: RSS of the server while `loadgen hold` keeps N idle
connections open, minus its RSS before, divided by N. Interleaved rounds over c10k backends and
peers from benches/peers (cepoll, tokio, asyncio, nginx: built as benches/peers/README.md says).

    scripts/memory_per_conn.py [--conns 10000] [--rounds 3]
                               [--servers c10k-epoll,c10k-poll,c10k-select,nginx,cepoll]

RSS counts the server's own pages only (kernel socket memory is not in it: see
/proc/net/sockstat). For a server with worker processes (nginx), every process is summed.
The server is started on 127.0.0.1, loadgen holds for --hold seconds, everything started is
stopped by PID.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "benches", "peers")
# How each peer starts (as loadgen compare starts them: loadgen/src/compare/peers.rs).
PEER_COMMANDS = {
    "cepoll": [os.path.join(PEERS, "cepoll", "cepoll")],
    "tokio": [os.path.join(PEERS, "tokio", "target", "release", "tokio-peer"), "--threads", "1"],
    "asyncio": ["python3", os.path.join(PEERS, "asyncio", "asyncio_peer.py")],
    # A shell that runs nginx (one process: no master) as its child.
    "nginx": [os.path.join(PEERS, "nginx", "run-nginx.sh")],
}
C10K = os.path.join(ROOT, "target", "release", "c10k")
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")


def tree(pid):
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    pids += tree(int(child))
    except FileNotFoundError:
        pass
    return pids


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def start(name, port):
    if name.startswith("c10k-"):
        args = [C10K, "serve", "--proto", "http", "--listen", f"127.0.0.1:{port}",
                "--backend", name[len("c10k-"):], "--idle-timeout", "600"]
        env = dict(os.environ, RUST_LOG="warn")
    else:
        if name not in PEER_COMMANDS:
            sys.exit(f"unknown server {name}: c10k-BACKEND or one of {', '.join(PEER_COMMANDS)}")
        if not os.path.exists(PEER_COMMANDS[name][0]) and name in ("cepoll", "tokio"):
            sys.exit(f"{name} is not built: see benches/peers/README.md")
        args = PEER_COMMANDS[name] + ["--port", str(port)]
        env = dict(os.environ)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env, start_new_session=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        proc.kill()
        sys.exit(f"{name} did not start: {line!r}")
    if name != "nginx":
        return proc, proc.pid
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        return proc, int(f.read().split()[0])


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def measure(name, port, conns, hold):
    proc, pid = start(name, port)
    # One request first, so that buffers allocated on first use are in the baseline.
    subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"], check=False)
    before = rss_kib(pid)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        loadgen = subprocess.Popen(
            [LOADGEN, "hold", f"127.0.0.1:{port}", "--conns", str(conns), "--duration", f"{hold}s",
             "--connect-rate", "20000", "--json", out.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Sample the server's RSS through the hold; the peak is what the connections cost.
        peak = before
        while loadgen.poll() is None:
            peak = max(peak, rss_kib(pid))
            time.sleep(0.2)
        report = json.load(open(out.name))
    stop(proc)
    held = report.get("connections", {}).get("established", conns)
    return (peak - before) * 1024 / max(held, 1), held


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hold", type=int, default=5)
    ap.add_argument("--servers", default="c10k-epoll,c10k-poll,c10k-select,nginx,cepoll")
    ap.add_argument("--port", type=int, default=18400)
    args = ap.parse_args()
    for exe in (C10K, LOADGEN):
        if not os.path.exists(exe):
            sys.exit("build first: cargo build --release --workspace")
    results = {s: [] for s in args.servers.split(",")}
    for r in range(args.rounds):
        for i, name in enumerate(results):
            per_conn, held = measure(name, args.port + i, args.conns, args.hold)
            results[name].append(per_conn)
            print(f"round {r + 1} {name:<14} {per_conn:8.0f} B/conn ({held} held)", file=sys.stderr)
    print(f"\n{args.conns} idle connections held by loadgen, {args.rounds} interleaved rounds; "
          "server RSS growth per connection, median")
    print("| server | bytes per idle connection |")
    print("|---|---:|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.0f} |")


if __name__ == "__main__":
    main()
