"""One Starlette application on three ASGI servers, for bench/asgi.py: corral's example
``corral.examples.starlette_echo`` (a WebSocket echo on "/", text as text and binary as
binary, and an HTTP "hello" on "/hello"), the same module under every server.

    python bench/servers/asgi_app.py --server corral --port 9001
    python bench/servers/asgi_app.py --server uvicorn --port 9001   # httptools, uvloop
    python bench/servers/asgi_app.py --server granian --port 9001   # embedded: one process

Every server gets the same settings where it has them: compression off, 64 MiB messages,
keepalive pings off, no access log, one process on 127.0.0.1 (granian's embedded server runs
its Rust runtime as threads of this process, so /proc/PID/stat counts all of its CPU).
"""

from __future__ import annotations

import argparse
import asyncio

from corral.examples.starlette_echo import app

MAX = 64 * 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("corral", "uvicorn", "granian"), required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.server == "corral":
        import corral

        corral.run(app, "127.0.0.1", args.port, max_message_size=MAX, max_frame_size=MAX,
                   idle_timeout=None, ping_interval=None, compression=None, max_body=MAX,
                   configure_logging=False)
    elif args.server == "uvicorn":
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                    ws_max_size=MAX, ws_ping_interval=None, ws_per_message_deflate=False,
                    access_log=False, log_level="warning", lifespan="on")
    else:
        import uvloop
        from granian.constants import Interfaces
        from granian.server.embed import Server

        server = Server(app, address="127.0.0.1", port=args.port, interface=Interfaces.ASGI,
                        log_access=False)
        uvloop.install()  # the embedded server runs on the loop asyncio.run makes
        asyncio.run(server.serve())


if __name__ == "__main__":
    main()
