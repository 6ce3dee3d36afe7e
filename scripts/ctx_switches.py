#!/usr/bin/env python3
"""Context switches and CPU per request, per I/O model: threads vs worker processes vs
coroutines vs an event loop vs a pool, and Python's asyncio beside them.

    cargo build --release --workspace
    python3 scripts/ctx_switches.py [--conns 100] [--rate 10000] [--duration 5] [--rounds 1]
                                    [--out FILE]

For each subject: a fresh server on 127.0.0.1:0 (pinned to CPU 0 when there are two CPUs),
`loadgen http` pinned to CPU 1, open loop at --rate over --conns keep-alive connections for
a window of --duration seconds inside one loadgen run (2 s after it starts, 2 s before it
ends, so every connection is open throughout). At both ends of the window the voluntary and
involuntary context switches of every thread of the server and its worker processes
(/proc/PID/task/TID/status) and their CPU time (/proc/PID/stat utime+stime) are summed; the
deltas are divided by the requests the server answered in the window (its /stats; for the
asyncio peer, loadgen's count scaled to the window). With --rounds N every subject is run once
per round, the subjects interleaved, and `medians` gives each subject's median of each figure
over the rounds (on a shared machine one round can fall on a burst of other work).
Loopback only; every run bounded in time.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C10K = os.path.join(ROOT, "target", "release", "c10k")
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")
ASYNCIO = os.path.join(ROOT, "benches", "peers", "asyncio", "asyncio_peer.py")
TICK = os.sysconf("SC_CLK_TCK")
WARMUP_S, TAIL_S = 2, 2

SUBJECTS = {
    "threads": [C10K, "serve", "--backend", "threads"],
    # worker processes: the epoll loop in two processes on one port (SO_REUSEPORT)
    "processes": [C10K, "serve", "--backend", "epoll", "--workers", "2"],
    "epoll": [C10K, "serve", "--backend", "epoll"],
    "coro": [C10K, "serve", "--backend", "coro"],
    "pool": [C10K, "serve", "--backend", "pool"],
    "asyncio": [sys.executable, ASYNCIO],
    "select": [C10K, "serve", "--backend", "select"],
    "poll": [C10K, "serve", "--backend", "poll"],
}
DEFAULT_SUBJECTS = "threads,processes,epoll,coro,pool,asyncio"


def descendants(pid):
    """pid and every process below it (the workers of --workers N)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def sample(pid):
    voluntary = involuntary = ticks = threads = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            for tid in os.listdir(f"/proc/{p}/task"):
                threads += 1
                with open(f"/proc/{p}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches"):
                            voluntary += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches"):
                            involuntary += int(line.split()[1])
        except OSError:
            continue
    return voluntary, involuntary, ticks, threads


def pin(cpu):
    return ["taskset", "-c", str(cpu)] if (os.cpu_count() or 1) >= 2 else []


def stats_requests(port):
    """The server's own request count (c10k's /stats; with --workers, the total)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
        return json.load(r)["requests"]


def run_subject(name, argv, args):
    """Samples inside one loadgen run, while its connections are open: the threads backend's
    per-connection threads exit with their connections, and their switch counts with them."""
    is_c10k = name != "asyncio"
    extra = ["--listen", "127.0.0.1:0", "--idle-timeout", "600"] if is_c10k else ["--port", "0"]
    server = subprocess.Popen(pin(0) + argv + extra, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    loadgen = None
    try:
        line = server.stdout.readline()  # the ready line: the server listens
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not match:
            return {"subject": name, "error": f"no ready line: {line!r}"}
        port = match.group(1)
        url = f"http://127.0.0.1:{port}/plaintext"
        report = tempfile.NamedTemporaryFile(suffix=".json")
        total = WARMUP_S + args.duration + TAIL_S
        loadgen = subprocess.Popen(
            pin(1) + [LOADGEN, "http", url, "-t", "1", "-c", str(args.conns), "--rate", str(args.rate),
                      "-d", f"{total}s", "--json", report.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(WARMUP_S)  # the measurement window starts after loadgen's ramp, by the clock
        before = sample(server.pid)
        requests_before = stats_requests(port) if is_c10k else None
        time.sleep(args.duration)
        after = sample(server.pid)
        requests_after = stats_requests(port) if is_c10k else None
        loadgen.wait(timeout=total + 60)
        doc = json.load(open(report.name))
        if is_c10k:
            completed = requests_after - requests_before - 1  # less the /stats request itself
        else:
            # asyncio has no /stats: its one thread never exits, so whole-run totals are exact;
            # scale loadgen's count to the window by the achieved rate.
            completed = doc["requests"]["completed"] * args.duration / total
        if completed <= 0:
            return {"subject": name, "error": "no request completed"}
        return {
            "subject": name,
            "requests": round(completed),
            "achieved_req_per_s": completed / args.duration,
            "p99_us": doc.get("latency_us", {}).get("p99"),
            "voluntary_per_req": (after[0] - before[0]) / completed,
            "involuntary_per_req": (after[1] - before[1]) / completed,
            "switches_per_req": (after[0] + after[1] - before[0] - before[1]) / completed,
            "cpu_us_per_req": (after[2] - before[2]) / TICK * 1e6 / completed,
            "server_threads": after[3],
        }
    finally:
        if loadgen and loadgen.poll() is None:
            loadgen.kill()
            loadgen.wait()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def median_per_subject(subjects, runs):
    """Each subject's median of every figure over its rounds that did not fail, and the range
    (FIELD_min, FIELD_max)."""
    medians = []
    for name in dict.fromkeys(subjects):
        good = [r for r in runs if r["subject"] == name and "error" not in r]
        if not good:
            continue
        fields = [k for k, v in good[0].items() if isinstance(v, (int, float)) and k != "round"]
        summary = {"subject": name, "rounds": len(good)}
        for field in fields:
            values = [r[field] for r in good if r.get(field) is not None]
            if values:
                summary[field] = statistics.median(values)
                summary[f"{field}_min"] = min(values)
                summary[f"{field}_max"] = max(values)
        medians.append(summary)
    return medians


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--subjects", default=DEFAULT_SUBJECTS, help=f"any of: {', '.join(SUBJECTS)}")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds over the subjects")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    subjects = args.subjects.split(",")
    loadavg_start = [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    runs = []
    for round_no in range(1, args.rounds + 1):
        for name in subjects:
            r = run_subject(name, SUBJECTS[name], args)
            r["round"] = round_no
            runs.append(r)
            if "error" in r:
                print(f"round {round_no} {name:22} {r['error']}")
            else:
                print(f"round {round_no} {name:22} {r['requests']:7} requests  switches/req "
                      f"{r['switches_per_req']:.3f} (voluntary {r['voluntary_per_req']:.3f})  "
                      f"CPU {r['cpu_us_per_req']:.1f} µs/req  threads {r['server_threads']}")
    medians = median_per_subject(subjects, runs)
    if args.out:
        doc = {
            "command": " ".join(["scripts/ctx_switches.py"] + sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "kernel": os.uname().release,
            "nproc": os.cpu_count(),
            "note": "machine shared with other work while measured; server pinned to CPU 0, loadgen to CPU 1",
            "conns": args.conns, "rate": args.rate, "duration_s": args.duration,
            "rounds": args.rounds,
            "loadavg_start": loadavg_start,
            "loadavg_end": [float(x) for x in open("/proc/loadavg").read().split()[:3]],
            "runs": runs,
            "medians": medians,
        }
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
