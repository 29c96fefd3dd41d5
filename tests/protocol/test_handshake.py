"""The opening handshake (corral.protocol.handshake), named after RFC 6455 sections."""

from __future__ import annotations

import base64

import pytest

from corral.exceptions import (
    InvalidRequest,
    InvalidResponse,
    InvalidStatus,
    NegotiationError,
    UnsupportedVersion,
)
from corral.protocol.handshake import (
    GUID,
    SUPPORTED_VERSIONS,
    ExtensionOffer,
    UpgradeInfo,
    accept_key,
    build_accept,
    build_http_response,
    build_request,
    check_request,
    check_response,
    format_extension_header,
    generate_key,
    is_websocket_upgrade,
    origin_allowed,
    parse_extension_header,
    parse_token_list,
)
from corral.protocol.http11 import HTTPRequest, HTTPResponse, RequestParser, ResponseParser

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
BASE = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def make_request(
    headers: list[tuple[str, str]] | None = None,
    *,
    drop: tuple[str, ...] = (),
    method: str = "GET",
    version: str = "1.1",
    **replace: str,
) -> HTTPRequest:
    """Parse a real request: BASE minus ``drop``, fields replaced by keyword, plus extras."""
    fields = []
    for name, value in BASE:
        key = name.replace("-", "_").lower()
        if name in drop:
            continue
        fields.append((name, replace.pop(key, value)))
    fields += [(name.replace("_", "-"), value) for name, value in replace.items()]
    fields += headers or []
    head = f"{method} /chat HTTP/{version}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in fields) + "\r\n"
    (request,) = RequestParser().feed(head.encode("latin-1"))
    return request


def refused(request: HTTPRequest) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        check_request(request)
    return info.value


def make_response(
    status: int = 101, headers: list[tuple[str, str]] | None = None, body: bytes = b""
) -> HTTPResponse:
    if headers is None:
        headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", ACCEPT),
        ]
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    if status != 101:
        head += f"Content-Length: {len(body)}\r\n"
    response = ResponseParser().feed(head.encode() + b"\r\n" + body)
    assert response is not None
    return response


# -- keys ----------------------------------------------------------------------------------


def test_1_3_accept_key_of_the_rfc_example() -> None:
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert accept_key(KEY) == ACCEPT


def test_4_1_generated_key_is_16_random_bytes() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 16


# -- header grammar --------------------------------------------------------------------------


def test_rfc7230_7_token_list_over_several_fields() -> None:
    assert parse_token_list(["keep-alive, Upgrade", "x"]) == ["keep-alive", "Upgrade", "x"]
    assert parse_token_list([" , a ,, \tb , ", ""]) == ["a", "b"]
    assert parse_token_list([]) == []


@pytest.mark.parametrize("value", ["a b", "a;b", "a/b", '"a"', "a,\x00", "é"])
def test_rfc7230_7_bad_token_list_raises(value: str) -> None:
    with pytest.raises(ValueError):
        parse_token_list([value])


def test_9_1_extension_with_params() -> None:
    offers = parse_extension_header(
        ["permessage-deflate; client_max_window_bits; server_max_window_bits=10"]
    )
    assert offers == [
        ExtensionOffer(
            "permessage-deflate",
            (("client_max_window_bits", None), ("server_max_window_bits", "10")),
        )
    ]


def test_9_1_quoted_string_param_is_unescaped() -> None:
    (offer,) = parse_extension_header(['x; a="10"; b="p\\q"; c = "tok-en"'])
    assert offer.params == (("a", "10"), ("b", "pq"), ("c", "tok-en"))


@pytest.mark.parametrize("value", ['x; a="1 0"', 'x; a=""', 'x; a="a,b"', 'x; a="\\""'])
def test_9_1_quoted_value_must_be_a_token_after_unescaping(value: str) -> None:
    with pytest.raises(ValueError):
        parse_extension_header([value])


def test_9_1_several_extension_headers_and_whitespace() -> None:
    offers = parse_extension_header(
        ["  a ;  p = 1 , b", "permessage-deflate;client_max_window_bits, ", "c"]
    )
    assert [offer.name for offer in offers] == ["a", "b", "permessage-deflate", "c"]
    assert offers[0].params == (("p", "1"),)
    assert offers[2].params == (("client_max_window_bits", None),)
    assert parse_extension_header([]) == []


