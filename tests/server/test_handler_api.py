"""The Cowboy-style handler API end to end: a real server on 127.0.0.1 and the corral client
(or a raw socket where the test must see or break the bytes).

The upgrade decision, the commands a callback returns, ordering (async callbacks, posted
information), every kind of close, flow control (Pause/Resume, max_queue), run-time options
and keepalive, then the ``async def handler(ws)`` style on the same core.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import corral
from corral import CloseKind, CloseReason
from corral.protocol.frames import Opcode, serialize_frame
from corral.server.serve import what_to_serve
from helpers import close_payload, close_raw, eventually, masked, read_frame, read_to_eof

# -- helpers ---------------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")



class Recorder(corral.Handler):
    """Records what reaches it; ``opened`` / ``closed`` resolve with the ws / the reason."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.ws: corral.WebSocket | None = None
        self.events: list[Any] = []
        self.opened: asyncio.Future[corral.WebSocket] = loop.create_future()
        self.closed: asyncio.Future[CloseReason] = loop.create_future()

    def on_open(self, ws: corral.WebSocket) -> Any:
        self.ws = ws
        self.opened.set_result(ws)
        return None

    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        self.events.append(message)
        return None

    def on_close(self, ws: corral.WebSocket, reason: CloseReason) -> None:
        self.closed.set_result(reason)


class Echo(Recorder):
    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        self.events.append(message)
        return corral.Text(message) if isinstance(message, str) else corral.Binary(message)


def spawn(cls: type[Recorder]) -> tuple[Callable[[], Recorder], list[Any]]:
    """A handler factory for a route, and the list of the instances it made."""
    made: list[Any] = []

    def factory() -> Recorder:
        made.append(cls())
        return made[-1]

    return factory, made


def serve(app: Any, **options: Any) -> corral.serve:
    options.setdefault("close_timeout", 1)
    return corral.serve(app, port=0, **options)


def url(server: corral.Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def recv(ws: corral.AsyncWebSocket) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), 2)


async def closed(handler: Recorder) -> CloseReason:
    return await asyncio.wait_for(asyncio.shield(handler.closed), 3)


