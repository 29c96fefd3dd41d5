"""The ASGI ``http`` scope on real sockets (127.0.0.1): raw ASGI applications, so every rule
of asgiref's ``specs/www.rst`` is checked against what corral itself does, not what a
framework smooths over. Frameworks are in test_frameworks.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import corral
from corral.asgi import ClientDisconnected
from helpers import (
    Receive,
    Scope,
    Send,
    asgi_body,
    asgi_respond,
    eventually,
    http_request,
    read_response,
    read_to_eof,
)

pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")



class Recording:
    """An ASGI application that answers with what it saw; ``scopes`` keeps every scope."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan support: served anyway
        self.scopes.append(scope)
        body = await asgi_body(receive)
        await asgi_respond(send, 200, b"%s %s %d" % (scope["method"].encode(),
                                                scope["path"].encode(), len(body)),
                      [(b"content-type", b"text/plain")])


async def opened(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_the_scope(served: Any) -> None:
    app = Recording()
    server = await served(app, root_path="/api")
    reader, writer = await opened(server.port)
    # Behind a proxy that strips the /api prefix (as --root-path expects): root_path is
    # put back in front of the path.
    writer.write(b"GET /caf%C3%A9/x?q=1&r=%20 HTTP/1.1\r\nHost: example.test\r\n"
                 b"X-Custom: One\r\nx-custom: two\r\n\r\n")
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"GET /api/caf\xc3\xa9/x 0")
    writer.close()
    (scope,) = app.scopes
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1" and scope["method"] == "GET"
    assert scope["scheme"] == "http"
    # path decoded (and including root_path, as Starlette expects), raw_path as sent.
    assert scope["path"] == "/api/café/x" and scope["raw_path"] == b"/api/caf%C3%A9/x"
    assert scope["root_path"] == "/api"
    assert scope["query_string"] == b"q=1&r=%20"
    assert scope["headers"] == [(b"host", b"example.test"), (b"x-custom", b"One"),
                                (b"x-custom", b"two")]
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ("127.0.0.1", server.port)
    assert "corral.pubsub" in scope["extensions"]
    assert "state" not in scope  # no lifespan support, no state


async def test_keep_alive_and_pipelining_answer_in_order(served: Any) -> None:
    server = await served(Recording())
    reader, writer = await opened(server.port)
    writer.write(http_request("GET", "/a") + http_request("POST", "/b", b"12345")
                 + http_request("GET", "/c"))
    answers = [await read_response(reader) for _ in range(3)]
    assert [a[2] for a in answers] == [b"GET /a 0", b"POST /b 5", b"GET /c 0"]
    assert all("connection" not in a[1] for a in answers)  # kept alive
    writer.write(http_request("GET", "/d", b"", "Connection: close"))
    _status, headers, body = await read_response(reader)
    assert (body, headers["connection"]) == (b"GET /d 0", "close")
    assert await read_to_eof(reader) == b""
    writer.close()


async def test_a_body_streams_in_pieces_content_length_and_chunked(served: Any) -> None:
    pieces: list[tuple[bytes, bool]] = []
    arrived = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            pieces.append((message["body"], message["more_body"]))
            arrived.set()
            if not message["more_body"]:
                break
        await asgi_respond(send, 200, b"%d" % sum(len(p) for p, _ in pieces))

    server = await served(app)
    for framing in ("length", "chunked"):
        pieces.clear()
        arrived.clear()
        reader, writer = await opened(server.port)
        if framing == "length":
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        else:
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n")
        await asyncio.wait_for(arrived.wait(), 5)
        assert pieces == [(b"hello", True)]  # given before the rest was sent
        writer.write(b"world" if framing == "length" else b"5\r\nworld\r\n0\r\n\r\n")
        status, _, body = await read_response(reader)
        assert (status, body) == (200, b"10")
        assert b"".join(p for p, _ in pieces) == b"helloworld" and pieces[-1][1] is False
        writer.close()


