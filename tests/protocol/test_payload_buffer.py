"""Reading a large payload straight into its message's buffer: ``Connection.payload_buffer``
and ``payload_received``, the sans-I/O half of corral's buffered reads (RFC 6455 sections 5).

- 5.2: the view is exactly the rest of a FIN frame's payload, inside the message's own buffer,
  offered from ``DIRECT_READ_MIN`` bytes on; what is read into it is unmasked in place (5.3);
- 5.4: feeding a stream through the view and a shared read buffer, in reads of any sizes,
  gives exactly the events of ``receive_data`` (hypothesis), also around fragments and
  control frames; nothing keeps a reference to what ``receive_data`` was given;
- 10.4: limits are decided on the declared lengths, before any buffer is made;
- 8.1: invalid UTF-8 fails the connection in the piece where it shows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import cycle
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.protocol.connection import (
    DIRECT_READ_MIN,
    PAYLOAD_BUFFER_SHARE,
    Connection,
    Side,
    State,
)
from corral.protocol.events import Event, Failed, Fragment, Message, Ping
from corral.protocol.extensions.permessage_deflate import PerMessageDeflate
from corral.protocol.frames import CloseCode, Opcode, serialize_frame

MASK = b"\x37\xfa\x21\x3d"
BIG = 200_000  # well over DIRECT_READ_MIN
EIGHTH = BIG // PAYLOAD_BUFFER_SHARE  # what must arrive before a message's buffer is made

SOME = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def payload_of(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that do not repeat with the mask's period."""
    return bytes((i * 7 + seed + (i >> 8)) & 0xFF for i in range(size))


