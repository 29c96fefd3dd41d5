"""permessage-deflate between corral and the ``websockets`` library, both ways round.

First a websockets client (its default offer, then ``ClientPerMessageDeflateFactory`` with
other parameters) against a corral server with compression on; then corral's client (its
default offer, and one without window limits) against websockets servers with several
``ServerPerMessageDeflateFactory`` settings. Each side must report the extension, both must
agree on the parameters (what one compresses with is within what the other inflates with),
and text and binary messages from empty to several MiB, compressible or not, whole or in
fragments, must arrive intact both ways.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

import corral
from corral import AsyncWebSocket, DeflateSettings

pytestmark = pytest.mark.timeout(15)

MiB = 1 << 20
MAX_SIZE = 16 * MiB
PMD = "permessage-deflate"


# -- messages ------------------------------------------------------------------------------------


@functools.cache
def _block() -> bytes:
    return b"".join(b"%d corral websockets deflate interop %x\n" % (i, i * 7919)
                    for i in range(3000))


@functools.cache
def compressible(size: int) -> bytes:
    block = _block()
    return (block * (size // len(block) + 1))[:size]


@functools.cache
def messages() -> list[str | bytes]:
    """Text and binary of many sizes, from empty to 3 MiB; incompressible bytes (DEFLATE
    stored blocks); multi-byte UTF-8."""
    out: list[str | bytes] = []
    for size in (0, 1, 63, 64, 1000, 65537, MiB, 3 * MiB):
        out += [compressible(size).decode(), compressible(size)]
    out.append(os.urandom(MiB))
    out.append("é€😀 mixed widths, " * 50_000)  # ~1.2 MB of UTF-8
    return out


def fragments_of(message: str | bytes, count: int = 4) -> list[Any]:
    step = max(1, -(-len(message) // count))
    return [message[i : i + step] for i in range(0, len(message), step)] or [message]


# -- checks --------------------------------------------------------------------------------------


def agree(corral_ext: Any, ws_ext: Any) -> None:
    """Each side compresses within what the other inflates with (RFC 7692 7.1.2), and drops
    its window whenever the other relies on that (7.1.1)."""
    assert type(ws_ext).__name__ == "PerMessageDeflate"
    assert corral_ext.local_max_window_bits <= ws_ext.remote_max_window_bits
    assert ws_ext.local_max_window_bits <= corral_ext.remote_max_window_bits
    if ws_ext.remote_no_context_takeover:
        assert corral_ext.local_no_context_takeover
    if corral_ext.remote_no_context_takeover:
        assert ws_ext.local_no_context_takeover


async def exchange(send: Any, recv: Any) -> None:
    for message in messages():
        await send(message)
        reply = await recv()
        assert type(reply) is type(message)
        assert len(reply) == len(message)
        assert reply == message


# -- corral server, websockets client ------------------------------------------------------------


@contextlib.asynccontextmanager
async def corral_server(
    settings: DeflateSettings | None = None,
) -> AsyncIterator[tuple[str, list[AsyncWebSocket]]]:
    """A corral echo server with compression on: whole messages on /, in fragments on
    /fragments. Yields its URL and the connections it served."""
    seen: list[AsyncWebSocket] = []

    async def echo(ws: AsyncWebSocket) -> None:
        seen.append(ws)
        async for message in ws:
            await ws.send(message)

    async def fragment_echo(ws: AsyncWebSocket) -> None:
        seen.append(ws)
        async for message in ws:
            await ws.send_fragments(fragments_of(message))

    app = corral.Router().websocket("/", echo).websocket("/fragments", fragment_echo)
    async with corral.serve(app, "127.0.0.1", 0, max_message_size=MAX_SIZE,
                            compression=settings or DeflateSettings()) as server:
        yield f"ws://127.0.0.1:{server.port}", seen


def websockets_client(url: str, **kwargs: Any) -> Any:
    return ws_connect(url, max_size=MAX_SIZE, ping_interval=None, **kwargs)


# name -> (websockets client arguments, corral's answer)
CLIENT_OFFERS: dict[str, tuple[dict[str, Any], str]] = {
    "default": ({"compression": "deflate"},
                f"{PMD}; server_max_window_bits=12; client_max_window_bits=12"),
    "client-bits-10-server-nct": (
        {"extensions": [ClientPerMessageDeflateFactory(client_max_window_bits=10,
                                                       server_no_context_takeover=True)]},
        f"{PMD}; server_no_context_takeover; server_max_window_bits=12;"
        " client_max_window_bits=10"),
    "server-bits-10-client-nct": (
        {"extensions": [ClientPerMessageDeflateFactory(server_max_window_bits=10,
                                                       client_no_context_takeover=True)]},
        f"{PMD}; client_no_context_takeover; server_max_window_bits=10;"
        " client_max_window_bits=12"),
    "no-client-bits": (
        {"extensions": [ClientPerMessageDeflateFactory(client_max_window_bits=None)]},
        f"{PMD}; server_max_window_bits=12"),
    "all-9-no-takeover": (
        {"extensions": [ClientPerMessageDeflateFactory(
            server_max_window_bits=9, client_max_window_bits=9,
            server_no_context_takeover=True, client_no_context_takeover=True)]},
        f"{PMD}; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=9; client_max_window_bits=9"),
}


@pytest.mark.parametrize("name", list(CLIENT_OFFERS))
async def test_websockets_client_against_corral_server(name: str) -> None:
    kwargs, answer = CLIENT_OFFERS[name]
    kwargs = {"compression": None, **kwargs}
    async with corral_server() as (url, seen), websockets_client(url, **kwargs) as client:
        assert client.response.headers["Sec-WebSocket-Extensions"] == answer
        await exchange(client.send, client.recv)
        (server_ws,) = seen
        assert server_ws.ws is not None
        assert server_ws.ws.extensions == (PMD,)
        (ws_ext,) = client.protocol.extensions
        (corral_ext,) = server_ws.ws.conn.extensions
        agree(corral_ext, ws_ext)


async def test_websockets_client_fragments_both_ways() -> None:
    """websockets sends an iterable as fragments (compressed as one message, RSV1 on the
    first); corral's send_fragments answers in fragments, read one by one."""
    async with (corral_server() as (url, _),
                websockets_client(url + "/fragments", compression="deflate") as client):
        for message in (compressible(3 * MiB).decode(), compressible(MiB), os.urandom(300_000),
                        "é€😀" * 1000, b"x"):
            await client.send(fragments_of(message, 5))
            pieces = [piece async for piece in client.recv_streaming()]
            joined = b"".join(pieces) if isinstance(message, bytes) else "".join(pieces)
            assert joined == message
            if len(message) >= 4:
                assert len(pieces) == 4
        assert client.response.headers["Sec-WebSocket-Extensions"].startswith(PMD)


