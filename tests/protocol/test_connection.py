"""The connection state machine (corral.protocol.connection), named after RFC 6455 sections.

Bytes go in through ``receive_data``; events and ``data_to_send`` come out. Every test runs
without an event loop; most run on both sides, with the peer's frames masked or not as
section 5.1 requires.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import pytest

from corral.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    PayloadTooBig,
    ProtocolError,
)
from corral.protocol.connection import FRAME_CHARGE, Connection, Side, State
from corral.protocol.events import CloseReceived, Event, Failed, Fragment, Message, Ping, Pong
from corral.protocol.extensions.base import Extension
from corral.protocol.frames import Frame, Opcode, apply_mask, serialize_frame
from corral.protocol.reader import FrameReader

CLIENT_MASK = bytes((0x37, 0xFA, 0x21, 0x3D))  # what our client connection masks with
PEER_MASK = bytes((0x0F, 0xF0, 0x55, 0xAA))  # what a peer client masks with


@pytest.fixture(params=[Side.SERVER, Side.CLIENT], ids=["server", "client"])
def side(request: pytest.FixtureRequest) -> Side:
    return request.param  # type: ignore[no-any-return]


def connect(side: Side, **options: object) -> Connection:
    return Connection(side, mask_key=lambda: CLIENT_MASK, **options)  # type: ignore[arg-type]


def peer_frame(side: Side, opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A frame as the peer of a ``side`` connection sends it: masked towards a server."""
    mask = PEER_MASK if side is Side.SERVER else None
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = bytes((b0, mbit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mbit | 127)) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + apply_mask(payload, mask)


def frame_header(side: Side, opcode: int, length: int, *, fin: bool = True) -> bytes:
    """Only the header of a frame the peer sends (the payload follows later, or never)."""
    full = peer_frame(side, opcode, b"\x00" * length, fin=fin)
    return full[: len(full) - length]


def sent_frames(conn: Connection) -> list[Frame]:
    """Decode what ``conn`` queued, checking the mask policy of its side on the way."""
    reader = FrameReader(require_mask=conn.side is Side.CLIENT)
    frames: list[Frame] = []
    parts: list[bytes] = []
    for chunk in reader.feed(b"".join(conn.data_to_send())):
        parts.append(chunk.data)
        if chunk.last:
            rsv = chunk.rsv
            frames.append(
                Frame(
                    chunk.opcode,
                    b"".join(parts),
                    chunk.fin,
                    bool(rsv & 0x40),
                    bool(rsv & 0x20),
                    bool(rsv & 0x10),
                )
            )
            parts = []
    assert reader.error is None
    return frames


def outcome(events: Sequence[Event]) -> list[tuple[type, int | None]]:
    """Each event's type, with the close code of the events that carry one."""
    return [(type(e), e.code if isinstance(e, Failed | CloseReceived) else None) for e in events]


def close_frames(conn: Connection) -> list[Frame]:
    return [f for f in sent_frames(conn) if f.opcode == Opcode.CLOSE]


# -- 5.6 data frames: whole messages ------------------------------------------------------------


def test_5_6_text_message(side: Side) -> None:
    conn = connect(side)
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, b"Hello")) == [Message("Hello")]
    assert conn.data_to_send() == []


def test_5_6_binary_message(side: Side) -> None:
    conn = connect(side)
    payload = bytes(range(256)) * 300
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, payload)) == [Message(payload)]


def test_5_6_empty_messages_keep_their_type(side: Side) -> None:
    conn = connect(side)
    events = conn.receive_data(
        peer_frame(side, Opcode.TEXT, b"") + peer_frame(side, Opcode.BINARY, b"")
    )
    assert events == [Message(""), Message(b"")]
    assert [type(e.data) for e in events if isinstance(e, Message)] == [str, bytes]


def test_5_6_several_messages_in_one_feed_and_one_message_over_many(side: Side) -> None:
    conn = connect(side)
    data = b"".join(peer_frame(side, Opcode.TEXT, f"m{i}".encode()) for i in range(5))
    assert conn.receive_data(data) == [Message(f"m{i}") for i in range(5)]
    frame = peer_frame(side, Opcode.BINARY, b"x" * 1000)
    events = []
    for i in range(0, len(frame), 7):
        events += conn.receive_data(frame[i : i + 7])
    assert events == [Message(b"x" * 1000)]


# -- 5.4 fragmentation ---------------------------------------------------------------------------


def test_5_4_fragmented_text_message(side: Side) -> None:
    conn = connect(side)
    data = (
        peer_frame(side, Opcode.TEXT, b"Hel", fin=False)
        + peer_frame(side, Opcode.CONTINUATION, b"", fin=False)
        + peer_frame(side, Opcode.CONTINUATION, b"lo")
    )
    assert conn.receive_data(data) == [Message("Hello")]


def test_5_4_fragmented_binary_message_fed_frame_by_frame(side: Side) -> None:
    conn = connect(side)
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, b"ab", fin=False)) == []
    assert conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"cd", fin=False)) == []
    assert conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"ef")) == [Message(b"abcdef")]


def test_5_4_control_frames_between_fragments(side: Side) -> None:
    conn = connect(side)
    data = (
        peer_frame(side, Opcode.TEXT, b"frag", fin=False)
        + peer_frame(side, Opcode.PING, b"ping")
        + peer_frame(side, Opcode.PONG, b"pong")
        + peer_frame(side, Opcode.CONTINUATION, b"ment")
    )
    assert conn.receive_data(data) == [Ping(b"ping"), Pong(b"pong"), Message("fragment")]
    assert sent_frames(conn) == [Frame(Opcode.PONG, b"ping")]


def test_5_4_continuation_without_a_message(side: Side) -> None:
    conn = connect(side)
    events = conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"x"))
    assert outcome(events) == [(Failed, 1002)]


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_5_4_new_message_inside_a_fragmented_one(side: Side, opcode: int) -> None:
    conn = connect(side)
    data = peer_frame(side, Opcode.BINARY, b"a", fin=False) + peer_frame(side, opcode, b"b")
    events = conn.receive_data(data)
    assert outcome(events) == [(Failed, 1002)]


