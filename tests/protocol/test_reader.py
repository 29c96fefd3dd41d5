"""The streaming frame reader (corral.protocol.reader), named after RFC 6455 sections.

The reader enforces only the rules that hold whatever the side's extensions: header shape
(5.2), control frame limits (5.5), the mask policy it is given (5.1) and a frame size limit.
"""

from __future__ import annotations

import pytest

from corral.exceptions import PayloadTooBig, ProtocolError
from corral.protocol.frames import Opcode, apply_mask, serialize_frame
from corral.protocol.reader import Chunk, FrameReader

MASK = bytes((0x37, 0xFA, 0x21, 0x3D))


def server() -> FrameReader:
    return FrameReader(require_mask=True)


def client() -> FrameReader:
    return FrameReader(require_mask=False)


def header(b0: int, length: int, mask: bytes | None = None) -> bytes:
    """A raw header with any first byte, so that invalid frames can be built."""
    mbit = 0x80 if mask is not None else 0
    if length < 126:
        out = bytes((b0, mbit | length))
    elif length < 1 << 16:
        out = bytes((b0, mbit | 126)) + length.to_bytes(2, "big")
    else:
        out = bytes((b0, mbit | 127)) + length.to_bytes(8, "big")
    return out + (mask or b"")


def feed_pieces(reader: FrameReader, data: bytes, size: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    for i in range(0, len(data), size):
        chunks += reader.feed(data[i : i + size])
    return chunks


def joined(chunks: list[Chunk]) -> bytes:
    return b"".join(c.data for c in chunks)


# -- 5.2 header parsing ---------------------------------------------------------------------


def test_5_7_unmasked_hello_on_a_client() -> None:
    chunks = client().feed(bytes((0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F)))
    assert chunks == [Chunk(Opcode.TEXT, True, 0, b"Hello", True, True, 5)]


def test_5_7_masked_hello_on_a_server() -> None:
    frame = bytes((0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58))
    assert server().feed(frame) == [Chunk(Opcode.TEXT, True, 0, b"Hello", True, True, 5)]


def test_5_7_fragmented_unmasked_text() -> None:
    data = bytes((0x01, 0x03, 0x48, 0x65, 0x6C, 0x80, 0x02, 0x6C, 0x6F))
    assert client().feed(data) == [
        Chunk(Opcode.TEXT, False, 0, b"Hel", True, True, 3),
        Chunk(Opcode.CONTINUATION, True, 0, b"lo", True, True, 2),
    ]


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("mask", [None, MASK])
def test_5_2_every_length_form_fed_all_at_once(length: int, mask: bytes | None) -> None:
    payload = bytes(i & 0xFF for i in range(length))
    reader = FrameReader(require_mask=mask is not None)
    chunks = reader.feed(serialize_frame(Opcode.BINARY, payload, mask=mask))
    assert chunks == [Chunk(Opcode.BINARY, True, 0, payload, True, True, length)]
    assert reader.error is None


@pytest.mark.parametrize("length", [0, 5, 126, 65536])
@pytest.mark.parametrize("mask", [None, MASK])
def test_5_2_header_split_at_every_byte(length: int, mask: bytes | None) -> None:
    payload = b"\x01" * length
    frame = serialize_frame(Opcode.BINARY, payload, mask=mask)
    head_size = len(frame) - length
    for cut in range(head_size):
        reader = FrameReader(require_mask=mask is not None)
        assert reader.feed(frame[:cut]) == []  # an incomplete header yields nothing
        chunks = reader.feed(frame[cut:])
        assert joined(chunks) == payload
        assert chunks[-1].last


def test_5_2_zero_length_data_frame_is_one_empty_chunk() -> None:
    chunks = client().feed(b"\x82\x00\x81\x00")
    assert chunks == [
        Chunk(Opcode.BINARY, True, 0, b"", True, True, 0),
        Chunk(Opcode.TEXT, True, 0, b"", True, True, 0),
    ]


def test_5_2_rsv_bits_are_reported_not_judged() -> None:
    """RSV policy depends on negotiated extensions, so it belongs to the connection."""
    for bits in (0x40, 0x20, 0x10, 0x70):
        chunks = client().feed(header(0x80 | bits | Opcode.TEXT, 1) + b"a")
        assert [c.rsv for c in chunks] == [bits]
        chunks = client().feed(header(0x80 | bits | Opcode.PING, 0))
        assert [(c.opcode, c.rsv) for c in chunks] == [(Opcode.PING, bits)]


def test_5_2_several_frames_in_one_feed() -> None:
    data = (
        serialize_frame(Opcode.TEXT, b"one", fin=False, mask=MASK)
        + serialize_frame(Opcode.PING, b"p", mask=MASK)
        + serialize_frame(Opcode.CONTINUATION, b"two", mask=MASK)
        + serialize_frame(Opcode.CLOSE, b"\x03\xe8", mask=MASK)
    )
    chunks = server().feed(data)
    assert [(c.opcode, c.fin, c.data) for c in chunks] == [
        (Opcode.TEXT, False, b"one"),
        (Opcode.PING, True, b"p"),
        (Opcode.CONTINUATION, True, b"two"),
        (Opcode.CLOSE, True, b"\x03\xe8"),
    ]


def test_5_2_non_minimal_length_encoding_is_tolerated() -> None:
    """5.2 asks the sender for the minimal length form; a receiver loses nothing by reading
    a longer one, so it is accepted."""
    assert joined(client().feed(b"\x82\x7e\x00\x03abc")) == b"abc"
    assert joined(client().feed(b"\x82\x7f" + (3).to_bytes(8, "big") + b"abc")) == b"abc"


# -- payload pieces, unmasked at the right offset ------------------------------------------


@pytest.mark.parametrize("piece_size", range(1, 10))
def test_5_3_payload_in_pieces_unmasked_at_every_offset(piece_size: int) -> None:
    payload = bytes(range(200, 256)) + bytes(range(37))
    frame = serialize_frame(Opcode.BINARY, payload, mask=MASK)
    chunks = feed_pieces(server(), frame, piece_size)
    assert joined(chunks) == payload
    assert [c.first for c in chunks].count(True) == 1
    assert chunks[0].first
    assert [c.last for c in chunks].count(True) == 1
    assert chunks[-1].last
    assert all(c.length == len(payload) and c.opcode == Opcode.BINARY for c in chunks)


def test_5_3_payload_split_at_every_position() -> None:
    payload = b"The quick brown fox jumps over the lazy dog"
    frame = serialize_frame(Opcode.TEXT, payload, mask=MASK)
    for cut in range(len(frame) + 1):
        reader = server()
        first = reader.feed(frame[:cut])
        second = reader.feed(frame[cut:])
        assert joined(first + second) == payload
        # Every byte of payload that has arrived is handed out at once.
        assert len(joined(first)) == max(0, cut - 6)


def test_5_3_pieces_of_one_frame_do_not_include_the_next_frame() -> None:
    a = serialize_frame(Opcode.BINARY, b"A" * 10, mask=MASK)
    b = serialize_frame(Opcode.BINARY, b"B" * 10, mask=b"\x01\x02\x03\x04")
    reader = server()
    chunks = reader.feed(a[:9]) + reader.feed(a[9:] + b[:13]) + reader.feed(b[13:])
    assert b"".join(c.data for c in chunks if c.data.startswith(b"A")) == b"A" * 10
    assert b"".join(c.data for c in chunks if c.data.startswith(b"B")) == b"B" * 10
    assert sum(c.last for c in chunks) == 2


def test_5_3_each_frame_uses_its_own_masking_key() -> None:
    keys = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", MASK, b"\x01\x02\x03\x04"]
    data = b"".join(serialize_frame(Opcode.BINARY, b"payload", mask=k) for k in keys)
    assert [c.data for c in server().feed(data)] == [b"payload"] * 4


# -- 5.5 control frames --------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_5_5_control_frames_come_out_whole(opcode: int) -> None:
    payload = b"\x03\xe8" + b"r" * 123
    frame = serialize_frame(opcode, payload, mask=MASK)
    reader = server()
    chunks: list[Chunk] = []
    for i in range(len(frame)):
        got = reader.feed(frame[i : i + 1])
        if i < len(frame) - 1:
            assert got == []
        chunks += got
    assert chunks == [Chunk(opcode, True, 0, payload, True, True, 125)]


def test_5_4_control_frame_between_fragments() -> None:
    data = (
        serialize_frame(Opcode.BINARY, b"ab", fin=False)
        + serialize_frame(Opcode.PING, b"ping")
        + serialize_frame(Opcode.CONTINUATION, b"cd")
    )
    chunks = feed_pieces(client(), data, 3)
    assert [c.data for c in chunks if c.opcode == Opcode.PING] == [b"ping"]
    assert joined([c for c in chunks if c.opcode != Opcode.PING]) == b"abcd"


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
@pytest.mark.parametrize("length", [126, 127, 65536])
def test_5_5_control_frame_longer_than_125_bytes(opcode: int, length: int) -> None:
    reader = client()
    # The header alone is enough to reject it: no need to wait for the payload.
    assert reader.feed(header(0x80 | opcode, length)) == []
    assert isinstance(reader.error, ProtocolError)
    assert reader.error.close_code == 1002


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_5_5_fragmented_control_frame(opcode: int) -> None:
    reader = client()
    assert reader.feed(header(opcode, 1) + b"x") == []
    assert isinstance(reader.error, ProtocolError)
    assert "fragmented" in str(reader.error)


def test_5_5_control_frame_of_125_bytes_is_fine() -> None:
    chunks = client().feed(serialize_frame(Opcode.PING, b"p" * 125))
    assert [len(c.data) for c in chunks] == [125]


# -- 5.2 reserved opcodes and the 64-bit length --------------------------------------------


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_5_2_reserved_opcode(opcode: int) -> None:
    reader = client()
    assert reader.feed(header(0x80 | opcode, 0)) == []
    assert type(reader.error) is ProtocolError
    assert reader.error.close_code == 1002
    assert reader.feed(serialize_frame(Opcode.TEXT, b"late")) == []  # the reader has stopped


@pytest.mark.parametrize("opcode", [3, 0xB])
def test_5_2_reserved_opcode_not_final(opcode: int) -> None:
    reader = client()
    assert reader.feed(header(opcode, 0)) == []
    assert isinstance(reader.error, ProtocolError)


def test_5_2_64_bit_length_with_the_high_bit_set() -> None:
    reader = client()
    assert reader.feed(b"\x82\x7f" + (1 << 63).to_bytes(8, "big")) == []
    assert isinstance(reader.error, ProtocolError)
    assert reader.error.close_code == 1002


def test_5_2_largest_64_bit_length_waits_for_the_payload() -> None:
    reader = client()
    chunks = reader.feed(b"\x82\x7f" + ((1 << 63) - 1).to_bytes(8, "big") + b"abc")
    assert reader.error is None
    assert joined(chunks) == b"abc"
    assert not chunks[-1].last
    assert chunks[0].length == (1 << 63) - 1


# -- 5.1 mask policy -------------------------------------------------------------------------


def test_5_1_server_rejects_an_unmasked_frame() -> None:
    reader = server()
    assert reader.feed(serialize_frame(Opcode.TEXT, b"Hello")) == []
    assert isinstance(reader.error, ProtocolError)
    assert reader.error.close_code == 1002


def test_5_1_client_rejects_a_masked_frame() -> None:
    reader = client()
    assert reader.feed(serialize_frame(Opcode.TEXT, b"Hello", mask=MASK)) == []
    assert isinstance(reader.error, ProtocolError)
    assert reader.error.close_code == 1002


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.CLOSE, Opcode.CONTINUATION])
def test_5_1_mask_policy_applies_to_every_opcode(opcode: int) -> None:
    reader = server()
    reader.feed(serialize_frame(opcode, b""))
    assert isinstance(reader.error, ProtocolError)
    reader = client()
    reader.feed(serialize_frame(opcode, b"", mask=MASK))
    assert isinstance(reader.error, ProtocolError)


