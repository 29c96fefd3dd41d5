"""The HTTP phase over a raw TCP socket: every refusal the server documents, and the requests
it must serve (drafts 7 and 8, keep-alive pipelining, a first frame sent with the upgrade).

Each refusal is checked byte-level from a plain asyncio stream, then the same server must still
serve an ordinary WebSocket connection: nothing a client sends in the HTTP phase may break it
or log an error.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import corral
from corral.protocol.frames import Opcode
from corral.protocol.handshake import accept_key
from helpers import close_raw, masked, read_frame


class Echo(corral.Handler):
    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        return corral.Text(message) if isinstance(message, str) else corral.Binary(message)


def ws_router() -> corral.Router:
    router = corral.Router()
    router.websocket("/ws", Echo)

    async def slow(request: corral.Request) -> corral.Response:
        await asyncio.sleep(0.05)
        return corral.Response.text("slow")

    router.http("/fast", lambda request: corral.Response.text("fast"))
    router.http("/slow", slow)
    return router


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def upgrade(
    path: str = "/ws",
    *,
    method: str = "GET",
    host: str = "127.0.0.1",
    key: str | None = None,
    version: str | None = "13",
    extra: tuple[str, ...] = (),
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key or new_key()}"]
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HTTPAnswer:
    def __init__(self, head: bytes, body: bytes) -> None:
        status_line, *fields = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers = [(name.lower(), value.strip()) for name, _, value in
                        (line.partition(":") for line in fields if line)]
        self.body = body

    def get_all(self, name: str) -> list[str]:
        return [value for field, value in self.headers if field == name.lower()]

    def repeated(self) -> list[str]:
        """Fields sent more than once (Set-Cookie may be: its values cannot be joined)."""
        names = [field for field, _ in self.headers if field != "set-cookie"]
        return sorted({name for name in names if names.count(name) > 1})


async def read_answer(reader: asyncio.StreamReader, *, body: bool = True) -> HTTPAnswer:
    """One answer; ``body=False`` for the answer to a HEAD request (a length, no body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    answer = HTTPAnswer(head[:-4], b"")
    length = answer.get_all("content-length")
    if length and body:
        answer.body = await asyncio.wait_for(reader.readexactly(int(length[0])), 2)
    return answer


async def open_raw(server: corral.Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def exchange(server: corral.Server, data: bytes) -> tuple[HTTPAnswer, bool]:
    """Send ``data``, read one answer; also say whether the server then closed the socket."""
    reader, writer = await open_raw(server)
    try:
        writer.write(data)
        answer = await read_answer(reader)
        rest = await asyncio.wait_for(reader.read(), 2)
        return answer, rest == b""
    finally:
        await close_raw(writer)


async def assert_still_serves(server: corral.Server) -> None:
    async with corral.connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), 2) == "still here"


@pytest.fixture(autouse=True)
def no_errors(caplog: pytest.LogCaptureFixture) -> Any:
    """Bad input is answered, never logged as an error (nor left as a failed task)."""
    caplog.set_level(logging.WARNING)
    yield
    gc.collect()  # a task that failed unobserved reports itself when collected
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    yield
    await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not leftovers


@pytest.fixture
async def server() -> AsyncIterator[corral.Server]:
    async with corral.serve(ws_router(), port=0, close_timeout=1) as srv:
        yield srv


# -- refusals ------------------------------------------------------------------------------------

_MANY_HEADERS = "".join(f"X-Field-{i}: {i}\r\n" for i in range(150))
_BIG_HEADERS = "".join(f"X-Big-{i}: {'v' * 7000}\r\n" for i in range(3))
_V = "Sec-WebSocket-Version"