def test_5_4_message_after_a_fragmented_one_starts_clean(side: Side) -> None:
    conn = connect(side)
    data = (
        peer_frame(side, Opcode.TEXT, b"a", fin=False)
        + peer_frame(side, Opcode.CONTINUATION, b"b")
        + peer_frame(side, Opcode.BINARY, b"c")
    )
    assert conn.receive_data(data) == [Message("ab"), Message(b"c")]


# -- 5.2 reserved bits -------------------------------------------------------------------------


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.CLOSE])
def test_5_2_rsv_bits_without_an_extension(side: Side, rsv: int, opcode: int) -> None:
    conn = connect(side)
    events = conn.receive_data(peer_frame(side, opcode, b"", rsv=rsv))
    assert outcome(events) == [(Failed, 1002)]
    assert [f.payload for f in close_frames(conn)] == [b"\x03\xea"]


# -- 8.1 text decoding and fail-fast UTF-8 (Autobahn 6.x) ------------------------------------


def test_8_1_multibyte_characters_split_across_frames(side: Side) -> None:
    conn = connect(side)
    text = "κόσμε \U0001f600 ✓"
    raw = text.encode()
    data = b"".join(
        peer_frame(
            side,
            Opcode.TEXT if i == 0 else Opcode.CONTINUATION,
            raw[i : i + 1],
            fin=i == len(raw) - 1,
        )
        for i in range(len(raw))
    )
    assert conn.receive_data(data) == [Message(text)]


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xce\xba\xe1"],
)
def test_8_1_invalid_utf8_fails_with_1007(side: Side, payload: bytes) -> None:
    conn = connect(side)
    events = conn.receive_data(peer_frame(side, Opcode.TEXT, payload))
    assert outcome(events) == [(Failed, 1007)]
    assert [f.payload for f in close_frames(conn)] == [b"\x03\xef"]
    assert conn.close_code == 1007


def test_8_1_invalid_utf8_in_binary_is_fine(side: Side) -> None:
    conn = connect(side)
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, b"\xff\xed\xa0")) == [
        Message(b"\xff\xed\xa0")
    ]


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xc3\x28", b"\xe0\x80", b"\xf0\x8f", b"\xf4\x90", b"\xf5"],
)
def test_6_4_invalid_prefix_fails_in_the_piece_where_it_appears(side: Side, bad: bytes) -> None:
    """The frame declares 100 bytes; the invalid prefix fails it before the rest arrives."""
    conn = connect(side)
    head = frame_header(side, Opcode.TEXT, 100)
    valid = "κόσμε".encode()
    piece = valid + bad
    mask = PEER_MASK if side is Side.SERVER else None
    wire = apply_mask(piece, mask) if mask else piece
    assert conn.receive_data(head + wire[: len(valid)]) == []
    events = conn.receive_data(wire[len(valid) :])
    assert outcome(events) == [(Failed, 1007)]


def test_6_4_surrogate_lead_fails_in_the_piece_where_it_appears(side: Side) -> None:
    """ED A0..BF can only start a UTF-16 surrogate: CPython's decoder would wait for the
    third byte, utf8.py fails at once."""
    conn = connect(side)
    mask = PEER_MASK if side is Side.SERVER else None
    payload = b"a\xed\xa0\x80" + b"b" * 96
    wire = apply_mask(payload, mask) if mask else payload
    head = frame_header(side, Opcode.TEXT, len(payload))
    assert conn.receive_data(head + wire[:2]) == []  # "a", ED: still a possible prefix
    events = conn.receive_data(wire[2:3])  # A0
    assert outcome(events) == [(Failed, 1007)]


def test_6_4_surrogate_lead_split_across_frames(side: Side) -> None:
    conn = connect(side)
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, b"ok\xed", fin=False)) == []
    events = conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"\xa0", fin=False))
    assert outcome(events) == [(Failed, 1007)]


def test_6_4_last_code_point_before_the_surrogates_is_valid(side: Side) -> None:
    conn = connect(side)
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, b"\xed", fin=False)) == []
    assert conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"\x9f", fin=False)) == []
    assert conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"\xbf")) == [Message("\ud7ff")]


def test_6_4_invalid_utf8_in_a_later_fragment_fails_before_the_message_ends(side: Side) -> None:
    conn = connect(side)
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, "κόσμε".encode(), fin=False)) == []
    events = conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"\xf4\x90", fin=False))
    assert outcome(events) == [(Failed, 1007)]


def test_8_1_truncated_character_at_the_end_of_the_message(side: Side) -> None:
    conn = connect(side)
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, b"ok\xe2\x9c", fin=False)) == []
    events = conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b""))
    assert outcome(events) == [(Failed, 1007)]


# -- 5.5.2 / 5.5.3 ping and pong ------------------------------------------------------------------


def test_5_5_2_ping_is_answered_with_a_pong_and_reported() -> None:
    server = connect(Side.SERVER)
    assert server.receive_data(peer_frame(Side.SERVER, Opcode.PING, b"Hello")) == [Ping(b"Hello")]
    # RFC 5.7: an unmasked pong from the server.
    assert server.data_to_send() == [b"\x8a\x05Hello"]

    client = connect(Side.CLIENT)
    assert client.receive_data(peer_frame(Side.CLIENT, Opcode.PING, b"Hello")) == [Ping(b"Hello")]
    # RFC 5.7: the masked pong of the example, with the example's key.
    assert client.data_to_send() == [
        bytes((0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58))
    ]


