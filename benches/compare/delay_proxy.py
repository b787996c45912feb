#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way delay in each direction (a round
trip of 2*DELAY_MS), without capping bandwidth: each chunk is forwarded at
its arrival time plus the delay, so transfers stay pipelined. It stands in
for `tc netem` where the kernel lacks it. Loopback only.

Usage: delay_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS
"""
import asyncio, sys, time

async def pipe(reader, writer, delay):
    q = asyncio.Queue()

    async def read():
        while True:
            data = await reader.read(256 * 1024)
            await q.put((time.monotonic() + delay, data))
            if not data:
                return

    async def write():
        while True:
            due, data = await q.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                try:
                    writer.write_eof()
                except OSError:
                    pass
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()

async def main():
    listen, upstream, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000

    async def handle(cr, cw):
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pipe(cr, sw, delay), pipe(sr, cw, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()

asyncio.run(main())
