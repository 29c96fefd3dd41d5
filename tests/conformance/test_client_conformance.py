"""corral's client, RFC 6455 rule by rule, against a raw server written here.

The server answers the opening handshake by hand and then writes exact frame bytes, built in
this file (not with corral's codec), so a bug shared by corral's reader and writer cannot
hide. It reads what the client sends back as raw frames too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import pytest

import corral
from corral import (
    AsyncWebSocket,
    CloseKind,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidResponse,
    InvalidStatus,
    InvalidURI,
    NegotiationError,
)

pytestmark = pytest.mark.timeout(10)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STEP = 2.0  # the longest the raw server waits for any one thing from the client

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


# -- the raw server ----------------------------------------------------------------------------


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """One frame's bytes; ``length`` overrides the declared payload length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    if mask is not None:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def close_frame(code: int | None = 1000, reason: str = "") -> bytes:
    payload = b"" if code is None else code.to_bytes(2, "big") + reason.encode()
    return frame(CLOSE, payload)


class Received(NamedTuple):
    fin: bool
    rsv: int
    opcode: int
    mask: bytes | None
    payload: bytes  # unmasked

    @property
    def close(self) -> tuple[int, str] | None:
        if len(self.payload) < 2:
            return None
        return int.from_bytes(self.payload[:2], "big"), self.payload[2:].decode()


async def read_frame(reader: asyncio.StreamReader) -> Received:
    async def read() -> Received:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        mask = await reader.readexactly(4) if b1 & 0x80 else None
        data = await reader.readexactly(n)
        if mask is not None:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        return Received(bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F, mask, data)

    return await asyncio.wait_for(read(), STEP)


async def read_close(reader: asyncio.StreamReader) -> tuple[int, str] | None:
    """The client's close frame (skipping anything before it); asserts it is masked."""
    while True:
        received = await read_frame(reader)
        if received.opcode == CLOSE:
            assert received.mask is not None, "client frames must be masked (5.3)"
            return received.close


async def assert_eof(reader: asyncio.StreamReader, within: float = STEP) -> None:
    """The client closes TCP within ``within`` seconds, sending nothing more."""
    assert await asyncio.wait_for(reader.read(), within) == b""


