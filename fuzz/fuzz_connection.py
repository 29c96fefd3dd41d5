"""Fuzz target ``connection``: how a byte stream is cut into reads never changes what the
connection makes of it (RFC 6455 sections 5.4, 7.1.7).

One stream goes to two :class:`Connection` objects of the same side, limits and extension:
one gets it in a single ``receive_data`` call, the other in fuzzer-chosen reads, taking the
rest of a large payload through ``payload_buffer`` / ``payload_received`` when it is offered
(as the asyncio protocol does) and the others through a reused buffer scribbled over after
each call (nothing may keep a reference to it). Both must give the same messages, pings,
pongs, close and failure, queue the same bytes to send and end in the same state; no call
may raise, and no message may exceed ``max_message_size``.

Two allowances, because fail-fast checks depend on where a read ends: streamed fragments
count only once their message is complete, and a failure's reason text is not compared
(only its close code). With compression, 1007 and 1009 are also taken as one: a message
that is both too big and not UTF-8 may be caught by either check first.

The stream is the input itself, or (one configuration bit) a list of frames the input
describes, built and compressed here, so large payloads and valid DEFLATE data are easy
for the fuzzer to reach.
"""

from __future__ import annotations

import functools
import zlib

import atheris
from _harness import INSTRUMENTED, Input, check, cut, main, use_sanitized_speedups

use_sanitized_speedups()
with atheris.instrument_imports(include=INSTRUMENTED):
    from corral import _pure
    from corral.protocol.connection import Connection, Side
    from corral.protocol.events import CloseReceived, Event, Failed, Fragment, Message
    from corral.protocol.extensions import PerMessageDeflate, WebkitDeflateFrame
    from corral.protocol.extensions.base import Extension

_MESSAGE_LIMITS = (None, 0, 1, 15, 16, 125, 126, 1000, 65535, 70_000, 1 << 20)
_FRAME_LIMITS = (None, 0, 1, 125, 126, 65535, 65536)
_OPCODES = (0, 1, 2, 8, 9, 10, 3, 0)
_MASK = b"\x5a\xc3\x0f\x96"
_MAX_STREAM = 256 * 1024
_LENIENT = {1007: "1007/1009", 1009: "1007/1009"}


def _extensions(kind: int, side: Side, bits: int) -> list[Extension]:
    server = side is Side.SERVER
    if kind == 1:
        return [PerMessageDeflate(server, remote_max_window_bits=bits)]
    if kind == 2:
        return [WebkitDeflateFrame(server, remote_max_window_bits=bits)]
    if kind == 3:
        return [PerMessageDeflate(server, remote_max_window_bits=bits,
                                  remote_no_context_takeover=True)]
    return []


@functools.lru_cache(maxsize=512)
def _deflate(payload: bytes, bits: int, end: bool) -> bytes:
    """``payload`` as raw DEFLATE blocks up to a sync flush, the final 00 00 ff ff removed
    at the end of a message (RFC 7692 7.2.1). A fresh compressor per frame: blocks of
    several compressors one after the other are still one valid stream, and a frame's
    bytes can then be cached (large payloads come back often)."""
    deflater = zlib.compressobj(1, zlib.DEFLATED, -max(bits, 9))
    out = deflater.compress(payload) + deflater.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if end and out.endswith(b"\x00\x00\xff\xff") else out


def _built(inp: Input, masked: bool, bits: int, per_frame: bool) -> bytes:
    """Frames described by the rest of the input, each in 2 bytes and its payload:
    bits of the first byte: 0-2 opcode (reserved ones too), 3 FIN, 4 RSV1, 5 deflate the
    payload, 6 mask it the wrong way, 7 a large payload (the second byte's 512 multiples,
    of one repeated character) instead of the second byte's low 7 bits' worth of input."""
    out: list[bytes] = []
    size = 0
    while inp.pos < len(inp.data) and size < _MAX_STREAM:
        head, arg = inp.byte(), inp.byte()
        opcode = _OPCODES[head & 7]
        fin = bool(head & 8)
        if head & 128:
            payload = (b"\xc3\xa9" if arg & 1 else b"a") * (arg * 256 + 1)
        else:
            payload = inp.take(arg & 0x7F)
        if head & 32:
            payload = _deflate(payload, bits, fin or per_frame)
        mask = _MASK if masked != bool(head & 64) else None
        frame = _pure.build_frame(opcode, payload, fin, head & 16 and 0x40, mask)
        out.append(frame)
        size += len(frame)
    return b"".join(out)


