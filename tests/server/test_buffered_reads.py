"""Buffered reads over real sockets on 127.0.0.1, on asyncio's loop and on uvloop (RFC 6455
sections 5.2, 5.4, 10.4).

The WebSocket reads as a BufferedProtocol: into a shared read buffer, or, for the rest of a
large payload, straight into the message's own buffer. A raw client sends frames cut at
awkward places (inside the header, right after it, around ``DIRECT_READ_MIN`` bytes before
the end, one byte before the end, together with the next frame), each piece read on its own
by the server, and checks the echoes; a corral client receives large messages the same way.
The hand-over from the HTTP protocol leaves nothing of it behind.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import importlib
import os
import struct
from collections.abc import Awaitable, Callable, Iterator
from itertools import pairwise
from types import ModuleType
from typing import Any

import pytest

import corral
from corral.examples.echo import Echo
from corral.protocol.connection import DIRECT_READ_MIN, Connection
from corral.protocol.frames import Opcode, serialize_frame
from corral.server.http import HttpProtocol

try:
    uvloop: ModuleType | None = importlib.import_module("uvloop")
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
    uvloop = None

pytestmark = pytest.mark.usefixtures("clean_logs")

LOOPS = [
    pytest.param(asyncio.new_event_loop, id="asyncio"),
    pytest.param(getattr(uvloop, "new_event_loop", None), id="uvloop",
                 marks=pytest.mark.skipif(uvloop is None, reason="uvloop not installed")),
]

LIMIT = 4 << 20
MASK = b"\x5a\x01\xc3\x7e"


def run_on(loop_factory: Callable[[], asyncio.AbstractEventLoop],
           test: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(asyncio.wait_for(test(), 30))


@pytest.fixture
def direct_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The sizes of the reads that went straight into a message's buffer."""
    sizes: list[int] = []
    received = Connection.payload_received

    def counting(self: Connection, n: int) -> Any:
        sizes.append(n)
        return received(self, n)

    monkeypatch.setattr(Connection, "payload_received", counting)
    yield sizes


def payload_of(size: int, seed: int = 0) -> bytes:
    return bytes((i * 13 + seed + (i >> 9)) & 0xFF for i in range(size))


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return serialize_frame(opcode, payload, fin=fin, mask=MASK)


