"""The Cowboy-style handler behaviour and the commands its callbacks return.

A handler decides on the upgrade (``upgrade``), then gets one callback per event: the
connection opening, each message, each piece of information posted to it from elsewhere in
the program (Cowboy's ``websocket_info``), and the close. Callbacks never do I/O themselves:
they return commands (or call the non-blocking methods of ``ws``, which do the same), so a
handler can be tested by calling it with a fake ``ws`` and looking at what it returns.

A callback may also be ``async def``: the connection's next events wait until it returns
(reading pauses once ``max_queue`` of them wait), so callbacks of one connection never
overlap and messages keep their order.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .options import DeflateSettings, Options
from .protocol.handshake import check_accept_headers
from .request import Request, Response

if TYPE_CHECKING:
    from .websocket import WebSocket

__all__ = [
    "Accept",
    "Binary",
    "Close",
    "CloseKind",
    "CloseReason",
    "Command",
    "Deflate",
    "Fragment",
    "Handler",
    "Pause",
    "Ping",
    "Pong",
    "Reject",
    "Resume",
    "SetOptions",
    "Text",
]


# -- the upgrade decision ----------------------------------------------------------------------


@dataclass(slots=True)
class Accept:
    """Accept the upgrade: the subprotocol chosen from ``request.subprotocols`` (or None),
    extra response headers, and option overrides for this connection.

    ``compress`` (Cowboy's ``compress``): True accepts a compression offer with the route's
    or server's ``compression`` settings (or the defaults), a :class:`DeflateSettings` uses
    those, False refuses compression, None leaves it to the options."""

    subprotocol: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    options: Options | dict[str, Any] | None = None
    compress: bool | DeflateSettings | None = None

    def __post_init__(self) -> None:
        # Refused here, in the handler's own upgrade(), rather than when the 101 is built.
        check_accept_headers(self.headers)


class Reject(Response):
    """Refuse the upgrade with any HTTP status, headers and body."""

    __slots__ = ()

    def __init__(
        self,
        status: int = 403,
        body: bytes | str = b"",
        headers: list[tuple[str, str]] | None = None,
        content_type: str | None = "text/plain; charset=utf-8",
    ) -> None:
        super().__init__(status, body, headers or [], content_type)


# -- commands ----------------------------------------------------------------------------------


class Text(NamedTuple):
    """Send a text message."""

    data: str


class Binary(NamedTuple):
    """Send a binary message."""

    data: bytes


class Fragment(NamedTuple):
    """Send one fragment of a message (text for str, binary for bytes); ``last`` ends it."""

    data: str | bytes
    last: bool = False


class Ping(NamedTuple):
    """Send a ping (up to 125 bytes of payload); the peer answers with a pong."""

    payload: bytes = b""


class Pong(NamedTuple):
    """Send an unsolicited pong (a one-way heartbeat; pings are answered by corral)."""

    payload: bytes = b""


class Close(NamedTuple):
    """Start the closing handshake. Nothing is sent after it."""

    code: int = 1000
    reason: str = ""


class Pause(NamedTuple):
    """Stop reading from the socket (Cowboy's ``{active, false}``): backpressure on the peer."""


class Resume(NamedTuple):
    """Read from the socket again."""


class Deflate(NamedTuple):
    """Compress the following messages or not (Cowboy's ``{deflate, Bool}``), when a
    compression extension was negotiated."""

    enabled: bool


class SetOptions(NamedTuple):
    """Change run-time options of this connection (see ``options.RUNTIME_MUTABLE``)."""

    changes: dict[str, Any]


Command = Text | Binary | Fragment | Ping | Pong | Close | Pause | Resume | SetOptions | Deflate
# A callback may also return the message itself: text for str, binary for bytes-like.
Message = str | bytes | bytearray | memoryview
Commands = None | Command | Message | Iterable[Command | Message]
MaybeAsync = Commands | Awaitable[Commands]


# -- closing -----------------------------------------------------------------------------------


class CloseKind(enum.Enum):
    """Why a connection ended (the ``kind`` of :class:`CloseReason`)."""

    NORMAL = "normal"  # this side closed (handler or application) and the peer answered
    REMOTE = "remote"  # the peer sent a close frame first
    TIMEOUT = "timeout"  # idle timeout, keepalive timeout, or close handshake timeout
    PROTOCOL_ERROR = "protocol_error"  # the peer broke the protocol (1002, 1007, 1009)
    CRASH = "crash"  # a handler callback raised; 1011 was sent
    SHUTDOWN = "shutdown"  # the server is shutting down; 1001 was sent
    LOST = "lost"  # the TCP connection ended without a close handshake (1006)

    def __str__(self) -> str:
        """The value (``remote``), as logs and f-strings should show it."""
        return self.value


@dataclass(frozen=True, slots=True)
class CloseReason:
    """What ``on_close`` receives: the kind, the close code and reason as the application
    sees them (RFC 6455 7.1.5-7.1.6), and for crashes and protocol errors the exception."""

    kind: CloseKind
    code: int
    reason: str = ""
    error: BaseException | None = None


# -- the behaviour -----------------------------------------------------------------------------


class Handler:
    """Subclass and override what you need. One instance serves one connection, so ``self``
    is the connection's state (Cowboy's State)."""

    def upgrade(self, request: Request) -> Accept | Reject | Awaitable[Accept | Reject]:
        """Decide on the upgrade. The default accepts with no subprotocol."""
        return Accept()

    def on_open(self, ws: WebSocket) -> MaybeAsync:
        """The connection is open (Cowboy's ``websocket_init``)."""
        return None

    def on_message(self, ws: WebSocket, message: str | bytes) -> MaybeAsync:
        """A whole message arrived: ``str`` for text, ``bytes`` for binary."""
        return None

    def on_fragment(self, ws: WebSocket, data: str | bytes, last: bool) -> MaybeAsync:
        """A piece of a message, when the ``receive_fragments`` option is on."""
        return None

    def on_ping(self, ws: WebSocket, payload: bytes) -> MaybeAsync:
        """A ping arrived; the pong was already sent."""
        return None

    def on_pong(self, ws: WebSocket, payload: bytes) -> MaybeAsync:
        """A pong arrived (the answer to a ping; for a keepalive ping ``ws.latency`` is
        already updated)."""
        return None

    def on_info(self, ws: WebSocket, info: Any) -> MaybeAsync:
        """Something was posted to this connection with ``ws.post(info)`` from elsewhere in
        the program (Cowboy's ``websocket_info``)."""
        return None

    def on_drop(self, ws: WebSocket, message: str | bytes) -> MaybeAsync:
        """A message to this peer was dropped: its send buffer was over ``max_backpressure``
        (policy ``drop``). Counted in ``ws.dropped_messages``; the default does nothing
        more. Resend what matters from ``on_drain``."""
        return None

    def on_drain(self, ws: WebSocket) -> MaybeAsync:
        """The send buffer, after going over ``write_limit``, drained to its low-water mark
        (a quarter of ``write_limit``): a good moment to resend what ``on_drop`` saw."""
        return None

    def on_close(self, ws: WebSocket, reason: CloseReason) -> None:
        """The connection ended; called exactly once. Nothing can be sent any more."""
        return None
