"""Pure twins of corral._hotpath: the base types of ``StreamProtocol`` and ``WebSocket``.

They only delegate to the session (:mod:`corral.session`), which is the specification of
what the compiled hot path does; ``_hotpath.c`` takes some reads and sends in C and must
give the same result. :mod:`corral.accel` picks one of the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session
    from .transport import Receiver

__all__ = ["Counters", "HandleCore", "StreamCore", "configure"]


def configure(open_state: Any, closed_state: Any, crash: Any, message: Any, server: Any,
              split_payload: int, /) -> None:
    """The session's constants, which the compiled hot path compares against (unused
    here)."""


class Counters:
    """What a server's connections carried: messages, bytes and drops, added to by every
    session of the server (``corral.server.stats``)."""

    __slots__ = ("backpressure_closes", "bytes_received", "bytes_sent", "dropped_messages",
                 "messages_received", "messages_sent")

    def __init__(self) -> None:
        self.messages_received = 0  # data messages (a fragmented one once, when whole)
        self.messages_sent = 0  # data messages queued (a fragmented one once, at its end)
        self.bytes_received = 0  # read from the wire after the handshake (compressed frames)
        self.bytes_sent = 0  # handed to the wire after the handshake
        self.dropped_messages = 0  # not sent because of max_backpressure
        self.backpressure_closes = 0  # connections closed (1013) by backpressure_policy close


class StreamCore:
    """Feeds a receiver from a BufferedProtocol transport: reads go into ``buffer`` (shared
    by the thread's connections) or, for the rest of a large payload, straight into the
    receiver's own buffer (``read_target``)."""

    __slots__ = ("_buffer", "_direct", "_receiver")

    def __init__(self, receiver: Receiver, buffer: memoryview) -> None:
        self._receiver = receiver
        self._buffer = buffer
        self._direct = False  # the last get_buffer gave the receiver's own buffer

    def bind(self, session: Session, /) -> None:
        """Where the compiled path starts taking reads in C; every read stays with the
        session here."""

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._receiver.read_target()
        if view is None:
            self._direct = False
            return self._buffer
        self._direct = True
        return view

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct:
            self._receiver.payload_received(nbytes)
        else:
            self._receiver.data_received(self._buffer[:nbytes])


class HandleCore:
    """The base of :class:`corral.WebSocket`: holds its session."""

    __slots__ = ("_session",)

    _session: Session

    @property
    def writing_paused(self) -> bool:
        """The write buffer is over ``write_limit``: ``drain()`` would wait."""
        return self._session.writing_paused

    @property
    def reading_paused(self) -> bool:
        """The handler paused reading (``Pause`` / ``pause_reading``)."""
        return self._session.reading_paused

    def answers_pending(self) -> None:
        """The application got messages it answers later (the ``async for`` style): a close
        owed to the peer waits for ``answers_done`` (ANSWER_GRACE at most)."""
        self._session.answers_pending()

    def answers_done(self) -> None:
        """The application has answered every message it was given."""
        self._session.answers_done()

    def send(self, message: str | bytes, compress: bool = True) -> bool:
        """Send a message (text for ``str``). Returns False, sending nothing, once closing,
        or when the message is dropped by ``max_backpressure`` (``on_drop`` then gets it).
        ``compress=False`` skips compression for this message."""
        return self._session.send(message, compress)
