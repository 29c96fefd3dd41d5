"""Send-side backpressure and the memory broker, on real sockets (127.0.0.1, port 0).

A slow peer is a raw socket with a small receive buffer that stops reading; fast peers are
corral clients that read. What is checked is state (bytes buffered, messages counted, close
codes, log lines), never a speed: the slow peer is dropped or closed per ``backpressure_policy``
while the fast ones get every message, in order; ``on_drop`` hears of every dropped message and
``on_drain`` of every drain; memory for the slow peer stays under ``max_backpressure`` plus one
frame; the async-for style waits instead of dropping.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import os
import socket
from collections.abc import Awaitable
from typing import Any

import pytest

import corral
from corral import CloseKind, CloseReason, PublishError, PublishFailed
from corral.options import RUNTIME_MUTABLE
from corral.protocol.frames import Opcode, serialize_frame
from corral.session import Session
from helpers import eventually as _eventually

eventually = functools.partial(_eventually, timeout=5.0, step=0.005)

pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")

KiB = 1024
MiB = 1024 * KiB
SLOW_RCVBUF = 4096  # the slow peer's receive buffer
FILLER = bytes(4096)  # what fills the kernel's buffers for a slow peer first


# -- peers ---------------------------------------------------------------------------------------


class SlowPeer:
    """A client on a raw socket with a small receive buffer: it reads only when told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.filler = 0  # FILLER frames sent to it that it has not read

    @classmethod
    async def open(cls, server: corral.Server, path: str = "/") -> SlowPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Before connecting, so the window it advertises is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"HTTP/1.1 101 "), head
        return cls(reader, writer)

    async def server_side(self, server: corral.Server) -> corral.WebSocket:
        """This peer's connection on the server, once the kernel's buffers for it are full.

        TCP autotuning lets the kernel take MiBs for a peer that does not read before
        anything stays in corral's buffer; FILLER frames fill that slack first (the peer
        skips them with ``skip_filler``), so from here on what corral holds is all that
        changes: its buffer shrinks only when the peer reads."""
        await eventually(lambda: self._find(server) is not None)
        ws = self._find(server)
        assert ws is not None
        for _ in range(100):
            while ws.buffered_amount == 0:
                assert ws.send(FILLER)
                self.filler += 1
            await asyncio.sleep(0.02)
            if ws.buffered_amount:
                return ws
        raise AssertionError("the kernel kept taking what the peer does not read")

    def _find(self, server: corral.Server) -> corral.WebSocket | None:
        here = self.writer.get_extra_info("sockname")
        found = [ws for ws in server.connections if ws.remote_address == here]
        return found[0] if found else None

    async def skip_filler(self) -> None:
        for _ in range(self.filler):
            assert await self.read_frame() == (Opcode.BINARY, FILLER)
        self.filler = 0

    async def read_frame(self) -> tuple[int, bytes]:
        """One unmasked frame from the server (FIN set, no RSV bits)."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), 5)
        assert b0 & 0xF0 == 0x80 and b1 & 0x80 == 0, (b0, b1)
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.reader.readexactly(8), "big")
        return b0 & 0x0F, await asyncio.wait_for(self.reader.readexactly(length), 5)

    async def read_until(self, opcode: int) -> list[tuple[int, bytes]]:
        """Frames up to and including the first ``opcode`` frame."""
        frames = []
        while True:
            frame = await self.read_frame()
            frames.append(frame)
            if frame[0] == opcode:
                return frames

    def send(self, opcode: int, payload: bytes = b"") -> None:
        self.writer.write(serialize_frame(opcode, payload, mask=os.urandom(4)))

    def abort(self) -> None:
        """Drop the TCP connection without reading what is pending."""
        self.writer.transport.abort()


class Recorder(corral.Handler):
    """Subscribes to the topic in its path (if any) and records what reaches ``on_drop``,
    ``on_drain`` and ``on_close``."""

    def __init__(self, registry: list[Recorder] | None = None) -> None:
        if registry is not None:
            registry.append(self)
        self.ws: corral.WebSocket | None = None
        self.dropped: list[str | bytes] = []
        self.drains = 0
        self.reason: CloseReason | None = None
        self.closed = asyncio.Event()

    def on_open(self, ws: corral.WebSocket) -> Any:
        self.ws = ws
        topic = ws.request.path_params.get("topic") if ws.request else None
        if topic:
            ws.subscribe(topic)

    def on_drop(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        self.dropped.append(message)

    def on_drain(self, ws: corral.WebSocket) -> Any:
        self.drains += 1

    def on_info(self, ws: corral.WebSocket, info: Any) -> Any:
        return info  # commands posted by the test (SetOptions)

    def on_close(self, ws: corral.WebSocket, reason: CloseReason) -> None:
        self.reason = reason
        self.closed.set()


def serve_recorders(registry: list[Recorder], **options: Any) -> corral.serve:
    router = (corral.Router().websocket("/feed/{topic}", lambda: Recorder(registry))
              .websocket("/", lambda: Recorder(registry)))
    return corral.serve(router, "127.0.0.1", 0, **options)


def handler_of(registry: list[Recorder], ws: corral.WebSocket) -> Recorder:
    (handler,) = [h for h in registry if h.ws is ws]
    return handler


def only_handler(handler: corral.Handler) -> corral.Router:
    """Every path served by this one handler instance (the test opens one connection)."""
    return corral.Router().websocket("/{path:path}", lambda: handler)


def only(server: corral.Server) -> corral.WebSocket:
    (ws,) = server.connections
    return ws


def connect(server: corral.Server, path: str = "/") -> Any:
    return corral.connect(f"ws://127.0.0.1:{server.port}{path}", compression=None)


async def receive(ws: corral.AsyncWebSocket, count: int) -> list[str | bytes]:
    return [await ws.recv() for _ in range(count)]


def warnings(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.getMessage().startswith(start)]


def numbered(i: int, size: int) -> str:
    """A text message that sorts by ``i``."""
    return f"{i:06d}".ljust(size, "x")


# -- a slow subscriber among fast ones -------------------------------------------------------------

COUNT = 2_000
SIZE = 4 * KiB
FRAME = 4 + SIZE  # a text frame of 4 KiB from the server: 2 + 2 bytes of header
WRITE_LIMIT = 16 * KiB
LIMIT = 64 * KiB


async def publish_all(server: corral.Server, slow: corral.WebSocket,
                      fast: list[corral.WebSocket]) -> tuple[int, int]:
    """Publish COUNT messages to "news", waiting for the fast subscribers (never for the slow
    one) whenever their buffers pass write_limit; return the publish futures' total and the
    most the slow subscriber's buffer ever held."""
    delivered = peak = 0
    for i in range(COUNT):
        delivered += server.publish("news", numbered(i, SIZE)).result()
        peak = max(peak, slow.buffered_amount)
        for ws in fast:
            await asyncio.wait_for(ws.drain(), 5)
    return delivered, peak


