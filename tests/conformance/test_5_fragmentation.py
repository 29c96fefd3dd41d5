"""Autobahn section 5: fragmentation (RFC 6455 section 5.4).

A message is a first frame (text or binary) with FIN clear, any number of continuation
frames, and a last one with FIN set. "Control frames themselves MUST NOT be fragmented" but
"MAY be injected in the middle of a fragmented message"; "the fragments of one message MUST
NOT be interleaved between the fragments of another message". A continuation with nothing
to continue and a new data frame inside a fragmented message fail the connection (1002).
Each sequence is sent in one write, frame by frame and octet by octet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from corral.protocol.frames import Opcode

if TYPE_CHECKING:
    from conftest import Connect, RawClient

CONTINUATION, TEXT, BINARY = Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG


def ways(*cases: str) -> list[object]:
    """Parameters naming the Autobahn case for each way of sending."""
    return [
        pytest.param(how, id=f"{case}-{how}")
        for case, how in zip(cases, ("one_write", "frame_wise", "octet_wise"), strict=True)
    ]


# -- 5.1, 5.2: control frames cannot be fragmented -----------------------------------------------


@pytest.mark.parametrize(
    "opcode", [pytest.param(PING, id="5.1-ping"), pytest.param(PONG, id="5.2-pong")]
)
async def test_5_1_fragmented_control_frame(client: RawClient, opcode: int) -> None:
    await client.send(
        client.frame(opcode, b"fragment1", fin=False) + client.frame(CONTINUATION, b"fragment2")
    )
    await client.expect_close(1002)


# -- 5.3-5.8: fragmented messages, with a ping in the middle --------------------------------------


@pytest.mark.parametrize("how", ways("5.3", "5.4", "5.5"))
async def test_5_3_text_in_two_fragments(client: RawClient, how: str) -> None:
    frames = [client.frame(TEXT, b"fragment1", fin=False), client.frame(CONTINUATION, b"fragment2")]
    await client.send_frames(frames, how)
    await client.expect_message(TEXT, b"fragment1fragment2")
    await client.close_handshake()


@pytest.mark.parametrize("how", ways("5.6", "5.7", "5.8"))
async def test_5_6_ping_between_fragments(client: RawClient, how: str) -> None:
    """The pong comes first: the message is not complete before its last fragment."""
    frames = [
        client.frame(TEXT, b"fragment1", fin=False),
        client.frame(PING, b"ping payload"),
        client.frame(CONTINUATION, b"fragment2"),
    ]
    await client.send_frames(frames, how)
    await client.expect_pong(b"ping payload")
    await client.expect_message(TEXT, b"fragment1fragment2")
    await client.close_handshake()


async def test_5_7_pong_answered_before_last_fragment_is_sent(client: RawClient) -> None:
    """The ping is answered while the message is still open, not when it ends."""
    await client.send(client.frame(TEXT, b"fragment1", fin=False) + client.frame(PING, b"p"))
    await client.expect_pong(b"p")
    await client.expect_quiet()
    await client.send_frame(CONTINUATION, b"fragment2")
    await client.expect_message(TEXT, b"fragment1fragment2")
    await client.close_handshake()


# -- 5.9-5.14: a continuation with nothing to continue --------------------------------------------


@pytest.mark.parametrize("how", ways("5.9", "5.10", "5.11"))
async def test_5_9_continuation_fin_without_message(client: RawClient, how: str) -> None:
    frames = [
        client.frame(CONTINUATION, b"fragment1"),
        client.frame(TEXT, b"fragment2"),
        client.frame(CONTINUATION, b"fragment3"),
    ]
    await client.send_frames(frames, how, until_answered=True)
    await client.expect_close(1002, allow_reset=how != "one_write")


@pytest.mark.parametrize("how", ways("5.12", "5.13", "5.14"))
async def test_5_12_continuation_without_message(client: RawClient, how: str) -> None:
    frames = [
        client.frame(CONTINUATION, b"fragment1", fin=False),
        client.frame(TEXT, b"fragment2"),
        client.frame(CONTINUATION, b"fragment3"),
    ]
    await client.send_frames(frames, how, until_answered=True)
    await client.expect_close(1002, allow_reset=how != "one_write")


async def test_5_15_continuation_after_a_complete_message(client: RawClient) -> None:
    """The first message is complete and valid: it is echoed before the failure."""
    await client.send(
        client.frame(TEXT, b"fragment1", fin=False)
        + client.frame(CONTINUATION, b"fragment2")
        + client.frame(CONTINUATION, b"fragment3", fin=False)
        + client.frame(TEXT, b"fragment4")
    )
    await client.expect_message(TEXT, b"fragment1fragment2")
    await client.expect_close(1002)


@pytest.mark.parametrize(
    "fin", [pytest.param(False, id="5.16-fin_clear"), pytest.param(True, id="5.17-fin_set")]
)
async def test_5_16_repeated_continuation_without_message(client: RawClient, fin: bool) -> None:
    sequence = (
        client.frame(CONTINUATION, b"fragment1", fin=fin)
        + client.frame(TEXT, b"fragment2", fin=False)
        + client.frame(CONTINUATION, b"fragment3")
    )
    await client.send(sequence * 2)
    await client.expect_close(1002)


# -- 5.18: a new message inside a fragmented one --------------------------------------------------


async def test_5_18_text_frame_inside_fragmented_text(client: RawClient) -> None:
    await client.send(
        client.frame(TEXT, b"fragment1", fin=False) + client.frame(TEXT, b"fragment2")
    )
    await client.expect_close(1002)


@pytest.mark.parametrize("fin", [True, False], ids=["fin_set", "fin_clear"])
@pytest.mark.parametrize("first, second", [(TEXT, BINARY), (BINARY, TEXT), (BINARY, BINARY)])
async def test_5_18_data_frame_inside_fragmented_message(
    client: RawClient, first: int, second: int, fin: bool
) -> None:
    await client.send(
        client.frame(first, b"one", fin=False) + client.frame(second, b"two", fin=fin)
    )
    await client.expect_close(1002)


# -- 5.19, 5.20: many fragments with pings between them -------------------------------------------


@pytest.mark.parametrize(
    "how", [pytest.param("one_write", id="5.19"), pytest.param("frame_wise", id="5.20")]
)
async def test_5_19_five_fragments_with_pings(client: RawClient, how: str) -> None:
    """Fragments 1-2 and a ping, a pause, then fragments 3-4, a ping and fragment 5: each pong
    arrives while the message is open, then the whole message."""
    parts = [f"fragment{i}".encode() for i in range(1, 6)]
    await client.send_frames(
        [
            client.frame(TEXT, parts[0], fin=False),
            client.frame(CONTINUATION, parts[1], fin=False),
            client.frame(PING, b"pongme 1!"),
        ],
        how,
    )
    await client.expect_pong(b"pongme 1!")
    await client.expect_quiet()
    await client.send_frames(
        [
            client.frame(CONTINUATION, parts[2], fin=False),
            client.frame(CONTINUATION, parts[3], fin=False),
            client.frame(PING, b"pongme 2!"),
            client.frame(CONTINUATION, parts[4]),
        ],
        how,
    )
    await client.expect_pong(b"pongme 2!")
    await client.expect_message(TEXT, b"".join(parts))
    await client.close_handshake()


# -- more fragment shapes -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["one_write", "frame_wise"])
async def test_5_binary_in_many_fragments(client: RawClient, how: str) -> None:
    payload = bytes(range(256)) * 4
    pieces = client.chops(payload, 10)
    frames = [client.frame(BINARY, pieces[0], fin=False)]
    frames += [client.frame(CONTINUATION, p, fin=False) for p in pieces[1:-1]]
    frames.append(client.frame(CONTINUATION, pieces[-1]))
    await client.send_frames(frames, how, pause=0.001)
    await client.expect_message(BINARY, payload)
    await client.close_handshake()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
async def test_5_empty_fragments(client: RawClient, opcode: int) -> None:
    """Autobahn 6.1.2 for both types: a message made of three empty fragments is empty."""
    await client.send(
        client.frame(opcode, b"", fin=False)
        + client.frame(CONTINUATION, b"", fin=False)
        + client.frame(CONTINUATION, b"")
    )
    await client.expect_message(opcode, b"")
    await client.close_handshake()


async def test_5_messages_after_fragmented_one(client: RawClient) -> None:
    """Once a fragmented message ends, the next message starts afresh."""
    await client.send(
        client.frame(BINARY, b"\x01", fin=False)
        + client.frame(CONTINUATION, b"\x02")
        + client.frame(TEXT, b"next")
        + client.frame(TEXT, b"a", fin=False)
        + client.frame(CONTINUATION, b"b")
    )
    await client.expect_message(BINARY, b"\x01\x02")
    await client.expect_message(TEXT, b"next")
    await client.expect_message(TEXT, b"ab")
    await client.close_handshake()


async def test_5_close_inside_fragmented_message(client: RawClient) -> None:
    """Autobahn 7.1.5: a close in the middle of a message closes; the rest is ignored."""
    await client.send(
        client.frame(TEXT, b"fragment1", fin=False)
        + client.frame(CLOSE, client.close_payload(1000))
        + client.frame(CONTINUATION, b"fragment2")
    )
    await client.expect_close(1000)


async def test_5_server_still_serves_after_failures(connect: Connect) -> None:
    bad = await connect()
    await bad.send_frame(CONTINUATION, b"nothing to continue")
    await bad.expect_close(1002)
    good = await connect()
    await good.send(good.frame(TEXT, b"a", fin=False) + good.frame(CONTINUATION, b"b"))
    await good.expect_message(TEXT, b"ab")
    await good.close_handshake()
