"""corral echo server for bench/compression.py: every message back as it came, on path /.

    python bench/servers/corral_echo.py --port 9001 --compression balanced

``--compression`` picks one of ``corral.COMPRESSION_PRESETS`` (or ``off``: compression
offers are declined); ``--no-context-takeover server|both`` turns context takeover off on top
of the preset and ``--level`` replaces its zlib level. It listens on 127.0.0.1 only, prints
``READY <port>`` once listening (so ``--port 0`` can pick a free port) and stops on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal

import corral
from corral import COMPRESSION_PRESETS, DeflateSettings, Handler, Options, WebSocket


class Echo(Handler):
    """The callback style: no task or future per message."""

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        ws.send(message)


def settings(
    preset: str, no_context_takeover: str | None = None, level: int | None = None
) -> DeflateSettings | None:
    if preset == "off":
        return None
    chosen = COMPRESSION_PRESETS[preset]
    if level is not None:
        chosen = dataclasses.replace(chosen, level=level)
    if no_context_takeover in ("server", "both"):
        chosen = dataclasses.replace(chosen, server_no_context_takeover=True)
    if no_context_takeover == "both":
        chosen = dataclasses.replace(chosen, client_no_context_takeover=True)
    return chosen


async def serve(port: int, options: Options) -> None:
    router = corral.Router().websocket("/", Echo)
    server = await corral.serve(router, "127.0.0.1", port, options=options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {server.port}", flush=True)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--compression", default="balanced",
                        choices=["off", *COMPRESSION_PRESETS])
    parser.add_argument("--no-context-takeover", choices=["server", "both"], default=None)
    parser.add_argument("--level", type=int, default=None,
                        help="zlib level instead of the preset's")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    options = Options(
        # Idle connections must stay open for the memory test, whatever it takes.
        idle_timeout=None,
        compression=settings(args.compression, args.no_context_takeover, args.level),
    )
    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.port, options))


if __name__ == "__main__":
    main()
