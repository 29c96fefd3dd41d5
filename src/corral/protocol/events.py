"""What the protocol core reports to the I/O layer: small immutable records.

NamedTuples rather than frozen dataclasses because one is built per message on the hot path
and tuple construction is several times cheaper.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["CloseReceived", "Event", "Failed", "Fragment", "Message", "Ping", "Pong"]


class Message(NamedTuple):
    """A complete message: ``str`` for text, ``bytes`` for binary."""

    data: str | bytes


class Fragment(NamedTuple):
    """A piece of a message, when the connection streams fragments (``receive_fragments``).

    Text pieces are already decoded (a multi-byte character is never split); ``last`` marks
    the end of the message.
    """

    data: str | bytes
    last: bool


class Ping(NamedTuple):
    """A ping from the peer; the core has already queued the pong."""

    payload: bytes


class Pong(NamedTuple):
    """A pong from the peer (solicited or not)."""

    payload: bytes


class CloseReceived(NamedTuple):
    """The peer's close frame: code (1005 when absent) and reason."""

    code: int
    reason: str


class Failed(NamedTuple):
    """The core failed the connection (section 7.1.7): a close frame with ``code`` is queued
    and the transport should be closed once it is written."""

    code: int
    reason: str


Event = Message | Fragment | Ping | Pong | CloseReceived | Failed
