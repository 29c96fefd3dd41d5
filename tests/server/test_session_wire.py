"""A session over a wire that is not a socket: the transport interface (corral.transport)
carries a WebSocket the way an HTTP/2 stream will (RFC 8441): writes limited by a
flow-control window, no half-close, END_STREAM as close and RST_STREAM as abort.

``MemoryWire`` is that test double. The same handlers, limits, backpressure and close
sequence must work over it as over TCP, with nothing in the session knowing the difference.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import corral
from corral import CloseKind, CloseReason, Handler, Options, Text, WebSocket
from corral.protocol.connection import Connection, Side
from corral.protocol.frames import Opcode, apply_mask, parse_close, serialize_close
from corral.protocol.reader import FrameReader
from corral.transport import Receiver, Wire


class MemoryWire:
    """A socketless, flow-controlled wire: ``window`` bytes may leave before the peer grants
    more (``grant``); the rest waits here, and past ``high`` bytes waiting the receiver is
    told to pause writing, until they are down to ``low``."""

    def __init__(self, window: int = 1 << 30, high: int = 64 * 1024) -> None:
        self.window = window
        self.high = high
        self.low = high // 4
        self.sent = bytearray()  # what the peer has been given
        self.waiting = bytearray()  # written, held by the flow-control window
        self.reading = True
        self.paused_writing = False
        self.ended: str | None = None  # "close" (END_STREAM) or "abort" (RST_STREAM)
        self.receiver: Receiver | None = None

    # -- corral.transport.Wire -------------------------------------------------------------

    def write(self, data: bytes) -> None:
        assert self.ended is None, "write after the stream ended"
        self.waiting += data
        self._move()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def get_write_buffer_size(self) -> int:
        return len(self.waiting)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return False  # a stream has no half-close of its own: END_STREAM ends it

    def write_eof(self) -> None:
        raise NotImplementedError

    def is_closing(self) -> bool:
        return self.ended is not None

    def close(self) -> None:
        if self.ended is None:
            self.ended = "close"
            asyncio.get_running_loop().call_soon(self._lost)

    def abort(self) -> None:
        if self.ended is None:
            self.ended = "abort"
            self.waiting.clear()
            asyncio.get_running_loop().call_soon(self._lost)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("stream", 1) if name == "peername" else default

    # -- the peer's side ---------------------------------------------------------------------

    def grant(self, n: int) -> None:
        """The peer opens the window by ``n`` bytes (a WINDOW_UPDATE)."""
        self.window += n
        self._move()

    def _move(self) -> None:
        n = min(self.window, len(self.waiting))
        if n:
            self.sent += self.waiting[:n]
            del self.waiting[:n]
            self.window -= n
        assert self.receiver is not None
        if not self.paused_writing and len(self.waiting) > self.high:
            self.paused_writing = True
            self.receiver.pause_writing()
        elif self.paused_writing and len(self.waiting) <= self.low:
            self.paused_writing = False
            self.receiver.resume_writing()

    def _lost(self) -> None:
        assert self.receiver is not None
        self.receiver.connection_lost(None)

    def frames(self) -> list[tuple[int, bytes]]:
        """The frames the peer has been given so far, taken off ``sent``."""
        reader = FrameReader(require_mask=False)
        chunks = reader.feed(bytes(self.sent))
        self.sent.clear()
        return [(c.opcode, c.data) for c in chunks]


def from_client(opcode: int, payload: bytes = b"") -> bytes:
    """A masked frame, as a client sends it."""
    mask = os.urandom(4)
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + apply_mask(payload, mask)


class Recorder(Handler):
    def __init__(self) -> None:
        self.reason: CloseReason | None = None
        self.closed = asyncio.Event()

    def on_message(self, ws: WebSocket, message: str | bytes) -> Any:
        return Text(message) if isinstance(message, str) else corral.Binary(message)

    def on_close(self, ws: WebSocket, reason: CloseReason) -> None:
        self.reason = reason
        self.closed.set()


def open_on(wire: MemoryWire, handler: Handler, **options: Any) -> WebSocket:
    opts = Options(**options)
    conn = Connection(Side.SERVER, max_message_size=opts.max_message_size)
    ws = WebSocket(conn, handler, opts)
    wire.receiver = ws.attach(wire)
    return ws


def test_memory_wire_is_a_wire() -> None:
    wire: Wire = MemoryWire()  # checked by mypy: the interface an HTTP/2 stream implements
    assert not wire.can_write_eof()


async def test_messages_and_close_over_a_socketless_wire() -> None:
    wire, handler = MemoryWire(), Recorder()
    ws = open_on(wire, handler)
    assert ws.remote_address == ("stream", 1)
    assert wire.receiver is not None
    wire.receiver.data_received(from_client(Opcode.TEXT, b"hello") +
                                from_client(Opcode.BINARY, b"\x00\x01"))
    assert wire.frames() == [(Opcode.TEXT, b"hello"), (Opcode.BINARY, b"\x00\x01")]
    # The close handshake, then the stream ends (the server ends it first, 7.1.1).
    wire.receiver.data_received(from_client(Opcode.CLOSE, serialize_close(1000, "bye")))
    assert wire.frames() == [(Opcode.CLOSE, serialize_close(1000, ""))]  # the code echoed
    assert wire.ended == "close"
    await asyncio.wait_for(handler.closed.wait(), 2)
    assert handler.reason is not None
    assert (handler.reason.kind, handler.reason.code) == (CloseKind.REMOTE, 1000)


async def test_a_closed_window_pauses_writing_then_reading() -> None:
    """Writes the peer's window does not admit wait in the wire; past its high-water mark the
    session stops reading the peer, and a grant that empties it resumes both."""
    wire, handler = MemoryWire(window=0, high=1000), Recorder()
    ws = open_on(wire, handler)
    assert wire.receiver is not None
    for _ in range(20):
        wire.receiver.data_received(from_client(Opcode.BINARY, b"x" * 100))
    assert wire.paused_writing and ws.writing_paused
    assert not wire.reading  # it does not read what would only make it write more
    drained = asyncio.ensure_future(ws.drain())
    await asyncio.sleep(0)
    assert not drained.done()
    wire.grant(1 << 20)
    await asyncio.wait_for(drained, 2)
    assert wire.reading and not ws.writing_paused
    assert wire.frames() == [(Opcode.BINARY, b"x" * 100)] * 20
    ws.close()
    assert wire.frames() == [(Opcode.CLOSE, serialize_close(1000, ""))]


async def test_backpressure_limit_counts_what_the_window_holds() -> None:
    """max_backpressure is measured by the wire's own count of bytes not yet sent."""
    wire, handler = MemoryWire(window=0, high=100), Recorder()
    ws = open_on(wire, handler, max_backpressure=1000)
    sent = [ws.send(b"y" * 300) for _ in range(6)]
    assert sent == [True, True, True, True, False, False]  # 1,208 bytes held: over 1,000
    assert ws.dropped_messages == 2
    wire.grant(1 << 20)
    assert [payload for _, payload in wire.frames()] == [b"y" * 300] * 4