@pytest.mark.parametrize(
    "value",
    [
        "",
        " , ",
        "a;",
        ";a",
        "a=b",
        "a; b=",
        "a; b=c d",
        'a; b="unterminated',
        "a b",
        "a; b==c",
        "a;; b",
        "a; b=c;",
        "a\r\nb",
        'a; b="\u00e9"',
    ],
)
def test_9_1_malformed_extension_header_raises(value: str) -> None:
    with pytest.raises(ValueError):
        parse_extension_header([value])


def test_9_1_format_extension_header() -> None:
    offers = [
        ExtensionOffer("permessage-deflate", (("client_max_window_bits", None),)),
        ExtensionOffer("x-webkit-deflate-frame", (("max_window_bits", "10"), ("z", None))),
        ExtensionOffer("plain"),
    ]
    text = format_extension_header(offers)
    assert text == (
        "permessage-deflate; client_max_window_bits, "
        "x-webkit-deflate-frame; max_window_bits=10; z, plain"
    )
    assert parse_extension_header([text]) == offers
    assert format_extension_header([]) == ""


@pytest.mark.parametrize(
    "offer",
    [
        ExtensionOffer("a b"),
        ExtensionOffer("a", (("p", "x y"),)),
        ExtensionOffer("a", (("", None),)),
    ],
)
def test_9_1_format_refuses_non_tokens(offer: ExtensionOffer) -> None:
    with pytest.raises(ValueError):
        format_extension_header([offer])


# -- server: check_request -------------------------------------------------------------------


def test_4_2_1_valid_request() -> None:
    info = check_request(make_request())
    assert info == UpgradeInfo(
        key=KEY,
        version=13,
        host="server.example.com",
        origin=None,
        subprotocols=(),
        extensions=(),
    )


def test_4_2_1_method_must_be_get_else_405() -> None:
    error = refused(make_request(method="POST"))
    assert error.status == 405
    assert ("Allow", "GET") in error.headers


@pytest.mark.parametrize("version", ["1.0", "0.9"])
def test_4_2_1_http_version_must_be_1_1_or_later(version: str) -> None:
    assert refused(make_request(version=version)).status == 400


def test_4_2_1_missing_host_is_400() -> None:
    assert refused(make_request(drop=("Host",))).status == 400


def test_4_2_1_repeated_host_is_400() -> None:
    assert refused(make_request([("Host", "other")])).status == 400


@pytest.mark.parametrize("upgrade", [None, "h2c", "websocket2", "web socket"])
def test_4_2_1_upgrade_without_websocket_is_426(upgrade: str | None) -> None:
    request = make_request(drop=("Upgrade",)) if upgrade is None else make_request(upgrade=upgrade)
    error = refused(request)
    assert error.status == 426
    assert ("Upgrade", "websocket") in error.headers
    assert ("Connection", "Upgrade") in error.headers
    assert "WebSocket upgrade is required" in error.reason


@pytest.mark.parametrize("upgrade", ["WebSocket", "h2c, websocket", "HTTP/2.0, WEBSOCKET"])
def test_4_2_1_upgrade_websocket_is_case_insensitive_in_a_list(upgrade: str) -> None:
    request = make_request(upgrade=upgrade)
    assert is_websocket_upgrade(request)
    assert check_request(request).version == 13


def test_4_2_1_is_websocket_upgrade() -> None:
    assert is_websocket_upgrade(make_request())
    assert not is_websocket_upgrade(make_request(drop=("Upgrade",)))
    assert not is_websocket_upgrade(make_request(upgrade="a b"))


@pytest.mark.parametrize("connection", [None, "keep-alive", "close, upgrade-please", "a b"])
def test_4_2_1_connection_without_upgrade_is_400(connection: str | None) -> None:
    if connection is None:
        request = make_request(drop=("Connection",))
    else:
        request = make_request(connection=connection)
    assert refused(request).status == 400


def test_4_2_1_connection_upgrade_token_in_list_or_later_field() -> None:
    assert check_request(make_request(connection="keep-alive, UPGRADE"))
    request = make_request([("Connection", "Upgrade")], connection="keep-alive")
    assert check_request(request)


