#!/usr/bin/env python3
"""Soak: `loadgen echo` with every byte verified, 10,000 connections for 10 minutes on each
event backend. Passes when no byte was lost or corrupted, every connection stayed up, and the
server's RSS stayed flat (its growth after the first minute is under --rss-slack).

    scripts/soak.py [--backends epoll,poll,select,sigio,uring,coro] [--conns 10000]
                    [--duration 600] [--size 64] [--rate 0] [--rss-slack-kib 2048] [--json FILE]

Several backends can soak at once from separate invocations (different --port), e.g. with a
--rate that leaves the machine room: every byte is verified either way.

Loopback only; each run bounded by --duration; every process started is stopped by its PID.
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
C10K = os.path.join(ROOT, "target", "release", "c10k")
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def soak(backend, args, port):
    server = subprocess.Popen(
        [C10K, "serve", "--backend", backend, "--proto", "echo", "--listen", f"127.0.0.1:{port}",
         # An open-loop schedule leaves some connections quiet for a while: the soak is about
         # bytes and memory, not the idle timeout (tested in the suite).
         "--idle-timeout", str(args.duration * 2)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(os.environ, RUST_LOG="warn"), start_new_session=True)
    if not server.stdout.readline().startswith("listening on"):
        sys.exit(f"{backend}: server did not start")
    report_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    loadgen = subprocess.Popen(
        [LOADGEN, "echo", f"127.0.0.1:{port}", "--conns", str(args.conns), "--size", str(args.size),
         "--duration", f"{args.duration}s", "--connect-rate", "10000", "--json", report_file]
        + (["--rate", str(args.rate)] if args.rate else []) + ["--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    samples = []
    while loadgen.poll() is None:
        samples.append((round(time.monotonic() - started), rss_kib(server.pid)))
        time.sleep(5)
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)
    with open(report_file) as f:
        report = json.load(f)
    os.unlink(report_file)
    settled = [kib for t, kib in samples if t >= 60] or [kib for _, kib in samples]
    growth = max(settled) - settled[0] if settled else 0
    conns = report["connections"]
    req = report["requests"]
    verify = {k: req.get(k, 0) for k in ("verified", "corrupted", "truncated", "reordered",
                                          "timeouts", "protocol_errors", "aborted")}
    result = {
        "backend": backend,
        "conns": args.conns,
        "duration_s": args.duration,
        "messages": report["requests"].get("completed"),
        "req_per_s": round(report["rates"]["req_per_s"]),
        "latency_us": {k: report["latency_us"][k] for k in ("p50", "p99", "p99_9", "max")},
        "established": conns["established"],
        "failed": conns["failed"],
        "closed": conns["econnreset"] + conns["closed_by_peer"] + conns["closed_on_error"]
        + conns["closed_on_timeout"],
        "verify": verify,
        "rss_kib_first_last_max": [settled[0], settled[-1], max(settled)] if settled else None,
        "rss_growth_kib_after_first_minute": growth,
    }
    bad = sum(v for k, v in verify.items() if k != "verified" and isinstance(v, int))
    ok = (conns["established"] == args.conns and conns["failed"] == 0 and result["closed"] == 0
          and bad == 0 and growth <= args.rss_slack_kib)
    return result, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="epoll,poll,select,sigio,uring,coro")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--duration", type=int, default=600)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rate", type=float, default=0,
                    help="messages/s over all connections (open loop); 0: as fast as it goes")
    ap.add_argument("--rss-slack-kib", type=int, default=2048)
    ap.add_argument("--port", type=int, default=18700)
    ap.add_argument("--json")
    args = ap.parse_args()
    results, all_ok = [], True
    for i, backend in enumerate(args.backends.split(",")):
        result, ok = soak(backend, args, args.port + i)
        all_ok &= ok
        results.append(result)
        print(json.dumps(result), flush=True)
        print(f"{backend}: {'PASS' if ok else 'FAIL'}", file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