async def open_raw(
    server: corral.Server, path: str = "/", extra: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A hand-driven client after a successful upgrade; also returns the 101 head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer, head


# -- the upgrade decision ------------------------------------------------------------------------


async def test_upgrade_sees_path_query_headers_cookies_peer_and_params() -> None:
    seen: dict[str, Any] = {}

    class Room(Recorder):
        def upgrade(self, request: corral.Request) -> corral.Accept:
            seen.update(
                method=request.method,
                path=request.path,
                query_string=request.query_string,
                query=request.query,
                a=request.query_param("a"),
                missing=request.query_param("zz", "default"),
                header=request.headers.get("X-Custom"),
                cookies=request.cookies,
                peer=request.peer,
                params=request.path_params,
                subprotocols=request.subprotocols,
                origin=request.origin,
            )
            return corral.Accept()

    router = corral.Router().websocket("/room/{name}", Room)
    async with serve(router) as server:
        origin = f"http://127.0.0.1:{server.port}"
        async with corral.connect(
            url(server, "/room/caf%C3%A9?a=1&a=2&b="),
            headers=[("X-Custom", "v1"), ("Cookie", "session=abc; theme=dark")],
            subprotocols=["chat"],
            origin=origin,
        ) as ws:
            assert ws.ws is not None and ws.ws.transport is not None
            local = ws.ws.transport.get_extra_info("sockname")
            assert ws.request is None  # the client has no request of its own
    assert seen == {
        "method": "GET",
        "path": "/room/café",
        "query_string": "a=1&a=2&b=",
        "query": {"a": ["1", "2"], "b": [""]},
        "a": "1",
        "missing": "default",
        "header": "v1",
        "cookies": {"session": "abc", "theme": "dark"},
        "peer": local[:2],
        "params": {"name": "café"},
        "subprotocols": ("chat",),
        "origin": origin,
    }


async def test_server_side_ws_keeps_the_request() -> None:
    factory, made = spawn(Echo)
    router = corral.Router().websocket("/room/{name}", factory)
    async with serve(router) as server, corral.connect(url(server, "/room/blue?x=1")):
        ws = await asyncio.wait_for(made[0].opened, 2)
        assert ws.request is not None
        assert ws.request.path_params == {"name": "blue"}
        assert ws.request.query_param("x") == "1"
        assert ws.remote_address == ws.request.peer


async def test_router_pattern_mismatch_is_404() -> None:
    router = corral.Router().websocket("/room/{name}", Echo)
    async with serve(router) as server:
        with pytest.raises(corral.InvalidStatus) as info:
            await corral.connect(url(server, "/room/a/b"))
        assert info.value.status == 404


async def test_async_upgrade_runs_an_auth_lookup() -> None:
    users = {"good-token": "alice"}

    class Auth(Recorder):
        async def upgrade(self, request: corral.Request) -> corral.Accept | corral.Reject:
            await asyncio.sleep(0.02)  # the database round trip
            user = users.get(request.query_param("token", "") or "")
            if user is None:
                return corral.Reject(401, "bad token",
                                     [("WWW-Authenticate", 'Bearer realm="corral"')])
            self.user = user
            return corral.Accept()

        def on_open(self, ws: corral.WebSocket) -> Any:
            super().on_open(ws)
            return corral.Text(f"hello {self.user}")

        def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            return corral.Text(f"{self.user}: {message!s}")

    async with serve(Auth) as server:
        async with corral.connect(url(server, "/?token=good-token")) as ws:
            assert await recv(ws) == "hello alice"
            await ws.send("hi")
            assert await recv(ws) == "alice: hi"

        with pytest.raises(corral.InvalidStatus) as info:
            await corral.connect(url(server, "/?token=stolen"))
        assert info.value.status == 401
        assert info.value.body == b"bad token"
        assert ("WWW-Authenticate", 'Bearer realm="corral"') in info.value.headers


async def test_reject_is_answered_exactly_as_given() -> None:
    class Busy(Recorder):
        def upgrade(self, request: corral.Request) -> corral.Reject:
            return corral.Reject(429, "slow down", [("Retry-After", "5")])

    async with serve(Busy) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            answer = await read_to_eof(reader)
        finally:
            await close_raw(writer)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 ")
    assert b"\r\nRetry-After: 5" in head
    assert b"\r\nConnection: close" in head
    assert body == b"slow down"


async def test_accept_with_subprotocol_headers_and_options() -> None:
    class Chat(Echo):
        def upgrade(self, request: corral.Request) -> corral.Accept:
            chosen = next(p for p in ("chat.v2", "chat.v1") if p in request.subprotocols)
            return corral.Accept(subprotocol=chosen, headers=[("X-Served-By", "corral")],
                                 options={"max_message_size": 16})

    factory, made = spawn(Chat)
    async with serve(factory) as server:
        # The header, seen on the wire.
        _, writer, head = await open_raw(
            server, extra="Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n")
        await close_raw(writer)
        assert b"\r\nSec-WebSocket-Protocol: chat.v2\r\n" in head
        assert b"\r\nX-Served-By: corral\r\n" in head

        # The subprotocol and the per-connection option, through the client.
        async with corral.connect(url(server), subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
            handler = made[-1]
            server_ws = await asyncio.wait_for(handler.opened, 2)
            assert server_ws.subprotocol == "chat.v2"
            assert server_ws.options.max_message_size == 16
            await ws.send("x" * 16)
            assert await recv(ws) == "x" * 16
            await ws.send("x" * 17)
            with pytest.raises(corral.ConnectionClosedError) as info:
                await recv(ws)
            assert info.value.code == 1009
        reason = await closed(handler)
        assert (reason.kind, reason.code) == (CloseKind.PROTOCOL_ERROR, 1009)


# -- commands -----------------------------------------------------------------------------------


class Commands(Recorder):
    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        self.events.append(message)
        if message == "text":
            return corral.Text("t")
        if message == "binary":
            return corral.Binary(b"\x00\x01")
        if message == "list":
            return [corral.Text("1"), corral.Binary(b"2"), corral.Text("3")]
        if message == "generator":
            return (corral.Text(f"g{i}") for i in range(2))
        if message == "fragments":
            return [corral.Fragment("ab"), corral.Fragment("cd"), corral.Fragment("ef", True)]
        if message == "ping":
            return corral.Ping(b"are you there")
        if message == "pong":
            return [corral.Pong(b"unsolicited"), corral.Text("ponged")]
        if message == "methods":
            assert ws.open
            assert ws.send("m1")
            assert ws.send(b"m2")
            assert ws.send_fragment(b"x")
            assert ws.send_fragment(b"y", last=True)
            assert ws.ping(b"via method")
            return None
        if message == "close":
            return corral.Close(4001, "done")
        return None

    def on_ping(self, ws: corral.WebSocket, payload: bytes) -> Any:
        self.events.append(("ping", payload))
        return None

    def on_pong(self, ws: corral.WebSocket, payload: bytes) -> Any:
        self.events.append(("pong", payload))
        return corral.Text(f"pong {payload.decode()}")


async def test_callbacks_return_commands_and_call_ws_methods() -> None:
    factory, made = spawn(Commands)
    async with serve(factory) as server, corral.connect(url(server)) as ws:
        await ws.send("text")
        assert await recv(ws) == "t"
        await ws.send("binary")
        assert await recv(ws) == b"\x00\x01"
        await ws.send("list")
        assert [await recv(ws) for _ in range(3)] == ["1", b"2", "3"]
        await ws.send("generator")
        assert [await recv(ws) for _ in range(2)] == ["g0", "g1"]
        await ws.send("fragments")
        assert await recv(ws) == "abcdef"
        await ws.send("ping")  # the client's core answers; the server's on_pong sees it
        assert await recv(ws) == "pong are you there"
        await ws.send("pong")
        assert await recv(ws) == "ponged"
        await ws.send("methods")
        assert [await recv(ws) for _ in range(4)] == ["m1", b"m2", b"xy", "pong via method"]
        pong = await ws.ping(b"from client")
        await asyncio.wait_for(pong, 2)
        await eventually(lambda: ("ping", b"from client") in made[0].events)

        await ws.send("close")
        with pytest.raises(corral.ConnectionClosedError) as info:
            await recv(ws)
        assert (info.value.code, info.value.reason) == (4001, "done")
    reason = await closed(made[0])
    assert (reason.kind, reason.code) == (CloseKind.NORMAL, 4001)


async def test_nothing_is_sent_after_close() -> None:
    results: list[Any] = []

    class CloseThenTalk(Recorder):
        def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            return [corral.Close(1000, "bye"), corral.Text("after close"), corral.Ping(b"p")]

        def on_close(self, ws: corral.WebSocket, reason: CloseReason) -> None:
            results.extend([ws.open, ws.send("too late"), ws.ping(), ws.send_fragment("x")])
            super().on_close(ws, reason)

    factory, made = spawn(CloseThenTalk)
    async with serve(factory) as server:
        reader, writer, _ = await open_raw(server)
        try:
            writer.write(masked(Opcode.TEXT, b"go"))
            assert await read_frame(reader) == (Opcode.CLOSE, close_payload(1000, "bye"))
            await asyncio.sleep(0.05)  # anything queued after the close would be here now
            writer.write(masked(Opcode.CLOSE, close_payload(1000)))
            assert await read_to_eof(reader) == b""
        finally:
            await close_raw(writer)
        reason = await closed(made[0])
    assert (reason.kind, reason.code) == (CloseKind.NORMAL, 1000)
    assert results == [False, False, False, False]


# -- ordering -----------------------------------------------------------------------------------


async def test_async_callbacks_keep_message_order_and_never_overlap() -> None:
    class Slow(Recorder):
        running = 0
        most = 0

        async def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            self.running += 1
            self.most = max(self.most, self.running)
            # Earlier messages take longer: only serialization keeps them in order.
            await asyncio.sleep((9 - int(message)) * 0.005)
            self.events.append(message)
            self.running -= 1
            return corral.Text(message)

    factory, made = spawn(Slow)
    async with serve(factory) as server, corral.connect(url(server)) as ws:
        for i in range(10):
            await ws.send(str(i))
        assert [await recv(ws) for _ in range(10)] == [str(i) for i in range(10)]
    assert made[0].events == [str(i) for i in range(10)]
    assert made[0].most == 1


class Informed(Recorder):
    async def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        self.events.append(message)
        await asyncio.sleep(0.05)
        return corral.Text(f"message {message!s}")

    def on_info(self, ws: corral.WebSocket, info: Any) -> Any:
        self.events.append(("info", info))
        return corral.Text(f"info {info}")


async def test_post_from_another_task_reaches_on_info_in_order() -> None:
    factory, made = spawn(Informed)
    async with serve(factory) as server, corral.connect(url(server)) as ws:
        handler = made[0]
        server_ws = await asyncio.wait_for(handler.opened, 2)

        async def poster() -> None:
            for i in range(3):
                server_ws.post(i)

        await asyncio.create_task(poster())
        assert [await recv(ws) for _ in range(3)] == ["info 0", "info 1", "info 2"]

        # Posted while an async callback runs: delivered after it, in order.
        await ws.send("m")
        await eventually(lambda: "m" in handler.events)
        server_ws.post("late")
        assert [await recv(ws) for _ in range(2)] == ["message m", "info late"]


async def test_post_threadsafe_from_a_thread() -> None:
    factory, made = spawn(Informed)
    async with serve(factory) as server, corral.connect(url(server)) as ws:
        server_ws = await asyncio.wait_for(made[0].opened, 2)
        thread = threading.Thread(target=lambda: [server_ws.post_threadsafe(i) for i in range(5)])
        thread.start()
        await asyncio.to_thread(thread.join)
        assert [await recv(ws) for _ in range(5)] == [f"info {i}" for i in range(5)]


async def test_post_after_close_is_dropped() -> None:
    factory, made = spawn(Informed)
    async with serve(factory) as server:
        async with corral.connect(url(server)):
            server_ws = await asyncio.wait_for(made[0].opened, 2)
        await closed(made[0])
        server_ws.post("nobody home")
        await asyncio.sleep(0.02)
    assert ("info", "nobody home") not in made[0].events


# -- how connections end ------------------------------------------------------------------------


async def test_close_kind_normal_when_the_handler_closes() -> None:
    class Closer(Recorder):
        def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            return corral.Close()

    factory, made = spawn(Closer)
    async with serve(factory) as server, corral.connect(url(server)) as ws:
        await ws.send("bye")
        with pytest.raises(corral.ConnectionClosedOK):
            await recv(ws)
    assert await closed(made[0]) == CloseReason(CloseKind.NORMAL, 1000, "")


async def test_close_kind_remote_when_the_client_closes() -> None:
    factory, made = spawn(Echo)
    async with serve(factory) as server:
        ws = await corral.connect(url(server))
        await ws.close(4000, "see you")
        assert ws.close_code == 4000
    assert await closed(made[0]) == CloseReason(CloseKind.REMOTE, 4000, "see you")


async def test_close_kind_timeout_for_idle_timeout() -> None:
    factory, made = spawn(Echo)
    async with serve(factory, idle_timeout=0.2) as server, corral.connect(url(server)) as ws:
        start = time.monotonic()
        with pytest.raises(corral.ConnectionClosedOK) as info:
            await recv(ws)
        assert info.value.code == 1001
        assert 0.15 < time.monotonic() - start < 1.5
    reason = await closed(made[0])
    assert (reason.kind, reason.code) == (CloseKind.TIMEOUT, 1001)


async def test_idle_timer_is_reset_by_traffic() -> None:
    factory, _ = spawn(Echo)
    async with serve(factory, idle_timeout=0.2) as server, corral.connect(url(server)) as ws:
        for _ in range(6):  # 0.3 s of traffic, longer than the idle timeout
            await ws.send("keep me")
            assert await recv(ws) == "keep me"
            await asyncio.sleep(0.05)
        assert ws.open


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param(serialize_frame(Opcode.TEXT, b"plain"), 1002, id="unmasked"),
        pytest.param(masked(3, b""), 1002, id="reserved-opcode"),
        pytest.param(masked(Opcode.TEXT, b"\xff\xfe"), 1007, id="invalid-utf8"),
        pytest.param(masked(Opcode.PING, b"", fin=False), 1002, id="fragmented-ping"),
        pytest.param(masked(Opcode.CONTINUATION, b"x"), 1002, id="lone-continuation"),
        pytest.param(masked(Opcode.CLOSE, b"\x03"), 1002, id="one-byte-close"),
        pytest.param(masked(Opcode.BINARY, b"x" * 65), 1009, id="too-big"),
    ],
)
async def test_close_kind_protocol_error_for_a_bad_frame(frames: bytes, code: int) -> None:
    factory, made = spawn(Echo)
    async with serve(factory, max_message_size=64) as server:
        reader, writer, _ = await open_raw(server)
        try:
            writer.write(frames)
            opcode, payload = await read_frame(reader)
            assert (opcode, payload) == (Opcode.CLOSE, close_payload(code))
            assert await read_to_eof(reader) == b""  # failed: TCP closed at once
        finally:
            await close_raw(writer)
        reason = await closed(made[0])
    assert (reason.kind, reason.code) == (CloseKind.PROTOCOL_ERROR, code)
    assert isinstance(reason.error, corral.ProtocolError)
    assert made[0].events == []