def test_4_2_1_hixie_76_is_400() -> None:
    request = make_request(
        [
            ("Sec-WebSocket-Key1", "4 @1  46546xW%0l 1 5"),
            ("Sec-WebSocket-Key2", "12998 5 Y3 1  .P00"),
        ],
        drop=("Sec-WebSocket-Version", "Sec-WebSocket-Key"),
    )
    error = refused(request)
    assert error.status == 400
    assert error.reason == "hixie-76 (draft version 0) WebSocket is not supported"
    assert not isinstance(error, UnsupportedVersion)


@pytest.mark.parametrize("version", ["7", "8", "13"])
def test_4_4_supported_versions_are_accepted(version: str) -> None:
    assert SUPPORTED_VERSIONS == (13, 8, 7)
    assert check_request(make_request(sec_websocket_version=version)).version == int(version)


@pytest.mark.parametrize("version", ["0", "9", "12", "14", "abc", "013", "13, 8", ""])
def test_4_4_unsupported_version_is_426_with_versions(version: str) -> None:
    error = refused(make_request(sec_websocket_version=version))
    assert isinstance(error, UnsupportedVersion)
    assert error.status == 426
    assert ("Sec-WebSocket-Version", "13, 8, 7") in error.headers


def test_4_4_missing_version_is_426() -> None:
    error = refused(make_request(drop=("Sec-WebSocket-Version",)))
    assert isinstance(error, UnsupportedVersion)
    assert ("Sec-WebSocket-Version", "13, 8, 7") in error.headers


def test_4_4_repeated_version_is_426() -> None:
    error = refused(make_request([("Sec-WebSocket-Version", "13")]))
    assert isinstance(error, UnsupportedVersion)


@pytest.mark.parametrize(
    "key",
    [
        "dGhlIHNhbXBsZSBub25jZQ",  # no padding
        "dGhlIHNhbXBsZSBub25j",  # 15 bytes
        "dGhlIHNhbXBsZSBub25jZQAA",  # 17 bytes
        "not base64 at all!!!!!==",
        "",
    ],
)
def test_4_2_1_key_must_be_base64_of_16_bytes(key: str) -> None:
    error = refused(make_request(sec_websocket_key=key))
    assert error.status == 400
    assert not isinstance(error, UnsupportedVersion)


def test_4_2_1_missing_or_repeated_key_is_400() -> None:
    assert refused(make_request(drop=("Sec-WebSocket-Key",))).status == 400
    assert refused(make_request([("Sec-WebSocket-Key", KEY)])).status == 400


def test_4_2_1_origin() -> None:
    info = check_request(make_request([("Origin", "http://example.com")]))
    assert info.origin == "http://example.com"
    assert refused(make_request([("Origin", "http://a"), ("Origin", "http://b")])).status == 400


@pytest.mark.parametrize("version", ["7", "8"])
def test_4_2_1_drafts_send_sec_websocket_origin(version: str) -> None:
    request = make_request(
        [("Sec-WebSocket-Origin", "http://a.test")], sec_websocket_version=version
    )
    assert check_request(request).origin == "http://a.test"


def test_4_2_1_version_13_ignores_sec_websocket_origin() -> None:
    request = make_request([("Sec-WebSocket-Origin", "http://a.test")])
    assert check_request(request).origin is None


def test_4_2_1_subprotocols_from_every_field_in_order() -> None:
    request = make_request(
        [("Sec-WebSocket-Protocol", "chat, superchat"), ("Sec-WebSocket-Protocol", "v2.json")]
    )
    assert check_request(request).subprotocols == ("chat", "superchat", "v2.json")


def test_4_2_1_malformed_subprotocol_is_400() -> None:
    assert refused(make_request([("Sec-WebSocket-Protocol", "chat room")])).status == 400


def test_4_2_1_extensions_offered() -> None:
    request = make_request(
        [
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
            ("Sec-WebSocket-Extensions", 'x-webkit-deflate-frame; max_window_bits="10"'),
        ]
    )
    info = check_request(request)
    assert [offer.name for offer in info.extensions] == [
        "permessage-deflate",
        "x-webkit-deflate-frame",
    ]
    assert info.extensions[1].params == (("max_window_bits", "10"),)