REFUSALS = [
    # (id, request, status, header that must be present (name, value) or None, body snippet)
    ("not-http", b"garbage garbage\r\n\r\n", 400, None, "malformed"),
    ("tls-hello-on-plain-port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40),
     400, None, "malformed"),
    ("header-without-colon", b"GET /ws HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n", 400, None,
     "malformed"),
    ("request-line-too-long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414,
     None, "too long"),
    ("too-many-headers", f"GET /ws HTTP/1.1\r\nHost: x\r\n{_MANY_HEADERS}\r\n".encode(), 431,
     None, "too many"),
    ("headers-too-large", f"GET /ws HTTP/1.1\r\nHost: x\r\n{_BIG_HEADERS}\r\n".encode(), 431,
     None, "too large"),
    ("header-line-too-long", b"GET /ws HTTP/1.1\r\nX: " + b"v" * 9000 + b"\r\n\r\n", 431,
     None, "too long"),
    ("plain-get-on-websocket-route", b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 426,
     ("upgrade", "websocket"), "Upgrade: websocket"),
    ("unsupported-version", upgrade(version="9"), 426, (_V, "13, 8, 7"), "version"),
    ("missing-version", upgrade(version=None), 426, (_V, "13, 8, 7"), "version"),
    ("hixie-76", b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: WebSocket\r\n"
     b"Connection: Upgrade\r\nSec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n"
     b"Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\n\r\n^n:ds[4U", 400, None, "hixie-76"),
    ("key-not-base64", upgrade(key="not base64!"), 400, None, "Sec-WebSocket-Key"),
    ("key-not-16-bytes", upgrade(key=base64.b64encode(b"x" * 15).decode()), 400, None,
     "16 bytes"),
    ("key-repeated", upgrade(extra=(f"Sec-WebSocket-Key: {new_key()}",)), 400, None,
     "Sec-WebSocket-Key"),
    ("post", upgrade(method="POST"), 405, ("allow", "GET"), "GET"),
    ("http-1.0", upgrade().replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400, None, "HTTP/1.1"),
    ("unknown-path", upgrade("/nowhere"), 404, None, "not found"),
    ("plain-get-unknown-path", b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
     404, None, "not found"),
    ("cross-origin", upgrade(extra=("Origin: http://evil.example",)), 403, None, "origin"),
    ("null-origin", upgrade(extra=("Origin: null",)), 403, None, "origin"),
    ("cross-origin-draft-8", upgrade(version="8",
                                     extra=("Sec-WebSocket-Origin: http://evil.example",)),
     403, None, "origin"),
]


@pytest.mark.parametrize(("request_bytes", "status", "header", "snippet"),
                         [pytest.param(*case[1:], id=case[0]) for case in REFUSALS])
async def test_refusal_is_answered_then_server_still_serves(
    server: corral.Server,
    request_bytes: bytes,
    status: int,
    header: tuple[str, str] | None,
    snippet: str,
) -> None:
    answer, closed = await exchange(server, request_bytes)
    assert answer.status == status
    assert answer.repeated() == []
    if header is not None:
        assert header[1] in answer.get_all(header[0])
    # A short human-readable reason, never a traceback.
    assert snippet.lower() in answer.body.decode().lower()
    assert len(answer.body) < 200
    assert "Traceback" not in answer.body.decode()
    # After a refusal the connection's state is unknown: the server ends it.
    assert closed
    await assert_still_serves(server)


