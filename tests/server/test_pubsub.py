"""Pub/sub topics on one process: a real server on 127.0.0.1, corral clients and raw sockets.

Subscriptions and counts, who receives a publish (each subscriber once, nobody else), the
automatic unsubscribe when a connection ends, framing once for every plain subscriber while a
compressed one encodes for itself, publishing from a callback and from another task, and one
publish reaching 1,000 subscribers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

import pytest

import corral
from corral import DeflateSettings, Handler, Text, WebSocket
from corral.protocol.connection import Connection
from corral.protocol.frames import Opcode, serialize_frame

pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")


class PubSub(Handler):
    """Text commands: ``sub T``, ``unsub T``, ``pub T payload``, ``pubbin T payload``,
    ``topics``, ``echo X``, ``sub-and-close T``; each is answered (after what it caused)."""

    def on_open(self, ws: WebSocket) -> Any:
        topic = ws.request.path_params.get("topic") if ws.request else None
        if topic:
            ws.subscribe(topic)

    def on_message(self, ws: WebSocket, message: str | bytes) -> Any:
        assert isinstance(message, str)
        command, _, rest = message.partition(" ")
        if command == "sub":
            return Text(f"sub {ws.subscribe(rest)}")
        if command == "unsub":
            return Text(f"unsub {ws.unsubscribe(rest)}")
        if command in ("pub", "pubbin"):
            topic, _, payload = rest.partition(" ")
            data: str | bytes = payload if command == "pub" else payload.encode()
            return Text(f"published {ws.publish(topic, data).result()}")
        if command == "topics":
            return Text(",".join(sorted(ws.topics)))
        if command == "echo":
            return Text(rest)
        if command == "sub-and-close":
            ws.subscribe(rest)
            ws.close(1000, "bye")
            return None
        raise AssertionError(message)


def router() -> corral.Router:
    return (corral.Router().websocket("/", PubSub).websocket("/auto/{topic}", PubSub))


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[corral.Server]:
    async with corral.serve(router(), "127.0.0.1", 0, **options) as server:
        yield server


def client(server: corral.Server, path: str = "/", **options: Any) -> Any:
    """``await client(...)`` or ``async with client(...) as ws``; no compression offered
    unless asked."""
    options.setdefault("compression", None)
    return corral.connect(f"ws://127.0.0.1:{server.port}{path}", **options)


async def ask(ws: Any, command: str) -> str | bytes:
    await ws.send(command)
    return await asyncio.wait_for(ws.recv(), 2)


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def nothing_else(ws: Any) -> None:
    """The next message is the answer to a fresh echo: nothing else was queued before it."""
    assert await ask(ws, "echo sentinel") == "sentinel"


class RawPeer:
    """A client on a raw socket: it answers nothing unless told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, path: str = "/") -> RawPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        return cls(reader, writer)

    def send_text(self, text: str) -> None:
        self.writer.write(serialize_frame(Opcode.TEXT, text.encode(), mask=os.urandom(4)))

    async def read_frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.reader.readexactly(8), "big")
        return first & 0x0F, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@pytest.fixture