def test_4_2_1_malformed_extensions_is_400() -> None:
    assert refused(make_request([("Sec-WebSocket-Extensions", "a; b=")])).status == 400


# -- origin policy (section 10.2) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "expected"),
    [
        (None, "example.com", True),  # not a browser
        ("http://example.com", "example.com", True),
        ("https://EXAMPLE.com", "example.com", True),
        ("http://example.com:80", "example.com", True),
        ("http://example.com", "example.com:80", True),
        ("https://example.com", "example.com:443", True),
        ("http://example.com:8080", "example.com:8080", True),
        ("http://example.com", "example.com:8080", False),  # different port
        ("http://example.com:8080", "example.com", False),
        ("https://example.com", "example.com:80", False),
        ("http://evil.test", "example.com", False),
        ("http://example.com.evil.test", "example.com", False),
        ("null", "example.com", False),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://example.com/path", "example.com", False),
        ("garbage", "example.com", False),
    ],
)
def test_10_2_default_origin_policy_is_same_host(
    origin: str | None, host: str, expected: bool
) -> None:
    assert origin_allowed(origin, host, None) is expected


def test_10_2_allow_list() -> None:
    allowed = ["https://app.example.com", "HTTP://Other.test:80", "http://dev.test:3000"]
    assert origin_allowed("https://app.example.com", "api.example.com", allowed)
    assert origin_allowed("https://app.example.com:443", "api.example.com", allowed)
    assert origin_allowed("http://other.test", "api.example.com", allowed)
    assert origin_allowed("http://dev.test:3000", "api.example.com", allowed)
    assert not origin_allowed("http://dev.test", "api.example.com", allowed)
    assert not origin_allowed("http://app.example.com", "api.example.com", allowed)
    assert not origin_allowed("null", "api.example.com", allowed)
    assert origin_allowed("null", "api.example.com", ["null"])
    assert origin_allowed(None, "api.example.com", [])


def test_10_2_star_allows_every_origin() -> None:
    assert origin_allowed("http://evil.test", "example.com", ["*"])
    assert origin_allowed("null", "example.com", ["*"])


def test_10_2_version_8_origin_is_checked_like_origin() -> None:
    request = make_request(
        [("Sec-WebSocket-Origin", "http://evil.test")], sec_websocket_version="8"
    )
    info = check_request(request)
    assert not origin_allowed(info.origin, info.host, None)


# -- server: responses ---------------------------------------------------------------------


def test_4_2_2_build_accept_for_the_rfc_example() -> None:
    info = check_request(make_request())
    assert build_accept(info) == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )


def test_4_2_2_build_accept_with_protocol_extensions_and_headers() -> None:
    info = check_request(make_request())
    data = build_accept(
        info,
        subprotocol="chat",
        extensions="permessage-deflate",
        headers=[("X-Server", "corral")],
    )
    response = ResponseParser().feed(data)
    assert response is not None
    accepted = check_response(response, KEY, subprotocols=["chat"])
    assert accepted.subprotocol == "chat"
    assert accepted.extensions == (ExtensionOffer("permessage-deflate"),)
    assert accepted.headers.get("X-Server") == "corral"


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Evil", "a\r\nSet-Cookie: x=1")],
        [("X-Evil", "a\nb")],
        [("X-Evil\r\nSet-Cookie", "x")],
        [("Bad Name", "x")],
        [("X", "\u20ac")],
    ],
)
def test_4_2_2_header_injection_is_refused(headers: list[tuple[str, str]]) -> None:
    info = check_request(make_request())
    with pytest.raises(ValueError):
        build_accept(info, headers=headers)
    with pytest.raises(ValueError):
        build_http_response(400, headers=headers)
    with pytest.raises(ValueError):
        build_request("h", "/", KEY, headers=headers)


def test_4_2_2_injection_through_subprotocol_or_extensions_is_refused() -> None:
    info = check_request(make_request())
    with pytest.raises(ValueError):
        build_accept(info, subprotocol="chat\r\nX: y")
    with pytest.raises(ValueError):
        build_accept(info, extensions="a\r\nX: y")


