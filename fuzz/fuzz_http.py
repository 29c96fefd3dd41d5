"""Fuzz target ``http``: the bounded HTTP/1.1 parsers and the opening handshake (RFC 6455
section 4, RFC 7230).

Checks, for every input (request or response bytes, fuzzer-chosen limits and reads):

- only the documented exceptions escape: ``InvalidRequest`` from ``RequestParser.feed``,
  ``InvalidResponse`` from ``ResponseParser.feed``/``feed_eof``; ``InvalidRequest`` from
  ``check_request``; ``InvalidResponse``, ``InvalidStatus`` or ``NegotiationError`` from
  ``check_response``; ``NegotiationError`` from ``client_confirm``;
- every parsed message respects the limits it was parsed under (request line, header count
  and bytes, body), small ones being chosen here so they are reached often;
- the same bytes parse the same in one read or in many (requests, response, whether it
  fails, the bytes after an upgrade); not always with the same HTTP status: a line both too
  long and malformed is refused by whichever check sees it first (the length check, when
  the line arrives whole; llhttp, when its first bytes come alone);
- a request that passes ``check_request`` gets a 101 from ``build_accept`` (with the first
  subprotocol and the extension ``server_accept`` picks) that parses and passes the client's
  ``check_response`` with that subprotocol; a refusal's status and headers make a response
  ``build_http_response`` accepts;
- the request-head fast path: ``parse_head`` compiled (``corral._http``) and pure
  (``corral._pure_http``) give the same result, at the start of the stream and at a
  fuzzer-chosen offset; a head it accepts, llhttp parses to an equal request that ends at the
  same offset; ``RequestParser`` answers the stream exactly as with llhttp alone.

Why: these parsers face every byte a client or server on the internet sends before the
WebSocket starts; a stray exception there is a crashed connection handler, a missed limit
a memory sink.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any
from urllib.parse import unquote

import atheris
from _harness import INSTRUMENTED, Input, check, cut, main, use_sanitized_speedups

#: Where scripts/fuzz.sh --sanitize puts the ASan/UBSan build of corral._http.
HTTP_ENV = "CORRAL_FUZZ_HTTP"


def use_sanitized_http() -> None:
    """Load the sanitizer build named by ``CORRAL_FUZZ_HTTP`` as ``corral._http`` (as
    ``_harness.use_sanitized_speedups`` does for the frame modules)."""
    path = os.environ.get(HTTP_ENV)
    if not path:
        return
    loader = importlib.machinery.ExtensionFileLoader("corral._http", path)
    spec = importlib.util.spec_from_file_location("corral._http", path, loader=loader)
    if spec is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules["corral._http"] = module
    print(f"fuzz: corral._http from {path}", file=sys.stderr)


use_sanitized_speedups()
use_sanitized_http()
with atheris.instrument_imports(include=[*INSTRUMENTED, "corral._pure_http"]):
    from corral import _pure_http
    from corral.exceptions import (
        HandshakeError,
        InvalidRequest,
        InvalidResponse,
        NegotiationError,
    )
    from corral.protocol.extensions import DeflateSettings
    from corral.protocol.extensions.negotiation import client_confirm, client_offers, server_accept
    from corral.protocol.handshake import (
        build_accept,
        build_http_response,
        check_request,
        check_response,
        is_websocket_upgrade,
        origin_allowed,
        parse_extension_header,
    )
    from corral.protocol.http11 import (
        Headers,
        HTTPRequest,
        HTTPResponse,
        RequestParser,
        ResponseParser,
    )

_http: ModuleType | None
try:
    import corral._http as _http
except ImportError:
    _http = None

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's example key
SUBPROTOCOLS = ("chat", "superchat")
SETTINGS = (DeflateSettings(), DeflateSettings(server_max_window_bits=9,
                                               client_max_window_bits=15,
                                               server_no_context_takeover=True))


def _limits(inp: Input, request: bool) -> dict[str, int]:
    """Small limits, so inputs of a few hundred bytes reach them (255: the defaults)."""
    limits: dict[str, int] = {}
    line, count, header_bytes, body = inp.byte(), inp.byte(), inp.byte(), inp.byte()
    if request and line != 255:
        limits["max_request_line"] = 1 + line * 4
    if count != 255:
        limits["max_header_count"] = count % 32
    if header_bytes != 255:
        limits["max_header_bytes"] = header_bytes * 8
    if body != 255:
        limits["max_body"] = body * 4
    return limits


def _within(message: HTTPRequest | HTTPResponse, parser: Any) -> None:
    headers = message.headers.items()
    check(len(headers) <= parser.max_header_count, "too many headers", len(headers))
    size = sum(len(name) + len(value) for name, value in headers)
    check(size <= parser.max_header_bytes, "headers too large", size)
    check(len(message.body) <= parser.max_body, "body too large", len(message.body))
    if isinstance(message, HTTPRequest):
        check(len(message.target) <= parser.max_request_line, "target too long", message.target)


class LlhttpOnly(RequestParser):
    """The request parser without its fast path: every message through llhttp."""

    def _fast_head(self, data: bytes, pos: int) -> tuple[int, bool] | None:
        return None


def _requests(data: bytes, sizes: list[int], limits: dict[str, int],
              parser_class: type[RequestParser] = RequestParser) -> tuple[object, ...]:
    parser = parser_class(**limits)
    requests: list[HTTPRequest] = []
    error: HandshakeError | None = None
    trailing = b""
    for read in cut(data, sizes):
        if parser.upgraded:
            trailing += read
            continue
        try:
            requests += parser.feed(read)
        except InvalidRequest as exc:
            error = exc
            break
        if parser.upgraded:
            trailing = parser.trailing
    if error is None and not parser.upgraded:
        try:
            requests += parser.feed(b"")  # raises an error held back behind good requests
        except InvalidRequest as exc:
            error = exc
    for request in requests:
        _within(request, parser)
    if error is not None:
        check(error.status in (400, 405, 413, 414, 426, 431), "odd status", error.status)
    return requests, error is not None, parser.upgraded, trailing


def _head_limits(limits: dict[str, int]) -> tuple[int, int, int]:
    return (limits.get("max_request_line", 8192), limits.get("max_header_count", 100),
            limits.get("max_header_bytes", 16384))


def _fast_path(data: bytes, limits: dict[str, int], offset: int) -> None:
    """parse_head's twins agree; what they accept, llhttp parses the same, ending there."""
    head_limits = _head_limits(limits)
    parsed = _pure_http.parse_head(data, 0, *head_limits)
    offset = min(offset, len(data))
    at = _pure_http.parse_head(data, offset, *head_limits)
    if _http is not None:
        compiled = _http.parse_head(data, 0, *head_limits)
        check(compiled == parsed, "parse_head: compiled != pure", parsed, compiled)
        compiled = _http.parse_head(data, offset, *head_limits)
        check(compiled == at, "parse_head at offset: compiled != pure", offset, at, compiled)
    if parsed is None:
        return
    method, target, raw_path, query, version, fields, keep_alive, upgrade, end = parsed
    check(LlhttpOnly(**limits).feed(data[: end - 1]) == [], "llhttp ends the head earlier")
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        return  # RequestParser declines it, llhttp refuses it (checked by test_one_input)
    expected = HTTPRequest(method, target, path, raw_path, query, version, Headers._of(fields),
                           b"", keep_alive, upgrade)
    try:
        requests = LlhttpOnly(**limits).feed(data[:end])
    except InvalidRequest as exc:
        check(False, "llhttp refuses an accepted head", parsed, exc)
    check(requests == [expected] and requests[0].headers._fields == fields,
          "llhttp parses an accepted head otherwise", parsed, requests)