def test_5_5_2_empty_and_125_byte_pings(side: Side) -> None:
    conn = connect(side)
    events = conn.receive_data(
        peer_frame(side, Opcode.PING, b"") + peer_frame(side, Opcode.PING, b"p" * 125)
    )
    assert events == [Ping(b""), Ping(b"p" * 125)]
    assert sent_frames(conn) == [Frame(Opcode.PONG, b""), Frame(Opcode.PONG, b"p" * 125)]


def test_5_5_2_ping_is_answered_while_our_close_is_in_flight(side: Side) -> None:
    """5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in response,
    unless it already received a Close frame". Having sent one is no excuse, and a pong is
    a control frame, which 5.5.1 still allows after a close."""
    conn = connect(side)
    conn.send_close(1000)
    conn.data_to_send()
    assert conn.receive_data(peer_frame(side, Opcode.PING, b"late")) == [Ping(b"late")]
    assert sent_frames(conn) == [Frame(Opcode.PONG, b"late")]


def test_5_5_3_pong_is_reported_and_not_answered(side: Side) -> None:
    conn = connect(side)
    assert conn.receive_data(peer_frame(side, Opcode.PONG, b"unsolicited")) == [
        Pong(b"unsolicited")
    ]
    assert conn.data_to_send() == []


def test_5_5_ping_fed_byte_by_byte_is_one_event(side: Side) -> None:
    conn = connect(side)
    frame = peer_frame(side, Opcode.PING, b"abc")
    events = []
    for i in range(len(frame)):
        events += conn.receive_data(frame[i : i + 1])
    assert events == [Ping(b"abc")]


# -- 5.5.1 / 7 the closing handshake -----------------------------------------------------------


def test_5_5_1_close_echoes_code(side: Side) -> None:
    conn = connect(side)
    events = conn.receive_data(peer_frame(side, Opcode.CLOSE, b"\x03\xe9going away"))
    assert events == [CloseReceived(1001, "going away")]
    assert sent_frames(conn) == [Frame(Opcode.CLOSE, b"\x03\xe9")]
    assert conn.state is State.CLOSED
    assert (conn.close_code, conn.close_reason) == (1001, "going away")
    assert conn.close_received == (1001, "going away")


def test_5_5_1_close_without_code_is_1005_and_echoed_empty(side: Side) -> None:
    conn = connect(side)
    assert conn.receive_data(peer_frame(side, Opcode.CLOSE, b"")) == [CloseReceived(1005, "")]
    assert sent_frames(conn) == [Frame(Opcode.CLOSE, b"")]
    assert (conn.close_code, conn.close_reason) == (1005, "")


@pytest.mark.parametrize("code", [1000, 1003, 1011, 1014, 3000, 4999])
def test_7_4_close_codes_are_echoed(side: Side, code: int) -> None:
    conn = connect(side)
    assert conn.receive_data(peer_frame(side, Opcode.CLOSE, code.to_bytes(2, "big"))) == [
        CloseReceived(code, "")
    ]
    assert sent_frames(conn) == [Frame(Opcode.CLOSE, code.to_bytes(2, "big"))]


def test_7_1_2_we_close_first_open_closing_closed(side: Side) -> None:
    conn = connect(side)
    states = [conn.state]
    conn.send_close(1000, "done")
    states.append(conn.state)
    assert sent_frames(conn) == [Frame(Opcode.CLOSE, b"\x03\xe8done")]
    # Data still flows in until the peer's close arrives.
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, b"late")) == [Message("late")]
    assert conn.receive_data(peer_frame(side, Opcode.CLOSE, b"\x03\xe8")) == [
        CloseReceived(1000, "")
    ]
    states.append(conn.state)
    assert states == [State.OPEN, State.CLOSING, State.CLOSED]
    assert conn.data_to_send() == []  # no second close frame
    assert conn.close_sent == (1000, "done")


def test_7_1_2_send_close_is_sent_once(side: Side) -> None:
    conn = connect(side)
    conn.send_close(1000)
    conn.send_close(1001)
    assert sent_frames(conn) == [Frame(Opcode.CLOSE, b"\x03\xe8")]


def test_7_1_2_send_close_without_code(side: Side) -> None:
    conn = connect(side)
    conn.send_close(None)
    assert sent_frames(conn) == [Frame(Opcode.CLOSE, b"")]
    assert conn.close_sent == (1005, "")


def test_7_4_send_close_refuses_a_code_not_for_the_wire(side: Side) -> None:
    conn = connect(side)
    with pytest.raises(ValueError):
        conn.send_close(1006)
    assert conn.state is State.OPEN
    assert conn.data_to_send() == []


def test_5_5_1_nothing_is_processed_after_a_close_frame(side: Side) -> None:
    conn = connect(side)
    data = (
        peer_frame(side, Opcode.TEXT, b"before")
        + peer_frame(side, Opcode.CLOSE, b"\x03\xe8")
        + peer_frame(side, Opcode.TEXT, b"after")
        + peer_frame(side, Opcode.PING, b"after")
        + b"\xff\xff garbage"
    )
    assert conn.receive_data(data) == [Message("before"), CloseReceived(1000, "")]
    assert conn.receive_data(peer_frame(side, Opcode.PING, b"later")) == []
    assert sent_frames(conn) == [Frame(Opcode.CLOSE, b"\x03\xe8")]


def test_5_5_1_close_inside_a_fragmented_message(side: Side) -> None:
    conn = connect(side)
    data = peer_frame(side, Opcode.TEXT, b"half", fin=False) + peer_frame(side, Opcode.CLOSE, b"")
    assert conn.receive_data(data) == [CloseReceived(1005, "")]


def test_5_5_1_invalid_close_payloads(side: Side) -> None:
    for payload, code in [
        (b"\x03", 1002),  # one byte
        (b"\x03\xec", 1002),  # 1004 reserved
        (b"\x03\xed", 1002),  # 1005 never on the wire
        (b"\x03\xee", 1002),  # 1006 never on the wire
        (b"\x00\x00", 1002),
        (b"\x13\x88", 1002),  # 5000
        (b"\x03\xe8\xff", 1007),  # reason not UTF-8
    ]:
        conn = connect(side)
        events = conn.receive_data(peer_frame(side, Opcode.CLOSE, payload))
        assert outcome(events) == [(Failed, code)], payload
        assert close_frames(conn) == [Frame(Opcode.CLOSE, code.to_bytes(2, "big"))]
        assert conn.close_received is None
        assert conn.close_code == code