def test_4_2_2_build_http_response() -> None:
    data = build_http_response(
        426,
        body="WebSocket required",
        headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
    )
    assert data.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    response = ResponseParser().feed(data)
    assert response is not None
    assert response.status == 426
    assert response.body == b"WebSocket required"
    assert response.headers.get("Content-Type") == "text/plain; charset=utf-8"
    assert response.headers.get("Content-Length") == "18"
    # One Connection field, with both options (#11: it was "close" and "Upgrade" apart).
    assert response.headers.get_all("Connection") == ["Upgrade, close"]


def test_4_2_2_build_http_response_options() -> None:
    data = build_http_response(200, body="\u00e9", keep_alive=True, reason="Fine")
    assert data.startswith(b"HTTP/1.1 200 Fine\r\n")
    assert b"Connection" not in data
    assert data.endswith(b"\r\n\r\n\xc3\xa9")
    empty = build_http_response(403)
    assert b"Content-Type" not in empty
    assert b"Content-Length: 0\r\n" in empty
    own_type = build_http_response(
        200, body=b"{}", content_type=None, headers=[("Content-Type", "application/json")]
    )
    assert own_type.count(b"Content-Type") == 1
    # A Content-Type among the headers wins over content_type's default: never two.
    given = build_http_response(401, body=b"{}", headers=[("Content-Type", "application/json")])
    assert given.count(b"Content-Type") == 1 and b"application/json" in given
    with pytest.raises(ValueError, match="Content-Length is set by corral"):
        build_http_response(200, body=b"x", headers=[("content-length", "5")])
    with pytest.raises(ValueError, match="Transfer-Encoding is set by corral"):
        build_http_response(200, headers=[("Transfer-Encoding", "chunked")])
    # A Connection option given (any case) is merged with close, not repeated.
    merged = build_http_response(503, headers=[("connection", "Close, keep-alive")])
    assert merged.count(b"Connection") == 1 and b"Connection: Close, keep-alive\r\n" in merged
    assert build_http_response(599).startswith(b"HTTP/1.1 599 \r\n")
    no_content = build_http_response(204)
    assert b"Content-Length" not in no_content
    with pytest.raises(ValueError):
        build_http_response(204, body=b"x")
    with pytest.raises(ValueError):
        build_http_response(42)
    with pytest.raises(ValueError):
        build_http_response(400, reason="Bad\r\nX: y")


# -- client side -----------------------------------------------------------------------------


def test_4_1_build_request_round_trips_through_check_request() -> None:
    data = build_request(
        "server.example.com",
        "/chat?x=1",
        KEY,
        subprotocols=["chat", "superchat"],
        extensions="permessage-deflate; client_max_window_bits",
        origin="http://example.com",
        headers=[("Authorization", "Bearer t")],
    )
    assert data.startswith(b"GET /chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\n")
    (request,) = RequestParser().feed(data)
    info = check_request(request)
    assert info.key == KEY
    assert info.version == 13
    assert info.origin == "http://example.com"
    assert info.subprotocols == ("chat", "superchat")
    assert info.extensions[0].name == "permessage-deflate"
    assert request.headers.get("Authorization") == "Bearer t"


@pytest.mark.parametrize("version", [7, 8])
def test_4_1_build_request_for_drafts_uses_sec_websocket_origin(version: int) -> None:
    data = build_request("h", "/", KEY, origin="http://o.test", version=version)
    assert b"Sec-WebSocket-Origin: http://o.test\r\n" in data
    assert b"\r\nOrigin:" not in data
    (request,) = RequestParser().feed(data)
    assert check_request(request).version == version


def test_4_1_build_request_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        build_request("h", "/", KEY, version=12)
    for resource in ["", "/a b", "/a\r\nX: y"]:
        with pytest.raises(ValueError):
            build_request("h", resource, KEY)
    with pytest.raises(ValueError):
        build_request("h", "/", KEY, subprotocols=["a b"])
    with pytest.raises(ValueError):
        build_request("h\r\nX: y", "/", KEY)


def test_4_1_check_response_accepts_valid_answer() -> None:
    accepted = check_response(make_response(), KEY)
    assert accepted.subprotocol is None
    assert accepted.extensions == ()
    assert accepted.headers.get("Upgrade") == "websocket"


