"""Regression tests for the review findings fixed in c6bca87: backpressure and hostile-peer
bounds. Each one is a peer that misbehaves on a real socket (127.0.0.1, port 0) and checks a
bound on memory, state or behaviour, never a speed.

"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gc
import os
import socket
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import corral
from corral import CloseKind, CloseReason, ConnectionClosed
from corral.protocol.connection import FRAME_CHARGE
from corral.protocol.frames import Opcode
from helpers import close_payload, close_raw, eventually, masked, read_to_eof
from helpers import read_frame as _read_frame

# Every frame a test here reads is checked to be whole and plain (FIN, no RSV bit).
read_frame = functools.partial(_read_frame, strict=True)

MiB = 1 << 20

# -- fixtures ----------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")







# -- helpers -----------------------------------------------------------------------------------


def spawn(handler: corral.Handler) -> Callable[[], corral.Handler]:
    """A factory serving this one handler instance (each test opens one connection)."""
    return lambda: handler


def upgrade_request(port: int, path: str = "/", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


async def open_tcp(
    port: int, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection; ``rcvbuf`` shrinks its receive buffer (set before connecting, so
    the window it advertises is small from the start): a peer that does not read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def open_ws(
    server: corral.Server, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await open_tcp(server.port, rcvbuf)
    writer.write(upgrade_request(server.port))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


def drop(writer: asyncio.StreamWriter) -> None:
    """Drop the TCP connection without reading what is pending."""
    writer.transport.abort()


async def write_until_blocked(
    writer: asyncio.StreamWriter, chunk: bytes, limit: int, stall: float = 0.3
) -> int:
    """Write ``chunk`` until the peer stops taking it (a drain that makes no progress for
    ``stall`` seconds) or ``limit`` bytes went out; return how many bytes were written."""
    sent = 0
    while sent < limit:
        writer.write(chunk)
        sent += len(chunk)
        try:
            await asyncio.wait_for(writer.drain(), stall)
        except TimeoutError:
            break
    return sent


def only(server: corral.Server) -> corral.WebSocket:
    (ws,) = server.connections
    return ws


class Recorder(corral.Handler):
    """Keeps the reason ``on_close`` got and sets ``closed``."""

    def __init__(self) -> None:
        self.reason: CloseReason | None = None
        self.closed = asyncio.Event()
        self.log: list[str] = []

    def on_close(self, ws: corral.WebSocket, reason: CloseReason) -> None:
        self.log.append("on_close")
        self.reason = reason
        self.closed.set()


# -- 1. an async callback pauses reading ----------------------------------------------------------


async def test_async_callback_pauses_reading_and_keeps_the_backlog_small() -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    class Slow(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[bytes] = []

        async def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            assert isinstance(message, bytes)
            self.seen.append(message)
            if message == b"first":
                started.set()
                await gate.wait()  # a slow database call

    handler = Slow()
    # Reading goes on while the callback runs until max_queue events wait, so what the
    # backlog may hold is bounded by what the socket reads in flight carry (256 KiB each):
    # about 260 of these 1 KiB frames a read. 3 MiB are sent.
    count = 3_000
    body = b"x" * 1021
    # Binary frames carrying their index (zero mask: the payload is as written).
    burst = b"".join(b"\x82\xfe\x04\x00\x00\x00\x00\x00" + i.to_bytes(3, "big") + body
                     for i in range(count))
    async with corral.serve(spawn(handler), "127.0.0.1", 0) as server:
        reader, writer = await open_ws(server)
        try:
            writer.write(masked(Opcode.BINARY, b"first"))
            await asyncio.wait_for(started.wait(), 2)
            ws = only(server)
            writer.write(burst)  # the kernel takes what it can; the rest waits in the writer
            await asyncio.sleep(0.2)
            assert ws.transport is not None
            assert not ws.transport.is_reading()
            assert ws._session.queued_events < 1000  # white-box: the backlog's size
            gate.set()
            await writer.drain()
            await eventually(lambda: len(handler.seen) == count + 1, 5)
            assert handler.seen[1:] == [i.to_bytes(3, "big") + body for i in range(count)]
            assert ws.transport.is_reading()
            writer.write(masked(Opcode.CLOSE, close_payload(1000)))
            assert await read_frame(reader) == (Opcode.CLOSE, close_payload(1000))
        finally:
            await close_raw(writer)
        await asyncio.wait_for(handler.closed.wait(), 2)
    assert handler.reason is not None and handler.reason.kind is CloseKind.REMOTE


# -- 2. a peer that sends but never reads ------------------------------------------------------


@pytest.mark.parametrize("flood", ["ping", "echo"])
async def test_peer_that_never_reads_stops_the_server_reading(flood: str) -> None:
    class Echo(Recorder):
        def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            return corral.Binary(message) if isinstance(message, bytes) else corral.Text(message)

    handler = Echo()
    one = masked(Opcode.PING, b"p" * 125) if flood == "ping" else masked(Opcode.BINARY, b"e" * 1000)
    chunk = one * (64 * 1024 // len(one))
    write_limit = 16 * 1024
    async with corral.serve(spawn(handler), "127.0.0.1", 0, write_limit=write_limit) as server:
        _, writer = await open_ws(server, rcvbuf=4096)
        try:
            sent = await write_until_blocked(writer, chunk, 64 * MiB)
            assert sent < 64 * MiB, "the server kept reading from a peer that does not read"
            ws = only(server)
            assert ws.transport is not None
            assert not ws.transport.is_reading()
            first = ws.buffered_amount
            assert first < 4 * MiB
            await asyncio.sleep(0.2)
            assert ws.buffered_amount == first  # stopped growing
        finally:
            drop(writer)
        await asyncio.wait_for(handler.closed.wait(), 2)
    assert handler.reason is not None and handler.reason.kind is CloseKind.LOST


# -- 3. closing with a peer that never reads ------------------------------------------------------


class Pusher(Recorder):
    """Writes 5 MB at once to a peer that will not read it."""

    def on_open(self, ws: corral.WebSocket) -> Any:
        for _ in range(50):
            ws.send(b"z" * 100_000)

    def on_info(self, ws: corral.WebSocket, info: Any) -> Any:
        return corral.Close(1000, "bye")


async def test_server_close_to_a_peer_that_never_reads_ends_within_close_timeout() -> None:
    handler = Pusher()
    async with corral.serve(spawn(handler), "127.0.0.1", 0, close_timeout=0.5) as server:
        _, writer = await open_ws(server, rcvbuf=4096)
        try:
            ws = only(server)
            assert ws.buffered_amount > 0
            ws.post("close now")
            await asyncio.wait_for(handler.closed.wait(), 2)
            assert not server.connections
        finally:
            await close_raw(writer)
    assert handler.reason is not None and handler.reason.kind is CloseKind.TIMEOUT


async def test_peer_close_while_it_never_reads_ends_within_close_timeout() -> None:
    handler = Pusher()
    async with corral.serve(spawn(handler), "127.0.0.1", 0, close_timeout=0.5,
                            idle_timeout=0.5, ping_interval=0.2, ping_timeout=0.3) as server:
        _, writer = await open_ws(server, rcvbuf=4096)
        try:
            writer.write(masked(Opcode.CLOSE, close_payload(1000)))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handler.closed.wait(), 2)
            assert handler.closed.is_set()
            assert not server.connections
        finally:
            await close_raw(writer)


# -- 4. the HTTP phase with a client that never reads ----------------------------------------------


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    (tmp_path / "big.bin").write_bytes(os.urandom(MiB))
    return tmp_path


async def test_pipelined_static_gets_from_a_client_that_never_reads(big_file: Path) -> None:
    router = corral.Router().static("/static", big_file)
    async with corral.serve(router, "127.0.0.1", 0, handshake_timeout=5) as server:
        _, writer = await open_tcp(server.port, rcvbuf=4096)
        try:
            writer.write(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n" * 30)
            (http,) = server.registry.http
            transport = http.transport
            assert transport is not None
            await eventually(lambda: transport.get_write_buffer_size() > 0)
            await asyncio.sleep(0.3)  # time to answer more, were it taking more
            assert transport.get_write_buffer_size() < 8 * MiB
            assert not transport.is_reading()
        finally:
            drop(writer)
        await eventually(lambda: not server.registry.http)


async def test_closed_http_connection_whose_client_never_reads_is_aborted(
    tmp_path: Path,
) -> None:
    # Larger than what the kernel buffers take on loopback: the answer stays in the transport.
    (tmp_path / "huge.bin").write_bytes(bytes(16 * MiB))
    router = corral.Router().static("/static", tmp_path)
    async with corral.serve(router, "127.0.0.1", 0, handshake_timeout=0.3) as server:
        _, writer = await open_tcp(server.port, rcvbuf=4096)
        try:
            writer.write(b"GET /static/huge.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            (http,) = server.registry.http
            transport = http.transport
            assert transport is not None
            await eventually(transport.is_closing)
            assert transport.get_write_buffer_size() > 0  # close() waits for a reader...
            await eventually(lambda: not server.registry.http)  # ... the timeout aborts
        finally:
            await close_raw(writer)


# -- 5. a message in 1-byte fragments -----------------------------------------------------------


def one_byte_frames(payload: bytes, last: bool = True) -> bytes:
    """``payload`` as a binary message in zero-masked 1-byte frames (the payload is as
    written); without ``last`` the message is left unfinished."""
    head = b"\x02\x81\x00\x00\x00\x00" + payload[:1]
    cont = b"\x00\x81\x00\x00\x00\x00"
    body = b"".join(cont + payload[i : i + 1] for i in range(1, len(payload) - last))
    tail = b"\x80\x81\x00\x00\x00\x00" + payload[-1:] if last else b""
    return head + body + tail


class Keep(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[bytes] = []

    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        assert isinstance(message, bytes)
        self.messages.append(message)


async def send_in_chunks(writer: asyncio.StreamWriter, data: bytes) -> None:
    for i in range(0, len(data), 64 * 1024):
        writer.write(data[i : i + 64 * 1024])
        await writer.drain()


async def test_message_in_one_byte_fragments_arrives_intact() -> None:
    handler = Keep()
    payload = bytes(i % 251 for i in range(256 * 1024))
    wire = one_byte_frames(payload)
    # 256 Ki fragments count 16 bytes each against the limit (FRAME_CHARGE).
    limit = len(payload) * FRAME_CHARGE
    async with corral.serve(spawn(handler), "127.0.0.1", 0, max_message_size=limit) as server:
        reader, writer = await open_ws(server)
        try:
            await send_in_chunks(writer, wire)
            await eventually(lambda: bool(handler.messages), 5)
            assert handler.messages == [payload]
            writer.write(masked(Opcode.CLOSE, close_payload(1000)))
            assert await read_frame(reader) == (Opcode.CLOSE, close_payload(1000))
        finally:
            await close_raw(writer)
        await asyncio.wait_for(handler.closed.wait(), 2)


async def test_one_byte_fragments_cost_about_their_bytes() -> None:
    handler = Keep()
    count = 8000
    wire = one_byte_frames(bytes(i % 251 for i in range(count)), last=False)
    async with corral.serve(spawn(handler), "127.0.0.1", 0, close_timeout=0.5) as server:
        reader, writer = await open_ws(server)
        try:
            tracemalloc.start()
            try:
                await send_in_chunks(writer, wire)
                # Control frames may come between fragments (5.4): the pong says the server
                # has taken every fragment sent before the ping.
                writer.write(masked(Opcode.PING, b"sync"))
                assert await read_frame(reader) == (Opcode.PONG, b"sync")
                gc.collect()  # empties CPython's free lists, which tracemalloc counts as held
                held, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            # The unfinished message holds ~1 byte per fragment now; before c6bca87 each
            # fragment kept its own bytes object (~40 bytes).
            assert held < 8 * count
            assert peak < 8 * MiB
            assert not handler.messages
        finally:
            drop(writer)
        await asyncio.wait_for(handler.closed.wait(), 2)


async def refused_with_1009(wire: bytes, answer: bool) -> None:
    """Send ``wire`` to a server on the default options: it must close with 1009 and tell
    the handler so, with no message delivered. ``answer``: close back and expect TCP's end."""
    handler = Keep()
    async with corral.serve(spawn(handler), "127.0.0.1", 0) as server:
        reader, writer = await open_ws(server)
        try:
            await send_in_chunks(writer, wire)
            opcode, payload = await read_frame(reader)
            assert (opcode, payload[:2]) == (Opcode.CLOSE, close_payload(1009))
            if answer:
                writer.write(masked(Opcode.CLOSE, close_payload(1009)))
                assert await read_to_eof(reader) == b""
        finally:
            await close_raw(writer)
        await asyncio.wait_for(handler.closed.wait(), 2)
    assert not handler.messages
    assert handler.reason is not None
    assert (handler.reason.kind, handler.reason.code) == (CloseKind.PROTOCOL_ERROR, 1009)


