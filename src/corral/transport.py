"""The transport interface between a WebSocket session and what carries its bytes.

A session writes to a :class:`Wire` and is fed through the :class:`Receiver` methods. Over
TCP, TLS or a Unix socket the wire is asyncio's own transport, and :class:`StreamProtocol` is
the ``asyncio.BufferedProtocol`` that feeds the session; an HTTP/2 stream (RFC 8441) or an
ASGI connection is another pair of the same two interfaces, with no socket of its own. The
session never asks which one it has.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from .accel import StreamCore

__all__ = ["Receiver", "StreamProtocol", "Wire", "shared_read_buffer"]


class Wire(Protocol):
    """What a session writes to (asyncio's transports are one).

    ``write`` never blocks: a wire that cannot send yet (a full socket buffer, an HTTP/2
    stream out of flow-control window) keeps the bytes, counts them in
    ``get_write_buffer_size`` and calls the receiver's ``pause_writing`` past its high-water
    mark, ``resume_writing`` below the low one. ``pause_reading`` stops feeding the session
    (for HTTP/2: stop opening the stream's receive window). ``write_eof`` half-closes where
    that exists (``can_write_eof``); ``close`` ends the stream after what was written, and
    ``abort`` ends it at once (for HTTP/2: END_STREAM and RST_STREAM)."""

    def write(self, data: bytes) -> None: ...

    def writelines(self, list_of_data: Iterable[bytes]) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class Receiver(Protocol):
    """What a wire calls on the session it carries (asyncio's protocol methods, by name)."""

    def data_received(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the peer; nothing keeps a reference to ``data`` after the call."""

    def read_target(self) -> memoryview | None:
        """Where the next bytes may be read straight to (the rest of a large payload), or
        None for ``data_received``. A wire that does not read into buffers ignores it."""

    def payload_received(self, nbytes: int) -> None:
        """``nbytes`` were read into the start of the view ``read_target`` gave."""

    def eof_received(self) -> bool:
        """The peer will send nothing more; True keeps the wire open for our last writes."""

    def connection_lost(self, exc: Exception | None) -> None:
        """The wire is gone."""

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


# What the transport reads into, unless a large payload is due: one buffer per thread, so per
# event loop. Every read is parsed (and an incomplete frame's few bytes copied out) before the
# loop reads again, so all the loop's connections can share it. 64 KiB: libuv's read size.
_READ_BUFFER_SIZE = 64 * 1024
_thread_state = threading.local()


def shared_read_buffer() -> memoryview:
    """This thread's read buffer, shared by every connection of its event loop."""
    view: memoryview | None = getattr(_thread_state, "read_buffer", None)
    if view is None:
        view = _thread_state.read_buffer = memoryview(bytearray(_READ_BUFFER_SIZE))
    return view


class StreamProtocol(StreamCore, asyncio.BufferedProtocol):
    """Feeds a :class:`Receiver` from a TCP, TLS or Unix-socket transport.

    Reads go into the thread's shared read buffer, parsed in place, so an idle connection
    holds no buffer of its own; or, for the rest of a large payload, straight into the
    message's own buffer (no copy). ``get_buffer`` and ``buffer_updated`` are
    :class:`~corral.accel.StreamCore`'s: once ``bind(session)`` is called, the compiled one
    takes reads of whole plain messages to the handler in C (docs/architecture.md)."""

    __slots__ = ()

    def __init__(self, receiver: Receiver) -> None:
        super().__init__(receiver, shared_read_buffer())

    def data_received(self, data: bytes) -> None:
        """Bytes from a transport that does not read into our buffers. Also needed by
        uvloop: ``set_protocol`` keeps the previous protocol's ``data_received`` when the new
        one has none, and with it the whole HTTP protocol of every connection (2.4 KiB)."""
        self._receiver.data_received(data)

    def eof_received(self) -> bool | None:
        return self._receiver.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._receiver.connection_lost(exc)

    def pause_writing(self) -> None:
        self._receiver.pause_writing()

    def resume_writing(self) -> None:
        self._receiver.resume_writing()
