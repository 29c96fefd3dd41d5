"""Compression on a real socket: the limits a hostile peer runs into, and the switches a
handler has over what it sends.

- Inflation is bounded by ``max_message_size`` whatever the compression ratio: a
  decompression bomb gets 1009 after at most that many bytes, and the process's memory stays
  small (tracemalloc); the server keeps serving.
- Each continuation frame of a compressed message counts at least ``FRAME_CHARGE`` bytes
  against the limit, like any other (1009).
- Data that does not inflate is 1007 (the message is not consistent with its type, RFC 6455
  7.4.1); RSV1 where RFC 7692 section 6 forbids it is 1002.
- ``Accept(compress=...)`` and route options decide per connection; ``Deflate`` /
  ``ws.set_compression`` / ``send(compress=False)`` and ``DeflateSettings.threshold`` decide
  per message, while the negotiated extension stays.

The peer is raw: frames from ``serialize_frame`` (masked), DEFLATE from zlib.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gc
import logging
import os
import struct
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import pytest

import corral
from corral import Accept, Deflate, DeflateSettings, Fragment, Handler, Request, Text, WebSocket
from corral.protocol.connection import FRAME_CHARGE
from corral.protocol.frames import serialize_frame

pytestmark = pytest.mark.timeout(10)

MiB = 1 << 20
CONTINUATION, TEXT, BINARY, CLOSE, PING = 0x0, 0x1, 0x2, 0x8, 0x9
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10  # as in the first header byte
TAIL = b"\x00\x00\xff\xff"
PMD = "permessage-deflate"
WEBKIT = "x-webkit-deflate-frame"
TIMEOUT = 2.0


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_unexpected_errors(caplog: pytest.LogCaptureFixture) -> Any:
    """A peer's bad data is its problem: the server logs no error for it."""
    caplog.set_level(logging.WARNING)
    yield
    gc.collect()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


class Echo(Handler):
    def on_message(self, ws: WebSocket, message: str | bytes) -> Any:
        ws.send(message)


@contextlib.asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[int]:
    async with corral.serve(app, "127.0.0.1", 0, **options) as server:
        yield server.port


# -- a raw peer --------------------------------------------------------------------------------


class Frame(NamedTuple):
    fin: bool
    rsv: int  # as in the first header byte
    opcode: int
    payload: bytes