def build_frame_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The frames publishes built for sharing: each one a connection added to a publish's
    shared frames (``Connection.broadcast_frame``)."""
    built: list[bytes] = []
    real = Connection.broadcast_frame

    def counting(self: Connection, opcode: int, payload: bytes,
                 shared: dict[Hashable, bytes]) -> bytes | None:
        before = len(shared)
        frame = real(self, opcode, payload, shared)
        if len(shared) > before:
            assert frame is not None
            built.append(frame)
        return frame

    monkeypatch.setattr(Connection, "broadcast_frame", counting)
    return built


# -- subscribing -------------------------------------------------------------------------------


async def test_subscribe_unsubscribe_and_counts() -> None:
    async with serving() as server:
        assert server.topic_names() == frozenset()
        async with client(server) as a, client(server) as b:
            assert await ask(a, "sub news") == "sub True"
            assert await ask(a, "sub news") == "sub False"  # already subscribed
            assert await ask(a, "sub sport") == "sub True"
            assert await ask(b, "sub news") == "sub True"
            assert await ask(a, "topics") == "news,sport"
            assert server.subscriber_count("news") == 2
            assert server.subscriber_count("sport") == 1
            assert server.subscriber_count("weather") == 0
            assert server.topic_names() == {"news", "sport"}
            assert await ask(a, "unsub sport") == "unsub True"
            assert await ask(a, "unsub sport") == "unsub False"
            assert await ask(a, "topics") == "news"
            assert server.topic_names() == {"news"}  # an empty topic is forgotten
            assert isinstance(server.topics, corral.Topics)


async def test_publish_reaches_each_subscriber_once_and_nobody_else() -> None:
    async with serving() as server:
        subs = [await client(server) for _ in range(3)]
        other = await client(server)
        try:
            for ws in subs:
                assert await ask(ws, "sub news") == "sub True"
            assert await ask(other, "sub sport") == "sub True"
            assert server.publish("news", "hello").result() == 3
            assert server.publish("news", b"\x00\x01binary").result() == 3
            assert server.publish("news", bytearray(b"ba")).result() == 3
            for ws in subs:
                assert await asyncio.wait_for(ws.recv(), 2) == "hello"
                assert await asyncio.wait_for(ws.recv(), 2) == b"\x00\x01binary"
                assert await asyncio.wait_for(ws.recv(), 2) == b"ba"
                await nothing_else(ws)
            await nothing_else(other)
        finally:
            for ws in [*subs, other]:
                await ws.close()


async def test_publish_without_subscribers_returns_0_and_still_checks_the_message() -> None:
    async with serving() as server:
        assert server.publish("nobody", "hello").result() == 0
        with pytest.raises(TypeError):
            server.publish("nobody", 42)  # type: ignore[arg-type]


async def test_sender_receives_its_own_message_before_the_answer() -> None:
    async with serving() as server, client(server) as a, client(server) as b:
        assert await ask(a, "sub room") == "sub True"
        assert await ask(b, "sub room") == "sub True"
        # Published from on_message: into the sender's output, ahead of the reply.
        assert await ask(a, "pub room hi all") == "hi all"
        assert await asyncio.wait_for(a.recv(), 2) == "published 2"
        assert await asyncio.wait_for(b.recv(), 2) == "hi all"
        assert await ask(b, "pubbin room raw") == b"raw"
        assert await asyncio.wait_for(b.recv(), 2) == "published 2"
        assert await asyncio.wait_for(a.recv(), 2) == b"raw"
        await nothing_else(a)
        await nothing_else(b)


async def test_publish_from_another_task() -> None:
    async with serving() as server, client(server, "/auto/ticks") as ws:
        await until(lambda: server.subscriber_count("ticks") == 1)

        async def ticker() -> list[int]:
            counts = []
            for i in range(5):
                counts.append(await server.publish("ticks", f"tick {i}"))
                await asyncio.sleep(0)
            return counts

        assert await asyncio.create_task(ticker()) == [1] * 5
        assert [await asyncio.wait_for(ws.recv(), 2) for _ in range(5)] == [
            f"tick {i}" for i in range(5)
        ]


async def test_async_for_style_handler_can_subscribe_and_publish() -> None:
    async def app(ws: corral.AsyncWebSocket) -> None:
        ws.subscribe("chat")
        async for message in ws:
            assert ws.topics == {"chat"}
            ws.publish("chat", message)

    async with (corral.serve(app, "127.0.0.1", 0) as server, client(server) as a,
                client(server) as b):
        await until(lambda: server.subscriber_count("chat") == 2)
        await a.send("from a")
        assert await asyncio.wait_for(a.recv(), 2) == "from a"
        assert await asyncio.wait_for(b.recv(), 2) == "from a"


# -- the end of a connection ----------------------------------------------------------------


async def test_a_closed_connection_leaves_its_topics() -> None:
    async with serving() as server:
        a, b = await client(server), await client(server)
        assert await ask(a, "sub news") == "sub True"
        assert await ask(a, "sub sport") == "sub True"
        assert await ask(b, "sub news") == "sub True"
        await a.close()
        await until(lambda: server.subscriber_count("news") == 1)
        assert server.topic_names() == {"news"}
        assert server.publish("news", "still here").result() == 1
        assert await asyncio.wait_for(b.recv(), 2) == "still here"
        await b.close()
        await until(lambda: not server.topic_names())


async def test_dropped_and_closing_connections_are_not_written_to() -> None:
    async with serving() as server:
        peer = await RawPeer.open(server.port)
        # The server subscribes it then sends its close; the peer does not answer yet.
        peer.send_text("sub-and-close news")
        assert await asyncio.wait_for(peer.read_frame(), 2) == (Opcode.CLOSE,
                                                                 b"\x03\xe8bye")
        assert server.subscriber_count("news") == 1
        assert server.publish("news", "too late").result() == 0  # closing: nothing more is sent
        (ws,) = server.connections
        assert not ws.send_frame(b"\x81\x00")
        await peer.close()  # TCP dropped without answering the close
        await until(lambda: server.subscriber_count("news") == 0)
        assert ws.topics == frozenset()
        assert not ws.subscribe("news")  # the connection is over
        assert server.publish("news", "nobody").result() == 0


async def test_client_side_connection_has_no_topics() -> None:
    async with serving() as server, client(server) as ws:
        assert ws.topics == frozenset()
        with pytest.raises(RuntimeError, match="client"):
            ws.subscribe("news")
        with pytest.raises(RuntimeError, match="client"):
            ws.publish("news", "hi")


# -- framing once -----------------------------------------------------------------------------


async def test_one_frame_is_built_for_every_plain_subscriber(build_frame_calls: list[bytes]
                                                             ) -> None:
    async with serving() as server:
        subs = [await client(server, "/auto/news") for _ in range(5)]
        try:
            await until(lambda: server.subscriber_count("news") == 5)
            # The bytes handed to every transport are the one frame built.
            written: list[bytes] = []
            for ws in server.connections:
                transport: Any = ws.transport
                real_write = transport.write

                def spy(data: bytes, real_write: Any = real_write) -> None:
                    written.append(data)
                    real_write(data)

                transport.write = spy
            assert server.publish("news", "x" * 1000).result() == 5
            assert len(build_frame_calls) == 1
            await asyncio.sleep(0)  # writes go out together once the loop comes round
            assert len(written) == 5
            assert all(data is build_frame_calls[0] for data in written)
            for ws in subs:
                assert await asyncio.wait_for(ws.recv(), 2) == "x" * 1000
            # Publishes made in one go reach each subscriber in one write, in order.
            written.clear()
            for i in range(3):
                assert server.publish("news", f"burst {i}").result() == 5
            await asyncio.sleep(0)
            assert len(written) == 5
            assert all(data == b"".join(build_frame_calls[1:]) for data in written)
            for ws in subs:
                for i in range(3):
                    assert await asyncio.wait_for(ws.recv(), 2) == f"burst {i}"
        finally:
            for ws in subs:
                await ws.close()


async def test_compressed_and_plain_subscribers_in_one_publish(build_frame_calls: list[bytes]
                                                               ) -> None:
    async with serving(compression=DeflateSettings()) as server:
        # The corral client offers permessage-deflate unless told not to.
        deflated = await client(server, "/auto/feed", compression=DeflateSettings())
        plain = await client(server, "/auto/feed")
        try:
            await until(lambda: server.subscriber_count("feed") == 2)
            extensions = sorted(ws.extensions for ws in server.connections)
            assert extensions == [(), ("permessage-deflate",)]
            text = "compress me " * 500
            data = bytes(range(256)) * 20
            assert server.publish("feed", text).result() == 2
            assert server.publish("feed", data).result() == 2
            assert len(build_frame_calls) == 2  # one per message, for the plain subscriber
            for ws in (deflated, plain):
                assert await asyncio.wait_for(ws.recv(), 2) == text
                assert await asyncio.wait_for(ws.recv(), 2) == data
                await nothing_else(ws)
        finally:
            await deflated.close()
            await plain.close()


async def test_compressed_frame_is_shared_without_context_takeover(
    build_frame_calls: list[bytes],
) -> None:
    """Subscribers whose server side keeps no compression context get one compressed frame,
    built once and written to each of them as the same bytes; one that keeps its context
    (another client's offer) still encodes for itself."""
    async with serving(compression=DeflateSettings()) as server:
        nct = DeflateSettings(server_no_context_takeover=True)
        shared = [await client(server, "/auto/feed", compression=nct) for _ in range(3)]
        own = await client(server, "/auto/feed", compression=DeflateSettings())
        try:
            await until(lambda: server.subscriber_count("feed") == 4)
            written: dict[Any, list[bytes]] = {}
            for ws in server.connections:
                transport: Any = ws.transport
                real_write = transport.write
                written[ws] = []

                def spy(data: bytes, real_write: Any = real_write, out: Any = written[ws]
                        ) -> None:
                    out.append(data)
                    real_write(data)

                transport.write = spy
            text = "compress me, once " * 300
            assert server.publish("feed", text).result() == 4
            await asyncio.sleep(0)
            assert len(build_frame_calls) == 1  # the shared compressed frame
            frame = build_frame_calls[0]
            assert frame[0] == 0xC1  # FIN, RSV1 (compressed), text
            assert len(frame) < len(text) // 4
            sharing = [w for ws, w in written.items() if ws.conn.extensions[0].shared_key()]
            assert len(sharing) == 3
            assert all(w == [frame] and w[0] is frame for w in sharing)
            for ws in [*shared, own]:
                assert await asyncio.wait_for(ws.recv(), 2) == text
                await nothing_else(ws)
            # A second publish: the subscriber with a context compresses better, still right.
            assert server.publish("feed", text).result() == 4
            for ws in [*shared, own]:
                assert await asyncio.wait_for(ws.recv(), 2) == text
        finally:
            for ws in [*shared, own]:
                await ws.close()


# -- many subscribers ------------------------------------------------------------------------


async def test_one_publish_reaches_1000_subscribers() -> None:
    n = 1000
    async with serving() as server:
        subs: list[Any] = []
        for start in range(0, n, 100):
            subs += await asyncio.gather(
                *(client(server, "/auto/crowd") for _ in range(start, min(n, start + 100)))
            )
        try:
            await until(lambda: server.subscriber_count("crowd") == n, timeout=10)
            started = time.monotonic()
            assert server.publish("crowd", "everyone").result() == n
            received = await asyncio.wait_for(asyncio.gather(*(ws.recv() for ws in subs)), 3)
            assert received == ["everyone"] * n
            assert time.monotonic() - started < 3
        finally:
            await asyncio.gather(*(ws.close() for ws in subs))
        await until(lambda: server.subscriber_count("crowd") == 0)
