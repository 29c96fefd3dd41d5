"""picows echo server for bench/run.py: a frame-level listener on uvloop, path "/".

Every data frame goes back as it came (opcode, FIN), so a fragmented message is echoed
fragment by fragment; pings are answered by picows itself (enable_auto_pong), a close frame
with a close frame and a disconnect. Frames up to 64 MiB, no auto-ping. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

MAX = 64 * 2**20


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type != WSMsgType.PONG:
            transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)


def listener(request: WSUpgradeRequest) -> WSListener | None:
    return Echo() if request.path == b"/" or request.path == "/" else None


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await ws_create_server(listener, "127.0.0.1", port, max_frame_size=MAX,
                                    enable_auto_ping=False, backlog=1024)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(main(parser.parse_args().port))