def text_of(size: int) -> str:
    """About ``size`` bytes of UTF-8 with two-, three- and four-byte characters."""
    return ("héllo wörld ✓ 𝄞 " * (size // 20 + 1))[: size // 2]


def frame(opcode: int, payload: bytes, side: Side = Side.SERVER, fin: bool = True) -> bytes:
    """A frame as the peer of ``side`` sends it (a client masks, a server does not)."""
    return serialize_frame(opcode, payload, fin=fin, mask=MASK if side is Side.SERVER else None)


def feed_buffered(
    conn: Connection, stream: bytes, sizes: Iterator[int]
) -> tuple[list[Event], int]:
    """Feed ``stream`` as ``WebSocket.buffer_updated`` does, in reads of the next size each:
    into the payload view when there is one, else into a shared read buffer that is
    scribbled over after every use (so a reference kept to it would show). Returns the
    events and how many bytes went straight into a payload view."""
    events: list[Event] = []
    shared = bytearray(64 * 1024)
    pos = direct = 0
    while pos < len(stream):
        size = next(sizes)
        view = conn.payload_buffer()
        if view is not None:
            n = min(size, len(view), len(stream) - pos)
            view[:n] = stream[pos : pos + n]
            events += conn.payload_received(n)
            direct += n
        else:
            n = min(size, len(shared), len(stream) - pos)
            shared[:n] = stream[pos : pos + n]
            events += conn.receive_data(memoryview(shared)[:n])
            shared[:n] = b"\xaa" * n
        pos += n
    return events, direct


# -- 5.2 the view: exactly the rest of the frame, in the message's buffer ----------------------


def test_5_2_the_view_is_the_rest_of_the_frame_unmasked_in_place() -> None:
    payload = payload_of(BIG)
    wire = frame(Opcode.BINARY, payload)
    conn = Connection(Side.SERVER)
    head = len(wire) - BIG + EIGHTH  # the header and an eighth of the payload
    assert conn.receive_data(wire[:head]) == []
    assert conn.payload_pending
    view = conn.payload_buffer()
    assert view is not None and not view.readonly
    assert len(view) == BIG - EIGHTH
    view[:50_000] = wire[head : head + 50_000]
    assert conn.payload_received(50_000) == []
    view = conn.payload_buffer()
    assert view is not None and len(view) == BIG - EIGHTH - 50_000
    view[:] = wire[head + 50_000 :]
    events = conn.payload_received(len(view))
    assert events == [Message(payload)]
    assert isinstance(events[0], Message) and type(events[0].data) is bytes
    assert conn.payload_buffer() is None and not conn.payload_pending


def test_5_2_a_server_frame_on_a_client_is_read_the_same_way() -> None:
    payload = payload_of(BIG, 3)
    wire = frame(Opcode.BINARY, payload, Side.CLIENT)
    conn = Connection(Side.CLIENT)
    assert conn.receive_data(wire[: 10 + EIGHTH]) == []  # the header (10 bytes) and 1/8
    view = conn.payload_buffer()
    assert view is not None and len(view) == BIG - EIGHTH
    view[:] = wire[10 + EIGHTH :]
    assert conn.payload_received(BIG - EIGHTH) == [Message(payload)]


def test_10_a_header_alone_allocates_nothing_an_eighth_of_the_message_does() -> None:
    """A peer must send an eighth of what it declares before the message's buffer is made:
    stalled headers cannot make a server allocate max_message_size each."""
    wire = frame(Opcode.BINARY, payload_of(BIG))
    conn = Connection(Side.SERVER)
    conn.receive_data(wire[:14])  # 2 + 8 (64-bit length) + 4 (mask)
    assert conn.payload_buffer() is None and not conn.payload_pending
    conn.receive_data(wire[14 : 14 + EIGHTH - 1])
    assert conn.payload_buffer() is None
    conn.receive_data(wire[14 + EIGHTH - 1 : 14 + EIGHTH])
    view = conn.payload_buffer()
    assert view is not None and len(view) == BIG - EIGHTH


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_5_2_a_rest_under_direct_read_min_goes_through_receive_data(extra: int) -> None:
    size = DIRECT_READ_MIN + 10_000  # 10,000 bytes are over an eighth of it
    payload = payload_of(size)
    wire = frame(Opcode.BINARY, payload)
    header = len(wire) - size
    conn = Connection(Side.SERVER)
    conn.receive_data(wire[: header + 10_000 - extra])  # leaves DIRECT_READ_MIN + extra
    view = conn.payload_buffer()
    if extra < 0:
        assert view is None
        assert conn.receive_data(wire[header + 10_000 - extra :]) == [Message(payload)]
    else:
        assert view is not None and len(view) == DIRECT_READ_MIN + extra
        view[:] = wire[header + 10_000 - extra :]
        assert conn.payload_received(len(view)) == [Message(payload)]


def test_5_2_no_view_between_frames_nor_inside_a_control_frame() -> None:
    conn = Connection(Side.SERVER)
    assert conn.payload_buffer() is None
    assert conn.receive_data(frame(Opcode.BINARY, payload_of(BIG))) == [Message(payload_of(BIG))]
    assert conn.payload_buffer() is None  # whole: no buffer was needed
    assert conn.receive_data(frame(Opcode.PING, b"abc")[:4]) == []
    assert conn.payload_buffer() is None and not conn.payload_pending


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"receive_fragments": True}, id="receive_fragments"),
        pytest.param({"max_message_size": None}, id="no-message-limit"),
        pytest.param({"extensions": [PerMessageDeflate(True)]}, id="permessage-deflate"),
    ],
)
def test_5_2_no_view_when_the_message_is_transformed_streamed_or_unbounded(
    options: dict[str, Any],
) -> None:
    conn = Connection(Side.SERVER, **options)
    payload = payload_of(BIG)
    wire = frame(Opcode.BINARY, payload)
    events = conn.receive_data(wire[:5000])
    assert conn.payload_buffer() is None and not conn.payload_pending
    events += conn.receive_data(wire[5000:])
    pieces = [e.data for e in events if isinstance(e, Message | Fragment)]
    assert all(isinstance(p, bytes) for p in pieces) and len(pieces) == len(events)
    assert b"".join(pieces) == payload  # type: ignore[arg-type]


def test_5_2_text_read_in_place_is_decoded() -> None:
    text = text_of(BIG)
    wire = frame(Opcode.TEXT, text.encode())
    conn = Connection(Side.SERVER)
    events, direct = feed_buffered(conn, wire, cycle([1000, 70_001, 3]))
    assert events == [Message(text)]
    assert direct > 0


