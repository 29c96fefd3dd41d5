"""Autobahn section 3: reserved bits (RFC 6455 section 5.2).

"RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated that defines meanings for
non-zero values. If a nonzero value is received and none of the negotiated extensions
defines the meaning of such a nonzero value, the receiving endpoint MUST _Fail the WebSocket
Connection_." No extension is negotiated here, so any RSV bit fails with 1002. Frames before
the bad one are valid and are answered first (3.2-3.4); nothing after it is (no pong).

RSV values are written as Autobahn does: RSV1 = 4, RSV2 = 2, RSV3 = 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from corral.protocol.frames import Opcode

if TYPE_CHECKING:
    from conftest import Connect, RawClient

CONTINUATION, TEXT, BINARY = Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG
HELLO = b"Hello, world!"


async def test_3_1_text_with_rsv1(client: RawClient) -> None:
    await client.send_frame(TEXT, HELLO, rsv=1)
    await client.expect_close(1002)


async def test_3_2_message_before_bad_frame_is_echoed_first(client: RawClient) -> None:
    """All three frames in one write: the echo, then the failure, and no pong."""
    await client.send(
        client.frame(TEXT, HELLO) + client.frame(TEXT, HELLO, rsv=2) + client.frame(PING)
    )
    await client.expect_message(TEXT, HELLO)
    await client.expect_close(1002)


async def test_3_3_frame_wise(client: RawClient) -> None:
    await client.send_frame(TEXT, HELLO)
    await client.expect_message(TEXT, HELLO)
    await client.send_frame(TEXT, HELLO, rsv=3)
    await client.expect_close(1002)


async def test_3_4_octet_wise(client: RawClient) -> None:
    await client.send_chops(client.frame(TEXT, HELLO), 1)
    await client.expect_message(TEXT, HELLO)
    # The bad header is complete after its masking key; the ping bytes may or may not
    # be written before the server's close arrives.
    await client.send_chops(
        client.frame(TEXT, HELLO, rsv=4) + client.frame(PING), 1, until_answered=True
    )
    await client.expect_close(1002, allow_reset=True)


async def test_3_5_binary_with_rsv4(client: RawClient) -> None:
    await client.send_frame(BINARY, bytes(range(8)), rsv=4)
    await client.expect_close(1002)


async def test_3_6_ping_with_rsv5(client: RawClient) -> None:
    """No pong for a ping that fails the connection."""
    await client.send_frame(PING, HELLO, rsv=5)
    await client.expect_close(1002)


async def test_3_7_close_with_rsv6(client: RawClient) -> None:
    """A close frame with RSV bits is a protocol error, not a close handshake."""
    await client.send_frame(CLOSE, client.close_payload(1000), rsv=6)
    await client.expect_close(1002)


@pytest.mark.parametrize("rsv", range(1, 8))
@pytest.mark.parametrize(
    "opcode, payload",
    [
        pytest.param(TEXT, HELLO, id="text"),
        pytest.param(BINARY, b"\x00\xff", id="binary"),
        pytest.param(PING, b"ping", id="ping"),
        pytest.param(PONG, b"pong", id="pong"),
        pytest.param(CLOSE, b"\x03\xe8", id="close"),
    ],
)
async def test_3_every_rsv_combination(
    client: RawClient, opcode: int, payload: bytes, rsv: int
) -> None:
    await client.send_frame(opcode, payload, rsv=rsv)
    await client.expect_close(1002)


@pytest.mark.parametrize("rsv", [4, 2, 1])
async def test_3_rsv_on_continuation_frame(client: RawClient, rsv: int) -> None:
    """The RSV bits of every frame count, not only the first of a message."""
    await client.send(
        client.frame(TEXT, b"frag", fin=False) + client.frame(CONTINUATION, b"ment", rsv=rsv)
    )
    await client.expect_close(1002)


async def test_3_connection_still_served_after_failure(
    client: RawClient, connect: Connect
) -> None:
    await client.send_frame(TEXT, HELLO, rsv=7)
    await client.expect_close(1002)
    other = await connect()
    await other.send_frame(TEXT, HELLO)
    await other.expect_message(TEXT, HELLO)
    await other.close_handshake()