def _handshake(request: HTTPRequest) -> None:
    """The server's checks and answer, then the client's check of that answer."""
    is_websocket_upgrade(request)
    try:
        info = check_request(request)
    except InvalidRequest as exc:
        build_http_response(exc.status, body=exc.reason, headers=exc.headers)
        return
    for allowed in (None, ["*"], ["https://example.com", "null"]):
        origin_allowed(info.origin, info.host, allowed)
    _, extensions = server_accept(info.extensions, SETTINGS[0])
    subprotocol = info.subprotocols[0] if info.subprotocols else None
    answer = build_accept(info, subprotocol=subprotocol, extensions=extensions)
    parser = ResponseParser()
    response = parser.feed(answer + b"\x81\x00")
    check(response is not None and parser.trailing == b"\x81\x00", "101 did not parse", answer)
    assert response is not None
    accepted = check_response(response, info.key, subprotocols=info.subprotocols)
    check(accepted.subprotocol == subprotocol, "subprotocol lost", accepted, subprotocol)
    want = parse_extension_header([extensions]) if extensions else []
    check(list(accepted.extensions) == want, "extensions lost", accepted, extensions)


def _response(data: bytes, sizes: list[int], limits: dict[str, int],
              eof: bool) -> tuple[object, ...]:
    parser = ResponseParser(**limits)
    response: HTTPResponse | None = None
    error: HandshakeError | None = None
    reads = list(cut(data, sizes))
    trailing = b""
    for i, read in enumerate(reads):
        try:
            response = parser.feed(read)
        except InvalidResponse as exc:
            error = exc
            break
        if response is not None:
            trailing = parser.trailing  # after a 101, the WebSocket's first bytes
            if response.status == 101:
                trailing += b"".join(reads[i + 1 :])
            break
    if response is None and error is None and eof:
        try:
            response = parser.feed_eof()
        except InvalidResponse as exc:
            error = exc
    if response is not None:
        _within(response, parser)
    return response, error is not None, trailing


def _client_checks(response: HTTPResponse, settings: DeflateSettings) -> None:
    try:
        accepted = check_response(response, KEY, subprotocols=SUBPROTOCOLS)
    except (InvalidResponse, NegotiationError):  # InvalidStatus is an InvalidResponse
        return
    with contextlib.suppress(NegotiationError):
        client_confirm(accepted.extensions, client_offers(settings), settings)


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    config = inp.byte()  # 0: a response (else a request), 1: EOF after it, 2: settings
    is_response = inp.flag(config, 0)
    limits = _limits(inp, not is_response)
    sizes = inp.cuts()
    stream = inp.rest()
    if is_response:
        eof = inp.flag(config, 1)
        whole = _response(stream, [], limits, eof)
        pieces = _response(stream, sizes, limits, eof)
        check(pieces == whole, "reads change the response", whole, pieces)
        if whole[0] is not None:
            assert isinstance(whole[0], HTTPResponse)
            _client_checks(whole[0], SETTINGS[inp.flag(config, 2)])
    else:
        whole = _requests(stream, [], limits)
        pieces = _requests(stream, sizes, limits)
        check(pieces == whole, "reads change the requests", whole, pieces)
        llhttp = _requests(stream, [], limits, LlhttpOnly)
        check(llhttp == whole, "the fast path changes the requests", llhttp, whole)
        _fast_path(stream, limits, sizes[0] if sizes else 0)
        requests = whole[0]
        assert isinstance(requests, list)
        for request in requests:
            _handshake(request)


if __name__ == "__main__":
    main(test_one_input)
