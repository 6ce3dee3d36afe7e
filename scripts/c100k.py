#!/usr/bin/env python3
"""C100K: hold 100,000 concurrent connections on loopback and ping each of them, measured.

    scripts/c100k.py [--backend epoll] [--conns 100000] [--workers 8] [--procs 8]
                     [--sources 127.0.0.2-127.0.0.9] [--hold 60] [--ping-interval 10]
                     [--connect-rate 20000] [--json FILE]

One process may have 20,000 descriptors here and one (source, destination) pair ~28,000
ephemeral ports, so the server runs as --workers processes (SO_REUSEPORT) and loadgen as --procs
processes binding connections to 8 source addresses (IP_BIND_ADDRESS_NO_PORT). The server speaks
echo, so that every ping loadgen sends is verified when it comes back.

Reports the time to open every connection, connect p99, ping p50/p99/max, the server's
user-space RSS per connection, kernel memory per connection (/proc/net/sockstat, both ends of
each loopback connection), and the server's CPU while idly holding. Exits 1 unless every
connection was established and every ping came back intact. Loopback only; bounded by --hold;
every process started is stopped by its PID.
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
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


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


def rss_bytes(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return total


def cpu_seconds(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / TICK


def sockstat():
    """(TCP sockets in use, TCP memory in bytes) from /proc/net/sockstat."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                fields = dict(zip(parts[1::2], parts[2::2]))
                return int(fields["inuse"]), int(fields["mem"]) * PAGE
    return 0, 0


def slab_bytes():
    """Kernel slab memory (sockets, dentries, epoll items…) from /proc/meminfo."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="epoll")
    ap.add_argument("--conns", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--sources", default="127.0.0.2-127.0.0.9")
    ap.add_argument("--hold", type=int, default=60)
    ap.add_argument("--ping-interval", type=int, default=10)
    ap.add_argument("--connect-rate", type=int, default=20_000)
    ap.add_argument("--port", type=int, default=18500)
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra argument for c10k serve (repeatable)")
    args = ap.parse_args()
    for exe in (C10K, LOADGEN):
        if not os.path.exists(exe):
            sys.exit("build first: cargo build --release --workspace")

    socks0, tcp_mem0 = sockstat()
    slab0 = slab_bytes()
    server = subprocess.Popen(
        [C10K, "serve", "--backend", args.backend, "--proto", "echo",
         "--listen", f"127.0.0.1:{args.port}", "--workers", str(args.workers),
         "--idle-timeout", str(args.hold * 4)] + args.server_arg,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, RUST_LOG="warn"), start_new_session=True)
    ready = server.stdout.readline()
    if not ready.startswith("listening on"):
        server.kill()
        sys.exit(f"server did not start: {ready!r} {server.stderr.read()}")
    rss0 = rss_bytes(server.pid)
    report_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    started = time.monotonic()
    loadgen = subprocess.Popen(
        [LOADGEN, "hold", f"127.0.0.1:{args.port}", "--conns", str(args.conns),
         "--procs", str(args.procs), "--source", args.sources,
         "--connect-rate", str(args.connect_rate), "--duration", f"{args.hold}s",
         "--ping-interval", f"{args.ping_interval}s", "--json", report_file],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    # Sample while holding: the peak server RSS and kernel memory, and the server's CPU over a
    # quiet stretch once every connection is open.
    peak_rss, peak_tcp_mem, peak_socks, peak_slab = rss0, tcp_mem0, socks0, slab0
    opened_at = None
    cpu_window = None
    while loadgen.poll() is None:
        socks, tcp_mem = sockstat()
        peak_rss = max(peak_rss, rss_bytes(server.pid))
        peak_tcp_mem = max(peak_tcp_mem, tcp_mem)
        peak_slab = max(peak_slab, slab_bytes())
        peak_socks = max(peak_socks, socks)
        if opened_at is None and socks - socks0 >= 2 * args.conns:
            opened_at = time.monotonic() - started
            cpu_window = (time.monotonic(), cpu_seconds(server.pid))
        time.sleep(0.25)
    stdout = loadgen.stdout.read()
    held_until = time.monotonic()
    idle_cpu = None
    if cpu_window:
        idle_cpu = (cpu_seconds(server.pid) - cpu_window[1]) / max(held_until - cpu_window[0], 1e-9)
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()

    try:
        with open(report_file) as f:
            report = json.load(f)
    except (OSError, ValueError):
        print(stdout)
        sys.exit("loadgen wrote no report")
    finally:
        os.unlink(report_file)
    conns = report.get("connections", {})
    established = conns.get("established", 0)
    failed = conns.get("failed", 0)
    pings = {k: report.get("requests", {}).get(k)
             for k in ("sent", "completed", "verified", "in_flight_at_end", "timeouts")}
    result = {
        "backend": args.backend,
        "workers": args.workers,
        "requested": args.conns,
        "established": established,
        "failed": failed,
        "time_to_open_all_s": round(opened_at, 2) if opened_at else None,
        "connect_latency_us": report.get("connect_latency_us"),
        "pings": pings,
        "ping_latency_us": report.get("latency_us"),
        "server_rss_per_conn_bytes": round((peak_rss - rss0) / max(established, 1)),
        "kernel_tcp_mem_per_conn_bytes": round((peak_tcp_mem - tcp_mem0) / max(established, 1)),
        "kernel_slab_per_conn_bytes": round((peak_slab - slab0) / max(established, 1)),
        "server_cpu_while_holding": round(idle_cpu, 4) if idle_cpu is not None else None,
    }
    req = report.get("requests", {})
    # Lost: past the timeout, or back wrong. A ping still in flight when the hold ended was cut
    # off by the end of the run, not lost; it is reported apart.
    bad_pings = req.get("timeouts", 0) + req.get("corrupted", 0) + req.get("truncated", 0) \
        + req.get("reordered", 0) + req.get("protocol_errors", 0) + req.get("aborted", 0)
    result["bad_pings"] = bad_pings
    held = conns.get("open_at_end", 0)
    result["held_at_end"] = held
    ok = established == args.conns and failed == 0 and held == args.conns and bad_pings == 0
    result["pass"] = ok
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"result": result, "loadgen": report}, f, indent=2)
    print(json.dumps(result, indent=2))
    print("PASS" if ok else "FAIL", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
