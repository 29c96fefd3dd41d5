"""The HTTP phase of a server connection: parse, route, answer or upgrade.

Each TCP connection starts here. Plain HTTP requests are answered (keep-alive and pipelining
served in order); a WebSocket upgrade runs the handler's decision, writes the 101 and hands
the transport to a :class:`~corral.websocket.WebSocket`. Every refusal is an HTTP status with
a short reason; nothing a client sends here can raise out of this protocol.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from ..exceptions import InvalidRequest
from ..handler import Accept, Reject
from ..options import DeflateSettings, Options
from ..protocol.connection import Connection, Side
from ..protocol.extensions.negotiation import server_accept
from ..protocol.handshake import (
    UpgradeInfo,
    build_accept,
    build_http_response,
    check_request,
    is_websocket_upgrade,
    origin_allowed,
)
from ..protocol.http11 import HTTPRequest, RequestParser
from ..request import Request, Response
from ..websocket import WebSocket
from .forwarded import Forwarded, forwarded
from .proxy_protocol import ProxyProtocolError, parse_proxy_header
from .router import Route

if TYPE_CHECKING:
    from .registry import Registry
    from .serve import Server

__all__ = ["HttpProtocol"]

logger = logging.getLogger("corral.server")


class HttpProtocol(asyncio.Protocol):
    """Serves one TCP connection until it upgrades or closes."""

    __slots__ = ("_busy", "_pending", "_proxied", "_proxy_header", "_recorder", "_registry",
                 "_secure", "_timer", "_write_paused", "parser", "server", "transport")

    def __init__(self, server: Server, registry: Registry) -> None:
        self.server = server
        self._registry = registry
        self._recorder = server.recorder
        opts = server.options
        self.parser = RequestParser(
            max_request_line=opts.max_request_line,
            max_header_count=opts.max_header_count,
            max_header_bytes=opts.max_header_bytes,
            max_body=opts.max_body,
        )
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending: deque[HTTPRequest] = deque()
        self._busy = False  # a request is being answered (by a task, when it stays True)
        self._write_paused = False
        self._secure = False  # TLS
        # The PROXY protocol: the bytes of its header received so far (None: not expected,
        # or parsed), and the client it named.
        self._proxy_header: bytes | None = b"" if opts.proxy_protocol else None
        self._proxied: Forwarded | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._secure = transport.get_extra_info("sslcontext") is not None
        self._registry.http.add(self)
        self._recorder.connections_accepted += 1
        if self.server.closing:
            transport.close()
            return
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._registry.http.discard(self)

    def data_received(self, data: bytes) -> None:
        if self._proxy_header is not None:
            rest = self._proxy_received(data)
            if not rest:
                return
            data = rest
        try:
            requests = self.parser.feed(data)
        except InvalidRequest as exc:
            self._refuse(exc.status, exc.reason, exc.headers)
            return
        self._pending.extend(requests)
        if requests and not self._busy:
            self._next()

    def _proxy_received(self, data: bytes) -> bytes:
        """Take the PROXY protocol header off the start of the stream; what follows it."""
        assert self._proxy_header is not None
        received = self._proxy_header + data
        trusted = self.server.trusted_proxies
        try:
            if trusted is not None and self.transport is not None:
                peer = self.transport.get_extra_info("peername")
                if not isinstance(peer, tuple) or peer[0] not in trusted:
                    raise ProxyProtocolError("PROXY protocol header from a peer not in "
                                             "forwarded_allow_ips")
            header = parse_proxy_header(received)
        except ProxyProtocolError as exc:
            self._proxy_header = None
            self._refuse(400, str(exc))
            return b""
        if header is None:
            self._proxy_header = received
            return b""
        self._proxy_header = None
        if header.client is not None:
            self._proxied = Forwarded(header.client, self._secure, None)
        return received[header.size:]

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

    def close_if_idle(self) -> None:
        """The server is stopping: close now unless a request is being answered (that one
        closes after its answer, as the server is closing)."""
        if self.transport is not None and not self._busy:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- timers ----------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        timeout = self.server.options.handshake_timeout
        if timeout is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(timeout, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._busy:
            return
        self._refuse(408, "request not received in time")

    # -- answering -------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _refuse(
        self, status: int, reason: str, headers: list[tuple[str, str]] | tuple[()] = ()
    ) -> None:
        """Answer with an error status and close: the connection state is unknown after it."""
        self._recorder.response(status)
        self._write(build_http_response(status, body=reason + "\n", headers=list(headers)))
        self._close()
        self._pending.clear()

    def _close(self) -> None:
        """Close after the answer is written; a client that never reads it is dropped when
        the handshake timeout runs out again."""
        self._cancel_timer()
        transport = self.transport
        if transport is None:
            return
        transport.close()
        timeout = self.server.options.handshake_timeout or self.server.options.close_timeout
        self._timer = asyncio.get_running_loop().call_later(timeout, transport.abort)

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

    def _request(self, request: HTTPRequest, info: UpgradeInfo | None,
                 params: dict[str, str]) -> Request:
        """The handler's view of a request; behind a trusted proxy, with the client it
        names (``forwarded_allow_ips``)."""
        seen = self._proxied  # the PROXY protocol's word comes first
        trusted = self.server.trusted_proxies
        transport = self.transport
        if seen is None and trusted is not None and transport is not None:
            seen = forwarded(request.headers, transport.get_extra_info("peername"),
                             self._secure, trusted)
        return Request(request, None, info, params, transport=transport, secure=self._secure,
                       forwarded=seen, server=self.server)

    async def _respond_later(self, request: HTTPRequest, result: Any) -> None:
        self._respond(request, await result)

    # -- the WebSocket upgrade ---------------------------------------------------------------------

    def _upgrade(self, request: HTTPRequest, route: Route, params: dict[str, str]) -> Any:
        try:
            info = check_request(request)
        except InvalidRequest as exc:
            self._recorder.handshake("refused")
            self._refuse(exc.status, exc.reason, exc.headers)
            return None
        assert route.websocket is not None
        # Cross-site WebSocket hijacking: refused before the handler runs any of its code.
        route_options = Options.merge(self.server.options, route.options)
        req = self._request(request, info, params)
        if not origin_allowed(info.origin, req.host or info.host, route_options.allowed_origins):
            self._recorder.handshake("refused")
            self._refuse(403, "origin not allowed")
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
        options = Options.merge(route_options, decision.options)
        info = req.upgrade
        assert info is not None
        if decision.subprotocol is not None and decision.subprotocol not in info.subprotocols:
            raise ValueError(f"subprotocol {decision.subprotocol!r} was not offered")
        if self.server.closing:
            self._recorder.handshake("refused")
            self._refuse(503, "server shutting down")
            return
        compression = options.compression
        if decision.compress is True:
            compression = compression or DeflateSettings()
        elif decision.compress is False:
            compression = None
        elif decision.compress is not None:
            compression = decision.compress
        extensions, extension_header = server_accept(info.extensions, compression)
        transport.write(build_accept(info, subprotocol=decision.subprotocol,
                                     extensions=extension_header, headers=decision.headers))
        conn = Connection(
            Side.SERVER,
            max_message_size=options.max_message_size,
            max_frame_size=options.frame_limit,
            receive_fragments=options.receive_fragments,
            extensions=extensions,
        )
        registry = self._registry
        ws = WebSocket(conn, handler, options, request=req, subprotocol=decision.subprotocol,
                       on_finish=registry.websocket_finished, track_task=registry.track_task,
                       pubsub=self.server.topics, counters=self._recorder.wire)
        transport.set_write_buffer_limits(high=options.write_limit)
        self._cancel_timer()
        registry.upgraded(self, ws)
        # An async upgrade decision paused reading (see _next); the WebSocket reads from here.
        transport.resume_reading()
        ws.start(transport, self.parser.trailing)
        self._recorder.handshake("accepted")