class RawClient:
    """A client that writes exactly the pieces it is given, each read on its own."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        return cls(reader, writer)

    async def send_cut(self, wire: bytes, cuts: list[int]) -> None:
        bounds = sorted({c for c in cuts if 0 < c < len(wire)} | {0, len(wire)})
        for start, stop in pairwise(bounds):
            self.writer.write(wire[start:stop])
            await self.writer.drain()
            await asyncio.sleep(0.002)  # the server reads this piece before the next comes

    async def read_frame(self) -> tuple[int, bytes]:
        head = await self.reader.readexactly(2)
        length = head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return head[0] & 0x0F, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.write(masked(Opcode.CLOSE, b"\x03\xe8"))
        assert await self.read_frame() == (Opcode.CLOSE, b"\x03\xe8")
        self.writer.close()
        await self.writer.wait_closed()


def awkward_cuts(wire_size: int, payload_size: int) -> list[int]:
    """Inside the header, right after it, around DIRECT_READ_MIN bytes before the payload
    ends, in the middle, one byte before the end."""
    header = wire_size - payload_size
    return [1, 3, header - 2, header, header + 1, wire_size // 2,
            wire_size - DIRECT_READ_MIN - 1, wire_size - DIRECT_READ_MIN,
            wire_size - DIRECT_READ_MIN + 1, wire_size - 1]


SIZES = [
    pytest.param(DIRECT_READ_MIN - 1, id="under-direct-read-min"),
    pytest.param(DIRECT_READ_MIN, id="direct-read-min"),
    pytest.param(DIRECT_READ_MIN + 1, id="over-direct-read-min"),
    pytest.param(1 << 20, id="1MiB"),
]


@pytest.mark.parametrize("loop_factory", LOOPS)
@pytest.mark.parametrize("size", SIZES)
def test_5_2_a_large_frame_cut_anywhere_is_echoed_whole(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], size: int, direct_reads: list[int]
) -> None:
    payload = payload_of(size)
    big = masked(Opcode.BINARY, payload)
    wire = big + masked(Opcode.TEXT, b"after")  # the next frame comes with the end of this one

    async def test() -> None:
        router = corral.Router().websocket("/", Echo)
        async with corral.serve(router, port=0, max_message_size=LIMIT) as server:
            client = await RawClient.open(server.port)
            await client.send_cut(wire, awkward_cuts(len(big), size))
            assert await client.read_frame() == (Opcode.BINARY, payload)
            assert await client.read_frame() == (Opcode.TEXT, b"after")
            await client.close()

    run_on(loop_factory, test)
    if size > 2 * DIRECT_READ_MIN:
        # Right after the header, the rest (but the last DIRECT_READ_MIN bytes and a few)
        # went straight into the message's buffer.
        # An eighth arrives before the message's buffer is made, then reads go into it.
        assert sum(direct_reads) >= size // 2


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_5_2_large_text_split_inside_characters_is_echoed(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], direct_reads: list[int]
) -> None:
    text = "données ✓ 𝄞 " * 20_000  # 300,000 bytes of UTF-8: 2-, 3- and 4-byte characters
    data = text.encode()
    wire = masked(Opcode.TEXT, data)
    cuts = [*awkward_cuts(len(wire), len(data)), 14 + 7, 14 + 100_001, 14 + 200_003]

    async def test() -> None:
        router = corral.Router().websocket("/", Echo)
        async with corral.serve(router, port=0, max_message_size=LIMIT) as server:
            client = await RawClient.open(server.port)
            await client.send_cut(wire, cuts)
            assert await client.read_frame() == (Opcode.TEXT, data)
            await client.close()

    run_on(loop_factory, test)
    assert direct_reads


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_5_4_a_fragmented_large_message_with_a_ping_between(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    first, last = payload_of(100_000, 1), payload_of(300_000, 2)
    one = masked(Opcode.BINARY, first, fin=False)
    ping = masked(Opcode.PING, b"between")
    two = masked(Opcode.CONTINUATION, last)
    wire = one + ping + two
    cuts = [len(one) - 1, len(one) + 3, len(one) + len(ping) + 5,
            *(len(one) + len(ping) + c for c in awkward_cuts(len(two), len(last)))]

    async def test() -> None:
        router = corral.Router().websocket("/", Echo)
        async with corral.serve(router, port=0, max_message_size=LIMIT) as server:
            client = await RawClient.open(server.port)
            await client.send_cut(wire, cuts)
            assert await client.read_frame() == (Opcode.PONG, b"between")
            assert await client.read_frame() == (Opcode.BINARY, first + last)
            await client.close()

    run_on(loop_factory, test)


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_large_messages_back_to_back_in_one_write(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    payloads = [payload_of(300_000 + i, i) for i in range(3)]
    wire = b"".join(masked(Opcode.BINARY, p) for p in payloads)

    async def test() -> None:
        router = corral.Router().websocket("/", Echo)
        async with corral.serve(router, port=0, max_message_size=LIMIT) as server:
            client = await RawClient.open(server.port)
            client.writer.write(wire)
            for payload in payloads:
                assert await client.read_frame() == (Opcode.BINARY, payload)
            await client.close()

    run_on(loop_factory, test)


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_10_4_a_frame_over_the_limit_is_refused_on_its_header(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def test() -> None:
        router = corral.Router().websocket("/", Echo)
        async with corral.serve(router, port=0, max_message_size=LIMIT) as server:
            client = await RawClient.open(server.port)
            header = masked(Opcode.BINARY, bytes(LIMIT + 1))[:14]
            client.writer.write(header)  # and no payload: the answer comes without it
            assert await client.read_frame() == (Opcode.CLOSE, b"\x03\xf1")
            assert await client.reader.read() == b""
            client.writer.close()

    run_on(loop_factory, test)


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_client_reads_large_messages_into_their_buffers(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], direct_reads: list[int]
) -> None:
    messages: list[str | bytes] = [payload_of(1 << 20, 5), "ünïcode ✓ " * 30_000,
                                   payload_of(DIRECT_READ_MIN + 1), b"small"]

    async def test() -> None:
        router = corral.Router().websocket("/", Echo)
        async with (
            corral.serve(router, port=0, max_message_size=LIMIT) as server,
            corral.connect(f"ws://127.0.0.1:{server.port}/", compression=None,
                           max_message_size=LIMIT) as ws,
        ):
            for message in messages:
                await ws.send(message)
            for message in messages:
                assert await ws.recv() == message

    run_on(loop_factory, test)
    assert direct_reads


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_the_http_protocol_is_released_after_the_upgrade(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    # Each open connection must cost only its WebSocket: a transport that kept the HTTP
    # protocol's callbacks would keep its parser and buffers too.
    async def test() -> None:
        router = corral.Router().websocket("/", Echo)
        async with corral.serve(router, port=0) as server:
            clients = [await RawClient.open(server.port) for _ in range(5)]
            for client in clients:
                client.writer.write(masked(Opcode.TEXT, b"hi"))
                assert await client.read_frame() == (Opcode.TEXT, b"hi")
            gc.collect()
            assert not [o for o in gc.get_objects() if isinstance(o, HttpProtocol)]
            for client in clients:
                await client.close()

    run_on(loop_factory, test)


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_bytes_handed_to_data_received_are_handled_like_reads(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    opened: list[corral.WebSocket] = []

    class Keep(Echo):
        def on_open(self, ws: corral.WebSocket) -> None:
            opened.append(ws)

    async def test() -> None:
        router = corral.Router().websocket("/", Keep)
        async with corral.serve(router, port=0, max_message_size=LIMIT) as server:
            client = await RawClient.open(server.port)
            client.writer.write(masked(Opcode.TEXT, b"first"))
            assert await client.read_frame() == (Opcode.TEXT, b"first")
            payload = payload_of(DIRECT_READ_MIN * 2)
            wire = masked(Opcode.BINARY, payload)
            transport: Any = opened[0].transport
            protocol = transport.get_protocol()
            protocol.data_received(wire[:1000])  # as a transport without get_buffer would
            protocol.data_received(wire[1000:])
            assert await client.read_frame() == (Opcode.BINARY, payload)
            await client.close()

    run_on(loop_factory, test)


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_frames_sent_with_the_upgrade_request_are_handled_first(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    # They were read by the HTTP protocol: the WebSocket handles them before reading more.
    big = payload_of(3 * DIRECT_READ_MIN)

    async def test() -> None:
        router = corral.Router().websocket("/", Echo)
        async with corral.serve(router, port=0, max_message_size=LIMIT) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            key = base64.b64encode(os.urandom(16)).decode()
            request = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                       f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
            wire = masked(Opcode.TEXT, b"early") + masked(Opcode.BINARY, big)
            writer.write(request + wire[:5000])  # the upgrade, a frame, a large one begun
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            client = RawClient(reader, writer)
            assert await client.read_frame() == (Opcode.TEXT, b"early")
            await client.send_cut(wire[5000:], [DIRECT_READ_MIN])
            assert await client.read_frame() == (Opcode.BINARY, big)
            await client.close()

    run_on(loop_factory, test)