def test_4_1_non_101_is_invalid_status() -> None:
    response = make_response(403, [("X-Why", "no")], b"denied")
    with pytest.raises(InvalidStatus) as info:
        check_response(response, KEY)
    assert info.value.status == 403
    assert ("X-Why", "no") in info.value.headers
    assert info.value.body == b"denied"


@pytest.mark.parametrize(
    "headers",
    [
        [("Connection", "Upgrade"), ("Sec-WebSocket-Accept", ACCEPT)],
        [("Upgrade", "h2c"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", ACCEPT)],
        [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", ACCEPT)],
        [("Upgrade", "websocket"), ("Connection", "close"), ("Sec-WebSocket-Accept", ACCEPT)],
        [("Upgrade", "websocket"), ("Connection", "Upgrade")],
        [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "x")],
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", ACCEPT),
            ("Sec-WebSocket-Accept", ACCEPT),
        ],
        [("Upgrade", "a b"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", ACCEPT)],
    ],
)
def test_4_1_client_must_validate_upgrade_connection_accept(
    headers: list[tuple[str, str]],
) -> None:
    with pytest.raises(InvalidResponse) as info:
        check_response(make_response(101, headers), KEY)
    assert not isinstance(info.value, InvalidStatus)
    assert info.value.status == 101


def test_4_1_case_insensitive_upgrade_and_connection() -> None:
    headers = [
        ("Upgrade", "WebSocket"),
        ("Connection", "keep-alive, UPGRADE"),
        ("Sec-WebSocket-Accept", ACCEPT),
    ]
    assert check_response(make_response(101, headers), KEY).subprotocol is None


def test_4_1_accept_for_another_key_is_invalid() -> None:
    with pytest.raises(InvalidResponse):
        check_response(make_response(), generate_key())


def with_extra(*extra: tuple[str, str]) -> HTTPResponse:
    return make_response(
        101,
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", ACCEPT),
            *extra,
        ],
    )


def test_4_1_subprotocol_chosen_from_offer() -> None:
    response = with_extra(("Sec-WebSocket-Protocol", "chat"))
    assert check_response(response, KEY, subprotocols=["x", "chat"]).subprotocol == "chat"


@pytest.mark.parametrize(
    ("extra", "offered"),
    [
        ([("Sec-WebSocket-Protocol", "chat")], []),
        ([("Sec-WebSocket-Protocol", "other")], ["chat"]),
        ([("Sec-WebSocket-Protocol", "chat, x")], ["chat", "x"]),
        ([("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Protocol", "chat")], ["chat"]),
    ],
)
def test_4_1_subprotocol_not_offered_or_several_is_negotiation_error(
    extra: list[tuple[str, str]], offered: list[str]
) -> None:
    with pytest.raises(NegotiationError):
        check_response(with_extra(*extra), KEY, subprotocols=offered)


def test_4_1_extensions_returned_for_the_caller_to_check() -> None:
    response = with_extra(
        ("Sec-WebSocket-Extensions", 'permessage-deflate; server_max_window_bits="12"')
    )
    accepted = check_response(response, KEY)
    assert accepted.extensions == (
        ExtensionOffer("permessage-deflate", (("server_max_window_bits", "12"),)),
    )


def test_4_1_malformed_extensions_is_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        check_response(with_extra(("Sec-WebSocket-Extensions", "a;")), KEY)


@pytest.mark.parametrize("name", ["Sec-WebSocket-Protocol", "sec-websocket-extensions",
                                  "Upgrade", "Connection", "Sec-WebSocket-Accept",
                                  "Content-Length"])
def test_4_2_2_a_101_field_of_corrals_is_not_taken_from_extra_headers(name: str) -> None:
    """The handshake's own fields are set once, by corral: given again in Accept(headers=)
    they are refused where the handler makes the Accept, naming where they come from."""
    from corral import Accept

    with pytest.raises(ValueError, match=f"{name} is set by corral in the 101 answer"):
        Accept(headers=[(name, "x")])
    info = check_request(make_request())
    with pytest.raises(ValueError, match="set by corral"):
        build_accept(info, headers=[(name, "x")])
    assert Accept(headers=[("X-Server", "corral")]).headers == [("X-Server", "corral")]