def test_7_1_5_close_code_before_any_close_is_1006(side: Side) -> None:
    conn = connect(side)
    assert (conn.close_code, conn.close_reason) == (1006, "")
    conn.receive_eof()
    assert conn.state is State.CLOSED
    assert (conn.close_code, conn.close_reason) == (1006, "")
    assert isinstance(conn.closed_exception(), ConnectionClosedError)
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, b"x")) == []


def test_7_1_5_closed_exception_follows_the_code(side: Side) -> None:
    conn = connect(side)
    conn.receive_data(peer_frame(side, Opcode.CLOSE, b"\x03\xe8bye"))
    exc = conn.closed_exception()
    assert isinstance(exc, ConnectionClosedOK)
    assert (exc.code, exc.reason) == (1000, "bye")


def test_5_5_1_send_after_close_received_raises(side: Side) -> None:
    conn = connect(side)
    conn.receive_data(peer_frame(side, Opcode.CLOSE, b"\x03\xe8bye"))
    conn.data_to_send()
    sends: list[Callable[[], None]] = [
        lambda: conn.send_message("x"),
        lambda: conn.send_message(b"x"),
        lambda: conn.send_fragment("x", False),
        lambda: conn.send_ping(),
        lambda: conn.send_pong(),
    ]
    for send in sends:
        with pytest.raises(ConnectionClosedOK) as info:
            send()
        assert (info.value.code, info.value.reason) == (1000, "bye")
    conn.send_close()  # a no-op, not an error
    assert conn.data_to_send() == []


def test_5_5_1_send_after_our_close_raises(side: Side) -> None:
    """5.5.1: "the endpoint MUST NOT send any further data frames" after a close."""
    conn = connect(side)
    conn.send_close(1001)
    with pytest.raises(ConnectionClosed) as info:
        conn.send_message("x")
    assert info.value.code == 1001
    assert len(conn.data_to_send()) == 1


def test_7_1_7_send_after_failure_raises(side: Side) -> None:
    conn = connect(side)
    conn.receive_data(peer_frame(side, Opcode.TEXT, b"\xff"))
    conn.data_to_send()  # the owed 1007 goes out; from then on nothing more may be sent
    with pytest.raises(ConnectionClosedError) as info:
        conn.send_message(b"x")
    assert info.value.code == 1007


def test_7_1_7_answers_before_the_owed_close(side: Side) -> None:
    """Replies to messages that preceded a bad frame go out before the failure's close."""
    conn = connect(side)
    events = conn.receive_data(
        peer_frame(side, Opcode.TEXT, b"ok") + peer_frame(side, Opcode.TEXT, b"\xff")
    )
    assert [type(e) for e in events] == [Message, Failed]
    assert conn.close_owed
    conn.send_message("ok")
    conn.send_close(1000)  # the failure's code wins over the application's
    assert conn.data_to_send(hold_close=True) and conn.close_owed
    assert [(f.opcode, f.payload) for f in sent_frames(conn)] == [
        (Opcode.CLOSE, (1007).to_bytes(2, "big"))
    ]
    assert conn.state is State.CLOSED and not conn.close_owed


# -- 7.1.7 failing the connection ----------------------------------------------------------------


def _failure_cases(side: Side) -> list[tuple[bytes, dict[str, object], int, type]]:
    return [
        (peer_frame(side, 0x3, b""), {}, 1002, ProtocolError),
        (peer_frame(side, Opcode.PING, b"", fin=False), {}, 1002, ProtocolError),
        (peer_frame(side, Opcode.TEXT, b"\xc3\x28"), {}, 1007, ProtocolError),
        (frame_header(side, Opcode.BINARY, 2000), {"max_message_size": 1000}, 1009, PayloadTooBig),
        (frame_header(side, Opcode.BINARY, 2000), {"max_frame_size": 1000}, 1009, PayloadTooBig),
    ]


@pytest.mark.parametrize("case", range(5))
def test_7_1_7_fail_maps_errors_to_close_codes(side: Side, case: int) -> None:
    data, options, code, error_type = _failure_cases(side)[case]
    conn = connect(side, **options)
    events = conn.receive_data(data)
    assert len(events) == 1
    failed = events[0]
    assert isinstance(failed, Failed)
    assert failed.code == code
    assert failed.reason  # the error's text is reported to the application...
    # ...but the close frame carries the code only, and is queued once.
    assert sent_frames(conn) == [Frame(Opcode.CLOSE, code.to_bytes(2, "big"))]
    assert conn.state is State.CLOSED
    assert isinstance(conn.failure, error_type)
    assert conn.failure is not None and conn.failure.close_code == code
    assert conn.close_code == code
    assert conn.close_reason == ""
    # After failing, nothing more is processed or sent.
    assert conn.receive_data(peer_frame(side, Opcode.PING, b"x") + b"\x8f\x00") == []
    conn.send_close(1000)
    assert conn.data_to_send() == []


def test_7_1_7_failure_keeps_events_before_it(side: Side) -> None:
    conn = connect(side)
    data = (
        peer_frame(side, Opcode.TEXT, b"good")
        + peer_frame(side, Opcode.PING, b"p")
        + peer_frame(side, 0xB, b"")
    )
    events = conn.receive_data(data)
    assert events[:2] == [Message("good"), Ping(b"p")]
    assert outcome(events[2:]) == [(Failed, 1002)]
    assert sent_frames(conn) == [Frame(Opcode.PONG, b"p"), Frame(Opcode.CLOSE, b"\x03\xea")]


