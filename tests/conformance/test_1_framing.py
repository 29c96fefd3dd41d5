"""Autobahn section 1: framing of text and binary messages of every length encoding.

RFC 6455 section 5.2: lengths 0-125 fit in the 7-bit field, 126-65535 take the 16-bit
extended length, larger ones the 64-bit one. Each message is sent in one write and in small
chops (the server must reassemble a frame from any split of the byte stream) and must come
back byte for byte with the same opcode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from corral.protocol.frames import Opcode

if TYPE_CHECKING:
    from conftest import RawClient

TEXT, BINARY = Opcode.TEXT, Opcode.BINARY

LENGTHS = [
    pytest.param(0, id="0"),
    pytest.param(125, id="125"),
    pytest.param(126, id="126"),
    pytest.param(127, id="127"),
    pytest.param(128, id="128"),
    pytest.param(65535, id="65535"),
    pytest.param(65536, id="65536"),
]
# 1.1.8 / 1.2.8 send 64 KiB in chops of 997 octets; here every length is sent both ways.
SENDING = [pytest.param(None, id="one_write"), pytest.param(997, id="chops_997")]

_UNIT = "ascii κόσμε € 𤭢 ".encode()


def text_payload(length: int) -> bytes:
    """Valid UTF-8 of exactly ``length`` bytes, with multi-byte characters throughout."""
    whole = _UNIT * (length // len(_UNIT))
    return whole + b"*" * (length - len(whole))


_PERIOD = bytes((i * 7) & 0xFF for i in range(251))  # a prime period: no alignment with chops


def binary_payload(length: int) -> bytes:
    return (_PERIOD * (length // len(_PERIOD) + 1))[:length]


async def send(client: RawClient, data: bytes, chop: int | None) -> None:
    if chop is None:
        await client.send(data)
    else:
        await client.send_chops(data, chop)


@pytest.mark.parametrize("chop", SENDING)
@pytest.mark.parametrize("length", LENGTHS)
async def test_1_1_text_message(client: RawClient, length: int, chop: int | None) -> None:
    """1.1.1-1.1.8: a text message of ``length`` bytes is echoed as text."""
    payload = text_payload(length)
    await send(client, client.frame(TEXT, payload), chop)
    await client.expect_message(TEXT, payload)
    await client.close_handshake()


@pytest.mark.parametrize("chop", SENDING)
@pytest.mark.parametrize("length", LENGTHS)
async def test_1_2_binary_message(client: RawClient, length: int, chop: int | None) -> None:
    """1.2.1-1.2.8: a binary message of ``length`` bytes is echoed as binary."""
    payload = binary_payload(length)
    await send(client, client.frame(BINARY, payload), chop)
    await client.expect_message(BINARY, payload)
    await client.close_handshake()


BIG = 16 * 2**20


@pytest.mark.parametrize(
    "opcode, chop",
    [
        pytest.param(TEXT, None, id="text-one_write"),
        pytest.param(BINARY, 65521, id="binary-chops_65521"),
    ],
)
async def test_1_16MiB_message(client: RawClient, opcode: int, chop: int | None) -> None:
    """A 16 MiB message (64-bit length), the largest the echo server's limit lets through."""
    payload = text_payload(BIG) if opcode == TEXT else binary_payload(BIG)
    await send(client, client.frame(opcode, payload), chop)
    await client.expect_message(opcode, payload, timeout=10)
    await client.close_handshake()


async def test_1_messages_in_one_write(client: RawClient) -> None:
    """Frames are delimited by their lengths alone: several in one write come back in order."""
    messages = [(TEXT, text_payload(n)) for n in (0, 5, 126)]
    messages += [(BINARY, binary_payload(n)) for n in (1, 65536, 3)]
    await client.send(b"".join(client.frame(op, data) for op, data in messages))
    for op, data in messages:
        await client.expect_message(op, data)
    await client.close_handshake()


async def test_1_frame_split_at_every_byte(client: RawClient) -> None:
    """A frame with a 16-bit length, written one byte at a time."""
    payload = text_payload(300)
    await client.send_chops(client.frame(TEXT, payload), 1)
    await client.expect_message(TEXT, payload)
    await client.close_handshake()


def test_payload_builders() -> None:
    assert len(text_payload(1000)) == 1000
    text_payload(1000).decode()
    assert len(binary_payload(300)) == 300
