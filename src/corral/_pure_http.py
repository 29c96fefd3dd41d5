"""Pure-Python reference of corral's compiled request-head parser, ``corral._http``.

A server's usual first read is a whole upgrade request: a strictly well-formed head and no
body. ``parse_head`` parses exactly that case without llhttp's callbacks, and declines
(returns None) everything else, which :mod:`corral.protocol.http11` then gives to llhttp as
before. The rule that keeps the two paths one: a head is accepted here only if llhttp accepts
it and parses it the same way, so llhttp stays the one place where a request is refused and
every error and limit answer is unchanged. Anything doubtful is declined.

This module is the source of truth: ``_http.c`` implements exactly this function, with the
same arguments and results; ``tests/protocol/test_http_head.py`` checks that the two agree,
and that llhttp parses every head they accept to an equal request. :mod:`corral.accel` picks
one of them.
"""

from __future__ import annotations

import re
from typing import TypeAlias

__all__ = ["REPEATING", "Head", "parse_head", "shared_text"]

#: (method, target, raw_path, query, http_version, fields, keep_alive, upgrade, end): the
#: request's parts as ``HTTPRequest`` holds them, ``fields`` laid out as ``Headers._fields``
#: (lowercased name, name, value, ...), and where the head ends in ``data``.
Head: TypeAlias = tuple[str, str, str, str, str, list[str], bool, bool, int]

#: Fields whose values repeat from one connection to the next (not the key, nor cookies):
#: their values are shared strings, as are all field names (an idle WebSocket keeps its
#: upgrade request for ``ws.request``). ``_http.c`` has the same list.
REPEATING = frozenset({
    "host", "upgrade", "connection", "origin", "sec-websocket-version", "user-agent",
    "sec-websocket-extensions", "sec-websocket-protocol", "pragma", "cache-control",
    "accept-encoding", "accept-language",
})

# RFC 9112 3: request-line = method SP request-target SP HTTP-version CRLF. Only the methods
# llhttp knows that need nothing special (not CONNECT: its target is an authority and it
# upgrades by itself), and only origin-form targets (RFC 9112 3.2.1) of visible ASCII: llhttp
# takes every VCHAR there, but "#" starts a fragment that llhttp reports inside the target and
# drops from the path, so it is declined. Only HTTP/1.0 and HTTP/1.1.
_REQUEST_LINE = (
    rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) (/[\x21\x22\x24-\x7e]*+) HTTP/1\.([01])\r\n"
)
# RFC 9112 5: field-line = field-name ":" OWS field-value OWS, field-name a token (RFC 9110
# 5.6.2) and the value's characters VCHAR, obs-text, SP and HTAB (RFC 9110 5.5). Group 2 is
# llhttp's value: from the first character after OWS to the CRLF, trailing OWS included (it
# counts against max_header_bytes there). No obs-fold, no bare CR or LF. Possessive: a long
# line that does not match fails in linear time.
_FIELD = rb"([!#$%&'*+.^_`|~0-9A-Za-z-]++):[ \t]*+([\t\x20-\x7e\x80-\xff]*+)\r\n"
# A whole head: the request line, the field lines (group 4), the empty line (RFC 9112 2.1).
_HEAD = re.compile(_REQUEST_LINE + rb"((?:" + _FIELD.replace(b"(", b"(?:") + rb")*+)\r\n")
# A Connection value parsed here: visible ASCII and spaces only (llhttp's handling of tabs
# and obs-text between its tokens is not worth copying).
_CONNECTION_VALUE = re.compile(rb"[\x20-\x7e]*+")

# Fields that change how llhttp frames or flags the message beyond what is copied here:
# declined. (Content-Length is taken when it is exactly "0": no body either way.)
_DECLINED = frozenset({"transfer-encoding", "proxy-connection"})
_SPECIAL = _DECLINED | {"content-length", "connection", "upgrade"}

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
_VERSIONS = {b"0": "1.0", b"1": "1.1"}

# Shared strings: field name -> (name, lowercased name, whether its values are shared), and
# values of the REPEATING fields (up to 128 bytes); bounded, as a peer chooses the names.
_NAMES: dict[bytes, tuple[str, str, bool]] = {}
_VALUES: dict[bytes, str] = {}
_SHARED_MAX = 512


