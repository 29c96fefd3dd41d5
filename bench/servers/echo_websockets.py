"""websockets echo server for bench/run.py: ``async for m in ws: await ws.send(m)``.

The asyncio implementation (websockets.asyncio.server) on the default asyncio loop, any path;
compression off, 64 MiB messages, keepalive pings off. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, serve

MAX = 64 * 2**20


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(echo, "127.0.0.1", port, compression=None, max_size=MAX,
                     ping_interval=None, backlog=1024):
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