async def test_slow_subscriber_is_dropped_while_the_fast_ones_get_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry: list[Recorder] = []
    async with serve_recorders(registry, write_limit=WRITE_LIMIT,
                               max_backpressure=LIMIT) as server:
        fast_clients = [await connect(server, "/feed/news") for _ in range(3)]
        peer = await SlowPeer.open(server, "/feed/news")
        try:
            await eventually(lambda: server.subscriber_count("news") == 4)
            slow = await peer.server_side(server)
            recorder = handler_of(registry, slow)
            fast = [ws for ws in server.connections if ws is not slow]
            consumers = [asyncio.create_task(receive(ws, COUNT)) for ws in fast_clients]

            delivered, peak = await publish_all(server, slow, fast)

            # Every fast subscriber got every message, in order, and lost none.
            expected = [numbered(i, SIZE) for i in range(COUNT)]
            for received in await asyncio.wait_for(asyncio.gather(*consumers), 10):
                assert received == expected
            assert [ws.dropped_messages for ws in fast] == [0, 0, 0]
            # The slow one: some dropped, each counted and each given to its on_drop.
            dropped = slow.dropped_messages
            assert 0 < dropped < COUNT
            assert delivered == 4 * COUNT - dropped
            await eventually(lambda: len(recorder.dropped) == dropped)
            assert [h for h in registry if h.dropped] == [recorder]
            # The server's figures (server.stats(), /metrics) count the same drops.
            assert server.stats().dropped_messages == dropped
            assert server.stats().backpressure_closes == 0
            # Its memory stayed bounded: a message is queued only while the buffer is under
            # max_backpressure, so it holds at most the limit plus one frame.
            assert LIMIT <= peak < LIMIT + FRAME
            assert slow.buffered_amount < LIMIT + FRAME
            # One warning for the episode, not one per message.
            assert len(warnings(caplog, "dropping messages to slow peer")) == 1
            assert recorder.drains == 0

            # It reads again: what it gets and what was dropped are every message, once, in
            # order. Nothing was lost silently.
            await peer.skip_filler()
            got: list[str] = []
            while len(got) < COUNT - dropped:
                opcode, payload = await peer.read_frame()
                assert opcode == Opcode.TEXT
                got.append(payload.decode())
            assert got == sorted(got)
            assert recorder.dropped == sorted(recorder.dropped)
            assert sorted([*got, *map(str, recorder.dropped)]) == expected
            # Its buffer drained: on_drain, and the next message reaches it again.
            await eventually(lambda: recorder.drains == 1)
            assert slow.buffered_amount == 0
            assert server.publish("news", "after").result() == 4
            assert await peer.read_frame() == (Opcode.TEXT, b"after")
            assert slow.dropped_messages == dropped
        finally:
            peer.abort()
            for client in fast_clients:
                await client.close()


