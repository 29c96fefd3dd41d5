"""The request a handler sees in its upgrade decision, and the plain HTTP response type."""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .protocol.handshake import ExtensionOffer, UpgradeInfo
from .protocol.http11 import Headers, HTTPRequest

if TYPE_CHECKING:
    from .server.forwarded import Forwarded
    from .server.serve import Server

__all__ = ["Request", "Response"]

_NO_PARAMS: dict[str, str] = {}  # shared by requests without path parameters: never mutated


class Request:
    """An HTTP request as the application sees it: path, query, headers, cookies, peer.

    For WebSocket upgrades ``subprotocols``, ``extensions`` and ``origin`` carry what the
    client offered; ``path_params`` holds the values a router pattern captured; ``server``
    is the :class:`~corral.Server` that received it (to publish from an HTTP route, or to
    read its ``stats()``), None for a request made by hand.
    """

    __slots__ = ("_cookies", "_forwarded", "_peer", "_query", "_secure", "_transport", "http",
                 "path_params", "server", "upgrade")

    def __init__(
        self,
        http: HTTPRequest,
        peer: Any = None,
        upgrade: UpgradeInfo | None = None,
        path_params: dict[str, str] | None = None,
        *,
        transport: Any = None,
        secure: bool = False,
        forwarded: Forwarded | None = None,
        server: Server | None = None,
    ) -> None:
        self.http = http
        self.server = server
        self._secure = secure  # the connection is TLS
        self._forwarded = forwarded  # who a trusted proxy says the client is
        # The peer's address, or the transport to ask for it when first wanted: a request
        # is kept for the life of its connection, and most never look.
        self._peer = peer
        self._transport = transport if peer is None else None
        self.upgrade = upgrade
        self.path_params = path_params if path_params else _NO_PARAMS
        self._query: dict[str, list[str]] | None = None
        self._cookies: dict[str, str] | None = None

    @property
    def peer(self) -> Any:
        """The client's address (``(host, port)`` over TCP)."""
        if self._peer is None and self._transport is not None:
            self._peer = self._transport.get_extra_info("peername")
            self._transport = None
        return self._peer

    @property
    def remote_address(self) -> Any:
        """The client's address: ``peer``, or, behind a trusted reverse proxy
        (``forwarded_allow_ips``), the client it names (``(ip, port)``, port 0 when not
        told)."""
        return self._forwarded.address if self._forwarded is not None else self.peer

    @property
    def scheme(self) -> str:
        """``ws`` or ``wss`` for an upgrade, ``http`` or ``https`` otherwise: whether the
        client's connection is TLS (as a trusted proxy says, behind one)."""
        secure = self._forwarded.secure if self._forwarded is not None else self._secure
        if self.upgrade is not None:
            return "wss" if secure else "ws"
        return "https" if secure else "http"

    @property
    def method(self) -> str:
        """``GET``, ``POST``... as the client sent it (upper case)."""
        return self.http.method

    @property
    def body(self) -> bytes:
        """The request body, whole (``Content-Length`` or chunked), at most the
        ``max_body`` option's size (a larger one is answered with 413 before any handler
        runs); empty for a WebSocket upgrade."""
        return self.http.body

    @property
    def path(self) -> str:
        """The path of the request target, percent-decoded, without the query."""
        return self.http.path

    @property
    def query_string(self) -> str:
        """What follows ``?`` in the request target, as sent."""
        return self.http.query_string

    @property
    def query(self) -> dict[str, list[str]]:
        """Query parameters, each name with the list of its values."""
        if self._query is None:
            self._query = parse_qs(self.http.query_string, keep_blank_values=True)
        return self._query

    def query_param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def headers(self) -> Headers:
        """The request headers: ``get(name)`` (any case), ``get_all(name)``."""
        return self.http.headers

    @property
    def cookies(self) -> dict[str, str]:
        """The ``Cookie`` headers' cookies, name to value (malformed ones skipped)."""
        if self._cookies is None:
            jar: SimpleCookie = SimpleCookie()
            for value in self.http.headers.get_all("cookie"):
                try:
                    jar.load(value)
                except CookieError:
                    continue
            self._cookies = {name: morsel.value for name, morsel in jar.items()}
        return self._cookies

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The subprotocols a WebSocket client offered, in its order of preference."""
        return self.upgrade.subprotocols if self.upgrade else ()

    @property
    def extensions(self) -> tuple[ExtensionOffer, ...]:
        """The extensions a WebSocket client offered (``Sec-WebSocket-Extensions``)."""
        return self.upgrade.extensions if self.upgrade else ()

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header (browsers send it), or None."""
        return self.upgrade.origin if self.upgrade else self.http.headers.get("origin")

    @property
    def host(self) -> str | None:
        """The host the client asked for: the ``Host`` header, or the one a trusted proxy
        forwarded."""
        if self._forwarded is not None and self._forwarded.host is not None:
            return self._forwarded.host
        return self.http.headers.get("host")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.http.target} from {self.peer}>"


@dataclass(slots=True)
class Response:
    """A plain HTTP response (also used to refuse an upgrade)."""

    status: int = 200
    body: bytes | str = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = "text/plain; charset=utf-8"

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        """A ``text/plain`` UTF-8 response."""
        return cls(status, text)

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> Response:
        """``obj`` as ``application/json`` (``json.dumps``)."""
        return cls(status, _json.dumps(obj), content_type="application/json")

    @classmethod
    def html(cls, html: str, status: int = 200) -> Response:
        """A ``text/html`` UTF-8 response."""
        return cls(status, html, content_type="text/html; charset=utf-8")
