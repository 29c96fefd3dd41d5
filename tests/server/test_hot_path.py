"""The compiled hot path (corral._hotpath) against its specification, the Python session.

Two connections get the same byte streams, cut into the same reads, and a handler that
answers each message the same way (by its first character: echo with ``ws.send``, return a
command, close, raise, pause, go async, ...). One reads through a bound ``StreamProtocol``,
whose compiled ``buffer_updated`` takes reads of whole plain messages in C; the other is never
bound, so every read goes to the Python session. What they write, what their handlers see
and how they end must be the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corral
import corral.accel
from corral import CloseReason, Handler, Options, Pause, Text, WebSocket
from corral.protocol.connection import Connection, Side
from corral.protocol.frames import Opcode, serialize_close
from corral.session import Session
from corral.transport import StreamProtocol
from helpers import masked

pytestmark = pytest.mark.skipif(
    not corral.accel.COMPILED, reason="pure mode: both sides would be the Python session"
)

LIMIT = 300  # max_message_size: some generated messages are over it


class RecordingTransport:
    """A TCP-like wire that records everything done to it."""

    def __init__(self) -> None:
        self.log: list[Any] = []
        self.written = bytearray()
        self.closing = False
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        assert not self.closing
        self.written += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.log.append("pause_reading")

    def resume_reading(self) -> None:
        self.log.append("resume_reading")

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.log.append("write_eof")

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.log.append("close")
        self.closing = True

    def abort(self) -> None:
        self.log.append("abort")
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class Scripted(Handler):
    """Answers a message by its first character; records what it sees."""

    def __init__(self) -> None:
        self.log: list[Any] = []

    def on_message(self, ws: WebSocket, message: str | bytes) -> Any:
        self.log.append(("message", message))
        first = message[:1]
        key = first if isinstance(first, str) else first.decode("latin-1")
        if key == "s":
            self.log.append(("sent", ws.send(message)))
        elif key == "t":
            return Text(message) if isinstance(message, str) else corral.Binary(message)
        elif key == "m":
            return [Text("one"), corral.Binary(b"two")]
        elif key == "b":
            ws.send(b"B" * 9000)  # over SPLIT_PAYLOAD: header and payload apart
        elif key == "l":
            ws.send("\u00e9" * 4500)  # text over SPLIT_PAYLOAD once encoded
        elif key == "u":
            ws.send("\u00e9t\u00e9 " * 10)
        elif key == "c":
            ws.close(1000, "bye")
        elif key == "x":
            raise ValueError("scripted crash")
        elif key == "p":
            return Pause()
        elif key == "a":
            return self._later(ws, message)
        return None

    async def _later(self, ws: WebSocket, message: str | bytes) -> None:
        await asyncio.sleep(0)
        ws.send(message)

    def on_ping(self, ws: WebSocket, payload: bytes) -> None:
        self.log.append(("ping", payload))

    def on_pong(self, ws: WebSocket, payload: bytes) -> None:
        self.log.append(("pong", payload))

    def on_close(self, ws: WebSocket, reason: CloseReason) -> None:
        self.log.append(("close", reason.kind, reason.code))


_answers = st.sampled_from(["s", "t", "m", "b", "l", "u", "c", "x", "p", "a", "n"])
_text = st.text(max_size=40)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(
        ["text", "text", "text", "binary", "binary", "big", "bad_utf8", "ping", "pong",
         "close", "fragments", "unmasked", "reserved", "rsv", "oversize", "continuation"]))
    answer = draw(_answers)
    if kind == "text":
        return masked(Opcode.TEXT, (answer + draw(_text)).encode())
    if kind == "binary":
        return masked(Opcode.BINARY, answer.encode() + draw(st.binary(max_size=40)))
    if kind == "big":  # two-byte length form, still under the limit
        return masked(Opcode.BINARY, answer.encode() * draw(st.integers(126, LIMIT)))
    if kind == "bad_utf8":
        return masked(Opcode.TEXT, answer.encode() + b"\xff\xfe")
    if kind == "ping":
        return masked(Opcode.PING, draw(st.binary(max_size=10)))
    if kind == "pong":
        return masked(Opcode.PONG, draw(st.binary(max_size=10)))
    if kind == "close":
        return masked(Opcode.CLOSE, serialize_close(1000, "done"))
    if kind == "fragments":
        return (masked(Opcode.TEXT, answer.encode(), fin=False)
                + masked(Opcode.CONTINUATION, draw(_text).encode()))
    if kind == "unmasked":
        return masked(Opcode.BINARY, b"n", mask=False)
    if kind == "reserved":
        return masked(3, b"n")
    if kind == "rsv":
        return masked(Opcode.TEXT, b"n", rsv=0x40)
    if kind == "oversize":
        return masked(Opcode.BINARY, b"n" * (LIMIT + 1))
    return masked(Opcode.CONTINUATION, b"n")


async def run(stream: bytes, cuts: list[int], *, hot: bool) -> tuple[Any, ...]:
    handler = Scripted()
    options = Options(max_message_size=LIMIT, idle_timeout=None)
    conn = Connection(Side.SERVER, max_message_size=LIMIT, max_frame_size=options.frame_limit)
    ws = WebSocket(conn, handler, options)
    transport = RecordingTransport()
    ws.start(transport)  # type: ignore[arg-type]
    protocol: StreamProtocol = transport.protocol
    session: Session = ws._session  # white-box: an unbound protocol never takes the hot path
    if not hot:
        protocol = StreamProtocol(session)
    pos = 0
    for cut in [*cuts, len(stream)]:
        while pos < cut and not transport.closing:
            buffer = protocol.get_buffer(-1)
            n = min(cut - pos, len(buffer))
            buffer[:n] = stream[pos : pos + n]
            protocol.buffer_updated(n)
            pos += n
        for _ in range(3):
            await asyncio.sleep(0)  # async callbacks, drained backlogs, posted events
        if ws.reading_paused:
            ws.resume_reading()
            for _ in range(3):
                await asyncio.sleep(0)
    protocol.connection_lost(None)
    for _ in range(3):
        await asyncio.sleep(0)
    return bytes(transport.written), transport.log, handler.log, ws.dropped_messages


@settings(max_examples=300, deadline=None)
@given(data=st.data())
async def test_compiled_reads_do_what_the_session_does(data: st.DataObject) -> None:
    stream = b"".join(data.draw(st.lists(frames(), min_size=1, max_size=12)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    hot = await run(stream, cuts, hot=True)
    reference = await run(stream, cuts, hot=False)
    # Masks differ between runs only in what the client sent; the server writes unmasked.
    assert hot == reference


async def test_whole_plain_messages_skip_the_python_session(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """The point of the hot path: a read of whole plain messages reaches the handler without
    the session's data_received, and a small echo is queued and written without its send."""
    calls: list[str] = []
    for name in ("data_received", "send", "_flush"):
        real = getattr(Session, name)

        def spy(self: Session, *args: Any, _real: Any = real, _name: str = name) -> Any:
            calls.append(_name)
            return _real(self, *args)

        monkeypatch.setattr(Session, name, spy)
    await run(b"", [], hot=True)  # opening and ending a connection: the session's own calls
    baseline = list(calls)
    calls.clear()
    stream = b"".join(masked(Opcode.TEXT, f"s{i}".encode()) for i in range(5))
    written, _, log, _ = await run(stream, [], hot=True)
    assert [entry for entry in log if entry[0] == "message"] == [
        ("message", f"s{i}") for i in range(5)]
    assert written == b"".join(bytes([0x81, 2]) + f"s{i}".encode() for i in range(5))
    assert calls == baseline  # none more for the five messages


async def test_other_reads_go_to_the_session() -> None:
    """A ping among the messages: the whole read is the session's (its pong goes out before
    the answers to the messages around it, as the core queues it while parsing)."""
    stream = (masked(Opcode.TEXT, b"s1") + masked(Opcode.PING, b"p")
              + masked(Opcode.TEXT, b"s2"))
    hot = await run(stream, [], hot=True)
    assert hot == await run(stream, [], hot=False)
    assert hot[0] == bytes([0x8A, 1]) + b"p" + bytes([0x81, 2]) + b"s1" + bytes([0x81, 2]) + b"s2"
