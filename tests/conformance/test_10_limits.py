"""Corral's section 10: size limits and framing errors Autobahn leaves out.

The echo server allows messages of up to ``MAX`` bytes (16 MiB + 1 KiB). A frame declaring
more is refused with 1009 as soon as its header is complete, before any payload is sent
(reading it first would let a peer make the server swallow gigabytes); a fragmented message
is refused on the header of the fragment that pushes its total over the limit. RFC 6455 5.2:
"the most significant bit MUST be 0" in a 64-bit length; 5.1: "The server MUST close the
connection upon receiving a frame that is not masked" (close 1002, as 7.4.1 allows). After
each refusal the server still serves new connections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from corral.protocol.frames import Opcode

if TYPE_CHECKING:
    from conftest import Connect, RawClient

CONTINUATION, TEXT, BINARY, PING = Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY, Opcode.PING
MAX = 16 * 2**20 + 1024
KEY = b"\x37\xfa\x21\x3d"


async def still_serving(connect: Connect) -> None:
    """A new connection is accepted and echoes."""
    other = await connect()
    await other.send_frame(TEXT, b"still serving")
    await other.expect_message(TEXT, b"still serving")
    await other.close_handshake()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("length", [MAX + 1, 2**32, 2**63 - 1], ids=["max+1", "4GiB", "2^63-1"])
async def test_10_1_message_over_the_limit_refused_on_its_header(
    client: RawClient, connect: Connect, opcode: int, length: int
) -> None:
    """Only the header (with its masking key) is sent: the close comes without the payload."""
    await client.send(client.frame_header(opcode, length, key=KEY))
    await client.expect_close(1009)
    await still_serving(connect)


async def test_10_1_message_at_the_limit_is_echoed(client: RawClient) -> None:
    payload = bytes(range(256)) * (MAX // 256) + b"\x00" * (MAX % 256)
    await client.send(client.frame(BINARY, payload))
    await client.expect_message(BINARY, payload, timeout=10)
    await client.close_handshake()


async def test_10_2_fragments_summing_over_the_limit(client: RawClient, connect: Connect) -> None:
    """Each fragment is under the limit, their sum is not: the second fragment's header is
    enough to refuse the message."""
    half = MAX // 2 + 1
    await client.send(client.frame(BINARY, b"\xab" * half, fin=False))
    await client.expect_quiet()
    await client.send(client.frame_header(CONTINUATION, half, key=KEY))
    await client.expect_close(1009)
    await still_serving(connect)


async def test_10_2_many_small_fragments_over_the_limit(client: RawClient) -> None:
    """The total counts across any number of fragments."""
    piece = b"\xcd" * 2**20
    frames = [client.frame(BINARY, piece, fin=False)]
    frames += [client.frame(CONTINUATION, piece, fin=False) for _ in range(15)]
    await client.send(b"".join(frames))
    await client.expect_quiet()
    await client.send(client.frame(CONTINUATION, b"\xcd" * 1024, fin=False))
    await client.expect_quiet()  # exactly at the limit so far
    await client.send(client.frame_header(CONTINUATION, 1, fin=True, key=KEY))
    await client.expect_close(1009)


async def test_10_2_limit_applies_per_message(client: RawClient) -> None:
    """Two messages that together exceed the limit are both fine."""
    payload = b"\x01" * (MAX // 2 + 1)
    await client.send(client.frame(BINARY, payload) + client.frame(BINARY, payload))
    await client.expect_message(BINARY, payload, timeout=10)
    await client.expect_message(BINARY, payload, timeout=10)
    await client.close_handshake()


@pytest.mark.parametrize("high", [2**63, 2**64 - 1], ids=["2^63", "2^64-1"])
async def test_10_3_64_bit_length_with_high_bit(
    client: RawClient, connect: Connect, high: int
) -> None:
    """5.2: the most significant bit of a 64-bit length MUST be 0: a protocol error (1002),
    not a size problem (1009)."""
    await client.send(client.frame_header(BINARY, high, key=KEY))
    await client.expect_close(1002)
    await still_serving(connect)


@pytest.mark.parametrize(
    "opcode, payload",
    [
        pytest.param(TEXT, b"unmasked", id="text"),
        pytest.param(BINARY, b"", id="empty_binary"),
        pytest.param(PING, b"unmasked ping", id="ping"),
    ],
)
async def test_10_4_unmasked_client_frame(
    client: RawClient, connect: Connect, opcode: int, payload: bytes
) -> None:
    """5.1: a client MUST mask every frame; the server closes on one that is not masked."""
    await client.send(client.frame(opcode, payload, masked=False))
    await client.expect_close(1002)
    await still_serving(connect)


async def test_10_4_unmasked_frame_after_a_valid_one(client: RawClient) -> None:
    await client.send(client.frame(TEXT, b"masked") + client.frame(TEXT, b"bare", masked=False))
    await client.expect_message(TEXT, b"masked")
    await client.expect_close(1002)


async def test_10_4_unmasked_continuation(client: RawClient) -> None:
    await client.send(
        client.frame(TEXT, b"masked", fin=False)
        + client.frame(CONTINUATION, b"bare", masked=False)
    )
    await client.expect_close(1002)


@pytest.mark.parametrize(
    "length, width", [(5, 2), (5, 8), (300, 8)], ids=["16bit", "64bit", "64bit_300"]
)
async def test_10_5_non_minimal_length_encoding_is_accepted(
    client: RawClient, length: int, width: int
) -> None:
    """5.2 asks senders for the minimal length encoding but names no duty for receivers;
    corral is liberal in what it accepts here, like most servers."""
    payload = b"x" * length
    header = client.frame_header(BINARY, length, key=KEY, length_bytes=width)
    await client.send(header + client.mask_payload(payload, KEY))
    await client.expect_message(BINARY, payload)
    await client.close_handshake()


async def test_10_6_server_serves_after_every_kind_of_failure(connect: Connect) -> None:
    """One connection per failure, all open at once, then a fresh one still echoes."""
    failures = [
        (lambda c: c.frame_header(BINARY, MAX + 1, key=KEY), 1009),
        (lambda c: c.frame_header(BINARY, 2**63, key=KEY), 1002),
        (lambda c: c.frame(TEXT, b"bare", masked=False), 1002),
        (lambda c: c.frame(TEXT, b"\xff"), 1007),
        (lambda c: c.frame(0x3), 1002),
        (lambda c: c.frame(TEXT, b"x", rsv=4), 1002),
    ]
    clients = [await connect() for _ in failures]
    for one, (build, _) in zip(clients, failures, strict=True):
        await one.send(build(one))
    for one, (_, code) in zip(clients, failures, strict=True):
        await one.expect_close(code)
    await still_serving(connect)
