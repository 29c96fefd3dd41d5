"""Streaming frame reader: bytes in, frame chunks out (RFC 6455 section 5.2).

Data frame payloads come out piece by piece as they arrive, unmasked, so a text frame can be
checked for UTF-8 before it ends (Autobahn 6.4.3) and a large frame is never buffered twice.
Control frames come out whole. Only rules that hold whatever the side and the extensions are
enforced here; policy (RSV bits, message assembly) belongs to the connection.
"""

from __future__ import annotations

from typing import NamedTuple

from .._pure import FrameHead
from ..accel import apply_mask, apply_mask_in_place, parse_frames
from ..exceptions import PayloadTooBig, ProtocolError

__all__ = ["Chunk", "FrameReader"]


class Chunk(NamedTuple):
    """A piece of one frame's payload. ``first``/``last``: first/last piece of the frame."""

    opcode: int
    fin: bool
    rsv: int  # the three RSV bits as in the first byte (0x70 mask)
    data: bytes
    first: bool
    last: bool
    length: int  # the frame's declared payload length


_new_chunk = tuple.__new__  # a Chunk from a tuple, without NamedTuple's Python-level __new__


def header_limit(max_frame_size: int | None) -> int:
    """``max_frame_size`` as ``parse_frames`` takes it (< 0: no limit)."""
    return -1 if max_frame_size is None else max_frame_size


class FrameReader:
    """Parses a byte stream into :class:`Chunk` objects.

    The frames themselves are read by ``parse_frames`` (compiled or pure, see
    :mod:`corral.accel`), the one place the header rules are written: whole frames come out
    as one chunk each, and for a frame whose payload is still arriving it reports the
    header, so that payload is then streamed here piece by piece without reading the header
    again. What waits for more bytes is only an incomplete header or an incomplete control
    frame (a few bytes); a large payload is never buffered here.

    ``require_mask`` is True on a server (client frames must be masked, section 5.1) and
    False on a client (server frames must not be). After an error the reader stops; the
    chunks parsed before it are still returned and the error is left in ``error``.
    """

    __slots__ = (
        "_fin",
        "_length",
        "_mask",
        "_offset",
        "_opcode",
        "_rsv",
        "_started",
        "_stub",
        "error",
        "idle",
        "max_frame_size",
        "require_mask",
    )

    def __init__(self, *, require_mask: bool, max_frame_size: int | None = None) -> None:
        self.require_mask = require_mask
        self.max_frame_size = max_frame_size
        self.error: ProtocolError | None = None
        self._stub: bytes | None = None  # an incomplete header or control frame
        self._opcode = -1  # of the data frame whose payload is being streamed; -1: none
        self._fin = True
        self._rsv = 0
        self._length = 0
        self._offset = 0  # payload bytes of that frame already returned
        self._started = False  # its first chunk has been returned
        self._mask: bytes | None = None
        # Between frames with nothing buffered: the next byte starts a frame. An attribute,
        # kept up to date by feed and feed_in_place, as it is read before every read's parse.
        self.idle = True

    def feed(self, data: bytes | bytearray | memoryview) -> list[Chunk]:
        """Add received bytes; return the chunks they complete. No reference to ``data`` is
        kept: what must wait for more (an incomplete header or control frame) is copied."""
        if self.error is not None:
            return []
        buf: bytes | bytearray | memoryview = data
        if self._stub is not None:
            buf = self._stub + data  # a few bytes, before what completes them
            self._stub = None
        out: list[Chunk] = []
        pos = 0
        if self._opcode >= 0:
            pos = self._stream(buf, 0, len(buf), out)
            if self._opcode >= 0:
                return out  # the frame goes on in the next read
        frames, pos, code, reason, header = parse_frames(
            buf, pos, self.require_mask, header_limit(self.max_frame_size)
        )
        out += [_new_chunk(Chunk, (opcode, fin, rsv, payload, True, True, len(payload)))
                for opcode, fin, rsv, payload in frames]
        out += self.rest(buf, pos, code, reason, header)
        return out

    def rest(self, data: bytes | bytearray | memoryview, pos: int, code: int, reason: str,
             header: FrameHead | None) -> list[Chunk]:
        """Take over what follows the whole frames from a ``parse_frames`` call on ``data``
        (its results as they came, so nothing is parsed twice): keep the error it found, or
        start streaming the payload of the frame whose header it reported, or keep the few
        bytes of an incomplete header or control frame for the next read. Returns the
        frame's first chunk, if any. For a caller that parsed a read itself while ``idle``;
        ``feed`` does the rest."""
        out: list[Chunk] = []
        if code:
            self.error = (PayloadTooBig(header[3], header_limit(self.max_frame_size))
                          if code == 1009 and header is not None else ProtocolError(reason))
            self.idle = False
            return out
        if header is not None and header[0] < 8:
            # A data frame whose payload is still arriving: streamed, never buffered here.
            self._opcode, self._fin, self._rsv, self._length, self._mask, size = header
            self._offset = 0
            self._started = False
            pos = self._stream(data, pos + size, len(data), out)
        elif pos < len(data):
            self._stub = bytes(data[pos:])
        self.idle = self._opcode < 0 and self._stub is None
        return out

    def _stream(self, buf: bytes | bytearray | memoryview, pos: int, end: int,
                out: list[Chunk]) -> int:
        """Take what ``buf`` holds of the current data frame's payload from ``pos`` (a first
        chunk even when empty: the frame's start is known at once); where it stops."""
        remaining = self._length - self._offset
        take = remaining if end - pos >= remaining else end - pos
        if take == 0 and self._started:
            return pos
        with memoryview(buf) as view:  # one copy of the piece, unmasked on the way
            if self._mask is not None:
                piece = apply_mask(view[pos : pos + take], self._mask, self._offset)
            else:
                piece = bytes(view[pos : pos + take])
        first = not self._started
        self._started = True
        self._offset += take
        last = self._offset == self._length
        out.append(_new_chunk(Chunk, (self._opcode, self._fin, self._rsv, piece, first, last,
                                      self._length)))
        if last:
            self._opcode = -1
        return pos + take

    def feed_in_place(self, payload: memoryview) -> bool:
        """The next bytes of the stream are the rest (or part of the rest) of the current
        data frame's payload, and were written straight into ``payload`` (a writable view:
        see ``Connection.payload_buffer``). Unmask them there; True when the frame is whole.

        Only valid after a first chunk of that frame was returned, and for at most its
        remaining bytes."""
        n = len(payload)
        if not 0 <= self._opcode < 8 or not self._started or n > self._length - self._offset:
            raise ValueError("the stream is not inside a data frame's payload of that size")
        if self._mask is not None:
            apply_mask_in_place(payload, self._mask, self._offset)
        self._offset += n
        if self._offset < self._length:
            return False
        self._opcode = -1
        self.idle = True
        return True
