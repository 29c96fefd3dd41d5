"""Autobahn section 6: UTF-8 handling of text messages (RFC 6455 sections 5.6 and 8.1).

"When an endpoint is to interpret a byte stream as UTF-8 but finds that the byte stream is
not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the WebSocket Connection_"
(8.1) with 1007 (7.4.1). Valid text must come back byte for byte. The sequences are those of
Markus Kuhn's UTF-8 decoder stress test, grouped as Autobahn 6.5-6.23 groups them; validity
is judged against the RFC 3629 grammar by a small checker below, not by Python's codec.

Fail fast (Autobahn 6.4): the server must notice invalid text at the first byte that no
valid text can follow, not at the end of the message. Every invalid sequence whose error
shows before its last byte is therefore also sent with its last fragment held back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from corral.protocol.frames import Opcode

if TYPE_CHECKING:
    from conftest import RawClient

CONTINUATION, TEXT = Opcode.CONTINUATION, Opcode.TEXT


# -- an RFC 3629 checker, independent of the server's decoder -----------------------------------


def _second_byte_range(lead: int) -> tuple[int, int, int] | None:
    """For a lead byte: (continuation bytes that follow, low, high bound of the first one)."""
    if 0xC2 <= lead <= 0xDF:
        return 1, 0x80, 0xBF
    if lead == 0xE0:
        return 2, 0xA0, 0xBF  # no overlong 3-byte forms
    if 0xE1 <= lead <= 0xEC or 0xEE <= lead <= 0xEF:
        return 2, 0x80, 0xBF
    if lead == 0xED:
        return 2, 0x80, 0x9F  # no surrogates (U+D800-U+DFFF)
    if lead == 0xF0:
        return 3, 0x90, 0xBF  # no overlong 4-byte forms
    if 0xF1 <= lead <= 0xF3:
        return 3, 0x80, 0xBF
    if lead == 0xF4:
        return 3, 0x80, 0x8F  # nothing above U+10FFFF
    return None  # 0x80-0xC1 and 0xF5-0xFF never start a character


def first_bad_byte(data: bytes) -> int | None:
    """The index of the first byte no valid UTF-8 can have there, or None if ``data`` is
    valid or a valid prefix (RFC 3629 section 4)."""
    i, n = 0, len(data)
    while i < n:
        lead = data[i]
        if lead < 0x80:
            i += 1
            continue
        rule = _second_byte_range(lead)
        if rule is None:
            return i
        count, low, high = rule
        for k in range(1, count + 1):
            if i + k >= n:
                return None  # truncated: a valid prefix
            byte = data[i + k]
            if not (low <= byte <= high if k == 1 else 0x80 <= byte <= 0xBF):
                return i + k
        i += count + 1
    return None


def is_valid(data: bytes) -> bool:
    if first_bad_byte(data) is not None:
        return False
    try:  # a valid prefix that is complete; checked by hand below, decode() only as a net
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- the test sequences ---------------------------------------------------------------------------

KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"  # "kosme" in Greek, 11 bytes


def _categories() -> list[tuple[str, list[bytes]]]:
    missing_last = [
        b"\xc0", b"\xe0\x80", b"\xf0\x80\x80", b"\xf8\x80\x80\x80", b"\xfc\x80\x80\x80\x80",
        b"\xdf", b"\xef\xbf", b"\xf7\xbf\xbf", b"\xfb\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf",
    ]  # fmt: skip
    highs = [0xD800, 0xDB7F, 0xDB80, 0xDBFF]
    lows = [0xDC00, 0xDFFF]
    surrogate = {cp: bytes((0xED, 0xA0 | (cp >> 6) & 0x1F, 0x80 | cp & 0x3F)) for cp in
                 [*highs, *lows, 0xDF80]}  # fmt: skip
    return [
        ("6.5 valid text", [
            b"hello$world", "hello¢world".encode(), "hello€world".encode(),
            "hello\U00024B62world".encode(), KOSME,
        ]),
        ("6.6 prefixes of a valid string", [KOSME[:i] for i in range(1, len(KOSME) + 1)]),
        ("6.7 first sequence of each length", [
            b"\x00", b"\xc2\x80", b"\xe0\xa0\x80", b"\xf0\x90\x80\x80",
        ]),
        ("6.8 five and six byte forms", [b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80"]),
        ("6.9 last sequence of each length", [
            b"\x7f", b"\xdf\xbf", b"\xef\xbf\xbf", b"\xf4\x8f\xbf\xbf",
        ]),
        ("6.10 above U+10FFFF", [
            b"\xf7\xbf\xbf\xbf", b"\xfb\xbf\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf\xbf",
        ]),
        ("6.11 other boundaries", [
            b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbd", b"\xf4\x8f\xbf\xbf",
            b"\xf4\x90\x80\x80",
        ]),
        ("6.12 unexpected continuation bytes", [
            b"\x80", b"\xbf", b"\x80\xbf", b"\x80\xbf\x80", b"\x80\xbf\x80\xbf",
            b"\x80\xbf\x80\xbf\x80", b"\x80\xbf\x80\xbf\x80\xbf", bytes(range(0x80, 0xC0)),
        ]),
        ("6.13 lonely start bytes", [
            b"".join(bytes((b, 0x20)) for b in range(low, high))
            for low, high in [(0xC0, 0xE0), (0xE0, 0xF0), (0xF0, 0xF8), (0xF8, 0xFC), (0xFC, 0xFE)]
        ]),
        ("6.14 last continuation byte missing", missing_last),
        ("6.15 incomplete sequences concatenated", [b"".join(missing_last)]),
        ("6.16 impossible bytes", [b"\xfe", b"\xff", b"\xfe\xfe\xff\xff"]),
        ("6.17 overlong ASCII", [
            b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xf8\x80\x80\x80\xaf",
            b"\xfc\x80\x80\x80\x80\xaf",
        ]),
        ("6.18 largest overlong forms", [
            b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xf0\x8f\xbf\xbf", b"\xf8\x87\xbf\xbf\xbf",
            b"\xfc\x83\xbf\xbf\xbf\xbf",
        ]),
        ("6.19 overlong NUL", [
            b"\xc0\x80", b"\xe0\x80\x80", b"\xf0\x80\x80\x80", b"\xf8\x80\x80\x80\x80",
            b"\xfc\x80\x80\x80\x80\x80",
        ]),
        ("6.20 lone surrogates", list(surrogate.values())),
        ("6.21 paired surrogates", [surrogate[h] + surrogate[lo] for h in highs for lo in lows]),
        ("6.22 noncharacters (valid)", [
            chr(plane << 16 | last).encode() for plane in range(17) for last in (0xFFFE, 0xFFFF)
        ] + [chr(cp).encode() for cp in (0xFDD0, 0xFDEF)]),
        ("6.23 specials (valid)", [chr(cp).encode() for cp in range(0xFFF9, 0x10000)]),
        ("6.x truncated at the end of valid text", [
            b"valid then " + seq[:cut] for seq in ("¢".encode(), "€".encode(), "𤭢".encode())
            for cut in range(1, len(seq))
        ]),
    ]  # fmt: skip


def _params(valid: bool) -> list[object]:
    out = []
    for name, sequences in _categories():
        number = name.split()[0]
        for j, data in enumerate(sequences, 1):
            if is_valid(data) is valid:
                out.append(pytest.param(data, id=f"{number}.{j}-{data.hex()[:24]}"))
    return out


VALID = _params(True)
INVALID = _params(False)
# Those whose error shows at a byte of their own, not only at the end of the message.
INVALID_EARLY = [p for p in INVALID if first_bad_byte(p.values[0]) is not None]  # type: ignore[attr-defined]


def one_byte_fragments(client: RawClient, data: bytes) -> list[bytes]:
    """``data`` as a text message of one-byte fragments (Autobahn 6.2.3, 6.3.2)."""
    if not data:
        return [client.frame(TEXT, b"")]
    frames = [client.frame(CONTINUATION if i else TEXT, data[i : i + 1], fin=i == len(data) - 1)
              for i in range(len(data))]  # fmt: skip
    return frames


# -- 6.1-6.3 --------------------------------------------------------------------------------------


async def test_6_1_1_empty_text(client: RawClient) -> None:
    await client.send_frame(TEXT, b"")
    await client.expect_message(TEXT, b"")
    await client.close_handshake()


async def test_6_1_3_empty_and_non_empty_fragments(client: RawClient) -> None:
    await client.send(
        client.frame(TEXT, b"", fin=False)
        + client.frame(CONTINUATION, b"middle frame payload", fin=False)
        + client.frame(CONTINUATION, b"")
    )
    await client.expect_message(TEXT, b"middle frame payload")
    await client.close_handshake()


HELLO = "Hello-µ@ßöäüàá-UTF-8!!".encode()


async def test_6_2_1_valid_text_in_one_frame(client: RawClient) -> None:
    await client.send_frame(TEXT, HELLO)
    await client.expect_message(TEXT, HELLO)
    await client.close_handshake()


async def test_6_2_2_split_at_a_code_point_boundary(client: RawClient) -> None:
    await client.send(
        client.frame(TEXT, HELLO[:6], fin=False) + client.frame(CONTINUATION, HELLO[6:])
    )
    await client.expect_message(TEXT, HELLO)
    await client.close_handshake()


@pytest.mark.parametrize("cut", range(1, len(HELLO)))
async def test_6_2_2_split_anywhere(client: RawClient, cut: int) -> None:
    """Code points split between two frames are put back together."""
    await client.send(
        client.frame(TEXT, HELLO[:cut], fin=False) + client.frame(CONTINUATION, HELLO[cut:])
    )
    await client.expect_message(TEXT, HELLO)
    await client.close_handshake()


async def test_6_2_3_valid_text_in_one_byte_fragments(client: RawClient) -> None:
    await client.send(b"".join(one_byte_fragments(client, HELLO)))
    await client.expect_message(TEXT, HELLO)
    await client.close_handshake()


async def test_6_2_4_valid_text_in_one_byte_chops(client: RawClient) -> None:
    """One frame, written one byte at a time."""
    await client.send_chops(client.frame(TEXT, KOSME), 1)
    await client.expect_message(TEXT, KOSME)
    await client.close_handshake()


INVALID_TEXT = KOSME + b"\xed\xa0\x80" + b"edited"


async def test_6_3_1_invalid_text_in_one_frame(client: RawClient) -> None:
    await client.send_frame(TEXT, INVALID_TEXT)
    await client.expect_close(1007)


async def test_6_3_2_invalid_text_in_one_byte_fragments(client: RawClient) -> None:
    await client.send(b"".join(one_byte_fragments(client, INVALID_TEXT)))
    await client.expect_close(1007)


# -- 6.4: fail fast -------------------------------------------------------------------------------

PART1 = KOSME  # valid
PART2 = b"\xf4\x90\x80\x80"  # would be U+110000: invalid from its second byte
PART3 = b"edited"
PAYLOAD = PART1 + PART2 + PART3


async def test_6_4_1_invalid_fragment_fails_before_the_message_ends(client: RawClient) -> None:
    await client.send_frame(TEXT, PART1, fin=False)
    await client.expect_quiet()
    await client.send_frame(CONTINUATION, PART2, fin=False)
    await client.expect_close(1007)  # the third fragment is never sent


async def test_6_4_2_fails_on_the_fragment_with_the_bad_byte(client: RawClient) -> None:
    """Fragment 1 ends with the lead byte F4, which is fine so far; fragment 2 is the single
    byte 0x90 that makes it impossible."""
    await client.send_frame(TEXT, PAYLOAD[:12], fin=False)
    await client.expect_quiet()
    await client.send_frame(CONTINUATION, PAYLOAD[12:13], fin=False)
    await client.expect_close(1007)


async def test_6_4_3_fails_inside_a_frame(client: RawClient) -> None:
    """One frame in three chops: the second chop fails it while the third is held back."""
    data = client.frame(TEXT, PAYLOAD)
    header = len(data) - len(PAYLOAD)
    await client.send(data[: header + len(PART1)])
    await client.expect_quiet()
    await client.send(data[header + len(PART1) : header + len(PART1) + len(PART2)])
    await client.expect_close(1007)


async def test_6_4_4_fails_on_the_chop_with_the_bad_byte(client: RawClient) -> None:
    data = client.frame(TEXT, PAYLOAD)
    header = len(data) - len(PAYLOAD)
    await client.send(data[: header + 12])
    await client.expect_quiet()
    await client.send(data[header + 12 : header + 13])
    await client.expect_close(1007)


# -- 6.5-6.23: the stress test, in one frame and in one-byte fragments ----------------------------


@pytest.mark.parametrize("data", VALID)
async def test_6_valid_in_one_frame(client: RawClient, data: bytes) -> None:
    await client.send_frame(TEXT, data)
    await client.expect_message(TEXT, data)
    await client.close_handshake()


@pytest.mark.parametrize("data", VALID)
async def test_6_valid_in_one_byte_fragments(client: RawClient, data: bytes) -> None:
    await client.send(b"".join(one_byte_fragments(client, data)))
    await client.expect_message(TEXT, data)
    await client.close_handshake()


@pytest.mark.parametrize("data", INVALID)
async def test_6_invalid_in_one_frame(client: RawClient, data: bytes) -> None:
    await client.send_frame(TEXT, data)
    await client.expect_close(1007)


@pytest.mark.parametrize("data", INVALID)
async def test_6_invalid_in_one_byte_fragments(client: RawClient, data: bytes) -> None:
    """Where the error shows before the last byte, the last fragment is held back: the
    close must come without it (fail fast); a truncated sequence fails on the last one."""
    frames = one_byte_fragments(client, data)
    bad = first_bad_byte(data)
    if bad is not None and bad < len(data) - 1:
        await client.send(b"".join(frames[:-1]))
    else:
        await client.send(b"".join(frames))
    await client.expect_close(1007)


@pytest.mark.parametrize("data", INVALID_EARLY)
async def test_6_invalid_in_one_frame_fails_fast(client: RawClient, data: bytes) -> None:
    """One frame cut after the first impossible byte: the rest of it is never sent."""
    bad = first_bad_byte(data)
    assert bad is not None
    whole = client.frame(TEXT, data + b"never sent")
    header = len(whole) - len(data) - len(b"never sent")
    await client.send(whole[: header + bad + 1])
    await client.expect_close(1007)


def test_checker_agrees_with_the_rfc_examples() -> None:
    assert first_bad_byte(b"\xed\xa0\x80") == 1
    assert first_bad_byte(b"\xf4\x90\x80\x80") == 1
    assert first_bad_byte(b"\xc0\xaf") == 0
    assert first_bad_byte(KOSME + b"\xf4") is None
    assert is_valid(KOSME) and not is_valid(KOSME[:1])
    assert len(KOSME) == 11 and PAYLOAD[11:13] == b"\xf4\x90"
    assert len(VALID) > 40 and len(INVALID) > 60
