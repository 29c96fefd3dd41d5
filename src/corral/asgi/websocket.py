"""An ASGI application's ``websocket`` scope, run over corral's own connection.

:class:`AsgiWebSocket` is an :class:`~corral.AsyncWebSocket` (the ``async for`` style's
handler) that an ASGI application drives through ``receive`` and ``send`` instead of
``recv()`` and ``send()``. Everything under it is corral's: the handshake checks, the origin
check, compression, limits, keepalive, backpressure and the close handshake. What the spec
(asgiref ``specs/www.rst``, WebSocket, spec version 2.4) asks of a server, and where:

- ``websocket.connect`` is the first thing ``receive`` gives; the handshake waits for the
  application's answer (:meth:`decide`): ``websocket.accept`` (subprotocol, headers) is
  corral's ``Accept``; ``websocket.close`` before it is a 403; the denial response
  extension (``websocket.http.response.start`` and ``.body``) is any status, headers and
  body. An application that raises or returns before answering gets a 500, logged once.
- After the 101, ``websocket.receive`` carries each message, ``websocket.disconnect`` the
  close code and reason once the connection is over; ``websocket.send`` waits while the
  write buffer is over ``write_limit`` (a slow client makes the application wait);
  ``websocket.close`` starts the close handshake. A ``send`` once the connection is over
  raises :class:`ClientDisconnected`, an ``OSError``.
- An application that returns leaves the connection closed with 1000; one that raises,
  with 1011 (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..async_api import AsyncWebSocket
from ..exceptions import ConnectionClosed
from ..handler import Accept, Reject
from ..websocket import WebSocket

__all__ = ["AsgiWebSocket", "ClientDisconnected"]

logger = logging.getLogger("corral.asgi")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

_CONNECTING, _ACCEPTING, _OPEN, _RESPONDING, _DONE = range(5)


class ClientDisconnected(OSError):
    """``send`` on a connection that is over (ASGI spec 2.4: an ``OSError`` subclass)."""


def _header_pairs(headers: Any) -> list[tuple[str, str]]:
    """ASGI headers (``[[b"name", b"value"], ...]``) as corral's ``(str, str)`` pairs."""
    pairs = []
    for name, value in headers or ():
        pairs.append((bytes(name).decode("latin-1"), bytes(value).decode("latin-1")))
    return pairs


