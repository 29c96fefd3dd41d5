"""The frame codec (corral.protocol.frames), named after RFC 6455 sections.

Byte in, byte out: exact wire bytes, the examples of section 5.7, and the close payload rules
of sections 5.5.1 and 7.4.
"""

from __future__ import annotations

import pytest

from corral.exceptions import InvalidPayload, ProtocolError
from corral.protocol.frames import (
    CONTROL_OPCODES,
    DATA_OPCODES,
    CloseCode,
    Frame,
    Opcode,
    apply_mask,
    is_valid_close_code,
    parse_close,
    serialize_close,
    serialize_frame,
)

MASK = bytes((0x37, 0xFA, 0x21, 0x3D))  # the masking key of the RFC 5.7 examples

# -- 5.2 opcodes, 7.4.1 close codes --------------------------------------------------------


def test_5_2_opcode_values() -> None:
    expected = {"CONTINUATION": 0x0, "TEXT": 0x1, "BINARY": 0x2, "CLOSE": 0x8, "PING": 0x9}
    expected["PONG"] = 0xA
    assert {op.name: op.value for op in Opcode} == expected


def test_5_2_control_and_data_opcodes_are_disjoint() -> None:
    assert {Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY} == DATA_OPCODES
    assert {Opcode.CLOSE, Opcode.PING, Opcode.PONG} == CONTROL_OPCODES
    # 5.5: control frames are those whose opcode has the most significant bit set.
    assert all(op & 0x8 for op in CONTROL_OPCODES)
    assert not any(op & 0x8 for op in DATA_OPCODES)


def test_7_4_1_close_code_values() -> None:
    expected = {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "PROTOCOL_ERROR": 1002,
        "UNSUPPORTED_DATA": 1003,
        "NO_STATUS": 1005,
        "ABNORMAL": 1006,
        "INVALID_DATA": 1007,
        "POLICY_VIOLATION": 1008,
        "MESSAGE_TOO_BIG": 1009,
        "MANDATORY_EXTENSION": 1010,
        "INTERNAL_ERROR": 1011,
        "SERVICE_RESTART": 1012,
        "TRY_AGAIN_LATER": 1013,
        "BAD_GATEWAY": 1014,
        "TLS_HANDSHAKE": 1015,
    }
    assert {c.name: c.value for c in CloseCode} == expected


def test_5_2_frame_defaults() -> None:
    assert Frame(Opcode.TEXT, b"x") == (Opcode.TEXT, b"x", True, False, False, False)


# -- 5.2 base framing: payload length in 7, 7+16 or 7+64 bits ------------------------------


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x82\x00"),
        (1, b"\x82\x01"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (127, b"\x82\x7e\x00\x7f"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (65537, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x01"),
    ],
)
def test_5_2_payload_length_encoding(length: int, header: bytes) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    assert serialize_frame(Opcode.BINARY, payload) == header + payload


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (125, b"\x82\xfd"),
        (126, b"\x82\xfe\x00\x7e"),
        (65536, b"\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_5_2_mask_bit_is_set_in_every_length_form(length: int, header: bytes) -> None:
    payload = b"\xaa" * length
    frame = serialize_frame(Opcode.BINARY, payload, mask=MASK)
    assert frame[: len(header)] == header
    assert frame[len(header) : len(header) + 4] == MASK
    assert apply_mask(frame[len(header) + 4 :], MASK) == payload


def test_5_2_fin_and_rsv1_bits() -> None:
    assert serialize_frame(Opcode.TEXT, b"", fin=False) == b"\x01\x00"
    assert serialize_frame(Opcode.CONTINUATION, b"", fin=True) == b"\x80\x00"
    assert serialize_frame(Opcode.TEXT, b"", rsv1=True) == b"\xc1\x00"
    assert serialize_frame(Opcode.CONTINUATION, b"", fin=False, rsv1=True) == b"\x40\x00"


# -- 5.7 examples --------------------------------------------------------------------------


def test_5_7_single_frame_unmasked_text() -> None:
    assert serialize_frame(Opcode.TEXT, b"Hello") == bytes(
        (0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F)
    )


def test_5_7_single_frame_masked_text() -> None:
    assert serialize_frame(Opcode.TEXT, b"Hello", mask=MASK) == bytes(
        (0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58)
    )


def test_5_7_fragmented_unmasked_text() -> None:
    assert serialize_frame(Opcode.TEXT, b"Hel", fin=False) == bytes((0x01, 0x03, 0x48, 0x65, 0x6C))
    assert serialize_frame(Opcode.CONTINUATION, b"lo") == bytes((0x80, 0x02, 0x6C, 0x6F))


def test_5_7_unmasked_ping_and_masked_pong() -> None:
    assert serialize_frame(Opcode.PING, b"Hello") == bytes(
        (0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F)
    )
    assert serialize_frame(Opcode.PONG, b"Hello", mask=MASK) == bytes(
        (0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58)
    )


def test_5_7_256_bytes_binary_in_one_unmasked_frame() -> None:
    payload = bytes(range(256))
    frame = serialize_frame(Opcode.BINARY, payload)
    assert frame[:4] == bytes((0x82, 0x7E, 0x01, 0x00))
    assert frame[4:] == payload


def test_5_7_64_kib_binary_in_one_unmasked_frame() -> None:
    payload = b"\x5a" * 65536
    frame = serialize_frame(Opcode.BINARY, payload)
    assert frame[:10] == bytes((0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00))
    assert frame[10:] == payload


# -- 5.3 client-to-server masking ----------------------------------------------------------


def test_5_3_mask_is_xor_with_key_index_modulo_4() -> None:
    data = bytes(range(23))
    expected = bytes(b ^ MASK[i % 4] for i, b in enumerate(data))
    assert apply_mask(data, MASK) == expected


def test_5_3_mask_of_empty_data() -> None:
    assert apply_mask(b"", MASK) == b""
    assert apply_mask(b"", MASK, 3) == b""


@pytest.mark.parametrize("offset", range(9))
def test_5_3_mask_with_offset_continues_the_key(offset: int) -> None:
    """Unmasking a piece that starts ``offset`` bytes into the payload uses key[(offset+i)%4]."""
    payload = bytes(range(40, 80))
    masked = apply_mask(payload, MASK)
    for cut in range(len(payload) + 1):
        if cut < offset:
            continue
        piece = masked[offset:cut]
        assert apply_mask(piece, MASK, offset) == payload[offset:cut]


def test_5_3_mask_accepts_bytearray_and_memoryview() -> None:
    data = b"Hello"
    expected = bytes((0x7F, 0x9F, 0x4D, 0x51, 0x58))
    assert apply_mask(bytearray(data), MASK) == expected
    assert apply_mask(memoryview(data), MASK) == expected


def test_5_3_mask_keeps_leading_and_trailing_zero_bytes() -> None:
    # The XOR runs on one integer: zero bytes at either end must survive the round trip.
    data = b"\x00\x00\x01\x00\x00"
    zero_key = b"\x00\x00\x00\x00"
    assert apply_mask(data, zero_key) == data
    assert apply_mask(MASK * 3, MASK) == b"\x00" * 12


# -- 5.5.1 close payloads ------------------------------------------------------------------


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014]
VALID_CODES += [3000, 3999, 4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_7_4_valid_close_codes(code: int) -> None:
    assert is_valid_close_code(code)


@pytest.mark.parametrize("code", INVALID_CODES)
def test_7_4_invalid_close_codes(code: int) -> None:
    assert not is_valid_close_code(code)


def test_7_4_every_code_in_the_16_bit_range() -> None:
    valid = {c for c in range(65536) if is_valid_close_code(c)}
    assert valid == set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))


