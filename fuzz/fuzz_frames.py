"""Fuzz target ``frames``: the frame codec, compiled and pure side by side (RFC 6455 5.2, 5.3).

Checks, for every input (a byte stream and a little configuration):

- ``parse_frames`` of ``corral._speedups`` and of ``corral._pure`` return the same frames,
  position, close code, reason and reported header (or raise the same error), for both
  ``require_mask`` settings, with no limit and with a fuzzer-chosen frame size limit, from
  the start of the buffer and from inside it, on bytes, bytearray and memoryview buffers;
- :class:`FrameReader`, fed the same stream in fuzzer-chosen reads (some payload bytes
  unmasked in place, as ``Connection.payload_received`` does), yields exactly the frames
  ``parse_frames`` finds and fails with the same close code where it stops;
- ``build_frame``, ``frame_header``, ``apply_mask`` and ``apply_mask_in_place`` agree
  between the two modules, ``frame_header`` writes ``build_frame``'s header, and parsing a
  built frame gives the frame back.

Why: the compiled parser is what a server runs on every read, and the pure one is the
specification it must match; the streaming reader parses headers through it and streams
the payloads itself, so any read boundary must give the same frames as one call.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

import atheris
from _harness import (
    INSTRUMENTED,
    Input,
    check,
    cut,
    main,
    outcome,
    use_sanitized_speedups,
)

use_sanitized_speedups()
with atheris.instrument_imports(include=INSTRUMENTED):
    from corral import _pure
    from corral.exceptions import ProtocolError
    from corral.protocol.reader import FrameReader

try:
    _speedups: ModuleType | None = importlib.import_module("corral._speedups")
except ImportError:  # a pure install: only the reader half is checked
    _speedups = None
    print("fuzz: corral._speedups is not built; pure-only checks", file=sys.stderr)

# Frame size limits worth a look: none (negative, or beyond what a 63-bit length reaches),
# zero, the control frame bound and the length encodings' edges.
_LIMITS = (-1, -2, 0, 1, 124, 125, 126, 127, 65535, 65536, 2**63 - 1, 2**63, 2**64, None)
_Frame = tuple[int, bool, int, bytes]


def _buffer(data: bytes, kind: int) -> Any:
    """``data`` as one of the buffer types the parsers take (8 kinds, some unusual)."""
    if kind == 1:
        return bytearray(data)
    if kind == 2:
        return memoryview(data)
    if kind == 3:
        return memoryview(bytearray(data))
    if kind == 4 and len(data) % 2 == 0:
        return memoryview(data).cast("H")  # items of 2 bytes: still the same bytes
    if kind == 5:
        return memoryview(b"\x00" + data)[1:]  # a view that does not start its object
    if kind == 6:
        return memoryview(data + data)[::2]  # not contiguous: refused alike
    return data


def _differential(stream: bytes, kind: int, limit: int, pos: int) -> None:
    """Both parse_frames on every require_mask setting and a few limits and positions."""
    assert _speedups is not None
    buf = _buffer(stream, kind)
    for require_mask in (False, True):
        for max_size, start in ((-1, 0), (limit, 0), (limit, pos)):
            pure = outcome(_pure.parse_frames, buf, start, require_mask, max_size)
            fast = outcome(_speedups.parse_frames, buf, start, require_mask, max_size)
            check(pure == fast, "parse_frames differs", require_mask, max_size, start, pure, fast)


def _read(stream: bytes, sizes: list[int], require_mask: bool, limit: int | None,
          in_place: bool) -> tuple[list[_Frame], FrameReader]:
    """Feed ``stream`` to a FrameReader in the planned reads; the frames it completes and
    the reader."""
    reader = FrameReader(require_mask=require_mask, max_frame_size=limit)
    frames: list[_Frame] = []
    parts: list[bytes] = []
    remaining = 0  # payload bytes still to come in the current data frame
    opcode, fin, rsv = -1, False, 0
    for read in cut(stream, sizes):
        if reader.error is not None:
            break
        if in_place and remaining and read:
            # The next bytes are the current frame's: unmask them where they landed.
            n = min(remaining, len(read))
            landed = bytearray(read[:n])
            whole = reader.feed_in_place(memoryview(landed))
            parts.append(bytes(landed))
            remaining -= n
            check(whole == (remaining == 0), "feed_in_place end", whole, remaining)
            if whole:
                frames.append((opcode, fin, rsv, b"".join(parts)))
                parts = []
            read = read[n:]
        scratch = bytearray(read)
        chunks = reader.feed(memoryview(scratch))
        scratch[:] = b"\xaa" * len(scratch)  # the reader must have kept no view of it
        for chunk in chunks:
            check(chunk.first == (not parts), "chunk.first", chunk, parts)
            if chunk.opcode >= 8:
                check(chunk.first and chunk.last, "control frame in pieces", chunk)
            parts.append(chunk.data)
            opcode, fin, rsv = chunk.opcode, chunk.fin, chunk.rsv
            got = sum(map(len, parts))
            check(got <= chunk.length, "more payload than declared", chunk, got)
            check(chunk.last == (got == chunk.length), "chunk.last", chunk, got)
            remaining = chunk.length - got
            if chunk.last:
                frames.append((opcode, fin, rsv, b"".join(parts)))
                parts = []
    return frames, reader


def _streaming(stream: bytes, sizes: list[int], require_mask: bool, limit: int,
               in_place: bool) -> None:
    """FrameReader in fuzzer-chosen reads against one parse_frames call."""
    reader_limit = None if limit < 0 else limit
    want, pos, code, reason, _ = _pure.parse_frames(stream, 0, require_mask, max(limit, -1))
    got, reader = _read(stream, sizes, require_mask, reader_limit, in_place)
    error = reader.error
    if error is None:
        check(code == 0, "reader missed an error", code, reason)
        check(got == want, "reader frames differ", got, want)
        check(reader.idle == (pos == len(stream)), "reader.idle", reader.idle, pos)
        return
    check(code != 0, "reader failed where parse_frames did not", str(error))
    check(got == want, "frames before the error differ", got, want)
    check(isinstance(error, ProtocolError) and error.close_code == code,
          "error close code differs", error, code)
    if code == 1002:
        check(str(error) == reason, "error text differs", str(error), reason)
    check(not reader.feed(b"\x81\x00"), "a failed reader parsed on")


def _builders(inp: Input, stream: bytes) -> None:
    """build_frame and the masking functions, both modules, and parse(build(f)) == f."""
    assert _speedups is not None
    head = stream[:1] or b"\x00"
    opcode, fin, rsv = head[0] & 0x0F, bool(head[0] & 0x80), head[0] & 0x70
    mask_len = inp.byte() % 6  # 4 is a mask; anything else must be refused alike
    mask = stream[1 : 1 + mask_len] if mask_len else None
    payload = stream[1 + mask_len :]
    pure = outcome(_pure.build_frame, opcode, payload, fin, rsv, mask)
    fast = outcome(_speedups.build_frame, opcode, payload, fin, rsv, mask)
    check(pure == fast, "build_frame differs", pure, fast)
    head = outcome(_pure.frame_header, opcode, len(payload), fin, rsv)
    check(head == outcome(_speedups.frame_header, opcode, len(payload), fin, rsv),
          "frame_header differs", head)
    if head[0] == "ok":
        whole = _pure.build_frame(opcode, payload, fin, rsv)
        check(head[1] + payload == whole, "frame_header is not build_frame's header", head)
    if pure[0] == "ok":
        parsed = _pure.parse_frames(pure[1], 0, mask is not None, -1)
        valid = opcode in (0, 1, 2) or (opcode in (8, 9, 10) and fin and len(payload) <= 125)
        if valid:
            check(parsed == ([(opcode, fin, rsv, payload)], len(pure[1]), 0, "", None),
                  "parse(build(frame)) != frame", parsed)
        else:
            check(parsed[2] == 1002, "a frame that breaks 5.2/5.5 parsed", parsed)
    key = mask if mask is not None else b"\x01\x02\x03\x04"
    offset = inp.byte() - 128
    pure = outcome(_pure.apply_mask, payload, key, offset)
    fast = outcome(_speedups.apply_mask, payload, key, offset)
    check(pure == fast, "apply_mask differs", pure, fast)
    for module in (_pure, _speedups):
        target = bytearray(payload)
        done = outcome(module.apply_mask_in_place, target, key, offset)
        if done[0] == "ok":
            check(pure == ("ok", bytes(target)), "apply_mask_in_place differs", module)
        else:
            check(done == pure, "apply_mask_in_place error differs", done, pure)


def _payload_buffers(inp: Input, payload: bytes) -> None:
    """PayloadBuffer of both modules: filled through views at fuzzer-chosen bounds, taken
    once, refusing views and takes afterwards alike."""
    assert _speedups is not None
    results = []
    start, stop = inp.byte(), inp.byte()
    for module in (_pure, _speedups):
        steps: list[object] = []
        buffer = module.PayloadBuffer(len(payload))
        for a, b in ((0, len(payload)), (start, stop), (stop, start)):
            try:
                view = buffer.view(a, b)
                view[:] = payload[a:b]
                steps.append(len(view))
                view.release()
            except Exception as exc:
                steps.append((type(exc).__name__, str(exc)))
        steps += [len(buffer), outcome(buffer.take), outcome(buffer.take),
                  outcome(buffer.view, 0, 0)]
        results.append(steps)
    check(results[0] == results[1], "PayloadBuffer differs", *results)


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    config = inp.byte()  # bits 0-2: buffer kind, 3: require_mask, 4: unmask in place
    chosen = inp.pick(_LIMITS)
    fuzz_limit = inp.u16()
    limit = fuzz_limit if chosen is None else chosen
    pos_seed = inp.byte()
    extra = Input(bytes((inp.byte(), inp.byte())))  # for the builders
    sizes = inp.cuts()
    stream = inp.rest()
    if _speedups is not None:
        _differential(stream, config & 7, limit, pos_seed % (len(stream) + 1))
        _builders(extra, stream)
        _payload_buffers(Input(data[:2]), stream)
    _streaming(stream, sizes, inp.flag(config, 3), limit, inp.flag(config, 4))


if __name__ == "__main__":
    main(test_one_input)