# -- 5.4 fragments and control frames around a large last fragment --------------------------------


def test_5_4_earlier_fragments_and_a_ping_then_a_large_last_fragment() -> None:
    first, last = payload_of(90_000, 1), payload_of(BIG, 2)
    wire = (
        frame(Opcode.BINARY, first, fin=False)
        + frame(Opcode.PING, b"mid")
        + frame(Opcode.CONTINUATION, last)
        + frame(Opcode.PING, b"after")
    )
    conn = Connection(Side.SERVER)
    events, direct = feed_buffered(conn, wire, cycle([4096]))
    assert events == [Ping(b"mid"), Message(first + last), Ping(b"after")]
    assert direct > BIG - 2 * DIRECT_READ_MIN
    # Both pings were answered, in order.
    assert b"".join(conn.data_to_send()) == (
        serialize_frame(Opcode.PONG, b"mid") + serialize_frame(Opcode.PONG, b"after")
    )


# -- 10.4 limits come first ------------------------------------------------------------------------


def test_10_4_a_frame_over_the_message_limit_fails_on_its_header() -> None:
    conn = Connection(Side.SERVER, max_message_size=BIG - 1)
    events = conn.receive_data(frame(Opcode.BINARY, payload_of(BIG))[:14])
    assert [type(e) for e in events] == [Failed]
    assert events[0].code == CloseCode.MESSAGE_TOO_BIG  # type: ignore[union-attr]
    assert conn.payload_buffer() is None and not conn.payload_pending


