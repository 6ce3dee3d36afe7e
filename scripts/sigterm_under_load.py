#!/usr/bin/env python3
"""Graceful shutdown under load: `loadgen http --conns 50` (closed loop, keep-alive) against a
fresh server per backend, SIGTERM to the server mid-run. RFC 9112 §9.6: every request the server
received is answered (the last ones with `Connection: close`), so loadgen must count 0 aborted
requests, and the server must exit 0.

    scripts/sigterm_under_load.py [--backends epoll,poll,...] [--rounds 3] [--conns 50]
                                  [--signal-after 1.5] [--debug]

Loopback only; each loadgen run is bounded by its --duration; every process started is stopped
by its PID.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = "select,poll,epoll,epoll-edge,sigio,coro,threads,uring,pool,epoll-workers2"


def server_args(name):
    if name == "epoll-edge":
        return ["--backend", "epoll", "--edge"]
    if name.startswith("epoll-workers"):
        return ["--backend", "epoll", "--workers", name[len("epoll-workers"):]]
    if name == "pool":
        # The pool holds a thread per keep-alive connection (until issue 12): one for each.
        return ["--backend", "pool", "--pool-threads", "64"]
    return ["--backend", name]


def one_run(bindir, name, conns, signal_after):
    server = subprocess.Popen(
        [os.path.join(bindir, "c10k"), "serve", "--listen", "127.0.0.1:0"] + server_args(name),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = server.stdout.readline().decode()
        port = int(line.split()[2].rsplit(":", 1)[1])
        with tempfile.TemporaryDirectory() as tmp:
            report = os.path.join(tmp, "r.json")
            load = subprocess.Popen(
                [os.path.join(bindir, "loadgen"), "http", f"http://127.0.0.1:{port}/plaintext",
                 "--conns", str(conns), "-t", "1", "--duration", f"{signal_after + 2.5}s",
                 "--json", report],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(signal_after)  # the load runs this long before the signal: the scenario
            server.send_signal(signal.SIGTERM)
            status = server.wait(timeout=30)
            load.wait(timeout=60)
            r = json.load(open(report))
        return status, r["requests"]["completed"], r["requests"]["aborted"]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default=BACKENDS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--signal-after", type=float, default=1.5)
    ap.add_argument("--debug", action="store_true", help="use target/debug instead of release")
    args = ap.parse_args()
    bindir = os.path.join(ROOT, "target", "debug" if args.debug else "release")
    if not os.path.exists(os.path.join(bindir, "loadgen")):
        sys.exit(f"build first: cargo build {'' if args.debug else '--release '}--workspace")
    print("| backend | round | server exit | completed | aborted |")
    print("|---|---:|---:|---:|---:|")
    failed = False
    for rnd in range(1, args.rounds + 1):
        for name in args.backends.split(","):
            status, completed, aborted = one_run(bindir, name, args.conns, args.signal_after)
            failed |= status != 0 or aborted != 0
            print(f"| {name} | {rnd} | {status} | {completed} | {aborted} |", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