async def assert_still_open(reader: asyncio.StreamReader, during: float = 0.3) -> None:
    """The client neither sends anything nor closes TCP for ``during`` seconds."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), during)


class Request(NamedTuple):
    line: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


async def read_request(reader: asyncio.StreamReader) -> Request:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP)
    line, *fields = head.decode("latin-1").split("\r\n")[:-2]
    headers = []
    for field in fields:
        name, _, value = field.partition(":")
        headers.append((name, value.strip()))
    return Request(line, headers)


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def response_101(request: Request, extra: Sequence[str] = (), accept: str | None = None) -> bytes:
    key = request.get("Sec-WebSocket-Key") or ""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept if accept is not None else accept_for(key)}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Request], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[str]:
    """Serve one connection with ``script`` (after reading the request); its assertion
    errors are raised when the block ends. The script writes the handshake answer."""
    outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer, await read_request(reader))
        except BaseException as exc:
            if not outcome.done():
                outcome.set_exception(exc)
            raise
        else:
            if not outcome.done():
                outcome.set_result(None)
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/chat?room=1"
        await asyncio.wait_for(outcome, 2 * STEP)
    finally:
        server.close()


async def open_client(url: str, **kwargs: object) -> AsyncWebSocket:
    ws = await corral.connect(url, open_timeout=STEP, **kwargs)  # type: ignore[arg-type]
    assert isinstance(ws, AsyncWebSocket)
    return ws


# -- framing: what the client sends -------------------------------------------------------------


async def test_5_3_every_client_frame_is_masked_with_a_fresh_key() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request))
        frames = [await read_frame(reader) for _ in range(4)]
        assert [(f.opcode, f.fin, f.rsv) for f in frames] == [
            (TEXT, True, 0), (TEXT, True, 0), (BINARY, True, 0), (PING, True, 0)]
        assert [f.payload for f in frames] == [b"one", "twö".encode(), b"\x00\xff", b"p"]
        masks = [f.mask for f in frames]
        assert None not in masks
        assert len(set(masks)) == len(masks), "a masking key was reused"
        writer.write(close_frame())
        assert await read_close(reader) == (1000, "")

    async with raw_server(script) as url:
        ws = await open_client(url)
        await ws.send("one")
        await ws.send("twö")
        await ws.send(b"\x00\xff")
        await ws.ping(b"p")
        await ws.wait_closed()


async def test_5_3_large_client_frames_are_masked() -> None:
    data = bytes(range(256)) * 400  # 102400 bytes: the 64-bit length form

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request))
        first = await read_frame(reader)
        second = await read_frame(reader)
        assert first.mask is not None and second.mask is not None
        assert first.payload == data[:300]  # the 16-bit length form
        assert second.payload == data
        writer.write(close_frame())
        await read_close(reader)

    async with raw_server(script) as url:
        ws = await open_client(url)
        await ws.send(data[:300])
        await ws.send(data)
        await ws.wait_closed()


async def test_4_1_opening_handshake_request() -> None:
    keys: list[str] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        assert request.line == "GET /chat?room=1 HTTP/1.1"
        assert request.get("Host") == f"127.0.0.1:{port}"
        assert (request.get("Upgrade") or "").lower() == "websocket"
        assert "upgrade" in (request.get("Connection") or "").lower()
        assert request.get("Sec-WebSocket-Version") == "13"
        assert request.get("Sec-WebSocket-Protocol") == "chat, superchat"
        assert request.get("Origin") == "http://example.com"
        assert request.get("X-Extra") == "yes"
        # RFC 7692 5: the default offer is permessage-deflate with client_max_window_bits.
        offer = request.get("Sec-WebSocket-Extensions") or ""
        assert offer.startswith("permessage-deflate") and "client_max_window_bits" in offer
        key = request.get("Sec-WebSocket-Key") or ""
        assert len(base64.b64decode(key, validate=True)) == 16
        keys.append(key)
        writer.write(response_101(request, ["Sec-WebSocket-Protocol: superchat"]))
        writer.write(close_frame())
        await read_close(reader)

    for _ in range(2):
        async with raw_server(script) as url:
            port = int(url.split(":")[2].split("/")[0])
            ws = await open_client(url, subprotocols=["chat", "superchat"],
                                   origin="http://example.com", headers=[("X-Extra", "yes")])
            assert ws.subprotocol == "superchat"
            await ws.wait_closed()
    assert keys[0] != keys[1], "Sec-WebSocket-Key must be fresh for each connection"


# -- framing: what the client accepts ------------------------------------------------------------


async def expect_failure(server_bytes: bytes, code: int, *, same_packet: bool = False,
                         **options: object) -> None:
    """The server sends ``server_bytes``; the client must fail the connection with ``code``:
    a masked close frame with that code, then the TCP connection closed (7.1.7).

    The bytes go out once the client said it is open, or with ``same_packet`` right behind
    the 101 (the client then finds them after the response head).
    """

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        if same_packet:
            writer.write(response_101(request) + server_bytes)
        else:
            writer.write(response_101(request))
            ready = await read_frame(reader)
            assert (ready.opcode, ready.payload) == (TEXT, b"ready")
            writer.write(server_bytes)
        closed = await read_close(reader)
        assert closed is not None and closed[0] == code
        await assert_eof(reader)

    async with raw_server(script) as url:
        ws = await open_client(url, **options)
        if not same_packet:
            await ws.send("ready")
        with pytest.raises(ConnectionClosedError) as info:
            while True:
                await asyncio.wait_for(ws.recv(), STEP)
        assert info.value.code == code
        why = await ws.wait_closed()
        assert why.kind is CloseKind.PROTOCOL_ERROR
        assert why.code == code


@pytest.mark.parametrize("same_packet", [False, True])
async def test_5_1_masked_server_frame_fails_with_1002(same_packet: bool) -> None:
    masked = frame(TEXT, b"hello", mask=b"\x01\x02\x03\x04")
    await expect_failure(masked, 1002, same_packet=same_packet)


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
async def test_5_2_reserved_bits_fail_with_1002(rsv: int) -> None:
    await expect_failure(frame(TEXT, b"hello", rsv=rsv), 1002)


@pytest.mark.parametrize("rsv", [0x40, 0x10])
async def test_5_2_reserved_bits_on_control_frame_fail_with_1002(rsv: int) -> None:
    await expect_failure(frame(PING, b"x", rsv=rsv), 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
async def test_5_2_reserved_opcode_fails_with_1002(opcode: int) -> None:
    await expect_failure(frame(opcode, b"x"), 1002)


async def test_5_2_reserved_opcode_after_a_valid_message_fails_with_1002() -> None:
    await expect_failure(frame(TEXT, b"ok") + frame(0xB), 1002)


async def test_5_2_64_bit_length_with_high_bit_fails_with_1002() -> None:
    bad = bytes([0x82, 127]) + (1 << 63 | 5).to_bytes(8, "big") + b"hello"
    await expect_failure(bad, 1002)


@pytest.mark.parametrize(
    "bad",
    [
        frame(PING, b"x" * 126),  # 5.5: control frames carry at most 125 bytes
        frame(PING, b"x", fin=False),  # 5.5: control frames are never fragmented
        frame(CONTINUATION, b"x"),  # 5.4: nothing to continue
        frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"),  # 5.4: no interleaved messages
        frame(BINARY, b"a", fin=False) + frame(BINARY, b"b"),
        frame(CLOSE, b"\x03"),  # 5.5.1: a 1-byte close payload
        frame(CLOSE, (1005).to_bytes(2, "big")),  # 7.4.1: 1005 never goes on the wire
        frame(CLOSE, (999).to_bytes(2, "big")),  # 7.4.2: not a valid code
        frame(CLOSE, (2000).to_bytes(2, "big")),
    ],
    ids=["ping-too-long", "fragmented-ping", "lone-continuation", "interleaved-text",
         "interleaved-binary", "close-1-byte", "close-1005", "close-999", "close-2000"],
)
async def test_5_framing_errors_fail_with_1002(bad: bytes) -> None:
    await expect_failure(bad, 1002)


INVALID_UTF8 = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"


@pytest.mark.parametrize(
    "bad",
    [
        frame(TEXT, INVALID_UTF8),
        frame(TEXT, b"\xff"),
        frame(TEXT, b"\xce\xba", fin=False) + frame(CONTINUATION, b"\xc0\xaf"),
        frame(TEXT, b"ok \xe2\x82", fin=True),  # truncated at the end of the message
        frame(CLOSE, (1000).to_bytes(2, "big") + b"\xff"),  # close reason (5.5.1)
    ],
    ids=["surrogate", "ff", "second-fragment", "truncated", "close-reason"],
)
async def test_8_1_invalid_utf8_fails_with_1007(bad: bytes) -> None:
    await expect_failure(bad, 1007)


async def test_10_4_message_over_limit_fails_with_1009() -> None:
    # Refused on the declared length, before the payload arrives.
    await expect_failure(frame(BINARY, length=2048), 1009, max_message_size=1024)


async def test_10_4_fragmented_message_over_limit_fails_with_1009() -> None:
    pieces = frame(TEXT, b"a" * 600, fin=False) + frame(CONTINUATION, b"a" * 600)
    await expect_failure(pieces, 1009, max_message_size=1024)


async def test_5_4_fragmented_messages_are_reassembled() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        euro = "€".encode()
        writer.write(response_101(request))
        # A text message in three fragments, a ping between them, "€" split across two.
        writer.write(frame(TEXT, b"Hel", fin=False) + frame(CONTINUATION, b"lo " + euro[:1],
                                                             fin=False))
        writer.write(frame(PING, b"mid"))
        writer.write(frame(CONTINUATION, euro[1:] + b"!"))
        # Binary in fragments, some empty.
        writer.write(frame(BINARY, b"", fin=False) + frame(CONTINUATION, b"\x00", fin=False)
                     + frame(CONTINUATION, b"", fin=False) + frame(CONTINUATION, b"\xff"))
        # An empty text message in two empty fragments, then a single-frame message.
        writer.write(frame(TEXT, b"", fin=False) + frame(CONTINUATION, b"") + frame(TEXT, b"end"))
        pong = await read_frame(reader)
        assert (pong.opcode, pong.payload) == (PONG, b"mid")
        assert pong.mask is not None
        echoed = [await read_frame(reader) for _ in range(4)]
        assert [(f.opcode, f.payload) for f in echoed] == [
            (TEXT, "Hello €!".encode()), (BINARY, b"\x00\xff"), (TEXT, b""), (TEXT, b"end")]
        writer.write(close_frame())
        assert await read_close(reader) == (1000, "")

    async with raw_server(script) as url:
        ws = await open_client(url)
        for expected in ["Hello €!", b"\x00\xff", "", "end"]:
            message = await asyncio.wait_for(ws.recv(), STEP)
            assert message == expected
            assert type(message) is type(expected)
            await ws.send(message)
        await ws.wait_closed()


def broken_fragments() -> Iterator[str]:
    yield "a"
    yield "b"
    raise RuntimeError("the source of the fragments failed")


@pytest.mark.parametrize(
    ("fragments", "error"),
    [(["a", b"b"], TypeError), (broken_fragments(), RuntimeError)],
    ids=["str-then-bytes", "iterable-raises"],
)
async def test_5_4_fragmented_send_cut_short_closes_with_1011(
    fragments: Iterable[str | bytes], error: type[Exception]
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request))
        first = await read_frame(reader)
        assert (first.opcode, first.fin, first.payload) == (TEXT, False, b"a")
        # The message cannot be finished: the client closes instead of leaving it open.
        assert await read_close(reader) == (1011, "")
        writer.write(close_frame(1011))
        writer.close()

    async with raw_server(script) as url:
        ws = await open_client(url)
        with pytest.raises(error):
            await ws.send_fragments(fragments)
        await asyncio.wait_for(ws.wait_closed(), STEP)
        with pytest.raises(corral.ConnectionClosed):
            await ws.send("after")


async def test_5_5_2_ping_is_answered_with_a_masked_pong() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request))
        for payload in (b"ping payload", b"", bytes(range(125))):
            writer.write(frame(PING, payload))
            pong = await read_frame(reader)
            assert (pong.opcode, pong.fin, pong.rsv, pong.payload) == (PONG, True, 0, payload)
            assert pong.mask is not None
        # An unsolicited pong is allowed (5.5.3) and needs no answer.
        writer.write(frame(PONG, b"unsolicited") + frame(TEXT, b"after"))
        echoed = await read_frame(reader)
        assert (echoed.opcode, echoed.payload) == (TEXT, b"after")
        writer.write(close_frame())
        await read_close(reader)

    async with raw_server(script) as url:
        ws = await open_client(url)
        await ws.send(await asyncio.wait_for(ws.recv(), STEP))
        await ws.wait_closed()


async def test_5_5_3_pong_resolves_the_clients_ping() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request))
        ping = await read_frame(reader)
        assert (ping.opcode, ping.payload) == (PING, b"are you there")
        assert ping.mask is not None
        writer.write(frame(PONG, ping.payload))
        writer.write(close_frame())
        await read_close(reader)

    async with raw_server(script) as url:
        ws = await open_client(url)
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, STEP)
        await ws.wait_closed()


async def test_first_frames_in_the_same_packet_as_the_101() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request) + frame(TEXT, b"early") + frame(BINARY, b"bird"))
        await read_frame(reader)
        writer.write(close_frame())
        await read_close(reader)

    async with raw_server(script) as url:
        ws = await open_client(url)
        assert await asyncio.wait_for(ws.recv(), STEP) == "early"
        assert await asyncio.wait_for(ws.recv(), STEP) == b"bird"
        await ws.send("ok")
        await ws.wait_closed()


# -- the closing handshake -----------------------------------------------------------------------


async def test_7_1_server_close_is_echoed_and_the_server_closes_tcp_first() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request))
        writer.write(close_frame(1000, "bye"))
        assert await read_close(reader) == (1000, "")
        # 7.1.1: "the server MUST close the underlying TCP connection immediately; the
        # client SHOULD wait for the server to close the connection".
        await assert_still_open(reader)
        writer.close()

    async with raw_server(script) as url:
        ws = await open_client(url)
        with pytest.raises(ConnectionClosedOK) as info:
            await asyncio.wait_for(ws.recv(), STEP)
        assert (info.value.code, info.value.reason) == (1000, "bye")
        why = await asyncio.wait_for(ws.wait_closed(), STEP)
        assert (why.kind, why.code, why.reason) == (CloseKind.REMOTE, 1000, "bye")


@pytest.mark.parametrize(("code", "reason"), [(1001, "going away"), (4000, "custom é")])
async def test_7_1_server_close_code_is_echoed(code: int, reason: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request) + close_frame(code, reason))
        closed = await read_close(reader)
        assert closed is not None and closed[0] == code
        writer.close()

    async with raw_server(script) as url:
        ws = await open_client(url)
        with pytest.raises(corral.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), STEP)
        assert (info.value.code, info.value.reason) == (code, reason)
        await asyncio.wait_for(ws.wait_closed(), STEP)


async def test_5_5_1_empty_close_is_answered_with_an_empty_close() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request) + close_frame(None))
        answer = await read_frame(reader)
        assert (answer.opcode, answer.payload) == (CLOSE, b"")
        assert answer.mask is not None
        writer.close()

    async with raw_server(script) as url:
        ws = await open_client(url)
        with pytest.raises(corral.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), STEP)
        assert info.value.code == 1005  # 7.1.5: no status code in the close frame
        await asyncio.wait_for(ws.wait_closed(), STEP)


async def test_5_5_1_nothing_is_processed_after_a_close_frame() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request) + close_frame(1000) + frame(TEXT, b"late")
                     + frame(PING, b"late"))
        assert await read_close(reader) == (1000, "")
        await assert_still_open(reader, 0.2)  # no pong, no data
        writer.close()

    async with raw_server(script) as url:
        ws = await open_client(url)
        with pytest.raises(ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), STEP)


async def test_7_1_5_sending_while_closing_reports_the_close_code() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request) + frame(TEXT, b"hi") + close_frame(1000, "bye"))
        assert await read_close(reader) == (1000, "")
        await assert_still_open(reader, 0.2)  # the client's sends put nothing on the wire
        writer.close()

    async with raw_server(script) as url:
        ws = await open_client(url)
        assert await asyncio.wait_for(ws.recv(), STEP) == "hi"
        while ws.open:  # the close frame is processed, the TCP connection still open
            await asyncio.sleep(0.01)
        for attempt in (ws.send("echo"), ws.ping(b"x"), ws.send_fragments(["a", "b"])):
            with pytest.raises(ConnectionClosedOK) as info:
                await attempt
            assert (info.value.code, info.value.reason) == (1000, "bye")
        await asyncio.wait_for(ws.wait_closed(), STEP)


async def test_7_1_1_client_closes_tcp_when_the_server_does_not() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request) + close_frame(1000))
        assert await read_close(reader) == (1000, "")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await assert_eof(reader)  # the server never closes: the close timeout does
        assert 0.2 < loop.time() - started < 1.5

    async with raw_server(script) as url:
        ws = await open_client(url, close_timeout=0.5)
        with pytest.raises(ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), STEP)
        why = await asyncio.wait_for(ws.wait_closed(), STEP)
        assert why.code == 1000


async def test_7_1_2_client_initiated_close() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request))
        assert await read_close(reader) == (4000, "done here")
        await assert_still_open(reader, 0.2)  # the client waits for the answer
        writer.write(close_frame(4000, "done here"))
        await assert_still_open(reader, 0.2)  # and then for the server to close TCP
        writer.close()

    async with raw_server(script) as url:
        ws = await open_client(url)
        await asyncio.wait_for(ws.close(4000, "done here"), STEP)
        assert ws.close_reason is not None
        assert ws.close_reason.kind is CloseKind.NORMAL
        assert ws.close_code == 4000
        with pytest.raises(ConnectionClosedError):
            await ws.send("too late")


async def test_7_1_2_client_close_without_an_answer_times_out() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request))
        assert await read_close(reader) == (1000, "")
        await assert_eof(reader)  # no answer: the client gives up after its close timeout

    async with raw_server(script) as url:
        ws = await open_client(url, close_timeout=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(ws.close(), STEP)
        assert loop.time() - started < 1.5
        assert ws.close_reason is not None
        assert ws.close_reason.kind is CloseKind.TIMEOUT
        assert ws.close_code == 1006


async def test_7_1_5_tcp_closed_without_close_frame_is_1006() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request) + frame(TEXT, b"last words"))
        writer.close()

    async with raw_server(script) as url:
        ws = await open_client(url)
        assert await asyncio.wait_for(ws.recv(), STEP) == "last words"
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), STEP)
        assert info.value.code == 1006
        why = await ws.wait_closed()
        assert why.kind is CloseKind.LOST


# -- the opening handshake: validating the server's answer (4.1) ----------------------------------


async def handshake_error(answer: Callable[[Request], bytes], **options: object) -> Exception:
    """Connect to a server answering ``answer(request)``; return what connect() raised."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(answer(request))
        await assert_eof(reader)  # the client gives up on the connection

    async with raw_server(script) as url:
        with pytest.raises(corral.CorralError) as info:
            await open_client(url, **options)
    return info.value


