#!/usr/bin/env python3
"""asyncio peer for `loadgen compare --peers`: an HTTP/1.1 keep-alive server on Python's asyncio
(the world of the classic event-loop tutorials), answering every request head with a fixed 200.

Run: python3 benches/peers/asyncio/asyncio_peer.py --port 0
     (prints "listening on 127.0.0.1:PORT peer=asyncio"; stop it with SIGTERM)
"""
import argparse
import asyncio
import ctypes
import signal

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: asyncio\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 13\r\n\r\nHello, World!"
)
MAX_HEAD = 16384
# glibc's M_MMAP_THRESHOLD (malloc.h).
M_MMAP_THRESHOLD = -3


def steady_malloc():
    """asyncio reads into a fresh 256 KiB bytes object, which glibc maps anew (and the kernel
    faults in) on every read until some large free raises glibc's mmap threshold: a fresh server
    ran at a third of its speed for its first seconds (173,807 page faults in its first 2.4 s
    under load, 21 in the next), so a measurement depended on what ran before it. Setting the
    threshold up front gives every run the steady state."""
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to set


class Http(asyncio.Protocol):
    """A Protocol, not streams: the cheapest way asyncio offers, one callback per read."""

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        # Scan by index and cut once: slicing the buffer after every head copies the rest each
        # time, quadratic in the heads one read brings, so a server that fell behind once (a
        # cold start under load) would fall further behind with every read and never recover.
        answers = 0
        start = 0
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                break
            start = end + 4
            answers += 1
        self.buf = buf[start:]
        if len(self.buf) > MAX_HEAD:
            self.transport.close()
            return
        if answers:
            self.transport.write(RESPONSE * answers)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", args.port, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{port} peer=asyncio", flush=True)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    server.close()


if __name__ == "__main__":
    steady_malloc()
    asyncio.run(main())
