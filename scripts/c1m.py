#!/usr/bin/env python3
"""C1M: hold up to a million concurrent connections on loopback, ping each, measure every cost.

    scripts/c1m.py [--conns 1000000] [--backend epoll] [--hold 150] [--ping-interval 100]
                   [--connect-rate 4000] [--timeout 45] [--json FILE] [--kernel-ports]
                   [--workers N] [--procs N] [--sources A-B]   (chosen from --conns if absent)

Sizes the run itself from this machine's limits: server workers (SO_REUSEPORT, c10k serve
--workers) and loadgen processes so that none passes ~16,000 of its 20,000 descriptors, and
enough source addresses in 127.1.0.0/16 for one (address, port) pair per connection
(loadgen --source-ports, ports above net.ipv4.ip_local_port_range: connect() never searches for
a port, see docs/c1m.md). --kernel-ports lets the kernel pick ports instead (IP_BIND_ADDRESS_NO_
PORT over addresses of at most 12,000 connections each, under the half-range cliff).

Before anything starts it prints each system limit against what the run needs (descriptors,
fs.file-max, pid_max, epoll watches, ports, tcp_mem, memory) and refuses a run that cannot fit.
Then: connections open on a ramp (--connect-rate), are held --hold seconds once all are open and
pinged every --ping-interval (16 bytes, echoed, each verified); since --ping-interval + --timeout
<= --hold, every held connection had a ping due at least --timeout before the end, so with no
ping lost or wrong, every connection was pinged and verified at least once.

Reports established, held at the end, lost/bad pings, time to open, ping p50/p99/max, server and
loadgen user memory per connection, kernel slab per connection (with the largest caches), socket
buffer memory, server CPU while holding, and loadgen's system CPU per new connection along the
ramp (the connect-cost curve). --json FILE gets all of it, with `pass` and `held_at_end`. Every
process started is stopped by its process group (from its PID) at the end, on error, on SIGINT
and on SIGTERM; the run is bounded (ramp + hold + margins).
"""

import argparse
import ipaddress
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C10K = os.path.join(ROOT, "target", "release", "c10k")
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# Connections per process: 4,000 under the 20,000-descriptor limit, for SO_REUSEPORT's uneven
# hash on the server side and the process's own descriptors.
PER_PROCESS = 16_000
# Kernel-chosen ports: under half the ephemeral range per (source, destination) pair (14,116
# here), past which each connect() scans a whole parity of the range (docs/c1m.md).
PER_SOURCE_KERNEL = 12_000
# What one connection costs the machine, for the memory preflight (both ends): measured at 100K
# (docs/c100k.md: ~10.5 KB slab, ~2 KB socket buffers, ~0.5 KB user space), rounded up.
BYTES_PER_CONN_ESTIMATE = 14_000
# Socket-buffer memory (net.ipv4.tcp_mem's unit of account) a pinged connection keeps charged
# (/proc/net/sockstat "mem", both ends), measured at 20K: each socket keeps its partly used page.
TCP_MEM_PER_CONN_ESTIMATE = 2_400


def read(path):
    with open(path) as f:
        return f.read()


def sysctl(name):
    return read("/proc/sys/" + name.replace(".", "/")).split()


def meminfo():
    out = {}
    for line in read("/proc/meminfo").splitlines():
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0]) * 1024
    return out


def sockstat():
    """(TCP sockets in use, TCP socket-buffer memory in bytes, TIME_WAIT)."""
    for line in read("/proc/net/sockstat").splitlines():
        if line.startswith("TCP:"):
            p = line.split()
            f = dict(zip(p[1::2], p[2::2]))
            return int(f["inuse"]), int(f["mem"]) * PAGE, int(f["tw"])
    return 0, 0, 0


