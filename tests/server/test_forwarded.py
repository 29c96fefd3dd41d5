"""The client behind a reverse proxy (corral.server.forwarded): what is believed, from whom,
and what a forged header gets. The real nginx in front: tests/interop/test_multinode.py."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

import corral
from corral.protocol.http11 import Headers
from corral.server.forwarded import Forwarded, TrustedProxies, forwarded

PROXY = ("10.0.0.1", 40000)
TRUSTED = TrustedProxies(["10.0.0.0/24", "::1"])


def seen(*fields: tuple[str, str], peer: Any = PROXY, secure: bool = False,
         trusted: TrustedProxies = TRUSTED) -> Forwarded | None:
    return forwarded(Headers(fields), peer, secure, trusted)


def test_x_forwarded_for_from_a_trusted_proxy() -> None:
    assert seen(("X-Forwarded-For", "203.0.113.7")) == Forwarded(("203.0.113.7", 0), False,
                                                                 None)
    got = seen(("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https"),
               ("X-Forwarded-Host", "app.example"))
    assert got == Forwarded(("203.0.113.7", 0), True, "app.example")


def test_a_chain_is_walked_back_past_the_trusted_proxies_only() -> None:
    """The nearest hops are our proxies; the first other address is the client. What the
    client wrote before it (a forged hop) is not believed."""
    got = seen(("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.0.0.9"))
    assert got is not None and got.address == ("203.0.113.7", 0)
    # Two headers are one list, in order.
    got = seen(("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.7"))
    assert got is not None and got.address == ("203.0.113.7", 0)


def test_nothing_is_believed_from_an_untrusted_peer() -> None:
    assert seen(("X-Forwarded-For", "6.6.6.6"), peer=("192.0.2.1", 5000)) is None
    assert seen(("X-Forwarded-For", "6.6.6.6"), peer=None) is None  # a Unix socket peer
    assert seen(peer=PROXY) is None  # a trusted proxy that says nothing


@pytest.mark.parametrize(("value", "address", "secure", "host"), [
    # RFC 7239 section 4 and 7 examples
    ('for="_gazonk"', None, False, None),  # obfuscated: not an address
    ('For="[2001:db8:cafe::17]:4711"', ("2001:db8:cafe::17", 4711), False, None),
    ("for=192.0.2.60;proto=http;by=203.0.113.43", ("192.0.2.60", 0), False, None),
    ("for=192.0.2.43, for=198.51.100.17", ("198.51.100.17", 0), False, None),
    ("for=198.51.100.17:8443;proto=https;host=app.example", ("198.51.100.17", 8443), True,
     "app.example"),
    ('for=203.0.113.7, for="10.0.0.5:1234"', ("203.0.113.7", 0), False, None),
    ("for=unknown", None, False, None),
    ("for=999.1.1.1", None, False, None),
    ("proto=https", None, False, None),
])
def test_rfc_7239_forwarded(value: str, address: tuple[str, int] | None, secure: bool,
                            host: str | None) -> None:
    got = seen(("Forwarded", value))
    if address is None:
        assert got is None
    else:
        assert got == Forwarded(address, secure, host)


def test_forwarded_wins_over_x_forwarded() -> None:
    got = seen(("Forwarded", "for=198.51.100.17"), ("X-Forwarded-For", "203.0.113.7"))
    assert got is not None and got.address == ("198.51.100.17", 0)


def test_an_unknown_proto_keeps_the_connections_own() -> None:
    got = seen(("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "gopher"), secure=True)
    assert got is not None and got.secure


def test_trusted_proxies() -> None:
    assert "10.0.0.77" in TRUSTED and "::1" in TRUSTED and "10.0.1.1" not in TRUSTED
    assert "not-an-ip" not in TRUSTED and None not in TRUSTED
    assert "192.0.2.1" in TrustedProxies(["*"])
    with pytest.raises(ValueError, match="'nope' is not an IP address"):
        TrustedProxies(["nope"])
    assert corral.Options(forwarded_allow_ips="10.0.0.1, 10.0.0.2").forwarded_allow_ips == (
        "10.0.0.1", "10.0.0.2")
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        corral.Options(forwarded_allow_ips=["10.0.0.300"])


# -- on a server ------------------------------------------------------------------------------


async def ask(port: int, head: str) -> bytes:
    """The answer's head and body (to the end of the connection; for a 101, its head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        if answer.startswith(b"HTTP/1.1 101"):
            return answer
        return answer + await asyncio.wait_for(reader.read(), 2)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def who(request: corral.Request) -> corral.Response:
    return corral.Response.text(f"{request.remote_address[0]} {request.scheme} {request.host} "
                                f"{request.peer[0]}")


@pytest.mark.parametrize(("trusted", "expected"), [
    (["127.0.0.1"], b"203.0.113.7 https app.example 127.0.0.1"),
    (["10.9.9.9"], b"127.0.0.1 http internal:8000 127.0.0.1"),  # we are not that proxy
    (None, b"127.0.0.1 http internal:8000 127.0.0.1"),  # the default: nobody is believed
])
async def test_a_request_names_the_client_only_behind_a_trusted_proxy(
    trusted: list[str] | None, expected: bytes
) -> None:
    router = corral.Router().http("/who", who)
    async with corral.serve(router, port=0, forwarded_allow_ips=trusted) as server:
        answer = await ask(server.port, "GET /who HTTP/1.1\r\nHost: internal:8000\r\n"
                           "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
                           "X-Forwarded-Host: app.example\r\nConnection: close\r\n\r\n")
    assert answer.endswith(b"\r\n\r\n" + expected), answer


@pytest.mark.parametrize(("trusted", "status"), [(["127.0.0.1"], b"101"), (None, b"403")])
async def test_the_origin_check_uses_the_forwarded_host(
    trusted: list[str] | None, status: bytes
) -> None:
    """A browser on https://app.example through a proxy that talks to the server as
    internal:8000: same site by the forwarded host, cross-site by the Host header."""
    router = corral.Router().websocket("/", corral.Handler)
    async with corral.serve(router, port=0, forwarded_allow_ips=trusted) as server:
        answer = await ask(server.port, "GET / HTTP/1.1\r\nHost: internal:8000\r\n"
                           "Origin: https://app.example\r\nX-Forwarded-For: 203.0.113.7\r\n"
                           "X-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 " + status), answer
