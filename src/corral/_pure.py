"""Pure-Python reference of corral's hot framing paths (RFC 6455 sections 5.2 and 5.3).

This module is the source of truth: ``_speedups.c`` implements exactly these functions, with
the same arguments, results, error codes and error texts, and ``tests/protocol/test_accel.py``
checks that the two agree on random input. :mod:`corral.accel` picks one of them.
Keep it readable rather than clever; change behaviour here first, then in the C file.
"""

from __future__ import annotations

import struct
from typing import TypeAlias

__all__ = [
    "FrameHead",
    "ParsedFrame",
    "PayloadBuffer",
    "apply_mask",
    "apply_mask_in_place",
    "build_frame",
    "frame_header",
    "parse_frames",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

#: One parsed frame: (opcode, fin, rsv bits as in the first byte (0x70 mask), payload).
ParsedFrame: TypeAlias = tuple[int, bool, int, bytes]
#: A frame's header read ahead of its payload: (opcode, fin, rsv, payload length, masking key
#: or None, header size).
FrameHead: TypeAlias = tuple[int, bool, int, int, bytes | None, int]

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack
_RESERVED_OPCODES = frozenset({3, 4, 5, 6, 7, 11, 12, 13, 14, 15})


def _bytes_of(data: Buffer) -> memoryview:
    """``data`` as a flat view of bytes; like the compiled module (which asks for a simple
    buffer), a view that is not contiguous is refused with the same BufferError."""
    view = memoryview(data)
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _check_mask(mask: Buffer) -> bytes:
    mask = bytes(mask)
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    return mask


def apply_mask(data: Buffer, mask: Buffer, offset: int = 0) -> bytes:
    """XOR ``data`` with the 4-byte ``mask``, starting ``offset`` bytes into the mask.

    5.3: "Octet i of the transformed data is the XOR of octet i of the original data with
    octet at index i modulo 4 of the masking key." ``offset`` is the index of ``data[0]`` in
    the frame's payload, so a payload can be unmasked piece by piece as it arrives. The XOR
    runs on one big integer, which in pure Python is far faster than a loop over bytes.
    """
    data = _bytes_of(data)
    mask = _check_mask(mask)
    n = len(data)
    if n == 0:
        return b""
    shift = offset & 3
    if shift:
        mask = mask[shift:] + mask[:shift]
    key = (mask * ((n >> 2) + 1))[:n]
    value = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(n, "little")


def apply_mask_in_place(data: Buffer, mask: Buffer, offset: int = 0) -> None:
    """``apply_mask`` that overwrites ``data`` (a writable buffer) with its result.

    For a payload the socket wrote straight into the message's buffer: it is unmasked
    where it landed instead of being copied out.
    """
    view = memoryview(data).cast("B")
    if view.readonly:
        raise TypeError("apply_mask_in_place needs a writable buffer")
    view[:] = apply_mask(view, mask, offset)


class PayloadBuffer:
    """A payload of known size, filled in place (``view``), then handed out as ``bytes``.

    The compiled twin builds the ``bytes`` object itself, so ``take`` costs no copy; here
    the bytes are copied out of a ``bytearray``. After ``take`` no new view is given, and
    the caller must not write through the views it still holds.
    """

    __slots__ = ("_data", "_taken")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("size must not be negative")
        self._data = bytearray(size)
        self._taken = False

    def __len__(self) -> int:
        return len(self._data)

    def view(self, start: int, stop: int) -> memoryview:
        """A writable view of bytes ``start`` to ``stop``."""
        if self._taken:
            raise BufferError("the payload was taken")
        if not 0 <= start <= stop <= len(self._data):
            raise ValueError("view out of range")
        return memoryview(self._data)[start:stop]

    def take(self) -> bytes:
        """The payload as ``bytes``; once only."""
        if self._taken:
            raise BufferError("the payload was taken")
        self._taken = True
        return bytes(self._data)


def build_frame(
    opcode: int,
    payload: Buffer,
    fin: bool = True,
    rsv: int = 0,
    mask: Buffer | None = None,
) -> bytes:
    """Encode one frame (5.2): header, then the masking key and masked payload if ``mask``.

    ``rsv`` holds the RSV bits in place (0x40 RSV1, 0x20 RSV2, 0x10 RSV3). The payload
    length takes the shortest form: 7 bits up to 125, 16 bits up to 65535, else 64 bits
    ("the minimal number of bytes MUST be used to encode the length").
    """
    payload = bytes(_bytes_of(payload))  # first, as the compiled twin takes its arguments
    b0 = _first_byte(opcode, fin, rsv)
    if mask is not None:
        mask = _check_mask(mask)
    header = _header(b0, len(payload), mask is not None)
    if mask is None:
        return header + payload
    return header + mask + apply_mask(payload, mask)


def frame_header(opcode: int, length: int, fin: bool = True, rsv: int = 0) -> bytes:
    """The header of an unmasked frame whose ``length``-byte payload is written apart from
    it (a large payload is not copied into a frame: header and payload go out in one
    writev). The same header ``build_frame`` writes."""
    if not isinstance(length, int):
        raise TypeError(f"length must be an int, not {type(length).__name__}")
    b0 = _first_byte(opcode, fin, rsv)
    if not 0 <= length < 1 << 63:
        raise ValueError("length out of range")  # 5.2: 63 bits at most
    return _header(b0, length, False)


def _first_byte(opcode: int, fin: bool, rsv: int) -> int:
    """5.2: FIN, the RSV bits and the opcode."""
    if not 0 <= opcode <= 0xF:
        raise ValueError("opcode must be in 0..15")
    if rsv & ~0x70:
        raise ValueError("rsv must only hold bits 0x70")
    return (0x80 if fin else 0) | rsv | opcode


def _header(b0: int, n: int, masked: bool) -> bytes:
    """The first byte, then the mask bit and the payload length in its shortest form (5.2:
    "the minimal number of bytes MUST be used to encode the length")."""
    mbit = 0x80 if masked else 0
    if n < 126:
        return bytes((b0, mbit | n))
    if n < 65536:
        return _PACK_16(b0, mbit | 126, n)
    return _PACK_64(b0, mbit | 127, n)


def parse_frames(
    buf: Buffer, pos: int, require_mask: bool, max_frame_size: int, /
) -> tuple[list[ParsedFrame], int, int, str, FrameHead | None]:
    """Parse every complete frame in ``buf`` from ``pos``; payloads come out unmasked.

    Returns ``(frames, new_pos, error_code, error_reason, header)``. ``new_pos`` is where
    the first incomplete frame starts (``len(buf)`` if none). ``error_code`` is 0, or the
    close code of the first bad frame: then ``frames`` holds the good frames before it and
    ``new_pos`` points at it. ``header`` describes the frame at ``new_pos`` when its header
    is whole but its payload is not here (so a streaming reader can take the payload as it
    comes without reading the header again), or when that frame is too big (1009); else
    None. A header is checked as soon as it is complete, so a frame that is too big is
    refused before its payload arrives. ``require_mask`` is the side's policy (5.1);
    ``max_frame_size`` < 0 means no limit.

    This is the one place the header rules of 5.2 are written in Python (the compiled
    twin's are in ``_frame.h``): the streaming reader and the hot path use it.
    """
    view = _bytes_of(buf)
    end = len(view)
    if not 0 <= pos <= end:
        raise ValueError("pos out of range")
    frames: list[ParsedFrame] = []
    while end - pos >= 2:
        b0 = view[pos]
        b1 = view[pos + 1]
        length = b1 & 0x7F
        masked = bool(b1 & 0x80)
        size = 2 + (4 if masked else 0) + (2 if length == 126 else 8 if length == 127 else 0)
        if end - pos < size:
            break
        opcode = b0 & 0x0F
        fin = bool(b0 & 0x80)
        if opcode in _RESERVED_OPCODES:
            # 5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail_".
            return frames, pos, 1002, f"reserved opcode {opcode:#x}", None
        if opcode >= 8:
            # 5.5: "All control frames MUST have a payload length of 125 bytes or less
            # and MUST NOT be fragmented."
            if length > 125:
                return frames, pos, 1002, "control frame too long", None
            if not fin:
                return frames, pos, 1002, "fragmented control frame", None
        i = pos + 2
        if length == 126:
            length = int.from_bytes(view[i : i + 2], "big")
            i += 2
        elif length == 127:
            length = int.from_bytes(view[i : i + 8], "big")
            i += 8
            # 5.2: "the most significant bit MUST be 0" in the 64-bit form.
            if length >> 63:
                return frames, pos, 1002, "64-bit payload length with the high bit set", None
        if masked != bool(require_mask):
            # 5.1: a server MUST close on an unmasked client frame; a client on a masked one.
            reason = "unmasked client frame" if require_mask else "masked server frame"
            return frames, pos, 1002, reason, None
        mask = bytes(view[i : i + 4]) if masked else None
        if 0 <= max_frame_size < length:
            header = (opcode, fin, b0 & 0x70, length, mask, size)
            reason = f"frame of {length} bytes, limit is {max_frame_size}"
            return frames, pos, 1009, reason, header
        start = pos + size
        if end - start < length:
            return frames, pos, 0, "", (opcode, fin, b0 & 0x70, length, mask, size)
        body = view[start : start + length]
        payload = apply_mask(body, mask) if mask is not None else bytes(body)  # one copy
        frames.append((opcode, fin, b0 & 0x70, payload))
        pos = start + length
    return frames, pos, 0, "", None
