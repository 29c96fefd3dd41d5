"""The PROXY protocol (corral.server.proxy_protocol): the parser on every shape of header,
any cut of the stream, and garbage; then a server with it switched on. The real HAProxy in
front: tests/interop/test_multinode.py."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

import corral
from corral.server.proxy_protocol import (
    MAX_V1,
    ProxyHeader,
    ProxyProtocolError,
    parse_proxy_header,
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command: int, family: int, body: bytes) -> bytes:
    return SIG + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v2_tcp4(src: str, sport: int, tlvs: bytes = b"") -> bytes:
    body = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address("10.0.0.1").packed
            + struct.pack("!HH", sport, 443) + tlvs)
    return v2(1, 0x11, body)


def v2_tcp6(src: str, sport: int) -> bytes:
    body = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address("::1").packed
            + struct.pack("!HH", sport, 443))
    return v2(1, 0x21, body)


VALID = [
    (b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n", ("203.0.113.7", 56324)),
    (b"PROXY TCP6 2001:db8::7 ::1 4711 443\r\n", ("2001:db8::7", 4711)),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
    (v2_tcp4("203.0.113.7", 56324), ("203.0.113.7", 56324)),
    (v2_tcp4("203.0.113.7", 1, tlvs=b"\x03\x00\x04abcd"), ("203.0.113.7", 1)),  # a TLV
    (v2_tcp6("2001:db8::7", 4711), ("2001:db8::7", 4711)),
    (v2(0, 0x00, b""), None),  # LOCAL: the balancer's health check
    (v2(1, 0x12, bytes(12)), None),  # UDP over IPv4
    (v2(1, 0x31, bytes(216)), None),  # a Unix socket
]


@pytest.mark.parametrize(("header", "client"), VALID)
def test_a_whole_header_names_the_client_and_ends_where_it_ends(
    header: bytes, client: tuple[str, int] | None
) -> None:
    assert parse_proxy_header(header + b"GET / HTTP/1.1\r\n") == ProxyHeader(client,
                                                                            len(header))
    for cut in range(len(header)):  # any part of it: wait for more
        assert parse_proxy_header(header[:cut]) is None


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # no header at all
    b"GE",  # cannot become one
    b"PROXY TCP4 203.0.113.7 10.0.0.1 56324\r\n",  # a field missing
    b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",  # IPv6 in TCP4
    b"PROXY TCP4 203.0.113.7 10.0.0.1 70000 443\r\n",  # port out of range
    b"PROXY TCP4 nonsense 10.0.0.1 1 2\r\n",
    b"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n",
    b"PROXY " + b"A" * MAX_V1,  # no end within the longest line
    SIG + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in the v2 form
    SIG + b"\x22\x11\x00\x0c" + bytes(12),  # unknown command
    SIG + b"\x21\x11\x00\x04" + bytes(4),  # IPv4 addresses too short
    SIG + b"\x21\x11\xff\xff",  # 64 KiB of TLVs: refused, not buffered
])
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_header_none_or_the_documented_error(data: bytes) -> None:
    try:
        result = parse_proxy_header(data)
    except ProxyProtocolError:
        return
    if result is not None:
        assert 0 < result.size <= len(data)


# -- on a server ------------------------------------------------------------------------------


def who(request: corral.Request) -> corral.Response:
    return corral.Response.text(f"{request.remote_address[0]} {request.peer[0]}")


async def ask(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 2)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


GET = b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n", v2_tcp4("203.0.113.7", 56324)])
async def test_the_client_is_the_one_the_header_names(header: bytes) -> None:
    router = corral.Router().http("/who", who)
    async with corral.serve(router, port=0, proxy_protocol=True) as server:
        answer = await ask(server.port, header + GET)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"203.0.113.7 127.0.0.1")
        # A health check (LOCAL / UNKNOWN): the connection itself is the client.
        local = await ask(server.port, b"PROXY UNKNOWN\r\n" + GET)
        assert local.endswith(b"127.0.0.1 127.0.0.1")


async def test_a_connection_without_the_header_is_refused() -> None:
    router = corral.Router().http("/who", who)
    async with corral.serve(router, port=0, proxy_protocol=True) as server:
        answer = await ask(server.port, GET)
        assert answer.startswith(b"HTTP/1.1 400") and b"no PROXY protocol header" in answer
    async with corral.serve(router, port=0, proxy_protocol=True,
                            forwarded_allow_ips=["10.9.9.9"]) as server:
        answer = await ask(server.port, b"PROXY UNKNOWN\r\n" + GET)
        assert answer.startswith(b"HTTP/1.1 400") and b"not in forwarded_allow_ips" in answer


async def test_proxy_protocol_with_corrals_own_tls_is_refused() -> None:
    import ssl

    with pytest.raises(ValueError, match="PROXY header comes before the TLS handshake"):
        await corral.serve(corral.Router(), port=0, proxy_protocol=True,
                           ssl=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
