"""The opening handshake: RFC 6455 section 4, and the hybi drafts 7 and 8 that share it.

Server side, :func:`check_request` validates an upgrade request rule by rule (each rule cites
the RFC sentence it enforces) and :func:`build_accept` writes the 101 answer. Client side,
:func:`build_request` writes the upgrade request and :func:`check_response` validates the
answer. Header lists are parsed from their ABNF by a small tokenizer, never split on commas,
because a quoted extension parameter may contain a comma. Sans-I/O: bytes and values only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import TypeVar

from corral.exceptions import (
    InvalidRequest,
    InvalidResponse,
    InvalidStatus,
    NegotiationError,
    UnsupportedVersion,
)
from corral.protocol.http11 import Headers, HTTPRequest, HTTPResponse

__all__ = [
    "GUID",
    "SUPPORTED_VERSIONS",
    "AcceptInfo",
    "ExtensionOffer",
    "UpgradeInfo",
    "accept_key",
    "build_accept",
    "build_http_response",
    "build_request",
    "check_accept_headers",
    "check_request",
    "check_response",
    "format_extension_header",
    "generate_key",
    "is_websocket_upgrade",
    "origin_allowed",
    "parse_extension_header",
    "parse_token_list",
    "reason_phrase",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUPPORTED_VERSIONS = (13, 8, 7)
_SUPPORTED_TEXT = frozenset(str(version) for version in SUPPORTED_VERSIONS)

# RFC 7230 section 3.2.6: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE, with obs-text allowed.
_QUOTED = re.compile(r'"((?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*)"')
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# A value written into a header: no CR, LF or NUL, so nothing can be injected.
_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

_T = TypeVar("_T")


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for ``key``: base64(SHA-1(key + GUID)), RFC 6455 section 4.2.2."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def generate_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64 (section 4.1: "randomly selected")."""
    return base64.b64encode(secrets.token_bytes(16)).decode("ascii")


