"""The client behind a reverse proxy: ``Forwarded`` (RFC 7239) and ``X-Forwarded-For`` /
``-Proto`` / ``-Host``, believed only from the proxies the ``forwarded_allow_ips`` option
names.

Anyone can send these headers, so they are read only when the TCP peer is a trusted proxy,
and a chain of proxies is walked from the nearest hop back: the first address that is not a
trusted proxy is the client. A value that does not parse is not believed (the peer's own
address and scheme stay). Sans-I/O: headers and addresses in, the client's address, scheme
and host out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple

from ..protocol.http11 import Headers

__all__ = ["Forwarded", "TrustedProxies", "forwarded"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


class TrustedProxies:
    """The addresses (``"10.0.0.1"``), networks (``"10.0.0.0/8"``) or ``"*"`` (any peer)
    whose forwarding headers are believed."""

    __slots__ = ("_any", "_networks")

    def __init__(self, entries: Iterable[str]) -> None:
        networks: list[_Network] = []
        self._any = False
        for entry in entries:
            entry = entry.strip()
            if entry == "*":
                self._any = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"forwarded_allow_ips: {entry!r} is not an IP address, a "
                                 "network (10.0.0.0/8) or '*'") from None
        self._networks = tuple(networks)

    def __contains__(self, host: object) -> bool:
        if self._any:
            return True
        if not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self._networks)


class Forwarded(NamedTuple):
    """Who the client is, as the trusted proxies say: its address (``(host, port)``, the
    port 0 when not told), whether it came over TLS, and the host it asked for (or None)."""

    address: tuple[str, int]
    secure: bool
    host: str | None


def forwarded(headers: Headers, peer: object, secure: bool,
              trusted: TrustedProxies) -> Forwarded | None:
    """The client behind ``peer`` when ``peer`` is a trusted proxy that says who it is;
    else None (the peer is the client)."""
    if not isinstance(peer, tuple) or not peer or peer[0] not in trusted:
        return None
    elements = headers.get_all("forwarded")
    if elements:
        hops = [_element(part) for value in elements for part in _split(value, ",")]
    else:
        hops = _x_forwarded(headers)
    if not hops:
        return None
    # From the nearest hop back: skip our trusted proxies; the first other one is the client.
    chosen = hops[0]
    for hop in reversed(hops):
        chosen = hop
        if hop.get("for") is None or _split_node(hop["for"])[0] not in trusted:
            break
    address = _address(chosen.get("for"))
    if address is None:
        return None
    proto = _SCHEMES.get((chosen.get("proto") or "").lower())
    host = chosen.get("host") or None
    return Forwarded(address, secure if proto is None else proto == "https", host)


def _x_forwarded(headers: Headers) -> list[dict[str, str]]:
    """X-Forwarded-For as hops; -Proto and -Host (the last value of each, set by the
    nearest proxy) belong to the client's hop."""
    addresses = [part for value in headers.get_all("x-forwarded-for")
                 for part in _split(value, ",")]
    if not addresses:
        return []
    hops = [{"for": address} for address in addresses]
    protos = [part for value in headers.get_all("x-forwarded-proto")
              for part in _split(value, ",")]
    hosts = [part for value in headers.get_all("x-forwarded-host")
             for part in _split(value, ",")]
    for hop in hops:
        if protos:
            hop["proto"] = protos[-1]
        if hosts:
            hop["host"] = hosts[-1]
    return hops


def _split(value: str, separator: str) -> list[str]:
    """``value`` split on ``separator`` outside double quotes, parts stripped."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def _element(text: str) -> dict[str, str]:
    """One RFC 7239 forwarded-element: ``for=...;proto=...;host=...`` (names any case,
    values maybe quoted)."""
    pairs: dict[str, str] = {}
    for pair in _split(text, ";"):
        name, sep, value = pair.partition("=")
        if sep:
            pairs[name.strip().lower()] = value.strip().strip('"')
    return pairs


def _split_node(node: str) -> tuple[str, str]:
    """A node's address and port text: ``1.2.3.4:80`` → ``("1.2.3.4", "80")``,
    ``[::1]:80`` → ``("::1", "80")``, a bare address → ``(address, "")``."""
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if node.count(":") == 1:
        host, _, port = node.partition(":")
        return host, port
    return node, ""


def _address(node: str | None) -> tuple[str, int] | None:
    """A node as ``(ip, port)``; None for an obfuscated or unknown one, or garbage."""
    if not node:
        return None
    host, rest = _split_node(node)
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        return None
    port = 0
    if rest.isdigit() and int(rest) < 65536:
        port = int(rest)
    return ip, port
