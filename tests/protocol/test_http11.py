"""Bounded HTTP/1.1 parsing (corral.protocol.http11), named after RFC 7230 sections."""

from __future__ import annotations

import pytest

from corral.exceptions import InvalidRequest, InvalidResponse
from corral.protocol.http11 import Headers, HTTPRequest, RequestParser, ResponseParser
from helpers import FRAME, UPGRADE


def feed_bytewise(parser: RequestParser, data: bytes) -> list[HTTPRequest]:
    requests: list[HTTPRequest] = []
    for i in range(len(data)):
        requests += parser.feed(data[i : i + 1])
        if parser.upgraded:
            break
    return requests


def parse_error(data: bytes, **limits: int) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        RequestParser(**limits).feed(data)
    return info.value


# -- Headers -------------------------------------------------------------------------------


def test_3_2_headers_are_case_insensitive_and_keep_case_and_order() -> None:
    headers = Headers([("Host", "a"), ("X-Multi", "1")])
    headers.add("x-multi", "2")
    assert headers.get("HOST") == "a"
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"
    assert headers.get_all("X-MULTI") == ["1", "2"]
    assert "x-multi" in headers
    assert "nope" not in headers
    assert 3 not in headers
    assert headers.items() == [("Host", "a"), ("X-Multi", "1"), ("x-multi", "2")]
    assert list(headers) == headers.items()
    assert len(headers) == 3
    assert "X-Multi" in repr(headers)
    assert headers == Headers(headers.items())
    assert headers != Headers()


def test_3_2_headers_items_is_a_copy() -> None:
    headers = Headers([("A", "1")])
    headers.items().append(("B", "2"))
    assert len(headers) == 1


# -- requests ------------------------------------------------------------------------------


def test_3_1_1_request_line_and_fields() -> None:
    (request,) = RequestParser().feed(UPGRADE)
    assert request.method == "GET"
    assert request.target == "/chat?room=1"
    assert request.path == "/chat"
    assert request.raw_path == "/chat"
    assert request.query_string == "room=1"
    assert request.http_version == "1.1"
    assert request.headers.get("sec-websocket-version") == "13"
    assert request.headers.items()[0] == ("Host", "server.example.com")
    assert request.body == b""
    assert request.keep_alive is True
    assert request.upgrade is True


