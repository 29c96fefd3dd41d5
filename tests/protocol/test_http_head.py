"""The request-head fast path (corral._http, corral._pure_http) against llhttp, named after
RFC 9112 / RFC 9110 sections.

- accepted heads give the parts ``HTTPRequest`` holds, shared strings included;
- every kind of head the fast path must leave to llhttp is declined (returns None): odd
  grammar, a body or a way of framing one, a limit reached;
- the compiled and the pure twin agree on every input (hypothesis: valid heads and mutated
  ones), and whatever they accept, llhttp parses to an equal request that ends at the same
  offset; ``RequestParser`` with the fast path answers every stream exactly as without it;
- corral.accel picks the compiled twin unless CORRAL_PURE=1.

The compiled half is skipped when the extension is not built (pure install).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from corral import _pure_http, accel
from corral.exceptions import InvalidRequest
from corral.protocol.http11 import Headers, HTTPRequest, RequestParser
from helpers import FRAME, UPGRADE, twins

_http, needs_compiled, IMPLS = twins(_pure_http, "corral._http")
DIFFERENTIAL = settings(max_examples=200, deadline=None,  # fuzz_http goes on from here
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

DEFAULTS = (8192, 100, 16384)  # max_request_line, max_header_count, max_header_bytes


class LlhttpOnly(RequestParser):
    """The parser as it was: every message through llhttp."""

    def _fast_head(self, data: bytes, pos: int) -> tuple[int, bool] | None:
        return None


class Counting(RequestParser):
    """Counts the messages llhttp began, to tell which path parsed a request."""

    llhttp_messages = 0

    def on_message_begin(self) -> None:
        self.llhttp_messages += 1
        super().on_message_begin()


def head(data: bytes | bytearray, impl: ModuleType = _pure_http, pos: int = 0,
         limits: tuple[int, int, int] = DEFAULTS) -> Any:
    return impl.parse_head(data, pos, *limits)


def outcome(cls: type[RequestParser], data: bytes, limits: dict[str, int]) -> tuple[object, ...]:
    """Everything a stream fed whole produces: requests (with their raw field lists), the
    error (status and text), upgraded and trailing bytes."""
    parser = cls(**limits)
    requests: list[HTTPRequest] = []
    error = None
    for chunk in (data, b""):
        if parser.upgraded:
            break
        try:
            requests += parser.feed(chunk)
        except InvalidRequest as exc:
            error = (exc.status, str(exc))
            break
    return ([(r, r.headers._fields) for r in requests], error, parser.upgraded, parser.trailing)


def as_request(parsed: Any, path: str) -> HTTPRequest:
    """The request a parse_head result stands for."""
    method, target, raw_path, query, version, fields, keep_alive, upgrade, _ = parsed
    return HTTPRequest(method=method, target=target, path=path, raw_path=raw_path,
                       query_string=query, http_version=version, headers=Headers._of(fields),
                       body=b"", keep_alive=keep_alive, upgrade=upgrade)


# -- accepted heads ---------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_3_upgrade_request_parts(impl: ModuleType) -> None:
    assert head(UPGRADE + FRAME, impl) == (
        "GET", "/chat?room=1", "/chat", "room=1", "1.1",
        ["host", "Host", "server.example.com",
         "upgrade", "Upgrade", "websocket",
         "connection", "Connection", "Upgrade",
         "sec-websocket-key", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==",
         "sec-websocket-version", "Sec-WebSocket-Version", "13"],
        True, True, len(UPGRADE),
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_3_head_at_an_offset_and_in_a_bytearray(impl: ModuleType) -> None:
    data = b"xyz" + UPGRADE
    assert head(data, impl, pos=3) == (*head(UPGRADE, impl)[:8], len(data))
    assert head(bytearray(data), impl, pos=3) == head(data, impl, pos=3)


@pytest.mark.parametrize("impl", IMPLS)
def test_3_pos_out_of_range_is_a_value_error(impl: ModuleType) -> None:
    for pos in (-1, len(UPGRADE) + 1):
        with pytest.raises(ValueError, match="pos out of range"):
            head(UPGRADE, impl, pos=pos)
    assert head(UPGRADE, impl, pos=len(UPGRADE)) is None


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_9_3_methods(impl: ModuleType, method: str) -> None:
    parsed = head(f"{method} / HTTP/1.1\r\n\r\n".encode(), impl)
    assert parsed[0] == method


@pytest.mark.parametrize("impl", IMPLS)
def test_5_5_field_values_ows_obs_text_and_empty(impl: ModuleType) -> None:
    data = b"GET / HTTP/1.1\r\nA:x\r\nB: \t y z \t \r\nC: caf\xe9\r\nD:\r\nE:   \r\n\r\n"
    assert head(data, impl)[5] == ["a", "A", "x", "b", "B", "y z", "c", "C", "caf\xe9",
                                   "d", "D", "", "e", "E", ""]


@pytest.mark.parametrize("impl", IMPLS)
def test_3_2_1_query_split_at_the_first_question_mark(impl: ModuleType) -> None:
    parsed = head(b"GET //a/b?c?d=%41 HTTP/1.1\r\n\r\n", impl)
    assert parsed[1:4] == ("//a/b?c?d=%41", "//a/b", "c?d=%41")
    assert head(b"GET /? HTTP/1.1\r\n\r\n", impl)[2:4] == ("/", "")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("version", "connection", "keep_alive", "upgrade"),
    [
        (b"1.1", None, True, False),
        (b"1.1", b"close", False, False),
        (b"1.1", b"Upgrade", True, True),
        (b"1.1", b"keep-alive, Upgrade", True, True),
        (b"1.1", b"close, upgrade", False, True),
        (b"1.1", b" ,UPGRADE , x", True, True),
        (b"1.1", b"upgrades", True, False),
        (b"1.0", None, False, False),
        (b"1.0", b"keep-alive", True, False),
        (b"1.0", b"Keep-Alive, Upgrade", True, True),
        (b"1.0", b"upgrade", False, True),
    ],
)
def test_9_3_keep_alive_and_7_8_upgrade_as_llhttp(
    impl: ModuleType, version: bytes, connection: bytes | None, keep_alive: bool, upgrade: bool
) -> None:
    data = b"GET / HTTP/" + version + b"\r\nUpgrade: websocket\r\n"
    if connection is not None:
        data += b"Connection: " + connection + b"\r\n"
    data += b"\r\n"
    assert head(data, impl)[6:8] == (keep_alive, upgrade)
    (request,) = LlhttpOnly().feed(data)  # the expectations are llhttp's
    assert (request.keep_alive, request.upgrade) == (keep_alive, upgrade)


@pytest.mark.parametrize("impl", IMPLS)
def test_6_3_content_length_zero_is_no_body(impl: ModuleType) -> None:
    for value in (b"0", b" 0", b"\t0"):
        data = b"POST / HTTP/1.1\r\nContent-Length:" + value + b"\r\n\r\n"
        assert head(data, impl)[5] == ["content-length", "Content-Length", "0"]


@pytest.mark.parametrize("impl", IMPLS)
def test_shared_strings_for_names_and_repeating_values(impl: ModuleType) -> None:
    first, second = head(UPGRADE, impl)[5], head(UPGRADE, impl)[5]
    for index in range(0, len(first), 3):
        assert first[index] is second[index]  # lowercased name
        assert first[index + 1] is second[index + 1]  # name
    assert first[5] is second[5]  # "websocket": Upgrade repeats
    assert first[11] is not second[11]  # the key does not
    assert first[11] == second[11]


@needs_compiled
def test_compiled_repeating_fields_are_the_pure_list() -> None:
    assert _http is not None
    assert _http.REPEATING == _pure_http.REPEATING


@needs_compiled
def test_compiled_allocation_failures_raise_memory_error() -> None:
    testcapi = pytest.importorskip("_testcapi")
    assert _http is not None
    failures = 0
    for attempt in range(120):
        # new names and values each time, so the shared-string tables allocate too
        data = UPGRADE.replace(b"Host: server", b"Host: s%d" % attempt).replace(
            b"Sec-WebSocket-Version", b"Sec-%d" % attempt)
        testcapi.set_nomemory(attempt % 30, attempt % 30 + 1 + attempt // 30)
        try:
            parsed = _http.parse_head(data, 0, *DEFAULTS)
        except MemoryError:
            failures += 1
            continue
        finally:
            testcapi.remove_mem_hooks()
        assert parsed == _pure_http.parse_head(data, 0, *DEFAULTS)
    assert failures
    assert _http.parse_head(UPGRADE, 0, *DEFAULTS) == _pure_http.parse_head(UPGRADE, 0, *DEFAULTS)


def test_pure_shared_strings_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pure_http, "_NAMES", {})  # filled here, then put back
    monkeypatch.setattr(_pure_http, "_VALUES", {})
    for i in range(2000):
        head(b"GET / HTTP/1.1\r\nX-%d: v\r\nHost: h%d\r\n\r\n" % (i, i))
    assert len(_pure_http._NAMES) <= _pure_http._SHARED_MAX
    assert len(_pure_http._VALUES) <= _pure_http._SHARED_MAX


# -- declined heads -----------------------------------------------------------------------------

DECLINED = {
    # RFC 9112 3: the request line
    "unknown method": b"BREW / HTTP/1.1\r\n\r\n",
    "lowercase method": b"get / HTTP/1.1\r\n\r\n",
    "CONNECT": b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
    "method prefix": b"GETX / HTTP/1.1\r\n\r\n",
    "two spaces": b"GET  / HTTP/1.1\r\n\r\n",
    "absolute-form": b"GET http://example.com/ HTTP/1.1\r\n\r\n",
    "asterisk-form": b"OPTIONS * HTTP/1.1\r\n\r\n",
    "fragment": b"GET /a#b HTTP/1.1\r\n\r\n",
    "non-ASCII target": b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
    "DEL in target": b"GET /\x7f HTTP/1.1\r\n\r\n",
    "tab in target": b"GET /a\tb HTTP/1.1\r\n\r\n",
    "HTTP/0.9": b"GET / HTTP/0.9\r\n\r\n",
    "HTTP/1.2": b"GET / HTTP/1.2\r\n\r\n",
    "HTTP/2.0": b"GET / HTTP/2.0\r\n\r\n",
    "lowercase version": b"GET / http/1.1\r\n\r\n",
    "no version": b"GET /\r\n\r\n",
    # RFC 9112 2.2: line endings; 2.2 leading empty lines
    "bare LF": b"GET / HTTP/1.1\nHost: h\n\n",
    "bare LF after fields": b"GET / HTTP/1.1\r\nHost: h\r\n\n",
    "bare CR": b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n",
    "leading empty line": b"\r\nGET / HTTP/1.1\r\n\r\n",
    # RFC 9112 5: field lines
    "obs-fold": b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    "empty name": b"GET / HTTP/1.1\r\n: h\r\n\r\n",
    "no colon": b"GET / HTTP/1.1\r\nHost\r\n\r\n",
    "NUL in value": b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    "DEL in value": b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
    "VT in value": b"GET / HTTP/1.1\r\nX: a\x0bb\r\n\r\n",
    "non-token name": b"GET / HTTP/1.1\r\nX(y): z\r\n\r\n",
    # RFC 9112 6: bodies and their framing
    "Transfer-Encoding": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "transfer-encoding identity": b"GET / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n",
    "Content-Length 1": b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
    "Content-Length 00": b"POST / HTTP/1.1\r\nContent-Length: 00\r\n\r\n",
    "Content-Length trailing space": b"POST / HTTP/1.1\r\nContent-Length: 0 \r\n\r\n",
    "Content-Length empty": b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
    "Content-Length twice": b"POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
    # flags llhttp sets that are not copied
    "Proxy-Connection": b"GET / HTTP/1.1\r\nProxy-Connection: keep-alive\r\n\r\n",
    "empty Upgrade": b"GET / HTTP/1.1\r\nUpgrade:\r\nConnection: upgrade\r\n\r\n",
    "tab in Connection": b"GET / HTTP/1.1\r\nConnection: close,\tupgrade\r\n\r\n",
    "obs-text in Connection": b"GET / HTTP/1.1\r\nConnection: \xe9\r\n\r\n",
    # incomplete
    "no empty line": b"GET / HTTP/1.1\r\nHost: h\r\n",
    "half a CRLF": b"GET / HTTP/1.1\r\nHost: h\r\n\r",
    "empty": b"",
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("data", DECLINED.values(), ids=DECLINED.keys())
def test_declined(impl: ModuleType, data: bytes) -> None:
    assert head(data, impl) is None


@pytest.mark.parametrize("impl", IMPLS)
def test_every_truncation_of_a_head_is_declined(impl: ModuleType) -> None:
    for end in range(len(UPGRADE)):
        assert head(UPGRADE[:end], impl) is None


# -- limits: at the limit accepted, past it declined (llhttp's path answers) --------------------


def limited(line: int = 8192, count: int = 100, size: int = 16384) -> tuple[int, int, int]:
    return (line, count, size)


@pytest.mark.parametrize("impl", IMPLS)
def test_3_request_line_limit(impl: ModuleType) -> None:
    data = b"GET /" + b"a" * 86 + b" HTTP/1.1\r\n\r\n"  # a line of 100 bytes
    assert head(data, impl, limits=limited(line=100)) is not None
    assert head(data, impl, limits=limited(line=99)) is None


@pytest.mark.parametrize("impl", IMPLS)
def test_5_field_line_limit(impl: ModuleType) -> None:
    data = b"GET / HTTP/1.1\r\nX: " + b"v" * 97 + b"\r\n\r\n"  # a field line of 100 bytes
    assert head(data, impl, limits=limited(line=100)) is not None
    assert head(data, impl, limits=limited(line=99)) is None


@pytest.mark.parametrize("impl", IMPLS)
def test_5_field_count_limit(impl: ModuleType) -> None:
    data = b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5 + b"\r\n"
    assert head(data, impl, limits=limited(count=5)) is not None
    assert head(data, impl, limits=limited(count=4)) is None
    # as RequestParser counts fields arriving from llhttp: without one, no limit is passed
    bare = b"GET / HTTP/1.1\r\n\r\n"
    assert head(bare, impl, limits=limited(count=0)) is not None
    assert head(bare, impl, limits=limited(count=-1, size=-1)) is not None
    assert LlhttpOnly(max_header_count=-1, max_header_bytes=-1).feed(bare)


@pytest.mark.parametrize("impl", IMPLS)
def test_5_field_bytes_limit_counts_what_llhttp_reports(impl: ModuleType) -> None:
    # llhttp reports "ab" and "cd \t" (trailing OWS included): 2 + 4 bytes
    data = b"GET / HTTP/1.1\r\nab:  cd \t\r\n\r\n"
    assert head(data, impl, limits=limited(size=6)) is not None
    assert head(data, impl, limits=limited(size=5)) is None
    assert LlhttpOnly(max_header_bytes=6).feed(data)
    with pytest.raises(InvalidRequest):
        LlhttpOnly(max_header_bytes=5).feed(data)


@pytest.mark.parametrize(
    ("data", "limits"),
    [
        (b"GET /" + b"a" * 120 + b" HTTP/1.1\r\n\r\n", {"max_request_line": 100}),
        (b"GET /" + b"a" * 96 + b" HTTP/1.1\r\n\r\n", {"max_request_line": 100}),
        (b"GET / HTTP/1.1\r\nX: " + b"v" * 200 + b"\r\n\r\n", {"max_request_line": 100}),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 6 + b"\r\n", {"max_header_count": 5}),
        (b"GET / HTTP/1.1\r\nX: " + b"v" * 50 + b"\r\n\r\n", {"max_header_bytes": 40}),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", {"max_body": -1}),
    ],
)
def test_past_a_limit_the_answer_is_unchanged(data: bytes, limits: dict[str, int]) -> None:
    assert outcome(RequestParser, data, limits) == outcome(LlhttpOnly, data, limits)


# -- RequestParser with the fast path -----------------------------------------------------------


def test_upgrade_request_takes_the_fast_path_and_keeps_trailing_bytes() -> None:
    parser = Counting()
    (request,) = parser.feed(UPGRADE + FRAME)
    assert parser.llhttp_messages == 0
    assert parser.upgraded
    assert parser.trailing == FRAME
    assert request == LlhttpOnly().feed(UPGRADE + FRAME)[0]
    assert outcome(Counting, UPGRADE + FRAME, {}) == outcome(LlhttpOnly, UPGRADE + FRAME, {})
    with pytest.raises(RuntimeError):
        parser.feed(FRAME)


def test_pipelined_keep_alive_requests_then_an_upgrade() -> None:
    data = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n" * 2 + UPGRADE + FRAME
    parser = Counting()
    assert [r.target for r in parser.feed(data)] == ["/a", "/a", "/chat?room=1"]
    assert parser.llhttp_messages == 0
    assert outcome(RequestParser, data, {}) == outcome(LlhttpOnly, data, {})


@pytest.mark.parametrize(
    ("first", "by_llhttp"),
    [
        # a body of known length is fed to llhttp exactly: the next request is the fast path's
        (b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 1),
        # a chunked body is fed whole: llhttp has begun the next request, and keeps it
        (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 2),
    ],
)
def test_after_a_body_llhttp_or_the_fast_path(first: bytes, by_llhttp: int) -> None:
    data = first + UPGRADE + FRAME
    parser = Counting()
    assert [r.body for r in parser.feed(data)] == [b"abc", b""]
    assert parser.llhttp_messages == by_llhttp
    assert outcome(RequestParser, data, {}) == outcome(LlhttpOnly, data, {})


@pytest.mark.parametrize(
    "first",
    [
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",  # declined by the fast path
        b"GET / HTTP/1.0\r\n\r\n",
        b"POST / HTTP/1.0\r\nContent-Length: 1\r\n\r\nx",  # llhttp's, not kept alive
    ],
)
def test_9_6_nothing_is_parsed_after_a_message_that_closes(first: bytes) -> None:
    data = first + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    parser = Counting()
    assert len(parser.feed(data)) == 1
    with pytest.raises(InvalidRequest):
        parser.feed(b"")
    assert outcome(RequestParser, data, {}) == outcome(LlhttpOnly, data, {})


def test_a_head_started_in_an_earlier_feed_stays_with_llhttp() -> None:
    parser = Counting()
    assert parser.feed(UPGRADE[:10]) == []
    (request,) = parser.feed(UPGRADE[10:])
    assert parser.llhttp_messages == 1
    assert request == LlhttpOnly().feed(UPGRADE)[0]


@pytest.mark.parametrize(
    "target",
    [b"/a%20b", b"/%C3%A9?q=%zz", b"/%zz", b"/a%2Fb", b"/%FF", b"/%C3"],
)
def test_5_3_percent_decoding_as_llhttp_path(target: bytes) -> None:
    data = b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert outcome(RequestParser, data, {}) == outcome(LlhttpOnly, data, {})


def test_accel_picks_one_parse_head() -> None:
    chosen = _http if accel.COMPILED else _pure_http
    assert chosen is not None
    assert accel.parse_head is chosen.parse_head
    if os.environ.get("CORRAL_PURE") == "1":
        assert accel.parse_head is _pure_http.parse_head


# -- differential: random heads, valid and mutated ------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SPECIAL_NAMES = ["Connection"] * 3 + ["Upgrade"] * 2 + [
    "Content-Length", "Transfer-Encoding", "Proxy-Connection", "Host", "Sec-WebSocket-Key",
    "Keep-Alive", "Origin"]
OPTIONS = ["close", "keep-alive", "upgrade", "Upgrade", "KEEP-ALIVE", "Close", "upgradex",
           "clos", "x", ""]
LENGTHS = ["0", "00", " 0", "0 ", "1", "", "-0", "+0", "0\t", "5"]


def swap_case(text: str, flips: list[bool]) -> str:
    return "".join(c.swapcase() if flip else c for c, flip in zip(text, flips + [False] * len(text),
                                                                   strict=False))


@st.composite
def names(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 2)) == 0:
        return swap_case(draw(st.sampled_from(SPECIAL_NAMES)), draw(st.lists(st.booleans())))
    return draw(st.text(alphabet=TCHARS, min_size=1, max_size=12))


@st.composite
def values(draw: st.DrawFn, name: str) -> bytes:
    key = name.lower()
    if key in ("connection", "proxy-connection") and draw(st.booleans()):
        options = draw(st.lists(st.sampled_from(OPTIONS), max_size=4))
        separator = draw(st.sampled_from([",", ", ", " ,", " , ", ",\t"]))
        return separator.join(options).encode()
    if key == "content-length" and draw(st.booleans()):
        return draw(st.sampled_from(LENGTHS)).encode()
    alphabet = st.one_of(st.integers(0x20, 0x7E), st.sampled_from([0x09, 0x80, 0xE9, 0xFF]))
    return bytes(draw(st.lists(alphabet, max_size=20)))


targets = st.builds(
    lambda path, query: "/" + path + query,
    st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], max_size=16),
    st.one_of(st.just(""), st.text(alphabet="?=&a%20#", max_size=8).map(lambda q: "?" + q)),
)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET"] * 12 + ["POST", "HEAD", "OPTIONS", "CONNECT", "BREW",
                                                  "get", "PATCH", "DELETE", "PUT"]))
    version = draw(st.sampled_from(["1.1"] * 8 + ["1.0"] * 4 + ["0.9", "2.0", "1.2"]))
    line = f"{method} {draw(targets)} HTTP/{version}\r\n".encode()
    fields = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(names())
        before = draw(st.sampled_from(["", " ", "  ", "\t", " \t"]))
        after = draw(st.sampled_from(["", "", " ", "\t", " \t "]))
        fields.append(name.encode() + b":" + before.encode() + draw(values(name))
                      + after.encode() + b"\r\n")
    return line + b"".join(fields) + b"\r\n"


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few edits: bytes inserted, deleted or replaced, CR/LF games, lines
    doubled, the head cut short or stretched."""
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 6))
        if kind == 0:
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        elif kind == 1:
            data = data[:at] + data[at + draw(st.integers(1, 3)):]
        elif kind == 2:
            piece = draw(st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x00", b":",
                                          b"\x7f", b"\xff", b"#", b"?", b"\r\n "]))
            data = data[:at] + piece + data[at:]
        elif kind == 3:
            data = data.replace(b"\r\n", draw(st.sampled_from([b"\n", b"\r", b"\n\r"])), 1)
        elif kind == 4:
            data = data[:at]
        elif kind == 5:
            lines = data.split(b"\r\n")
            index = draw(st.integers(0, len(lines) - 1))
            lines.insert(index, lines[index])
            data = b"\r\n".join(lines)
        else:
            data = data[:at] + b"x" * draw(st.integers(50, 400)) + data[at:]
    return data


