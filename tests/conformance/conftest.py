"""Fixtures of the conformance suite: a corral echo server and a raw RFC 6455 client.

The client writes exact bytes over TCP (the opening handshake, then masked frames built here
by hand, malformed ones included) and reads the server's frames back one at a time, so a test
can check each opcode, payload and close code, and that the server drops the TCP connection
when RFC 6455 says it must. Nothing of corral's client side is used: a bug shared by both
sides of corral could not hide a failure.

Case numbers in the test names are those of the Autobahn|Testsuite (sections 1-7) or of the
RFC; section 10 is corral's own: size limits and framing errors Autobahn does not cover.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import pytest

import corral
from corral.examples.echo import Echo

# Opcodes (section 5.2), spelled out here rather than taken from corral.
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

MAX_MESSAGE_SIZE = 16 * 2**20 + 1024
TIMEOUT = 2.0  # the longest wait for an answer the server owes us
QUIET = 0.15  # how long "nothing arrives" is watched for

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- building client frames by hand --------------------------------------------------------------


def mask_payload(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the 4-byte masking ``key`` (RFC 6455 section 5.3)."""
    if not data:
        return b""
    stream = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(
        len(data), "big"
    )


def frame_header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = None,
    length_bytes: int | None = None,
) -> bytes:
    """A frame header (section 5.2). ``rsv`` is the three RSV bits as a number, RSV1 = 4,
    RSV2 = 2, RSV3 = 1 (Autobahn's notation); ``key`` None leaves the frame unmasked;
    ``length_bytes`` (0, 2 or 8) forces the length encoding, minimal by default."""
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode & 0x0F
    mbit = 0x80 if key is not None else 0
    if length_bytes is None:
        length_bytes = 0 if length < 126 else 2 if length < 65536 else 8
    if length_bytes == 0:
        head = bytes((b0, mbit | length))
    elif length_bytes == 2:
        head = struct.pack("!BBH", b0, mbit | 126, length)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, length)
    return head + (key or b"")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
) -> bytes:
    """A whole client frame, masked with a fresh random key unless ``masked`` is False."""
    key = os.urandom(4) if masked else None
    header = frame_header(opcode, len(payload), fin=fin, rsv=rsv, key=key)
    return header + (mask_payload(payload, key) if key is not None else payload)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def chops(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- reading server frames -----------------------------------------------------------------------


class ServerFrame(NamedTuple):
    fin: bool
    rsv: int
    opcode: int
    payload: bytes


class RawClient:
    """One TCP connection to the server, upgraded by hand, speaking frames by hand.

    A reader task moves every received byte into the client's own buffer as soon as it
    arrives, so a close frame already received is never lost to a reset that follows it.
    The frame builders ride along as static methods, so test modules import nothing from
    this conftest (pytest does not make it importable).
    """

    frame = staticmethod(frame)
    frame_header = staticmethod(frame_header)
    mask_payload = staticmethod(mask_payload)
    close_payload = staticmethod(close_payload)
    chops = staticmethod(chops)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._buf = bytearray()
        self._eof = False
        self.reset: BaseException | None = None
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._pump())

    @classmethod
    async def connect(cls, port: int, path: str = "/") -> RawClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), TIMEOUT
        )
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET " + path.encode() + b" HTTP/1.1\r\n"
            b"Host: 127.0.0.1:" + str(port).encode() + b"\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
            b"\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101 "), lines[0]
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        # Section 4.2.2: base64(SHA-1(key + GUID)).
        expected = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        assert headers.get("sec-websocket-accept") == expected
        assert headers.get("upgrade", "").lower() == "websocket"
        return cls(reader, writer)

    async def _pump(self) -> None:
        try:
            while True:
                data = await self._reader.read(1 << 20)
                if not data:
                    break
                self._buf += data
                self._arrived.set()
        except ConnectionError as exc:
            self.reset = exc
        finally:
            self._eof = True
            self._arrived.set()

    # -- sending --

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def send_frame(
        self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0
    ) -> None:
        await self.send(frame(opcode, payload, fin=fin, rsv=rsv))

    @property
    def answered(self) -> bool:
        """The server has sent something not read yet, or closed the connection."""
        return bool(self._buf) or self._eof

    async def send_chops(self, data: bytes, size: int, *, until_answered: bool = False) -> None:
        """Write ``data`` in pieces of ``size`` bytes, one write each, yielding in between.

        ``until_answered`` stops as soon as the server has sent anything or closed (it has
        failed the connection), as Autobahn stops sending on a closed connection.
        """
        await self.send_frames(chops(data, size), until_answered=until_answered, pause=0)

    async def send_frames(
        self, frames: list[bytes], how: str = "frame_wise", *, until_answered: bool = False,
        pause: float = 0.01,
    ) -> None:
        """Write ``frames`` in one write ("one_write"), one write each ("frame_wise", with a
        short ``pause`` so each reaches the server alone) or a byte per write ("octet_wise").
        """
        if how == "one_write":
            await self.send(b"".join(frames))
            return
        if how == "octet_wise":
            frames, pause = chops(b"".join(frames), 1), 0
        for piece in frames:
            if until_answered and self.answered:
                return
            try:
                await self.send(piece)
            except ConnectionError:
                if not until_answered:
                    raise
                return
            await asyncio.sleep(pause)

    # -- receiving --

    @property
    def received(self) -> bytes:
        """Bytes received and not read yet."""
        return bytes(self._buf)

    async def _read_exactly(self, n: int, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self._buf) < n:
            if self._eof:
                raise AssertionError(
                    f"connection closed with {len(self._buf)} of {n} expected bytes"
                    f" (reset: {self.reset!r})"
                )
            self._arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {n} bytes, got {len(self._buf)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def recv_frame(self, timeout: float = TIMEOUT) -> ServerFrame:
        """Read one frame; a server frame must be unmasked and use no RSV bit (5.1, 5.2)."""
        b0, b1 = await self._read_exactly(2, timeout)
        assert not b1 & 0x80, "the server masked a frame (section 5.1 forbids it)"
        length = b1 & 0x7F
        # Section 5.2: "the minimal number of bytes MUST be used to encode the length", and
        # the most significant bit of the 64-bit form MUST be 0.
        if length == 126:
            (length,) = struct.unpack("!H", await self._read_exactly(2, timeout))
            assert length >= 126, f"16-bit length encoding used for {length} bytes"
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._read_exactly(8, timeout))
            assert 65536 <= length < 2**63, f"64-bit length encoding used for {length} bytes"
        payload = await self._read_exactly(length, timeout)
        rsv = (b0 >> 4) & 7
        assert rsv == 0, f"RSV bits {rsv:#b} set by the server with no extension negotiated"
        return ServerFrame(bool(b0 & 0x80), rsv, b0 & 0x0F, payload)

    async def recv_message(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """Read one data message, joining its fragments; control frames are not expected."""
        first = await self.recv_frame(timeout)
        assert first.opcode in (TEXT, BINARY), f"expected a data frame, got {first}"
        parts = [first.payload]
        last = first
        while not last.fin:
            last = await self.recv_frame(timeout)
            assert last.opcode == CONTINUATION, f"expected a continuation, got {last}"
            parts.append(last.payload)
        return first.opcode, b"".join(parts)

    async def expect_message(
        self, opcode: int, payload: bytes, timeout: float = TIMEOUT
    ) -> None:
        got_opcode, got = await self.recv_message(timeout)
        assert got_opcode == opcode, f"opcode {got_opcode}, expected {opcode}"
        assert len(got) == len(payload), f"{len(got)} bytes echoed, expected {len(payload)}"
        assert got == payload

    async def expect_pong(self, payload: bytes, timeout: float = TIMEOUT) -> None:
        got = await self.recv_frame(timeout)
        assert got == ServerFrame(True, 0, PONG, payload), got

    async def expect_close(
        self, code: int | None, *, timeout: float = TIMEOUT, allow_reset: bool = False
    ) -> str:
        """The next frame is a close with ``code`` (None: no payload at all), then the server
        closes TCP (7.1.1: the server closes the connection first). Returns the reason."""
        got = await self.recv_frame(timeout)
        assert got.opcode == CLOSE, f"expected a close frame, got {got}"
        assert got.fin
        if code is None:
            assert got.payload == b"", got.payload
            reason = ""
        else:
            assert len(got.payload) >= 2, got.payload
            (got_code,) = struct.unpack("!H", got.payload[:2])
            assert got_code == code, f"close code {got_code}, expected {code}"
            reason = got.payload[2:].decode("utf-8")  # section 5.5.1: the reason is UTF-8
        await self.expect_eof(timeout, allow_reset=allow_reset)
        return reason

    async def expect_eof(self, timeout: float = TIMEOUT, *, allow_reset: bool = False) -> None:
        """The server closes TCP with nothing more sent."""
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        assert done, "the server did not close the TCP connection"
        assert not self._buf, f"bytes after the last frame: {bytes(self._buf[:64])!r}"
        if not allow_reset:
            assert self.reset is None, f"connection reset instead of closed: {self.reset!r}"

    async def expect_quiet(self, delay: float = QUIET) -> None:
        """Nothing arrives for ``delay`` seconds and the connection stays open."""
        await asyncio.sleep(delay)
        assert not self._buf, f"unexpected bytes: {bytes(self._buf[:64])!r}"
        assert not self._eof, "the server closed the connection"

    async def close_handshake(self) -> None:
        """Close normally: send close 1000, get 1000 back, then EOF."""
        await self.send_frame(CLOSE, close_payload(1000))
        await self.expect_close(1000)

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


# -- fixtures ------------------------------------------------------------------------------------


class AsyncEcho(corral.Handler):
    """Echo from an ``async def`` callback: reading pauses while it runs."""

    async def on_message(self, ws: corral.WebSocket, message: str | bytes) -> None:
        await asyncio.sleep(0)
        ws.send(message)


async def echo_coroutine(ws: corral.AsyncWebSocket) -> None:
    async for message in ws:
        await ws.send(message)


HANDLER_STYLES = {"callback": Echo, "async-callback": AsyncEcho, "async-for": echo_coroutine}


@pytest.fixture(params=[*HANDLER_STYLES, "asgi-starlette"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[corral.Server]:
    """The suite runs against each handler style, and against a Starlette echo served as an
    ASGI application: they must all behave the same on the wire."""
    app: Any
    if request.param == "asgi-starlette":
        from corral.examples.starlette_echo import app
    else:
        app = corral.Router().websocket("/", HANDLER_STYLES[request.param])
    options = corral.Options(max_message_size=MAX_MESSAGE_SIZE, allowed_origins=("*",))
    srv = await corral.serve(app, "127.0.0.1", 0, options=options)
    try:
        yield srv
    finally:
        await srv.close()


Connect = Callable[[], Awaitable[RawClient]]


@pytest.fixture
async def connect(server: corral.Server) -> AsyncIterator[Connect]:
    """Open more raw connections to the server; all are closed after the test."""
    clients: list[RawClient] = []

    async def open_one() -> RawClient:
        client = await RawClient.connect(server.port)
        clients.append(client)
        return client

    try:
        yield open_one
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
async def client(connect: Connect) -> RawClient:
    return await connect()