async def test_a_body_over_max_body_gets_413(served: Any) -> None:
    server = await served(Recording(), max_body=1000)
    reader, writer = await opened(server.port)
    writer.write(http_request("POST", "/", b"x" * 1001))
    status, headers, _ = await read_response(reader)
    assert (status, headers["connection"]) == (413, "close")
    writer.close()
    # Chunked: refused once the body grows past the limit.
    reader, writer = await opened(server.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"200\r\n" + b"y" * 512 + b"\r\n" + b"200\r\n" + b"y" * 512 + b"\r\n")
    status, _, _ = await read_response(reader)
    assert status == 413
    writer.close()


async def test_expect_100_continue_is_answered_when_the_body_is_asked_for(served: Any) -> None:
    asked = asyncio.Event()
    go = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await go.wait()
        asked.set()
        await asgi_respond(send, 200, await asgi_body(receive))

    server = await served(app)
    reader, writer = await opened(server.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    with pytest.raises(asyncio.TimeoutError):  # nothing until the application reads
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.2)
    go.set()
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
        b"HTTP/1.1 100 Continue\r\n\r\n")
    writer.write(b"body")
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"body")
    writer.close()


async def test_responses_framed_by_length_chunks_or_close_and_head(served: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await asgi_body(receive)
        path = scope["path"]
        headers = [(b"content-length", b"6")] if path == "/declared" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if path == "/empty":
            await send({"type": "http.response.start", "status": 204, "headers": []})
        for piece in (b"abc", b"def"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    server = await served(app)
    reader, writer = await opened(server.port)
    writer.write(http_request("GET", "/streamed"))
    status, headers, body = await read_response(reader)
    assert (headers["transfer-encoding"], body) == ("chunked", b"abcdef")
    assert "date" in headers
    writer.write(http_request("GET", "/declared"))
    status, headers, body = await read_response(reader)
    assert (headers["content-length"], body) == ("6", b"abcdef")
    assert "transfer-encoding" not in headers
    writer.write(http_request("HEAD", "/declared"))
    status, headers, body = await read_response(reader, head=True)
    assert (status, headers["content-length"], body) == (200, "6", b"")
    writer.write(http_request("GET", "/declared"))  # the HEAD answer carried no body bytes
    assert (await read_response(reader))[2] == b"abcdef"
    writer.close()
    # HTTP/1.0: no chunked encoding; the end of the body is the end of the connection.
    reader, writer = await opened(server.port)
    writer.write(b"GET /streamed HTTP/1.0\r\nHost: x\r\n\r\n")
    raw = await read_to_eof(reader)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\nabcdef")
    assert b"connection: close" in raw.lower() and b"transfer-encoding" not in raw.lower()
    writer.close()


async def test_http_disconnect_when_the_client_goes_away(served: Any) -> None:
    got: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        got.append(await receive())  # the (empty) body
        got.append(await receive())  # then: waits for the client to leave
        with pytest.raises(ClientDisconnected):
            await asgi_respond(send, 200, b"too late")
        done.set()

    server = await served(app)
    _reader, writer = await opened(server.port)
    writer.write(http_request("GET", "/long-poll"))
    await eventually(lambda: len(got) == 1)
    writer.close()
    await asyncio.wait_for(done.wait(), 5)
    assert got == [{"type": "http.request", "body": b"", "more_body": False},
                   {"type": "http.disconnect"}]


@pytest.mark.parametrize("when", ["before", "during", "returns"])
async def test_application_errors(served: Any, caplog: pytest.LogCaptureFixture,
                                  errors_expected: None, when: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/ok":
            await asgi_respond(send, 200, b"ok")
            return
        if when == "returns":
            return
        if when == "during":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("boom")

    caplog.set_level(logging.ERROR, "corral.asgi")
    server = await served(app)
    reader, writer = await opened(server.port)
    writer.write(http_request("GET", "/fail"))
    if when == "during":
        raw = await read_to_eof(reader)  # closed mid-response: the client sees it cut
        assert raw.startswith(b"HTTP/1.1 200 OK") and not raw.endswith(b"0\r\n\r\n")
    else:
        status, headers, _body = await read_response(reader)
        assert (status, headers["connection"]) == (500, "close")
        assert await read_to_eof(reader) == b""
    writer.close()
    errors = [r for r in caplog.records if r.name == "corral.asgi"]
    assert len(errors) == 1  # logged once
    # The server goes on serving others.
    reader, writer = await opened(server.port)
    writer.write(http_request("GET", "/ok"))
    assert (await read_response(reader))[2] == b"ok"
    writer.close()


async def test_a_slow_application_stops_reading_and_a_slow_client_makes_send_wait(
    served: Any,
) -> None:
    reading = asyncio.Event()
    sent = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal sent
        if scope["type"] != "http":
            return
        if scope["path"] == "/upload":
            await reading.wait()  # not reading the body yet
            total = len(await asgi_body(receive))
            await asgi_respond(send, 200, b"%d" % total)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(400):
            await send({"type": "http.response.body", "body": b"z" * 65536,
                        "more_body": True})
            sent += 1
        await send({"type": "http.response.body", "body": b""})

    server = await served(app, max_body=64 * 2**20)
    # Upload: the server stops reading while the application does not take the body, so
    # the client's writes back up instead of the server's memory growing.
    reader, writer = await opened(server.port)
    size = 32 * 2**20
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    writer.transport.set_write_buffer_limits(high=0)
    chunk = b"u" * 2**20
    written = 0
    for _ in range(32):
        writer.write(chunk)
        written += len(chunk)
        if writer.transport.get_write_buffer_size() > 4 * 2**20:
            break
    assert writer.transport.get_write_buffer_size() > 0  # the server stopped taking it
    reading.set()
    while written < size:
        writer.write(chunk)
        written += len(chunk)
        await writer.drain()
    status, _, body = await read_response(reader, timeout=20)
    assert (status, body) == (200, b"%d" % size)
    writer.close()
    # Download: a client that does not read makes the application's send wait.
    reader, writer = await opened(server.port)
    writer.write(http_request("GET", "/download"))
    await asyncio.sleep(0.5)
    assert 0 < sent < 400  # waiting, not buffering 25 MiB
    got = await asyncio.wait_for(reader.read(2**20), 5)
    assert got.startswith(b"HTTP/1.1 200 OK")
    writer.transport.abort()
    await eventually(lambda: not server.registry.tasks, timeout=5)


async def test_another_upgrade_and_garbage_are_refused(served: Any) -> None:
    server = await served(Recording())
    reader, writer = await opened(server.port)
    writer.write(b"NOT HTTP\r\n\r\n")
    status, _, _body = await read_response(reader)
    assert status == 400
    writer.close()
    reader, writer = await opened(server.port)
    writer.write(http_request("GET", "/a") + b"GARBAGE\r\n\r\n")
    assert (await read_response(reader))[2] == b"GET /a 0"  # the good one first
    assert (await read_response(reader))[0] == 400
    writer.close()


async def test_publish_from_a_request_reaches_websocket_subscribers(served: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            body = await asgi_body(receive)
            count = await corral.asgi.publish(scope, "news", body.decode())
            await asgi_respond(send, 200, b"%d" % count)
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            assert corral.asgi.subscribe(scope, "news")
            assert corral.asgi.topics(scope) == {"news"}
            while (await receive())["type"] != "websocket.disconnect":
                pass

    server = await served(app)
    clients = [await corral.connect(f"ws://127.0.0.1:{server.port}/") for _ in range(2)]
    await eventually(lambda: server.subscriber_count("news") == 2)
    reader, writer = await opened(server.port)
    writer.write(http_request("POST", "/publish", b"hello"))
    assert (await read_response(reader))[2] == b"2"
    for client in clients:
        assert await client.recv() == "hello"
        await client.close()
    writer.close()
    with pytest.raises(RuntimeError, match="WebSocket connections only"):
        corral.asgi.subscribe({"extensions": {"corral.pubsub": {"publish": print}}}, "x")
    with pytest.raises(RuntimeError, match="this server does not offer"):
        corral.asgi.subscribe({"type": "websocket", "extensions": {}}, "x")