# -- frame size limit (section 10.4) ---------------------------------------------------------


def test_10_4_max_frame_size_on_the_declared_length() -> None:
    reader = FrameReader(require_mask=False, max_frame_size=1000)
    # Only the header has arrived: the frame is refused before its payload is read.
    assert reader.feed(header(0x82, 1001)) == []
    assert isinstance(reader.error, PayloadTooBig)
    assert (reader.error.size, reader.error.max_size) == (1001, 1000)
    assert reader.error.close_code == 1009


def test_10_4_max_frame_size_is_inclusive() -> None:
    reader = FrameReader(require_mask=False, max_frame_size=1000)
    chunks = reader.feed(serialize_frame(Opcode.BINARY, b"x" * 1000))
    assert joined(chunks) == b"x" * 1000
    assert reader.error is None


def test_10_4_max_frame_size_may_change_between_frames() -> None:
    reader = FrameReader(require_mask=False, max_frame_size=None)
    assert joined(reader.feed(serialize_frame(Opcode.BINARY, b"x" * 500))) == b"x" * 500
    reader.max_frame_size = 100
    assert reader.feed(serialize_frame(Opcode.BINARY, b"x" * 101)) == []
    assert isinstance(reader.error, PayloadTooBig)


# -- errors after valid frames -----------------------------------------------------------------


