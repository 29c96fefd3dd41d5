"""The HTTP phase of a connection to a :class:`~corral.Router`: parse, route, answer or
upgrade.

Plain HTTP requests are answered by the routes' handlers (keep-alive and pipelining served
in order); a WebSocket upgrade runs the handler's decision, and
:class:`~corral.server.connection.HttpConnection` (what this shares with the ASGI protocol)
writes the 101 and hands the transport to a :class:`~corral.websocket.WebSocket`. Every
refusal is an HTTP status with a short reason; nothing a client sends here can raise out of
this protocol.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from ..exceptions import InvalidRequest
from ..handler import Accept, Reject
from ..options import Options
from ..protocol.handshake import build_http_response, is_websocket_upgrade
from ..protocol.http11 import HTTPRequest, RequestParser
from ..request import Request, Response
from .connection import HttpConnection
from .router import Route

if TYPE_CHECKING:
    from .registry import Registry
    from .serve import Server

__all__ = ["HttpProtocol"]

logger = logging.getLogger("corral.server")


class HttpProtocol(HttpConnection):
    """Serves one TCP connection to a :class:`~corral.Router` until it upgrades or closes."""

    __slots__ = ("_pending", "parser")

    def __init__(self, server: Server, registry: Registry) -> None:
        super().__init__(server, registry)
        opts = server.options
        self.parser = RequestParser(
            max_request_line=opts.max_request_line,
            max_header_count=opts.max_header_count,
            max_header_bytes=opts.max_header_bytes,
            max_body=opts.max_body,
        )
        self._pending: deque[HTTPRequest] = deque()

    # -- reading ---------------------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        try:
            requests = self.parser.feed(data)
        except InvalidRequest as exc:
            self._refuse(exc.status, exc.reason, exc.headers)
            return
        self._pending.extend(requests)
        if requests and not self._busy:
            self._next()

    def pause_writing(self) -> None:
        # A client that pipelines requests without reading the answers: stop taking more.
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
        if not self._busy:
            self._next()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.parser.upgraded:
            return
        if self._write_paused or self._busy:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _refuse(
        self, status: int, reason: str, headers: list[tuple[str, str]] | tuple[()] = ()
    ) -> None:
        super()._refuse(status, reason, headers)
        self._pending.clear()

    def _respond(self, request: HTTPRequest, response: Response) -> None:
        # After an upgrade request the parser has stopped (what follows may be frames): an
        # answer other than 101 must end the connection, or it would hang unparsed.
        keep_alive = request.keep_alive and not request.upgrade and not self.server.closing
        self._recorder.response(response.status)
        data = build_http_response(response.status, body=response.body,
                                   headers=response.headers,
                                   content_type=response.content_type, keep_alive=keep_alive)
        if request.method == "HEAD" and response.body:
            # HEAD announces the length of the body it does not send.
            body = response.body
            data = data[: len(data) - len(body.encode() if isinstance(body, str) else body)]
        self._write(data)
        if not keep_alive:
            self._close()

    # -- requests in order -------------------------------------------------------------------------

    def _next(self) -> None:
        while self._pending and not self._busy and not self._write_paused:
            if self.transport is None or self.transport.is_closing():
                self._pending.clear()
                return
            request = self._pending.popleft()
            self._cancel_timer()
            self._busy = True
            try:
                outcome = self._handle(request)
            except Exception as exc:
                self._internal_error(exc)
                return
            if outcome is not None:
                self.transport.pause_reading()
                task = asyncio.get_running_loop().create_task(outcome)
                task.add_done_callback(self._task_done)
                return
            self._done_one()
        error = self.parser.error
        if error is not None and not self._pending and not self._busy:
            # Garbage after good pipelined requests: answered once those are.
            self._refuse(error.status, error.reason, error.headers)

    def _done_one(self) -> None:
        self._busy = False
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self.parser.upgraded:
            self._arm_timer()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        exc = task.exception() if not task.cancelled() else None
        if exc is not None:
            self._internal_error(exc)
            return
        transport = self.transport
        if transport is not None and transport.get_protocol() is not self:
            return  # the upgrade completed: a WebSocket owns the transport now
        self._done_one()
        # An upgrade request still pending (pipelined behind this one) keeps reading paused:
        # what follows it is WebSocket data, read once the upgrade is done.
        self._update_reading()
        self._next()

    def _internal_error(self, exc: BaseException) -> None:
        logger.error("error while handling an HTTP request", exc_info=exc)
        self._busy = False
        self._refuse(500, "internal server error")

    def _handle(self, request: HTTPRequest) -> Any:
        """Answer one request now, or return a coroutine that will."""
        match = self.server.router.match(request.path)
        if match is None:
            self._respond(request, Response(404, "not found\n"))
            return None
        route, params = match
        if route.websocket is not None and (route.http is None or is_websocket_upgrade(request)):
            return self._upgrade(request, route, params)
        if route.http is None:  # pragma: no cover - a route always has one of the two
            self._respond(request, Response(404, "not found\n"))
            return None
        if not route.allows(request.method):
            self._respond(request, Response(405, "method not allowed\n",
                                            [("Allow", route.allow_header)]))
            return None
        req = self._request(request, None, params)
        result = route.http(req)
        if inspect.isawaitable(result):
            return self._respond_later(request, result)
        self._respond(request, result)
        return None

    async def _respond_later(self, request: HTTPRequest, result: Any) -> None:
        self._respond(request, await result)

    # -- the WebSocket upgrade ---------------------------------------------------------------------

    def _upgrade(self, request: HTTPRequest, route: Route, params: dict[str, str]) -> Any:
        assert route.websocket is not None
        route_options = Options.merge(self.server.options, route.options)
        req = self._upgrade_request(request, params, route_options)
        if req is None:
            return None
        try:
            handler = route.websocket()
            decision = handler.upgrade(req)
            if inspect.isawaitable(decision):
                return self._upgrade_later(decision, handler, req, route_options)
            self._finish_upgrade(decision, handler, req, route_options)
        except Exception:
            self._recorder.handshake("error")  # answered with a 500 by _next
            raise
        return None

    async def _upgrade_later(
        self, decision: Any, handler: Any, req: Request, route_options: Options
    ) -> None:
        try:
            self._finish_upgrade(await decision, handler, req, route_options)
        except Exception:
            self._recorder.handshake("error")
            raise

    def _finish_upgrade(
        self, decision: Any, handler: Any, req: Request, route_options: Options
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self._recorder.handshake("abandoned")
            return
        if isinstance(decision, Reject):
            self._recorder.handshake("rejected")
            self._respond(req.http, decision)
            return
        if not isinstance(decision, Accept):
            raise TypeError(f"upgrade() must return Accept or Reject, not {decision!r}")
        self._open_websocket(decision, handler, req, route_options, self.parser.trailing)
