"""The asyncio client: ``corral.connect(url)`` on the same core and connection layer as the
server. It validates the server's 101 (accept key, subprotocol) and masks every frame with a
fresh random key (RFC 6455 5.3)."""

from __future__ import annotations

import asyncio
import os
import ssl as ssl_module
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from .async_api import AsyncWebSocket
from .exceptions import InvalidResponse, InvalidURI, NegotiationError
from .handler import Handler
from .options import DeflateSettings, Options
from .protocol.connection import Connection, Side
from .protocol.extensions.negotiation import client_confirm, client_offers
from .protocol.frames import CloseCode, Opcode, serialize_close, serialize_frame
from .protocol.handshake import (
    ExtensionOffer,
    build_request,
    check_response,
    format_extension_header,
    generate_key,
    parse_token_list,
)
from .protocol.http11 import ResponseParser
from .reconnect import MessageId, OnReconnect, Reconnect, ReconnectingWebSocket
from .websocket import WebSocket

__all__ = ["CLIENT_OPTIONS", "connect", "parse_url"]

# A client's defaults: no idle timeout (the application decides when to leave) and an offer
# of permessage-deflate that any valid answer fits: a bare client_max_window_bits (the 12 here
# bounds only our own compressor), nothing asked of the server's window (asking would make
# every answer without server_max_window_bits invalid, RFC 7692 7.1.2.1). compression=None
# offers nothing.
CLIENT_OPTIONS = Options(
    idle_timeout=None,
    compression=DeflateSettings(server_max_window_bits=15, client_max_window_bits=12),
)


