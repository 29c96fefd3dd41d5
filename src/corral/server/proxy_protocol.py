"""The PROXY protocol, versions 1 and 2 (HAProxy's specification, as AWS and other load
balancers send it): the first bytes of a TCP connection name the client the balancer
accepted, before any HTTP.

Sans-I/O: :func:`parse_proxy_header` takes the bytes received so far and says whether a
whole header is there, where it ends and whom it names. A listener with the PROXY protocol
switched on must get a header first on every connection; anything else is refused, never
guessed at (the specification's rule: a client that could skip it could forge it).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

__all__ = ["MAX_V1", "ProxyHeader", "ProxyProtocolError", "parse_proxy_header"]

MAX_V1 = 107  # the longest version 1 line, CRLF included
_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_MAX_V2 = 16 + 1024  # fixed part, then addresses and TLVs: more is refused, not buffered
_V2_FIXED = struct.Struct("!12sBBH")
_V4 = struct.Struct("!4s4sHH")
_V6 = struct.Struct("!16s16sHH")


class ProxyProtocolError(ValueError):
    """The connection did not start with a valid PROXY protocol header."""


class ProxyHeader(NamedTuple):
    """What a header said: the client's ``(ip, port)``, or None when it names nobody
    (version 1 ``UNKNOWN``, version 2 ``LOCAL``: a health check of the balancer itself, or an
    address family other than TCP over IPv4 or IPv6), and the header's size."""

    client: tuple[str, int] | None
    size: int


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``, or None while it is incomplete; raises
    :class:`ProxyProtocolError` when ``data`` cannot start one."""
    if data[:1] == b"P" or (data and not _V2_SIGNATURE.startswith(data[:12])):
        return _v1(data)
    if len(data) < 16:
        return None
    return _v2(data)


def _v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, MAX_V1)
    if end == -1:
        if len(data) >= MAX_V1 or not b"PROXY ".startswith(data[:6]):
            raise ProxyProtocolError("no PROXY protocol header")
        return None
    parts = data[:end].split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyProtocolError("no PROXY protocol header")
    if parts[1] == b"UNKNOWN":
        return ProxyHeader(None, end + 2)
    if parts[1] not in (b"TCP4", b"TCP6") or len(parts) != 6:
        raise ProxyProtocolError("malformed PROXY protocol v1 header")
    try:
        source = ipaddress.ip_address(parts[2].decode("ascii"))
        ipaddress.ip_address(parts[3].decode("ascii"))
        port = int(parts[4])
        int(parts[5])
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError("malformed PROXY protocol v1 header") from None
    if source.version != (4 if parts[1] == b"TCP4" else 6) or not 0 <= port < 65536 \
            or not parts[4].isdigit():
        raise ProxyProtocolError("malformed PROXY protocol v1 header")
    return ProxyHeader((str(source), port), end + 2)


def _v2(data: bytes) -> ProxyHeader | None:
    signature, version_command, family, length = _V2_FIXED.unpack_from(data)
    if signature != _V2_SIGNATURE or version_command >> 4 != 2:
        raise ProxyProtocolError("no PROXY protocol v2 header")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyProtocolError("unknown PROXY protocol v2 command")
    size = 16 + length
    if size > _MAX_V2:
        raise ProxyProtocolError("PROXY protocol v2 header too long")
    if len(data) < size:
        return None
    if command == 0:  # LOCAL: the balancer's own connection
        return ProxyHeader(None, size)
    if family == 0x11 and length >= _V4.size:  # TCP over IPv4
        source, _, port, _ = _V4.unpack_from(data, 16)
        return ProxyHeader((str(ipaddress.IPv4Address(source)), port), size)
    if family == 0x21 and length >= _V6.size:  # TCP over IPv6
        source, _, port, _ = _V6.unpack_from(data, 16)
        return ProxyHeader((str(ipaddress.IPv6Address(source)), port), size)
    if family in (0x11, 0x21):
        raise ProxyProtocolError("PROXY protocol v2 addresses too short")
    return ProxyHeader(None, size)  # UDP, Unix sockets, unspecified: nobody we can name
