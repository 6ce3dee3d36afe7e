#!/usr/bin/env python3
"""asyncio peer for `loadgen compare --peers`: an HTTP/1.1 keep-alive server on Python's asyncio
(the world of the classic event-loop tutorials), answering every request head with a fixed 200.

Run: python3 benches/peers/asyncio/asyncio_peer.py --port 0
     (prints "listening on 127.0.0.1:PORT peer=asyncio"; stop it with SIGTERM)
"""
import argparse
import asyncio
import signal

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: asyncio\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 13\r\n\r\nHello, World!"
)
MAX_HEAD = 16384


class Http(asyncio.Protocol):
    """A Protocol, not streams: the cheapest way asyncio offers, one callback per read."""

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        answers = 0
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            self.buf = self.buf[end + 4:]
            answers += 1
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
    asyncio.run(main())
