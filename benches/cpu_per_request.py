#!/usr/bin/env python3
"""Server CPU time per request, c10k against its peers, measured with wrk in one interleaved run.

On a 2-core machine wrk saturates its core long before a good server does, so plain req/s
mostly measures wrk. What tells servers apart is the CPU time the *server* spends per request
(utime + stime from /proc/PID/stat over the run, divided by the requests wrk completed), and
throughput with pipelining, where the server becomes the bottleneck.

Each round runs every server once, in order, so that drift on a shared machine spreads evenly;
the report gives the median over rounds and the ratio to the first server listed (the
reference, cepoll by default: a minimal C epoll loop, the practical one-core limit).

    benches/cpu_per_request.py [--rounds 3] [--duration 10] [--conns 256] [--pipeline 1,16]
                               [--servers all | cepoll,c10k-epoll,nginx1,tokio1]
                               [--write-doc docs/benchmarks.md]

`--servers all` (the default) is cepoll, nginx1 (when nginx is installed), tokio1 and every c10k
event backend (epoll, epoll --edge, poll, select, sigio, uring, uring --uring-direct, busy-poll). `--pipeline 1,16`
measures both modes, each in its own interleaved rounds. `--write-doc` replaces the generated
table in that Markdown file (between the `cpu_per_request` markers) with this run's and writes the
run's figures, every round included, to docs/results/cpu_per_request.json (or `--write-json`); the
table's figures are spans over that file, which `cargo test --test docs_numbers` checks.
`--from-json FILE` measures nothing and renders the table of an earlier run's file.

Server names: c10k-BACKEND[-edge|-direct][@BINARY] (e.g. c10k-epoll, c10k-epoll-edge, c10k-uring-direct, or
c10k-epoll@../base/target/release/c10k to measure an older build in the same rounds), or any peer
of ../shared/baselines/peer (cepoll, nginx1, nginx2, tokio1, tokio2, asyncio). Needs wrk
(apt-get install wrk; nginx for the nginx peers). The server is pinned to CPU 0 and wrk to CPU 1.
Everything runs on 127.0.0.1, each wrk run is bounded by --duration, and every process started
is stopped by its PID.
"""

import argparse
import json
import math
import os
import re
import shutil
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


def cpu_ticks(pid, user_only=False):
    """utime + stime (or utime alone) of a process and all its descendants (nginx workers, c10k
    workers)."""
    total = 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + (0 if user_only else int(fields[12]))
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    total += cpu_ticks(int(child), user_only)
    except FileNotFoundError:
        pass
    return total


def start(name, port):
    if name.startswith("c10k-"):
        backend, _, binary = name[len("c10k-"):].partition("@")
        args = [binary or C10K, "serve", "--listen", f"127.0.0.1:{port}"]
        for suffix, flag in (("-edge", "--edge"), ("-direct", "--uring-direct")):
            if backend.endswith(suffix):
                backend = backend[: -len(suffix)]
                args.append(flag)
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


EVENT_BACKENDS = ["epoll", "epoll-edge", "poll", "select", "sigio", "uring", "uring-direct",
                  "busy-poll"]
DOC_BEGIN = "<!-- cpu_per_request: begin (generated by benches/cpu_per_request.py --write-doc) -->"
DOC_END = "<!-- cpu_per_request: end -->"
# Under docs/results/, where tests/docs_numbers.rs looks for the files spans name.
JSON_NAME = "cpu_per_request.json"


def all_servers():
    peers = ["cepoll"]
    if shutil.which("nginx"):
        peers.append("nginx1")
    peers.append("tokio1")
    return peers + [f"c10k-{b}" for b in EVENT_BACKENDS]


