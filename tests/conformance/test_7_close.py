"""Autobahn section 7: the closing handshake (RFC 6455 sections 5.5.1, 7 and 7.4).

A close frame's payload is empty or a 2-byte status code followed by a UTF-8 reason (5.5.1).
"If an endpoint receives a Close frame and did not previously send a Close frame, the
endpoint MUST send a Close frame in response", "typically echo[ing] the status code it
received"; after a close frame nothing more is processed, so later data frames are not
echoed and later pings not answered. "The underlying TCP connection, in most normal cases,
SHOULD be closed first by the server" (7.1.1): every test checks the server drops TCP after
its close frame without waiting for us. Codes the RFC or IANA do not allow on the wire, a
1-byte payload, a payload over 125 bytes fail with 1002; a reason that is not UTF-8 with 1007.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import pytest

from corral.protocol.frames import Opcode

if TYPE_CHECKING:
    from conftest import Connect, RawClient

CONTINUATION, TEXT, BINARY = Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY
CLOSE, PING = Opcode.CLOSE, Opcode.PING


def close(client: RawClient, code: int | None = 1000, reason: bytes = b"") -> bytes:
    return client.frame(CLOSE, b"" if code is None else client.close_payload(code, reason))


# -- 7.1: what follows a close is ignored ---------------------------------------------------------


async def test_7_1_1_message_then_close(client: RawClient) -> None:
    await client.send_frame(TEXT, b"Hello World!")
    await client.expect_message(TEXT, b"Hello World!")
    await client.send(close(client))
    await client.expect_close(1000)


async def test_7_1_2_second_close_is_ignored(client: RawClient) -> None:
    await client.send(close(client) + close(client, 1001))
    await client.expect_close(1000)


async def test_7_1_3_ping_after_close_is_not_answered(client: RawClient) -> None:
    await client.send(close(client) + client.frame(PING, b"after close"))
    await client.expect_close(1000)


async def test_7_1_4_message_after_close_is_not_echoed(client: RawClient) -> None:
    await client.send(close(client) + client.frame(TEXT, b"after close"))
    await client.expect_close(1000)


async def test_7_1_5_close_inside_fragmented_message(client: RawClient) -> None:
    await client.send(
        client.frame(TEXT, b"fragment1", fin=False)
        + close(client)
        + client.frame(CONTINUATION, b"fragment2")
    )
    await client.expect_close(1000)


async def test_7_1_6_large_message_then_close_then_ping(client: RawClient) -> None:
    """Echo of the 256 KiB message, the close, and no pong."""
    payload = b"BAsd7&jh23" * 26214 + b"BA"
    await client.send(client.frame(TEXT, payload) + close(client) + client.frame(PING, b"x"))
    await client.expect_message(TEXT, payload)
    await client.expect_close(1000)


async def test_7_1_invalid_frame_after_close_is_not_processed(client: RawClient) -> None:
    """After a close frame, even a malformed frame is not looked at: no 1002."""
    await client.send(close(client, 1001) + client.frame(0x3, b"reserved") + b"\xff\xff")
    await client.expect_close(1001)


async def test_7_1_close_in_octet_chops(client: RawClient) -> None:
    await client.send_chops(close(client, 3000, b"bye"), 1)
    await client.expect_close(3000)


async def test_7_1_1_server_closes_tcp_first(client: RawClient) -> None:
    """We keep our side open; the server closes TCP right after its close frame."""
    await client.send(close(client))
    got = await client.recv_frame()
    assert (got.opcode, got.payload[:2]) == (CLOSE, b"\x03\xe8")
    await client.expect_eof(timeout=1.0)


# -- 7.3: close payload shapes -------------------------------------------------------------------


async def test_7_3_1_close_without_payload(client: RawClient) -> None:
    """With no status code received there is none to echo: the server answers with an
    empty close too (1005 "no status" must never be put on the wire, 7.4.1; a close with
    1000 would also be conformant)."""
    await client.send(close(client, None))
    await client.expect_close(None)


async def test_7_3_2_close_with_one_byte_payload(client: RawClient) -> None:
    """5.5.1: a body, if present, starts with a 2-byte code; one byte cannot be parsed."""
    await client.send_frame(CLOSE, b"\x03")
    await client.expect_close(1002)


async def test_7_3_3_close_with_code_only(client: RawClient) -> None:
    await client.send(close(client, 1000))
    assert await client.expect_close(1000) == ""


async def test_7_3_4_close_with_code_and_reason(client: RawClient) -> None:
    await client.send(close(client, 1000, b"Hello World!"))
    await client.expect_close(1000)


async def test_7_3_5_close_with_123_byte_reason(client: RawClient) -> None:
    """2 + 123 = 125 bytes, the most a control frame may carry."""
    await client.send(close(client, 1000, b"*" * 123))
    await client.expect_close(1000)


async def test_7_3_6_close_with_124_byte_reason(client: RawClient) -> None:
    """2 + 124 = 126 bytes: too long for a control frame (5.5)."""
    await client.send(close(client, 1000, b"*" * 124))
    await client.expect_close(1002)


async def test_7_3_fragmented_close(client: RawClient) -> None:
    """5.5: control frames "MUST NOT be fragmented"."""
    await client.send(
        client.frame(CLOSE, b"\x03", fin=False) + client.frame(CONTINUATION, b"\xe8")
    )
    await client.expect_close(1002)


# -- 7.5: the reason must be UTF-8 ----------------------------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", id="7.5.1"),
        pytest.param(b"\xff", id="impossible_byte"),
        pytest.param(b"\xc0\xaf", id="overlong"),
        pytest.param(b"truncated \xe2\x82", id="truncated_at_end"),
    ],
)
async def test_7_5_1_close_reason_not_utf8(client: RawClient, reason: bytes) -> None:
    await client.send(close(client, 1000, reason))
    await client.expect_close(1007)


async def test_7_5_close_reason_valid_utf8(client: RawClient) -> None:
    await client.send(close(client, 1000, "κόσμε € 𤭢".encode()))
    await client.expect_close(1000)


# -- 7.7, 7.9, 7.13: status codes -----------------------------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
               3000, 3999, 4000, 4999]  # fmt: skip
# 1004 reserved; 1005, 1006, 1015 never on the wire (7.4.1); 0-999 unused; 1016-2999 for the
# RFC's future revisions and extensions; 5000 and up undefined (Autobahn 7.13).
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
async def test_7_7_valid_close_code_is_echoed(client: RawClient, code: int) -> None:
    await client.send(close(client, code))
    await client.expect_close(code)


@pytest.mark.parametrize("code", INVALID_CODES)
async def test_7_9_invalid_close_code(client: RawClient, code: int) -> None:
    await client.send(client.frame(CLOSE, struct.pack("!H", code)))
    await client.expect_close(1002)


async def test_7_server_still_serves_after_close_errors(connect: Connect) -> None:
    bad = await connect()
    await bad.send(close(bad, 1005))
    await bad.expect_close(1002)
    good = await connect()
    await good.send_frame(BINARY, b"\x00\x01")
    await good.expect_message(BINARY, b"\x00\x01")
    await good.close_handshake()