def text(size: int) -> bytes:
    unit = b"compressible text, %d; " % size
    return (unit * (size // len(unit) + 1))[:size]


class Peer:
    """A raw client: its own handshake and frames, zlib for DEFLATE. It compresses with a
    9-bit window, within anything a server may ask (RFC 7692 7.1.2.2), and inflates with 15
    bits, keeping the window (context takeover) unless told otherwise."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 extension: str | None) -> None:
        self.reader = reader
        self.writer = writer
        self.extension = extension  # the Sec-WebSocket-Extensions answer
        self.per_frame = bool(extension) and not extension.startswith(PMD)
        self._deflater = zlib.compressobj(6, zlib.DEFLATED, -9)
        self._inflater = zlib.decompressobj(-15)

    @classmethod
    async def open(cls, port: int, path: str = "/", offer: str | None = PMD) -> Peer:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     f"Sec-WebSocket-Version: 13\r\n{extra}\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101 "), head
        answers = [line.partition(b":")[2].strip().decode() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-extensions:")]
        assert len(answers) <= 1, answers
        return cls(reader, writer, answers[0] if answers else None)

    def deflate(self, data: bytes) -> bytes:
        """DEFLATE up to a sync flush, 00 00 ff ff removed (RFC 7692 7.2.1)."""
        out = self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(TAIL)
        return out[:-4]

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> None:
        wire = serialize_frame(opcode, payload, fin=fin, mask=os.urandom(4))
        await self.send_raw(bytes((wire[0] | rsv,)) + wire[1:])

    async def send_compressed(self, opcode: int, data: bytes) -> None:
        await self.send(opcode, self.deflate(data), rsv=RSV1)

    async def _read(self, n: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), TIMEOUT)

    async def frame(self) -> Frame:
        b0, b1 = await self._read(2)
        assert not b1 & 0x80, "a server never masks (RFC 6455 5.1)"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self._read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self._read(8))
        frame = Frame(bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F, await self._read(n))
        assert frame.rsv in ((0, RSV1) if self.extension and frame.opcode < 8 else (0,)), frame
        return frame

    async def message(self) -> tuple[int, bytes, list[int]]:
        """The next message, inflated: (opcode, data, RSV bits of each frame)."""
        frames = [await self.frame()]
        while not frames[-1].fin:
            frames.append(await self.frame())
        assert frames[0].opcode in (TEXT, BINARY), frames[0]
        rsvs = [f.rsv for f in frames]
        if self.per_frame:
            parts = [self._inflater.decompress(f.payload + TAIL) if f.rsv else f.payload
                     for f in frames]
            return frames[0].opcode, b"".join(parts), rsvs
        # RFC 7692 6: RSV1 on the first frame of a message only.
        assert not any(rsvs[1:]), rsvs
        data = b"".join(f.payload for f in frames)
        if rsvs[0]:
            data = self._inflater.decompress(data + TAIL)
        return frames[0].opcode, data, rsvs

    async def echo(self, data: bytes, *, compress: bool = True) -> bool:
        """Send a binary message, check its echo; whether the echo was compressed."""
        if compress:
            await self.send_compressed(BINARY, data)
        else:
            await self.send(BINARY, data)
        opcode, got, rsvs = await self.message()
        assert (opcode, got) == (BINARY, data)
        return bool(rsvs[0])

    async def expect_close(self, code: int) -> None:
        frame = await self.frame()
        assert frame.opcode == CLOSE, frame
        assert struct.unpack("!H", frame.payload[:2])[0] == code, frame.payload
        assert await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""

    async def close(self) -> None:
        await self.send(CLOSE, struct.pack("!H", 1000))
        await self.expect_close(1000)

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def peer(port: int, path: str = "/", offer: str | None = PMD) -> AsyncIterator[Peer]:
    p = await Peer.open(port, path, offer)
    try:
        yield p
    finally:
        await p.aclose()


@functools.cache
def bomb(mib: int) -> bytes:
    """``mib`` MiB of zeros deflated, about 1000:1: one MiB compressed and flushed to a byte
    boundary, repeated (a raw DEFLATE stream may go on with blocks from a new compressor)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -9)
    one = deflater.compress(bytes(MiB)) + deflater.flush(zlib.Z_SYNC_FLUSH)
    return (one * mib)[:-4]


# -- inflation bounded by the message size -----------------------------------------------------


@pytest.mark.parametrize("offer", [PMD, WEBKIT])
async def test_decompression_bomb_is_refused_in_bounded_memory(offer: str) -> None:
    """20 MiB of zeros in ~20 KB, against max_message_size=1 MiB: close 1009 with at most
    1 MiB inflated, the traced peak far below the bomb, and the next client served."""
    payload = bomb(20)
    assert len(payload) < 30_000
    assert len(zlib.decompressobj(-9).decompress(payload + TAIL)) == 20 * MiB
    async with serving(Echo, max_message_size=MiB, compression=DeflateSettings()) as port:
        async with peer(port, offer=offer) as p:
            assert p.extension is not None
            await p.echo(text(10_000))
            frame = serialize_frame(BINARY, payload, rsv1=True, mask=os.urandom(4))
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                await p.send_raw(frame)
                await p.expect_close(1009)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB while refusing the bomb"
        async with peer(port, offer=offer) as p:
            for size in (100, 65536, MiB - 1024):
                assert await p.echo(text(size))
            await p.close()


async def test_bomb_spread_over_fragments_is_refused() -> None:
    """The bound is on the whole message: each fragment inflates to less than the limit."""
    payload = bomb(4)
    async with (serving(Echo, max_message_size=MiB, compression=DeflateSettings()) as port,
                peer(port) as p):
        pieces = [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
        wire = [serialize_frame(BINARY if i == 0 else CONTINUATION, piece, fin=False,
                                rsv1=i == 0, mask=os.urandom(4))
                for i, piece in enumerate(pieces)]
        await p.send_raw(b"".join(wire))
        await p.expect_close(1009)


async def test_message_inflating_to_exactly_the_limit_is_accepted() -> None:
    async with (serving(Echo, max_message_size=MiB, compression=DeflateSettings()) as port,
                peer(port) as p):
        assert await p.echo(bytes(MiB))
        await p.send_compressed(BINARY, bytes(MiB + 1))
        await p.expect_close(1009)


@pytest.mark.parametrize("offer", [PMD, WEBKIT])
async def test_compressed_message_in_empty_fragments_is_charged(offer: str) -> None:
    """Each continuation frame counts at least FRAME_CHARGE bytes, compressed or not: 1000
    bytes, then 193 empty continuations fit in 4096; 194 get 1009."""
    options = {"max_message_size": 4096, "compression": DeflateSettings()}
    data = text(1000)
    fits = (4096 - len(data)) // FRAME_CHARGE
    async with serving(Echo, **options) as port, peer(port, offer=offer) as p:
        for continuations, refused in ((fits, False), (fits + 1, True)):
            await p.send(BINARY, p.deflate(data), fin=False, rsv=RSV1)
            for i in range(continuations):
                await p.send(CONTINUATION, b"", fin=i == continuations - 1)
            if refused:
                await p.expect_close(1009)
            else:
                assert await p.message() == (BINARY, data, [RSV1])


# -- data that does not inflate, RSV bits where they do not belong -----------------------------


def _after_final_block() -> list[tuple[int, bytes, bool, int]]:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    finished = deflater.compress(b"done") + deflater.flush(zlib.Z_FINISH)  # BFINAL set
    return [(BINARY, finished + b"\x00more", True, RSV1)]


def _corrupt_second_fragment() -> list[tuple[int, bytes, bool, int]]:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    good = deflater.compress(text(5000)) + deflater.flush(zlib.Z_SYNC_FLUSH)
    return [(BINARY, good, False, RSV1), (CONTINUATION, b"\xff\xff\xff\xff", True, 0)]


def _invalid_utf8_inside() -> list[tuple[int, bytes, bool, int]]:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = b"valid text, then \xc3\x28 not UTF-8" * 4
    return [(TEXT, (deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4], True,
             RSV1)]


CORRUPT = {
    "invalid-block-type": [(BINARY, b"\xff\xff\xff\xff", True, RSV1)],  # BTYPE 11
    "stored-length-mismatch": [(BINARY, b"\x00\x05\x00\x00\x00hello", True, RSV1)],
    "data-after-final-block": _after_final_block(),
    "corrupt-second-fragment": _corrupt_second_fragment(),
    "invalid-utf8-inside": _invalid_utf8_inside(),
}


@pytest.mark.parametrize("case", list(CORRUPT))
async def test_corrupt_compressed_data_gets_1007(case: str) -> None:
    async with (serving(Echo, compression=DeflateSettings()) as port, peer(port) as p):
        assert await p.echo(text(1000))
        for opcode, payload, fin, rsv in CORRUPT[case]:
            await p.send(opcode, payload, fin=fin, rsv=rsv)
        await p.expect_close(1007)


async def test_corrupt_webkit_frame_gets_1007() -> None:
    async with (serving(Echo, compression=DeflateSettings()) as port,
                peer(port, offer=WEBKIT) as p):
        await p.send(BINARY, p.deflate(text(500)), fin=False, rsv=RSV1)
        await p.send(CONTINUATION, b"\xff\xff\xff\xff", rsv=RSV1)
        await p.expect_close(1007)


RSV_MISUSE = {
    # RFC 7692 6: not on "non-first fragments of a data message".
    "rsv1-on-continuation": lambda p: [
        (TEXT, p.deflate(text(300)), False, RSV1), (CONTINUATION, p.deflate(b"more"), True, RSV1)
    ],
    "rsv1-on-uncompressed-message-continuation": lambda p: [
        (TEXT, b"plain ", False, 0), (CONTINUATION, p.deflate(b"then compressed"), True, RSV1)
    ],
    # ... nor on control frames.
    "rsv1-on-ping": lambda p: [(PING, b"", True, RSV1)],
    "rsv1-on-close": lambda p: [(CLOSE, struct.pack("!H", 1000), True, RSV1)],
    # RSV2 and RSV3 mean nothing with permessage-deflate (RFC 6455 5.2).
    "rsv2": lambda p: [(BINARY, b"x", True, RSV2)],
    "rsv3-with-rsv1": lambda p: [(BINARY, p.deflate(b"x"), True, RSV1 | RSV3)],
}


@pytest.mark.parametrize("case", list(RSV_MISUSE))
async def test_rsv_bits_where_rfc_7692_forbids_them_get_1002(case: str) -> None:
    async with serving(Echo, compression=DeflateSettings()) as port, peer(port) as p:
        assert await p.echo(text(1000))
        for opcode, payload, fin, rsv in RSV_MISUSE[case](p):
            await p.send(opcode, payload, fin=fin, rsv=rsv)
        await p.expect_close(1002)


# -- per connection: Accept(compress=...) and route options ------------------------------------


class AcceptCompressed(Echo):
    def upgrade(self, request: Request) -> Accept:
        return Accept(compress=True)


class AcceptUncompressed(Echo):
    def upgrade(self, request: Request) -> Accept:
        return Accept(compress=False)


class AcceptCustom(Echo):
    def upgrade(self, request: Request) -> Accept:
        return Accept(compress=DeflateSettings(server_no_context_takeover=True,
                                               server_max_window_bits=10))


def routes() -> corral.Router:
    return (corral.Router()
            .websocket("/on", AcceptCompressed)
            .websocket("/off", AcceptUncompressed)
            .websocket("/custom", AcceptCustom)
            .websocket("/route", Echo, options={"compression": DeflateSettings(
                client_max_window_bits=9)})
            .websocket("/plain", Echo))


# server compression -> {path: expected answer to "permessage-deflate; client_max_window_bits"}
PER_ROUTE = {
    "off": {
        "/on": f"{PMD}; server_max_window_bits=12; client_max_window_bits=12",
        "/off": None,
        "/custom": f"{PMD}; server_no_context_takeover; server_max_window_bits=10;"
                   " client_max_window_bits=12",
        "/route": f"{PMD}; server_max_window_bits=12; client_max_window_bits=9",
        "/plain": None,
    },
    "on": {
        "/on": f"{PMD}; client_max_window_bits=12",
        "/off": None,
        "/custom": f"{PMD}; server_no_context_takeover; server_max_window_bits=10;"
                   " client_max_window_bits=12",
        "/route": f"{PMD}; server_max_window_bits=12; client_max_window_bits=9",
        "/plain": f"{PMD}; client_max_window_bits=12",
    },
}


@pytest.mark.parametrize("server_compression", list(PER_ROUTE))
async def test_compression_decided_per_route_and_per_accept(server_compression: str) -> None:
    """Accept(compress=True) uses the route's or server's settings (or the defaults), a
    DeflateSettings its own, False none; a route's options apply to its connections only."""
    settings = (DeflateSettings(server_max_window_bits=15) if server_compression == "on"
                else None)
    async with serving(routes(), compression=settings) as port:
        for path, expected in PER_ROUTE[server_compression].items():
            async with peer(port, path, f"{PMD}; client_max_window_bits") as p:
                assert p.extension == expected, path
                data = text(4096)
                assert await p.echo(data, compress=expected is not None) == (
                    expected is not None), path
                assert await p.echo(data, compress=expected is not None) == (
                    expected is not None), path
                await p.close()


# -- per message: Deflate, set_compression, send(compress=False), threshold --------------------


class Switches(Handler):
    """Echo; a message's prefix flips compression first."""

    extensions: tuple[str, ...] = ()

    def on_message(self, ws: WebSocket, message: str | bytes) -> Any:
        assert isinstance(message, str)
        command = message.partition(":")[0]
        Switches.extensions = ws.extensions
        if command == "deflate-off":
            return [Deflate(False), Text(message)]
        if command == "deflate-on":
            return [Deflate(True), Text(message)]
        if command == "method-off":
            ws.set_compression(False)
        elif command == "method-on":
            ws.set_compression(True)
        elif command == "uncompressed":
            ws.send(message, compress=False)
            return None
        elif command == "fragments":
            return [Fragment(message), Fragment(message), Fragment(message, last=True)]
        elif command == "small-first":
            return [Fragment("tiny"), Fragment(message, last=True)]
        return Text(message)


# (message prefix, whether its echo is compressed, whether we send it compressed)
SWITCH_SEQUENCE = [
    ("echo", True, True),
    ("deflate-off", False, True),
    ("echo", False, True),  # the server still inflates what it receives
    ("echo", False, False),
    ("deflate-on", True, False),
    ("echo", True, True),  # the window runs on from before the pause
    ("method-off", False, True),
    ("echo", False, True),
    ("method-on", True, True),
    ("uncompressed", False, True),  # one message only
    ("echo", True, True),
]


@pytest.mark.parametrize("offer", [PMD, WEBKIT])
async def test_deflate_command_set_compression_and_send_compress_false(offer: str) -> None:
    async with (serving(Switches, compression=DeflateSettings()) as port,
                peer(port, offer=offer) as p):
        assert p.extension is not None
        for prefix, compressed, send_compressed in SWITCH_SEQUENCE:
            message = f"{prefix}:".encode() + text(2000)
            if send_compressed:
                await p.send_compressed(TEXT, message)
            else:
                await p.send(TEXT, message)
            opcode, data, rsvs = await p.message()
            assert (opcode, data) == (TEXT, message), prefix
            assert rsvs == [RSV1 if compressed else 0], prefix
            # Turning compression off does not undo the negotiation.
            assert Switches.extensions == (p.extension.split(";")[0],)
        await p.close()


@pytest.mark.parametrize("offer", [PMD, WEBKIT])
async def test_threshold_sends_short_messages_uncompressed(offer: str) -> None:
    async with (serving(Echo, compression=DeflateSettings(threshold=100)) as port,
                peer(port, offer=offer) as p):
        for size in (0, 1, 99, 100, 101, 5000, 99, 100):
            assert await p.echo(text(size)) == (size >= 100), size
        await p.close()


async def test_server_fragments_compressed_rsv1_on_the_first_only() -> None:
    """permessage-deflate: one compressed DEFLATE stream across the fragments (RSV1 on the
    first); whether a message is compressed is decided on its first fragment."""
    async with (serving(Switches, compression=DeflateSettings()) as port, peer(port) as p):
        message = b"fragments:" + text(3000)
        await p.send(TEXT, message)
        assert await p.message() == (TEXT, message * 3, [RSV1, 0, 0])
        message = b"small-first:" + text(3000)
        await p.send(TEXT, message)
        assert await p.message() == (TEXT, b"tiny" + message, [0, 0])
        await p.close()


async def test_webkit_server_fragments_each_compressed() -> None:
    """x-webkit-deflate-frame: each frame is compressed on its own (RSV1 on each), and the
    threshold applies to each frame."""
    async with (serving(Switches, compression=DeflateSettings()) as port,
                peer(port, offer=WEBKIT) as p):
        message = b"fragments:" + text(3000)
        await p.send(TEXT, message)
        assert await p.message() == (TEXT, message * 3, [RSV1, RSV1, RSV1])
        message = b"small-first:" + text(3000)
        await p.send(TEXT, message)
        assert await p.message() == (TEXT, b"tiny" + message, [0, RSV1])
        await p.close()