def _normalized(events: list[Event], lenient: bool) -> list[object]:
    """Events with streamed fragments joined into their message (an unfinished one
    dropped) and a failure reduced to its close code."""
    out: list[object] = []
    pieces: list[str | bytes] = []
    for event in events:
        if isinstance(event, Fragment):
            pieces.append(event.data)
            if event.last:
                text = [piece for piece in pieces if isinstance(piece, str)]
                joined = "".join(text) if text else b"".join(p for p in pieces
                                                            if isinstance(p, bytes))
                out.append(("message", joined))
                pieces = []
        elif isinstance(event, Message):
            out.append(("message", event.data))
        elif isinstance(event, Failed):
            out.append(("failed", _LENIENT.get(event.code, event.code) if lenient else event.code))
        else:
            out.append(event)
    return out


def _sent(data: bytes, side: Side, lenient: bool) -> list[object]:
    """The frames queued to send; a close code as ``_normalized`` reduces it."""
    frames, pos, code, _, _ = _pure.parse_frames(data, 0, side is Side.CLIENT, -1)
    check(pos == len(data) and code == 0, "the connection queued a bad frame", data)
    out: list[object] = []
    for opcode, fin, rsv, payload in frames:
        if opcode == 8 and lenient and len(payload) >= 2:
            close = int.from_bytes(payload[:2], "big")
            out.append(("close", _LENIENT.get(close, close), payload[2:]))
        else:
            out.append((opcode, fin, rsv, payload))
    return out


def _check_events(events: list[Event], limit: int | None) -> None:
    size = 0
    for i, event in enumerate(events):
        if isinstance(event, (CloseReceived, Failed)):
            check(i == len(events) - 1, "events after a close or a failure", events[i:])
        if isinstance(event, (Message, Fragment)) and limit is not None:
            data = event.data
            size += len(data.encode() if isinstance(data, str) else data)
            check(size <= limit, "a message over max_message_size", size, limit)
            if isinstance(event, Message) or event.last:
                size = 0


def _feed(conn: Connection, read: bytes) -> list[Event]:
    """``receive_data`` from a reused read buffer, as the asyncio protocol calls it: the
    buffer is overwritten afterwards, and must not be held (a resize would fail)."""
    scratch = bytearray(read)
    events = conn.receive_data(memoryview(scratch))
    scratch[:] = b"\xee" * len(scratch)
    try:
        scratch.append(0)
    except BufferError:
        check(False, "a reference to the read buffer was kept", read)
    return events


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    config = inp.byte()  # 0 side, 1 fragments, 2-3 extension, 4 built, 5 direct reads
    max_message = inp.pick(_MESSAGE_LIMITS)
    max_frame = inp.pick(_FRAME_LIMITS)
    bits = 8 + inp.byte() % 8
    sizes = inp.cuts()
    side = Side.CLIENT if inp.flag(config, 0) else Side.SERVER
    ext_kind = config >> 2 & 3
    if inp.flag(config, 4):
        stream = _built(inp, side is Side.SERVER, bits, ext_kind == 2)
    else:
        stream = inp.rest()
    lenient = ext_kind != 0

    def connection() -> Connection:
        return Connection(
            side,
            max_message_size=max_message,
            max_frame_size=max_frame,
            receive_fragments=inp.flag(config, 1),
            extensions=_extensions(ext_kind, side, bits),
            mask_key=lambda: _MASK,
        )

    whole = connection()
    whole_events = _feed(whole, stream)
    whole_out = b"".join(whole.data_to_send())

    chunked = connection()
    chunked_events: list[Event] = []
    chunked_out: list[bytes] = []
    for read in cut(stream, sizes):
        while True:
            view = chunked.payload_buffer() if inp.flag(config, 5) else None
            if view is None:
                chunked_events += _feed(chunked, read)
                break
            if not read:
                view.release()
                break
            n = min(len(view), len(read))
            view[:n] = read[:n]
            view.release()
            chunked_events += chunked.payload_received(n)
            read = read[n:]
        chunked_out += chunked.data_to_send()

    _check_events(whole_events, max_message)
    _check_events(chunked_events, max_message)
    check(_normalized(chunked_events, lenient) == _normalized(whole_events, lenient),
          "events differ", whole_events, chunked_events)
    check(_sent(b"".join(chunked_out), side, lenient) == _sent(whole_out, side, lenient),
          "bytes to send differ", whole_out, chunked_out)
    check(whole.state == chunked.state, "states differ", whole.state, chunked.state)
    check((whole.failure is None) == (chunked.failure is None), "one failed", whole.failure,
          chunked.failure)


if __name__ == "__main__":
    main(test_one_input)