def test_7_1_7_error_after_valid_frames_keeps_the_earlier_chunks() -> None:
    reader = server()
    data = (
        serialize_frame(Opcode.TEXT, b"first", mask=MASK)
        + serialize_frame(Opcode.PING, b"p", mask=MASK)
        + header(0x83, 0, MASK)  # reserved opcode
        + serialize_frame(Opcode.TEXT, b"never", mask=MASK)
    )
    chunks = reader.feed(data)
    assert [(c.opcode, c.data) for c in chunks] == [(Opcode.TEXT, b"first"), (Opcode.PING, b"p")]
    assert isinstance(reader.error, ProtocolError)
    assert reader.feed(serialize_frame(Opcode.TEXT, b"more", mask=MASK)) == []


def test_7_1_7_error_after_part_of_a_frame_keeps_that_part() -> None:
    reader = client()
    assert joined(reader.feed(header(0x02, 10) + b"01234")) == b"01234"
    chunks = reader.feed(b"56789" + header(0x89, 200))
    assert [c.data for c in chunks] == [b"56789"]
    assert chunks[0].last and not chunks[0].fin
    assert isinstance(reader.error, ProtocolError)


def test_5_2_garbage_after_error_is_ignored() -> None:
    reader = client()
    reader.feed(b"\x8f\x00")
    error = reader.error
    assert reader.feed(b"\x81\x01a" * 10) == []
    assert reader.error is error


