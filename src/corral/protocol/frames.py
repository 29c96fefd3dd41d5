"""RFC 6455 section 5 framing: opcodes, close codes, frame serialization, close payloads.

The codec takes no side: masking is a parameter. Which side must mask is policy and lives in
the connection (section 5.1). Nothing here holds connection state.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from ..exceptions import InvalidPayload, ProtocolError

__all__ = [
    "CONTROL_OPCODES",
    "DATA_OPCODES",
    "CloseCode",
    "Frame",
    "Opcode",
    "apply_mask",
    "is_valid_close_code",
    "parse_close",
    "serialize_close",
    "serialize_frame",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (section 5.2); 0x3-0x7 and 0xB-0xF are reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA



DATA_OPCODES = frozenset({Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})


class CloseCode(enum.IntEnum):
    """Close status codes (section 7.4.1 and the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never on the wire: "no status code was actually present"
    ABNORMAL = 1006  # never on the wire: closed without a close frame
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


class Frame(NamedTuple):
    """One decoded frame. ``payload`` is unmasked."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False


def is_valid_close_code(code: int) -> bool:
    """Codes an endpoint may send or accept in a close frame (section 7.4).

    1000-1003 and 1007-1014 are defined (1012-1014 registered with IANA after the RFC);
    1004 is reserved and 1005, 1006, 1015 must never be on the wire; 3000-4999 belong to
    libraries, frameworks and applications.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` (section 5.3), starting ``offset`` bytes into it.

    The offset lets a payload be unmasked piece by piece as it arrives. The XOR runs on one
    big integer, which in pure Python is far faster than a loop over bytes.
    """
    n = len(data)
    if n == 0:
        return b""
    shift = offset & 3
    if shift:
        mask = mask[shift:] + mask[:shift]
    key = (mask * ((n >> 2) + 1))[:n]
    value = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(n, "little")


_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack


def serialize_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = None,
) -> bytes:
    """Encode one frame; ``mask`` is the 4-byte masking key a client must use, or None."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        header = bytes((b0, mbit | n))
    elif n < 65536:
        header = _PACK_16(b0, mbit | 126, n)
    else:
        header = _PACK_64(b0, mbit | 127, n)
    if mask is None:
        return header + payload
    return header + mask + apply_mask(payload, mask)


def serialize_close(code: int | None, reason: str = "") -> bytes:
    """The payload of a close frame: empty, or a 2-byte code and a UTF-8 reason (5.5.1)."""
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"invalid close code: {code}")
    data = code.to_bytes(2, "big") + reason.encode()
    if len(data) > 125:
        raise ValueError("close reason too long: control frames carry at most 125 bytes")
    return data


def parse_close(payload: bytes) -> tuple[int, str]:
    """Decode a received close payload into (code, reason); 1005 when it has no code.

    Section 5.5.1: a body, if present, starts with a 2-byte code, followed by UTF-8 text.
    """
    if not payload:
        return CloseCode.NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise InvalidPayload("close reason is not valid UTF-8") from None
    return code, reason
