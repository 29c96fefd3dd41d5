"""corral against the ``websockets`` library, both ways round, on 127.0.0.1.

The first half runs corral's server under a websockets client, the second half corral's
client against a websockets server. Compression is off on the websockets side: corral
negotiates no extension.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed as WSClosed
from websockets.exceptions import ConnectionClosedError as WSClosedError
from websockets.exceptions import ConnectionClosedOK as WSClosedOK
from websockets.exceptions import InvalidStatus as WSInvalidStatus

import corral
from corral import (
    Accept,
    AsyncWebSocket,
    CloseKind,
    CloseReason,
    Handler,
    Reject,
    Router,
    WebSocket,
)

pytestmark = pytest.mark.timeout(10)

MiB = 2**20
BIG = 8 * MiB


# -- peers -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def corral_server(app: Any, **options: Any) -> AsyncIterator[tuple[str, corral.Server]]:
    async with corral.serve(app, "127.0.0.1", 0, **options) as server:
        yield f"ws://127.0.0.1:{server.port}", server


@contextlib.asynccontextmanager
async def websockets_server(handler: Any, **kwargs: Any) -> AsyncIterator[str]:
    async with ws_serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None,
                        **kwargs) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


def websockets_client(url: str, **kwargs: Any) -> Any:
    return ws_connect(url, compression=None, ping_interval=None, **kwargs)


async def corral_echo(ws: AsyncWebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def websockets_echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def big_text(size: int) -> str:
    """Mixed one- to four-byte characters, ``size`` bytes of UTF-8 or a little more."""
    unit = "abc-é-€-😀-"  # 3 + 1 + 2 + 1 + 3 + 1 + 4 + 1 = 16 bytes
    return unit * (size // 16 + 1)


MESSAGES = ["hello", "", "héllo wörld €😀", b"", b"\x00\x01\xfe\xff", bytes(range(256)) * 4]


# -- corral server, websockets client ------------------------------------------------------------


async def test_server_echoes_text_and_binary() -> None:
    async with corral_server(corral_echo) as (url, _), websockets_client(url) as client:
        for message in MESSAGES:
            await client.send(message)
            reply = await client.recv()
            assert reply == message
            assert type(reply) is type(message)


async def test_server_large_messages() -> None:
    text = big_text(3 * MiB)
    data = bytes(range(256)) * (5 * MiB // 256)
    async with (corral_server(corral_echo, max_message_size=BIG) as (url, _),
                websockets_client(url, max_size=BIG) as client):
        await client.send(data)
        assert await client.recv() == data
        await client.send(text)
        assert await client.recv() == text


async def test_server_refuses_message_over_limit_with_1009() -> None:
    async with (corral_server(corral_echo, max_message_size=MiB) as (url, _),
                websockets_client(url) as client):
        await client.send(b"x" * (MiB + 1))
        with pytest.raises(WSClosedError) as info:
            await client.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1009


async def test_server_reassembles_fragments_from_websockets() -> None:
    async with corral_server(corral_echo) as (url, _), websockets_client(url) as client:
        await client.send(["frag", "ment", "é€😀"])
        assert await client.recv() == "fragmenté€😀"
        await client.send([b"\x00", b"\x01\x02", b""])
        assert await client.recv() == b"\x00\x01\x02"


async def test_server_receive_fragments_option_sees_each_piece() -> None:
    received: asyncio.Queue[tuple[str | bytes, bool]] = asyncio.Queue()

    class Pieces(Handler):
        def on_fragment(self, ws: WebSocket, data: str | bytes, last: bool) -> None:
            received.put_nowait((data, last))

    app = Router().websocket("/", Pieces, options={"receive_fragments": True})
    async with corral_server(app) as (url, _), websockets_client(url) as client:
        await client.send(["ab", "cd", "ef"])
        pieces: list[tuple[str | bytes, bool]] = []
        while not pieces or not pieces[-1][1]:
            pieces.append(await asyncio.wait_for(received.get(), 2))
    assert "".join(str(data) for data, _ in pieces) == "abcdef"
    assert [last for _, last in pieces] == [False] * (len(pieces) - 1) + [True]


async def test_server_sends_fragments_to_websockets() -> None:
    async def fragments(ws: AsyncWebSocket) -> None:
        await ws.recv()

        async def pieces() -> AsyncIterator[bytes]:
            for piece in (b"one", b"two", b"three"):
                yield piece

        await ws.send_fragments(["al", "pha", "é"])
        await ws.send_fragments(pieces())
        await ws.send_fragments(["whole"])
        await ws.recv()

    async with corral_server(fragments) as (url, _), websockets_client(url) as client:
        await client.send("go")
        assert [piece async for piece in client.recv_streaming()] == ["al", "pha", "é"]
        assert [piece async for piece in client.recv_streaming()] == [b"one", b"two", b"three"]
        assert await client.recv() == "whole"
        await client.send("done")


async def test_websockets_pings_corral_server() -> None:
    pings: list[bytes] = []

    class Pinged(Handler):
        def on_ping(self, ws: WebSocket, payload: bytes) -> None:
            pings.append(payload)

    async with corral_server(Pinged) as (url, _), websockets_client(url) as client:
        pong = await client.ping(b"are you there")
        latency = await asyncio.wait_for(pong, 2)
        assert latency >= 0
    assert pings == [b"are you there"]


async def test_corral_server_pings_websockets() -> None:
    async def pinger(ws: AsyncWebSocket) -> None:
        await ws.recv()
        pong = await ws.ping(b"server ping")
        await asyncio.wait_for(pong, 2)
        await ws.send("pong received")
        await ws.recv()

    async with corral_server(pinger) as (url, _), websockets_client(url) as client:
        await client.send("ping me")
        assert await client.recv() == "pong received"
        await client.send("bye")


CLOSES = [(1000, ""), (1001, "going away"), (4000, "custom reason é")]


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_server_closes_with_code_and_reason(code: int, reason: str) -> None:
    async def closer(ws: AsyncWebSocket) -> None:
        await ws.close(code, reason)

    async with corral_server(closer) as (url, _), websockets_client(url) as client:
        with pytest.raises(WSClosedOK if code in (1000, 1001) else WSClosedError) as info:
            await client.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (code, reason)
    assert (client.close_code, client.close_reason) == (code, reason)


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_websockets_client_closes_with_code_and_reason(code: int, reason: str) -> None:
    closed: asyncio.Future[CloseReason] = asyncio.get_running_loop().create_future()

    class Recorder(Handler):
        def on_close(self, ws: WebSocket, why: CloseReason) -> None:
            closed.set_result(why)

    async with corral_server(Recorder) as (url, _), websockets_client(url) as client:
        await client.close(code, reason)
        why = await asyncio.wait_for(closed, 2)
    assert why.kind is CloseKind.REMOTE
    assert (why.code, why.reason) == (code, reason)


async def test_server_shutdown_sends_1001() -> None:
    async with corral_server(corral_echo) as (url, server), websockets_client(url) as client:
        await client.send("hi")
        assert await client.recv() == "hi"
        await server.close()
        with pytest.raises(WSClosedOK):
            await client.recv()
    assert client.close_code == 1001


async def test_server_subprotocol_negotiation() -> None:
    async def which(ws: AsyncWebSocket) -> None:
        await ws.send(str(ws.subprotocol))
        await ws.recv()

    app = Router().websocket("/", which, subprotocols=("chat", "superchat"))
    async with corral_server(app) as (url, _):
        async with websockets_client(url, subprotocols=["superchat", "chat"]) as client:
            assert client.subprotocol == "superchat"
            assert await client.recv() == "superchat"
            await client.send("bye")
        async with websockets_client(url, subprotocols=["other"]) as client:
            assert client.subprotocol is None
            assert await client.recv() == "None"
            await client.send("bye")


async def test_server_handler_picks_subprotocol() -> None:
    class Picky(Handler):
        def upgrade(self, request: corral.Request) -> Accept:
            return Accept(subprotocol=request.subprotocols[-1])

    async with (corral_server(Picky) as (url, _),
                websockets_client(url, subprotocols=["v1", "v2"]) as client):
        assert client.subprotocol == "v2"


async def test_server_reject_is_invalid_status() -> None:
    class Bouncer(Handler):
        def upgrade(self, request: corral.Request) -> Reject:
            return Reject(401, "no entry\n", headers=[("X-Why", "test")])

    async with corral_server(Bouncer) as (url, _):
        with pytest.raises(WSInvalidStatus) as info:
            async with websockets_client(url):
                pass
    response = info.value.response
    assert response.status_code == 401
    assert response.headers["X-Why"] == "test"
    assert response.body == b"no entry\n"


# -- corral client, websockets server ------------------------------------------------------------


async def test_client_echoes_text_and_binary() -> None:
    async with websockets_server(websockets_echo) as url, corral.connect(url) as ws:
        for message in MESSAGES:
            await ws.send(message)
            reply = await ws.recv()
            assert reply == message
            assert type(reply) is type(message)


async def test_client_large_messages() -> None:
    text = big_text(3 * MiB)
    data = bytes(range(256)) * (5 * MiB // 256)
    async with (websockets_server(websockets_echo, max_size=BIG) as url,
                corral.connect(url, max_message_size=BIG) as ws):
        await ws.send(data)
        assert await ws.recv() == data
        await ws.send(text)
        assert await ws.recv() == text


async def test_client_refuses_message_over_limit_with_1009() -> None:
    async def big(ws: ServerConnection) -> None:
        await ws.send(b"x" * (MiB + 1))
        await ws.wait_closed()

    async with websockets_server(big) as url, corral.connect(url) as ws:
        with pytest.raises(corral.ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.code == 1009


async def test_client_reassembles_fragments_from_websockets() -> None:
    async def fragments(ws: ServerConnection) -> None:
        await ws.send(["frag", "ment", "é€😀"])
        await ws.send([b"\x00", b"\x01\x02"])
        await ws.recv()

    async with websockets_server(fragments) as url, corral.connect(url) as ws:
        assert await ws.recv() == "fragmenté€😀"
        assert await ws.recv() == b"\x00\x01\x02"
        await ws.send("done")


async def test_client_handler_receives_fragments() -> None:
    received: asyncio.Queue[tuple[str | bytes, bool]] = asyncio.Queue()

    class Pieces(Handler):
        def on_fragment(self, ws: WebSocket, data: str | bytes, last: bool) -> None:
            received.put_nowait((data, last))

    async def fragments(ws: ServerConnection) -> None:
        await ws.send([b"ab", b"cd", b"ef"])
        await ws.wait_closed()

    async with websockets_server(fragments) as url:
        ws = await corral.connect(url, handler=Pieces(), receive_fragments=True)
        assert isinstance(ws, WebSocket)
        pieces: list[tuple[str | bytes, bool]] = []
        while not pieces or not pieces[-1][1]:
            pieces.append(await asyncio.wait_for(received.get(), 2))
        ws.close()
        why = await asyncio.wait_for(ws.wait_closed(), 2)
    assert b"".join(bytes(data) for data, _ in pieces) == b"abcdef"  # type: ignore[arg-type]
    assert [last for _, last in pieces] == [False] * (len(pieces) - 1) + [True]
    assert (why.kind, why.code) == (CloseKind.NORMAL, 1000)


async def test_client_sends_fragments_to_websockets() -> None:
    async def frames(ws: ServerConnection) -> None:
        while True:
            try:
                pieces = [piece async for piece in ws.recv_streaming()]
            except WSClosed:
                return
            await ws.send(json.dumps([p if isinstance(p, str) else p.hex() for p in pieces]))

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"\x01", b"\x02\x03"):
            yield piece

    async with websockets_server(frames) as url, corral.connect(url) as ws:
        await ws.send_fragments(["al", "pha", "é"])
        assert json.loads(await ws.recv()) == ["al", "pha", "é"]
        await ws.send_fragments(pieces())
        assert json.loads(await ws.recv()) == ["01", "0203"]
        await ws.send("whole")
        assert json.loads(await ws.recv()) == ["whole"]


async def test_client_pings_websockets() -> None:
    async with websockets_server(websockets_echo) as url, corral.connect(url) as ws:
        pong = await ws.ping(b"client ping")
        assert await asyncio.wait_for(pong, 2) > 0


async def test_websockets_server_pings_corral_client() -> None:
    async def pinger(ws: ServerConnection) -> None:
        pong = await ws.ping(b"server ping")
        await asyncio.wait_for(pong, 2)
        await ws.send("pong received")
        await ws.wait_closed()

    async with websockets_server(pinger) as url, corral.connect(url) as ws:
        assert await ws.recv() == "pong received"


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_client_closes_with_code_and_reason(code: int, reason: str) -> None:
    seen: asyncio.Future[tuple[int | None, str | None]] = (
        asyncio.get_running_loop().create_future()
    )

    async def recorder(ws: ServerConnection) -> None:
        with contextlib.suppress(WSClosed):
            await ws.recv()
        seen.set_result((ws.close_code, ws.close_reason))

    async with websockets_server(recorder) as url:
        ws = await corral.connect(url)
        await ws.close(code, reason)
        assert await asyncio.wait_for(seen, 2) == (code, reason)
    assert ws.close_reason is not None
    assert ws.close_reason.kind is CloseKind.NORMAL
    assert ws.close_code == code  # the server echoed the code


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_websockets_server_closes_with_code_and_reason(code: int, reason: str) -> None:
    async def closer(ws: ServerConnection) -> None:
        await ws.close(code, reason)

    expected = corral.ConnectionClosedOK if code in (1000, 1001) else corral.ConnectionClosedError
    async with websockets_server(closer) as url, corral.connect(url) as ws:
        with pytest.raises(expected) as info:
            await ws.recv()
    assert (info.value.code, info.value.reason) == (code, reason)
    assert ws.close_reason is not None
    assert ws.close_reason.kind is CloseKind.REMOTE


async def test_client_subprotocol_negotiation() -> None:
    async def which(ws: ServerConnection) -> None:
        await ws.send(str(ws.subprotocol))
        await ws.wait_closed()

    async with (websockets_server(which, subprotocols=["chat"]) as url,
                corral.connect(url, subprotocols=["superchat", "chat"]) as ws):
        assert ws.subprotocol == "chat"
        assert await ws.recv() == "chat"


async def test_websockets_rejects_corral_client() -> None:
    def refuse(connection: ServerConnection, request: Any) -> Any:
        return connection.respond(HTTPStatus.FORBIDDEN, "forbidden\n")

    async with websockets_server(websockets_echo, process_request=refuse) as url:
        with pytest.raises(corral.InvalidStatus) as info:
            await corral.connect(url)
    assert info.value.status == 403
    assert info.value.body == b"forbidden\n"


async def test_websockets_refuses_unoffered_subprotocol_of_corral_client() -> None:
    async with websockets_server(websockets_echo, subprotocols=["chat"]) as url:
        with pytest.raises(corral.InvalidStatus) as info:
            await corral.connect(url, subprotocols=["other"])
    assert info.value.status == 400
