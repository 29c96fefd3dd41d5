"""The errors corral raises, as one small tree.

Every error a caller may want to catch derives from :class:`CorralError`:

    CorralError
    ├── HandshakeError             the opening handshake failed (carries an HTTP status)
    │   ├── InvalidRequest         server side: the upgrade request is malformed or refused
    │   │   └── UnsupportedVersion     Sec-WebSocket-Version is not 13, 8 or 7 (426)
    │   └── InvalidResponse        client side: the server's answer is not a valid 101
    │       └── InvalidStatus          the server answered with another status
    ├── NegotiationError           an extension or subprotocol answer is not acceptable (1010)
    ├── ProtocolError              the peer broke RFC 6455 after the handshake (close 1002)
    │   ├── InvalidPayload         text or a close reason not UTF-8, corrupt deflate data (1007)
    │   └── PayloadTooBig          a frame, message or fragment count over its limit (1009)
    ├── ConnectionClosed           the connection is closed; carries the close code and reason
    │   ├── ConnectionClosedOK         closed with 1000 or 1001
    │   └── ConnectionClosedError      closed with any other code, or without a close frame
    ├── InvalidURI                 a ws:// or wss:// URL could not be used
    ├── PublishError               a broker could not take a published message (Redis down)
    └── StartupError               a startup hook failed: the server did not start

Protocol errors carry the close code to send, so the connection maps an error to the wire
in one place (`ProtocolError.close_code`); the text of an internal error never reaches the
wire (1011 goes out with an empty reason).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "CorralError",
    "HandshakeError",
    "InvalidPayload",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidStatus",
    "InvalidURI",
    "NegotiationError",
    "PayloadTooBig",
    "ProtocolError",
    "PublishError",
    "StartupError",
    "UnsupportedVersion",
]


class CorralError(Exception):
    """Base class of every error raised by corral."""


class HandshakeError(CorralError):
    """The opening handshake failed.

    ``status`` is the HTTP status a server answers with; ``headers`` are extra response
    headers (for example ``Sec-WebSocket-Version`` on a 426).
    """

    def __init__(
        self,
        reason: str,
        status: int = 400,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.headers = list(headers)


class InvalidRequest(HandshakeError):
    """The upgrade request is malformed or cannot be served (RFC 6455 section 4.2.1)."""


class UnsupportedVersion(InvalidRequest):
    """The client asked for a protocol version corral does not speak (section 4.4)."""

    def __init__(self, version: str) -> None:
        super().__init__(
            f"unsupported Sec-WebSocket-Version: {version!r}",
            status=426,
            headers=[("Sec-WebSocket-Version", "13, 8, 7")],
        )
        self.version = version


class InvalidResponse(HandshakeError):
    """The server's handshake response is not valid (section 4.1, client requirements)."""


class InvalidStatus(InvalidResponse):
    """The server answered the upgrade with a status other than 101."""

    def __init__(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        super().__init__(f"server rejected WebSocket connection: HTTP {status}", status, headers)
        self.body = body


class NegotiationError(CorralError):
    """An extension or subprotocol answer cannot be accepted (close code 1010)."""


class ProtocolError(CorralError):
    """The peer violated RFC 6455; the connection is failed with ``close_code``."""

    close_code: int = 1002


class InvalidPayload(ProtocolError):
    """Text that is not valid UTF-8 (section 8.1), or compressed data that does not inflate:
    close code 1007."""

    close_code = 1007


class PayloadTooBig(ProtocolError):
    """A frame or message is larger than allowed: close code 1009."""

    close_code = 1009

    def __init__(self, size: int, max_size: int, unit: str = "bytes") -> None:
        super().__init__(f"message too big: {size} {unit}, limit is {max_size}")
        self.size = size
        self.max_size = max_size


class ConnectionClosed(CorralError):
    """Raised when sending or receiving on a closed connection.

    ``code`` and ``reason`` are those of the close frame received from the peer (1005 when it
    carried no code, 1006 when the TCP connection ended without a close frame).
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally (1000 or 1001)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error code or without a close handshake."""


class InvalidURI(CorralError):
    """A URL given to :func:`corral.connect` is not a usable ws:// or wss:// URL."""


class PublishError(CorralError):
    """A published message did not reach the broker (for example Redis is unreachable), so no
    subscriber in any process got it. ``topic`` says which publish failed."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"publish to {topic!r} failed: {reason}")
        self.topic = topic
        self.reason = reason


class StartupError(CorralError):
    """A startup hook raised: the server did not start (nothing was listening yet). The hook's
    exception is the ``__cause__``; ``hook`` names it."""

    def __init__(self, hook: str, error: BaseException) -> None:
        super().__init__(f"startup hook {hook} failed: {type(error).__name__}: {error}")
        self.hook = hook


def closed_error(code: int, reason: str = "") -> ConnectionClosed:
    """The ConnectionClosed subclass that fits a close code."""
    if code in (1000, 1001):
        return ConnectionClosedOK(code, reason)
    return ConnectionClosedError(code, reason)
