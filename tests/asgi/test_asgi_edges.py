"""Edge cases of the ASGI server mode that a review found broken, one test each (real
sockets on 127.0.0.1, port 0, raw ASGI applications)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import corral
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



# -- HTTP ------------------------------------------------------------------------------------


async def test_an_unread_body_over_body_buffer_does_not_stall_the_connection(
    served: Any,
) -> None:
    """An application that answers without reading a body (a 401, a 413 of its own) while
    more than BODY_BUFFER bytes of it wait: the rest of the body is read and dropped, and
    the next request on the connection served (as uvicorn does), not stalled."""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/ignore":
            await asyncio.sleep(0.3)  # the body arrives meanwhile; it is never read
            await asgi_respond(send, 401, b"no")
            return
        await asgi_respond(send, 200, b"next")

    server = await served(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(http_request("POST", "/ignore", b"x" * 256 * 1024) + http_request("GET", "/next"))
    status, _, body = await read_response(reader)
    assert (status, body) == (401, b"no")
    status, _, body = await read_response(reader, timeout=3)
    assert (status, body) == (200, b"next")
    writer.close()


async def test_expect_100_continue_is_ignored_in_an_http_1_0_request(served: Any) -> None:
    """RFC 9110 10.1.1: "A server that receives a 100-continue expectation in an HTTP/1.0
    request MUST ignore that expectation." An HTTP/1.0 client takes the interim 100 for
    the final response."""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await asgi_body(receive)
        await asgi_respond(send, 200, body)

    server = await served(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST / HTTP/1.0\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    await asyncio.sleep(0.2)  # the application asks for the body meanwhile
    writer.write(b"body")
    raw = await read_to_eof(reader)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:40]
    writer.close()


# -- lifespan ----------------------------------------------------------------------------------


async def test_an_exception_after_lifespan_startup_was_received_means_no_lifespan(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """specs/lifespan.rst: "If an exception is raised when calling the application callable
    with a lifespan.startup message or a scope with type lifespan, the server must continue
    but not send any lifespan events ... If you want to ... prevent the server from
    starting, then send back lifespan.startup.failed instead." (uvicorn's default, auto.)"""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()  # an application that reads first, then checks the type
        if scope["type"] != "http":
            raise ValueError(f"unsupported scope {scope['type']!r}")
        assert message["type"] == "http.request"
        await asgi_respond(send, 200, b"served")

    caplog.set_level(logging.CRITICAL, "corral.asgi")  # the warning is not the point here
    async with corral.serve(app, "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(http_request("GET", "/"))
        assert (await read_response(reader))[2] == b"served"
        writer.close()


async def test_a_body_sent_with_an_upgrade_header_corral_ignores_reaches_the_application(
    served: Any,
) -> None:
    """A POST with ``Upgrade: h2c`` (what ``curl --http2 http://...`` sends) and a body.
    corral answers it as a plain request (it does not speak h2c); llhttp stops at the head
    of an upgrade request, so the body is taken from the bytes after it. RFC 9110 7.8: a
    server that ignores Upgrade goes on with HTTP/1.1, the body framed by Content-Length."""
    bodies: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await asgi_body(receive)
        bodies.append(body)
        await asgi_respond(send, 200, b"got " + body)

    server = await served(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /form HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                 b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
                 b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    status, _, body = await read_response(reader)
    assert bodies == [b"hello"]
    assert (status, body) == (200, b"got hello")
    writer.close()


async def test_receive_waited_on_by_two_tasks_hears_the_disconnect(served: Any) -> None:
    """Starlette's ``request.is_disconnected()`` calls receive() inside an already
    cancelled scope, while another task (sse-starlette's _listen_for_disconnect, a
    long-poll watcher) waits in receive() for http.disconnect: the cancelled probe must not
    take the watcher's place, so the watcher hears the client leave."""
    heard: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        assert (await receive())["more_body"] is False  # the (empty) body

        async def watch() -> None:
            heard.append((await receive())["type"])

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.05)  # the watcher waits in receive()
        probe = asyncio.create_task(receive())  # request.is_disconnected(), in effect
        await asyncio.sleep(0)
        probe.cancel()
        try:
            await asyncio.wait_for(watcher, 3)
        finally:
            watcher.cancel()

    server = await served(app)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(http_request("GET", "/events"))
    await asyncio.sleep(0.2)
    writer.close()  # the client goes away: the watcher must hear it
    await eventually(lambda: heard == ["http.disconnect"], timeout=4)


async def test_a_response_abandoned_to_a_client_that_does_not_read_is_dropped_in_time(
    served: Any, errors_expected: None,
) -> None:
    """An application that gives up mid-response (here its own timeout on a send waiting
    for a stalled client): the connection is closed, and dropped when the handshake timeout
    runs out if the client never reads what was written, not held for ever."""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.wait_for(send({"type": "http.response.body", "body": b"z" * 2**24,
                                     "more_body": True}), 0.3)

    server = await served(app, handshake_timeout=0.5)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.transport.pause_reading()  # a client that stalls
    writer.write(http_request("GET", "/download"))
    await eventually(lambda: not server.registry.tasks, timeout=3)  # the application gave up
    await eventually(lambda: not server.registry.http, timeout=3)
    writer.close()


async def test_a_request_without_host_and_a_bad_content_length_from_the_app(
    served: Any, caplog: pytest.LogCaptureFixture, errors_expected: None,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await asgi_respond(send, 200, b"12", [(b"content-length", b"1_2")])

    server = await served(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")  # RFC 9112 3.2: Host is required
    assert (await read_response(reader))[0] == 400
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(http_request("GET", "/"))
    status, _, body = await read_response(reader)
    assert (status, body) == (500, b"internal server error\n")  # not "content-length: 1_2"
    writer.close()


async def test_expect_100_continue_answered_without_the_body_closes(served: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await asgi_respond(send, 401, b"no")  # never asks for the body

    server = await served(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert (status, headers["connection"], body) == (401, "close", b"no")
    assert await read_to_eof(reader) == b""
    writer.close()