class _Scanner:
    """A cursor over one header value, for the few productions the handshake needs."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_ows(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def take(self, char: str) -> bool:
        """Consume ``char`` if it is next (after optional whitespace)."""
        self.skip_ows()
        if self.text.startswith(char, self.pos):
            self.pos += 1
            return True
        return False

    def token(self) -> str:
        self.skip_ows()
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            raise ValueError(f"expected a token at position {self.pos}")
        self.pos = match.end()
        return match.group()

    def token_or_quoted(self) -> str:
        self.skip_ows()
        match = _QUOTED.match(self.text, self.pos)
        if match is None:
            return self.token()
        self.pos = match.end()
        return _QUOTED_PAIR.sub(lambda pair: pair.group(1), match.group(1))


def _parse_list(
    values: Sequence[str], element: Callable[[_Scanner], _T], *, required: bool = False
) -> list[_T]:
    """A ``#element`` list (RFC 7230 section 7) spread over several fields.

    Empty elements are skipped ("a recipient MUST accept empty list elements"); with
    ``required`` (``1#element``) each field must hold at least one element.
    """
    elements: list[_T] = []
    for value in values:
        scanner = _Scanner(value)
        found = False
        while True:
            while scanner.take(","):
                pass
            scanner.skip_ows()
            if scanner.at_end():
                break
            elements.append(element(scanner))
            found = True
            scanner.skip_ows()
            if not scanner.at_end() and not scanner.take(","):
                raise ValueError(f"expected ',' at position {scanner.pos}")
        if required and not found:
            raise ValueError("empty list")
    return elements


def parse_token_list(values: Sequence[str]) -> list[str]:
    """The elements of a ``#token`` list (Connection, Sec-WebSocket-Protocol)."""
    return _parse_list(values, _Scanner.token)


def _protocol(scanner: _Scanner) -> str:
    """protocol = protocol-name ["/" protocol-version] (RFC 7230 section 6.7, Upgrade)."""
    name = scanner.token()
    if scanner.text.startswith("/", scanner.pos):  # no whitespace around "/"
        scanner.pos += 1
        return f"{name}/{scanner.token()}"
    return name


@dataclass(frozen=True, slots=True)
class ExtensionOffer:
    """One element of Sec-WebSocket-Extensions: a name and its parameters, in order.

    A parameter without a value (``client_max_window_bits``) has the value None.
    """

    name: str
    params: tuple[tuple[str, str | None], ...] = ()


def parse_extension_header(values: Sequence[str]) -> list[ExtensionOffer]:
    """Parse Sec-WebSocket-Extensions fields (RFC 6455 section 9.1).

    extension-list = 1#extension; extension = extension-token *( ";" extension-param );
    extension-param = token [ "=" (token | quoted-string) ]. A quoted value must still be a
    token once unescaped ("the value after quoted-string unescaping MUST conform to the
    'token' ABNF"). Raises ValueError on anything else.
    """
    return _parse_list(values, _extension, required=True)


def _extension(scanner: _Scanner) -> ExtensionOffer:
    name = scanner.token()
    params: list[tuple[str, str | None]] = []
    while scanner.take(";"):
        param = scanner.token()
        value: str | None = None
        if scanner.take("="):
            value = scanner.token_or_quoted()
            if not _TOKEN.fullmatch(value):
                raise ValueError(f"extension parameter {param!r} is not a token")
        params.append((param, value))
    return ExtensionOffer(name, tuple(params))


def format_extension_header(offers: Sequence[ExtensionOffer]) -> str:
    """The Sec-WebSocket-Extensions value for ``offers`` (the reverse of parsing)."""
    elements = []
    for offer in offers:
        parts = [_require_token(offer.name)]
        for name, value in offer.params:
            if value is None:
                parts.append(_require_token(name))
            else:
                parts.append(f"{_require_token(name)}={_require_token(value)}")
        elements.append("; ".join(parts))
    return ", ".join(elements)


def _require_token(text: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"not a token: {text!r}")
    return text


@dataclass(frozen=True, slots=True)
class UpgradeInfo:
    """What a valid upgrade request offers; the server picks from it."""

    key: str
    version: int
    host: str
    origin: str | None
    subprotocols: tuple[str, ...]
    extensions: tuple[ExtensionOffer, ...]


def _has_token(headers: Headers, name: str, wanted: str) -> bool:
    """Whether the ``name`` fields list ``wanted`` (case-insensitive); ValueError if malformed."""
    values = headers.get_all(name)
    if len(values) == 1 and values[0].lower() == wanted:
        return True  # the usual "Upgrade: websocket" / "Connection: Upgrade"
    parse = _protocol if name == "Upgrade" else _Scanner.token
    return any(item.lower() == wanted for item in _parse_list(values, parse))


def is_websocket_upgrade(request: HTTPRequest) -> bool:
    """Whether the request asks for WebSocket at all (a plain request gets 426 elsewhere)."""
    try:
        return _has_token(request.headers, "Upgrade", "websocket")
    except ValueError:
        return False


def _single(headers: Headers, name: str) -> str:
    """The one value of ``name``: an upgrade request carries these fields exactly once."""
    values = headers.get_all(name)
    if len(values) != 1:
        state = "missing" if not values else "repeated"
        raise InvalidRequest(f"{name} header is {state}", status=400)
    return values[0].strip(" \t")


def _check_method(request: HTTPRequest) -> None:
    # 4.2.1: "An HTTP/1.1 or higher GET request, including a "Request-URI"."
    if request.method != "GET":
        raise InvalidRequest(
            "WebSocket upgrade requires the GET method", status=405, headers=[("Allow", "GET")]
        )


def _check_http_version(request: HTTPRequest) -> None:
    # 4.2.1: "An HTTP/1.1 or higher GET request" (4.1: "The method of the request MUST be
    # GET, and the HTTP version MUST be at least 1.1.")
    major, _, minor = request.http_version.partition(".")
    if not (major.isdigit() and minor.isdigit()) or (int(major), int(minor)) < (1, 1):
        raise InvalidRequest("WebSocket upgrade requires HTTP/1.1 or later", status=400)


def _check_host(request: HTTPRequest) -> str:
    # 4.2.1: "A |Host| header field containing the server's authority."
    return _single(request.headers, "Host")


def _check_upgrade(request: HTTPRequest) -> None:
    # 4.2.1: "An |Upgrade| header field containing the value "websocket", treated as an
    # ASCII case-insensitive value."
    if not is_websocket_upgrade(request):
        raise InvalidRequest(
            "a WebSocket upgrade is required (Upgrade: websocket)",
            status=426,
            headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        )


def _check_connection(request: HTTPRequest) -> None:
    # 4.2.1: "A |Connection| header field that includes the token "Upgrade", treated as an
    # ASCII case-insensitive value."
    try:
        found = _has_token(request.headers, "Connection", "upgrade")
    except ValueError:
        raise InvalidRequest("malformed Connection header", status=400) from None
    if not found:
        raise InvalidRequest("Connection header must include 'Upgrade'", status=400)


def _check_not_hixie76(request: HTTPRequest) -> None:
    # draft-hixie-thewebsocketprotocol-76 (hybi-00) sends Sec-WebSocket-Key1/Key2 and no
    # version; its handshake is incompatible, so say so instead of asking for a version.
    headers = request.headers
    if (
        "Sec-WebSocket-Key1" in headers or "Sec-WebSocket-Key2" in headers
    ) and "Sec-WebSocket-Version" not in headers:
        raise InvalidRequest("hixie-76 (draft version 0) WebSocket is not supported", status=400)


def _check_version(request: HTTPRequest) -> int:
    # 4.2.1: "A |Sec-WebSocket-Version| header field, with a value of 13." 4.4: otherwise
    # "send an appropriate HTTP error code (such as 426 Upgrade Required) and a
    # |Sec-WebSocket-Version| header field indicating the version(s) the server is capable
    # of understanding."
    values = request.headers.get_all("Sec-WebSocket-Version")
    if len(values) != 1:
        raise UnsupportedVersion(", ".join(values))
    value = values[0].strip(" \t")
    if value not in _SUPPORTED_TEXT:
        raise UnsupportedVersion(value)
    return int(value)


def _check_key(request: HTTPRequest) -> str:
    # 4.2.1: "A |Sec-WebSocket-Key| header field with a base64-encoded value that, when
    # decoded, is 16 bytes in length."
    key = _single(request.headers, "Sec-WebSocket-Key")
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise InvalidRequest("Sec-WebSocket-Key is not base64", status=400) from None
    if len(raw) != 16:
        raise InvalidRequest("Sec-WebSocket-Key must decode to 16 bytes", status=400)
    return key


def _origin(request: HTTPRequest, version: int) -> str | None:
    # 4.2.1: "Optionally, an |Origin| header field." The drafts 7 and 8 named it
    # |Sec-WebSocket-Origin|. RFC 6454 section 7.3: at most one Origin field.
    names = ["Origin"] if version == 13 else ["Origin", "Sec-WebSocket-Origin"]
    for name in names:
        values = request.headers.get_all(name)
        if len(values) > 1:
            raise InvalidRequest(f"{name} header is repeated", status=400)
        if values:
            return values[0].strip(" \t")
    return None


def _offered(
    request: HTTPRequest, name: str, parse: Callable[[Sequence[str]], list[_T]]
) -> tuple[_T, ...]:
    # 4.2.1: "Optionally, a |Sec-WebSocket-Protocol| header field, with a list of values
    # indicating which protocols the client would like to speak", and likewise for
    # |Sec-WebSocket-Extensions|; a list that does not parse is a bad request.
    try:
        return tuple(parse(request.headers.get_all(name)))
    except ValueError:
        raise InvalidRequest(f"malformed {name} header", status=400) from None


def check_request(request: HTTPRequest) -> UpgradeInfo:
    """Validate an opening handshake (RFC 6455 section 4.2.1); InvalidRequest if it fails.

    The error's ``status`` and ``headers`` are the HTTP answer to send (section 4.2.1: "If
    the server ... finds that the client handshake does not satisfy [these requirements],
    the server MUST stop processing the client's handshake and return an HTTP response with
    an appropriate error code (such as 400 Bad Request).").
    """
    _check_method(request)
    _check_http_version(request)
    host = _check_host(request)
    _check_upgrade(request)
    _check_connection(request)
    _check_not_hixie76(request)
    version = _check_version(request)
    key = _check_key(request)
    return UpgradeInfo(
        key=key,
        version=version,
        host=host,
        origin=_origin(request, version),
        subprotocols=_offered(request, "Sec-WebSocket-Protocol", parse_token_list),
        extensions=_offered(request, "Sec-WebSocket-Extensions", parse_extension_header),
    )


def _split_host(text: str) -> tuple[str, int | None] | None:
    """(lowercased host, port or None) from ``host[:port]``; IPv6 literals in brackets."""
    text = text.strip(" \t").lower()
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            return None
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = text.partition(":")
        port = port_text if colon else None
    if not host or (port is not None and not (port.isdigit() and port.isascii())):
        return None
    return host, (int(port) if port else None)


def _parse_origin(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of a serialized origin (RFC 6454 section 6.2), else None."""
    scheme, sep, rest = origin.strip(" \t").partition("://")
    if not sep or not _TOKEN.fullmatch(scheme) or any(c in rest for c in "/?#@"):
        return None
    hostport = _split_host(rest)
    if hostport is None:
        return None
    host, port = hostport
    return scheme.lower(), host, port


def _normalize_origin(origin: str) -> str:
    """Lowercased scheme and host, default port dropped; unparsable values compare raw."""
    parsed = _parse_origin(origin)
    if parsed is None:
        return origin.strip(" \t").lower()
    scheme, host, port = parsed
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_allowed(origin: str | None, host: str, allowed: Sequence[str] | None) -> bool:
    """Whether a handshake's Origin may connect (section 10.2, cross-site WebSocket hijacking).

    No Origin: a non-browser client, allowed. ``allowed`` None (the default policy): only the
    same host and port as the Host header (a browser page from another site is refused;
    "null" too). Otherwise ``"*"`` allows every origin, or the normalized origin must equal
    a normalized entry of ``allowed``.
    """
    if origin is None:
        return True
    if allowed is not None:
        if "*" in allowed:
            return True
        normalized = _normalize_origin(origin)
        return any(normalized == _normalize_origin(entry) for entry in allowed)
    parsed = _parse_origin(origin)
    target = _split_host(host)
    if parsed is None or target is None:
        return False  # includes "null": an opaque origin is never the same site
    scheme, origin_host, origin_port = parsed
    default = _DEFAULT_PORTS.get(scheme)
    host_name, host_port = target
    return origin_host == host_name and (origin_port or default) == (host_port or default)


def _header_lines(headers: Sequence[tuple[str, str]]) -> list[str]:
    """``Name: value`` lines, refusing anything that could end a line and inject fields."""
    lines = []
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name: {name!r}")
        if _FORBIDDEN_IN_VALUE.search(value):
            raise ValueError(f"invalid header value for {name}: CR, LF or NUL")
        lines.append(f"{name}: {value}")
    return lines


def _encode(start_line: str, headers: Sequence[tuple[str, str]], body: bytes = b"") -> bytes:
    # Header values are ISO-8859-1 on the wire (RFC 7230 section 3.2.4); anything else
    # raises UnicodeEncodeError, a ValueError.
    lines = [start_line, *_header_lines(headers), "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


_PLAIN_101 = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Accept: ")


def build_accept(
    info: UpgradeInfo,
    *,
    subprotocol: str | None = None,
    extensions: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The server's 101 answer (section 4.2.2, step 5), ``headers`` appended last; a field
    of the handshake itself among them is refused (ValueError): corral sets it."""
    if subprotocol is None and not extensions and not headers:
        # The usual answer: one template, only the accept key (base64, so ASCII) varies.
        return b"%s%s\r\n\r\n" % (_PLAIN_101, accept_key(info.key).encode("ascii"))
    fields = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(info.key)),
    ]
    if subprotocol is not None:  # 4.2.2: "a single value" among those the client offered
        fields.append(("Sec-WebSocket-Protocol", _require_token(subprotocol)))
    if extensions:
        fields.append(("Sec-WebSocket-Extensions", extensions))
    check_accept_headers(headers)
    fields.extend(headers)
    return _encode("HTTP/1.1 101 Switching Protocols", fields)