def slabinfo():
    """{cache: (active objects, object size)}; empty when /proc/slabinfo is unreadable."""
    out = {}
    try:
        for line in read("/proc/slabinfo").splitlines()[2:]:
            p = line.split()
            out[p[0]] = (int(p[1]), int(p[3]))
    except OSError:
        pass
    return out


def tcp_ext(names=("ListenOverflows", "ListenDrops", "TCPSynRetrans", "TCPMemoryPressures",
                    "TCPAbortOnMemory", "PruneCalled", "TCPTimeouts")):
    """Kernel TCP counters (/proc/net/netstat TcpExt) that say why connects or pings stall."""
    rows = [l.split() for l in read("/proc/net/netstat").splitlines() if l.startswith("TcpExt:")]
    if len(rows) < 2:
        return {}
    d = dict(zip(rows[0][1:], rows[1][1:]))
    return {k: int(d.get(k, 0)) for k in names}


def tree(pid):
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            for child in read(f"/proc/{pid}/task/{task}/children").split():
                pids += tree(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return pids


def rss_and_cpu(pid):
    """(RSS bytes, user s, system s, processes) over the process tree of `pid`."""
    rss = user = system = n = 0
    for p in tree(pid):
        try:
            for line in read(f"/proc/{p}/status").splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
            fields = read(f"/proc/{p}/stat").rsplit(")", 1)[1].split()
            user += int(fields[11]) / TICK
            system += int(fields[12]) / TICK
            n += 1
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return rss, user, system, n


def tasks_running():
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                n += len(os.listdir(f"/proc/{d}/task"))
            except OSError:
                pass
    return n


class Procs:
    """Every process this script started, stopped by process group at the end, whatever ends it."""

    def __init__(self):
        self.started = []

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.started.append(p)
        return p

    def stop_all(self, grace=60):
        for p in reversed(self.started):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for p in reversed(self.started):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # The group too: workers of a parent that already exited.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        self.started.clear()


def plan(args):
    eph_lo, eph_hi = map(int, sysctl("net.ipv4.ip_local_port_range"))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_proc = min(PER_PROCESS, nofile - 4_000) if nofile > 8_000 else nofile // 2
    workers = args.workers or -(-args.conns // per_proc)
    procs = args.procs or max(1, -(-args.conns // per_proc))
    ports = None if args.kernel_ports else (eph_hi + 1, 65535)
    if args.sources:
        first, _, last = args.sources.partition("-")
        last = last or first
    else:
        per_source = PER_SOURCE_KERNEL if ports is None else ports[1] - ports[0] + 1
        first = "127.1.0.1"
        last = str(ipaddress.IPv4Address(first) + (-(-args.conns // per_source) - 1))
    n_sources = int(ipaddress.IPv4Address(last)) - int(ipaddress.IPv4Address(first)) + 1
    sources = f"{first}-{last}"
    return {"workers": workers, "procs": procs, "sources": sources, "n_sources": n_sources,
            "source_ports": ports, "ephemeral": (eph_lo, eph_hi), "nofile": nofile,
            "threads_per_proc": 1}


def limits_table(args, p):
    """Each limit against what the run needs: (name, value, needed, fits, note)."""
    conns = args.conns
    rows = []
    per_worker = -(-conns // p["workers"])
    per_proc = -(-conns // p["procs"])
    rows.append(("descriptors per process (RLIMIT_NOFILE hard)", p["nofile"],
                 max(per_worker, per_proc) + 64, max(per_worker, per_proc) + 64 <= p["nofile"],
                 f"{p['workers']} server workers (~{per_worker:,} each, SO_REUSEPORT hash is "
                 f"uneven), {p['procs']} loadgen processes ({per_proc:,} each)"))
    file_max = int(sysctl("fs.file-max")[0])
    in_use = int(read("/proc/sys/fs/file-nr").split()[0])
    rows.append(("fs.file-max (open files, system-wide)", file_max, in_use + 2 * conns,
                 in_use + 2 * conns <= file_max,
                 f"{in_use:,} open now + both ends of every connection"))
    pid_max = int(sysctl("kernel.pid_max")[0])
    tasks_now = tasks_running()
    ours = p["workers"] + 1 + p["procs"] * (p["threads_per_proc"] + 2) + 1
    rows.append(("kernel.pid_max (threads, system-wide)", pid_max, tasks_now + ours,
                 tasks_now + ours <= pid_max, f"{tasks_now:,} tasks now + {ours} ours"))
    watches = int(sysctl("fs.epoll.max_user_watches")[0])
    rows.append(("fs.epoll.max_user_watches (per user)", watches, 2 * conns, 2 * conns <= watches,
                 "server and loadgen each watch every connection"))
    if p["source_ports"]:
        lo, hi = p["source_ports"]
        pairs = p["n_sources"] * (hi - lo + 1)
        rows.append(("(source address, port) pairs", pairs, conns, conns <= pairs,
                     f"{p['n_sources']} addresses × ports {lo}-{hi} (above the ephemeral "
                     f"range {p['ephemeral'][0]}-{p['ephemeral'][1]})"))
    else:
        lo, hi = p["ephemeral"]
        half = (hi - lo + 1) // 2
        per_source = -(-conns // p["n_sources"])
        rows.append(("ports per (source, destination) before the connect() cliff", half,
                     per_source, per_source <= half,
                     f"{p['n_sources']} addresses, kernel-chosen ports (half of {lo}-{hi})"))
    somax = int(sysctl("net.core.somaxconn")[0])
    rows.append(("net.core.somaxconn (accept backlog per listener)", somax,
                 -(-args.connect_rate // p["workers"]), True,
                 f"{p['workers']} listeners; needed = one second of the ramp per listener"))
    tcp_mem = [int(x) * PAGE for x in sysctl("net.ipv4.tcp_mem")]
    _, tcp_now, _ = sockstat()
    tcp_need = tcp_now + conns * TCP_MEM_PER_CONN_ESTIMATE
    rows.append(("net.ipv4.tcp_mem max (socket buffers, system-wide)", tcp_mem[2],
                 tcp_need, True,
                 f"soft: over {tcp_mem[1] / 2**30:.2f} GiB the kernel is under memory pressure "
                 f"and reclaims; {tcp_now / 2**20:.0f} MiB in use now + "
                 f"{TCP_MEM_PER_CONN_ESTIMATE:,} B per pinged connection (measured at 20K)"))
    avail = meminfo()["MemAvailable"]
    need = conns * BYTES_PER_CONN_ESTIMATE
    rows.append(("MemAvailable", avail, need, need * 1.15 <= avail,
                 f"{BYTES_PER_CONN_ESTIMATE:,} B per connection (both ends) + 15 % margin"))
    return rows


def fmt_bytes(v):
    return f"{v / 2**30:.2f} GiB" if v >= 2**30 else f"{v / 2**20:.1f} MiB" if v >= 2**20 else f"{v:,}"


def loadgen_baseline_rss(procs):
    """RSS of loadgen's idle parent and one idle worker (nothing open), to subtract: ~procs+1
    processes each with their own fixed cost (binary, allocator arenas, the event loop)."""
    from socket import socket
    s = socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    port = s.getsockname()[1]
    p = subprocess.Popen([LOADGEN, "hold", f"127.0.0.1:{port}", "-c", "2", "--procs", "2",
                          "-t", "1", "-d", "3s"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(1.5)
        pids = tree(p.pid)
        per = []
        for q in pids:
            try:
                for line in read(f"/proc/{q}/status").splitlines():
                    if line.startswith("VmRSS:"):
                        per.append(int(line.split()[1]) * 1024)
            except OSError:
                pass
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        s.close()
    if len(per) < 3:
        return 0
    parent, worker = per[0], max(per[1:])
    return parent + procs * worker


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=1_000_000)
    ap.add_argument("--backend", default="epoll")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--procs", type=int)
    ap.add_argument("--sources", help="A-B range of source addresses (default: chosen)")
    ap.add_argument("--kernel-ports", action="store_true",
                    help="let the kernel choose source ports (IP_BIND_ADDRESS_NO_PORT)")
    ap.add_argument("--hold", type=int, default=150)
    ap.add_argument("--ping-interval", type=int, default=100)
    ap.add_argument("--timeout", type=int, default=45, help="connect and ping timeout, s (a SYN dropped on a full accept queue is resent after 1, 3, 7, 15, 31 s)")
    ap.add_argument("--connect-rate", type=int, default=4_000)
    ap.add_argument("--port", type=int, default=18600)
    ap.add_argument("--force", action="store_true", help="run even if a limit says no")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    if args.hold < 30:
        sys.exit("--hold must be at least 30 s")
    if args.ping_interval + args.timeout > args.hold:
        sys.exit("--ping-interval + --timeout must fit in --hold, so that every connection "
                 "has a ping due and answered before the end")
    for exe in (C10K, LOADGEN):
        if not os.path.exists(exe):
            sys.exit("build first: cargo build --release --workspace")
    p = plan(args)
    rows = limits_table(args, p)
    print(f"C1M preflight for {args.conns:,} connections:", file=sys.stderr)
    for name, value, needed, fits, note in rows:
        mark = "ok" if fits else f"SHORT by {needed - value:,}"
        big = "MemAvailable" in name or "tcp_mem" in name
        v, n = (fmt_bytes(value), fmt_bytes(needed)) if big else (f"{value:,}", f"{needed:,}")
        print(f"  {name:58} {v:>12}  needed {n:>12}  {mark:>16}  {note}", file=sys.stderr)
    if not all(r[3] for r in rows) and not args.force:
        sys.exit("refused: a limit above is short (--force to try anyway)")

    procs = Procs()
    result = {"requested": args.conns, "backend": args.backend, "workers": p["workers"],
              "loadgen_procs": p["procs"], "sources": p["sources"],
              "source_ports": p["source_ports"], "hold_s": args.hold,
              "ping_interval_s": args.ping_interval, "connect_rate": args.connect_rate,
              "limits": [{"limit": r[0], "value": r[1], "needed": r[2], "fits": r[3],
                          "note": r[4]} for r in rows]}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    report_file = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    samples, lines = [], []
    try:
        lg_base = loadgen_baseline_rss(p["procs"])
        mem0, slab0, (socks0, tcp0, _) = meminfo(), slabinfo(), sockstat()
        ext0 = tcp_ext()
        server = procs.start(
            [C10K, "serve", "--backend", args.backend, "--proto", "echo",
             "--listen", f"127.0.0.1:{args.port}", "--workers", str(p["workers"]),
             "--idle-timeout", "3600"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=dict(os.environ, RUST_LOG="error"))
        ready = server.stdout.readline()
        if not ready.startswith("listening on"):
            raise RuntimeError(f"server did not start: {ready!r}")
        time.sleep(1)  # the workers' listeners (each prints nothing more)
        srv0 = rss_and_cpu(server.pid)
        argv = [LOADGEN, "hold", f"127.0.0.1:{args.port}", "--conns", str(args.conns),
                "--procs", str(p["procs"]), "-t", str(p["threads_per_proc"]),
                "--source", p["sources"], "--connect-rate", str(args.connect_rate),
                "--duration", f"{args.hold}s", "--timeout", f"{args.timeout}s",
                "--ping-interval", f"{args.ping_interval}s", "--interval", "1s",
                "--json", report_file]
        if p["source_ports"]:
            argv += ["--source-ports", f"{p['source_ports'][0]}-{p['source_ports'][1]}"]
        result["loadgen_argv"] = argv[1:]
        started = time.monotonic()
        loadgen = procs.start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def read_intervals():
            for line in loadgen.stderr:
                try:
                    lines.append((time.monotonic() - started, json.loads(line)))
                except ValueError:
                    pass

        reader = threading.Thread(target=read_intervals, daemon=True)
        reader.start()
        ramp = args.conns / args.connect_rate
        deadline = started + ramp * 3 + args.hold + args.timeout + 120
        opened_at = None
        peak = {"slab": None, "mem": None}
        while loadgen.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the run passed its time bound")
            srv, lg = rss_and_cpu(server.pid), rss_and_cpu(loadgen.pid)
            mi, (socks, tcp, tw) = meminfo(), sockstat()
            # Both ends of each loopback connection are TCP sockets in /proc/net/sockstat: its
            # count, at every sample, is how far the ramp is (others' sockets are noise here).
            open_now = max(0, (socks - socks0) // 2)
            s = {"t": round(time.monotonic() - started, 2), "conns_open": open_now,
                 "pings": sum(l.get("requests", 0) for _, l in lines),
                 "server_rss": srv[0], "server_cpu": srv[1] + srv[2],
                 "loadgen_rss": lg[0], "loadgen_user": lg[1], "loadgen_sys": lg[2],
                 "slab": mi["Slab"], "slab_unreclaimable": mi["SUnreclaim"], "mem_used": mi["MemTotal"] - mi["MemAvailable"],
                 "tcp_mem": tcp, "tcp_inuse": socks}
            samples.append(s)
            # loadgen's own count, in the interval that ends at t seconds after its start.
            if opened_at is None and open_now >= 0.999 * args.conns:
                opened_at = s["t"]
            # Kernel caches once all are open and settled: the middle of the hold.
            if opened_at is not None and peak["slab"] is None and s["t"] >= opened_at + 10:
                peak["slab"], peak["mem"] = slabinfo(), s
            time.sleep(0.5)
        reader.join(timeout=10)
        ext1 = tcp_ext()
        held_until = time.monotonic() - started
        with open(report_file) as f:
            report = json.load(f)
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}): stopping everything started", file=sys.stderr)
        procs.stop_all(grace=30)
        sys.exit(130)
    except (RuntimeError, OSError, ValueError) as e:
        print(f"error: {e}: stopping everything started", file=sys.stderr)
        procs.stop_all(grace=30)
        sys.exit(1)
    finally:
        procs.stop_all()
        try:
            os.unlink(report_file)
        except OSError:
            pass

    conns, req = report["connections"], report["requests"]
    established, held = conns["established"], conns["open_at_end"]
    n = max(established, 1)
    bad = sum(req.get(k, 0) for k in
              ("timeouts", "corrupted", "truncated", "reordered", "protocol_errors", "aborted"))
    holding = [s for s in samples if opened_at is not None and s["t"] >= opened_at]
    srv_cpu = None
    if len(holding) >= 2:
        srv_cpu = (holding[-1]["server_cpu"] - holding[0]["server_cpu"]) / \
            (holding[-1]["t"] - holding[0]["t"])
    top = max(samples, key=lambda s: s["server_rss"]) if samples else None
    peak_s = peak["mem"] or (samples[-1] if samples else None)
    caches = []
    if peak["slab"]:
        for name, (objs, size) in peak["slab"].items():
            grown = (objs - slab0.get(name, (0, size))[0]) * size
            if grown > 0:
                caches.append((name, grown, objs - slab0.get(name, (0, size))[0], size))
        caches.sort(key=lambda c: -c[1])
    # loadgen's system CPU per new connection along the ramp, in steps of a tenth of the run.
    curve, step = [], max(args.conns // 10, 1)
    mark = 0
    for s in samples:
        if s["conns_open"] >= (mark + 1) * step or (s is samples[-1] and mark == 0):
            prev = next((q for q in samples if q["conns_open"] >= mark * step), samples[0])
            dc = s["conns_open"] - prev["conns_open"]
            if dc > 0:
                curve.append({"conns_from": prev["conns_open"], "conns_to": s["conns_open"],
                              "loadgen_sys_us_per_conn": round(
                                  (s["loadgen_sys"] - prev["loadgen_sys"]) * 1e6 / dc, 1),
                              "pings_meanwhile": s["pings"] - prev["pings"]})
            mark = s["conns_open"] // step
    lat = report.get("latency_us", {})
    result.update({
        "established": established, "failed": conns["failed"], "held_at_end": held,
        "failed_by_cause": {k: conns[k] for k in ("econnrefused", "etimedout", "eaddrnotavail",
                                                  "emfile", "other_connect_error")},
        "closed": {k: conns[k] for k in ("econnreset", "closed_by_peer", "closed_on_error",
                                         "closed_on_timeout")},
        "time_to_open_all_s": opened_at,
        "connect_latency_us": {k: report["connect_latency_us"].get(k) for k in ("p50", "p99",
                                                                                 "max")},
        "pings": {k: req.get(k) for k in ("sent", "verified", "in_flight_at_end")},
        "lost_or_bad_pings": bad,
        "ping_latency_us": {k: lat.get(k) for k in ("p50", "p99", "max")},
        "server_user_bytes_per_conn": round((top["server_rss"] - srv0[0]) / n) if top else None,
        "loadgen_user_bytes_per_conn": round((max(s["loadgen_rss"] for s in samples) - lg_base)
                                             / n) if samples else None,
        "loadgen_fixed_rss_bytes": lg_base,
        "kernel_slab_bytes_per_conn": round((peak_s["slab"] - mem0["Slab"]) / n)
        if peak_s else None,
        "kernel_slab_unreclaimable_bytes_per_conn": round(
            (peak_s["slab_unreclaimable"] - mem0["SUnreclaim"]) / n) if peak_s else None,
        "kernel_slab_caches_per_conn": {c[0]: round(c[1] / n) for c in caches[:8]},
        "socket_buffer_bytes_per_conn_peak": round((max(s["tcp_mem"] for s in samples) - tcp0)
                                                   / n) if samples else None,
        # MemTotal - MemAvailable: everything the run cost the machine, less what the kernel
        # could reclaim from the page cache meanwhile (other sessions' too): a cross-check only.
        "machine_memory_bytes_per_conn": round((peak_s["mem_used"] - (mem0["MemTotal"]
                                                - mem0["MemAvailable"])) / n) if peak_s else None,
        "server_cpu_while_holding": round(srv_cpu, 3) if srv_cpu is not None else None,
        "loadgen_sys_cpu_s": report["loadgen"]["counters"]["process_sys_us"] / 1e6,
        "loadgen_loop_lag_max_us": report["loadgen"]["loop_lag_us"]["max"],
        "connect_cost_curve": curve,
        "loadgen_open_at_s": next((l["t"] for _, l in lines
                                   if l.get("conns_open", 0) >= args.conns), None),
        "tcp_counters_during_run": {k: ext1.get(k, 0) - v for k, v in ext0.items()},
        "held_s_after_all_open": round(held_until - opened_at, 1) if opened_at else None,
    })
    ok = (established == args.conns and conns["failed"] == 0 and held == args.conns
          and bad == 0 and req.get("verified", 0) >= held)
    result["pass"] = ok
    if args.json:
        # The result indented (it is what people read); each sample and the report on one line.
        with open(args.json, "w") as f:
            f.write('{\n"result": ' + json.dumps(result, indent=1) + ',\n"samples": [\n')
            f.write(",\n".join(json.dumps(s, separators=(",", ":")) for s in samples))
            f.write('\n],\n"loadgen": ' + json.dumps(report, separators=(",", ":")) + "\n}\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("limits", "loadgen_argv")},
                     indent=2))
    print("PASS" if ok else "FAIL", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
