#!/usr/bin/env python3
"""Slow clients (slowloris): N clients each send one header byte every few seconds while
loadgen drives normal keep-alive traffic. The slow clients must be cut at the header timeout
(HTTP 408), and the normal clients served all along.

    scripts/slow_clients.py [--backend epoll] [--slow 5000] [--drip 2] [--header-timeout 10]
                            [--duration 30] [--normal-conns 50]

Loopback only; bounded by --duration (plus the time to open the slow clients); every process
started is stopped by its PID.
"""

import argparse
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C10K = os.path.join(ROOT, "target", "release", "c10k")
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")
HEAD = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"s" * 4000 + b"\r\n\r\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="epoll")
    ap.add_argument("--slow", type=int, default=5000)
    ap.add_argument("--drip", type=float, default=2.0, help="seconds between a slow client's bytes")
    ap.add_argument("--header-timeout", type=float, default=10.0)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--normal-conns", type=int, default=50)
    ap.add_argument("--port", type=int, default=18600)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    server = subprocess.Popen(
        [C10K, "serve", "--backend", args.backend, "--listen", f"127.0.0.1:{args.port}",
         "--header-timeout", str(args.header_timeout)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(os.environ, RUST_LOG="error"), start_new_session=True)
    if not server.stdout.readline().startswith("listening on"):
        sys.exit("server did not start")

    sel = selectors.DefaultSelector()
    clients = {}
    opened = time.monotonic()
    for i in range(args.slow):
        s = socket.create_connection(("127.0.0.1", args.port))
        s.setblocking(False)
        clients[s.fileno()] = {"sock": s, "sent": 0, "opened": time.monotonic(), "cut": None, "status": None}
        sel.register(s, selectors.EVENT_READ)
    print(f"{args.slow} slow clients open in {time.monotonic() - opened:.1f} s", file=sys.stderr)

    stop = threading.Event()

    def drip():
        # One byte per client per --drip seconds, spread over the interval.
        while not stop.is_set():
            start = time.monotonic()
            for c in list(clients.values()):
                if c["cut"] is None and c["sent"] < len(HEAD):
                    try:
                        c["sock"].send(HEAD[c["sent"]:c["sent"] + 1])
                        c["sent"] += 1
                    except OSError:
                        pass
            stop.wait(max(0.0, args.drip - (time.monotonic() - start)))

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    report_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    normal = subprocess.Popen(
        [LOADGEN, "http", f"http://127.0.0.1:{args.port}/plaintext", "--conns", str(args.normal_conns),
         "--duration", f"{args.duration}s", "--threads", "1", "--json", report_file],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while normal.poll() is None:
        for key, _ in sel.select(timeout=0.2):
            c = clients[key.fd]
            try:
                data = c["sock"].recv(4096)
            except OSError:
                data = b""
            if c["cut"] is None:
                c["cut"] = time.monotonic() - c["opened"]
                c["status"] = data[9:12].decode(errors="replace") if data.startswith(b"HTTP/1.1 ") else "closed"
            if not data:
                sel.unregister(c["sock"])
    stop.set()
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)
    report = json.load(open(report_file))
    os.unlink(report_file)

    cut = [c for c in clients.values() if c["cut"] is not None]
    statuses = {}
    for c in cut:
        statuses[c["status"]] = statuses.get(c["status"], 0) + 1
    cut_times = sorted(c["cut"] for c in cut)
    completed = sum(1 for c in clients.values() if c["sent"] >= len(HEAD))
    lat = report.get("latency_us", {})
    result = {
        "backend": args.backend,
        "slow_clients": args.slow,
        "slow_clients_cut": len(cut),
        "slow_cut_status": statuses,
        "slow_cut_after_s": {"min": round(cut_times[0], 2), "median": round(cut_times[len(cut_times) // 2], 2),
                             "max": round(cut_times[-1], 2)} if cut_times else None,
        "slow_clients_that_sent_a_whole_head": completed,
        "normal_req_per_s": round(report.get("rates", {}).get("req_per_s", 0)),
        "normal_latency_us": {k: lat.get(k) for k in ("p50", "p99", "max")},
        "normal_errors": report.get("connections", {}).get("failed"),
    }
    print(json.dumps(result, indent=2))
    ok = len(cut) == args.slow and completed == 0 and result["normal_req_per_s"] > 0
    print("PASS" if ok else "FAIL", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