@pytest.mark.parametrize("slow_reads_again", [False, True])
async def test_policy_close_closes_the_slow_subscriber_with_1013(
    caplog: pytest.LogCaptureFixture, slow_reads_again: bool,
) -> None:
    registry: list[Recorder] = []
    # Reading again, it answers the close before the close timeout; not reading, it is
    # dropped when the close timeout ends.
    close_timeout = 10.0 if slow_reads_again else 0.3
    async with serve_recorders(registry, write_limit=WRITE_LIMIT, max_backpressure=LIMIT,
                               backpressure_policy="close",
                               close_timeout=close_timeout) as server:
        fast_clients = [await connect(server, "/feed/news") for _ in range(2)]
        peer = await SlowPeer.open(server, "/feed/news")
        try:
            await eventually(lambda: server.subscriber_count("news") == 3)
            slow = await peer.server_side(server)
            recorder = handler_of(registry, slow)
            fast = [ws for ws in server.connections if ws is not slow]
            consumers = [asyncio.create_task(receive(ws, COUNT)) for ws in fast_clients]

            delivered, peak = await publish_all(server, slow, fast)

            expected = [numbered(i, SIZE) for i in range(COUNT)]
            for received in await asyncio.wait_for(asyncio.gather(*consumers), 10):
                assert received == expected
            assert [ws.dropped_messages for ws in fast] == [0, 0]
            # The one message over the limit closed it; nothing more was queued for it.
            assert slow.dropped_messages == 1
            assert not slow.open
            assert (server.stats().dropped_messages, server.stats().backpressure_closes) == (1, 1)
            assert peak < LIMIT + FRAME
            assert len(warnings(caplog, "closing slow peer")) == 1
            assert not warnings(caplog, "dropping messages")
            sent_to_slow = delivered - 2 * COUNT
            assert 0 < sent_to_slow < COUNT
            close_frame = (1013).to_bytes(2, "big") + b"too slow: send buffer full"
            if slow_reads_again:
                # It sees every message sent before the close, then the close frame.
                await peer.skip_filler()
                frames = await peer.read_until(Opcode.CLOSE)
                assert frames[-1] == (Opcode.CLOSE, close_frame)
                assert [p.decode() for _, p in frames[:-1]] == expected[:sent_to_slow]
                peer.send(Opcode.CLOSE, close_frame)
                await asyncio.wait_for(recorder.closed.wait(), 5)
                assert recorder.reason == CloseReason(CloseKind.NORMAL, 1013,
                                                      "too slow: send buffer full")
            else:
                # It never answers: the close timeout drops TCP (RFC 6455 7.1.5: no close
                # frame was received, so the code the application sees is 1006).
                await asyncio.wait_for(recorder.closed.wait(), 5)
                assert recorder.reason == CloseReason(CloseKind.TIMEOUT, 1006)
            assert recorder.dropped == []  # policy close: on_drop is not called
            assert server.subscriber_count("news") == 2
            assert server.publish("news", "after").result() == 2
            for client in fast_clients:
                assert await asyncio.wait_for(client.recv(), 5) == "after"
        finally:
            peer.abort()
            for client in fast_clients:
                await client.close()


# -- on_drain, drain() and buffered_amount ---------------------------------------------------------