def measure(servers, args, pipeline):
    """Rounds of every server in turn; per server, a list of (req/s, µs CPU/request, errors,
    µs user CPU/request). The user part is the server's own code: the kernel's loopback TCP,
    the same work for every server, is most of the rest, and most of the noise of a shared
    machine lands there."""
    results = {name: [] for name in servers}
    for round_no in range(1, args.rounds + 1):
        for i, name in enumerate(servers):
            port = args.port + i
            proc = start(name, port)
            pid = server_pid(proc, name)
            before, user_before = cpu_ticks(pid), cpu_ticks(pid, user_only=True)
            requests, errors = run_wrk(port, args.conns, args.duration, pipeline)
            after, user_after = cpu_ticks(pid), cpu_ticks(pid, user_only=True)
            stop(proc)
            cpu_us = (after - before) * 1e6 / TICK
            user_us = (user_after - user_before) * 1e6 / TICK
            per_request = cpu_us / requests if requests else float("nan")
            user_per_request = user_us / requests if requests else float("nan")
            results[name].append(
                (requests / args.duration, per_request, errors, user_per_request))
            print(
                f"pipeline {pipeline:>2} round {round_no} {name:<16} "
                f"{requests / args.duration:>12,.0f} req/s "
                f"{per_request:6.3f} µs CPU/request ({user_per_request:.3f} user)  "
                f"non-2xx {errors}",
                file=sys.stderr,
                flush=True,
            )
    return results


def summary(servers, by_mode, args, command):
    """The run as docs/results/cpu_per_request.json holds it: per mode and server, every round's
    (req/s, µs CPU/request, non-2xx), their medians, and the median and range of the per-round
    ratios to the first server (the reference): on a shared machine a round's servers share its
    conditions, so ratios within rounds are what carry over."""
    ref = servers[0]
    modes = []
    for p, results in by_mode.items():
        rows = []
        for name in servers:
            rounds = results[name]
            ratios = [r[1] / q[1] for r, q in zip(rounds, results[ref])]
            rows.append({
                "server": name,
                "per_round": [
                    {"req_per_s": r[0], "cpu_us_per_req": r[1], "non_2xx": r[2],
                     "user_us_per_req": r[3]} for r in rounds
                ],
                "req_per_s_median": statistics.median(r[0] for r in rounds),
                "cpu_us_per_req_median": statistics.median(r[1] for r in rounds),
                "user_us_per_req_median": statistics.median(r[3] for r in rounds),
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "non_2xx": sum(r[2] for r in rounds),
            })
        modes.append({"pipeline": p, "servers": rows})
    return {
        "version": 1,
        "note": "Written by benches/cpu_per_request.py; docs/benchmarks.md's table quotes it "
                "through checked spans (tests/docs_numbers.rs).",
        "command": command,
        "measured_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": "shared 2-core machine, server on CPU 0, wrk on CPU 1",
        "conns": args.conns,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "reference": ref,
        "modes": modes,
    }


def span(path, shown_value, fmt, json_name=JSON_NAME):
    """A figure as tests/docs_numbers.rs checks it against JSON_NAME. The text is rounded half
    away from zero, as the checker rounds, so that a fresh table passes as written."""
    decimals = int(fmt.lstrip(",."))
    factor = 10 ** decimals
    rounded = math.copysign(math.floor(abs(shown_value) * factor + 0.5), shown_value) / factor
    text = f"{rounded:,.{decimals}f}" if fmt.startswith(",") else f"{rounded:.{decimals}f}"
    return f"<!-- num: {path} file={json_name} fmt={fmt} -->{text}<!-- /num -->"


