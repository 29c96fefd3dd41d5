"""RFC 6455 section 5 framing: opcodes, close codes, frame serialization, close payloads.

The codec takes no side: masking is a parameter. Which side must mask is policy and lives in
the connection (section 5.1). Nothing here holds connection state.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from ..accel import apply_mask, build_frame
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


def serialize_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = None,
) -> bytes:
    """Encode one frame; ``mask`` is the 4-byte masking key a client must use, or None."""
    return build_frame(opcode, payload, fin, 0x40 if rsv1 else 0, mask)


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
