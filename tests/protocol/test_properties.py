"""Properties of the sans-I/O core (hypothesis), named after RFC 6455 sections.

- 5.2: parse(serialize(frame)) == frame, whatever the opcode, payload, FIN, RSV1 and mask;
- 5.2/5.4: how a byte stream is cut into reads never changes the events it produces;
- 5.4: however a message is fragmented, the same message comes out;
- 7.1.7: no input makes ``receive_data`` raise: the peer can only get the connection failed;
- 5.3: masking is an involution and can be applied piece by piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.protocol.connection import Connection, Side, State
from corral.protocol.events import (
    CloseReceived,
    Event,
    Failed,
    Fragment,
    Message,
    Ping,
    Pong,
)
from corral.protocol.frames import (
    CONTROL_OPCODES,
    Frame,
    Opcode,
    apply_mask,
    serialize_frame,
)
from corral.protocol.reader import FrameReader

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

masks = st.binary(min_size=4, max_size=4)
sides = st.sampled_from([Side.SERVER, Side.CLIENT])

# Mostly short payloads, sometimes long enough for the 16-bit and 64-bit length forms.
data_payloads = st.one_of(
    st.binary(max_size=200),
    st.integers(min_value=126, max_value=70_000).map(lambda n: bytes(i & 0xFF for i in range(n))),
)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    opcode = draw(st.sampled_from(sorted(Opcode)))
    if opcode in CONTROL_OPCODES:
        # 5.5: control frames are final and carry at most 125 bytes.
        return Frame(opcode, draw(st.binary(max_size=125)), True, draw(st.booleans()))
    return Frame(opcode, draw(data_payloads), draw(st.booleans()), draw(st.booleans()))


def cut(data: bytes, points: Sequence[int]) -> list[bytes]:
    """Split ``data`` at the given positions (taken modulo its length, in order)."""
    if not data:
        return [data]
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(bounds)]


cut_points = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=30)


def read_frames(reader: FrameReader, pieces: Sequence[bytes]) -> list[Frame]:
    out: list[Frame] = []
    parts: list[bytes] = []
    for piece in pieces:
        for chunk in reader.feed(piece):
            parts.append(chunk.data)
            if chunk.last:
                out.append(
                    Frame(
                        chunk.opcode,
                        b"".join(parts),
                        chunk.fin,
                        bool(chunk.rsv & 0x40),
                        bool(chunk.rsv & 0x20),
                        bool(chunk.rsv & 0x10),
                    )
                )
                parts = []
    assert reader.error is None
    return out


def normalized(events: list[Event]) -> list[object]:
    """Events with a failure's free-text reason left out: where a failure is noticed may
    change its wording, never its code."""
    return [(Failed, e.code) if isinstance(e, Failed) else e for e in events]


# -- 5.2 parse(serialize(frame)) == frame -------------------------------------------------------


@FAST
@given(frame=frames(), mask=st.one_of(st.none(), masks), points=cut_points)
def test_5_2_parse_of_serialize_is_identity(
    frame: Frame, mask: bytes | None, points: list[int]
) -> None:
    wire = serialize_frame(frame.opcode, frame.payload, fin=frame.fin, rsv1=frame.rsv1, mask=mask)
    reader = FrameReader(require_mask=mask is not None)
    assert read_frames(reader, cut(wire, points)) == [frame]


@FAST
@given(
    stream=st.lists(st.tuples(frames(), masks), max_size=8),
    points=cut_points,
)
def test_5_2_a_stream_of_frames_parses_back_in_order(
    stream: list[tuple[Frame, bytes]], points: list[int]
) -> None:
    wire = b"".join(
        serialize_frame(f.opcode, f.payload, fin=f.fin, rsv1=f.rsv1, mask=m) for f, m in stream
    )
    reader = FrameReader(require_mask=True)
    assert read_frames(reader, cut(wire, points)) == [f for f, _ in stream]


# -- any chunking gives the same events -----------------------------------------------------------


@st.composite
def message_streams(draw: st.DrawFn) -> bytes:
    """A valid masked client stream: messages cut into fragments, control frames between."""
    out: list[bytes] = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        kind = draw(st.sampled_from(["text", "binary", "ping", "pong"]))
        if kind in ("ping", "pong"):
            opcode = Opcode.PING if kind == "ping" else Opcode.PONG
            out.append(serialize_frame(opcode, draw(st.binary(max_size=125)), mask=draw(masks)))
            continue
        if kind == "text":
            payload = draw(st.text(max_size=60)).encode()
        else:
            payload = draw(st.binary(max_size=300))
        pieces = cut(payload, draw(st.lists(st.integers(min_value=0), max_size=4)))
        first = Opcode.TEXT if kind == "text" else Opcode.BINARY
        for i, piece in enumerate(pieces):
            opcode = first if i == 0 else Opcode.CONTINUATION
            out.append(serialize_frame(opcode, piece, fin=i == len(pieces) - 1, mask=draw(masks)))
            if draw(st.booleans()) and i < len(pieces) - 1:
                out.append(serialize_frame(Opcode.PING, b"mid", mask=draw(masks)))
    if draw(st.booleans()):
        out.append(serialize_frame(Opcode.CLOSE, b"\x03\xe8bye", mask=draw(masks)))
        out.append(serialize_frame(Opcode.TEXT, b"ignored", mask=draw(masks)))
    return b"".join(out)


def run(conn: Connection, pieces: Sequence[bytes]) -> tuple[list[Event], bytes]:
    events: list[Event] = []
    for piece in pieces:
        events += conn.receive_data(piece)
    return events, b"".join(conn.data_to_send())


@FAST
@given(stream=message_streams(), points=cut_points)
def test_5_4_any_chunking_gives_the_same_events(stream: bytes, points: list[int]) -> None:
    whole = run(Connection(Side.SERVER), [stream])
    chunked = run(Connection(Side.SERVER), cut(stream, points))
    assert chunked == whole
    assert not any(isinstance(e, Failed) for e in whole[0])


@FAST
@given(stream=message_streams())
def test_5_4_byte_by_byte_equals_all_at_once(stream: bytes) -> None:
    whole = run(Connection(Side.SERVER), [stream])
    single = run(Connection(Side.SERVER), [stream[i : i + 1] for i in range(len(stream))])
    assert single == whole


@FAST
@given(
    stream=message_streams(),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=4),
    points=cut_points,
)
def test_7_1_7_chunking_does_not_change_how_a_corrupt_stream_fails(
    stream: bytes, flips: list[tuple[int, int]], points: list[int]
) -> None:
    data = bytearray(stream)
    for position, xor in flips:
        if data:
            data[position % len(data)] ^= xor
    corrupt = bytes(data)
    whole_events, whole_out = run(Connection(Side.SERVER), [corrupt])
    chunk_events, chunk_out = run(Connection(Side.SERVER), cut(corrupt, points))
    assert normalized(chunk_events) == normalized(whole_events)
    assert chunk_out == whole_out


# -- 5.4 fragmentation never changes the message ------------------------------------------------


@FAST
@given(
    side=sides,
    message=st.one_of(st.text(max_size=200), st.binary(max_size=400)),
    points=st.lists(st.integers(min_value=0), max_size=12),
    mask=masks,
    pings=st.lists(st.booleans(), max_size=12),
)
def test_5_4_fragmenting_a_message_gives_the_same_message(
    side: Side, message: str | bytes, points: list[int], mask: bytes, pings: list[bool]
) -> None:
    payload = message.encode() if isinstance(message, str) else message
    first = Opcode.TEXT if isinstance(message, str) else Opcode.BINARY
    peer_mask = mask if side is Side.SERVER else None
    pieces = cut(payload, points)  # may split a character between frames
    wire = b""
    expected: list[Event] = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        wire += serialize_frame(first if i == 0 else 0, piece, fin=last, mask=peer_mask)
        if not last and i < len(pings) and pings[i]:
            wire += serialize_frame(Opcode.PING, bytes([i]), mask=peer_mask)
            expected.append(Ping(bytes([i])))
    expected.append(Message(message))
    conn = Connection(side)
    assert conn.receive_data(wire) == expected

    streaming = Connection(side, receive_fragments=True)
    events = [e for e in streaming.receive_data(wire) if isinstance(e, Fragment)]
    assert [e.last for e in events] == [False] * (len(events) - 1) + [True]
    pieces_out = [e.data for e in events]
    joined = "".join(pieces_out) if isinstance(message, str) else b"".join(pieces_out)  # type: ignore[arg-type]
    assert joined == message
    assert all(type(e.data) is type(message) for e in events)


# -- 7.1.7 garbage never raises -------------------------------------------------------------------


EVENT_TYPES = (Message, Fragment, Ping, Pong, CloseReceived, Failed)


@FAST
@given(
    side=sides,
    garbage=st.binary(max_size=600),
    prefix=message_streams(),
    points=cut_points,
    fragments=st.booleans(),
    limit=st.sampled_from([None, 0, 10, 1 << 20]),
)
def test_7_1_7_garbage_never_raises(
    side: Side,
    garbage: bytes,
    prefix: bytes,
    points: list[int],
    fragments: bool,
    limit: int | None,
) -> None:
    conn = Connection(side, receive_fragments=fragments, max_message_size=limit)
    data = (prefix if side is Side.SERVER else b"") + garbage
    events: list[Event] = []
    for piece in cut(data, points):
        events += conn.receive_data(piece)  # must never raise
    assert all(isinstance(e, EVENT_TYPES) for e in events)
    ends = [i for i, e in enumerate(events) if isinstance(e, Failed | CloseReceived)]
    # At most one ending event, and it is the last one.
    assert ends in ([], [len(events) - 1])
    # Whatever happened, at most one close frame goes out, and it parses.
    reader = FrameReader(require_mask=side is Side.CLIENT)
    sent = reader.feed(b"".join(conn.data_to_send()))
    assert reader.error is None
    closes = [c.data for c in sent if c.opcode == Opcode.CLOSE]
    assert len(closes) <= 1
    if ends:
        # Once what is queued has been handed out, the connection is closed; a failure
        # sends its own code (nothing else was sent before it here).
        assert conn.state is State.CLOSED
        last = events[-1]
        if isinstance(last, Failed):
            assert closes == [last.code.to_bytes(2, "big")]


# -- 5.3 masking ---------------------------------------------------------------------------------


@FAST
@given(data=st.binary(max_size=1000), mask=masks, offset=st.integers(0, 1 << 40))
def test_5_3_apply_mask_is_an_involution(data: bytes, mask: bytes, offset: int) -> None:
    once = apply_mask(data, mask, offset)
    assert len(once) == len(data)
    assert apply_mask(once, mask, offset) == data


@FAST
@given(data=st.binary(max_size=1000), mask=masks, points=cut_points)
def test_5_3_masking_piece_by_piece_equals_masking_whole(
    data: bytes, mask: bytes, points: list[int]
) -> None:
    pieces = cut(data, points)
    offset = 0
    out = b""
    for piece in pieces:
        out += apply_mask(piece, mask, offset)
        offset += len(piece)
    assert out == apply_mask(data, mask)
    assert out == bytes(b ^ mask[i % 4] for i, b in enumerate(data))
