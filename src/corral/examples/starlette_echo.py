"""A Starlette WebSocket echo (and an HTTP "hello"), served by corral as an ASGI app:

    corral run corral.examples.starlette_echo:app

The quick Autobahn mode runs against it too (``scripts/autobahn.sh --quick --asgi``): an
ASGI WebSocket must be as conformant as corral's own handlers, the engine under it being
the same. Needs ``starlette`` (``pip install starlette``).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def echo(websocket: WebSocket) -> None:
    """Send every message back as it came: text as text, binary as binary."""
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


app = Starlette(routes=[WebSocketRoute("/", echo), Route("/hello", hello)])