def test_7_1_7_failure_while_closing_sends_no_second_close(side: Side) -> None:
    conn = connect(side)
    conn.send_close(1000)
    conn.data_to_send()
    events = conn.receive_data(peer_frame(side, Opcode.TEXT, b"\xff"))
    assert outcome(events) == [(Failed, 1007)]
    assert conn.data_to_send() == []
    assert conn.state is State.CLOSED


def test_5_1_mask_policy_of_each_side() -> None:
    server = connect(Side.SERVER)
    events = server.receive_data(serialize_frame(Opcode.TEXT, b"unmasked"))
    assert outcome(events) == [(Failed, 1002)]
    client = connect(Side.CLIENT)
    events = client.receive_data(serialize_frame(Opcode.TEXT, b"masked", mask=PEER_MASK))
    assert outcome(events) == [(Failed, 1002)]


# -- 10.4 size limits -----------------------------------------------------------------------------


def test_10_4_max_message_size_on_the_declared_length(side: Side) -> None:
    conn = connect(side, max_message_size=1000)
    events = conn.receive_data(frame_header(side, Opcode.BINARY, 1001))
    assert outcome(events) == [(Failed, 1009)]
    assert isinstance(conn.failure, PayloadTooBig)
    assert (conn.failure.size, conn.failure.max_size) == (1001, 1000)


def test_10_4_max_message_size_is_inclusive(side: Side) -> None:
    conn = connect(side, max_message_size=1000)
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, b"x" * 1000)) == [Message(b"x" * 1000)]
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, b"y" * 1000)) == [Message("y" * 1000)]


def test_10_4_max_message_size_across_fragments(side: Side) -> None:
    conn = connect(side, max_message_size=1000)
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, b"a" * 600, fin=False)) == []
    assert conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"b" * 400, fin=False)) == []
    # The next header alone pushes the message over the limit.
    events = conn.receive_data(frame_header(side, Opcode.CONTINUATION, 20))
    assert outcome(events) == [(Failed, 1009)]
    assert isinstance(conn.failure, PayloadTooBig)
    assert conn.failure.size == 1020


# -- fragments: any number, each continuation frame charged at least FRAME_CHARGE bytes ----------


def fragments(side: Side, pieces: Sequence[bytes], opcode: int = Opcode.BINARY) -> bytes:
    """One message from the peer, one frame per piece."""
    frames = [
        peer_frame(side, opcode if i == 0 else Opcode.CONTINUATION, piece,
                   fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    ]
    return b"".join(frames)


def test_10_4_fragments_of_the_charge_or_more_pass_at_their_size(side: Side) -> None:
    # 1000 fragments of 16 bytes: exactly the limit, whatever their number.
    conn = connect(side, max_message_size=16_000)
    payload = bytes(i % 251 for i in range(16_000))
    pieces = [payload[i : i + FRAME_CHARGE] for i in range(0, len(payload), FRAME_CHARGE)]
    assert conn.receive_data(fragments(side, pieces)) == [Message(payload)]


def test_10_4_short_continuations_count_as_the_charge(side: Side) -> None:
    # The first frame counts its real size, each continuation at least FRAME_CHARGE.
    conn = connect(side, max_message_size=1 + 99 * FRAME_CHARGE)
    assert conn.receive_data(fragments(side, [b"x"] * 100)) == [Message(b"x" * 100)]
    conn = connect(side, max_message_size=1 + 99 * FRAME_CHARGE)
    events = conn.receive_data(fragments(side, [b"x"] * 101))
    assert outcome(events) == [(Failed, 1009)]
    assert isinstance(conn.failure, PayloadTooBig)
    assert conn.failure.size == 1 + 100 * FRAME_CHARGE
    assert f"under {FRAME_CHARGE} count as {FRAME_CHARGE}" in str(conn.failure)


def test_10_4_a_single_short_frame_is_not_charged(side: Side) -> None:
    conn = connect(side, max_message_size=3)
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, b"abc")) == [Message("abc")]
    assert outcome(conn.receive_data(fragments(side, [b"ab", b"c"]))) == [(Failed, 1009)]


def test_10_4_endless_empty_continuations_end_in_1009(side: Side) -> None:
    """The hostile case: a message that never ends, in frames that carry nothing."""
    conn = connect(side)  # the default limit, 1 MiB
    assert conn.max_message_size == 1 << 20
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, b"", fin=False)) == []
    empty = peer_frame(side, Opcode.CONTINUATION, b"", fin=False)
    allowed = (1 << 20) // FRAME_CHARGE
    assert conn.receive_data(empty * allowed) == []
    assert outcome(conn.receive_data(empty * 10)) == [(Failed, 1009)]
    assert [frame.payload[:2] for frame in close_frames(conn)] == [(1009).to_bytes(2, "big")]


def test_10_4_hundred_thousand_one_byte_fragments(side: Side) -> None:
    """The other hostile case: refused at the default limit, delivered under a larger one."""
    wire = fragments(side, [bytes((i % 251,)) for i in range(100_000)])
    conn = connect(side)
    assert outcome(conn.receive_data(wire)) == [(Failed, 1009)]
    conn = connect(side, max_message_size=100_000 * FRAME_CHARGE)
    assert conn.receive_data(wire) == [Message(bytes(i % 251 for i in range(100_000)))]


def test_10_4_the_charge_is_the_same_fed_in_pieces(side: Side) -> None:
    # The streaming reader (frames split across reads) charges as the whole-frame path does.
    wire = fragments(side, [b"x"] * 101)
    conn = connect(side, max_message_size=1 + 99 * FRAME_CHARGE)
    events = [event for i in range(len(wire)) for event in conn.receive_data(wire[i : i + 1])]
    assert outcome(events) == [(Failed, 1009)]
    assert isinstance(conn.failure, PayloadTooBig)
    assert conn.failure.size == 1 + 100 * FRAME_CHARGE


