"""corral echo server for bench/run.py: the echo example's handler (callback style) on "/",
or the same echo written in the ``async for`` style (``--style async``).

    python bench/servers/echo_corral.py --port 9001          # compiled fast path when built
    CORRAL_PURE=1 python bench/servers/echo_corral.py --port 9001
    python bench/servers/echo_corral.py --port 9001 --style async

Compression off, messages and frames up to 64 MiB, no keepalive pings, no idle timeout (the
idle-connection test must keep its connections). Listens on 127.0.0.1; corral.run stops it
on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse

import corral
import corral.accel
from corral import AsyncWebSocket, Options, Router
from corral.examples.echo import Echo

MAX = 64 * 2**20


async def echo(ws: AsyncWebSocket) -> None:
    """What most users coming from the websockets library write."""
    async for message in ws:
        await ws.send(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--style", choices=("callback", "async"), default="callback")
    args = parser.parse_args()
    options = Options(
        max_message_size=MAX,
        max_frame_size=MAX,
        idle_timeout=None,
        ping_interval=None,
        compression=None,
    )
    print(f"corral compiled={corral.accel.COMPILED} style={args.style}", flush=True)
    handler = Echo if args.style == "callback" else echo
    corral.run(Router().websocket("/", handler), "127.0.0.1", args.port, options=options)


if __name__ == "__main__":
    main()