def _name(raw: bytes) -> tuple[str, str, bool]:
    entry = _NAMES.get(raw)
    if entry is None:
        name = raw.decode("ascii")
        key = name.lower()
        entry = (name, key, key in REPEATING)
        if len(_NAMES) < _SHARED_MAX:
            _NAMES[raw] = entry
    return entry


def shared_text(raw: bytes) -> str:
    """``raw`` as latin-1 text, one shared str per short value (bounded): also what the
    llhttp path of :mod:`corral.protocol.http11` uses for names and repeating values."""
    value = _VALUES.get(raw)
    if value is None:
        value = raw.decode("latin-1")
        if len(raw) <= 128 and len(_VALUES) < _SHARED_MAX:
            _VALUES[raw] = value
    return value


def parse_head(
    data: bytes | bytearray,
    pos: int,
    max_request_line: int,
    max_header_count: int,
    max_header_bytes: int,
    /,
) -> Head | None:
    """The request head starting at ``data[pos]``, or None to leave it to llhttp.

    Declined: a head not whole in ``data``, anything outside the strict grammar above, a
    body or a way of framing one (Transfer-Encoding, a Content-Length other than a single
    "0"), and any head over a limit: a line longer than ``max_request_line`` (as
    ``RequestParser`` feeds a whole head to llhttp only then), more than ``max_header_count``
    fields, or names and values (as llhttp reports them) over ``max_header_bytes`` in all.
    The line-by-line path then answers exactly as without this function.
    """
    if not 0 <= pos <= len(data):
        raise ValueError("pos out of range")
    head = _HEAD.match(data, pos)
    if head is None:
        return None
    method, target_raw, minor, block = head.group(1, 2, 3, 4)
    end = head.end()
    # Limits: each line, and the sum of llhttp's names and values, measured only when the
    # head is long enough to reach them (they are shorter than the head).
    if end - pos > max_request_line and max(map(len, data[pos:end].split(b"\r\n"))) > (
        max_request_line
    ):
        return None
    lines = block.split(b"\r\n")
    lines.pop()  # after the last CRLF
    pairs = [line.partition(b":") for line in lines]  # the head matched: no ":" in a name
    # As RequestParser counts fields arriving from llhttp: without one, no limit is passed.
    if pairs:
        if len(pairs) > max_header_count:
            return None
        if end - pos > max_header_bytes and sum(
            len(name) + len(rest.lstrip(b" \t")) for name, _, rest in pairs
        ) > max_header_bytes:
            return None
    fields: list[str] = []
    tokens: set[bytes] = set()  # of all Connection fields, lowercased (RFC 9110 7.6.1)
    upgrade_field = False
    content_length = False
    for raw_name, _, rest in pairs:
        raw_value = rest.lstrip(b" \t")
        name, key, shared = _NAMES.get(raw_name) or _name(raw_name)
        if key in _SPECIAL:
            if key in _DECLINED:
                return None
            if key == "content-length":
                # RFC 9112 6.3: a repeated Content-Length is an error for llhttp, even if
                # equal.
                if raw_value != b"0" or content_length:
                    return None
                content_length = True
            elif key == "connection":
                if _CONNECTION_VALUE.fullmatch(raw_value) is None:
                    return None
                tokens.update([token.strip(b" ").lower() for token in raw_value.split(b",")])
            elif not raw_value:  # upgrade
                return None  # llhttp sets its upgrade flag only for a value: doubtful
            else:
                upgrade_field = True
        value = shared_text(raw_value) if shared else raw_value.decode("latin-1")
        fields += (key, name, value.rstrip(" \t"))
    # llhttp's verdicts: upgrade needs an Upgrade field and the "upgrade" connection option
    # (RFC 9110 7.8); HTTP/1.1 stays open unless "close", HTTP/1.0 only with "keep-alive"
    # (RFC 9112 9.3).
    upgrade = upgrade_field and b"upgrade" in tokens
    keep_alive = b"close" not in tokens if minor == b"1" else b"keep-alive" in tokens
    target = target_raw.decode("ascii")
    raw_path, _, query = target.partition("?")  # raw_path is target itself without a "?"
    return (_METHODS[method], target, raw_path, query, _VERSIONS[minor], fields,
            keep_alive, upgrade, end)