class Crashes(Recorder):
    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        if message == "raise":
            raise RuntimeError("secret internal detail")
        if message == "raise-async":
            return self._later_raise()
        if message == "bad-command":
            return object()
        if message == "bad-command-async":
            return self._later_bad_option()
        return None

    async def _later_raise(self) -> Any:
        await asyncio.sleep(0)
        raise RuntimeError("secret internal detail")

    async def _later_bad_option(self) -> Any:
        await asyncio.sleep(0)
        return corral.SetOptions({"max_queue": 1})  # not a run-time option


@pytest.mark.parametrize("trigger", ["raise", "raise-async", "bad-command", "bad-command-async"])
async def test_close_kind_crash_sends_1011_without_details(
    crash_expected: None, trigger: str
) -> None:
    factory, made = spawn(Crashes)
    async with serve(factory) as server:
        reader, writer, _ = await open_raw(server)
        try:
            writer.write(masked(Opcode.TEXT, trigger.encode()))
            # 1011 with no exception text on the wire.
            assert await read_frame(reader) == (Opcode.CLOSE, close_payload(1011))
            writer.write(masked(Opcode.CLOSE, close_payload(1011)))
            assert await read_to_eof(reader) == b""
        finally:
            await close_raw(writer)
        reason = await closed(made[0])
    assert (reason.kind, reason.code, reason.reason) == (CloseKind.CRASH, 1011, "")
    assert reason.error is not None