async def test_on_drain_once_per_episode_when_the_peer_reads_again() -> None:
    registry: list[Recorder] = []
    async with serve_recorders(registry, write_limit=WRITE_LIMIT, max_backpressure=None) as server:
        peer = await SlowPeer.open(server)
        try:
            ws = await peer.server_side(server)
            recorder = handler_of(registry, ws)
            assert ws.transport is not None
            for episode in (1, 2):
                sent = 0
                while ws.buffered_amount <= WRITE_LIMIT:
                    assert ws.send(numbered(sent, SIZE))
                    sent += 1
                # The unsent bytes are visible, and a peer that does not read our writes is
                # not read from either.
                assert ws.buffered_amount > WRITE_LIMIT
                assert not ws.transport.is_reading()
                assert recorder.drains == episode - 1
                await peer.skip_filler()
                frames = [await peer.read_frame() for _ in range(sent)]
                assert frames == [(Opcode.TEXT, numbered(i, SIZE).encode()) for i in range(sent)]
                await eventually(lambda episode=episode: recorder.drains == episode)  # type: ignore[misc]
                assert ws.buffered_amount <= WRITE_LIMIT
                assert ws.transport.is_reading()
            assert ws.dropped_messages == 0
        finally:
            peer.abort()


async def test_async_style_drain_waits_until_the_buffer_is_low() -> None:
    go = asyncio.Event()
    levels: list[int] = []

    async def app(ws: corral.AsyncWebSocket) -> None:
        ws.subscribe("feed")
        await go.wait()
        levels.append(ws.buffered_amount)
        await asyncio.wait_for(ws.drain(), 5)
        levels.append(ws.buffered_amount)
        await ws.send("drained")

    async with corral.serve(app, "127.0.0.1", 0, write_limit=WRITE_LIMIT,
                            max_backpressure=None) as server:
        peer = await SlowPeer.open(server)
        try:
            await eventually(lambda: server.subscriber_count("feed") == 1)
            ws = await peer.server_side(server)
            published = 0
            while ws.buffered_amount <= WRITE_LIMIT:  # publishes never wait
                assert server.publish("feed", numbered(published, SIZE)).result() == 1
                published += 1
            go.set()
            await eventually(lambda: len(levels) == 1)
            assert levels[0] > WRITE_LIMIT  # visible to the async style too
            await asyncio.sleep(0)
            assert len(levels) == 1  # still waiting: the peer has not read
            await peer.skip_filler()
            frames = [await peer.read_frame() for _ in range(published)]
            assert frames[-1] == (Opcode.TEXT, numbered(published - 1, SIZE).encode())
            assert await peer.read_frame() == (Opcode.TEXT, b"drained")
            assert levels[1] <= WRITE_LIMIT
            assert ws.dropped_messages == 0
            # The function returned: the server closes.
            assert await peer.read_frame() == (Opcode.CLOSE, b"\x03\xe8")
            peer.send(Opcode.CLOSE, b"\x03\xe8")
            await asyncio.wait_for(ws.wait_closed(), 5)
        finally:
            peer.abort()


# -- what is dropped and what is not ---------------------------------------------------------------


async def test_send_over_the_limit_returns_false_and_control_frames_still_go() -> None:
    registry: list[Recorder] = []
    async with serve_recorders(registry, write_limit=WRITE_LIMIT, max_backpressure=LIMIT) as server:
        peer = await SlowPeer.open(server)
        try:
            ws = await peer.server_side(server)
            recorder = handler_of(registry, ws)
            sent: list[str] = []
            while ws.send(message := numbered(len(sent), SIZE)):
                sent.append(message)
            assert LIMIT <= ws.buffered_amount < LIMIT + FRAME
            assert ws.dropped_messages == 1
            assert recorder.dropped == []  # on_drop comes soon after, not inside send
            await eventually(lambda: recorder.dropped == [message])
            assert not ws.send(b"binary too")
            assert ws.dropped_messages == 2
            await eventually(lambda: recorder.dropped == [message, b"binary too"])
            # Control frames are never dropped: each is queued, whatever the buffer holds.
            before = ws.buffered_amount
            assert ws.ping(b"p")
            assert ws.pong(b"q")
            ws.close(1000, "bye")
            assert ws.buffered_amount == before + 3 + 3 + 7
            assert ws.dropped_messages == 2
            await peer.skip_filler()
            frames = await peer.read_until(Opcode.CLOSE)
            assert frames == [(Opcode.TEXT, m.encode()) for m in sent] + [
                (Opcode.PING, b"p"), (Opcode.PONG, b"q"), (Opcode.CLOSE, b"\x03\xe8bye")]
            assert ws.dropped_messages == 2
            peer.send(Opcode.CLOSE, b"\x03\xe8bye")
            await asyncio.wait_for(recorder.closed.wait(), 5)
            assert recorder.reason == CloseReason(CloseKind.NORMAL, 1000, "bye")
            assert recorder.drains <= 1  # drained or not before the end: never more
        finally:
            peer.abort()


