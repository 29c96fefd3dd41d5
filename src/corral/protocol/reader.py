"""Streaming frame reader: bytes in, frame chunks out (RFC 6455 section 5.2).

Data frame payloads come out piece by piece as they arrive, unmasked, so a text frame can be
checked for UTF-8 before it ends (Autobahn 6.4.3) and a large frame is never buffered twice.
Control frames come out whole. Only rules that hold whatever the side and the extensions are
enforced here; policy (RSV bits, message assembly) belongs to the connection.
"""

from __future__ import annotations

from typing import NamedTuple

from ..accel import apply_mask, apply_mask_in_place
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


_RESERVED_OPCODES = frozenset({3, 4, 5, 6, 7, 11, 12, 13, 14, 15})


class FrameReader:
    """Parses a byte stream into :class:`Chunk` objects.

    ``require_mask`` is True on a server (client frames must be masked, section 5.1) and
    False on a client (server frames must not be). After an error the reader stops; the
    chunks parsed before it are still returned and the error is left in ``error``.
    """

    __slots__ = (
        "_buf",
        "_fin",
        "_length",
        "_mask",
        "_offset",
        "_opcode",
        "_rsv",
        "_started",
        "error",
        "idle",
        "max_frame_size",
        "require_mask",
    )

    def __init__(self, *, require_mask: bool, max_frame_size: int | None = None) -> None:
        self.require_mask = require_mask
        self.max_frame_size = max_frame_size
        self.error: ProtocolError | None = None
        self._buf: bytearray | None = None  # an incomplete header kept between reads
        self._opcode = -1  # -1: waiting for a header
        self._fin = True
        self._rsv = 0
        self._length = 0
        self._offset = 0  # payload bytes of the current frame already returned
        self._started = False  # the frame's first chunk has been returned
        self._mask: bytes | None = None
        # Between frames with nothing buffered: the next byte starts a frame. An attribute,
        # kept up to date by feed and feed_in_place, as it is read before every read's parse.
        self.idle = True

    def feed(self, data: bytes | bytearray | memoryview) -> list[Chunk]:
        """Add received bytes; return the chunks they complete. No reference to ``data`` is
        kept: what must wait for more (an incomplete header or control frame) is copied."""
        if self.error is not None:
            return []
        # Work on the received bytes themselves; only an incomplete header or control frame
        # (a few bytes) is kept for the next call, so a large payload is never buffered here
        # nor moved around: each piece is copied once, unmasked on the way.
        buf: bytes | bytearray | memoryview = data
        if self._buf:
            self._buf += data
            buf = self._buf
            self._buf = None
        view = memoryview(buf)
        out: list[Chunk] = []
        pos = 0
        end = len(buf)
        try:
            while True:
                if self._opcode < 0:
                    used = self._parse_header(buf, pos, end)
                    if not used:
                        break
                    pos += used
                opcode = self._opcode
                remaining = self._length - self._offset
                available = end - pos
                if opcode >= 8:
                    # Control frames are small (<= 125 bytes): hand them out whole.
                    if available < remaining:
                        break
                    take = remaining
                else:
                    take = remaining if available >= remaining else available
                    if take == 0 and self._started and remaining:
                        break
                if self._mask is not None:
                    piece = apply_mask(view[pos : pos + take], self._mask, self._offset)
                else:
                    piece = bytes(view[pos : pos + take])
                first = not self._started
                self._started = True
                self._offset += take
                pos += take
                last = self._offset == self._length
                out.append(Chunk(opcode, self._fin, self._rsv, piece, first, last, self._length))
                if not last:
                    break
                self._opcode = -1
        except ProtocolError as exc:
            # Kept without its traceback: its frames hold `data`, the caller's buffer,
            # which the caller may reuse or resize once this call returns.
            self.error = exc.with_traceback(None)
            self.idle = False
            return out
        finally:
            view.release()
        if pos < end:
            self._buf = bytearray(buf[pos:])
        self.idle = self._opcode < 0 and self._buf is None
        return out

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

    def _parse_header(self, buf: bytes | bytearray | memoryview, pos: int, end: int) -> int:
        """Parse a frame header at ``pos``; return its size, or 0 if it is incomplete."""
        if end - pos < 2:
            return 0
        b0 = buf[pos]
        b1 = buf[pos + 1]
        length = b1 & 0x7F
        masked = b1 & 0x80
        size = 2 + (4 if masked else 0) + (2 if length == 126 else 8 if length == 127 else 0)
        if end - pos < size:
            return 0
        opcode = b0 & 0x0F
        fin = bool(b0 & 0x80)
        if opcode in _RESERVED_OPCODES:
            # 5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail_".
            raise ProtocolError(f"reserved opcode {opcode:#x}")
        if opcode >= 8:
            # 5.5: "All control frames MUST have a payload length of 125 bytes or less
            # and MUST NOT be fragmented."
            if length > 125:
                raise ProtocolError("control frame too long")
            if not fin:
                raise ProtocolError("fragmented control frame")
        i = pos + 2
        if length == 126:
            length = int.from_bytes(buf[i : i + 2], "big")
            i += 2
        elif length == 127:
            length = int.from_bytes(buf[i : i + 8], "big")
            i += 8
            # 5.2: "the most significant bit MUST be 0" in the 64-bit form.
            if length >> 63:
                raise ProtocolError("64-bit payload length with the high bit set")
        if bool(masked) != self.require_mask:
            # 5.1: a server MUST close on an unmasked client frame; a client on a masked one.
            raise ProtocolError(
                "unmasked client frame" if self.require_mask else "masked server frame"
            )
        if self.max_frame_size is not None and length > self.max_frame_size:
            raise PayloadTooBig(length, self.max_frame_size)
        self._mask = bytes(buf[i : i + 4]) if masked else None
        self._opcode = opcode
        self._fin = fin
        self._rsv = b0 & 0x70
        self._length = length
        self._offset = 0
        self._started = False
        return size
