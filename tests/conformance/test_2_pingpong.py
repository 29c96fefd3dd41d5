"""Autobahn section 2: pings and pongs (RFC 6455 sections 5.5.2 and 5.5.3).

"Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in response ... [with]
Application data identical to that found in the message body of the Ping frame." Control
frames carry at most 125 bytes (5.5). "A Pong frame MAY be sent unsolicited ... A response
to an unsolicited Pong frame is not expected."
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from corral.protocol.frames import Opcode

if TYPE_CHECKING:
    from conftest import RawClient

TEXT, CLOSE, PING, PONG = Opcode.TEXT, Opcode.CLOSE, Opcode.PING, Opcode.PONG


async def test_2_1_ping_without_payload(client: RawClient) -> None:
    await client.send_frame(PING)
    await client.expect_pong(b"")
    await client.close_handshake()


@pytest.mark.parametrize("length", range(126), ids=lambda n: f"len{n}")
async def test_2_2_ping_with_payload(client: RawClient, length: int) -> None:
    """2.2 / 2.4: every payload length from 0 to 125 bytes is echoed in the pong."""
    payload = bytes((65 + i % 26) for i in range(length))
    await client.send_frame(PING, payload)
    await client.expect_pong(payload)
    await client.close_handshake()


async def test_2_3_ping_with_binary_payload(client: RawClient) -> None:
    payload = bytes((0x00, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0x00, 0xFF))
    await client.send_frame(PING, payload)
    await client.expect_pong(payload)
    await client.close_handshake()


async def test_2_4_ping_with_125_random_bytes(client: RawClient) -> None:
    payload = os.urandom(125)
    await client.send_frame(PING, payload)
    await client.expect_pong(payload)
    await client.close_handshake()


async def test_2_5_ping_with_126_bytes_fails(client: RawClient) -> None:
    """5.5: "All control frames MUST have a payload length of 125 bytes or less"."""
    await client.send_frame(PING, b"\xfe" * 126)
    await client.expect_close(1002)


async def test_2_6_ping_125_bytes_in_octet_chops(client: RawClient) -> None:
    payload = os.urandom(125)
    await client.send_chops(client.frame(PING, payload), 1)
    await client.expect_pong(payload)
    await client.close_handshake()


async def test_2_7_unsolicited_pong_is_ignored(client: RawClient) -> None:
    await client.send_frame(PONG)
    await client.expect_quiet()
    await client.close_handshake()


async def test_2_8_unsolicited_pong_with_payload_is_ignored(client: RawClient) -> None:
    await client.send_frame(PONG, b"unsolicited pong payload")
    await client.expect_quiet()
    await client.close_handshake()


async def test_2_9_unsolicited_pong_then_ping(client: RawClient) -> None:
    """Only the ping is answered, with the ping's payload, not the pong's."""
    await client.send(
        client.frame(PONG, b"unsolicited pong payload") + client.frame(PING, b"ping payload")
    )
    await client.expect_pong(b"ping payload")
    await client.expect_quiet()
    await client.close_handshake()


async def test_2_10_ten_pings_in_one_write(client: RawClient) -> None:
    """Every ping gets its own pong, in order (5.5.3 lets an endpoint answer only the most
    recent ping when several are pending; corral answers each)."""
    payloads = [f"payload-{i}".encode() for i in range(10)]
    await client.send(b"".join(client.frame(PING, p) for p in payloads))
    for payload in payloads:
        await client.expect_pong(payload)
    await client.close_handshake()


async def test_2_11_ten_pings_in_octet_chops(client: RawClient) -> None:
    payloads = [f"payload-{i}".encode() for i in range(10)]
    await client.send_chops(b"".join(client.frame(PING, p) for p in payloads), 1)
    for payload in payloads:
        await client.expect_pong(payload)
    await client.close_handshake()


async def test_2_ping_between_messages(client: RawClient) -> None:
    """A ping between two messages is answered and the messages keep their order. Where
    the pong goes relative to the echoes is not the RFC's concern: the echoes are the
    application's answers, the pong the protocol's (corral sends pongs at once)."""
    await client.send(
        client.frame(TEXT, b"before") + client.frame(PING, b"p") + client.frame(TEXT, b"after")
    )
    frames = [await client.recv_frame() for _ in range(3)]
    assert [(f.opcode, f.payload) for f in frames if f.opcode == TEXT] == [
        (TEXT, b"before"),
        (TEXT, b"after"),
    ]
    assert [(f.opcode, f.payload) for f in frames if f.opcode != TEXT] == [(PONG, b"p")]
    await client.close_handshake()


async def test_2_no_pong_after_close(client: RawClient) -> None:
    """5.5.2: a pong is owed "unless it already received a Close frame" (Autobahn 7.1.3)."""
    await client.send(client.frame(CLOSE, client.close_payload(1000)) + client.frame(PING, b"x"))
    await client.expect_close(1000)