async def test_corral_server_without_compression_declines_websockets() -> None:
    async with (corral.serve(corral.Router().websocket("/", AsyncWebSocket), "127.0.0.1", 0)
                as server,
                websockets_client(f"ws://127.0.0.1:{server.port}", compression="deflate")
                as client):
        assert "Sec-WebSocket-Extensions" not in client.response.headers
        assert client.protocol.extensions == []


# -- corral client, websockets server ------------------------------------------------------------


@contextlib.asynccontextmanager
async def websockets_server(**kwargs: Any) -> AsyncIterator[tuple[str, list[ServerConnection]]]:
    """A websockets echo server: whole messages on /, in four fragments on /fragments."""
    seen: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        seen.append(ws)
        assert ws.request is not None
        async for message in ws:
            if ws.request.path == "/fragments":
                await ws.send(fragments_of(message))
            else:
                await ws.send(message)

    async with ws_serve(handler, "127.0.0.1", 0, max_size=MAX_SIZE, ping_interval=None,
                        **kwargs) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


OPEN = DeflateSettings(server_max_window_bits=15, client_max_window_bits=15)

# name -> (websockets server arguments, corral client settings or None for the default,
#          websockets' answer)
SERVER_ANSWERS: dict[str, tuple[dict[str, Any], DeflateSettings | None, str]] = {
    "default": ({"compression": "deflate"}, None,
                f"{PMD}; server_max_window_bits=12; client_max_window_bits=12"),
    "default-open-client": ({"compression": "deflate"}, OPEN,
                            f"{PMD}; server_max_window_bits=12; client_max_window_bits=12"),
    "server-nct": ({"extensions": [ServerPerMessageDeflateFactory(
                        server_no_context_takeover=True)]}, None,
                   f"{PMD}; server_no_context_takeover"),
    "server-nct-open-client": ({"extensions": [ServerPerMessageDeflateFactory(
                                    server_no_context_takeover=True)]}, OPEN,
                               f"{PMD}; server_no_context_takeover"),
    "server-bits-10": ({"extensions": [ServerPerMessageDeflateFactory(
                            server_max_window_bits=10)]}, None,
                       f"{PMD}; server_max_window_bits=10"),
    "server-bits-10-open-client": ({"extensions": [ServerPerMessageDeflateFactory(
                                        server_max_window_bits=10)]}, OPEN,
                                   f"{PMD}; server_max_window_bits=10"),
    "client-nct-bits-9": ({"extensions": [ServerPerMessageDeflateFactory(
                               client_no_context_takeover=True, client_max_window_bits=9)]},
                          None, f"{PMD}; client_no_context_takeover; client_max_window_bits=9"),
    "all-9-no-takeover": ({"extensions": [ServerPerMessageDeflateFactory(
                               server_max_window_bits=9, client_max_window_bits=9,
                               server_no_context_takeover=True,
                               client_no_context_takeover=True,
                               require_client_max_window_bits=True)]}, None,
                          f"{PMD}; server_no_context_takeover; client_no_context_takeover;"
                          " server_max_window_bits=9; client_max_window_bits=9"),
}