# -- the async-for style waits instead of dropping -------------------------------------------------


async def test_async_style_send_waits_for_a_slow_reader_and_loses_nothing() -> None:
    count = 300
    go = asyncio.Event()
    progress: list[int] = []

    async def producer(ws: corral.AsyncWebSocket) -> None:
        await go.wait()
        for i in range(count):
            await ws.send(numbered(i, SIZE))
            progress.append(i)

    # max_backpressure under write_limit: any send made while writing is paused would be
    # dropped, so none may be made.
    async with corral.serve(producer, "127.0.0.1", 0, write_limit=WRITE_LIMIT,
                            max_backpressure=8 * KiB) as server:
        peer = await SlowPeer.open(server)
        try:
            ws = await peer.server_side(server)
            go.set()
            await eventually(lambda: ws.buffered_amount > WRITE_LIMIT)
            await asyncio.sleep(0)
            assert len(progress) < count  # waiting for the peer
            assert ws.dropped_messages == 0
            await peer.skip_filler()
            frames = await peer.read_until(Opcode.CLOSE)
            assert frames == [(Opcode.TEXT, numbered(i, SIZE).encode()) for i in range(count)
                              ] + [(Opcode.CLOSE, b"\x03\xe8")]
            assert ws.dropped_messages == 0
            peer.send(Opcode.CLOSE, b"\x03\xe8")
            await asyncio.wait_for(ws.wait_closed(), 5)
        finally:
            peer.abort()


