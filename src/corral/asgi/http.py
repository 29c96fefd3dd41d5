"""One connection served to an ASGI application: HTTP/1.1 requests, or a WebSocket.

Requests are served in order (keep-alive, pipelining): the next one's head is not read
while a response is being written, so a client that pipelines holds at most one read in
the server. Each request runs the application once with an ``http`` scope (asgiref
``specs/www.rst``):

- the body streams to ``receive`` as it arrives (``Content-Length`` or chunked), at most
  ``max_body`` bytes (413 beyond, before the response starts); reading pauses while more
  than :data:`BODY_BUFFER` bytes wait for the application (a slow application stops
  reading); ``Expect: 100-continue`` is answered when the application first asks for the
  body; ``http.disconnect`` comes once the client has gone or the response is complete;
- the response is written as it is sent: with the application's ``Content-Length``, or
  one corral adds when the whole body comes in one message, else chunked (HTTP/1.1) or
  delimited by closing (HTTP/1.0); HEAD gets the head only; ``send`` waits while the
  client does not read (a slow client makes the application wait), and raises
  :class:`~corral.asgi.websocket.ClientDisconnected` (an ``OSError``) once it is gone;
- an application that raises or returns before starting its response gets a 500; after,
  the connection is closed (a response cannot be completed). Either is logged once.

A WebSocket handshake goes through :class:`~corral.server.connection.HttpConnection`'s
checks (the handshake, the origin) and then to :class:`~corral.asgi.websocket.AsgiWebSocket`
on corral's own connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from ..exceptions import InvalidRequest
from ..handler import Accept
from ..protocol.handshake import build_http_response, is_websocket_upgrade, reason_phrase
from ..protocol.http11 import (
    HTTPRequest,
    RequestBody,
    RequestEnd,
    RequestHead,
    RequestStreamParser,
)
from ..server.connection import HttpConnection
from .pubsub import EXTENSION, extension_for
from .scope import http_scope, websocket_scope
from .websocket import AsgiWebSocket, ClientDisconnected, Message

if TYPE_CHECKING:
    from ..server.registry import Registry
    from ..server.serve import Server
    from .app import AsgiApp

__all__ = ["BODY_BUFFER", "AsgiHttpProtocol"]

logger = logging.getLogger("corral.asgi")

BODY_BUFFER = 65536  # request body bytes waiting for the application before reading pauses

# The server's figures for an ASGI route (corral.metrics.asgi_metrics): {"worker_stats": f}.
STATS_EXTENSION = "corral.stats"

_NO_BODY_STATUS = frozenset({204, 304})
_FORBIDDEN = frozenset({"connection", "transfer-encoding"})  # corral frames the response


class _Date:
    """The ``Date`` header value, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value


_date = _Date()


