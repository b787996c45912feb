#!/usr/bin/env python3
"""An HTTP/1.1 proxy in front of an S3 server that counts requests and
bytes as the server sees them, and optionally adds a fixed one-way delay
in each direction (a round trip of 2*DELAY_MS) without capping bandwidth:
each chunk is forwarded at its arrival time plus the delay, so transfers
stay pipelined. Loopback only; no TLS.

Usage: s3_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS LOG_FILE

Every completed request appends one line to LOG_FILE:
    METHOD KIND STATUS BYTES_UP BYTES_DOWN TARGET
KIND is `list` (a GET of a bucket with list parameters), `object`, or
`bucket`; BYTES_* are body bytes. A harness counts the lines a step added.
"""
import asyncio
import sys
import time


class Counter:
    def __init__(self, path):
        self.out = open(path, "a", buffering=1)

    def record(self, method, kind, status, up, down, target):
        self.out.write(f"{method} {kind} {status} {up} {down} {target}\n")


def classify(method, target):
    path, _, query = target.partition("?")
    parts = [p for p in path.split("/") if p]
    if method == "GET" and len(parts) <= 1 and ("list-type" in query or "prefix" in query or len(parts) == 1):
        return "list"
    return "object" if len(parts) >= 2 else "bucket"


class Stream:
    """Reads one direction of a connection, forwards every byte with the
    delay, and parses HTTP/1.1 message framing as it goes."""

    def __init__(self, reader, writer, delay):
        self.reader, self.writer, self.delay = reader, writer, delay
        self.buf = b""
        self.q = asyncio.Queue()
        self.eof = False

    async def fill(self):
        data = await self.reader.read(256 * 1024)
        await self.q.put((time.monotonic() + self.delay, data))
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def line_block(self):
        """The header block (up to the blank line), or None at EOF."""
        while b"\r\n\r\n" not in self.buf:
            if self.eof or not await self.fill():
                return None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head.decode("latin-1").split("\r\n")

    async def take(self, n):
        """Consumes `n` bytes (fewer at EOF) as they arrive; returns how
        many. A body is never held whole: a pack of 16 MiB would otherwise
        be copied again at every read that extends it."""
        got = 0
        while True:
            k = min(n - got, len(self.buf))
            got += k
            self.buf = self.buf[k:]
            if got == n or self.eof or not await self.fill():
                return got

    async def body(self, headers, no_body=False):
        if no_body:
            return 0
        if "chunked" in headers.get("transfer-encoding", "").lower():
            total = 0
            while True:
                while b"\r\n" not in self.buf:
                    if self.eof or not await self.fill():
                        return total
                size_line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                total += size
                await self.take(size + 2)
                if size == 0:
                    return total
        n = int(headers.get("content-length", "0") or "0")
        return await self.take(n)

    async def forward(self):
        while True:
            due, data = await self.q.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                try:
                    self.writer.write_eof()
                except OSError:
                    pass
                return
            self.writer.write(data)
            await self.writer.drain()


def parse_headers(lines):
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return headers


async def drain_rest(stream):
    while await stream.fill():
        stream.buf = b""


async def requests(up, pending):
    while True:
        lines = await up.line_block()
        if lines is None:
            await drain_rest(up)
            await pending.put(None)
            return
        method, target = (lines[0].split(" ") + ["", ""])[:2]
        headers = parse_headers(lines)
        # Queued before the body is read: a client that sends
        # `Expect: 100-continue` waits for the server's interim answer.
        rec = [method, classify(method, target), 0, target.replace(" ", "%20")]
        await pending.put(rec)
        rec[2] = await up.body(headers)


async def responses(down, pending, counter):
    while True:
        req = await pending.get()
        if req is None:
            await drain_rest(down)
            return
        method, kind = req[0], req[1]
        while True:
            lines = await down.line_block()
            if lines is None:
                counter.record(method, kind, "none", req[2], 0, req[3])
                await drain_rest(down)
                return
            status = (lines[0].split(" ") + ["", ""])[1]
            if not status.startswith("1"):
                break
        headers = parse_headers(lines)
        n_down = await down.body(headers, no_body=method == "HEAD" or status in ("204", "304"))
        counter.record(method, kind, status, req[2], n_down, req[3])


async def main():
    listen, upstream, delay, log = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000, sys.argv[4]
    counter = Counter(log)

    async def handle(cr, cw):
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            cw.close()
            return
        up, down = Stream(cr, sw, delay), Stream(sr, cw, delay)
        pending = asyncio.Queue()
        try:
            await asyncio.gather(requests(up, pending), responses(down, pending, counter), up.forward(), down.forward())
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            sw.close()
            cw.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


asyncio.run(main())