def test_10_4_max_message_size_counts_each_message_separately(side: Side) -> None:
    conn = connect(side, max_message_size=100)
    data = b"".join(peer_frame(side, Opcode.BINARY, b"z" * 100) for _ in range(5))
    assert conn.receive_data(data) == [Message(b"z" * 100)] * 5


def test_10_4_no_message_size_limit(side: Side) -> None:
    conn = connect(side, max_message_size=None)
    payload = b"q" * (3 << 20)
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, payload)) == [Message(payload)]


def test_10_4_max_message_size_changed_at_run_time(side: Side) -> None:
    conn = connect(side, max_message_size=1000)
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, b"a" * 500, fin=False)) == []
    conn.max_message_size = 2000
    assert conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"b" * 1000, fin=False)) == []
    conn.max_message_size = 1600
    events = conn.receive_data(frame_header(side, Opcode.CONTINUATION, 101))
    assert outcome(events) == [(Failed, 1009)]


def test_10_4_max_message_size_lowered_between_messages(side: Side) -> None:
    conn = connect(side, max_message_size=None)
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, b"a" * 5000)) == [Message(b"a" * 5000)]
    conn.max_message_size = 10
    events = conn.receive_data(peer_frame(side, Opcode.TEXT, b"b" * 11))
    assert outcome(events) == [(Failed, 1009)]


def test_10_4_max_frame_size_property(side: Side) -> None:
    conn = connect(side, max_frame_size=100)
    assert conn.max_frame_size == 100
    conn.max_frame_size = 10
    events = conn.receive_data(peer_frame(side, Opcode.BINARY, b"x" * 11))
    assert outcome(events) == [(Failed, 1009)]


def test_10_4_control_frames_do_not_count_towards_the_message(side: Side) -> None:
    conn = connect(side, max_message_size=40)
    data = (
        peer_frame(side, Opcode.BINARY, b"a" * 20, fin=False)
        + peer_frame(side, Opcode.PING, b"p" * 100)
        + peer_frame(side, Opcode.CONTINUATION, b"b" * 20)
    )
    assert conn.receive_data(data) == [Ping(b"p" * 100), Message(b"a" * 20 + b"b" * 20)]


# -- receive_fragments: streaming messages --------------------------------------------------------


def test_5_4_fragments_mode_reports_each_piece(side: Side) -> None:
    conn = connect(side, receive_fragments=True)
    data = (
        peer_frame(side, Opcode.BINARY, b"ab", fin=False)
        + peer_frame(side, Opcode.CONTINUATION, b"cd", fin=False)
        + peer_frame(side, Opcode.CONTINUATION, b"ef")
    )
    assert conn.receive_data(data) == [
        Fragment(b"ab", False),
        Fragment(b"cd", False),
        Fragment(b"ef", True),
    ]


def test_5_4_fragments_mode_streams_a_single_large_frame(side: Side) -> None:
    conn = connect(side, receive_fragments=True)
    frame = peer_frame(side, Opcode.BINARY, b"0123456789")
    head = len(frame) - 10
    assert conn.receive_data(frame[: head + 4]) == [Fragment(b"0123", False)]
    assert conn.receive_data(frame[head + 4 :]) == [Fragment(b"456789", True)]


def test_5_4_fragments_mode_never_splits_a_character(side: Side) -> None:
    conn = connect(side, receive_fragments=True)
    data = (
        peer_frame(side, Opcode.TEXT, b"a\xc3", fin=False)  # "a" and half of "é"
        + peer_frame(side, Opcode.CONTINUATION, b"\xa9\xf0\x9f", fin=False)
        + peer_frame(side, Opcode.CONTINUATION, b"\x98", fin=False)  # still incomplete
        + peer_frame(side, Opcode.CONTINUATION, b"\x80!")
    )
    events = conn.receive_data(data)
    assert events == [Fragment("a", False), Fragment("é", False), Fragment("\U0001f600!", True)]
    assert all(isinstance(e, Fragment) and isinstance(e.data, str) for e in events)


def test_5_4_fragments_mode_empty_final_frame(side: Side) -> None:
    conn = connect(side, receive_fragments=True)
    data = peer_frame(side, Opcode.TEXT, b"ab", fin=False) + peer_frame(
        side, Opcode.CONTINUATION, b""
    )
    assert conn.receive_data(data) == [Fragment("ab", False), Fragment("", True)]
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, b"")) == [Fragment(b"", True)]


def test_8_1_fragments_mode_still_fails_bad_utf8(side: Side) -> None:
    conn = connect(side, receive_fragments=True)
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, b"ok", fin=False)) == [
        Fragment("ok", False)
    ]
    events = conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"\xed\xa0", fin=False))
    assert outcome(events) == [(Failed, 1007)]


def test_10_4_fragments_mode_keeps_the_message_limit(side: Side) -> None:
    conn = connect(side, receive_fragments=True, max_message_size=40)
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, b"a" * 20, fin=False)) == [
        Fragment(b"a" * 20, False)
    ]
    events = conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"b" * 21))
    assert outcome(events) == [(Failed, 1009)]


def test_5_4_fragments_mode_switched_at_run_time(side: Side) -> None:
    conn = connect(side)
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, b"whole")) == [Message("whole")]
    conn.receive_fragments = True
    assert conn.receive_data(peer_frame(side, Opcode.TEXT, b"piece")) == [Fragment("piece", True)]


# -- sending --------------------------------------------------------------------------------------


def test_5_3_server_frames_are_unmasked() -> None:
    conn = connect(Side.SERVER)
    conn.send_message("Hello")
    conn.send_message(b"\x01\x02")
    conn.send_ping(b"p")
    conn.send_pong(b"q")
    conn.send_close(1000)
    assert conn.data_to_send() == [
        b"\x81\x05Hello",
        b"\x82\x02\x01\x02",
        b"\x89\x01p",
        b"\x8a\x01q",
        b"\x88\x02\x03\xe8",
    ]