class _Cycle:
    """One request and its response."""

    __slots__ = ("bodiless", "body", "chunked", "complete", "continue_owed", "declared",
                 "disconnected", "given_end", "head", "head_written", "headers", "keep_alive",
                 "raw_left", "request", "response_complete", "response_started", "sent",
                 "status", "waiters")

    def __init__(self, request: HTTPRequest, keep_alive: bool) -> None:
        self.request = request
        self.head = request.method == "HEAD"
        self.keep_alive = keep_alive
        self.body = bytearray()  # received, not yet given to the application
        self.complete = False  # the request's body has ended
        self.disconnected = False  # the client went away
        # Tasks waiting in receive() (an application may have more than one: Starlette's
        # is_disconnected() beside a task reading).
        self.waiters: list[asyncio.Future[None]] = []
        expect = request.headers.get("expect")
        # An HTTP/1.0 request's expectation is ignored (RFC 9110 10.1.1).
        self.continue_owed = (expect is not None and expect.lower() == "100-continue"
                              and request.http_version != "1.0")
        self.raw_left = 0  # body bytes still to come after a head llhttp stopped at (Upgrade)
        self.response_started = False
        self.response_complete = False
        self.status = 0
        self.chunked = False
        self.declared: int | None = None  # the application's Content-Length
        self.sent = 0  # body bytes of the response sent
        self.given_end = False  # the application has had the whole request body
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_written = False
        self.bodiless = False  # HEAD, 1xx, 204, 304: no body bytes are written

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class AsgiHttpProtocol(HttpConnection):
    """Serves one connection to an ASGI application (see the module docstring)."""

    __slots__ = ("_app", "_cycle", "_drain", "_events", "_refused", "parser")

    def __init__(self, server: Server, registry: Registry, app: AsgiApp) -> None:
        super().__init__(server, registry)
        opts = server.options
        self._app = app
        self.parser = RequestStreamParser(
            max_request_line=opts.max_request_line,
            max_header_count=opts.max_header_count,
            max_header_bytes=opts.max_header_bytes,
            max_body=opts.max_body,
        )
        self._cycle: _Cycle | None = None  # the request being read or answered
        # Parser events of requests after the current one (pipelined), read but not begun.
        self._events: deque[RequestHead | RequestBody | RequestEnd] = deque()
        self._drain: list[asyncio.Future[None]] = []
        self._refused = False  # an error answer was written: nothing more is served

    # -- reading -----------------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        cycle = self._cycle
        if cycle is not None:
            cycle.disconnected = True
            cycle.wake()
        self._events.clear()
        for waiter in self._drain:
            if not waiter.done():
                waiter.set_result(None)
        self._drain.clear()

    def _received(self, data: bytes) -> None:
        if self.parser.upgraded:
            if self._cycle is not None and self._cycle.raw_left:
                self._raw_body(data)
            return  # what follows an ignored Upgrade's request is not read as HTTP
        if self._refused:
            return
        try:
            events = self.parser.feed(data)
        except InvalidRequest as exc:
            self._invalid(exc)
            return
        self._events.extend(events)
        self._drain_events()

    def _drain_events(self) -> None:
        """Hand what the parser gave to the request it belongs to, and start the next
        request once the current one is answered and read."""
        events = self._events
        while events and not self._refused:
            cycle = self._cycle
            event = events[0]
            if cycle is not None and not cycle.complete:
                # The body of the request being served (a head cannot come before its end).
                events.popleft()
                if type(event) is RequestBody:
                    if not cycle.response_complete:
                        cycle.body += event.data
                elif cycle.raw_left:
                    # llhttp ended an upgrade request at its head: the body is in the bytes
                    # after it, taken by _raw_body.
                    self._raw_body(self.parser.trailing)
                    self.parser.trailing = b""
                    return
                else:
                    cycle.complete = True
                cycle.wake()
                if cycle.complete and cycle.response_complete and not self._end_cycle():
                    return
                continue
            if cycle is None and not self._busy and type(event) is RequestHead:
                events.popleft()
                self._start(event.request)
                continue
            break
        error = self.parser.error
        cycle = self._cycle
        if error is not None and not self._refused and not events and (
                (cycle is None and not self._busy) or (cycle is not None and not cycle.complete)):
            # What broke the rules is the current request's body, or what follows the last
            # request answered.
            self._invalid(error)  # type: ignore[arg-type]
            return
        if cycle is None and not self._busy and not events and self._timer is None:
            self._arm_timer()
        self._update_reading()

    def _raw_body(self, data: bytes) -> None:
        """The body of a request llhttp stopped at (a non-WebSocket Upgrade), from the raw
        bytes, as its Content-Length says."""
        cycle = self._cycle
        assert cycle is not None
        piece = data[:cycle.raw_left]
        cycle.raw_left -= len(piece)
        if not cycle.response_complete:
            cycle.body += piece
        if not cycle.raw_left:
            cycle.complete = True
        cycle.wake()
        if cycle.complete and cycle.response_complete:
            self._end_cycle()
        else:
            self._update_reading()

    def _end_cycle(self) -> bool:
        """The current request is answered and read: whether the connection goes on to
        the next one (else it is closing)."""
        cycle = self._cycle
        assert cycle is not None
        self._cycle = None
        self._busy = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if not cycle.keep_alive or self.server.closing:
            self._close()
            return False
        return True

    def _invalid(self, exc: InvalidRequest) -> None:
        cycle = self._cycle
        if cycle is not None and not cycle.complete:
            # The body of the current request broke a rule (too large, malformed chunks).
            cycle.disconnected = True
            cycle.wake()
            if cycle.response_started:
                self._close()
                self._refused = True
                return
        elif cycle is not None:
            return  # answered once the current response is done (parser.error)
        self._refused = True
        self._events.clear()
        self._refuse(exc.status, exc.reason, exc.headers)

    def _update_reading(self) -> None:
        """Read unless a later request already waits, the client does not read our writes,
        or the application has not taken the body read so far."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.parser.upgraded:
            return
        # Reading on while a response is made notices a client that goes away (an
        # http.disconnect for a long poll); a pipelined request read meanwhile waits in
        # _events and stops reading until its turn.
        cycle = self._cycle
        waiting = bool(self._events) or self._write_paused or (
            cycle is not None and not cycle.response_complete
            and len(cycle.body) > BODY_BUFFER)
        if waiting:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain = self._drain, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._update_reading()

    def _timed_out(self) -> None:
        self._timer = None
        if self._cycle is None and not self._busy:
            self._refuse(408, "request not received in time")

    # -- requests in order ---------------------------------------------------------------------

    def _start(self, request: HTTPRequest) -> None:
        self._cancel_timer()
        self._busy = True
        if request.http_version == "1.1" and "host" not in request.headers:
            self._refused = True
            self._refuse(400, "missing Host header")  # RFC 9112 3.2
            return
        if request.upgrade and is_websocket_upgrade(request):
            self._cycle = None
            task = asyncio.get_running_loop().create_task(self._websocket(request))
            task.add_done_callback(self._websocket_done)
            self._registry.track_task(task)
            return
        keep_alive = request.keep_alive and not self.server.closing
        cycle = _Cycle(request, keep_alive)
        if request.upgrade:
            # Another protocol's upgrade (h2c...), ignored as RFC 9110 7.8 allows: answered as
            # a plain request, then the connection closes (llhttp parses no further). Its body
            # is what follows the head, as long as Content-Length says.
            cycle.keep_alive = False
            if "transfer-encoding" in request.headers:
                self._refused = True
                self._refuse(501, "a chunked body with Upgrade is not supported")
                return
            length = request.headers.get("content-length") or "0"
            cycle.raw_left = int(length) if length.strip().isdigit() else 0
        self._cycle = cycle
        app = self._app
        req = self._request(request, None, {})
        scope = http_scope(req, app.root_path, self._server_address(), app.state,
                           {EXTENSION: extension_for(self.server, None),
                            STATS_EXTENSION: {"worker_stats": self.server.worker_stats}})
        task = asyncio.get_running_loop().create_task(
            self._run(cycle, scope), name="corral-asgi-http")
        self._registry.track_task(task)

    # -- the application -------------------------------------------------------------------------

    async def _run(self, cycle: _Cycle, scope: dict[str, Any]) -> None:
        async def receive() -> Message:
            return await self._receive(cycle)

        async def send(message: Message) -> None:
            await self._send(cycle, message)

        try:
            await self._app.app(scope, receive, send)
        except Exception as exc:
            if cycle.disconnected and isinstance(exc, OSError):
                return  # the client is gone (or was refused): nothing more to say
            if not cycle.head_written:
                logger.error("ASGI application %r raised before its response",
                             self._app.app, exc_info=exc)
                self._answer_error(cycle)
            else:
                if not cycle.response_complete:
                    logger.error("ASGI application %r raised during its response",
                                 self._app.app, exc_info=exc)
                    self._abandon(cycle)
                elif not isinstance(exc, OSError):
                    logger.error("ASGI application %r raised after its response",
                                 self._app.app, exc_info=exc)
            return
        if not cycle.head_written:
            if not cycle.disconnected:
                logger.error("ASGI application %r returned without a response",
                             self._app.app)
            self._answer_error(cycle)
        elif not cycle.response_complete:
            logger.error("ASGI application %r returned before its response was complete",
                         self._app.app)
            self._abandon(cycle)

    def _answer_error(self, cycle: _Cycle) -> None:
        if cycle.disconnected or self.transport is None or self.transport.is_closing():
            return
        cycle.response_started = cycle.response_complete = cycle.head_written = True
        cycle.keep_alive = False
        self._recorder.response(500)
        self._write(build_http_response(500, body="internal server error\n"))
        self._close()

    def _abandon(self, cycle: _Cycle) -> None:
        """A response that cannot be completed: the client sees the connection end (dropped
        when it does not read what was written, as _close does)."""
        cycle.keep_alive = False
        self._close()

    async def _wait(self, cycle: _Cycle) -> None:
        waiter = asyncio.get_running_loop().create_future()
        cycle.waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in cycle.waiters:
                cycle.waiters.remove(waiter)

    async def _receive(self, cycle: _Cycle) -> Message:
        if cycle.continue_owed and not cycle.response_started and not cycle.complete:
            cycle.continue_owed = False  # the client waits for this before its body
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not cycle.given_end:
            if cycle.disconnected:
                return {"type": "http.disconnect"}
            if cycle.body or cycle.complete:
                data = bytes(cycle.body)
                cycle.body.clear()
                cycle.given_end = cycle.complete
                self._update_reading()
                return {"type": "http.request", "body": data, "more_body": not cycle.complete}
            await self._wait(cycle)
        # The body was given whole: what comes next is the end of the connection or of the
        # response.
        while not cycle.disconnected and not cycle.response_complete:
            await self._wait(cycle)
        return {"type": "http.disconnect"}

    async def _send(self, cycle: _Cycle, message: Message) -> None:
        kind = message["type"]
        if cycle.disconnected:
            raise ClientDisconnected("the client has gone away")
        if kind == "http.response.start":
            if cycle.response_started:
                raise RuntimeError("ASGI: http.response.start sent twice")
            status = int(message["status"])
            if not 100 <= status <= 999:
                raise RuntimeError(f"ASGI: invalid status {status}")
            cycle.headers = _checked(message.get("headers") or ())
            cycle.status = status
            cycle.response_started = True
            return
        if kind != "http.response.body":
            raise RuntimeError(f"ASGI: unexpected message {kind!r} in an HTTP response")
        if not cycle.response_started:
            raise RuntimeError("ASGI: http.response.body before http.response.start")
        if cycle.response_complete:
            raise RuntimeError("ASGI: http.response.body after the response was complete")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        out = self._head(cycle, body, more) if not cycle.head_written else b""
        if not cycle.bodiless:
            cycle.sent += len(body)
            if cycle.declared is not None and cycle.sent > cycle.declared:
                self._abandon(cycle)
                raise RuntimeError("ASGI: response body longer than its Content-Length")
            if cycle.chunked:
                if body:
                    out += b"%x\r\n%b\r\n" % (len(body), body)
                if not more:
                    out += b"0\r\n\r\n"
            else:
                out += body
        if out:
            self._write(out)
        if more:
            if self._write_paused and self.transport is not None:
                waiter = asyncio.get_running_loop().create_future()
                self._drain.append(waiter)
                await waiter
                if cycle.disconnected:
                    raise ClientDisconnected("the client has gone away")
            return
        cycle.response_complete = True
        cycle.body.clear()  # what the application did not read is dropped, as the rest will be
        self._recorder.response(cycle.status)
        if (cycle.declared is not None and cycle.sent < cycle.declared
                and not cycle.bodiless):
            self._abandon(cycle)
            raise RuntimeError("ASGI: response body shorter than its Content-Length")
        cycle.wake()
        if cycle.complete or not cycle.keep_alive:
            if self._end_cycle():
                self._drain_events()
        else:
            self._update_reading()  # the rest of an unread body is read and dropped

    def _head(self, cycle: _Cycle, body: bytes, more: bool) -> bytes:
        """The status line and headers: the application's, with the framing corral
        chooses."""
        status = cycle.status
        lines = [b"HTTP/1.1 %d %b\r\n" % (status, reason_phrase(status).encode("ascii"))]
        has_date = False
        for name, value in cycle.headers:
            if name == b"content-length":
                if not value.isdigit() or (cycle.declared is not None
                                           and cycle.declared != int(value)):
                    raise RuntimeError(f"ASGI: invalid Content-Length {value!r}")
                if cycle.declared is not None:
                    continue  # the same value twice: written once
                cycle.declared = int(value)
            elif name == b"connection":
                if b"close" in value.lower():
                    cycle.keep_alive = False
                continue
            elif name == b"transfer-encoding":
                continue  # corral frames the body itself
            elif name == b"date":
                has_date = True
            lines.append(b"%b: %b\r\n" % (name, value))
        cycle.bodiless = cycle.head or status in _NO_BODY_STATUS or status < 200
        if cycle.declared is None and status not in _NO_BODY_STATUS and status >= 200:
            if not more:
                lines.append(b"content-length: %d\r\n" % len(body))
            elif cycle.request.http_version == "1.1" and not cycle.head:
                cycle.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                cycle.keep_alive = False  # HTTP/1.0: the end of the body is the close
        if not has_date:
            lines.append(b"date: %b\r\n" % _date())
        if cycle.continue_owed and not cycle.complete:
            # Answered without asking for the body: the client may never send it, so what
            # it sends next cannot be told from a body (RFC 9110 10.1.1).
            cycle.keep_alive = False
        if not cycle.keep_alive or self.server.closing:
            cycle.keep_alive = False
            lines.append(b"connection: close\r\n")
        elif cycle.request.http_version == "1.0":
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        cycle.head_written = True
        return b"".join(lines)

    # -- the WebSocket upgrade ---------------------------------------------------------------------

    async def _websocket(self, request: HTTPRequest) -> None:
        options = self.server.options
        req = self._upgrade_request(request, {}, options)
        if req is None:
            return
        app = self._app
        extensions: dict[str, Any] = {"websocket.http.response": {}}
        scope = websocket_scope(req, app.root_path, self._server_address(), app.state,
                                extensions)
        bridge = AsgiWebSocket(app.app, scope, self._registry.track_task)
        extensions[EXTENSION] = extension_for(self.server, bridge)
        assert self.transport is not None
        self.transport.pause_reading()  # what follows the head is WebSocket data
        decision = await bridge.decide()
        if isinstance(decision, Accept):
            try:
                opened = self._open_websocket(decision, bridge, req, options,
                                              self.parser.trailing)
            except BaseException:
                bridge.abandon()
                raise
            if not opened:
                bridge.abandon()
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            self._recorder.handshake("abandoned")
            return
        self._recorder.handshake("error" if decision.status == 500 else "rejected")
        self._recorder.response(decision.status)
        self._write(build_http_response(decision.status, body=decision.body,
                                        headers=decision.headers,
                                        content_type=decision.content_type, keep_alive=False))
        self._close()

    def _websocket_done(self, task: asyncio.Task[None]) -> None:
        exc = task.exception() if not task.cancelled() else None
        if exc is not None:
            logger.error("error in an ASGI WebSocket handshake", exc_info=exc)
            self._recorder.handshake("error")
            self._refuse(500, "internal server error")



def _checked(headers: Any) -> list[tuple[bytes, bytes]]:
    """The application's response headers, names lowercased; a name or value that would
    break the response (CR, LF, NUL) is the application's error."""
    checked = []
    for name, value in headers:
        name, value = bytes(name).lower(), bytes(value)
        if not name or any(c in name for c in b"\r\n\0: ") or any(
                c in value for c in b"\r\n\0"):
            raise RuntimeError(f"ASGI: invalid response header {name!r}: {value!r}")
        checked.append((name, value))
    return checked