def test_5_3_unmasked_payload_matches_apply_mask() -> None:
    payload = bytes(range(100))
    masked = apply_mask(payload, MASK)
    reader = server()
    chunks = reader.feed(header(0x82, 100, MASK) + masked[:33])
    chunks += reader.feed(masked[33:71])
    chunks += reader.feed(masked[71:])
    assert joined(chunks) == payload


# -- one parser: the reader takes over a parse_frames result ---------------------------------


@pytest.mark.parametrize("cut", [1, 2, 5, 6, 7, 8, 40, 70])
@pytest.mark.parametrize("limit", [None, 50])
def test_5_2_rest_of_a_parse_gives_what_feed_gives(cut: int, limit: int | None) -> None:
    """A connection parses a read itself and hands the parser's findings (the trailing
    header, or the error) to ``rest``: the same chunks and state as feeding the read."""
    from corral.accel import parse_frames

    data = (serialize_frame(Opcode.TEXT, b"ok", mask=MASK)
            + serialize_frame(Opcode.BINARY, bytes(range(60)), mask=MASK))
    read = data[: len(serialize_frame(Opcode.TEXT, b"ok", mask=MASK)) + cut]
    fed = FrameReader(require_mask=True, max_frame_size=limit)
    want = fed.feed(read)
    taken = FrameReader(require_mask=True, max_frame_size=limit)
    frames, pos, code, reason, head = parse_frames(read, 0, True, -1 if limit is None else limit)
    got = [Chunk(op, fin, rsv, p, True, True, len(p)) for op, fin, rsv, p in frames]
    got += taken.rest(read, pos, code, reason, head)
    assert got == want
    assert (taken.idle, repr(taken.error)) == (fed.idle, repr(fed.error))
    rest = data[len(read):]
    if fed.error is None:
        assert joined(taken.feed(rest)) == joined(fed.feed(rest))
    else:
        assert isinstance(taken.error, PayloadTooBig)
        assert "60 bytes, limit is 50" in str(taken.error)


def test_5_2_large_payload_streams_across_reads_and_a_control_frame_waits_whole() -> None:
    """Only an incomplete header or control frame waits for the next read; a large payload
    comes out as it arrives."""
    reader = client()
    big = serialize_frame(Opcode.BINARY, bytes(100_000))
    chunks = reader.feed(big[:9])  # the 10-byte header, less one byte
    assert chunks == [] and not reader.idle
    chunks = reader.feed(big[9:50_000])
    assert chunks[0].first and not chunks[0].last and len(chunks[0].data) == 50_000 - 10
    ping = serialize_frame(Opcode.PING, b"x" * 100)
    chunks = reader.feed(big[50_000:] + ping[:60])
    assert chunks[-1].last and joined(chunks) == bytes(100_000 - 49_990)
    assert reader.feed(ping[60:]) == [Chunk(Opcode.PING, True, 0, b"x" * 100, True, True, 100)]
    assert reader.idle