class AsgiWebSocket(AsyncWebSocket):
    """Runs one ASGI ``websocket`` scope over a corral connection (see the module
    docstring). ``track_task`` registers the application's task with the server, which
    cancels it on shutdown once the close timeout is over."""

    def __init__(self, app: ASGIApp, scope: MutableMapping[str, Any],
                 track_task: Callable[[asyncio.Task[Any]], None] | None = None) -> None:
        super().__init__()
        self._app = app
        self.scope = scope
        self._track_task = track_task
        self._state = _CONNECTING
        self._connect_given = False
        self._decision: asyncio.Future[Accept | Reject] | None = None
        self._accepted: asyncio.Future[None] | None = None  # the session took over (on_open)
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self.task: asyncio.Task[None] | None = None
        # The application ended while its accept was being written: (its error or None).
        self._ended_early: tuple[BaseException | None] | None = None

    # -- the handshake, driven by the server -------------------------------------------------

    async def decide(self) -> Accept | Reject:
        """Start the application and wait for its answer to ``websocket.connect``."""
        loop = asyncio.get_running_loop()
        self._decision = loop.create_future()
        self._accepted = loop.create_future()
        self.task = loop.create_task(self._run())
        if self._track_task is not None:
            self._track_task(self.task)
        return await self._decision

    def abandon(self) -> None:
        """The handshake did not complete after all (the client left, the server is
        stopping, the accept could not be honoured): the application hears a disconnect."""
        self._state = _DONE
        if self._accepted is not None and not self._accepted.done():
            self._accepted.set_exception(ClientDisconnected("the WebSocket handshake failed"))
            self._accepted.exception()  # nobody may be waiting: do not warn about it
        self._wake()

    def on_open(self, ws: WebSocket) -> None:
        super().on_open(ws)
        self._state = _OPEN
        if self._accepted is not None and not self._accepted.done():
            self._accepted.set_result(None)
        if self._ended_early is not None:
            self._ended(self._ended_early[0])

    def _decide(self, decision: Accept | Reject) -> None:
        if self._decision is not None and not self._decision.done():
            self._decision.set_result(decision)

    # -- the application ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._app(self.scope, self.receive, self.send_message)
        except BaseException as exc:
            self._ended(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._ended(None)

    def _ended(self, exc: BaseException | None) -> None:
        ws = self.ws
        if self._state in (_CONNECTING, _RESPONDING):
            # No answer to the handshake (or half a denial response): a 500, logged once.
            if exc is None:
                logger.error("ASGI application %r returned without accepting or refusing the "
                             "WebSocket", self._app)
            elif isinstance(exc, Exception):
                logger.error("ASGI application %r raised during the WebSocket handshake",
                             self._app, exc_info=exc)
            self._state = _DONE
            self._decide(Reject(500, "internal server error\n"))
            return
        if self._state == _ACCEPTING:
            self._ended_early = (exc,)  # on_open closes the connection it opens
            return
        if ws is None or not ws.open:
            if isinstance(exc, Exception) and not isinstance(exc, OSError | ConnectionClosed):
                logger.error("ASGI application %r raised after its WebSocket closed",
                             self._app, exc_info=exc)
            return
        if exc is None:
            ws.close(1000, "")
        elif isinstance(exc, Exception):
            ws.fail(exc)  # 1011, and the error logged as a handler crash

    async def receive(self) -> Message:
        """The ASGI ``receive``."""
        if not self._connect_given:
            self._connect_given = True
            return {"type": "websocket.connect"}
        if self._state in (_CONNECTING, _ACCEPTING) and self._accepted is not None:
            with contextlib.suppress(ClientDisconnected):
                await asyncio.shield(self._accepted)
        if self.ws is None:  # refused, or the handshake failed
            return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        try:
            message = await self._receive(False)
        except ConnectionClosed as exc:
            return {"type": "websocket.disconnect", "code": exc.code, "reason": exc.reason}
        if isinstance(message, str):
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    async def send_message(self, message: Message) -> None:
        """The ASGI ``send``."""
        kind = message["type"]
        state = self._state
        if state == _CONNECTING:
            if kind == "websocket.accept":
                # Built first: headers corral must write itself are the application's error.
                accept = Accept(subprotocol=message.get("subprotocol"),
                                headers=_header_pairs(message.get("headers")))
                self._state = _ACCEPTING
                self._decide(accept)
                assert self._accepted is not None
                await asyncio.shield(self._accepted)  # sends wait for the 101 to be written
            elif kind == "websocket.close":
                self._state = _DONE
                self._decide(Reject(403, "forbidden\n"))
            elif kind == "websocket.http.response.start":
                self._state = _RESPONDING
                self._status = int(message["status"])
                self._headers = _header_pairs(message.get("headers"))
            else:
                raise RuntimeError(f"ASGI: expected 'websocket.accept', 'websocket.close' or "
                                   f"'websocket.http.response.start', got {kind!r}")
            return
        if state == _RESPONDING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"ASGI: expected 'websocket.http.response.body', got "
                                   f"{kind!r}")
            self._body += message.get("body", b"")
            if not message.get("more_body", False):
                self._state = _DONE
                self._decide(self._denial())
            return
        ws = self.ws
        if state != _OPEN or ws is None or not ws.open:
            raise ClientDisconnected("the WebSocket is closed")
        if kind == "websocket.send":
            text = message.get("text")
            data = text if text is not None else message.get("bytes")
            if data is None:
                raise RuntimeError("ASGI: websocket.send needs 'text' or 'bytes'")
            try:
                await self.send(data)
            except ConnectionClosed:
                raise ClientDisconnected("the WebSocket is closed") from None
        elif kind == "websocket.close":
            ws.close(int(message.get("code") or 1000), message.get("reason") or "")
        else:
            raise RuntimeError(f"ASGI: expected 'websocket.send' or 'websocket.close', got "
                               f"{kind!r}")

    def _denial(self) -> Reject:
        """The denial response, as corral writes it: the application's status, headers
        (its Content-Type included) and body, the framing corral's."""
        headers = [(n, v) for n, v in self._headers
                   if n.lower() not in ("content-length", "transfer-encoding", "connection")]
        return Reject(self._status, bytes(self._body), headers, content_type=None)
