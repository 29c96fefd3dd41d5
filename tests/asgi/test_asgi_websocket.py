"""The ASGI ``websocket`` scope on real sockets: raw ASGI applications over corral's own
connection (asgiref ``specs/www.rst``, WebSocket, and the denial response extension)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import corral
from corral.asgi import ClientDisconnected
from helpers import UPGRADE, Receive, Scope, Send, eventually, read_response

pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")



def url(server: corral.Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


class Echo:
    """Accepts (choosing the first subprotocol offered, with a header), echoes text and
    bytes, closes with 4001 on "bye", and records what it received."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.received: list[dict[str, Any]] = []
        self.send_after_close: list[BaseException] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        self.scopes.append(scope)
        assert await receive() == {"type": "websocket.connect"}
        offered = scope["subprotocols"]
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None,
                    "headers": [(b"x-served-by", b"asgi")]})
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "websocket.disconnect":
                try:
                    await send({"type": "websocket.send", "text": "too late"})
                except OSError as exc:
                    self.send_after_close.append(exc)
                return
            if message.get("text") == "bye":
                await send({"type": "websocket.close", "code": 4001, "reason": "see you"})
                continue
            await send({"type": "websocket.send", **{k: v for k, v in message.items()
                                                      if k in ("text", "bytes")}})


async def test_accept_messages_and_a_close_from_the_application(served: Any) -> None:
    app = Echo()
    server = await served(app)
    async with corral.connect(url(server, "/chat?room=1"),
                              subprotocols=["v2", "v1"]) as client:
        assert client.subprotocol == "v2"
        await client.send("hello")
        assert await client.recv() == "hello"
        await client.send(b"\x00\x01")
        assert await client.recv() == b"\x00\x01"
        await client.send("bye")
        with pytest.raises(corral.ConnectionClosed) as closed:
            await client.recv()
        assert (closed.value.code, closed.value.reason) == (4001, "see you")
    await eventually(lambda: app.send_after_close)
    (scope,) = app.scopes
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["path"] == "/chat" and scope["query_string"] == b"room=1"
    assert scope["subprotocols"] == ["v2", "v1"]
    assert scope["extensions"].keys() >= {"websocket.http.response", "corral.pubsub"}
    assert scope["asgi"]["spec_version"] == "2.4"
    assert app.received[:2] == [{"type": "websocket.receive", "text": "hello"},
                                {"type": "websocket.receive", "bytes": b"\x00\x01"}]
    # The code and reason of the peer's close frame (RFC 6455 7.1.5): the client echoed
    # the code without a reason.
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 4001, "reason": ""}
    assert isinstance(app.send_after_close[0], ClientDisconnected)
    assert isinstance(app.send_after_close[0], OSError)


async def test_the_accept_headers_reach_the_client(served: Any) -> None:
    server = await served(Echo())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(UPGRADE)
    head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
    assert head.startswith("http/1.1 101 ") and "x-served-by: asgi" in head
    writer.close()


async def test_the_client_closing_is_a_disconnect_with_its_code_and_reason(served: Any) -> None:
    app = Echo()
    server = await served(app)
    client = await corral.connect(url(server))
    await client.send("x")
    assert await client.recv() == "x"
    await client.close(4002, "leaving")
    await eventually(lambda: app.received and app.received[-1]["type"] ==
                     "websocket.disconnect")
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 4002,
                                "reason": "leaving"}