async def test_a_protocol_error_ends_a_stream_without_half_close() -> None:
    """Where the wire has no write_eof (HTTP/2), a failed connection sends its close frame
    and ends the stream."""
    wire, handler = MemoryWire(), Recorder()
    open_on(wire, handler)
    assert wire.receiver is not None
    wire.receiver.data_received(b"\x81\x05hello")  # unmasked from a client: 1002
    ((opcode, payload),) = wire.frames()
    assert opcode == Opcode.CLOSE and parse_close(payload)[0] == 1002
    assert wire.ended == "close"
    await asyncio.wait_for(handler.closed.wait(), 2)
    assert handler.reason is not None
    assert (handler.reason.kind, handler.reason.code) == (CloseKind.PROTOCOL_ERROR, 1002)


async def test_idle_deadline_applies_over_the_wire() -> None:
    wire, handler = MemoryWire(), Recorder()
    open_on(wire, handler, idle_timeout=0.05, close_timeout=0.05)
    await asyncio.wait_for(handler.closed.wait(), 2)
    assert wire.frames()[:1] == [(Opcode.CLOSE, serialize_close(1001, "idle timeout"))]
    assert wire.ended == "abort"  # the peer never answered: the close timeout ends it
    assert handler.reason is not None and handler.reason.kind is CloseKind.TIMEOUT