def table(data):
    """The Markdown table of a summary (a fresh run's or one read back with --from-json), every
    figure a span over the JSON."""
    ref = data["reference"]
    head = "| server |"
    rule = "|---|"
    for mode in data["modes"]:
        p = mode["pipeline"]
        label = "plain" if p == 1 else f"pipelined x{p}"
        head += f" {label} req/s | {label} CPU µs/req | × {ref} (range) |"
        rule += "---:|---:|---:|"
        if "user_us_per_req_median" in mode["servers"][0]:
            head += " of which user µs/req |"
            rule += "---:|"
    lines = [head, rule]
    for i, name in enumerate(row["server"] for row in data["modes"][0]["servers"]):
        line = f"| {name} |"
        for mode in data["modes"]:
            row = mode["servers"][i]
            at = f"modes[pipeline={mode['pipeline']}]/servers[server={name}]"
            note = f" ({row['non_2xx']} non-2xx)" if row["non_2xx"] else ""
            line += (
                f" {span(at + '/req_per_s_median', row['req_per_s_median'], ',.0')}{note}"
                f" | {span(at + '/cpu_us_per_req_median', row['cpu_us_per_req_median'], '.3')}"
                f" | {span(at + '/ratio_median', row['ratio_median'], '.2')}×"
                f" ({span(at + '/ratio_min', row['ratio_min'], '.2')}–"
                f"{span(at + '/ratio_max', row['ratio_max'], '.2')}) |"
            )
            if "user_us_per_req_median" in row:
                line += f" {span(at + '/user_us_per_req_median', row['user_us_per_req_median'], '.3')} |"
        lines.append(line)
    return "\n".join(lines)


def doc_text(data):
    return (
        f"`wrk -t1 -c{data['conns']} -d{data['duration_s']}s /plaintext`, {data['rounds']} "
        f"interleaved rounds per mode, server on CPU 0, wrk on CPU 1; medians, and the median "
        f"(range) of each round's ratio to {data['reference']}; the user part of the CPU time "
        f"(utime) is the server's own code, the rest mostly the kernel's loopback TCP. "
        f"Measured {data['measured_utc']} "
        f"on a shared 2-core machine (data: [results/{JSON_NAME}](results/{JSON_NAME})):\n\n"
        f"```sh\n{data['command']}\n```\n\n"
        + table(data)
    )


def write_doc(path, text, begin=DOC_BEGIN, end=DOC_END):
    """Replaces the generated section of a Markdown file (between its markers) or appends it."""
    with open(path) as f:
        doc = f.read()
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)


def save_and_show(data, text, args, json_name, begin=DOC_BEGIN, end=DOC_END):
    """Writes a fresh run's JSON (with --write-json, or beside the doc with --write-doc), prints
    the table, and with --write-doc puts it into the doc."""
    if not args.from_json:
        json_path = args.write_json or (
            os.path.join(ROOT, "docs", "results", json_name) if args.write_doc else None)
        if json_path:
            with open(json_path, "w") as f:
                json.dump(data, f, indent=1, ensure_ascii=False)
                f.write("\n")
    print(text)
    if args.write_doc:
        write_doc(args.write_doc, text, begin, end)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", type=int, default=256)
    ap.add_argument("--pipeline", default="1",
                    help="requests per write (wrk-pipeline.lua); a list (1,16) measures each")
    ap.add_argument("--servers", default="all")
    ap.add_argument("--port", type=int, default=18190)
    ap.add_argument("--write-doc", metavar="MARKDOWN",
                    help="put the table (with the command and date) into this file")
    ap.add_argument("--write-json", metavar="JSON", default=None,
                    help="write the run's figures here (default with --write-doc: "
                         f"docs/results/{JSON_NAME})")
    ap.add_argument("--from-json", metavar="JSON",
                    help="measure nothing: print (and with --write-doc write) the table of a "
                         "JSON an earlier run wrote")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
    else:
        if not os.path.exists(C10K):
            sys.exit("build first: cargo build --release")
        servers = all_servers() if args.servers == "all" else args.servers.split(",")
        pipelines = [int(p) for p in args.pipeline.split(",")]
        by_mode = {p: measure(servers, args, p) for p in pipelines}
        command = " ".join(["benches/cpu_per_request.py"] + sys.argv[1:])
        data = summary(servers, by_mode, args, command)
    save_and_show(data, doc_text(data), args, JSON_NAME)

if __name__ == "__main__":
    main()