def test_5_5_1_serialize_close_code_and_reason() -> None:
    assert serialize_close(1000) == b"\x03\xe8"
    assert serialize_close(CloseCode.GOING_AWAY, "bye") == b"\x03\xe9bye"
    assert serialize_close(4999, "é") == b"\x13\x87\xc3\xa9"


def test_5_5_1_serialize_close_without_code_is_empty() -> None:
    assert serialize_close(None) == b""


def test_5_5_1_reason_needs_a_code() -> None:
    with pytest.raises(ValueError):
        serialize_close(None, "why")


@pytest.mark.parametrize("code", INVALID_CODES)
def test_7_4_serialize_close_refuses_invalid_codes(code: int) -> None:
    with pytest.raises(ValueError):
        serialize_close(code)


def test_5_5_close_reason_limited_to_123_bytes() -> None:
    """5.5: control payloads are at most 125 bytes, two of which hold the code."""
    assert len(serialize_close(1000, "a" * 123)) == 125
    with pytest.raises(ValueError):
        serialize_close(1000, "a" * 124)
    # The limit is on encoded bytes, not characters: 62 two-byte characters are 124 bytes.
    with pytest.raises(ValueError):
        serialize_close(1000, "é" * 62)
    assert len(serialize_close(1000, "é" * 61 + "a")) == 125


def test_5_5_1_parse_close_empty_is_1005() -> None:
    assert parse_close(b"") == (CloseCode.NO_STATUS, "")


def test_5_5_1_parse_close_one_byte_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close(b"\x03")
    assert info.value.close_code == 1002


@pytest.mark.parametrize("code", VALID_CODES)
def test_5_5_1_parse_close_valid_codes(code: int) -> None:
    assert parse_close(code.to_bytes(2, "big")) == (code, "")
    assert parse_close(code.to_bytes(2, "big") + b"ok") == (code, "ok")


@pytest.mark.parametrize("code", INVALID_CODES)
def test_7_4_parse_close_invalid_codes(code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close(code.to_bytes(2, "big"))
    assert type(info.value) is ProtocolError
    assert info.value.close_code == 1002


@pytest.mark.parametrize(
    "reason",
    [b"\xff", b"\xc3", b"ok\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"],
)
def test_8_1_parse_close_bad_utf8_reason_is_1007(reason: bytes) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_close(b"\x03\xe8" + reason)
    assert info.value.close_code == 1007


def test_5_5_1_parse_close_round_trips_serialize_close() -> None:
    for code in VALID_CODES:
        for reason in ("", "bye", "κόσμε", "a" * 123):
            assert parse_close(serialize_close(code, reason)) == (code, reason)


def test_5_5_1_parse_close_reason_with_a_4_byte_character() -> None:
    code, reason = parse_close(b"\x03\xe8\xf0\x9f\x98\x80")
    assert (code, reason) == (1000, "\U0001f600")
    assert isinstance(code, int)