def parse_url(url: str) -> tuple[bool, str, int, str, str]:
    """Split a ws:// or wss:// URL into (secure, host, port, resource, Host header)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"{url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURI(f"{url!r} is not a ws:// or wss:// URL")
    if parts.fragment or "#" in url:  # an empty fragment ("ws://h/#") is one too
        raise InvalidURI("a WebSocket URL cannot have a fragment (RFC 6455 3)")
    if not parts.hostname:
        raise InvalidURI(f"{url!r} has no host")
    secure = parts.scheme == "wss"
    host = parts.hostname
    default = 443 if secure else 80
    port = port or default
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = f"[{host}]" if ":" in host else host
    if port != default:
        host_header += f":{port}"
    return secure, host, port, resource, host_header


def _not_a_token(name: str) -> bool:
    try:
        return parse_token_list([name]) != [name]
    except ValueError:
        return True


class _ClientHandshake(asyncio.Protocol):
    """Sends the upgrade request, checks the answer, then hands over to a WebSocket."""

    def __init__(
        self,
        request: bytes,
        key: str,
        subprotocols: Sequence[str],
        offers: Sequence[ExtensionOffer],
        handler: Handler,
        options: Options,
        opened: asyncio.Future[WebSocket],
    ) -> None:
        self.request = request
        self.key = key
        self.subprotocols = subprotocols
        self.offers = offers
        self.handler = handler
        self.options = options
        self.opened = opened
        self.parser = ResponseParser(max_header_count=options.max_header_count,
                                     max_header_bytes=options.max_header_bytes)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        try:
            response = self.parser.feed(data)
            if response is None:
                return
            accepted = check_response(response, self.key, subprotocols=self.subprotocols)
        except Exception as exc:
            self._fail(exc)
            return
        options = self.options
        try:
            extensions = client_confirm(accepted.extensions, self.offers, options.compression)
        except NegotiationError as exc:
            # A 101 came, so the WebSocket connection exists: fail it with a close frame,
            # 1010 (RFC 6455 7.4.1: the server did not negotiate extensions acceptably).
            self._fail(exc, close_code=CloseCode.MANDATORY_EXTENSION)
            return
        conn = Connection(Side.CLIENT, max_message_size=options.max_message_size,
                          max_frame_size=options.frame_limit,
                          receive_fragments=options.receive_fragments, extensions=extensions)
        ws = WebSocket(conn, self.handler, options, subprotocol=accepted.subprotocol)
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=options.write_limit)
        ws.start(self.transport, self.parser.trailing)
        if not self.opened.done():
            self.opened.set_result(ws)

    def eof_received(self) -> bool:
        try:
            response = self.parser.feed_eof()
            if response is not None:
                check_response(response, self.key, subprotocols=self.subprotocols)
        except Exception as exc:
            self._fail(exc)
            return False
        self._fail(InvalidResponse("connection closed during the handshake", status=0))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(
                InvalidResponse("connection lost during the handshake", status=0)
            )

    def _fail(self, exc: BaseException, close_code: int | None = None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            if close_code is not None:
                payload = serialize_close(close_code, "")
                self.transport.write(serialize_frame(Opcode.CLOSE, payload, mask=os.urandom(4)))
            self.transport.close()


class connect:
    """Open a WebSocket connection.

    By default the client offers permessage-deflate (``compression=DeflateSettings()``
    from ``CLIENT_OPTIONS``); ``compression=None`` offers nothing. An answer that does not
    fit the offer fails the connection with close 1010 and raises NegotiationError.

    Without ``handler``: ``ws = await connect(url)`` (or ``async with connect(url) as ws``)
    gives an :class:`AsyncWebSocket` (``recv``, ``send``, ``async for``). With a
    :class:`Handler` instance its callbacks run as on a server, and the result is the
    :class:`~corral.websocket.WebSocket` handle.

    ``reconnect=True`` (or a :class:`Reconnect` policy) gives a
    :class:`ReconnectingWebSocket` that dials again, with backoff, when the connection drops or
    the server goes away; ``message_id``, ``resume_header`` and ``on_reconnect`` let the server
    replay what was missed (see docs/client.md). It needs the ``async for`` style: a
    ``Handler`` instance holds one connection's state, so ``handler=`` with it is a TypeError.
    """

    def __init__(
        self,
        url: str,
        *,
        subprotocols: Sequence[str] = (),
        headers: Sequence[tuple[str, str]] = (),
        origin: str | None = None,
        handler: Handler | None = None,
        options: Options | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        open_timeout: float | None = 10.0,
        reconnect: bool | Reconnect = False,
        message_id: MessageId | None = None,
        resume_header: str | None = None,
        on_reconnect: OnReconnect | None = None,
        **option_changes: Any,
    ) -> None:
        self.reconnect: Reconnect | None = (
            reconnect if isinstance(reconnect, Reconnect) else Reconnect() if reconnect else None
        )
        if self.reconnect is not None and handler is not None:
            raise TypeError("reconnect works with the async-for style only, not with handler=")
        if self.reconnect is None and (message_id or resume_header or on_reconnect):
            raise TypeError("message_id, resume_header and on_reconnect need reconnect=...")
        if resume_header is not None and message_id is None:
            raise TypeError("resume_header needs message_id: it carries the last id")
        if resume_header is not None and _not_a_token(resume_header):
            raise ValueError(f"resume_header is not a header name: {resume_header!r}")
        self.message_id = message_id
        self.resume_header = resume_header
        self.on_reconnect = on_reconnect
        self.url = url
        self.subprotocols = tuple(subprotocols)
        self.headers = list(headers)
        self.origin = origin
        self.handler = handler
        opts = options or CLIENT_OPTIONS
        self.options = opts.replace(**option_changes) if option_changes else opts
        self.ssl = ssl
        self.open_timeout = open_timeout
        self._result: AsyncWebSocket | WebSocket | ReconnectingWebSocket | None = None

    async def _open(self) -> AsyncWebSocket | WebSocket | ReconnectingWebSocket:
        if self.reconnect is not None:
            secure, _, _, resource, host_header = parse_url(self.url)
            path = resource.partition("?")[0]  # logged: a query may hold a token
            client = ReconnectingWebSocket(
                self._dial, self.reconnect, target=f"{'wss' if secure else 'ws'}://"
                f"{host_header}{path}", max_queue=self.options.max_queue,
                message_id=self.message_id, on_reconnect=self.on_reconnect,
                resume_header=self.resume_header)
            self._result = await client.start()
            return client
        handler: Handler = self.handler or AsyncWebSocket(self.options.max_queue)
        ws = await self._dial(handler)
        result: AsyncWebSocket | WebSocket = ws if self.handler is not None else handler  # type: ignore[assignment]
        self._result = result
        return result

    async def _dial(
        self, handler: Handler, extra_headers: Sequence[tuple[str, str]] = ()
    ) -> WebSocket:
        """One connection attempt: TCP (and TLS), the upgrade, then ``handler`` runs."""
        secure, host, port, resource, host_header = parse_url(self.url)
        context: ssl_module.SSLContext | None = None
        if secure:
            context = (self.ssl if isinstance(self.ssl, ssl_module.SSLContext)
                       else ssl_module.create_default_context())
        elif self.ssl:
            raise InvalidURI("ssl given for a ws:// URL; use wss://")
        key = generate_key()
        offers = client_offers(self.options.compression)
        request = build_request(host_header, resource, key, subprotocols=self.subprotocols,
                                extensions=format_extension_header(offers) if offers else None,
                                origin=self.origin, headers=[*self.headers, *extra_headers])
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[WebSocket] = loop.create_future()
        transport, _ = await asyncio.wait_for(
            loop.create_connection(
                lambda: _ClientHandshake(request, key, self.subprotocols, offers, handler,
                                         self.options, opened),
                host, port, ssl=context, server_hostname=host if context else None,
            ),
            self.open_timeout,
        )
        try:
            ws = await asyncio.wait_for(opened, self.open_timeout)
        except BaseException:
            transport.abort()
            raise
        return ws

    def __await__(self) -> Generator[Any, None, Any]:
        return self._open().__await__()

    async def __aenter__(self) -> Any:
        return await self._open()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        result = self._result
        if isinstance(result, AsyncWebSocket | ReconnectingWebSocket):
            await result.close()
        elif isinstance(result, WebSocket):
            result.close()
            await result.wait_closed()