async def test_a_crashed_handler_is_not_called_again(
    crash_expected: None, caplog: pytest.LogCaptureFixture
) -> None:
    class Fragile(Recorder):
        def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            self.events.append(message)
            raise RuntimeError("boom")

        def on_info(self, ws: corral.WebSocket, info: Any) -> Any:
            self.events.append(("info", info))

    factory, made = spawn(Fragile)
    async with serve(factory) as server:
        reader, writer, _ = await open_raw(server)
        try:
            # Three messages in one read: only the first reaches the handler.
            writer.write(b"".join(masked(Opcode.TEXT, b"%d" % i) for i in range(3)))
            assert await read_frame(reader) == (Opcode.CLOSE, close_payload(1011))
            made[0].ws.post("after the crash")
            await asyncio.sleep(0.02)
            writer.write(masked(Opcode.CLOSE, close_payload(1011)))
            assert await read_to_eof(reader) == b""
        finally:
            await close_raw(writer)
        reason = await closed(made[0])
    assert reason.kind is CloseKind.CRASH
    assert made[0].events == ["0"]
    assert len([r for r in caplog.records if r.getMessage().endswith("crashed")]) == 1


async def test_close_kind_lost_when_the_client_drops_tcp() -> None:
    factory, made = spawn(Echo)
    async with serve(factory) as server:
        _, writer, _ = await open_raw(server)
        writer.transport.abort()
        reason = await closed(made[0])
    assert reason == CloseReason(CloseKind.LOST, 1006, "")


async def test_close_kind_shutdown_sends_1001_to_every_client() -> None:
    factory, made = spawn(Echo)
    async with serve(factory) as server:
        clients = [await corral.connect(url(server)) for _ in range(3)]
        await eventually(lambda: len(made) == 3 and all(h.ws is not None for h in made))
        await asyncio.wait_for(server.close(), 2)
        for ws in clients:
            with pytest.raises(corral.ConnectionClosedOK) as info:
                await recv(ws)
            assert info.value.code == 1001
        reasons = [await closed(h) for h in made]
    assert {(r.kind, r.code) for r in reasons} == {(CloseKind.SHUTDOWN, 1001)}
    assert not server.connections


# -- flow control and options --------------------------------------------------------------------


