"""Bounded HTTP/1.1 parsing of the upgrade request (server) and response (client).

httptools (llhttp) does the parsing. This module adds what a server facing the internet needs
on top of it: every limit is checked *before* bytes reach the parser. While a message head is
being read, data is fed to llhttp one line at a time and each line's length is checked first,
so a peer trickling an endless request line or header cannot make llhttp (which buffers the
header it is reading) grow past the limits. Header counts and sizes are checked exactly as
headers complete; bodies are checked as they arrive.

The usual request, a whole upgrade head read at once, is parsed without llhttp by
``corral.accel.parse_head`` (compiled, or its pure twin ``corral._pure_http``), which accepts
only heads that llhttp parses the same way and within every limit; all others go to llhttp.

Sans-I/O: bytes in, parsed messages out; no sockets, no event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, NoReturn
from urllib.parse import unquote

import httptools

from corral._pure_http import REPEATING as _REPEATING
from corral._pure_http import shared_text as _text
from corral.accel import parse_head
from corral.exceptions import HandshakeError, InvalidRequest, InvalidResponse

__all__ = [
    "HTTPRequest",
    "HTTPResponse",
    "Headers",
    "RequestBody",
    "RequestEnd",
    "RequestHead",
    "RequestParser",
    "RequestStreamParser",
    "ResponseParser",
]

# Room for the method, two spaces and "HTTP/1.1" around a request-target of max_request_line.
_REQUEST_LINE_SLACK = 32
# Longest llhttp error reason echoed in an error message.
_MAX_REASON = 80


# Header names, and short values such as "websocket" or "Upgrade", come again on every
# connection: one shared str for each (bounded; _text for names and values, _lower for
# lowercased names) keeps a held request small (an idle WebSocket keeps its upgrade request
# for ws.request).
_SHARED_LOWER: dict[str, str] = {}
_SHARED_MAX = 512


def _lower(name: str) -> str:
    key = _SHARED_LOWER.get(name)
    if key is None:
        key = name.lower()
        if len(_SHARED_LOWER) < _SHARED_MAX:
            _SHARED_LOWER[name] = key
    return key


def _shared_version(version: str) -> str:
    """The usual HTTP versions as one shared string each (a request may be kept for the life
    of its connection)."""
    return _VERSIONS.get(version, version)


_VERSIONS = {v: v for v in ("1.1", "1.0")}

# The usual methods as one shared string each.
_METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}


class Headers:
    """Ordered, case-insensitive multi-map of header fields that keeps the original case.

    Lookups are linear: a message has at most a hundred or so fields, and order and
    duplicates matter (the handshake rules must see them). The fields are one flat list of
    (lowercased name, name, value) triples, lowercased names shared between messages: a
    request kept for the life of a connection costs little beyond its strings.
    """

    __slots__ = ("_fields",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[str] = []
        for name, value in items:
            self._fields += (name.lower(), name, value)

    @classmethod
    def _of(cls, fields: list[str]) -> Headers:
        """Headers over ``fields``, a list already in the layout above (``parse_head``'s)."""
        headers = cls.__new__(cls)
        headers._fields = fields
        return headers

    def add(self, name: str, value: str) -> None:
        """Append a field; earlier fields of the same name are kept."""
        self._fields += (name.lower(), name, value)

    def add_shared(self, name: str, value: str) -> None:
        """``add`` with the lowercased name shared between messages (see ``_lower``)."""
        self._fields += (_lower(name), name, value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        key = name.lower()
        fields = self._fields
        if key not in fields:
            return default  # the usual answer for an absent field, found in C
        for index in range(0, len(fields), 3):
            if fields[index] == key:
                return fields[index + 2]
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order (several fields may carry one list)."""
        key = name.lower()
        fields = self._fields
        if key not in fields:
            return []  # absent (a value equal to the key only costs the scan below)
        return [fields[i + 2] for i in range(0, len(fields), 3) if fields[i] == key]

    def items(self) -> list[tuple[str, str]]:
        """A copy of the (name, value) pairs, in order."""
        fields = self._fields
        return list(zip(fields[1::3], fields[2::3], strict=True))

    def lower_items(self) -> list[tuple[str, str]]:
        """The (lowercased name, value) pairs, in order (as ASGI scopes carry them)."""
        fields = self._fields
        return list(zip(fields[0::3], fields[2::3], strict=True))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name.lower() in self._fields[::3]

    def __len__(self) -> int:
        return len(self._fields) // 3

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self.items() == other.items()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


@dataclass(slots=True)
class HTTPRequest:
    """One parsed request; ``upgrade`` is llhttp's verdict (Upgrade + Connection: upgrade)."""

    method: str
    target: str
    path: str
    raw_path: str
    query_string: str
    http_version: str
    headers: Headers
    body: bytes
    keep_alive: bool
    upgrade: bool


@dataclass(slots=True)
class HTTPResponse:
    """One parsed response (the client side of the handshake)."""

    status: int
    reason: str
    http_version: str
    headers: Headers
    body: bytes


def _short(text: str) -> str:
    """A parser message made safe to log or send: printable ASCII, bounded length."""
    cleaned = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return cleaned[:_MAX_REASON] or "parse error"


class _BoundedParser:
    """The feeding loop shared by both parsers: line-by-line heads, bounded bodies.

    Subclasses create ``self._parser`` with ``self`` as the httptools protocol object and
    say how a failure is reported (``_error``, ``_parse_failed``) and how long a head line
    may be (``_line_limit``).
    """

    _parser: httptools.HttpRequestParser | httptools.HttpResponseParser

    def __init__(self, *, max_header_count: int, max_header_bytes: int, max_body: int) -> None:
        self.max_header_count = max_header_count
        self.max_header_bytes = max_header_bytes
        self.max_body = max_body
        self._failure: HandshakeError | None = None  # set by callbacks, raised after feed
        self._dead: HandshakeError | None = None  # a parse failed: every later feed fails
        self._in_head = True
        self._started = False  # llhttp saw the first byte of a message
        self._messages = 0  # messages completed so far
        self._line_len = 0  # bytes of the head line being received
        self._lines = 0  # complete lines since the last message (leading empty ones too)
        self._start_line_done = False
        self._body_remaining: int | None = None  # Content-Length bytes still to come
        self._reset_message()

    def _reset_message(self) -> None:
        self._headers = Headers()
        self._header_bytes = 0
        self._body = bytearray()
        self._chunked = False

    # -- subclass hooks -------------------------------------------------------------------

    @property
    def error(self) -> HandshakeError | None:
        """The error that stopped this parser (held back while good requests before it
        were returned), or None."""
        return self._dead

    def _error(self, reason: str, status: int) -> HandshakeError:
        raise NotImplementedError

    def _line_limit(self) -> tuple[int, int]:
        """(limit on the current head line's content, status to answer when exceeded)."""
        raise NotImplementedError

    def _parse_failed(self, exc: httptools.HttpParserError) -> HandshakeError:
        raise NotImplementedError

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._started = True

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp hands a field over whole, once the next one starts: checked exactly here.
        if len(self._headers) >= self.max_header_count:
            self._fail(self._error("too many header fields", 431))
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self.max_header_bytes:
            self._fail(self._error("header fields too large", 431))
        text = _text(name)
        if _lower(text) in _REPEATING:
            self._headers.add_shared(text, _text(value).strip(" \t"))
        else:
            self._headers.add_shared(text, value.decode("latin-1").strip(" \t"))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._body_remaining = None
        coding = self._headers.get_all("Transfer-Encoding")
        self._chunked = bool(coding) and coding[-1].lower().rstrip(" \t").endswith("chunked")
        length = self._headers.get("Content-Length")
        if length is not None and not coding and length.strip().isdigit():
            # llhttp has already rejected duplicate or malformed lengths.
            self._body_remaining = int(length.strip())
            if self._body_remaining > self.max_body:
                self._fail(self._error("body too large", 413))

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > self.max_body:
            self._fail(self._error("body too large", 413))
        self._body += body

    def on_message_complete(self) -> None:
        self._messages += 1
        self._in_head = True
        self._started = False
        self._start_line_done = False
        self._line_len = 0
        self._lines = 0
        self._body_remaining = None

    def _fail(self, error: HandshakeError) -> NoReturn:
        """Record a limit error; raising makes llhttp stop at once with a callback error."""
        self._failure = error
        raise error

    # -- feeding ---------------------------------------------------------------------------

    def _check_line(self, size: int) -> None:
        """Refuse a head line whose content would exceed its limit, before llhttp sees it."""
        limit, status = self._line_limit()
        if self._line_len + size > limit + 2:  # + CRLF
            what = "request line" if status == 414 else "header line"
            raise self._error(f"{what} too long", status)
        # More lines than the largest head (start line, the fields, the empty line and a few
        # empty lines before it, RFC 7230 section 3.5): also stops a flood of empty lines.
        if self._lines > self.max_header_count + 4:
            raise self._error("too many header fields", 431)

    def _next_piece(self, data: bytes, pos: int) -> tuple[int, bool]:
        """Where the next piece fed to llhttp ends, and whether it is (part of) a head line.

        Head pieces end after a LF, so the head ends exactly at a piece end; a body with a
        Content-Length is fed exactly, so the next pipelined message starts a piece. Only a
        chunked body is fed whole: a message starting inside it is tracked from the next feed
        (bounded by the size of that one feed).
        """
        if self._in_head:
            newline = data.find(b"\n", pos)
            return (len(data) if newline == -1 else newline + 1), True
        if self._body_remaining is not None:
            end = min(len(data), pos + self._body_remaining)
            self._body_remaining -= end - pos
            return end, False
        return len(data), False

    def _feed_pieces(self, data: bytes) -> int | None:
        """Feed ``data`` to llhttp; the offset where non-HTTP bytes start after an upgrade."""
        if self._dead is not None:
            raise self._dead
        view = memoryview(data)
        pos = 0
        while pos < len(data) and not self._stop():
            fast = self._fast_head(data, pos)
            if fast is not None:
                pos, upgraded = fast
                if upgraded:
                    return pos
                continue
            whole = self._whole_head(data, pos)
            if whole is not None:
                end, head = whole, False  # the head ends in this piece: no counters to keep
            else:
                end, head = self._next_piece(data, pos)
            messages = self._messages
            try:
                if head:
                    self._check_line(end - pos)
                try:
                    self._parser.feed_data(view[pos:end])
                except httptools.HttpParserUpgrade as exc:
                    return pos + int(exc.args[0])
                except httptools.HttpParserError as exc:
                    if self._failure is not None:
                        raise self._failure from None
                    upgrade_at = self._paused(end)
                    if upgrade_at is not None:
                        return upgrade_at
                    raise self._parse_failed(exc) from None
            except HandshakeError as exc:
                self._dead = exc
                raise
            if head and self._in_head and messages == self._messages:
                # Still in the same head (a completed message reset the counters itself).
                if data[end - 1] == 0x0A:
                    self._line_len = 0
                    self._lines += 1
                    self._start_line_done = self._started
                else:
                    self._line_len += end - pos
            pos = end
        return None

    def _stop(self) -> bool:
        """Whether feeding must stop before the next piece (the message is complete)."""
        return False

    def _fast_head(self, data: bytes, pos: int) -> tuple[int, bool] | None:
        """Parse a whole message at ``pos`` without llhttp: (where it ends, whether it is an
        upgrade), or None to feed llhttp."""
        return None

    def _whole_head(self, data: bytes, pos: int) -> int | None:
        """Where a complete head starting at ``pos`` ends, when it can go to llhttp in one
        piece: every line within the strictest line limit and not too many lines (the same
        bounds the line-by-line path enforces). The usual handshake takes this path."""
        limit = self._strictest_line_limit()
        if limit is None or not self._in_head or self._line_len or self._lines:
            return None
        if data[pos] in b"\r\n":
            # Empty lines before a request line (RFC 7230 section 3.5), which llhttp skips:
            # fed line by line, so they are counted against the limit like any line.
            return None
        end = data.find(b"\r\n\r\n", pos)
        if end == -1:
            return None
        end += 4
        lines = data[pos:end].split(b"\n")
        if len(lines) > self.max_header_count + 4:
            return None
        if max(map(len, lines)) > limit + 1:  # + CR
            return None
        return end

    def _strictest_line_limit(self) -> int | None:
        """The smallest line limit, or None to always feed line by line."""
        return None

    def _paused(self, end: int) -> int | None:
        """Where upgraded bytes start when llhttp paused without HttpParserUpgrade."""
        return None


class RequestParser(_BoundedParser):
    """Server side: bytes from the peer in, complete requests out (keep-alive, pipelining).

    Parsing stops after an upgrade request (``upgraded`` becomes True); the bytes that follow
    its head are in ``trailing``: they belong to the WebSocket protocol.
    """

    _parser: httptools.HttpRequestParser

    def __init__(
        self,
        *,
        max_request_line: int = 8192,
        max_header_count: int = 100,
        max_header_bytes: int = 16384,
        max_body: int = 1048576,
    ) -> None:
        super().__init__(
            max_header_count=max_header_count,
            max_header_bytes=max_header_bytes,
            max_body=max_body,
        )
        self.max_request_line = max_request_line
        self.upgraded = False
        self.trailing = b""
        self._url = bytearray()
        self._upgrade = False
        self._reusable = True  # llhttp takes another message (none yet, or kept alive)
        self._done: list[HTTPRequest] = []
        self._parser = httptools.HttpRequestParser(self)

    def feed(self, data: bytes) -> list[HTTPRequest]:
        """Parse ``data``; every request it completes, in order.

        An error found after some requests completed in the same data is raised by the next
        call, so the server can still answer the requests that came before it.
        """
        if self.upgraded:
            raise RuntimeError("feed() after an upgrade request: the bytes are WebSocket")
        self._done = []
        try:
            offset = self._feed_pieces(data)
        except InvalidRequest:
            if self._done:
                return self._done
            raise
        if offset is not None:
            self.upgraded = True
            self.trailing = bytes(data[offset:])
        return self._done

    def _error(self, reason: str, status: int) -> HandshakeError:
        return InvalidRequest(reason, status=status)

    def _parse_failed(self, exc: httptools.HttpParserError) -> HandshakeError:
        return InvalidRequest(f"malformed HTTP request: {_short(str(exc))}", status=400)

    def _line_limit(self) -> tuple[int, int]:
        if not self._start_line_done:
            return self.max_request_line + _REQUEST_LINE_SLACK, 414
        return self.max_request_line, 431

    def _strictest_line_limit(self) -> int | None:
        return self.max_request_line

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url.clear()
        self._upgrade = False
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        # llhttp hands the request-target over in pieces (one per feed): count as it grows.
        if len(self._url) + len(url) > self.max_request_line:
            self._fail(InvalidRequest("request-target too long", status=414))
        self._url += url

    def on_headers_complete(self) -> None:
        self._upgrade = self._parser.should_upgrade()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        request = self._build()
        # Without keep-alive llhttp refuses what follows (RFC 9112 9.6): only it may parse on.
        self._reusable = request.keep_alive
        self._done.append(request)

    def _fast_head(self, data: bytes, pos: int) -> tuple[int, bool] | None:
        """The usual request without llhttp's callbacks (``parse_head``), taken only where
        llhttp stands at the start of a message and would answer the same."""
        if self._started or self._line_len or self._lines or not self._reusable:
            return None  # llhttp has seen part of this message, or must see the next one
        if self.max_body < 0:
            return None  # even an empty body is over the limit: llhttp's path says so
        head = parse_head(data, pos, self.max_request_line, self.max_header_count,
                          self.max_header_bytes)
        if head is None:
            return None
        method, target, raw_path, query, version, fields, keep_alive, upgrade, end = head
        if not (keep_alive or upgrade):
            return None  # what follows must be refused: llhttp must know of this message
        path = raw_path
        if "%" in raw_path:
            try:
                path = unquote(raw_path, errors="strict")
            except UnicodeDecodeError:
                return None  # llhttp's path refuses it, as _build does
            if path == raw_path:
                path = raw_path
        # Positional, in field order: keywords cost as much as the rest of this method.
        self._done.append(HTTPRequest(method, target, path, raw_path, query, version,
                                      Headers._of(fields), b"", keep_alive, upgrade))
        self._messages += 1
        return end, upgrade

    def _build(self) -> HTTPRequest:
        try:
            target = self._url.decode("ascii")  # llhttp allows only ASCII in a target
        except UnicodeDecodeError:
            self._fail(InvalidRequest("malformed HTTP request: non-ASCII target", status=400))
        try:
            url = httptools.parse_url(bytes(self._url))
            raw_path = (url.path or b"").decode("ascii")
            query = (url.query or b"").decode("ascii")
        except httptools.HttpParserError:
            # Forms parse_url does not split (authority-form of CONNECT): keep them raw.
            raw_path, query = target, ""
        try:
            path = unquote(raw_path, errors="strict")
        except UnicodeDecodeError:
            self._fail(InvalidRequest("malformed HTTP request: path is not UTF-8", status=400))
        # One string where they are equal (the usual case): a request may be kept for the
        # life of its connection.
        if raw_path == target:
            raw_path = target
        if path == raw_path:
            path = raw_path
        method = self._parser.get_method().decode("ascii")
        return HTTPRequest(
            method=_METHODS.get(method, method),
            target=target,
            path=path,
            raw_path=raw_path,
            query_string=query,
            http_version=_shared_version(self._parser.get_http_version()),
            headers=self._headers,
            body=bytes(self._body),
            keep_alive=self._parser.should_keep_alive(),
            upgrade=self._upgrade,
        )


class RequestHead(NamedTuple):
    """A request's head is complete (``request.body`` is empty: the body follows)."""

    request: HTTPRequest


class RequestBody(NamedTuple):
    """A piece of the current request's body, as it arrived (chunked framing removed)."""

    data: bytes


class RequestEnd(NamedTuple):
    """The current request is complete."""


_END = RequestEnd()


class RequestStreamParser(RequestParser):
    """:class:`RequestParser` for a server that streams bodies to its application: each
    request comes out as its head, the pieces of its body, then its end, as they arrive.
    The same limits apply (``max_body`` included: 413 once a body grows past it); the bytes
    after an upgrade request's head are in ``trailing``."""

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self._events: list[RequestHead | RequestBody | RequestEnd] = []
        self._body_size = 0

    def feed(self, data: bytes) -> list[RequestHead | RequestBody | RequestEnd]:  # type: ignore[override]
        """Parse ``data``; the events it completes, in order. An error found after some
        events is raised by the next call (see :meth:`RequestParser.feed`)."""
        if self.upgraded:
            raise RuntimeError("feed() after an upgrade request: the bytes are not HTTP")
        self._events = []
        try:
            offset = self._feed_pieces(data)
        except InvalidRequest:
            if self._events:
                return self._events  # the error comes with the next feed (``error``)
            raise
        if offset is not None:
            self.upgraded = True
            self.trailing = bytes(data[offset:])
        return self._events

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._body_size = 0

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._events.append(RequestHead(self._build()))

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.max_body:
            self._fail(self._error("body too large", 413))
        self._events.append(RequestBody(bytes(body)))

    def on_message_complete(self) -> None:
        _BoundedParser.on_message_complete(self)
        self._reusable = self._parser.should_keep_alive()
        self._events.append(_END)

    def _fast_head(self, data: bytes, pos: int) -> tuple[int, bool] | None:
        fast = super()._fast_head(data, pos)
        if fast is not None:
            # A head without a body, whole: its head and its end at once.
            self._events += (RequestHead(self._done.pop()), _END)
        return fast


class ResponseParser(_BoundedParser):
    """Client side: the server's answer to the upgrade request.

    A 101 response is complete at the end of its head; the bytes after it (frames the server
    sent at once) are in ``trailing``. Interim 1xx responses other than 101 are skipped, as
    RFC 7230 section 6.2 asks of a client. Head lines are limited to ``max_header_bytes``.
    """

    _parser: httptools.HttpResponseParser

    def __init__(
        self,
        *,
        max_header_count: int = 100,
        max_header_bytes: int = 16384,
        max_body: int = 1048576,
    ) -> None:
        super().__init__(
            max_header_count=max_header_count,
            max_header_bytes=max_header_bytes,
            max_body=max_body,
        )
        self.trailing = b""
        self._reason = bytearray()
        self._headers_done = False
        self._complete: HTTPResponse | None = None
        self._returned = False
        self._parser = httptools.HttpResponseParser(self)

    def feed(self, data: bytes) -> HTTPResponse | None:
        """Parse ``data``; the response once complete, else None."""
        if self._complete is not None:
            raise RuntimeError("feed() after the response was complete")
        offset = self._feed_pieces(data)
        if self._complete is None:
            return None
        if offset is not None:
            self.trailing = bytes(data[offset:])
        self._returned = True
        return self._complete

    def feed_eof(self) -> HTTPResponse | None:
        """The peer closed: complete a body delimited by the end of the connection.

        Returns the response if EOF completed it, None if ``feed`` already returned it.
        """
        if self._dead is not None:
            raise self._dead
        if self._complete is not None:
            if self._returned:
                return None
            self._returned = True
            return self._complete
        if not self._headers_done:
            raise self._eof_error("connection closed before the end of the response head")
        if self._chunked or self._body_remaining:
            raise self._eof_error("connection closed before the end of the response body")
        # RFC 7230 section 3.3.3 rule 7: no length given, the body ends with the connection.
        self._complete = self._build()
        self._returned = True
        return self._complete

    def _eof_error(self, reason: str) -> HandshakeError:
        self._dead = self._error(reason, 0)
        return self._dead

    def _error(self, reason: str, status: int) -> HandshakeError:
        # ``status`` is the limit's HTTP status for requests; a response reports its own,
        # once its status line is complete (llhttp shows the digits read so far before).
        known = self._start_line_done or self._headers_done
        return InvalidResponse(reason, status=self._parser.get_status_code() if known else 0)

    def _parse_failed(self, exc: httptools.HttpParserError) -> HandshakeError:
        return self._error(f"malformed HTTP response: {_short(str(exc))}", 0)

    def _line_limit(self) -> tuple[int, int]:
        return self.max_header_bytes, 431


    def _stop(self) -> bool:
        return self._complete is not None

    def _paused(self, end: int) -> int | None:
        # A 101 without an Upgrade field: llhttp pauses without HttpParserUpgrade. The head
        # ended at a LF, which is where the piece ended.
        return end if self._complete is not None else None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reason.clear()
        self._headers_done = False
        self._reset_message()

    def on_status(self, reason: bytes) -> None:
        self._reason += reason  # bounded by the line limit

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._headers_done = True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # an interim response: the final one follows
        self._complete = self._build()

    def _build(self) -> HTTPResponse:
        return HTTPResponse(
            status=self._parser.get_status_code(),
            reason=self._reason.decode("latin-1").strip(" \t"),
            http_version=_shared_version(self._parser.get_http_version()),
            headers=self._headers,
            body=bytes(self._body),
        )
