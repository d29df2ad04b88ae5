"""A loopback TCP proxy that holds every answer back by DELAY_MS: a slow link, for benchmarks.

    python3 benches/slow_link.py LISTEN_PORT UPSTREAM_HOST:PORT DELAY_MS

Each chunk the upstream sends reaches the client DELAY_MS later (chunks keep their order and
are not held back one behind the other), so every request/response round trip gains DELAY_MS.
"""

import asyncio
import sys


async def pipe(reader, writer, delay):
    loop = asyncio.get_running_loop()
    pending = []
    try:
        while data := await reader.read(1 << 16):
            due = loop.time() + delay
            pending.append(asyncio.ensure_future(deliver(writer, data, due, pending[-1:] )))
    finally:
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        writer.close()


async def deliver(writer, data, due, before):
    if before:
        await before[0]
    await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
    writer.write(data)
    await writer.drain()


async def main():
    port, upstream, delay_ms = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    host, upstream_port = upstream.rsplit(":", 1)

    async def handle(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection(host, int(upstream_port))
        await asyncio.gather(
            pipe(client_reader, server_writer, 0.0),
            pipe(server_reader, client_writer, delay_ms / 1000),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