def test_10_4_a_last_fragment_over_the_sum_fails_on_its_header() -> None:
    conn = Connection(Side.SERVER, max_message_size=BIG)
    wire = frame(Opcode.BINARY, payload_of(BIG // 2), fin=False)
    wire += frame(Opcode.CONTINUATION, payload_of(BIG // 2 + 1))[:14]
    events = conn.receive_data(wire)
    assert [(type(e), getattr(e, "code", None)) for e in events] == [
        (Failed, CloseCode.MESSAGE_TOO_BIG)
    ]
    assert conn.payload_buffer() is None


def test_10_4_a_frame_over_the_frame_limit_fails_on_its_header() -> None:
    conn = Connection(Side.SERVER, max_frame_size=BIG - 1)
    events = conn.receive_data(frame(Opcode.BINARY, payload_of(BIG))[:14])
    assert [getattr(e, "code", None) for e in events] == [CloseCode.MESSAGE_TOO_BIG]
    assert conn.payload_buffer() is None


# -- 8.1 UTF-8 is checked in each piece ----------------------------------------------------------


def test_8_1_invalid_utf8_read_in_place_fails_in_that_piece() -> None:
    data = bytearray(text_of(BIG).encode())
    data[100_000] = 0xFF  # never valid in UTF-8
    wire = frame(Opcode.TEXT, bytes(data))
    conn = Connection(Side.SERVER)
    header = len(wire) - len(data)
    conn.receive_data(wire[: header + EIGHTH])
    view = conn.payload_buffer()
    assert view is not None
    view[:50_000] = wire[header + EIGHTH : header + EIGHTH + 50_000]
    assert conn.payload_received(50_000) == []
    view = conn.payload_buffer()
    assert view is not None
    view[:60_000] = wire[header + EIGHTH + 50_000 : header + EIGHTH + 110_000]
    events = conn.payload_received(60_000)  # the frame is not over, the message is failed
    assert [getattr(e, "code", None) for e in events] == [CloseCode.INVALID_DATA]
    assert conn.payload_buffer() is None
    assert conn.payload_received(10) == []  # nothing is processed after a failure
    assert b"".join(conn.data_to_send()) == serialize_frame(Opcode.CLOSE, b"\x03\xef")
    assert conn.state is State.CLOSED


# -- misuse ----------------------------------------------------------------------------------------


def test_payload_received_needs_a_view_to_fill() -> None:
    conn = Connection(Side.SERVER)
    with pytest.raises(ValueError, match="payload_buffer"):
        conn.payload_received(10)
    conn.receive_data(frame(Opcode.BINARY, payload_of(BIG))[: 14 + EIGHTH])
    with pytest.raises(ValueError, match="payload_buffer"):
        conn.payload_received(BIG - EIGHTH + 1)  # more than the frame's rest
    assert conn.payload_received(0) == []


def test_nothing_is_processed_after_eof() -> None:
    conn = Connection(Side.SERVER)
    conn.receive_data(frame(Opcode.BINARY, payload_of(BIG))[:14])
    conn.receive_eof()
    assert conn.payload_buffer() is None
    assert conn.payload_received(100) == []


# -- 5.4 any reads give the events of receive_data (hypothesis) ----------------------------------


@st.composite
def streams(draw: st.DrawFn, side: Side) -> bytes:
    """A valid stream from the peer of ``side``: small and large messages (some over
    DIRECT_READ_MIN, some just around it), some fragmented, pings between fragments."""
    out: list[bytes] = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        size = draw(st.one_of(
            st.sampled_from([0, 125, 126, DIRECT_READ_MIN - 1, DIRECT_READ_MIN,
                             DIRECT_READ_MIN + 1, BIG]),
            st.integers(min_value=0, max_value=3 * DIRECT_READ_MIN),
            st.integers(min_value=2 * DIRECT_READ_MIN, max_value=5 * DIRECT_READ_MIN),
        ))
        if draw(st.booleans()):
            opcode, payload = Opcode.TEXT, text_of(size).encode()
        else:
            opcode, payload = Opcode.BINARY, payload_of(size, draw(st.integers(0, 255)))
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=2)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            out.append(frame(opcode if i == 0 else Opcode.CONTINUATION, piece, side, last))
            if not last and draw(st.booleans()):
                out.append(frame(Opcode.PING, b"mid", side))
    if draw(st.booleans()):
        out.append(frame(Opcode.CLOSE, b"\x03\xe8bye", side))
        out.append(frame(Opcode.TEXT, b"ignored", side))
    return b"".join(out)


read_sizes = st.lists(
    st.one_of(
        st.sampled_from([1, 7, 4096, DIRECT_READ_MIN - 1, DIRECT_READ_MIN, 1 << 20]),
        st.integers(min_value=1, max_value=100_000),
    ),
    min_size=1,
    max_size=12,
)


def both_ways(
    side: Side, stream: bytes, sizes: Sequence[int], limit: int | None
) -> tuple[tuple[list[Event], bytes], tuple[list[Event], bytes]]:
    # A client masks what it sends (its pongs, its close): with the same key both ways.
    whole = Connection(side, max_message_size=limit, mask_key=lambda: MASK)
    expected = whole.receive_data(stream), b"".join(whole.data_to_send())
    buffered = Connection(side, max_message_size=limit, mask_key=lambda: MASK)
    events, _ = feed_buffered(buffered, stream, cycle(sizes))
    return expected, (events, b"".join(buffered.data_to_send()))


@SOME
@given(data=st.data(), side=st.sampled_from([Side.SERVER, Side.CLIENT]), sizes=read_sizes,
       limit=st.sampled_from([1 << 20, 100_000, None]))
def test_5_4_reads_of_any_sizes_through_the_view_give_the_same_events(
    data: st.DataObject, side: Side, sizes: list[int], limit: int | None
) -> None:
    expected, got = both_ways(side, data.draw(streams(side)), sizes, limit)
    assert got == expected


def normalized(events: list[Event]) -> list[object]:
    """Where a failure is noticed may change its wording, never its code."""
    return [(Failed, e.code) if isinstance(e, Failed) else e for e in events]


@SOME
@given(data=st.data(), sizes=read_sizes,
       flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=3))
def test_7_1_7_reads_through_the_view_do_not_change_how_a_corrupt_stream_fails(
    data: st.DataObject, sizes: list[int], flips: list[tuple[int, int]]
) -> None:
    stream = bytearray(data.draw(streams(Side.SERVER)))
    for position, xor in flips:
        stream[position % len(stream)] ^= xor
    (want, want_out), (got, got_out) = both_ways(Side.SERVER, bytes(stream), sizes, 1 << 20)
    assert normalized(got) == normalized(want)
    assert got_out == want_out
