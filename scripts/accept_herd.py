#!/usr/bin/env python3
"""The accept thundering herd, measured: N worker processes wait in epoll for connections on
one port, and the client counts what each connection cost them.

    python3 scripts/accept_herd.py [--workers 8] [--conns 500]

Three set-ups, run one after another on 127.0.0.1 (loopback only):

- shared:    one listening socket inherited by every worker; each worker has its own epoll
             instance watching it, level-triggered, as most pre-fork servers did;
- exclusive: the same with EPOLLEXCLUSIVE (Linux 4.5), which wakes one or more waiters
             instead of all;
- reuseport: a listening socket per worker, SO_REUSEPORT: the kernel picks the socket per
             connection, so only its owner is woken.

Connections are made one at a time, and the client waits until the server has closed each one
(recv returns 0) before the next, so every connection is a separate wake-up. Per connection it
reports the workers' epoll_wait returns, the returns that found nothing to accept (EAGAIN:
woken for nothing) and the workers' voluntary context switches (from /proc/PID/status, which
also counts a wake-up that the kernel sends back to sleep before epoll_wait returns).
"""
import argparse
import json
import os
import select
import signal
import socket
import sys


def voluntary_switches(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    return 0


def worker(listener, exclusive, report_fd, ready_fd):
    stop = False

    def on_term(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    listener.setblocking(False)
    ep = select.epoll()
    mask = select.EPOLLIN | (select.EPOLLEXCLUSIVE if exclusive else 0)
    ep.register(listener.fileno(), mask)
    os.write(ready_fd, b"r")
    wakeups = empty = accepted = 0
    while not stop:
        try:
            events = ep.poll(1.0)
        except InterruptedError:
            continue
        if not events:
            continue
        wakeups += 1
        got = 0
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                break
            got += 1
            conn.close()
        accepted += got
        if got == 0:
            empty += 1
    os.write(report_fd, f"{wakeups} {empty} {accepted}\n".encode())
    os._exit(0)


def listen(port=0, reuseport=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    return s


def run(mode, workers, conns):
    report_r, report_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pids = []
    if mode == "reuseport":
        first = listen(reuseport=True)
        port = first.getsockname()[1]
        listeners = [first] + [listen(port, reuseport=True) for _ in range(workers - 1)]
    else:
        shared = listen()
        port = shared.getsockname()[1]
        listeners = [shared] * workers
    for i in range(workers):
        pid = os.fork()
        if pid == 0:
            os.close(report_r)
            worker(listeners[i], mode == "exclusive", report_w, ready_w)
        pids.append(pid)
    os.close(report_w)
    for _ in range(workers):
        os.read(ready_r, 1)
    for s in listeners:  # the workers hold their copies
        s.close()
    before = sum(voluntary_switches(p) for p in pids)
    for _ in range(conns):
        c = socket.create_connection(("127.0.0.1", port))
        c.settimeout(10)
        c.recv(1)  # returns b"" once a worker has accepted and closed it
        c.close()
    after = sum(voluntary_switches(p) for p in pids)
    for p in pids:
        os.kill(p, signal.SIGTERM)
    lines = b""
    while lines.count(b"\n") < workers:
        chunk = os.read(report_r, 4096)
        if not chunk:
            break
        lines += chunk
    for p in pids:
        os.waitpid(p, 0)
    totals = [0, 0, 0]
    for row in lines.decode().strip().split("\n"):
        for i, v in enumerate(row.split()):
            totals[i] += int(v)
    wakeups, empty, accepted = totals
    return {
        "mode": mode,
        "workers": workers,
        "conns": conns,
        "accepted": accepted,
        "wakeups_per_conn": wakeups / conns,
        "empty_wakeups_per_conn": empty / conns,
        "voluntary_switches_per_conn": (after - before) / conns,
    }


def dead_worker(conns):
    """Two SO_REUSEPORT listeners, nobody accepting; `conns` clients connect (the kernel
    completes each handshake into one listener's accept queue), then listener 0 closes, as a
    worker that dies does. Counts the clients reset by that close and those still served by the
    surviving listener."""
    a = listen(reuseport=True)
    port = a.getsockname()[1]
    b = listen(port, reuseport=True)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    a.close()
    b.setblocking(False)
    served = 0
    while True:
        try:
            conn, _ = b.accept()
        except BlockingIOError:
            break
        conn.sendall(b"x")
        conn.close()
        served += 1
    reset = 0
    for c in clients:
        c.settimeout(5)
        try:
            if c.recv(1) == b"":
                reset += 1  # closed without the byte: not served either
        except ConnectionResetError:
            reset += 1
        c.close()
    b.close()
    return {"mode": "dead-worker", "listeners": 2, "conns": conns, "served_by_survivor": served,
            "reset_by_close": reset}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--conns", type=int, default=500)
    ap.add_argument("--json", action="store_true", help="print one JSON document with every mode")
    args = ap.parse_args()

    print(f"{args.workers} workers, {args.conns} connections one at a time, kernel {os.uname().release}",
          file=sys.stderr)
    results = []
    for mode in ("shared", "exclusive", "reuseport"):
        r = run(mode, args.workers, args.conns)
        results.append(r)
        if not args.json:
            print(f"{mode:10} accepted {r['accepted']:5}  epoll_wait returns/conn "
                  f"{r['wakeups_per_conn']:.2f}  of them empty {r['empty_wakeups_per_conn']:.2f}  "
                  f"voluntary switches/conn {r['voluntary_switches_per_conn']:.2f}")
    dead = dead_worker(200)
    results.append(dead)
    if not args.json:
        print(f"dead worker: of {dead['conns']} queued connections, {dead['reset_by_close']} reset when "
              f"listener 0 closed, {dead['served_by_survivor']} served by the other")
    if args.json:
        doc = {"command": " ".join(["scripts/accept_herd.py"] + sys.argv[1:]),
               "kernel": os.uname().release, "nproc": os.cpu_count(),
               "note": "machine shared with other work while measured", "runs": results}
        print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