async def test_receive_fragments_delivers_pieces() -> None:
    class Pieces(Recorder):
        def upgrade(self, request: corral.Request) -> corral.Accept:
            return corral.Accept(options={"receive_fragments": True})

        def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            raise AssertionError("whole messages are not delivered with receive_fragments")

        def on_fragment(self, ws: corral.WebSocket, data: str | bytes, last: bool) -> Any:
            self.events.append((data, last))
            return corral.Text("done") if last else None

    factory, made = spawn(Pieces)
    async with serve(factory) as server, corral.connect(url(server)) as ws:
        await ws.send_fragments(["ab", "cd", "ef"])
        assert await recv(ws) == "done"
        await ws.send_fragments([b"\x01", b"\x02"])
        assert await recv(ws) == "done"
        await ws.send("whole")
        assert await recv(ws) == "done"
    assert made[0].events == [("ab", False), ("cd", False), ("ef", True),
                              (b"\x01", False), (b"\x02", True), ("whole", True)]


async def test_pause_stops_reading_until_resume() -> None:
    class Paused(Echo):
        def on_open(self, ws: corral.WebSocket) -> Any:
            super().on_open(ws)
            return corral.Pause()

        def on_info(self, ws: corral.WebSocket, info: Any) -> Any:
            self.events.append(("info", info))
            return corral.Resume()

    factory, made = spawn(Paused)
    async with serve(factory) as server, corral.connect(url(server)) as ws:
        server_ws = await asyncio.wait_for(made[0].opened, 2)
        for i in range(3):
            await ws.send(str(i))  # the client's sends keep buffering
        await asyncio.sleep(0.2)
        assert made[0].events == []
        assert server_ws.transport is not None and not server_ws.transport.is_reading()
        server_ws.post("resume")  # information still arrives while paused
        assert [await recv(ws) for _ in range(3)] == ["0", "1", "2"]
        assert made[0].events == [("info", "resume"), "0", "1", "2"]
        assert server_ws.transport.is_reading()


async def test_pause_from_a_message_holds_later_messages() -> None:
    class Throttle(Echo):
        def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            self.events.append(message)
            if message == "pause":
                asyncio.get_running_loop().call_later(0.2, ws.post, "resume")
                return [corral.Text("paused"), corral.Pause()]
            return corral.Text(message)

        def on_info(self, ws: corral.WebSocket, info: Any) -> Any:
            return corral.Resume()

    factory, made = spawn(Throttle)
    async with serve(factory) as server, corral.connect(url(server)) as ws:
        await ws.send("pause")
        await ws.send("a")  # may arrive in the same read as "pause", or later: both held
        await ws.send("b")
        assert await recv(ws) == "paused"
        await asyncio.sleep(0.1)
        assert made[0].events == ["pause"]
        assert [await recv(ws) for _ in range(2)] == ["a", "b"]


async def test_resume_from_an_async_callback() -> None:
    class Worker(Echo):
        async def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            ws.pause_reading()
            await asyncio.sleep(0.05)
            self.events.append(message)
            return [corral.Text(message), corral.Resume()]

    factory, _ = spawn(Worker)
    async with serve(factory) as server, corral.connect(url(server)) as ws:
        for i in range(4):
            await ws.send(str(i))
        assert [await recv(ws) for _ in range(4)] == ["0", "1", "2", "3"]


async def test_set_options_at_run_time_takes_effect() -> None:
    class Limits(Echo):
        def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            if message == "tighten":
                ws.set_options(max_message_size=8)
                return corral.Text("tightened")
            if message == "tighten-command":
                return [corral.SetOptions({"max_message_size": 4}), corral.Text("tightened")]
            return super().on_message(ws, message)

    factory, made = spawn(Limits)
    async with serve(factory) as server:
        for command, limit in (("tighten", 8), ("tighten-command", 4)):
            async with corral.connect(url(server)) as ws:
                await ws.send("x" * 20)
                assert await recv(ws) == "x" * 20
                await ws.send(command)
                assert await recv(ws) == "tightened"
                await ws.send("y" * limit)
                assert await recv(ws) == "y" * limit
                await ws.send("y" * (limit + 1))
                with pytest.raises(corral.ConnectionClosedError) as info:
                    await recv(ws)
                assert info.value.code == 1009
            reason = await closed(made[-1])
            assert (reason.kind, reason.code) == (CloseKind.PROTOCOL_ERROR, 1009)


async def test_set_options_idle_timeout_at_run_time() -> None:
    class Impatient(Echo):
        def on_open(self, ws: corral.WebSocket) -> Any:
            super().on_open(ws)
            return corral.SetOptions({"idle_timeout": 0.2})

    factory, made = spawn(Impatient)
    async with serve(factory) as server, corral.connect(url(server)) as ws:
        with pytest.raises(corral.ConnectionClosedOK):
            await recv(ws)
    assert (await closed(made[0])).kind is CloseKind.TIMEOUT


# -- keepalive -------------------------------------------------------------------------------------


class PingCounter(Recorder):
    def on_ping(self, ws: corral.WebSocket, payload: bytes) -> Any:
        self.events.append(("ping", payload))
        return None