async def test_4_1_wrong_accept_is_invalid_response() -> None:
    error = await handshake_error(lambda r: response_101(r, accept=accept_for("x" * 24)))
    assert type(error) is InvalidResponse


async def test_4_1_missing_accept_is_invalid_response() -> None:
    def answer(request: Request) -> bytes:
        return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n")

    assert type(await handshake_error(answer)) is InvalidResponse


async def test_4_1_missing_upgrade_is_invalid_response() -> None:
    def answer(request: Request) -> bytes:
        key = request.get("Sec-WebSocket-Key") or ""
        return (f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n").encode()

    assert type(await handshake_error(answer)) is InvalidResponse


async def test_4_1_wrong_upgrade_is_invalid_response() -> None:
    def answer(request: Request) -> bytes:
        key = request.get("Sec-WebSocket-Key") or ""
        return (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n").encode()

    assert type(await handshake_error(answer)) is InvalidResponse


async def test_4_1_missing_connection_upgrade_is_invalid_response() -> None:
    def answer(request: Request) -> bytes:
        key = request.get("Sec-WebSocket-Key") or ""
        return (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n").encode()

    assert type(await handshake_error(answer)) is InvalidResponse


@pytest.mark.parametrize("status", [200, 301, 403, 404, 500])
async def test_4_1_non_101_is_invalid_status(status: int) -> None:
    def answer(request: Request) -> bytes:
        return (f"HTTP/1.1 {status} Whatever\r\nContent-Length: 5\r\nX-Why: test\r\n\r\n"
                "nope\n").encode()

    error = await handshake_error(answer)
    assert isinstance(error, InvalidStatus)
    assert error.status == status
    assert error.body == b"nope\n"
    assert ("X-Why", "test") in error.headers


async def test_4_1_non_101_without_length_ends_with_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(b"HTTP/1.1 503 Busy\r\n\r\ntry later")
        writer.close()

    async with raw_server(script) as url:
        with pytest.raises(InvalidStatus) as info:
            await open_client(url)
    assert info.value.status == 503
    assert info.value.body == b"try later"


async def test_4_1_connection_closed_during_handshake_is_invalid_response() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
        writer.close()

    async with raw_server(script) as url:
        with pytest.raises(InvalidResponse):
            await open_client(url)


async def test_4_1_unrequested_subprotocol_is_negotiation_error() -> None:
    error = await handshake_error(lambda r: response_101(r, ["Sec-WebSocket-Protocol: chat"]))
    assert isinstance(error, NegotiationError)


async def test_4_1_subprotocol_not_among_those_offered_is_negotiation_error() -> None:
    error = await handshake_error(lambda r: response_101(r, ["Sec-WebSocket-Protocol: other"]),
                                  subprotocols=["chat", "superchat"])
    assert isinstance(error, NegotiationError)


async def test_4_1_server_may_decline_every_subprotocol() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request) + close_frame())
        await read_close(reader)

    async with raw_server(script) as url:
        ws = await open_client(url, subprotocols=["chat"])
        assert ws.subprotocol is None
        await ws.wait_closed()


@pytest.mark.parametrize("extension", ["permessage-deflate", "x-webkit-deflate-frame",
                                       "permessage-deflate; client_max_window_bits=10"])
async def test_9_1_unrequested_extension_fails_with_1010(extension: str) -> None:
    """Nothing offered (compression=None): any extension in the answer fails the connection,
    with a close frame 1010 since the 101 made it a WebSocket connection (RFC 6455 4.1)."""
    await _expect_negotiation_failure(extension, compression=None)


@pytest.mark.parametrize("extension", [
    "x-webkit-deflate-frame",  # not offered
    "permessage-deflate; client_max_window_bits=16",  # out of range (RFC 7692 7.1.2.2)
    "permessage-deflate; client_max_window_bits",  # a response must give a value (7.1.2.2)
    "permessage-deflate; server_max_window_bits=16",  # out of range (7.1.2.1)
    "permessage-deflate; foo=1",  # unknown parameter (7.1)
    "permessage-deflate, permessage-deflate",  # accepted twice
])
async def test_7692_7_1_unacceptable_answer_fails_with_1010(extension: str) -> None:
    await _expect_negotiation_failure(extension)


async def _expect_negotiation_failure(extension: str, **options: object) -> None:
    closes: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: Request) -> None:
        writer.write(response_101(request, [f"Sec-WebSocket-Extensions: {extension}"]))
        header = await reader.readexactly(2)
        assert header[0] == 0x88 and header[1] & 0x80  # a masked close frame
        mask = await reader.readexactly(4)
        payload = await reader.readexactly(header[1] & 0x7F)
        closes.append(bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        await assert_eof(reader)

    async with raw_server(script) as url:
        with pytest.raises(corral.NegotiationError):
            await open_client(url, **options)
    assert closes == [(1010).to_bytes(2, "big")]


# -- URLs (3) --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "https://127.0.0.1/",
        "ftp://127.0.0.1/",
        "ws://127.0.0.1/#fragment",
        "wss://127.0.0.1/path#",
        "ws:///no-host",
        "ws://127.0.0.1:notaport/",
        "127.0.0.1:8000",
    ],
)
async def test_3_invalid_urls_are_invalid_uri(url: str) -> None:
    with pytest.raises(InvalidURI):
        await corral.connect(url)