@pytest.mark.parametrize("name", list(SERVER_ANSWERS))
async def test_corral_client_against_websockets_server(name: str) -> None:
    kwargs, settings, answer = SERVER_ANSWERS[name]
    kwargs = {"compression": None, **kwargs}
    options: dict[str, Any] = {"max_message_size": MAX_SIZE}
    if settings is not None:
        options["compression"] = settings
    async with (websockets_server(**kwargs) as (url, seen),
                corral.connect(url, **options) as ws):
        assert ws.ws is not None
        assert ws.ws.extensions == (PMD,)
        await exchange(ws.send, ws.recv)
        (server_ws,) = seen
        assert server_ws.response is not None
        assert server_ws.response.headers["Sec-WebSocket-Extensions"] == answer
        (ws_ext,) = server_ws.protocol.extensions
        (corral_ext,) = ws.ws.conn.extensions
        agree(corral_ext, ws_ext)


async def test_corral_client_fragments_both_ways() -> None:
    """corral's send_fragments (one compressed message over several frames) to websockets,
    and websockets' fragmented answers reassembled by corral."""
    async with (websockets_server(compression="deflate") as (url, _),
                corral.connect(url + "/fragments", max_message_size=MAX_SIZE) as ws):
        assert ws.ws is not None
        assert ws.ws.extensions == (PMD,)
        for message in (compressible(3 * MiB).decode(), compressible(MiB), os.urandom(300_000),
                        "é€😀" * 1000, b"x"):
            await ws.send_fragments(fragments_of(message, 5))
            assert await ws.recv() == message


async def test_corral_client_without_compression_against_websockets() -> None:
    async with (websockets_server(compression="deflate") as (url, seen),
                corral.connect(url, compression=None) as ws):
        assert ws.ws is not None
        assert ws.ws.extensions == ()
        await ws.send(compressible(MiB))
        assert await ws.recv() == compressible(MiB)
        assert seen[0].protocol.extensions == []