async def test_async_style_send_waits_again_when_publishes_refill_the_buffer_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The producer's drain ends, but before its task runs again a burst of publishes (say,
    another connection's message handled in the same loop iteration) fills the buffer past
    max_backpressure: its next send must wait again, not be dropped (nor raise)."""
    count = 50
    go = asyncio.Event()
    bursts: list[int] = []
    big = 64 * KiB

    async def producer(ws: corral.AsyncWebSocket) -> None:
        ws.subscribe("feed")
        await go.wait()
        for i in range(count):
            await ws.send(f"own {i}")

    def overflow(server: corral.Server) -> int:
        """Publish until the subscriber drops one: its buffer is then over the limit (the
        kernel's room, however large, is filled first). Returns how many it got."""
        got = 0
        while server.publish("feed", numbered(got, big)).result():
            got += 1
        return got

    async with corral.serve(producer, "127.0.0.1", 0, write_limit=WRITE_LIMIT,
                            max_backpressure=LIMIT) as server:
        real_resume_writing = Session.resume_writing

        def resume_then_burst(self: Session) -> None:
            real_resume_writing(self)
            if len(bursts) < 3:
                bursts.append(overflow(server))

        monkeypatch.setattr(Session, "resume_writing", resume_then_burst)
        peer = await SlowPeer.open(server)
        try:
            await eventually(lambda: server.subscriber_count("feed") == 1)
            ws = await peer.server_side(server)
            published = overflow(server)  # the producer's first send has to wait
            go.set()
            await peer.skip_filler()
            frames = await peer.read_until(Opcode.CLOSE)
            own = [p.decode() for op, p in frames if op == Opcode.TEXT and p.startswith(b"own")]
            assert own == [f"own {i}" for i in range(count)]
            assert frames[-1] == (Opcode.CLOSE, b"\x03\xe8")
            assert len(frames) == published + sum(bursts) + count + 1
            # Each burst ended on a dropped publish; the producer's sends waited each time.
            assert len(bursts) == 3
            assert ws.dropped_messages == 4
            peer.send(Opcode.CLOSE, b"\x03\xe8")
            await asyncio.wait_for(ws.wait_closed(), 5)
        finally:
            peer.abort()


# -- the options --------------------------------------------------------------------------------


def test_backpressure_options_defaults_and_validation() -> None:
    options = corral.Options()
    assert (options.write_limit, options.max_backpressure, options.backpressure_policy) == (
        64 * KiB, MiB, "drop")
    assert corral.Options(max_backpressure=None).max_backpressure is None
    assert corral.Options(backpressure_policy="close").backpressure_policy == "close"
    for bad_policy in ("block", "Drop", ""):
        with pytest.raises(ValueError, match="backpressure_policy"):
            corral.Options(backpressure_policy=bad_policy)
    for bad_limit in (0, -1, 1.5):
        with pytest.raises(ValueError, match="max_backpressure"):
            corral.Options(max_backpressure=bad_limit)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backpressure_policy"):
        corral.serve(corral.Handler, "127.0.0.1", 0, backpressure_policy="block")
    assert {"max_backpressure", "backpressure_policy"} <= RUNTIME_MUTABLE
    assert "write_limit" not in RUNTIME_MUTABLE  # the transport's limits are set once


async def test_no_limit_then_limits_changed_at_run_time(caplog: pytest.LogCaptureFixture) -> None:
    registry: list[Recorder] = []
    async with serve_recorders(registry, write_limit=WRITE_LIMIT, max_backpressure=None) as server:
        peer = await SlowPeer.open(server)
        try:
            ws = await peer.server_side(server)
            recorder = handler_of(registry, ws)
            # No limit: every message is queued, far past the default 1 MiB.
            while ws.buffered_amount < 2 * MiB:
                assert ws.send(bytes(64 * KiB))
            assert ws.dropped_messages == 0
            # A limit set at run time applies from the next send.
            ws.set_options(max_backpressure=MiB)
            assert not ws.send(b"over")
            assert ws.dropped_messages == 1
            await eventually(lambda: recorder.dropped == [b"over"])
            ws.set_options(max_backpressure=None)
            assert ws.send(b"unlimited again")
            # A bad value, or an option that cannot change on an open connection, changes
            # nothing.
            with pytest.raises(ValueError, match="backpressure_policy"):
                ws.set_options(backpressure_policy="block")
            with pytest.raises(ValueError, match="write_limit"):
                ws.set_options(write_limit=KiB)
            assert ws.options.max_backpressure is None
            assert ws.options.backpressure_policy == "drop"
            # The SetOptions command, from a callback: policy close, limit back.
            ws.post(corral.SetOptions({"backpressure_policy": "close", "max_backpressure": MiB}))
            await eventually(lambda: ws.options.backpressure_policy == "close")
            assert ws.open
            assert not ws.send(b"too much")
            assert not ws.open
            assert ws.conn.close_sent == (1013, "too slow: send buffer full")
            assert ws.dropped_messages == 2
            assert not ws.ping()  # closing: nothing more is sent, control frames included
            assert len(warnings(caplog, "closing slow peer")) == 1
            await asyncio.sleep(0)
            assert recorder.dropped == [b"over"]
        finally:
            peer.abort()
        await asyncio.wait_for(recorder.closed.wait(), 5)


# -- the memory broker -----------------------------------------------------------------------------


async def test_memory_broker_history_keeps_the_last_n_oldest_first() -> None:
    async with corral.serve(corral.Handler, "127.0.0.1", 0) as server:
        broker = server.broker
        assert isinstance(broker, corral.MemoryBroker)
        assert broker.connected
        # The memory broker delivers before publish returns: the future is already done.
        first = server.publish("room", "m0", keep=3)
        assert first.done()
        assert first.result() == 0
        for i in range(1, 5):
            server.publish("room", f"m{i}", keep=3)
        assert await broker.history("room") == ["m2", "m3", "m4"]
        assert await broker.history("room", limit=2) == ["m3", "m4"]
        assert await broker.history("room", limit=10) == ["m2", "m3", "m4"]
        assert await broker.history("room", limit=0) == []
        server.publish("room", "not kept")  # keep=0: delivered only
        assert await broker.history("room") == ["m2", "m3", "m4"]
        server.publish("room", bytearray(b"bin"), keep=5)  # a larger keep: more is kept
        assert await broker.history("room") == ["m2", "m3", "m4", b"bin"]
        server.publish("room", "m5", keep=2)  # a smaller one trims
        assert await broker.history("room") == [b"bin", "m5"]
        assert await broker.history("elsewhere") == []


async def test_memory_broker_history_of_what_subscribers_also_got() -> None:
    async with (serve_recorders([]) as server, connect(server, "/feed/room") as client):
        await eventually(lambda: server.subscriber_count("room") == 1)
        assert [server.publish("room", f"m{i}", keep=2).result() for i in range(3)] == [1] * 3
        assert [await asyncio.wait_for(client.recv(), 5) for _ in range(3)] == ["m0", "m1", "m2"]
        assert await only(server).broker.history("room") == ["m1", "m2"]


async def test_memory_broker_presence() -> None:
    async with serve_recorders([]) as server, connect(server) as _client:
        broker = only(server).broker
        assert broker is server.broker
        assert await broker.members("room") == {}
        await broker.join("room", "a", "Alice")
        await broker.join("room", "b")
        await broker.join("lobby", "a", "Alice")
        assert await broker.members("room") == {"a": "Alice", "b": ""}
        await broker.join("room", "b", "Bob")  # joining again updates the info
        members = await broker.members("room")
        assert members == {"a": "Alice", "b": "Bob"}
        members["c"] = "Mallory"  # a copy
        assert await broker.members("room") == {"a": "Alice", "b": "Bob"}
        await broker.leave("room", "a")
        await broker.leave("room", "nobody")
        await broker.leave("nowhere", "a")
        assert await broker.members("room") == {"b": "Bob"}
        assert await broker.members("lobby") == {"a": "Alice"}
        await broker.leave("room", "b")
        assert await broker.members("room") == {}


async def test_publish_after_the_server_closed_fails_with_publish_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await corral.serve(corral.Handler, "127.0.0.1", 0)
    await server.close()
    assert not server.broker.connected
    with pytest.raises(PublishError, match="closed"):
        server.broker.publish("room", "late")
    future = server.publish("room", "late")  # a failed future, not a raise
    with pytest.raises(PublishError, match="publish to 'room' failed: the broker is closed"):
        future.result()
    assert server.topics.failed_publishes == 1
    assert warnings(caplog, "publish to 'room' failed") == [
        "publish to 'room' failed: the broker is closed (broker memory)"]


class FailingBroker(corral.MemoryBroker):
    """A broker whose engine is unreachable (a test double of the broker interface): its
    publish raises at once, or hands back an awaitable that fails, as a network broker's
    does."""

    name = "failing"

    def __init__(self, failure: str) -> None:
        super().__init__()
        self.failure = failure

    def publish(  # type: ignore[override]
        self, topic: str, message: str | bytes, keep: int = 0
    ) -> int | Awaitable[int]:
        if self.failure == "raises":
            raise PublishError(topic, "engine down")

        async def fail() -> int:
            await asyncio.sleep(0)
            if self.failure == "other error":
                raise ConnectionResetError("engine down")
            raise PublishError(topic, "engine down")

        return fail()


class Publisher(Recorder):
    """Publishes each message to "room" without awaiting; reports failures to its peer."""

    def __init__(self) -> None:
        super().__init__()
        self.infos: list[Any] = []

    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        ws.publish("room", message)

    def on_info(self, ws: corral.WebSocket, info: Any) -> Any:
        self.infos.append(info)
        return corral.Text(f"not published: {info.message}")


@pytest.mark.parametrize("failure", ["awaitable", "raises", "other error"])
async def test_a_failed_publish_reaches_the_publishers_on_info(
    caplog: pytest.LogCaptureFixture, failure: str,
) -> None:
    handler = Publisher()
    async with (corral.serve(only_handler(handler), "127.0.0.1", 0,
                             broker=FailingBroker(failure))
                as server, connect(server) as client):
        await client.send("hello")
        assert await asyncio.wait_for(client.recv(), 5) == "not published: hello"
        (info,) = handler.infos
        assert isinstance(info, PublishFailed)
        assert (info.topic, info.message) == ("room", "hello")
        assert isinstance(info.error, PublishError)
        cause = "ConnectionResetError: engine down" if failure == "other error" else "engine down"
        assert str(info.error) == f"publish to 'room' failed: {cause}"
        assert server.topics.failed_publishes == 1
        assert (server.stats().publishes, server.stats().publish_failures) == (1, 1)
        assert server.stats().broker == "failing"
        assert warnings(caplog, "publish to 'room' failed") == [
            f"publish to 'room' failed: {cause} (broker failing)"]


async def test_a_failed_publish_raises_where_it_is_awaited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(ws: corral.AsyncWebSocket) -> None:
        async for message in ws:
            try:
                await ws.publish("room", message)
            except PublishError as exc:
                await ws.send(f"error: {exc}")

    async with (corral.serve(app, "127.0.0.1", 0, broker=FailingBroker("awaitable")) as server,
                connect(server) as client):
        await client.send("hello")
        assert await asyncio.wait_for(client.recv(), 5) == (
            "error: publish to 'room' failed: engine down")
        assert server.topics.failed_publishes == 1  # counted and logged all the same
        assert len(warnings(caplog, "publish to 'room' failed")) == 1


# -- a publish that cannot be interleaved ---------------------------------------------------------


class Fragmenter(Recorder):
    """``begin``: start a fragmented message; ``end``: finish it."""

    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        if message == "begin":
            return corral.Fragment("begun ", last=False)
        if message == "end":
            return corral.Fragment("and ended", last=True)
        raise AssertionError(message)


@pytest.mark.parametrize("compressed", [False, True])
async def test_a_publish_during_a_fragmented_message_is_dropped_not_lost(
    compressed: bool,
) -> None:
    registry: list[Recorder] = []

    def fragmenter() -> Recorder:
        handler = Fragmenter()
        registry.append(handler)
        return handler

    router = corral.Router().websocket("/feed/{topic}", fragmenter)
    settings = corral.DeflateSettings() if compressed else None
    async with (corral.serve(router, "127.0.0.1", 0, compression=settings) as server,
                corral.connect(f"ws://127.0.0.1:{server.port}/feed/news",
                               compression=settings) as client):
        await eventually(lambda: server.subscriber_count("news") == 1)
        ws = only(server)
        assert bool(ws.extensions) is compressed
        (recorder,) = registry
        await client.send("begin")
        await eventually(lambda: ws.conn.sending_fragmented)
        # Its fragments cannot be interleaved with another message (RFC 6455 5.4): the
        # publish is not sent to it, and it is told so.
        assert server.publish("news", "during").result() == 0
        assert ws.dropped_messages == 1
        await eventually(lambda: recorder.dropped == ["during"])
        await client.send("end")
        assert await asyncio.wait_for(client.recv(), 5) == "begun and ended"
        assert server.publish("news", "after").result() == 1
        assert await asyncio.wait_for(client.recv(), 5) == "after"


# -- the recommended pattern: resync from history on drain ----------------------------------------


class ResyncRoom(corral.Handler):
    """docs/backpressure.md's chat room: messages are JSON with an increasing id; what a slow client
    missed is resent from the topic's history once it has caught up."""

    def __init__(self) -> None:
        self.missed: int | None = None  # the oldest id this client did not get
        self.resyncs = 0

    def on_open(self, ws: corral.WebSocket) -> Any:
        ws.subscribe("room")

    def on_drop(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        dropped = json.loads(message)["id"]
        self.missed = dropped if self.missed is None else min(self.missed, dropped)

    async def on_drain(self, ws: corral.WebSocket) -> Any:
        if self.missed is None:
            return
        since, self.missed = self.missed, None
        self.resyncs += 1
        for message in await ws.broker.history("room"):
            if json.loads(message)["id"] >= since:
                ws.send(message)  # dropped again? on_drop notes it: the next drain resumes


async def test_a_slow_client_catches_up_from_history_on_drain() -> None:
    count = 300
    handler = ResyncRoom()
    async with corral.serve(only_handler(handler), "127.0.0.1", 0, write_limit=WRITE_LIMIT,
                            max_backpressure=LIMIT) as server:
        peer = await SlowPeer.open(server)
        try:
            await eventually(lambda: server.subscriber_count("room") == 1)
            ws = await peer.server_side(server)
            for i in range(count):
                server.publish("room", json.dumps({"id": i, "text": "x" * SIZE}), keep=count)
            assert ws.dropped_messages > 0
            await eventually(lambda: handler.missed is not None)
            await peer.skip_filler()
            seen: set[int] = set()
            while len(seen) < count:
                opcode, payload = await peer.read_frame()
                assert opcode == Opcode.TEXT
                seen.add(json.loads(payload)["id"])
            assert handler.resyncs >= 1
        finally:
            peer.abort()