async def test_refusal_of_plain_get_keeps_the_upgrade_hint(server: corral.Server) -> None:
    # RFC 7230 6.7: a 426 names the protocol to upgrade to, with Connection: upgrade; and the
    # connection closes after it: one Connection field with both options.
    answer, _ = await exchange(server, b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.status == 426
    assert answer.get_all("connection") == ["Upgrade, close"]


class Answers(corral.Handler):
    """Refuses or accepts by the request's query, in each way a handler can."""

    def upgrade(self, request: corral.Request) -> Any:
        kind = request.query_param("kind")
        if kind == "json-reject":
            # The case from the issue: its own Content-Type, which used to be sent twice.
            return corral.Reject(401, b'{"error": "login"}', [("Content-Type", "application/json")])
        if kind == "reject-cookies":
            return corral.Reject(403, "no", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
        if kind == "raise":
            raise RuntimeError("upgrade failed")
        if kind == "full":
            return corral.Accept(subprotocol="chat", headers=[("X-Server", "corral")],
                                 compress=True)
        return corral.Accept()


def every_kind_router(static: str) -> corral.Router:
    router = corral.Router()
    router.websocket("/ws", Answers, subprotocols=["chat"])
    router.http("/text", lambda request: corral.Response.text("text"))
    router.http("/json", lambda request: corral.Response.json({"a": 1}))
    router.http("/html", lambda request: corral.Response.html("<p>"))
    router.http("/typed", lambda request: corral.Response(
        200, b"x", [("Content-Type", "application/octet-stream")]))
    router.http("/empty", lambda request: corral.Response(204, content_type=None))
    router.static("/static", static)
    return router


@pytest.mark.parametrize(("request_bytes", "status"), [
    (upgrade("/ws?kind=accept"), 101),
    (upgrade("/ws?kind=full", extra=("Sec-WebSocket-Protocol: chat",
                                     "Sec-WebSocket-Extensions: permessage-deflate")), 101),
    (upgrade("/ws?kind=json-reject"), 401),
    (upgrade("/ws?kind=reject-cookies"), 403),
    (upgrade("/ws?kind=raise"), 500),
    (b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200),
    (b"GET /html HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"HEAD /html HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /typed HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n", 204),
    (b"GET /static/page.txt HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /static/missing HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426),
], ids=lambda value: value if isinstance(value, int) else value.split(b"\r\n")[0].decode())
async def test_no_response_repeats_a_field(
    request_bytes: bytes, status: int, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Every kind of answer corral makes (101s, refusals, HTTP routes, static files, the 500
    of a failing handler): each field at most once, Content-Type as the handler gave it."""
    (tmp_path / "page.txt").write_text("page")
    async with corral.serve(every_kind_router(str(tmp_path)), port=0, close_timeout=1) as srv:
        reader, writer = await open_raw(srv)
        try:
            writer.write(request_bytes)
            answer = await read_answer(reader, body=not request_bytes.startswith(b"HEAD"))
        finally:
            await close_raw(writer)
    assert answer.status == status
    assert answer.repeated() == []
    if status == 401:
        assert answer.get_all("content-type") == ["application/json"]
    if status == 403:
        assert answer.get_all("set-cookie") == ["a=1", "b=2"]
    if status == 500:
        caplog.clear()  # the handler's failure is logged on purpose


async def test_unsupported_version_lists_supported_ones(server: corral.Server) -> None:
    answer, _ = await exchange(server, upgrade(version="14"))
    assert answer.status == 426
    assert answer.get_all("sec-websocket-version") == ["13, 8, 7"]


async def test_slow_client_gets_408_after_handshake_timeout() -> None:
    async with corral.serve(ws_router(), port=0, handshake_timeout=0.3) as server:
        reader, writer = await open_raw(server)
        try:
            start = time.monotonic()
            writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            answer = await read_answer(reader)
            elapsed = time.monotonic() - start
            assert answer.status == 408
            assert 0.25 <= elapsed < 1.5
            assert await asyncio.wait_for(reader.read(), 2) == b""
        finally:
            await close_raw(writer)
        await assert_still_serves(server)


async def test_trickling_client_is_not_saved_by_sending_bytes() -> None:
    # Slow-loris: each byte arrives in time, the request as a whole does not.
    async with corral.serve(ws_router(), port=0, handshake_timeout=0.3) as server:
        reader, writer = await open_raw(server)
        try:
            start = time.monotonic()
            writer.write(b"GET /ws HTTP/1.1\r\n")
            read = asyncio.ensure_future(read_answer(reader))
            for i in range(20):
                if read.done():
                    break
                writer.write(f"X-{i}: {i}\r\n".encode())
                await asyncio.sleep(0.05)
            answer = await read
            assert answer.status == 408
            assert time.monotonic() - start < 1.0
        finally:
            await close_raw(writer)


async def test_idle_keep_alive_connection_times_out() -> None:
    async with corral.serve(ws_router(), port=0, handshake_timeout=0.3) as server:
        reader, writer = await open_raw(server)
        try:
            writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_answer(reader)).body == b"fast"
            # The timer starts again for the next request, which never comes.
            assert (await read_answer(reader)).status == 408
        finally:
            await close_raw(writer)


# -- accepted requests -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["13", "8", "7"])
async def test_supported_versions_upgrade_and_exchange_frames(
    server: corral.Server, version: str
) -> None:
    key = new_key()
    reader, writer = await open_raw(server)
    try:
        writer.write(upgrade(key=key, version=version))
        answer = await read_answer(reader)
        assert answer.status == 101
        assert answer.get_all("sec-websocket-accept") == [accept_key(key)]
        assert answer.get_all("upgrade") == ["websocket"]
        writer.write(masked(Opcode.TEXT, b"hello") + masked(Opcode.BINARY, b"\x00\xff"))
        assert await read_frame(reader) == (Opcode.TEXT, b"hello")
        assert await read_frame(reader) == (Opcode.BINARY, b"\x00\xff")
        writer.write(masked(Opcode.CLOSE, (1000).to_bytes(2, "big")))
        assert await read_frame(reader) == (Opcode.CLOSE, (1000).to_bytes(2, "big"))
        assert await asyncio.wait_for(reader.read(), 2) == b""  # the server closes TCP first
    finally:
        await close_raw(writer)


@pytest.mark.parametrize(
    ("options", "origin_header", "accepted"),
    [
        ({}, None, True),
        ({}, "Origin: http://127.0.0.1:{port}", True),
        ({}, "Origin: http://evil.example", False),
        ({"allowed_origins": ("http://x",)}, "Origin: http://x", True),
        ({"allowed_origins": ("http://x",)}, "Origin: http://X:80", True),
        ({"allowed_origins": ("http://x",)}, "Origin: http://y", False),
        ({"allowed_origins": ("http://x",)}, None, True),
        ({"allowed_origins": ("*",)}, "Origin: http://anything.example", True),
        ({"allowed_origins": ("*",)}, "Origin: null", True),
    ],
)
async def test_origin_policy(
    options: dict[str, Any], origin_header: str | None, accepted: bool
) -> None:
    async with corral.serve(ws_router(), port=0, close_timeout=1, **options) as server:
        extra = () if origin_header is None else (origin_header.format(port=server.port),)
        host = f"127.0.0.1:{server.port}"
        reader, writer = await open_raw(server)
        try:
            writer.write(upgrade(host=host, extra=extra))
            answer = await read_answer(reader)
            if accepted:
                assert answer.status == 101
                writer.write(masked(Opcode.TEXT, b"ok"))
                assert await read_frame(reader) == (Opcode.TEXT, b"ok")
            else:
                assert answer.status == 403
                assert await asyncio.wait_for(reader.read(), 2) == b""
        finally:
            await close_raw(writer)
        await assert_still_serves(server)


async def test_keep_alive_pipelined_requests_answered_in_order(server: corral.Server) -> None:
    reader, writer = await open_raw(server)
    try:
        # The first answer takes longer (async handler) but must still come first.
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        first, second = await read_answer(reader), await read_answer(reader)
        assert (first.status, first.body) == (200, b"slow")
        assert (second.status, second.body) == (200, b"fast")
        assert "close" not in [v.lower() for v in first.get_all("connection")]
        # The connection is still usable afterwards.
        writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        third = await read_answer(reader)
        assert third.body == b"fast"
        assert third.get_all("connection") == ["close"]
        assert await asyncio.wait_for(reader.read(), 2) == b""
    finally:
        await close_raw(writer)


async def test_pipelined_request_then_upgrade(server: corral.Server) -> None:
    reader, writer = await open_raw(server)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + upgrade()
                     + masked(Opcode.TEXT, b"after http"))
        assert (await read_answer(reader)).body == b"slow"
        assert (await read_answer(reader)).status == 101
        assert await read_frame(reader) == (Opcode.TEXT, b"after http")
    finally:
        await close_raw(writer)


async def test_first_frame_in_the_same_write_as_the_upgrade(server: corral.Server) -> None:
    reader, writer = await open_raw(server)
    try:
        writer.write(upgrade() + masked(Opcode.TEXT, b"eager") + masked(Opcode.PING, b"p"))
        assert (await read_answer(reader)).status == 101
        # The core answers the ping while parsing, before the handler echoes: any order.
        frames = {await read_frame(reader), await read_frame(reader)}
        assert frames == {(Opcode.TEXT, b"eager"), (Opcode.PONG, b"p")}
    finally:
        await close_raw(writer)


async def test_upgrade_request_refused_by_router_closes_connection(server: corral.Server) -> None:
    # Bytes after an upgrade request may be frames: a 404 to it cannot keep the connection.
    reader, writer = await open_raw(server)
    try:
        writer.write(upgrade("/nowhere") + masked(Opcode.TEXT, b"lost"))
        answer = await read_answer(reader)
        assert answer.status == 404
        assert answer.get_all("connection") == ["close"]
        assert await asyncio.wait_for(reader.read(), 2) == b""
    finally:
        await close_raw(writer)


async def test_garbage_after_valid_request_does_not_log_errors(server: corral.Server) -> None:
    reader, writer = await open_raw(server)
    try:
        writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02 nonsense\r\n\r\n")
        assert (await read_answer(reader)).body == b"fast"
    finally:
        await close_raw(writer)
    await assert_still_serves(server)


async def test_client_vanishing_mid_request_is_quiet(server: corral.Server) -> None:
    _, writer = await open_raw(server)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
    await asyncio.sleep(0.05)
    writer.transport.abort()
    await asyncio.sleep(0.05)
    await assert_still_serves(server)