def test_5_3_client_frames_are_masked_with_the_injected_key() -> None:
    conn = connect(Side.CLIENT)
    conn.send_message("Hello")
    # RFC 5.7: the masked "Hello" example.
    assert conn.data_to_send() == [
        bytes((0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58))
    ]


def test_5_3_client_takes_a_fresh_key_for_every_frame() -> None:
    keys = (bytes((i, i + 1, i + 2, i + 3)) for i in itertools.count(0, 4))
    conn = Connection(Side.CLIENT, mask_key=lambda: next(keys))
    conn.send_message(b"a")
    conn.send_ping(b"b")
    conn.send_fragment("c", False)
    conn.send_fragment("d", True)
    conn.send_close(1000)
    out = conn.data_to_send()
    assert [frame[2:6] for frame in out] == [
        bytes((i, i + 1, i + 2, i + 3)) for i in range(0, 20, 4)
    ]
    assert all(frame[1] & 0x80 for frame in out)


def test_5_3_client_pong_and_close_echo_are_masked() -> None:
    conn = connect(Side.CLIENT)
    conn.receive_data(
        peer_frame(Side.CLIENT, Opcode.PING, b"x")
        + peer_frame(Side.CLIENT, Opcode.CLOSE, b"\x03\xe8")
    )
    out = conn.data_to_send()
    assert out == [
        serialize_frame(Opcode.PONG, b"x", mask=CLIENT_MASK),
        serialize_frame(Opcode.CLOSE, b"\x03\xe8", mask=CLIENT_MASK),
    ]


def test_5_6_send_message_types(side: Side) -> None:
    conn = connect(side)
    conn.send_message("κόσμε")
    conn.send_message(b"bin")
    # The docstring promises any bytes-like object; the annotation says only bytes.
    conn.send_message(bytearray(b"arr"))  # type: ignore[arg-type]
    conn.send_message(memoryview(b"view"))  # type: ignore[arg-type]
    conn.send_message("")
    assert sent_frames(conn) == [
        Frame(Opcode.TEXT, "κόσμε".encode()),
        Frame(Opcode.BINARY, b"bin"),
        Frame(Opcode.BINARY, b"arr"),
        Frame(Opcode.BINARY, b"view"),
        Frame(Opcode.TEXT, b""),
    ]


def test_5_2_send_large_message_uses_the_64_bit_length(side: Side) -> None:
    conn = connect(side)
    payload = b"\x00" * 70000
    conn.send_message(payload)
    assert conn.out_split is (side is Side.SERVER)
    out = conn.data_to_send()
    assert not conn.out_split
    if side is Side.SERVER:  # header and payload apart: the payload is not copied
        header, body = out
        assert len(header) == 10 and body is payload
    frame = b"".join(out)
    assert frame[1] & 0x7F == 127
    assert sent_frames_from(side, frame) == [Frame(Opcode.BINARY, payload)]


