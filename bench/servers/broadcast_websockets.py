"""websockets broadcast server for bench/fanout.py: a set of connections and
``websockets.asyncio.server.broadcast`` (the library's own fan-out helper).

Every connection (any path) joins the set; every message one sends goes to all of them, the
sender included, with ``broadcast(clients, message)``: written to each connection without
waiting (no backpressure; a connection that is not open is skipped). The default asyncio
loop; compression off, 64 MiB messages, keepalive pings off. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve

MAX = 64 * 2**20
clients: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    clients.add(ws)
    try:
        async for message in ws:
            broadcast(clients, message)
    finally:
        clients.discard(ws)


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=MAX,
                     ping_interval=None, backlog=1024):
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