async def test_too_many_fragments_are_refused_with_1009_by_default() -> None:
    """100,000 one-byte fragments count 1.6 MB against the default 1 MiB: 1009."""
    limit = corral.Options().max_message_size
    assert limit is not None and limit < 100_000 * FRAME_CHARGE
    await refused_with_1009(one_byte_frames(bytes(100_000)), answer=True)


async def test_endless_empty_continuations_end_in_1009() -> None:
    """A message that never ends, in empty frames: at the default limit the server closes
    with 1009 after 1 MiB / FRAME_CHARGE of them, and reads nothing after its close."""
    limit = corral.Options().max_message_size
    assert limit is not None
    empty = b"\x00\x80\x00\x00\x00\x00"  # a masked, empty, non-final continuation
    wire = b"\x02\x80\x00\x00\x00\x00" + empty * (limit // FRAME_CHARGE + 1000)
    await refused_with_1009(wire, answer=False)


# -- 6. concurrent recv() ------------------------------------------------------------------------


async def test_second_concurrent_recv_raises_and_close_wakes_the_first() -> None:
    async def app(ws: corral.AsyncWebSocket) -> None:
        async for _ in ws:
            pass

    async with corral.serve(app, "127.0.0.1", 0) as server:
        client = await corral.connect(f"ws://127.0.0.1:{server.port}/")
        first = asyncio.create_task(client.recv())
        await asyncio.sleep(0.01)  # first is waiting now
        assert not first.done()
        with pytest.raises(RuntimeError):
            await client.recv()
        await client.close()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(first, 1)


# -- 7. Pause and the timers -----------------------------------------------------------------------


async def test_paused_connection_is_not_timed_out_until_it_resumes() -> None:
    class Paused(Recorder):
        def on_open(self, ws: corral.WebSocket) -> Any:
            return corral.Pause()

        def on_info(self, ws: corral.WebSocket, info: Any) -> Any:
            return corral.Resume()

    handler = Paused()
    async with corral.serve(spawn(handler), "127.0.0.1", 0, idle_timeout=0.2, ping_interval=0.1,
                            ping_timeout=0.2, close_timeout=0.3) as server:
        _, writer = await open_ws(server)  # a peer that never sends, never answers pings
        try:
            ws = only(server)
            await asyncio.sleep(0.8)  # four idle timeouts, several ping timeouts
            assert not handler.closed.is_set()
            assert ws.open and ws.reading_paused
            ws.post("resume")
            await asyncio.wait_for(handler.closed.wait(), 2)
        finally:
            await close_raw(writer)
    assert handler.reason is not None and handler.reason.kind is CloseKind.TIMEOUT


# -- 8. cancelling what the application still runs ------------------------------------------------


class Busy(Recorder):
    """on_message never returns by itself; the log says when it was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()

    async def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.log.append("cancelled")
            raise


async def test_client_drop_cancels_a_running_async_callback() -> None:
    handler = Busy()
    async with corral.serve(spawn(handler), "127.0.0.1", 0, close_timeout=0.3) as server:
        _, writer = await open_ws(server)
        writer.write(masked(Opcode.TEXT, b"hi"))
        await asyncio.wait_for(handler.started.wait(), 2)
        drop(writer)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handler.closed.wait(), 1.5)
        assert handler.closed.is_set()
        assert handler.log == ["cancelled", "on_close"]


async def test_on_close_runs_after_the_cancelled_callback_ended() -> None:
    handler = Busy()
    async with corral.serve(spawn(handler), "127.0.0.1", 0, close_timeout=0.3) as server:
        _, writer = await open_ws(server)
        try:
            writer.write(masked(Opcode.TEXT, b"hi"))
            await asyncio.wait_for(handler.started.wait(), 2)
            await server.close()
        finally:
            await close_raw(writer)
    assert handler.log == ["cancelled", "on_close"]


async def test_server_close_cancels_a_coroutine_handler_waiting_forever() -> None:
    cancelled = asyncio.Event()
    forever = asyncio.Event()

    async def app(ws: corral.AsyncWebSocket) -> None:
        try:
            await forever.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    close_timeout = 0.3
    async with corral.serve(app, "127.0.0.1", 0, close_timeout=close_timeout) as server:
        async with corral.connect(f"ws://127.0.0.1:{server.port}/"):
            pass
        await asyncio.sleep(0.05)
        assert not cancelled.is_set()  # only the connection ended, not the handler
        await asyncio.wait_for(server.close(), close_timeout + 1.0)
    assert cancelled.is_set()


# -- 9. a callback task cancelled from outside -------------------------------------------------


async def test_callback_cancelled_from_outside_closes_with_1011(crash_expected: None) -> None:
    handler = Busy()
    async with corral.serve(spawn(handler), "127.0.0.1", 0, close_timeout=0.5) as server:
        reader, writer = await open_ws(server)
        try:
            writer.write(masked(Opcode.TEXT, b"hi"))
            await asyncio.wait_for(handler.started.wait(), 2)
            (task,) = [t for t in asyncio.all_tasks()
                       if t.get_coro().__qualname__ == "Session._await_callback"]
            task.cancel()
            assert await read_frame(reader) == (Opcode.CLOSE, close_payload(1011))
            writer.write(masked(Opcode.CLOSE, close_payload(1011)))
            assert await read_to_eof(reader) == b""
        finally:
            await close_raw(writer)
        await asyncio.wait_for(handler.closed.wait(), 2)
    assert handler.reason is not None
    assert (handler.reason.kind, handler.reason.code) == (CloseKind.CRASH, 1011)
    assert isinstance(handler.reason.error, asyncio.CancelledError)


@pytest.mark.parametrize("failure", ["cancelled", "raised"])
async def test_close_handshake_completes_after_an_async_callback_failed(
    crash_expected: None, failure: str
) -> None:
    class Failing(Recorder):
        async def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            await asyncio.sleep(0)
            if failure == "raised":
                raise RuntimeError("boom")
            raise asyncio.CancelledError

    handler = Failing()
    async with corral.serve(spawn(handler), "127.0.0.1", 0, close_timeout=1.5) as server:
        reader, writer = await open_ws(server)
        try:
            writer.write(masked(Opcode.TEXT, b"hi"))
            assert await read_frame(reader) == (Opcode.CLOSE, close_payload(1011))
            writer.write(masked(Opcode.CLOSE, close_payload(1011)))
            # The server reads our answer and closes TCP, without waiting for its timeout.
            assert await asyncio.wait_for(reader.read(), 1.0) == b""
        finally:
            await close_raw(writer)
        await asyncio.wait_for(handler.closed.wait(), 2)


# -- 10. half-closed TCP --------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["sync", "async"])
async def test_half_closed_peer_still_gets_the_answer_and_the_close(style: str) -> None:
    class SyncEcho(Recorder):
        def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            return corral.Text(f"reply:{message!s}")

    class AsyncEcho(Recorder):
        async def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            await asyncio.sleep(0.05)
            return corral.Text(f"reply:{message!s}")

    handler = SyncEcho() if style == "sync" else AsyncEcho()
    async with corral.serve(spawn(handler), "127.0.0.1", 0) as server:
        reader, writer = await open_ws(server)
        try:
            writer.write(masked(Opcode.TEXT, b"hi") + masked(Opcode.CLOSE, close_payload(1000)))
            writer.write_eof()
            assert await read_frame(reader) == (Opcode.TEXT, b"reply:hi")
            assert await read_frame(reader) == (Opcode.CLOSE, close_payload(1000))
            assert await read_to_eof(reader) == b""
        finally:
            await close_raw(writer)
        await asyncio.wait_for(handler.closed.wait(), 2)


async def test_half_closed_peer_without_close_frame_still_gets_the_answer() -> None:
    class AsyncEcho(Recorder):
        async def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            await asyncio.sleep(0.05)
            return corral.Text(f"reply:{message!s}")

    handler = AsyncEcho()
    async with corral.serve(spawn(handler), "127.0.0.1", 0, close_timeout=0.5) as server:
        reader, writer = await open_ws(server)
        try:
            writer.write(masked(Opcode.TEXT, b"hi"))
            writer.write_eof()
            assert await read_frame(reader) == (Opcode.TEXT, b"reply:hi")
            await read_to_eof(reader)
        finally:
            await close_raw(writer)
        await asyncio.wait_for(handler.closed.wait(), 2)


# -- 11. an invalid Close from a callback ----------------------------------------------------------


async def test_invalid_close_from_a_callback_is_a_crash(crash_expected: None) -> None:
    class LongClose(Recorder):
        def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
            return corral.Close(1000, "x" * 200)  # a close reason holds 123 bytes at most

    handler = LongClose()
    async with corral.serve(spawn(handler), "127.0.0.1", 0) as server:
        client = await corral.connect(f"ws://127.0.0.1:{server.port}/")
        await client.send("bye")
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(client.recv(), 2)
        assert caught.value.code == 1011
        await asyncio.wait_for(handler.closed.wait(), 2)
    assert handler.reason is not None
    assert (handler.reason.kind, handler.reason.code) == (CloseKind.CRASH, 1011)
    assert isinstance(handler.reason.error, ValueError)


# -- 12. send() types and unrelated pongs -------------------------------------------------------


async def test_send_takes_only_text_or_bytes_and_unrelated_pongs_resolve_nothing() -> None:
    refused: list[str] = []
    pinged: asyncio.Future[asyncio.Future[float]] = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()

    async def app(ws: corral.AsyncWebSocket) -> None:
        for bad in (5, [104, 105]):
            try:
                await ws.send(bad)  # type: ignore[arg-type]
            except TypeError:
                refused.append(f"async {bad!r}")
            assert ws.ws is not None
            try:
                ws.ws.send(bad)  # type: ignore[arg-type]
            except TypeError:
                refused.append(f"callback {bad!r}")
        pinged.set_result(await ws.ping(b"a"))
        await finished.wait()

    async with corral.serve(app, "127.0.0.1", 0) as server:
        reader, writer = await open_ws(server)
        try:
            assert await read_frame(reader) == (Opcode.PING, b"a")  # nothing went out before
            answered = await asyncio.wait_for(pinged, 2)
            writer.write(masked(Opcode.PONG, b"unrelated") + masked(Opcode.PING, b"sync"))
            # The server answers our ping after it has handled the pong sent before it.
            assert await read_frame(reader) == (Opcode.PONG, b"sync")
            assert not answered.done()
            writer.write(masked(Opcode.PONG, b"a"))
            await asyncio.wait_for(answered, 2)
            finished.set()
            assert await read_frame(reader) == (Opcode.CLOSE, close_payload(1000))
            writer.write(masked(Opcode.CLOSE, close_payload(1000)))
            assert await read_to_eof(reader) == b""
        finally:
            await close_raw(writer)
    assert refused == ["async 5", "callback 5", "async [104, 105]", "callback [104, 105]"]


# -- 13. garbage after a good pipelined request ------------------------------------------------


async def test_garbage_after_a_pipelined_request_is_answered_400_at_once() -> None:
    router = corral.Router().http("/health", lambda req: corral.Response.text("ok\n"))
    async with corral.serve(router, "127.0.0.1", 0, handshake_timeout=5) as server:
        reader, writer = await open_tcp(server.port)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nBROKEN GARBAGE\x01\r\n\r\n")
            # Well before the handshake timeout (5 s): not a 408 after waiting for more.
            data = await asyncio.wait_for(reader.read(), 1.0)
        finally:
            await close_raw(writer)
    first, sep, rest = data.partition(b"ok\n")
    assert first.startswith(b"HTTP/1.1 200 ") and sep
    assert rest.startswith(b"HTTP/1.1 400 ")


# -- 14. the origin is checked before upgrade() ----------------------------------------------------


async def test_cross_origin_upgrade_is_refused_before_the_handler_runs() -> None:
    upgrades: list[str] = []

    class Careful(corral.Handler):
        def upgrade(self, request: corral.Request) -> Any:
            upgrades.append(request.path)
            return corral.Accept()

    router = corral.Router().websocket("/ws", Careful)
    async with corral.serve(router, "127.0.0.1", 0) as server:
        reader, writer = await open_tcp(server.port)
        try:
            writer.write(upgrade_request(server.port, "/ws", "Origin: http://evil.example\r\n"))
            data = await read_to_eof(reader)
        finally:
            await close_raw(writer)
        assert data.startswith(b"HTTP/1.1 403 ")
        assert upgrades == []
        # The same request from the page's own origin is accepted.
        reader, writer = await open_tcp(server.port)
        try:
            writer.write(upgrade_request(server.port, "/ws",
                                         f"Origin: http://127.0.0.1:{server.port}\r\n"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            assert head.startswith(b"HTTP/1.1 101 ")
        finally:
            await close_raw(writer)
    assert upgrades == ["/ws"]
