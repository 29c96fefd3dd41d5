"""Property tests: chunking never changes what is parsed; extension headers round-trip."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.protocol.handshake import (
    ExtensionOffer,
    format_extension_header,
    parse_extension_header,
)
from corral.protocol.http11 import HTTPRequest, RequestParser, ResponseParser

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
# Field values: visible ASCII and inner spaces (leading/trailing whitespace is not content).
values = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)] + [" "], max_size=20).map(str.strip)
segments = st.lists(
    st.sampled_from(["a", "Z", "0", "-", ".", "_", "~", "%20", "%25", "%C3%A9"]), max_size=6
).map("".join)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    path = "/" + "/".join(draw(st.lists(segments, max_size=4)))
    query = draw(st.one_of(st.just(""), st.text(alphabet="a=&b1", min_size=1, max_size=10)))
    target = path + ("?" + query if query else "")
    fields = draw(st.lists(st.tuples(tokens, values), max_size=8))
    fields = [(n, v) for n, v in fields if n.lower() not in ("content-length", "transfer-encoding")]
    body = draw(st.binary(max_size=40)) if method != "GET" else b""
    head = f"{method} {target} HTTP/1.1\r\nHost: h\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in fields)
    if body or draw(st.booleans()):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def parse_chunks(chunks: list[bytes]) -> tuple[list[HTTPRequest], bool, bytes]:
    parser = RequestParser()
    out: list[HTTPRequest] = []
    rest = b""
    for index, chunk in enumerate(chunks):
        out += parser.feed(chunk)
        if parser.upgraded:
            rest = parser.trailing + b"".join(chunks[index + 1 :])
            break
    return out, parser.upgraded, rest


@given(st.lists(requests(), min_size=1, max_size=3), st.lists(st.integers(0, 10_000)))
def test_any_chunking_of_pipelined_requests_parses_the_same(
    messages: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(messages)
    whole = RequestParser().feed(data)
    assert len(whole) == len(messages)
    assert parse_chunks(split(data, cuts))[0] == whole


@given(requests(), st.binary(max_size=30), st.lists(st.integers(0, 10_000)))
def test_any_chunking_of_an_upgrade_keeps_every_trailing_byte(
    first: bytes, frames: bytes, cuts: list[int]
) -> None:
    upgrade = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    data = first + upgrade + frames
    requests_, upgraded, rest = parse_chunks(split(data, cuts))
    assert upgraded
    assert [r.target for r in requests_][-1] == "/ws"
    assert rest == frames


@given(st.lists(st.integers(0, 10_000)), st.binary(max_size=30))
def test_any_chunking_of_a_101_response_parses_the_same(cuts: list[int], frames: bytes) -> None:
    data = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n" + frames
    )
    whole_parser = ResponseParser()
    whole = whole_parser.feed(data)
    parser = ResponseParser()
    chunks = split(data, cuts)
    for index, chunk in enumerate(chunks):
        response = parser.feed(chunk)
        if response is not None:
            assert response == whole
            assert parser.trailing + b"".join(chunks[index + 1 :]) == frames
            break
    else:
        raise AssertionError("response never completed")


offers = st.builds(
    ExtensionOffer,
    tokens,
    st.lists(st.tuples(tokens, st.one_of(st.none(), tokens)), max_size=4).map(tuple),
)


@given(st.lists(offers, min_size=1, max_size=4))
def test_parse_of_format_is_identity(items: list[ExtensionOffer]) -> None:
    assert parse_extension_header([format_extension_header(items)]) == items