@pytest.mark.parametrize("size", [8191, 8192, 65535, 65536])
def test_5_2_split_frames_carry_the_shortest_length(size: int) -> None:
    conn = connect(Side.SERVER)
    conn.send_message("é" * (size // 2) + "a" * (size % 2))
    frame = b"".join(conn.data_to_send())
    assert frame == serialize_frame(Opcode.TEXT, ("é" * (size // 2) + "a" * (size % 2)).encode())


def sent_frames_from(side: Side, data: bytes) -> list[Frame]:
    reader = FrameReader(require_mask=side is Side.CLIENT)
    return [Frame(c.opcode, c.data, c.fin) for c in reader.feed(data)]


def test_5_4_send_fragment_rules(side: Side) -> None:
    conn = connect(side)
    conn.send_fragment("Hel", False)
    with pytest.raises(TypeError):
        conn.send_fragment(b"bytes", False)  # a text message continues as text
    with pytest.raises(RuntimeError):
        conn.send_message("interleaved")  # 5.4: messages are not interleaved
    conn.send_fragment("", False)
    conn.send_fragment("lo", True)
    conn.send_message(b"next")  # the fragmented message is over
    conn.send_fragment(b"one", True)  # a single final fragment is a whole frame
    assert sent_frames(conn) == [
        Frame(Opcode.TEXT, b"Hel", fin=False),
        Frame(Opcode.CONTINUATION, b"", fin=False),
        Frame(Opcode.CONTINUATION, b"lo", fin=True),
        Frame(Opcode.BINARY, b"next"),
        Frame(Opcode.BINARY, b"one"),
    ]


def test_5_4_send_fragment_binary_rejects_text(side: Side) -> None:
    conn = connect(side)
    conn.send_fragment(b"\x00", False)
    with pytest.raises(TypeError):
        conn.send_fragment("text", True)
    conn.send_fragment(bytearray(b"\x01"), True)  # type: ignore[arg-type]
    assert sent_frames(conn) == [
        Frame(Opcode.BINARY, b"\x00", fin=False),
        Frame(Opcode.CONTINUATION, b"\x01"),
    ]


def test_5_4_fragments_we_send_are_read_back_as_one_message(side: Side) -> None:
    sender = connect(side)
    receiver = connect(Side.CLIENT if side is Side.SERVER else Side.SERVER)
    sender.send_fragment("κό", False)
    sender.send_ping(b"between")  # 5.4: control frames may be injected between fragments
    sender.send_fragment("σμε", True)
    events = receiver.receive_data(b"".join(sender.data_to_send()))
    assert events == [Ping(b"between"), Message("κόσμε")]


def test_5_5_control_payloads_we_send_are_limited(side: Side) -> None:
    conn = connect(side)
    conn.send_ping(b"x" * 125)
    conn.send_pong(b"y" * 125)
    with pytest.raises(ValueError):
        conn.send_ping(b"x" * 126)
    with pytest.raises(ValueError):
        conn.send_pong(b"y" * 126)
    with pytest.raises(ValueError):
        conn.send_close(1000, "r" * 124)
    assert [len(f.payload) for f in sent_frames(conn)] == [125, 125]


def test_data_to_send_hands_out_frames_once(side: Side) -> None:
    conn = connect(side)
    assert not conn.has_data_to_send
    conn.send_message("a")
    conn.send_message("b")
    assert conn.has_data_to_send
    assert len(conn.data_to_send()) == 2
    assert not conn.has_data_to_send
    assert conn.data_to_send() == []


# -- 9 extensions: RSV bits given a meaning ------------------------------------------------------


class ReverseExtension(Extension):
    """Test-only: a frame with RSV1 set carries its payload reversed. Pieces of a frame are
    buffered so that the whole frame can be reversed when it ends."""

    name = "x-reverse"
    rsv_bits = 0x40

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.budgets: list[int | None] = []

    def decode(
        self,
        opcode: int,
        rsv: int,
        data: bytes,
        *,
        frame_start: bool,
        frame_end: bool,
        fin: bool,
        max_size: int | None,
    ) -> bytes:
        self.budgets.append(max_size)
        if not rsv & 0x40:
            return data
        self.pending.append(data)
        if not frame_end:
            return b""
        whole = b"".join(self.pending)
        self.pending = []
        return whole[::-1]

    def encode(
        self, opcode: int, data: bytes, *, fin: bool, compress: bool = True
    ) -> tuple[bytes, int]:
        return data[::-1], 0x40


def test_9_extension_allows_its_rsv_bit_and_decodes(side: Side) -> None:
    conn = connect(side, extensions=[ReverseExtension()])
    data = peer_frame(side, Opcode.TEXT, "κόσμε".encode()[::-1], rsv=0x40)
    assert conn.receive_data(data) == [Message("κόσμε")]


def test_9_extension_decodes_a_frame_that_arrives_in_pieces(side: Side) -> None:
    conn = connect(side, extensions=[ReverseExtension()])
    frame = peer_frame(side, Opcode.BINARY, b"0123456789"[::-1], rsv=0x40)
    events = []
    for i in range(len(frame)):
        events += conn.receive_data(frame[i : i + 1])
    assert events == [Message(b"0123456789")]


def test_9_extension_passes_frames_without_its_bit_through(side: Side) -> None:
    conn = connect(side, extensions=[ReverseExtension()])
    data = peer_frame(side, Opcode.TEXT, b"ab", fin=False, rsv=0x40) + peer_frame(
        side, Opcode.CONTINUATION, b"cd"
    )
    assert conn.receive_data(data) == [Message("bacd")]


def test_9_extension_encodes_outgoing_frames(side: Side) -> None:
    conn = connect(side, extensions=[ReverseExtension()])
    conn.send_message("Hello")
    conn.send_ping(b"ping")  # control frames never go through extensions
    assert sent_frames(conn) == [
        Frame(Opcode.TEXT, b"olleH", rsv1=True),
        Frame(Opcode.PING, b"ping"),
    ]


def test_9_extension_round_trip_between_two_connections(side: Side) -> None:
    sender = connect(side, extensions=[ReverseExtension()])
    other = Side.CLIENT if side is Side.SERVER else Side.SERVER
    receiver = connect(other, extensions=[ReverseExtension()])
    sender.send_message("round trip")
    sender.send_fragment(b"ab", False)
    sender.send_fragment(b"cd", True)
    assert receiver.receive_data(b"".join(sender.data_to_send())) == [
        Message("round trip"),
        Message(b"abcd"),
    ]


@pytest.mark.parametrize("rsv", [0x20, 0x10, 0x60])
def test_5_2_extension_does_not_allow_other_rsv_bits(side: Side, rsv: int) -> None:
    conn = connect(side, extensions=[ReverseExtension()])
    events = conn.receive_data(peer_frame(side, Opcode.TEXT, b"x", rsv=rsv))
    assert outcome(events) == [(Failed, 1002)]


def test_5_5_extension_bit_on_a_control_frame_still_fails(side: Side) -> None:
    conn = connect(side, extensions=[ReverseExtension()])
    events = conn.receive_data(peer_frame(side, Opcode.PING, b"x", rsv=0x40))
    assert outcome(events) == [(Failed, 1002)]


def test_8_1_extension_output_is_checked_as_utf8(side: Side) -> None:
    conn = connect(side, extensions=[ReverseExtension()])
    events = conn.receive_data(peer_frame(side, Opcode.TEXT, b"\xa9\xc3", rsv=0x40))
    assert events == [Message("é")]
    events = conn.receive_data(peer_frame(side, Opcode.TEXT, b"\xc3\xa9", rsv=0x40))
    assert outcome(events) == [(Failed, 1007)]


def test_10_4_extension_output_counts_towards_the_limit(side: Side) -> None:
    ext = ReverseExtension()
    conn = connect(side, extensions=[ext], max_message_size=40)
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, b"x" * 20, fin=False, rsv=0x40)) == []
    assert ext.budgets == [40]  # the extension is told how much the message may still grow
    events = conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"y" * 21))
    assert ext.budgets == [40, 20]
    assert outcome(events) == [(Failed, 1009)]


def test_10_4_extension_frames_are_charged_too(side: Side) -> None:
    # A short continuation's charge comes off the budget the extension is given, and a
    # flood of them fails before any is decoded.
    ext = ReverseExtension()
    conn = connect(side, extensions=[ext], max_message_size=40)
    assert conn.receive_data(peer_frame(side, Opcode.BINARY, b"x" * 20, fin=False, rsv=0x40)) == []
    assert conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"", fin=False)) == []
    assert ext.budgets == [40, 20 - FRAME_CHARGE]
    events = conn.receive_data(peer_frame(side, Opcode.CONTINUATION, b"", fin=False))
    assert ext.budgets == [40, 20 - FRAME_CHARGE]
    assert outcome(events) == [(Failed, 1009)]