async def test_keepalive_pings_reach_the_client_and_a_live_peer_stays() -> None:
    client = PingCounter()
    factory, made = spawn(Echo)
    async with serve(factory, ping_interval=0.05, ping_timeout=0.1) as server:
        ws = await corral.connect(url(server), handler=client)
        try:
            await eventually(lambda: len(client.events) >= 3)
            # Each keepalive ping has its own 8-byte payload (its send time).
            assert {kind for kind, _ in client.events} == {"ping"}
            assert all(len(payload) == 8 for _, payload in client.events)
            await asyncio.sleep(0.3)  # several ping timeouts: the client's pongs keep it
            assert ws.open
            # The round trip of the last keepalive ping answered.
            latency = made[0].ws.latency
            assert latency is not None and 0 < latency < 0.5
            assert ws.latency is None  # the client sends no keepalive pings of its own
        finally:
            ws.close()
            await asyncio.wait_for(ws.wait_closed(), 2)
    assert await closed(made[0]) == CloseReason(CloseKind.REMOTE, 1000, "")


async def test_latency_comes_only_from_the_keepalive_pings_own_pong() -> None:
    """A pong with another payload (an answer to an application's ping, or unsolicited)
    keeps the peer alive but is no measure of the keepalive round trip."""
    factory, made = spawn(Echo)
    async with serve(factory, ping_interval=0.05, ping_timeout=1) as server:
        reader, writer, _ = await open_raw(server)
        try:
            opcode, payload = await read_frame(reader)
            assert opcode == Opcode.PING and len(payload) == 8
            writer.write(masked(Opcode.PONG, b"other"))
            await asyncio.sleep(0.1)
            assert made[0].ws.latency is None
            while True:  # the next keepalive ping, answered properly
                opcode, payload = await read_frame(reader)
                if opcode == Opcode.PING:
                    break
            writer.write(masked(Opcode.PONG, payload))
            await eventually(lambda: made[0].ws.latency is not None)
        finally:
            await close_raw(writer)


async def test_peer_that_stops_answering_is_dropped_after_ping_timeout() -> None:
    factory, made = spawn(Echo)
    async with serve(factory, ping_interval=0.1, ping_timeout=0.2) as server:
        reader, writer, _ = await open_raw(server)
        try:
            start = time.monotonic()
            opcode, payload = await read_frame(reader)
            assert (opcode, len(payload)) == (Opcode.PING, 8)
            # Never answer: the server gives up about ping_timeout after its ping.
            reason = await closed(made[0])
            assert 0.25 < time.monotonic() - start < 1.5
            assert await read_to_eof(reader) == b""
        finally:
            await close_raw(writer)
    assert (reason.kind, reason.code) == (CloseKind.TIMEOUT, 1006)
    assert isinstance(reason.error, TimeoutError)


# -- the client runs handlers too --------------------------------------------------------------


async def test_client_with_a_callback_handler() -> None:
    class Greeter(Recorder):
        def on_open(self, ws: corral.WebSocket) -> Any:
            super().on_open(ws)
            return corral.Text("hello from the client")

        def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            self.events.append(message)
            return corral.Close(1000, "thanks")

    factory, made = spawn(Echo)
    async with serve(factory) as server:
        client = Greeter()
        ws = await corral.connect(url(server), handler=client)
        assert isinstance(ws, corral.WebSocket)
        reason = await closed(client)
        assert client.events == ["hello from the client"]
        assert (reason.kind, reason.code) == (CloseKind.NORMAL, 1000)
        assert (await closed(made[0])) == CloseReason(CloseKind.REMOTE, 1000, "thanks")


# -- the async style -----------------------------------------------------------------------------


async def test_async_function_handler_echo() -> None:
    finished = asyncio.Event()

    async def echo(ws: corral.AsyncWebSocket) -> None:
        async for message in ws:
            await ws.send(message)
        finished.set()

    async with serve(echo) as server:
        async with corral.connect(url(server, "/any/path")) as ws:
            for message in ("a", b"b", "ü" * 1000, b"\x00" * 70000):
                await ws.send(message)
                assert await recv(ws) == message
        await asyncio.wait_for(finished.wait(), 2)


async def test_async_style_answers_a_burst_in_few_writes() -> None:
    """Sixteen messages in one read: the replies of an ``async for`` echo leave together (as
    a callback handler's do), not in sixteen writes, and in order."""
    writes: list[int] = []

    async def echo(ws: corral.AsyncWebSocket) -> None:
        assert ws.ws is not None
        transport: Any = ws.ws.transport
        real = transport.write

        def counting(data: bytes) -> None:
            writes.append(len(data))
            real(data)

        transport.write = counting
        async for message in ws:
            await ws.send(message)

    async with serve(echo) as server:
        reader, writer, _ = await open_raw(server)
        try:
            await asyncio.sleep(0.05)  # the handler has started
            writer.write(b"".join(masked(Opcode.TEXT, b"m%02d" % i) for i in range(16)))
            for i in range(16):
                assert await read_frame(reader) == (Opcode.TEXT, b"m%02d" % i)
            assert 1 <= len(writes) <= 2, writes  # the first reply may go alone
        finally:
            await close_raw(writer)


