"""What every server connection does in its HTTP phase, whatever answers its requests.

:class:`HttpConnection` is the base of the two HTTP protocols: corral's own
(:class:`~corral.server.http.HttpProtocol`, a :class:`~corral.Router`'s routes) and the ASGI
one (:class:`~corral.asgi.http.AsgiHttpProtocol`). It owns what they share: the registry
entry, the PROXY protocol header, the timers, refusing with a status, the client as a trusted
proxy names it, and the WebSocket upgrade itself (the handshake checks, the origin check,
compression, the 101 and the hand-over to a :class:`~corral.WebSocket`), so an ASGI
WebSocket gets exactly the checks and engine a corral handler does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..exceptions import InvalidRequest
from ..handler import Accept, Handler
from ..options import DeflateSettings, Options
from ..protocol.connection import Connection, Side
from ..protocol.extensions.negotiation import server_accept
from ..protocol.handshake import (
    UpgradeInfo,
    build_accept,
    build_http_response,
    check_request,
    origin_allowed,
)
from ..protocol.http11 import HTTPRequest
from ..request import Request
from ..websocket import WebSocket
from .forwarded import Forwarded, forwarded
from .proxy_protocol import ProxyProtocolError, parse_proxy_header

if TYPE_CHECKING:
    from .registry import Registry
    from .serve import Server

__all__ = ["HttpConnection"]

logger = logging.getLogger("corral.server")


class HttpConnection(asyncio.Protocol):
    """The shared part of a connection in its HTTP phase (see the module docstring).
    Subclasses handle the bytes after the PROXY header (``_received``) and say whether a
    request is being answered (``_busy``)."""

    __slots__ = ("_busy", "_proxied", "_proxy_header", "_recorder", "_registry", "_secure",
                 "_timer", "_write_paused", "server", "transport")

    def __init__(self, server: Server, registry: Registry) -> None:
        self.server = server
        self._registry = registry
        self._recorder = server.recorder
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False  # a request is being answered
        self._write_paused = False
        self._secure = False  # TLS
        # The PROXY protocol: the bytes of its header received so far (None: not expected,
        # or parsed), and the client it named.
        self._proxy_header: bytes | None = b"" if server.options.proxy_protocol else None
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
            data = self._proxy_received(data)
            if not data:
                return
        self._received(data)

    def _received(self, data: bytes) -> None:
        raise NotImplementedError

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

    def _request(self, request: HTTPRequest, info: UpgradeInfo | None,
                 params: dict[str, str]) -> Request:
        """The application's view of a request; behind a trusted proxy, with the client it
        names (``forwarded_allow_ips``)."""
        seen = self._proxied  # the PROXY protocol's word comes first
        trusted = self.server.trusted_proxies
        transport = self.transport
        if seen is None and trusted is not None and transport is not None:
            seen = forwarded(request.headers, transport.get_extra_info("peername"),
                             self._secure, trusted)
        return Request(request, None, info, params, transport=transport, secure=self._secure,
                       forwarded=seen, server=self.server)

    # -- the WebSocket upgrade ---------------------------------------------------------------------

    def _upgrade_request(self, request: HTTPRequest, params: dict[str, str],
                         options: Options) -> Request | None:
        """The request of a valid handshake whose origin ``options`` allow; otherwise the
        client has been refused (and None is returned)."""
        try:
            info = check_request(request)
        except InvalidRequest as exc:
            self._recorder.handshake("refused")
            self._refuse(exc.status, exc.reason, exc.headers)
            return None
        req = self._request(request, info, params)
        # Cross-site WebSocket hijacking: refused before the application runs any code.
        if not origin_allowed(info.origin, req.host or info.host, options.allowed_origins):
            self._recorder.handshake("refused")
            self._refuse(403, "origin not allowed")
            return None
        return req

    def _open_websocket(self, decision: Accept, handler: Handler, req: Request,
                        route_options: Options, trailing: bytes) -> bool:
        """Write the 101 for ``decision`` and hand the transport to a WebSocket run by
        ``handler``; False (and nothing written) when the connection is gone or the server
        is stopping (refused with 503)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self._recorder.handshake("abandoned")
            return False
        options = Options.merge(route_options, decision.options)
        info = req.upgrade
        assert info is not None
        if decision.subprotocol is not None and decision.subprotocol not in info.subprotocols:
            raise ValueError(f"subprotocol {decision.subprotocol!r} was not offered")
        if self.server.closing:
            self._recorder.handshake("refused")
            self._refuse(503, "server shutting down")
            return False
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
        # An async upgrade decision paused reading; the WebSocket reads from here.
        transport.resume_reading()
        ws.start(transport, trailing)
        self._recorder.handshake("accepted")
        return True

    def _server_address(self) -> Any:
        transport = self.transport
        return transport.get_extra_info("sockname") if transport is not None else None
