"""Topics on one process: topic name -> the connections subscribed to it.

A server owns one ``Topics`` (``server.topics``, made on first use). A published message is
framed once and the same bytes are written to every plain subscriber; a subscriber with a
compression extension encodes it itself (its compressor's state is its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..accel import build_frame
from ..protocol.frames import Opcode

if TYPE_CHECKING:
    from ..websocket import WebSocket

__all__ = ["Message", "Topics"]

Message = str | bytes | bytearray | memoryview


def encode_message(message: Message) -> tuple[int, bytes]:
    """The opcode and payload of a message: text for ``str``, binary for bytes-like."""
    if isinstance(message, str):
        return Opcode.TEXT, message.encode()
    if isinstance(message, bytes):
        return Opcode.BINARY, message
    if isinstance(message, (bytearray, memoryview)):
        return Opcode.BINARY, bytes(message)
    raise TypeError(f"a message is str or bytes-like, not {type(message).__name__}")


class Topics:
    """Which connections listen to which topic. Connections subscribe through
    ``ws.subscribe(topic)``; they leave every topic when they end."""

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: dict[str, set[WebSocket]] = {}

    def add(self, topic: str, ws: WebSocket) -> None:
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            self._subscribers[topic] = subscribers = set()
        subscribers.add(ws)

    def discard(self, topic: str, ws: WebSocket) -> None:
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            return
        subscribers.discard(ws)
        if not subscribers:
            del self._subscribers[topic]  # a topic nobody listens to costs nothing

    def subscriber_count(self, topic: str) -> int:
        subscribers = self._subscribers.get(topic)
        return len(subscribers) if subscribers else 0

    def names(self) -> frozenset[str]:
        """The topics with at least one subscriber."""
        return frozenset(self._subscribers)

    def publish(self, topic: str, message: Message) -> int:
        """Send ``message`` to every open subscriber of ``topic``; return how many it was
        written to. A subscriber that is closing, or in the middle of sending a fragmented
        message, does not get it."""
        opcode, payload = encode_message(message)  # a bad message raises, even unheard
        subscribers = self._subscribers.get(topic)
        if not subscribers:
            return 0
        # What a compressed subscriber encodes: bytes-like copied once, not once per send.
        whole: str | bytes = message if isinstance(message, str) else payload
        frame: bytes | None = None
        count = 0
        # A copy: a subscriber's write may end a connection, which unsubscribes it.
        for ws in tuple(subscribers):
            conn = ws.conn
            if conn.extensions:
                # Compression state is per connection: this one encodes the message itself.
                if not conn.sending_fragmented and ws.send(whole):
                    count += 1
                continue
            if frame is None:
                frame = build_frame(opcode, payload, True, 0, None)  # unmasked: server side
            if ws.send_frame(frame):
                count += 1
        return count

    def __repr__(self) -> str:
        return f"<Topics {len(self._subscribers)} topics>"