def check_accept_headers(headers: Sequence[tuple[str, str]]) -> None:
    """Refuse (ValueError) extra 101 headers that would repeat or contradict a field of the
    handshake itself, which corral sets."""
    for name, _ in headers:
        source = _HANDSHAKE_FIELDS.get(name.lower())
        if source is not None:
            raise ValueError(f"{name} is set by corral in the 101 answer{source}; remove it "
                             "from the headers")


# The 101's own fields, and where each comes from.
_HANDSHAKE_FIELDS = {
    "upgrade": "", "connection": "", "sec-websocket-accept": "",
    "sec-websocket-protocol": " (from Accept(subprotocol=...))",
    "sec-websocket-extensions": " (from the negotiated compression)",
    "content-length": "", "transfer-encoding": "",
}


def reason_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` ("Not Found"), or "" for another code."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def build_http_response(
    status: int,
    *,
    body: bytes | str = b"",
    headers: Sequence[tuple[str, str]] = (),
    content_type: str | None = "text/plain; charset=utf-8",
    keep_alive: bool = False,
    reason: str | None = None,
) -> bytes:
    """A complete plain HTTP/1.1 response, for refusals and non-WebSocket routes.

    Content-Type is sent only with a non-empty body (pass None to give your own in
    ``headers``); Content-Length always, except for 1xx, 204 and 304, which have no body (RFC
    7230 section 3.3.2); ``Connection: close`` unless ``keep_alive``. ``str`` bodies are
    encoded as UTF-8. ``headers`` come last.
    """
    if not 100 <= status <= 999:
        raise ValueError(f"invalid HTTP status: {status}")
    if reason is None:
        reason = reason_phrase(status)
    if _FORBIDDEN_IN_VALUE.search(reason):
        raise ValueError("invalid reason phrase: CR, LF or NUL")
    data = body.encode("utf-8") if isinstance(body, str) else body
    given = {name.lower() for name, _ in headers}
    for name in _COMPUTED & given:
        raise ValueError(f"{_COMPUTED_NAMES[name]} is set by corral from the body; remove it "
                         "from the headers")
    fields: list[tuple[str, str]] = []
    if status < 200 or status in (204, 304):
        if data:
            raise ValueError(f"a {status} response has no body")
    else:
        # A Content-Type among the headers is the one sent: never two.
        if data and content_type is not None and "content-type" not in given:
            fields.append(("Content-Type", content_type))
        fields.append(("Content-Length", str(len(data))))
    extra = list(headers)
    if not keep_alive:
        # One Connection field: the headers' options (a 426's "Upgrade") and "close".
        options = [token.strip() for name, value in extra if name.lower() == "connection"
                   for token in value.split(",") if token.strip()]
        extra = [(name, value) for name, value in extra if name.lower() != "connection"]
        if "close" not in (token.lower() for token in options):
            options.append("close")
        fields.append(("Connection", ", ".join(options)))
    fields.extend(extra)
    return _encode(f"HTTP/1.1 {status} {reason}", fields, data)


# Fields build_http_response computes from the body itself.
_COMPUTED_NAMES = {"content-length": "Content-Length", "transfer-encoding": "Transfer-Encoding"}
_COMPUTED = frozenset(_COMPUTED_NAMES)


def build_request(
    host: str,
    resource: str,
    key: str,
    *,
    subprotocols: Sequence[str] = (),
    extensions: str | None = None,
    origin: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    version: int = 13,
) -> bytes:
    """The client's upgrade request (section 4.1); ``headers`` appended last.

    For the drafts 7 and 8 the origin goes in ``Sec-WebSocket-Origin``, as they specified.
    """
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"unsupported WebSocket version: {version}")
    if not resource or any(c <= " " or c == "\x7f" for c in resource):
        raise ValueError(f"invalid resource name: {resource!r}")
    fields = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", str(version)),
    ]
    if origin is not None:
        fields.append(("Origin" if version == 13 else "Sec-WebSocket-Origin", origin))
    if subprotocols:
        # 4.1: each element "MUST be [a] non-empty string" of token characters.
        fields.append(
            ("Sec-WebSocket-Protocol", ", ".join(_require_token(p) for p in subprotocols))
        )
    if extensions:
        fields.append(("Sec-WebSocket-Extensions", extensions))
    fields.extend(headers)
    return _encode(f"GET {resource} HTTP/1.1", fields)


@dataclass(frozen=True, slots=True)
class AcceptInfo:
    """What the server accepted; the caller checks ``extensions`` against its own offer."""

    subprotocol: str | None
    extensions: tuple[ExtensionOffer, ...]
    headers: Headers


def check_response(
    response: HTTPResponse, key: str, *, subprotocols: Sequence[str] = ()
) -> AcceptInfo:
    """Validate the server's answer (section 4.1: "the client MUST validate the server's
    response as follows"); InvalidResponse, InvalidStatus or NegotiationError if it fails.
    """
    headers = response.headers
    status = response.status
    # 4.1 (1): "If the status code received from the server is not 101, the client handles
    # the response per HTTP procedures." Here: the caller gets status, headers and body.
    if status != 101:
        raise InvalidStatus(status, headers.items(), response.body)
    # 4.1 (2): "If the response lacks an |Upgrade| header field or the |Upgrade| header
    # field contains a value that is not an ASCII case-insensitive match for the value
    # "websocket", the client MUST _Fail the WebSocket Connection_."
    try:
        upgrade_ok = _has_token(headers, "Upgrade", "websocket")
        connection_ok = _has_token(headers, "Connection", "upgrade")
    except ValueError:
        raise InvalidResponse("malformed Upgrade or Connection header", status) from None
    if not upgrade_ok:
        raise InvalidResponse("response Upgrade header is not 'websocket'", status)
    # 4.1 (3): "If the response lacks a |Connection| header field or the |Connection| header
    # field doesn't contain a token that is an ASCII case-insensitive match for the value
    # "Upgrade", the client MUST _Fail the WebSocket Connection_."
    if not connection_ok:
        raise InvalidResponse("response Connection header lacks 'Upgrade'", status)
    # 4.1 (4): "If the response lacks a |Sec-WebSocket-Accept| header field or the
    # |Sec-WebSocket-Accept| contains a value other than the base64-encoded SHA-1 of [the
    # key and the GUID] but ignoring any leading and trailing whitespace, the client MUST
    # _Fail the WebSocket Connection_."
    accepts = headers.get_all("Sec-WebSocket-Accept")
    if len(accepts) != 1 or accepts[0].strip(" \t") != accept_key(key):
        raise InvalidResponse("Sec-WebSocket-Accept does not match the key", status)
    # 4.1 (5): extensions "not present in the client's handshake" fail the connection: the
    # caller, which knows its offer, checks them; here they must at least parse.
    try:
        extensions = tuple(parse_extension_header(headers.get_all("Sec-WebSocket-Extensions")))
    except ValueError:
        raise InvalidResponse("malformed Sec-WebSocket-Extensions header", status) from None
    # 4.1 (6): "If the response includes a |Sec-WebSocket-Protocol| header field and this
    # header field indicates the use of a subprotocol that was not present in the client's
    # handshake ..., the client MUST _Fail the WebSocket Connection_."
    subprotocol = _chosen_subprotocol(headers.get_all("Sec-WebSocket-Protocol"), subprotocols)
    return AcceptInfo(subprotocol=subprotocol, extensions=extensions, headers=headers)


def _chosen_subprotocol(values: Sequence[str], offered: Sequence[str]) -> str | None:
    """The server's single choice among ``offered`` (4.2.2: "a single value")."""
    if not values:
        return None
    if len(values) != 1:
        raise NegotiationError("server sent several Sec-WebSocket-Protocol headers")
    chosen = values[0].strip(" \t")
    if chosen not in offered:
        raise NegotiationError(f"server chose a subprotocol the client did not offer: {chosen!r}")
    return chosen