async def test_send_soon_writes_at_once_past_the_write_limit() -> None:
    """Replies left for the next loop iteration are bounded: past write_limit bytes they are
    written at once, so a sender that never yields cannot grow memory."""
    limit = 4096
    handler_done = asyncio.Event()
    sizes: list[int] = []

    class Sender(Recorder):
        def on_open(self, ws: corral.WebSocket) -> Any:
            super().on_open(ws)
            transport: Any = ws.transport
            real = transport.write

            def counting(data: bytes) -> None:
                sizes.append(len(data))
                real(data)

            transport.write = counting
            ws.create_task(self.send_all(ws))
            return None

        async def send_all(self, ws: corral.WebSocket) -> None:
            for _ in range(100):  # 10,000 bytes, no yield to the loop
                assert ws.send_soon(b"x" * 99)
            assert sizes and max(sizes) <= limit + 200
            handler_done.set()

    factory, _ = spawn(Sender)
    async with serve(factory, write_limit=limit) as server:
        reader, writer, _ = await open_raw(server)
        try:
            await asyncio.wait_for(handler_done.wait(), 2)
            for _ in range(100):
                assert await read_frame(reader) == (Opcode.BINARY, b"x" * 99)
        finally:
            await close_raw(writer)


async def test_async_function_return_closes_with_1000() -> None:
    async def hello(ws: corral.AsyncWebSocket) -> None:
        assert ws.request is not None
        await ws.send(f"hello {ws.request.path}")

    async with serve(hello) as server, corral.connect(url(server, "/you")) as ws:
        assert await recv(ws) == "hello /you"
        with pytest.raises(corral.ConnectionClosedOK) as info:
            await recv(ws)
        assert info.value.code == 1000


async def test_async_function_crash_closes_with_1011(crash_expected: None) -> None:
    async def broken(ws: corral.AsyncWebSocket) -> None:
        await ws.recv()
        raise RuntimeError("secret internal detail")

    async with serve(broken) as server, corral.connect(url(server)) as ws:
        await ws.send("go")
        with pytest.raises(corral.ConnectionClosedError) as info:
            await recv(ws)
        assert (info.value.code, info.value.reason) == (1011, "")


async def test_async_style_backpressure_pauses_reading() -> None:
    release = asyncio.Event()
    received: list[str | bytes] = []
    server_side: list[corral.AsyncWebSocket] = []

    async def slow_consumer(ws: corral.AsyncWebSocket) -> None:
        server_side.append(ws)
        await release.wait()
        async for message in ws:
            received.append(message)

    async with serve(slow_consumer, max_queue=2) as server, corral.connect(url(server)) as ws:
        for i in range(8):
            await ws.send(str(i))
            await asyncio.sleep(0.01)  # separate reads, so the pause can take effect
        await asyncio.sleep(0.05)
        inner = server_side[0].ws
        assert inner is not None and inner.transport is not None
        assert not inner.transport.is_reading()
        assert received == []
        release.set()
        await eventually(lambda: len(received) == 8)
        assert received == [str(i) for i in range(8)]
        assert inner.transport.is_reading()


# -- what a callback returns: messages as they are, and mistakes named ---------------------


class ReturnsMessages(Recorder):
    """Returns the message itself, in the forms a new user tries first."""

    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        self.events.append(message)
        if message == "str":
            return "echo: str"
        if message == "list":
            return ["one", b"two", corral.Text("three")]
        if message == "bytearray":
            return bytearray(b"bytes-like")
        if message == "async":
            return self._later()
        return message  # bytes as they came

    async def _later(self) -> Any:
        await asyncio.sleep(0)
        return "later"


async def test_a_returned_str_or_bytes_is_sent() -> None:
    """A callback that returns the message it wants to send sends it: str as text, bytes
    (and bytes-like) as binary, in a list too, from an async callback too."""
    factory, _ = spawn(ReturnsMessages)
    async with serve(factory) as server:
        reader, writer, _ = await open_raw(server)
        try:
            writer.write(masked(Opcode.TEXT, b"str"))
            assert await read_frame(reader) == (Opcode.TEXT, b"echo: str")
            writer.write(masked(Opcode.BINARY, b"\x00raw"))
            assert await read_frame(reader) == (Opcode.BINARY, b"\x00raw")
            writer.write(masked(Opcode.TEXT, b"list"))
            assert [await read_frame(reader) for _ in range(3)] == [
                (Opcode.TEXT, b"one"), (Opcode.BINARY, b"two"), (Opcode.TEXT, b"three")]
            writer.write(masked(Opcode.TEXT, b"bytearray"))
            assert await read_frame(reader) == (Opcode.BINARY, b"bytes-like")
            writer.write(masked(Opcode.TEXT, b"async"))
            assert await read_frame(reader) == (Opcode.TEXT, b"later")
        finally:
            await close_raw(writer)


class ReturnsMistakes(Recorder):
    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        if message == "async":
            return self._later()
        return {"dict": {"type": "chat"}, "int": 42, "list": ["fine", 3.5]}[str(message)]

    async def _later(self) -> Any:
        return object()


class OpensWithAMistake(Recorder):
    def on_open(self, ws: corral.WebSocket) -> Any:
        super().on_open(ws)
        return 7