def test_5_3_path_is_percent_decoded_and_raw_path_kept() -> None:
    (request,) = RequestParser().feed(b"GET /a%20b/%C3%A9?q=%20 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request.path == "/a b/\u00e9"
    assert request.raw_path == "/a%20b/%C3%A9"
    assert request.query_string == "q=%20"


def test_5_3_path_not_utf8_after_decoding_is_400() -> None:
    error = parse_error(b"GET /%ff HTTP/1.1\r\nHost: h\r\n\r\n")
    assert error.status == 400
    assert str(error).startswith("malformed HTTP request:")


def test_5_3_2_absolute_form_target() -> None:
    (request,) = RequestParser().feed(b"GET http://h/x?y HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (request.target, request.path, request.query_string) == ("http://h/x?y", "/x", "y")


def test_3_2_4_field_value_whitespace_is_stripped() -> None:
    (request,) = RequestParser().feed(b"GET / HTTP/1.1\r\nX:   v  \r\nEmpty:\r\n\r\n")
    assert request.headers.items() == [("X", "v"), ("Empty", "")]


def test_3_2_4_obs_text_value_decoded_as_latin1() -> None:
    (request,) = RequestParser().feed(b"GET / HTTP/1.1\r\nX: caf\xe9\r\n\r\n")
    assert request.headers.get("X") == "caf\u00e9"


@pytest.mark.parametrize("version", [b"1.0", b"0.9"])
def test_2_6_old_http_versions_still_parse(version: bytes) -> None:
    (request,) = RequestParser().feed(b"GET / HTTP/" + version + b"\r\nHost: h\r\n\r\n")
    assert request.http_version == version.decode()
    assert request.keep_alive is False


def test_6_3_http10_keep_alive() -> None:
    (request,) = RequestParser().feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert request.keep_alive is True


def test_6_1_connection_close_is_not_keep_alive() -> None:
    (request,) = RequestParser().feed(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert request.keep_alive is False


def test_3_5_leading_empty_lines_are_ignored() -> None:
    (request,) = RequestParser().feed(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request.target == "/"


def test_3_header_split_across_one_byte_feeds() -> None:
    whole = RequestParser().feed(UPGRADE)
    assert feed_bytewise(RequestParser(), UPGRADE) == whole


def test_3_feed_returns_nothing_until_complete() -> None:
    parser = RequestParser()
    assert parser.feed(UPGRADE[:30]) == []
    assert parser.feed(UPGRADE[30:-1]) == []
    assert len(parser.feed(UPGRADE[-1:])) == 1


def test_3_3_content_length_body() -> None:
    data = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    (request,) = RequestParser().feed(data)
    assert request.body == b"hello"
    assert feed_bytewise(RequestParser(), data)[0].body == b"hello"


def test_4_1_chunked_body() -> None:
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    (request,) = RequestParser().feed(data)
    assert request.body == b"abcde"


def test_6_3_2_pipelined_keep_alive_requests() -> None:
    first = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
    second = b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    chunked = b"POST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
    third = b"GET /4 HTTP/1.1\r\nHost: h\r\n\r\n"
    data = first + second + chunked + third
    requests = RequestParser().feed(data)
    assert [r.target for r in requests] == ["/1", "/2", "/3", "/4"]
    assert [r.body for r in requests] == [b"", b"abc", b"z", b""]
    assert feed_bytewise(RequestParser(), data) == requests


def test_6_7_upgrade_keeps_trailing_frame_bytes() -> None:
    parser = RequestParser()
    (request,) = parser.feed(UPGRADE + FRAME)
    assert request.upgrade is True
    assert parser.upgraded is True
    assert parser.trailing == FRAME


def test_6_7_upgrade_after_pipelined_request() -> None:
    parser = RequestParser()
    requests = parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" + UPGRADE + FRAME)
    assert [r.upgrade for r in requests] == [False, True]
    assert parser.trailing == FRAME


def test_6_7_upgrade_in_small_feeds_has_no_trailing_yet() -> None:
    parser = RequestParser()
    requests = feed_bytewise(parser, UPGRADE + FRAME)
    assert len(requests) == 1
    assert parser.upgraded
    assert parser.trailing == b""


def test_6_7_upgrade_ignores_body_of_upgrade_request() -> None:
    data = UPGRADE[:-2] + b"Content-Length: 3\r\n\r\n" + FRAME
    parser = RequestParser()
    (request,) = parser.feed(data)
    assert request.body == b""
    assert parser.trailing == FRAME


def test_6_7_feed_after_upgrade_is_an_error() -> None:
    parser = RequestParser()
    parser.feed(UPGRADE)
    with pytest.raises(RuntimeError):
        parser.feed(FRAME)


def test_6_7_upgrade_without_connection_upgrade_is_plain_request() -> None:
    parser = RequestParser()
    (request,) = parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
    assert request.upgrade is False
    assert parser.upgraded is False


# -- malformed requests --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"BREW / HTTP/1.1\r\n\r\n",  # unknown method
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",  # space in field name
        b"GET / HTTP/1.1\r\n: x\r\n\r\n",  # empty field name
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",  # NUL in value
        b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",  # obs-fold
        b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",  # raw non-ASCII in target
        b"GET / HTTP/1.1\nHost: h\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_3_malformed_request_is_400(data: bytes) -> None:
    error = parse_error(data)
    assert error.status == 400
    assert str(error).startswith("malformed HTTP request: ")
    assert len(str(error)) < 120
    assert "\n" not in str(error)


def test_3_error_message_echoes_no_peer_bytes() -> None:
    error = parse_error(b"GET / HTTP/1.1\r\nX\x01<script>: y\r\n\r\n")
    assert "<script>" not in str(error)
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_3_error_after_complete_request_is_raised_by_next_feed() -> None:
    parser = RequestParser()
    data = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nBREW / HTTP/1.1\r\n\r\n"
    (request,) = parser.feed(data)
    assert request.target == "/"
    with pytest.raises(InvalidRequest) as info:
        parser.feed(b"")
    assert info.value.status == 400
    with pytest.raises(InvalidRequest):  # the parser stays failed
        parser.feed(b"GET / HTTP/1.1\r\n\r\n")


def test_6_6_data_after_connection_close_is_rejected_after_the_request() -> None:
    parser = RequestParser()
    data = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    assert len(parser.feed(data)) == 1
    with pytest.raises(InvalidRequest):
        parser.feed(b"")


# -- limits ----------------------------------------------------------------------------------


def test_3_1_1_target_at_limit_is_accepted() -> None:
    target = b"/" + b"a" * 99
    (request,) = RequestParser(max_request_line=100).feed(b"GET " + target + b" HTTP/1.1\r\n\r\n")
    assert request.target == target.decode()


def test_3_1_1_target_over_limit_is_414() -> None:
    target = b"/" + b"a" * 100
    error = parse_error(b"GET " + target + b" HTTP/1.1\r\n\r\n", max_request_line=100)
    assert error.status == 414


def test_3_1_1_trickled_endless_target_is_414_within_the_limit() -> None:
    parser = RequestParser(max_request_line=100)
    parser.feed(b"GET /")
    fed = 5
    with pytest.raises(InvalidRequest) as info:
        while True:
            parser.feed(b"a")
            fed += 1
    assert info.value.status == 414
    assert fed <= 100 + 40  # stopped near the limit, not after unbounded growth


def test_3_1_1_endless_target_in_one_feed_is_414() -> None:
    assert parse_error(b"GET /" + b"a" * 100_000, max_request_line=100).status == 414


def test_3_2_5_header_count_at_limit_is_accepted() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n"
    (request,) = RequestParser().feed(data)
    assert len(request.headers) == 100


def test_3_2_5_too_many_headers_is_431() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n"
    assert parse_error(data).status == 431
    with pytest.raises(InvalidRequest) as info:
        feed_bytewise(RequestParser(), data)
    assert info.value.status == 431


def test_3_2_5_endless_stream_of_headers_stops_early() -> None:
    parser = RequestParser(max_header_count=10)
    parser.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(InvalidRequest) as info:
        for _ in range(1000):
            parser.feed(b"X: y\r\n")
    assert info.value.status == 431


def test_3_2_5_header_bytes_over_limit_is_431() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"Name: " + b"v" * 60 + b"\r\n" + b"Other: " + b"w" * 40
    assert parse_error(data + b"\r\n\r\n", max_header_bytes=100).status == 431
    ok = b"GET / HTTP/1.1\r\nName: " + b"v" * 96 + b"\r\n\r\n"  # 4 + 96 = 100 bytes
    assert len(RequestParser(max_header_bytes=100).feed(ok)) == 1


def test_3_2_5_single_header_line_over_limit_is_431() -> None:
    line = b"X: " + b"v" * 98  # 101 bytes
    assert parse_error(b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n", max_request_line=100).status == (
        431
    )
    ok = b"GET / HTTP/1.1\r\nX: " + b"v" * 97 + b"\r\n\r\n"  # a 100-byte line
    assert len(RequestParser(max_request_line=100).feed(ok)) == 1


def test_3_2_5_trickled_endless_header_is_431_within_the_limit() -> None:
    parser = RequestParser(max_request_line=100)
    parser.feed(b"GET / HTTP/1.1\r\nX: ")
    fed = 3
    with pytest.raises(InvalidRequest) as info:
        while True:
            parser.feed(b"v")
            fed += 1
    assert info.value.status == 431
    assert fed <= 100 + 2


def test_3_2_5_trickled_endless_header_name_is_431() -> None:
    parser = RequestParser(max_request_line=50)
    parser.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(InvalidRequest) as info:
        for _ in range(1000):
            parser.feed(b"n")
    assert info.value.status == 431


def test_3_3_2_declared_body_over_limit_is_413_before_it_arrives() -> None:
    data = b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"
    assert parse_error(data, max_body=10).status == 413


def test_3_3_2_body_at_limit_is_accepted() -> None:
    data = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n" + b"x" * 10
    assert RequestParser(max_body=10).feed(data)[0].body == b"x" * 10


def test_4_1_chunked_body_over_limit_is_413() -> None:
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n"
    parser = RequestParser(max_body=10)
    parser.feed(data)
    with pytest.raises(InvalidRequest) as info:
        parser.feed(b"6\r\nghijkl\r\n")  # 12 body bytes in all
    assert info.value.status == 413


# -- responses -------------------------------------------------------------------------------

ACCEPT = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"\r\n"
)


def test_3_1_2_101_response_complete_at_end_of_head() -> None:
    parser = ResponseParser()
    response = parser.feed(ACCEPT + FRAME)
    assert response is not None
    assert (response.status, response.reason, response.http_version) == (
        101,
        "Switching Protocols",
        "1.1",
    )
    assert response.headers.get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert response.body == b""
    assert parser.trailing == FRAME


def test_3_1_2_101_without_upgrade_field_still_completes() -> None:
    parser = ResponseParser()
    response = parser.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + FRAME)
    assert response is not None and response.status == 101
    assert parser.trailing == FRAME


def test_3_1_2_response_in_one_byte_feeds() -> None:
    parser = ResponseParser()
    results = [parser.feed(ACCEPT[i : i + 1]) for i in range(len(ACCEPT))]
    assert results[:-1] == [None] * (len(ACCEPT) - 1)
    assert results[-1] == ResponseParser().feed(ACCEPT)


def test_6_2_interim_1xx_responses_are_skipped() -> None:
    parser = ResponseParser()
    response = parser.feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n" + ACCEPT
    )
    assert response is not None and response.status == 101
    assert response.headers.get("Upgrade") == "websocket"


def test_3_3_3_content_length_response_body() -> None:
    parser = ResponseParser()
    data = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope"
    assert parser.feed(data[:-1]) is None
    response = parser.feed(data[-1:])
    assert response is not None
    assert (response.status, response.reason, response.body) == (403, "Forbidden", b"nope")
    with pytest.raises(RuntimeError):
        parser.feed(b"more")
    assert parser.feed_eof() is None


def test_3_3_3_chunked_response_body() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    response = ResponseParser().feed(data)
    assert response is not None and response.body == b"ok"


def test_3_3_3_rule_7_body_until_eof() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome ") is None
    assert parser.feed(b"body") is None
    response = parser.feed_eof()
    assert response is not None and response.body == b"some body"


def test_3_3_3_204_has_no_body() -> None:
    response = ResponseParser().feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert response is not None and response.status == 204


def test_3_1_2_empty_reason_phrase() -> None:
    response = ResponseParser().feed(b"HTTP/1.1 426 \r\nContent-Length: 0\r\n\r\n")
    assert response is not None and (response.status, response.reason) == (426, "")


def test_3_3_3_eof_before_head_is_invalid_with_status_0() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 1")
    with pytest.raises(InvalidResponse) as info:
        parser.feed_eof()
    assert info.value.status == 0
    with pytest.raises(InvalidResponse):
        ResponseParser().feed_eof()


def test_3_3_3_eof_in_declared_body_is_invalid_with_status() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 500 Oops\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(InvalidResponse) as info:
        parser.feed_eof()
    assert info.value.status == 500


def test_3_3_3_eof_in_chunked_body_is_invalid() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
    with pytest.raises(InvalidResponse):
        parser.feed_eof()


def test_3_malformed_status_line_is_invalid_with_status_0() -> None:
    with pytest.raises(InvalidResponse) as info:
        ResponseParser().feed(b"HTTX/1.1 101 Nope\r\n\r\n")
    assert info.value.status == 0
    assert str(info.value).startswith("malformed HTTP response: ")


def test_3_malformed_header_is_invalid_with_known_status() -> None:
    with pytest.raises(InvalidResponse) as info:
        ResponseParser().feed(b"HTTP/1.1 101 OK\r\nBad Name: x\r\n\r\n")
    assert info.value.status == 101


def test_3_2_5_response_header_limits() -> None:
    many = b"HTTP/1.1 101 OK\r\n" + b"X: y\r\n" * 5 + b"\r\n"
    with pytest.raises(InvalidResponse) as info:
        ResponseParser(max_header_count=4).feed(many)
    assert info.value.status == 101
    with pytest.raises(InvalidResponse):
        ResponseParser(max_header_bytes=10).feed(b"HTTP/1.1 101 OK\r\nName: " + b"v" * 10 + b"\r\n")
    parser = ResponseParser(max_header_bytes=100)
    parser.feed(b"HTTP/1.1 101 OK\r\nX: ")
    with pytest.raises(InvalidResponse):
        for _ in range(1000):
            parser.feed(b"v")


def test_3_3_2_response_body_limit() -> None:
    with pytest.raises(InvalidResponse) as info:
        ResponseParser(max_body=3).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
    assert info.value.status == 200
    parser = ResponseParser(max_body=3)
    parser.feed(b"HTTP/1.1 200 OK\r\n\r\nab")
    with pytest.raises(InvalidResponse):
        parser.feed(b"cd")