async def test_close_before_accept_is_a_403_and_the_denial_response_anything(
    served: Any,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        if scope["path"] == "/closed":
            await send({"type": "websocket.close"})
            return
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "websocket.http.response.body", "body": b'{"error":',
                    "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b'"who?"}'})

    server = await served(app)
    with pytest.raises(corral.InvalidStatus) as refused:
        await corral.connect(url(server, "/closed"))
    assert refused.value.status == 403
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(UPGRADE.replace(b"/chat?room=1", b"/denied"))
    status, headers, body = await read_response(reader)
    assert (status, body) == (401, b'{"error":"who?"}')
    assert headers["content-type"] == "application/json"
    assert headers["www-authenticate"] == "Bearer"
    assert headers["content-length"] == str(len(body))
    assert list(headers).count("content-type") == 1
    writer.close()
    stats = server.stats()
    assert (stats.handshakes["rejected"], stats.handshakes["accepted"]) == (2, 0)


@pytest.mark.parametrize("how", ["raises", "returns"])
async def test_an_application_that_does_not_answer_the_handshake_gets_a_500(
    served: Any, caplog: pytest.LogCaptureFixture, errors_expected: None, how: str,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        if how == "raises":
            raise RuntimeError("no")

    caplog.set_level(logging.ERROR, "corral.asgi")
    server = await served(app)
    with pytest.raises(corral.InvalidStatus) as refused:
        await corral.connect(url(server))
    assert refused.value.status == 500
    assert len([r for r in caplog.records if r.name == "corral.asgi"]) == 1
    assert server.stats().handshakes["error"] == 1


@pytest.mark.parametrize("how", ["returns", "raises"])
async def test_the_application_ending_closes_the_connection(
    served: Any, caplog: pytest.LogCaptureFixture, crash_expected: None, how: str,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        if how == "raises":
            raise RuntimeError("handler bug")

    server = await served(app)
    client = await corral.connect(url(server))
    await client.send("go")
    with pytest.raises(corral.ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.code == (1000 if how == "returns" else 1011)
    await eventually(lambda: not server.connections)


async def test_corral_checks_the_handshake_and_origin_before_the_application(
    served: Any,
) -> None:
    started: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            started.append(scope)

    server = await served(app, allowed_origins=["https://good.example"])
    for request, status in [
        (UPGRADE.replace(b"Version: 13", b"Version: 99"), 426),
        (UPGRADE.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""), 400),
        (UPGRADE.replace(b"Host:", b"Origin: https://evil.example\r\nHost:"), 403),
    ]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request)
        assert (await read_response(reader))[0] == status
        writer.close()
    assert started == []
    assert server.stats().handshakes["refused"] == 3


async def test_limits_and_backpressure_are_corrals(served: Any) -> None:
    app = Echo()
    server = await served(app, max_message_size=1000)
    async with corral.connect(url(server), max_message_size=None) as client:
        await client.send("x" * 1001)
        with pytest.raises(corral.ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.code == 1009
    await eventually(lambda: app.received and app.received[-1]["type"] ==
                     "websocket.disconnect")
    assert app.received[-1]["code"] == 1009


async def test_pubsub_extension_frames_once_for_every_subscriber(served: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        with pytest.raises(RuntimeError, match="not open yet"):
            corral.asgi.subscribe(scope, "room")  # before the accept
        await send({"type": "websocket.accept"})
        assert corral.asgi.subscribe(scope, "room") is True
        assert corral.asgi.subscribe(scope, "room") is False
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message["text"] == "leave":
                assert corral.asgi.unsubscribe(scope, "room") is True
                await send({"type": "websocket.send", "text": "left"})
                continue
            await corral.asgi.publish(scope, "room", message["text"])

    server = await served(app)
    clients = [await corral.connect(url(server)) for _ in range(3)]
    await eventually(lambda: server.subscriber_count("room") == 3)
    await clients[0].send("hi all")
    for client in clients:
        assert await client.recv() == "hi all"
    await clients[2].send("leave")
    assert await clients[2].recv() == "left"
    await clients[1].send("two left")
    for client in clients[:2]:
        assert await client.recv() == "two left"
    stats = server.stats()
    assert (stats.publishes, stats.messages_sent) == (2, 3 + 1 + 2)
    for client in clients:
        await client.close()


async def test_shutdown_closes_asgi_websockets_with_1001(served: Any) -> None:
    app = Echo()
    server = await served(app)
    client = await corral.connect(url(server))
    await client.send("x")
    assert await client.recv() == "x"
    await server.close()
    with pytest.raises(corral.ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.code == 1001
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 1001, "reason": ""}
