#!/usr/bin/env python3
"""Hostile inputs beyond the test suite, against a fresh server per backend: what the client
sees for each, and whether the server still serves a normal client afterwards. A row is OK when
the answer is the expected one and the server survived.

    scripts/hostile_inputs.py [--backends epoll,poll,...] [--debug]

Loopback only; every connection has a timeout; every process started is stopped by its PID.
"""

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = "select,poll,epoll,epoll-edge,sigio,coro,threads,uring,pool,busy-poll"
TIMEOUT = 10


def server_args(name):
    if name == "epoll-edge":
        return ["--backend", "epoll", "--edge"]
    if name == "pool":
        # The pool holds a thread per keep-alive connection (until issue 12).
        return ["--backend", "pool", "--pool-threads", "64"]
    return ["--backend", name]


def status_of(data):
    """The status code of the first response in `data`, or what happened instead."""
    if not data:
        return "EOF"
    if data.startswith(b"HTTP/1.1 "):
        return data[9:12].decode()
    return f"garbage {data[:20]!r}"


def exchange(port, payload, half_close=False, read_all=True, rst=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        s.sendall(payload)
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return "reset sent"
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return status_of(out) + " +RST"
            if not chunk:
                return status_of(out) + " +EOF"
            out += chunk
            if not read_all and b"\r\n\r\n" in out:
                return status_of(out)
    except socket.timeout:
        return "TIMEOUT"
    finally:
        s.close()


def pipelined_flood(port, n=20000):
    """n pipelined requests written before reading anything: backpressure, not buffering; every
    response must come back, in order."""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    req = b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
    blob = req * n
    import threading

    t = threading.Thread(target=lambda: s.sendall(blob))
    t.start()
    got, buf = 0, b""
    while got < n:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
        got += buf.count(b"HTTP/1.1 200")
        buf = buf[buf.rfind(b"HTTP/1.1 200") + 1:] if b"HTTP/1.1 200" in buf else buf
    t.join()
    s.close()
    return f"{got}/{n} answered"


def connect_storm(port, n=3000):
    """Connect and close at once, n times: the server must not leak or stall."""
    for _ in range(n):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    return f"{n} connect+close"


CASES = [
    # name, function(port) -> what the client saw, expected prefix
    ("request line of 100 KB", lambda p: exchange(p, b"GET /" + b"a" * 100_000), "414"),
    ("10,000 header lines", lambda p: exchange(p, b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X: y\r\n" * 10_000), "431"),
    ("NUL in a header value", lambda p: exchange(p, b"GET / HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n"), "400"),
    ("empty header name", lambda p: exchange(p, b"GET / HTTP/1.1\r\nHost: t\r\n: x\r\n\r\n"), "400"),
    ("Content-Length of 20 digits", lambda p: exchange(p, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n"), "413"),
    ("negative Content-Length", lambda p: exchange(p, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n"), "400"),
    ("chunk size of 18 hex digits", lambda p: exchange(p, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"), "400"),
    ("CL + TE (smuggling)", lambda p: exchange(p, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), "400"),
    ("TE: chunked in HTTP/1.0", lambda p: exchange(p, b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), "400"),
    ("bare LF request", lambda p: exchange(p, b"GET / HTTP/1.1\nHost: t\n\n"), "400"),
    ("lowercase method", lambda p: exchange(p, b"get / HTTP/1.1\r\nHost: t\r\n\r\n"), "501"),
    ("method of 10 KB", lambda p: exchange(p, b"G" * 10_000 + b" / HTTP/1.1\r\nHost: t\r\n\r\n"), "414"),
    ("HTTP/2 preface on HTTP/1.1", lambda p: exchange(p, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "505"),
    ("TLS ClientHello", lambda p: exchange(p, bytes.fromhex("16030100a5010000a10303") + b"\0" * 150), "400"),
    ("request then half-close", lambda p: exchange(p, b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n", half_close=True), "200 +EOF"),
    ("request then RST", lambda p: exchange(p, b"GET /bytes/10000000 HTTP/1.1\r\nHost: t\r\n\r\n", rst=True), "reset sent"),
    # RFC 9110 §10.1.1: with the content not yet sent, a chunked echo (whose answer needs the
    # whole body) gets 100 first; a Content-Length echo gets its final 200 at once (its status
    # is known from the head) and streams the body back.
    ("Expect: 100-continue, chunked, head only", lambda p: exchange(p, b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n", read_all=False), "100"),
    ("Expect: 100-continue, Content-Length, head only", lambda p: exchange(p, b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", read_all=False), "200"),
    ("20,000 pipelined requests, read late", lambda p: pipelined_flood(p), "20000/20000"),
    ("3,000 connect+close", lambda p: connect_storm(p), "3000"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default=BACKENDS)
    ap.add_argument("--debug", action="store_true", help="use target/debug instead of release")
    args = ap.parse_args()
    c10k = os.path.join(ROOT, "target", "debug" if args.debug else "release", "c10k")
    failed = 0
    print("| backend | input | client saw | served after | verdict |")
    print("|---|---|---|---|---|")
    for name in args.backends.split(","):
        server = subprocess.Popen(
            [c10k, "serve", "--listen", "127.0.0.1:0"] + server_args(name),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = int(server.stdout.readline().decode().split()[2].rsplit(":", 1)[1])
            for label, case, expected in CASES:
                try:
                    saw = case(port)
                except OSError as e:
                    saw = f"error {e}"
                after = exchange(port, b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                ok = saw.startswith(expected) and after.startswith("200") and server.poll() is None
                failed += not ok
                print(f"| {name} | {label} | {saw} | {after} | {'OK' if ok else 'FAIL'} |", flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
