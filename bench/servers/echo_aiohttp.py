"""aiohttp echo server for bench/run.py: ``web.WebSocketResponse`` on "/".

Text back with send_str, binary with send_bytes; compression off, 64 MiB messages, no
heartbeat, no access log; the default asyncio loop. web.run_app stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse

from aiohttp import WSMsgType, web

MAX = 64 * 2**20


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=MAX, heartbeat=None)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    app = web.Application()
    app.router.add_get("/", echo)
    web.run_app(app, host="127.0.0.1", port=parser.parse_args().port, print=None,
                access_log=None, backlog=1024)