limits_dicts: st.SearchStrategy[dict[str, int]] = st.one_of(
    st.just({}),
    st.just({}),
    st.fixed_dictionaries({
        "max_request_line": st.integers(-1, 120),
        "max_header_count": st.integers(-1, 6),
        "max_header_bytes": st.integers(-1, 200),
    }),
)
after_head = st.sampled_from([b"", FRAME, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", b"\r\n",
                              b"GET /x HTTP/1.1\r\nUpgrade: a\r\nConnection: upgrade\r\n\r\nz"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    data = draw(heads())
    if draw(st.integers(0, 2)):
        data = draw(mutated(data))
    return data + draw(after_head)


def limits_tuple(limits: dict[str, int]) -> tuple[int, int, int]:
    return (limits.get("max_request_line", 8192), limits.get("max_header_count", 100),
            limits.get("max_header_bytes", 16384))


def check_against_llhttp(data: bytes, limits: dict[str, int]) -> None:
    """Whatever parse_head accepts, llhttp parses to an equal request ending at the same
    offset; and RequestParser answers ``data`` as it did without the fast path."""
    parsed = _pure_http.parse_head(data, 0, *limits_tuple(limits))
    event("accepted" if parsed is not None else "declined")
    at_one = None if parsed is None else (*parsed[:8], parsed[8] + 1)
    assert _pure_http.parse_head(b"G" + data, 1, *limits_tuple(limits)) == at_one
    if _http is not None:
        assert _http.parse_head(data, 0, *limits_tuple(limits)) == parsed
        assert _http.parse_head(b"G" + data, 1, *limits_tuple(limits)) == at_one
    if parsed is not None:
        end = parsed[8]
        assert LlhttpOnly(**limits).feed(data[: end - 1]) == []  # the head ends no earlier
        try:
            path = unquote(parsed[2], errors="strict")
        except UnicodeDecodeError:
            with pytest.raises(InvalidRequest):  # llhttp's path refuses it: so does _build
                LlhttpOnly(**limits).feed(data[:end])
        else:
            (request,) = LlhttpOnly(**limits).feed(data[:end])
            expected = as_request(parsed, path)
            assert (request, request.headers._fields) == (expected, expected.headers._fields)
    assert outcome(RequestParser, data, limits) == outcome(LlhttpOnly, data, limits)


@DIFFERENTIAL
@given(heads(), limits_dicts, after_head)
@example(UPGRADE, {}, FRAME)
@example(b"GET / HTTP/1.1\r\nConnection: keep-alive, upgrade\r\nUpgrade: x\r\n\r\n", {}, b"")
def test_valid_heads_parse_as_llhttp_parses_them(
    data: bytes, limits: dict[str, int], after: bytes
) -> None:
    check_against_llhttp(data + after, limits)


@DIFFERENTIAL
@given(streams(), limits_dicts)
def test_mutated_heads_parse_as_llhttp_parses_them(data: bytes, limits: dict[str, int]) -> None:
    check_against_llhttp(data, limits)


@DIFFERENTIAL
@given(st.binary(max_size=200), limits_dicts)
def test_random_bytes_parse_as_llhttp_parses_them(data: bytes, limits: dict[str, int]) -> None:
    check_against_llhttp(b"GET / HTTP/1.1\r\n" + data, limits)
