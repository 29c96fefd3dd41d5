"""picows broadcast server for bench/fanout.py: a plain loop of sends, path "/broadcast".

picows has no pub/sub of its own, so this is the simplest fan-out on it: a set of the open
transports, and every data frame a client sends is sent (``transport.send``, framed per
subscriber) to every one of them, the sender included, as it came (opcode, FIN). Pings are
answered by picows itself, a close frame with a close frame and a disconnect. Frames up to
64 MiB, no auto-ping, uvloop. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

MAX = 64 * 2**20
clients: set[WSTransport] = set()


class Subscriber(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        clients.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        clients.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            clients.discard(transport)
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
            payload = frame.get_payload_as_memoryview()
            for client in clients:
                client.send(frame.msg_type, payload, frame.fin)


def listener(request: WSUpgradeRequest) -> WSListener | None:
    return Subscriber() if request.path in (b"/broadcast", "/broadcast") else None


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