@pytest.mark.parametrize(("trigger", "named"), [
    ("open", "OpensWithAMistake.on_open returned an int (7)"),
    ("dict", "ReturnsMistakes.on_message returned a dict ({'type': 'chat'}) (to send JSON, "
             "return json.dumps(...))"),
    ("int", "ReturnsMistakes.on_message returned an int (42)"),
    ("list", "ReturnsMistakes.on_message returned a list holding a float (3.5)"),
    ("async", "ReturnsMistakes.on_message returned an object (<object object at"),
])
async def test_a_returned_value_that_is_no_command_names_the_callback_and_its_type(
    crash_expected: None, trigger: str, named: str
) -> None:
    """Not "not a corral command: 'e'": the error says which callback returned what, and
    what a callback may return. The connection closes with 1011, as for any crash."""
    factory, made = spawn(OpensWithAMistake if trigger == "open" else ReturnsMistakes)
    async with serve(factory) as server:
        reader, writer, _ = await open_raw(server)
        try:
            if trigger != "open":
                writer.write(masked(Opcode.TEXT, trigger.encode()))
            if trigger == "list":
                assert await read_frame(reader) == (Opcode.TEXT, b"fine")
            assert await read_frame(reader) == (Opcode.CLOSE, close_payload(1011))
            writer.write(masked(Opcode.CLOSE, close_payload(1011)))
        finally:
            await close_raw(writer)
        reason = await closed(made[0])
    assert reason.kind is CloseKind.CRASH
    assert isinstance(reason.error, TypeError)
    assert str(reason.error).startswith(named), str(reason.error)
    assert "a message to send (str for text, bytes for binary)" in str(reason.error)


def test_close_kind_prints_as_its_value() -> None:
    assert str(CloseKind.REMOTE) == "remote"
    assert f"{CloseKind.PROTOCOL_ERROR}" == "protocol_error"
    assert CloseKind("lost") is CloseKind.LOST


# -- what is registered is checked when it is registered --------------------------------------


def _plain(ws: Any) -> None:
    """A first try: a plain function of the connection."""


async def _asgi(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI application."""


class _AsgiApp:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """An ASGI application object, as Starlette and FastAPI make."""


async def _two(ws: Any, extra: Any) -> None:
    """An async def with one argument too many."""


async def _agen(ws: Any) -> Any:
    yield ws


@pytest.mark.parametrize(("target", "says"), [
    (_plain, "_plain needs 1 argument(s), but corral calls what it is given with none"),
    (_two, "_two takes 2 arguments: an async def handler takes one, the connection"),
    (_agen, "_agen is a generator function"),
    (42, "not a WebSocket handler: 42"),
])
def test_a_handler_that_cannot_work_is_refused_when_registered(target: Any, says: str) -> None:
    """Not a 500 on every connection later: Router.websocket, serve() and run() refuse it at
    once, saying what to write instead."""
    with pytest.raises(TypeError, match=re.escape(says)):
        corral.Router().websocket("/", target)
    with pytest.raises(TypeError, match=re.escape(says)):
        corral.serve(target)
    with pytest.raises(TypeError, match=re.escape(says)):
        corral.run(target, use_uvloop=False, malloc_tuning=False)


@pytest.mark.parametrize("app", [_asgi, _AsgiApp()])
def test_an_asgi_application_is_served_whole_not_as_a_route(app: Any) -> None:
    with pytest.raises(TypeError, match=re.escape("looks like an ASGI application")):
        corral.Router().websocket("/", app)
    router, asgi = what_to_serve(app)
    assert asgi is not None and asgi.app is app and not router.routes
    with pytest.raises(ValueError, match="root_path applies to ASGI applications"):
        what_to_serve(Echo, root_path="/api")
    with pytest.raises(ValueError, match="interface must be one of"):
        what_to_serve(app, interface="wsgi")
    with pytest.raises(TypeError, match=re.escape("looks like an ASGI application")):
        what_to_serve(app, interface="corral")


def test_what_can_work_is_still_accepted() -> None:
    async def handler(ws: Any) -> None:
        """The async for style."""

    router = corral.Router()
    router.websocket("/a", Echo).websocket("/b", handler).websocket("/c", lambda: Echo())
    assert [route.websocket is not None for route in router.routes] == [True, True, True]


async def test_serve_without_await_is_warned_about_where_it_was_called() -> None:
    with pytest.warns(RuntimeWarning, match="never awaited, so no server started") as caught:
        corral.serve(Echo, port=0)  # the mistake: no await
        gc.collect()
    assert caught[0].filename == __file__


async def test_run_inside_a_running_loop_says_to_await_serve() -> None:
    with pytest.raises(RuntimeError, match=re.escape("use `server = await corral.serve(...)`")):
        corral.run(Echo)


async def test_await_ws_send_in_a_callback_says_what_to_do(
    crash_expected: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A first try with callbacks: `await ws.send(...)` in an async on_message. ws.send
    returns a bool there; the crash report says to call it without await."""

    class AwaitsSend(Recorder):
        async def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            await ws.send(message)  # type: ignore[misc]

    factory, made = spawn(AwaitsSend)
    async with serve(factory) as server:
        reader, writer, _ = await open_raw(server)
        try:
            writer.write(masked(Opcode.TEXT, b"hi"))
            # The send itself went out before the await failed, then 1011.
            assert await read_frame(reader) == (Opcode.TEXT, b"hi")
            assert await read_frame(reader) == (Opcode.CLOSE, close_payload(1011))
        finally:
            await close_raw(writer)
        reason = await closed(made[0])
    assert reason.kind is CloseKind.CRASH
    assert "call them without await" in "".join(getattr(reason.error, "__notes__", []))
    # The note is in the logged traceback too.
    logged = [caplog.handler.format(r) for r in caplog.records if r.exc_info]
    assert any("call them without await" in text for text in logged)
