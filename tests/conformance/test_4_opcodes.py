"""Autobahn section 4: reserved opcodes (RFC 6455 section 5.2).

"%x3-7 are reserved for further non-control frames", "%xB-F are reserved for further control
frames", and "If an unknown opcode is received, the receiving endpoint MUST _Fail the
WebSocket Connection_": close 1002. A valid message before the bad frame is still echoed;
the ping after it is never answered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from corral.protocol.frames import Opcode

if TYPE_CHECKING:
    from conftest import Connect, RawClient

TEXT, PING = Opcode.TEXT, Opcode.PING

# Autobahn 4.1.x (non-control, 3-7) and 4.2.x (control, 11-15): the first two of each
# range are sent alone (without and with a payload), the other three after a message.
ALONE = [
    pytest.param(3, b"", id="4.1.1-opcode3"),
    pytest.param(4, b"reserved payload", id="4.1.2-opcode4"),
    pytest.param(11, b"", id="4.2.1-opcode11"),
    pytest.param(12, b"reserved payload", id="4.2.2-opcode12"),
]
AFTER_MESSAGE = [
    pytest.param(5, b"", id="4.1.3-opcode5"),
    pytest.param(6, b"reserved payload", id="4.1.4-opcode6"),
    pytest.param(7, b"reserved payload", id="4.1.5-opcode7"),
    pytest.param(13, b"", id="4.2.3-opcode13"),
    pytest.param(14, b"reserved payload", id="4.2.4-opcode14"),
    pytest.param(15, b"reserved payload", id="4.2.5-opcode15"),
]
RESERVED = [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]


@pytest.mark.parametrize("opcode, payload", ALONE)
async def test_4_reserved_opcode(client: RawClient, opcode: int, payload: bytes) -> None:
    await client.send_frame(opcode, payload)
    await client.expect_close(1002)


@pytest.mark.parametrize("opcode, payload", AFTER_MESSAGE)
async def test_4_reserved_opcode_after_message(
    client: RawClient, opcode: int, payload: bytes
) -> None:
    """Message, bad frame and ping in one write: echo, close 1002, no pong."""
    await client.send(
        client.frame(TEXT, b"Hello, world!") + client.frame(opcode, payload) + client.frame(PING)
    )
    await client.expect_message(TEXT, b"Hello, world!")
    await client.expect_close(1002)


@pytest.mark.parametrize("opcode", RESERVED)
async def test_4_reserved_opcode_frame_wise(client: RawClient, opcode: int) -> None:
    """The same with each frame in its own write, the echo awaited before the bad frame."""
    await client.send_frame(TEXT, b"Hello, world!")
    await client.expect_message(TEXT, b"Hello, world!")
    await client.send_frame(opcode, b"x")
    await client.expect_close(1002)


@pytest.mark.parametrize("opcode", RESERVED)
async def test_4_reserved_opcode_inside_fragmented_message(
    client: RawClient, opcode: int
) -> None:
    await client.send(client.frame(TEXT, b"frag", fin=False) + client.frame(opcode, b"x"))
    await client.expect_close(1002)


@pytest.mark.parametrize("opcode", RESERVED)
async def test_4_reserved_opcode_without_fin(client: RawClient, opcode: int) -> None:
    await client.send_frame(opcode, b"x", fin=False)
    await client.expect_close(1002)


async def test_4_server_still_serves_after_reserved_opcodes(connect: Connect) -> None:
    for opcode in RESERVED:
        bad = await connect()
        await bad.send_frame(opcode)
        await bad.expect_close(1002)
    good = await connect()
    await good.send_frame(TEXT, b"still here")
    await good.expect_message(TEXT, b"still here")
    await good.close_handshake()
