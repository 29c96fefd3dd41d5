"""Autobahn sections 12 and 13: permessage-deflate (RFC 7692) and x-webkit-deflate-frame on
the wire, against corral's server and then corral's client.

Nothing of corral's codec is used on this side: a raw client (and, for corral's client, a raw
server) negotiates with hand-written headers, builds its frames by hand, compresses with its
own zlib (DEFLATE up to a sync flush, minus the trailing 00 00 ff ff, RSV1 on the first frame
of a message; on every compressed frame for x-webkit-deflate-frame) and inflates what comes
back with its own zlib, with the window and the context takeover the answer allows:

- an inflater with exactly the negotiated window kept from message to message fails on a
  back-reference further than that window, so a peer compressing with a larger window than
  it agreed to is caught (every message is sent twice, text then binary, so the second
  copy's DEFLATE refers back a whole message);
- with no context takeover the inflater is new for every message (every frame, for
  x-webkit-deflate-frame), so a peer that kept its window is caught.

Autobahn 12.x/13.x echo messages of 16 bytes to 128 KiB under each offer; so do these tests
(SIZES). The case numbers in test names are Autobahn's sections.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import os
import random
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest

import corral
from corral import DeflateSettings
from corral.examples.echo import Echo

pytestmark = pytest.mark.timeout(10)

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1 = 4  # the RSV bits as a 3-bit number (Autobahn's notation): RSV1 = 4, RSV2 = 2, RSV3 = 1
TAIL = b"\x00\x00\xff\xff"  # RFC 7692 7.2.1 step 3 / 7.2.2 step 1
SIZES = [16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072]
TIMEOUT = 2.0
MAX_MESSAGE_SIZE = 2 * 2**20
THRESHOLD = 64  # DeflateSettings.threshold: corral sends shorter messages uncompressed
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

PMD = "permessage-deflate"
WEBKIT = "x-webkit-deflate-frame"
SNCT, CNCT = "server_no_context_takeover", "client_no_context_takeover"
SMWB, CMWB = "server_max_window_bits", "client_max_window_bits"

# Server settings: OPEN asks nothing of its own, so its answers show what the offer alone
# allows; DEFAULT is DeflateSettings() (12-bit windows); NCT drops both windows.
OPEN = DeflateSettings(server_max_window_bits=15, client_max_window_bits=15)
DEFAULT = DeflateSettings()
NCT = DeflateSettings(server_max_window_bits=15, client_max_window_bits=15,
                      server_no_context_takeover=True, client_no_context_takeover=True)
SETTINGS = {"open": OPEN, "default": DEFAULT, "nct": NCT}


# -- payloads ------------------------------------------------------------------------------------

_WORDS = (b"corral websocket deflate window frame message server client echo context takeover"
          b" autobahn zlib sliding lz77 huffman stored block final flush").split()


@functools.cache
def payload(size: int) -> bytes:
    """ASCII words and numbers (valid as text): compressible, with matches at every distance."""
    rng = random.Random(size)
    out = bytearray()
    while len(out) < size:
        out += rng.choice(_WORDS)
        out += b" " if rng.random() < 0.8 else b"%d\n" % rng.randrange(10**6)
    return bytes(out[:size])


# -- extension headers -------------------------------------------------------------------------

Element = tuple[str, dict[str, str | None]]


def parse_extensions(values: Sequence[str], *, answer: bool = False) -> list[Element]:
    """Sec-WebSocket-Extensions fields as (name, params); an ``answer`` never repeats a
    parameter (RFC 7692 7.1: a client fails the connection if it does). Enough for what these
    tests send and what corral answers: no quoted commas or semicolons."""
    elements: list[Element] = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            name, *params = (part.strip() for part in item.split(";"))
            found: dict[str, str | None] = {}
            for param in params:
                key, eq, val = param.partition("=")
                key = key.strip()
                assert not answer or key not in found, f"{key!r} repeated in {value!r}"
                found[key] = val.strip().strip('"') if eq else None
            elements.append((name, found))
    return elements


def element(text: str) -> Element:
    (only,) = parse_extensions([text], answer=True)
    return only


def values_of(offer: str | list[str] | None) -> list[str]:
    return [] if offer is None else [offer] if isinstance(offer, str) else list(offer)


def check_allowed(offers: list[Element], answer: Element) -> None:
    """RFC 7692 7.1: the answer accepts one of the offers and only says what it may."""
    name, params = answer
    candidates = [p for n, p in offers if n == name]
    assert candidates, f"{name} accepted but not offered"
    if name != PMD:
        return

    def fits(offer: dict[str, str | None]) -> bool:
        # 7.1.1.1: an offer with server_no_context_takeover is accepted by including it.
        if SNCT in offer and SNCT not in params:
            return False
        # 7.1.2.1: server_max_window_bits, when offered, is answered with the same or less.
        if SMWB in offer and (SMWB not in params or int(params[SMWB] or 0) > int(offer[SMWB] or 0)):
            return False
        # 7.1.2.2: client_max_window_bits only if offered, and no larger than offered.
        if CMWB in params:
            if CMWB not in offer:
                return False
            if offer[CMWB] is not None and int(params[CMWB] or 99) > int(offer[CMWB] or 0):
                return False
        return True

    assert set(params) <= {SNCT, CNCT, SMWB, CMWB}, params
    assert all(params[k] is None for k in (SNCT, CNCT) if k in params), params
    assert all(8 <= int(params[k] or 0) <= 15 for k in (SMWB, CMWB) if k in params), params
    assert any(fits(offer) for offer in candidates), f"{answer} answers none of {offers}"


# -- frames --------------------------------------------------------------------------------------


def mask(data: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte masking key (RFC 6455 5.3)."""
    if not data:
        return b""
    n = len(data)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def build_frame(opcode: int, data: bytes, *, fin: bool = True, rsv: int = 0,
                masked: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | rsv << 4 | opcode
    mbit = 0x80 if masked else 0
    n = len(data)
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not masked:
        return head + data
    key = os.urandom(4)
    return head + key + mask(data, key)


class Frame(NamedTuple):
    fin: bool
    rsv: int
    opcode: int
    payload: bytes


Out = tuple[int, bytes, bool, int]  # a frame to send: opcode, payload, fin, rsv


def split(data: bytes, pieces: int) -> list[bytes]:
    """``data`` in exactly ``pieces`` parts (the last ones may be empty)."""
    size = max(1, -(-len(data) // pieces))
    return [data[i * size : (i + 1) * size] for i in range(pieces)]


@dataclass
class Codec:
    """One endpoint's view of the compression on a connection: the window and context
    takeover of its own compressor (send_*) and of the peer's (recv_*). ``active`` False: no
    extension, every RSV bit must stay clear. ``per_frame``: x-webkit-deflate-frame."""

    active: bool = True
    send_bits: int = 15
    send_nct: bool = False
    recv_bits: int = 15
    recv_nct: bool = False
    per_frame: bool = False
    _deflater: Any = field(default=None, repr=False)
    _inflater: Any = field(default=None, repr=False)

    @classmethod
    def for_client(cls, answer: Element | None, offers: list[Element]) -> Codec:
        if answer is None:
            return cls(active=False)
        name, params = answer
        if name == PMD:
            return cls(send_bits=int(params.get(CMWB) or 15), send_nct=CNCT in params,
                       recv_bits=int(params.get(SMWB) or 15), recv_nct=SNCT in params)
        # deflate-frame: the answer limits our compressor, our offer the server's.
        offer = next(p for n, p in offers if n == name)
        return cls(send_bits=int(params.get("max_window_bits") or 15),
                   send_nct="no_context_takeover" in params,
                   recv_bits=int(offer.get("max_window_bits") or 15),
                   recv_nct="no_context_takeover" in offer, per_frame=True)

    @classmethod
    def for_server(cls, answer: Element | None) -> Codec:
        if answer is None:
            return cls(active=False)
        _, params = answer
        return cls(send_bits=int(params.get(SMWB) or 15), send_nct=SNCT in params,
                   recv_bits=int(params.get(CMWB) or 15), recv_nct=CNCT in params)

    def deflate(self, data: bytes, *, end: bool = True) -> bytes:
        """Compress up to a sync flush; ``end`` strips 00 00 ff ff (7.2.1) and, without
        context takeover, drops the window."""
        if self._deflater is None:
            # zlib cannot deflate with an 8-bit window; these tests never negotiate one for
            # their own compressor.
            self._deflater = zlib.compressobj(6, zlib.DEFLATED, -max(self.send_bits, 9))
        out = self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        if end:
            # Nothing new since the last flush gives no output: send an empty stored block
            # (7.2.3.6), of which 0x00 is left once 00 00 ff ff is removed.
            out = out[:-4] if out.endswith(TAIL) else out + b"\x00"
            if self.send_nct:
                self._deflater = None
        return out

    def inflate(self, data: bytes) -> bytes:
        """Inflate one compressed message (one frame for deflate-frame) with 00 00 ff ff
        appended (7.2.2); a fresh inflater each time when the peer has no context takeover."""
        if self._inflater is None or self.recv_nct:
            self._inflater = zlib.decompressobj(-self.recv_bits)
        try:
            out = self._inflater.decompress(data + TAIL)
        except zlib.error as exc:
            raise AssertionError(
                f"cannot inflate with a {self.recv_bits}-bit window"
                f"{' (fresh: no context takeover)' if self.recv_nct else ''}: {exc}"
            ) from None
        assert not self._inflater.eof, "BFINAL set: the stream cannot go on (7.2.3.4)"
        return out

    def encode(self, opcode: int, data: bytes, *, pieces: int = 1, compress: bool = True,
               separate: bool = False) -> list[Out]:
        """The frames of one message in ``pieces`` fragments. permessage-deflate: the
        compressed message is cut anywhere, or with ``separate`` each piece is flushed on
        its own; deflate-frame: each frame is compressed on its own."""
        compress = compress and self.active
        chunks = split(data, pieces)
        last = len(chunks) - 1
        if self.per_frame:
            return [(opcode if i == 0 else CONTINUATION,
                     self.deflate(chunk) if compress else chunk, i == last,
                     RSV1 if compress else 0) for i, chunk in enumerate(chunks)]
        if not compress:
            payloads = chunks
        elif separate:
            payloads = [self.deflate(chunk, end=i == last) for i, chunk in enumerate(chunks)]
        else:
            payloads = split(self.deflate(data), pieces)
        # RFC 7692 6: RSV1 on the first frame of a compressed message only.
        return [(opcode if i == 0 else CONTINUATION, p, i == last,
                 RSV1 if compress and i == 0 else 0) for i, p in enumerate(payloads)]

    def decode(self, frames: list[Frame]) -> tuple[int, bytes, bool]:
        """A received message: (opcode, data, whether it was compressed), the RSV rules
        checked on every frame."""
        first = frames[0]
        assert first.opcode in (TEXT, BINARY), first
        assert all(f.opcode == CONTINUATION for f in frames[1:]), frames
        if not self.active:
            # RFC 6455 5.2: no extension, no RSV bit.
            assert all(f.rsv == 0 for f in frames), [f.rsv for f in frames]
            return first.opcode, b"".join(f.payload for f in frames), False
        assert all(f.rsv in (0, RSV1) for f in frames), "RSV2/RSV3 mean nothing here"
        if self.per_frame:
            # deflate-frame: every frame says for itself whether it is compressed.
            parts = [self.inflate(f.payload) if f.rsv else f.payload for f in frames]
            return first.opcode, b"".join(parts), any(f.rsv for f in frames)
        # RFC 7692 6: "An endpoint MUST NOT set the "Per-Message Compressed" bit of control
        # frames and non-first fragments of a data message."
        assert not any(f.rsv for f in frames[1:]), "RSV1 on a continuation frame"
        data = b"".join(f.payload for f in frames)
        if first.rsv:
            return first.opcode, self.inflate(data), True
        return first.opcode, data, False


class Endpoint:
    """One side of a raw connection after the handshake: the client masks what it sends and
    gets unmasked frames, the server the other way round (RFC 6455 5.1). Control frames
    never carry an RSV bit (RFC 7692 6)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 client: bool) -> None:
        self.reader = reader
        self.writer = writer
        self.client = client
        self.pongs: list[bytes] = []

    async def send_frames(self, frames: Sequence[Out]) -> None:
        self.writer.write(b"".join(
            build_frame(op, data, fin=fin, rsv=rsv, masked=self.client)
            for op, data, fin, rsv in frames
        ))
        await self.writer.drain()

    async def send_frame(self, opcode: int, data: bytes = b"", *, fin: bool = True,
                         rsv: int = 0) -> None:
        await self.send_frames([(opcode, data, fin, rsv)])

    async def _read(self, n: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), TIMEOUT)

    async def read_frame(self) -> Frame:
        b0, b1 = await self._read(2)
        masked = bool(b1 & 0x80)
        assert masked != self.client, "a client masks every frame, a server none (5.1)"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self._read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self._read(8))
        key = await self._read(4) if masked else b""
        data = await self._read(n)
        frame = Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, mask(data, key) if key else data)
        if frame.opcode >= 8:
            assert frame.rsv == 0, f"RSV bits on a control frame: {frame}"
        return frame

    async def read_message(self) -> list[Frame]:
        """The frames of the next data message, answering pings and noting pongs on the
        way; a close frame comes back alone."""
        frames: list[Frame] = []
        while True:
            frame = await self.read_frame()
            if frame.opcode == PING:
                await self.send_frame(PONG, frame.payload)
            elif frame.opcode == PONG:
                self.pongs.append(frame.payload)
            elif frame.opcode == CLOSE:
                return [frame]
            else:
                frames.append(frame)
                if frame.fin:
                    return frames

    async def send_message(self, codec: Codec, opcode: int, data: bytes, **how: Any) -> None:
        await self.send_frames(codec.encode(opcode, data, **how))

    async def recv_message(self, codec: Codec) -> tuple[int, bytes, bool]:
        frames = await self.read_message()
        assert frames[0].opcode != CLOSE, f"closed: {frames[0]}"
        return codec.decode(frames)

    async def echo(self, codec: Codec, opcode: int, data: bytes, **how: Any) -> bool:
        """Send a message, check the echo; return whether the echo was compressed."""
        await self.send_message(codec, opcode, data, **how)
        got_opcode, got, compressed = await self.recv_message(codec)
        assert got_opcode == opcode
        assert len(got) == len(data), f"{len(got)} bytes echoed, {len(data)} sent"
        assert got == data
        return compressed

    async def expect_close(self, code: int) -> None:
        frame = await self.read_frame()
        assert frame.opcode == CLOSE, frame
        assert struct.unpack("!H", frame.payload[:2])[0] == code, frame.payload
        if self.client:  # the server closes TCP first (RFC 6455 7.1.1)
            rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
            assert rest == b""

    async def close_handshake(self) -> None:
        await self.send_frame(CLOSE, struct.pack("!H", 1000))
        await self.expect_close(1000)

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    start, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    fields = []
    for line in lines:
        name, _, value = line.partition(":")
        fields.append((name.strip().lower(), value.strip()))
    return start, fields


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


# -- against corral's server -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def echo_server(settings: DeflateSettings | None) -> AsyncIterator[int]:
    options = corral.Options(max_message_size=MAX_MESSAGE_SIZE, compression=settings)
    app = corral.Router().websocket("/", Echo)
    async with corral.serve(app, "127.0.0.1", 0, options=options) as server:
        yield server.port


class Opened(NamedTuple):
    status: str
    answers: list[str]  # the Sec-WebSocket-Extensions fields of the response
    peer: Endpoint


async def open_raw(port: int, offer: str | list[str] | None) -> Opened:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET / HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
    ]
    lines += [f"Sec-WebSocket-Extensions: {value}" for value in values_of(offer)]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    status, fields = parse_head(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT))
    if status.startswith("HTTP/1.1 101 "):
        assert (("sec-websocket-accept", accept_key(key))) in fields
    answers = [value for name, value in fields if name == "sec-websocket-extensions"]
    return Opened(status, answers, Endpoint(reader, writer, client=True))


@contextlib.asynccontextmanager
async def negotiated(port: int, offer: str | list[str] | None
                     ) -> AsyncIterator[tuple[Element | None, Codec, Endpoint]]:
    """A 101 whose answer accepts at most one offer, and the codec it implies."""
    opened = await open_raw(port, offer)
    try:
        assert opened.status.startswith("HTTP/1.1 101 "), opened.status
        answer = parse_extensions(opened.answers, answer=True)
        assert len(answer) <= 1, f"more than one compression extension: {answer}"
        offers = parse_extensions(values_of(offer))
        if answer:
            check_allowed(offers, answer[0])
        yield (answer[0] if answer else None,
               Codec.for_client(answer[0] if answer else None, offers), opened.peer)
    finally:
        await opened.peer.aclose()


async def autobahn_messages(peer: Endpoint, codec: Codec) -> None:
    """Autobahn 12.x/13.x: each size, as text then as binary (the same bytes, so the second
    message's DEFLATE refers back to the first under context takeover)."""
    for size in SIZES:
        data = payload(size)
        for opcode in (TEXT, BINARY):
            compressed = await peer.echo(codec, opcode, data)
            assert compressed == (codec.active and size >= THRESHOLD), (size, compressed)


# (server settings, offer, the exact answer expected)
ACCEPTED: list[tuple[str, str | list[str], str]] = [
    # 13.1: the default offer.
    ("open", PMD, PMD),
    # 13.2, 13.3: context takeover off on one side or both.
    ("open", f"{PMD}; {CNCT}", f"{PMD}; {CNCT}"),
    ("open", f"{PMD}; {SNCT}", f"{PMD}; {SNCT}"),
    ("open", f"{PMD}; {CNCT}; {SNCT}", f"{PMD}; {SNCT}; {CNCT}"),
    # 13.4-13.6: window sizes. A valueless client_max_window_bits only says the client
    # supports the parameter (7.1.2.2); 15 needs no answer.
    ("open", f"{PMD}; {CMWB}", PMD),
    ("open", f"{PMD}; {CMWB}=9", f"{PMD}; {CMWB}=9"),
    ("open", f"{PMD}; {CMWB}=15", PMD),
    ("open", f"{PMD}; {SMWB}=9", f"{PMD}; {SMWB}=9"),
    ("open", f"{PMD}; {SMWB}=15", f"{PMD}; {SMWB}=15"),
    ("open", f"{PMD}; {SMWB}=8", f"{PMD}; {SMWB}=8"),
    ("open", f'{PMD}; {CMWB}="10"', f"{PMD}; {CMWB}=10"),  # a quoted-string value (7.1)
    # Combinations.
    ("open", f"{PMD}; {SNCT}; {SMWB}=9; {CNCT}; {CMWB}=9",
     f"{PMD}; {SNCT}; {CNCT}; {SMWB}=9; {CMWB}=9"),
    ("open", f"{PMD}; {CMWB}=9; {SMWB}=15; {SNCT}", f"{PMD}; {SNCT}; {SMWB}=15; {CMWB}=9"),
    # 13.7: several offers in one header, or in several fields: the first acceptable one, in
    # the client's order of preference (RFC 7692 5.1).
    ("open", f"{PMD}; {SMWB}=9; {SNCT}, {PMD}; {CMWB}=9, {PMD}", f"{PMD}; {SNCT}; {SMWB}=9"),
    ("open", [f"{PMD}; {CMWB}=10", PMD], f"{PMD}; {CMWB}=10"),
    ("open", f"{PMD}, {WEBKIT}", PMD),
    ("open", f"{WEBKIT}, {PMD}", WEBKIT),
    # DeflateSettings(): the server limits its own window unasked (7.1.2.1 allows it) and the
    # client's only when the client said it supports the parameter (7.1.2.2).
    ("default", PMD, f"{PMD}; {SMWB}=12"),
    ("default", f"{PMD}; {CMWB}", f"{PMD}; {SMWB}=12; {CMWB}=12"),
    ("default", f"{PMD}; {CMWB}=9; {SMWB}=15", f"{PMD}; {SMWB}=12; {CMWB}=9"),
    ("default", f"{PMD}; {SMWB}=10; {CMWB}=15", f"{PMD}; {SMWB}=10; {CMWB}=12"),
    # Context takeover off in the server's settings: announced unasked (7.1.1.1, 7.1.1.2).
    ("nct", PMD, f"{PMD}; {SNCT}; {CNCT}"),
    ("nct", f"{PMD}; {SMWB}=9", f"{PMD}; {SNCT}; {CNCT}; {SMWB}=9"),
    # x-webkit-deflate-frame: offer parameters limit the server's compressor, answer
    # parameters the client's.
    ("open", WEBKIT, WEBKIT),
    ("open", f"{WEBKIT}; no_context_takeover", WEBKIT),
    ("open", f"{WEBKIT}; max_window_bits=9", WEBKIT),
    ("open", f"{WEBKIT}; max_window_bits=10; no_context_takeover", WEBKIT),
    ("default", WEBKIT, f"{WEBKIT}; max_window_bits=12"),
    ("default", f"{WEBKIT}; max_window_bits=9", f"{WEBKIT}; max_window_bits=12"),
    ("nct", WEBKIT, f"{WEBKIT}; no_context_takeover"),
    ("open", "deflate-frame", "deflate-frame"),
]


def case_id(case: tuple[str, str | list[str], str]) -> str:
    return f"{case[0]}:{' | '.join(values_of(case[1]))}"


@pytest.mark.parametrize(("settings", "offer", "expected"), ACCEPTED,
                         ids=[case_id(c) for c in ACCEPTED])
async def test_13_negotiated_answer_and_echo(settings: str, offer: str | list[str],
                                             expected: str) -> None:
    async with (echo_server(SETTINGS[settings]) as port,
                negotiated(port, offer) as (answer, codec, peer)):
        assert answer == element(expected)
        await autobahn_messages(peer, codec)
        await peer.close_handshake()


@pytest.mark.parametrize("offer", [PMD, f"{PMD}; {SNCT}; {CNCT}; {SMWB}=9; {CMWB}=9", WEBKIT,
                                   f"{WEBKIT}; no_context_takeover; max_window_bits=9"])
async def test_12_fragmented_compressed_messages(offer: str) -> None:
    """12.x with fragments: a compressed message cut anywhere, flushed piece by piece, ending
    on an empty frame, in one-byte frames, with a ping in the middle (its pong carries no RSV
    bit), then whole ones again: the inflater's state runs on across all of them."""
    async with echo_server(OPEN) as port, negotiated(port, offer) as (_, codec, peer):
        for size in (300, 4096, 65536):
            data = payload(size)
            await peer.echo(codec, TEXT, data, pieces=3)
            await peer.echo(codec, BINARY, data, pieces=7, separate=True)
        data = payload(1024)
        await peer.echo(codec, BINARY, data, pieces=2, separate=True)
        if not codec.per_frame:
            # The whole compressed message, then an empty last frame (7.2.2: the tail is
            # appended to the message's payload, whatever frame it ends in).
            whole = codec.deflate(data)
            await peer.send_frames([(TEXT, whole, False, RSV1), (CONTINUATION, b"", True, 0)])
            assert await peer.recv_message(codec) == (TEXT, data, True)
            # One byte per frame.
            small = payload(256)
            comp = codec.deflate(small)
            await peer.send_frames([
                (TEXT if i == 0 else CONTINUATION, comp[i : i + 1], i == len(comp) - 1,
                 RSV1 if i == 0 else 0) for i in range(len(comp))
            ])
            assert await peer.recv_message(codec) == (TEXT, small, True)
        else:
            await peer.echo(codec, TEXT, payload(256), pieces=16)
        # A ping between the fragments of a compressed message.
        frames = codec.encode(TEXT, payload(4096), pieces=3)
        await peer.send_frames(frames[:1])
        await peer.send_frame(PING, b"mid-message")
        await peer.send_frames(frames[1:])
        pong = await peer.read_frame()
        assert pong == Frame(True, 0, PONG, b"mid-message")
        assert (await peer.recv_message(codec))[1] == payload(4096)
        await autobahn_messages(peer, codec)
        await peer.close_handshake()


async def test_12_webkit_frames_compressed_or_not_within_one_message() -> None:
    """deflate-frame: each frame, continuations included, is compressed (RSV1) or not."""
    async with echo_server(OPEN) as port, negotiated(port, WEBKIT) as (_, codec, peer):
        pieces = split(payload(9000), 4)
        frames: list[Out] = [
            (TEXT, codec.deflate(pieces[0]), False, RSV1),
            (CONTINUATION, pieces[1], False, 0),
            (CONTINUATION, codec.deflate(pieces[2]), False, RSV1),
            (CONTINUATION, pieces[3], True, 0),
        ]
        await peer.send_frames(frames)
        assert await peer.recv_message(codec) == (TEXT, payload(9000), True)
        await peer.close_handshake()


@pytest.mark.parametrize("offer", [PMD, f"{PMD}; {SNCT}; {CMWB}=9", WEBKIT])
async def test_12_uncompressed_messages_on_a_compressed_connection(offer: str) -> None:
    """A message without RSV1 is taken as it is, and does not disturb the compressed
    messages around it (their context runs on)."""
    async with echo_server(OPEN) as port, negotiated(port, offer) as (_, codec, peer):
        for size in SIZES:
            data = payload(size)
            await peer.echo(codec, TEXT, data, compress=False)
            await peer.echo(codec, BINARY, data)
            await peer.echo(codec, BINARY, data, compress=False, pieces=3)
        await peer.echo(codec, TEXT, b"", compress=False)
        await peer.echo(codec, BINARY, b"")  # an empty compressed message: 0x00 (7.2.3.6)
        await peer.close_handshake()


async def test_13_server_uses_context_takeover_unless_told_not_to() -> None:
    """With context takeover, a message repeated compresses to a few bytes that only a
    persistent inflater understands; with server_no_context_takeover every copy compresses
    the same, from an empty window."""
    data = payload(4096)
    async with echo_server(OPEN) as port:
        async with negotiated(port, PMD) as (_, codec, peer):
            await peer.send_message(codec, BINARY, data)
            await peer.send_message(codec, BINARY, data)
            first, second = await peer.read_message(), await peer.read_message()
            assert len(second[0].payload) < len(first[0].payload) // 4
            with pytest.raises((zlib.error, AssertionError)):
                fresh = zlib.decompressobj(-15)
                assert fresh.decompress(second[0].payload + TAIL) == data
            assert codec.decode(first)[1] == codec.decode(second)[1] == data
            await peer.close_handshake()
        async with negotiated(port, f"{PMD}; {SNCT}") as (_, codec, peer):
            echoes = []
            for _ in range(3):
                await peer.send_message(codec, BINARY, data)
                echoes.append(await peer.read_message())
            assert echoes[0] == echoes[1] == echoes[2]
            assert codec.decode(echoes[2])[1] == data
            await peer.close_handshake()


async def test_13_client_beyond_its_negotiated_window_is_refused() -> None:
    """The server inflates with the window it allowed (client_max_window_bits=9): a client
    that refers back further fails the connection (1007)."""
    async with echo_server(OPEN) as port, negotiated(port, f"{PMD}; {CMWB}=9") as (
            _, codec, peer):
        assert codec.send_bits == 9
        codec.send_bits = 15  # misbehave
        data = payload(2048)
        await peer.echo(codec, BINARY, data)
        await peer.send_message(codec, BINARY, data)  # all back-references 2048 bytes away
        await peer.expect_close(1007)


async def test_13_rsv1_on_a_control_frame_fails() -> None:
    async with echo_server(OPEN) as port, negotiated(port, PMD) as (_, codec, peer):
        await peer.echo(codec, TEXT, payload(100))
        await peer.send_frame(PING, b"x", rsv=RSV1)
        await peer.expect_close(1002)


DECLINED = [
    f"{PMD}; foo",
    f"{PMD}; foo=bar",
    f"{PMD}; max_window_bits=10",  # deflate-frame's parameter
    f"{PMD}; {SNCT}; {SNCT}",
    f"{PMD}; {CMWB}=10; {CMWB}=10",
    f"{PMD}; {CMWB}; {CMWB}",
    f"{PMD}; {SMWB}=7",
    f"{PMD}; {SMWB}=16",
    f"{PMD}; {SMWB}=09",  # leading zero (7.1.2.1)
    f"{PMD}; {SMWB}",  # a value is required (7.1.2.1)
    f"{PMD}; {CMWB}=abc",
    f"{PMD}; {CMWB}=7",
    f"{PMD}; {CMWB}=16",
    f"{PMD}; {SNCT}=1",
    f'{PMD}; {CNCT}="x"',
    f"{WEBKIT}; max_window_bits=7",
    f"{WEBKIT}; max_window_bits=16",
    f"{WEBKIT}; no_context_takeover=1",
    f"{WEBKIT}; {CMWB}=10",
    f"{WEBKIT}; max_window_bits=9; max_window_bits=9",
    "x-unknown-extension",
    "deflate-stream",
]


@pytest.mark.parametrize("offer", DECLINED)
async def test_13_offer_declined(offer: str) -> None:
    """RFC 7692 7.1: an offer with an unknown, repeated or invalid parameter is declined,
    which is not an error: 101 with no extension, then frames with an RSV bit fail."""
    async with echo_server(DEFAULT) as port, negotiated(port, offer) as (answer, codec, peer):
        assert answer is None
        await peer.echo(codec, TEXT, payload(1024))
        await peer.send_frame(BINARY, b"\x00", rsv=RSV1)
        await peer.expect_close(1002)


FALLBACK = [
    (f"{PMD}; foo, {PMD}; {CMWB}", f"{PMD}; {SMWB}=12; {CMWB}=12"),
    (f"{PMD}; {SMWB}=16, {PMD}", f"{PMD}; {SMWB}=12"),
    (f"{PMD}; {CMWB}=abc, {WEBKIT}", f"{WEBKIT}; max_window_bits=12"),
    (f"{WEBKIT}; max_window_bits=16, {PMD}; {SNCT}", f"{PMD}; {SNCT}; {SMWB}=12"),
    ([f"{PMD}; {SNCT}; {SNCT}", f"{PMD}; {SNCT}"], f"{PMD}; {SNCT}; {SMWB}=12"),
    (f"x-unknown; a=1, {PMD}; {SMWB}=9", f"{PMD}; {SMWB}=9"),
]


@pytest.mark.parametrize(("offer", "expected"), FALLBACK, ids=[str(o) for o, _ in FALLBACK])
async def test_13_bad_offer_then_good_one(offer: str | list[str], expected: str) -> None:
    async with echo_server(DEFAULT) as port, negotiated(port, offer) as (answer, codec, peer):
        assert answer == element(expected)
        for size in (16, 1024, 65536):
            await peer.echo(codec, TEXT, payload(size))
            await peer.echo(codec, BINARY, payload(size))
        await peer.close_handshake()


@pytest.mark.parametrize(
    "offer", [PMD, f"{PMD}; {CMWB}, {WEBKIT}", f"{WEBKIT}; no_context_takeover"]
)
async def test_13_compression_off_on_the_server(offer: str) -> None:
    async with echo_server(None) as port, negotiated(port, offer) as (answer, codec, peer):
        assert answer is None
        for size in SIZES:
            await peer.echo(codec, BINARY, payload(size))
        await peer.send_frame(TEXT, codec.deflate(b"compressed anyway"), rsv=RSV1)
        await peer.expect_close(1002)


@pytest.mark.parametrize("offer", [f'{PMD}; {CMWB}="1 0"', f"{PMD};; {SNCT}", f"{PMD}; =9"])
async def test_13_malformed_extension_header_is_a_bad_request(offer: str) -> None:
    """Not an offer to decline: the header does not parse (RFC 6455 9.1 grammar)."""
    async with echo_server(DEFAULT) as port:
        opened = await open_raw(port, offer)
        await opened.peer.aclose()
    assert opened.status.startswith("HTTP/1.1 400 "), opened.status


# -- against corral's client -------------------------------------------------------------------


@dataclass
class RawServer:
    """A server written by hand: answers every upgrade with ``answer`` as its
    Sec-WebSocket-Extensions (None: no header), then runs ``script``."""

    answer: str | None
    script: Callable[[Endpoint, Codec, RawServer], Awaitable[None]]
    url: str = ""
    offers: list[list[str]] = field(default_factory=list)  # each connection's offer fields
    received: list[tuple[int, bytes, bool]] = field(default_factory=list)
    closes: list[int] = field(default_factory=list)  # close codes received
    problems: list[str] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # a connection is over

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Endpoint(reader, writer, client=False)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            _, fields = parse_head(head)
            key = next(value for name, value in fields if name == "sec-websocket-key")
            self.offers.append([v for n, v in fields if n == "sec-websocket-extensions"])
            lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
                     "Connection: Upgrade", f"Sec-WebSocket-Accept: {accept_key(key)}"]
            if self.answer is not None:
                lines.append(f"Sec-WebSocket-Extensions: {self.answer}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            answers = parse_extensions(values_of(self.answer))
            await self.script(peer, Codec.for_server(answers[0] if answers else None), self)
        except Exception as exc:
            self.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            await peer.aclose()
            self.finished.set()


async def until_closed(peer: Endpoint, codec: Codec, server: RawServer) -> None:
    """Read until the client's close; answer it."""
    while True:
        frames = await peer.read_message()
        if frames[0].opcode == CLOSE:
            server.closes.append(struct.unpack("!H", frames[0].payload[:2])[0])
            with contextlib.suppress(ConnectionError):
                await peer.send_frame(CLOSE, frames[0].payload[:2])
            return


async def echo_script(peer: Endpoint, codec: Codec, server: RawServer) -> None:
    """Echo each message, compressed with the parameters of the answer; larger ones in three
    frames with a ping between the first two (RSV1 on the first frame only)."""
    while True:
        frames = await peer.read_message()
        if frames[0].opcode == CLOSE:
            server.closes.append(struct.unpack("!H", frames[0].payload[:2])[0])
            await peer.send_frame(CLOSE, frames[0].payload[:2])
            return
        opcode, data, compressed = codec.decode(frames)
        server.received.append((opcode, data, compressed))
        out = codec.encode(opcode, data, pieces=3 if len(data) >= 4096 else 1)
        if len(out) > 1:
            await peer.send_frames(out[:1])
            await peer.send_frame(PING, b"between fragments")
            out = out[1:]
        await peer.send_frames(out)


@contextlib.asynccontextmanager
async def raw_server(answer: str | None,
                     script: Callable[[Endpoint, Codec, RawServer], Awaitable[None]] = echo_script,
                     ) -> AsyncIterator[RawServer]:
    state = RawServer(answer, script)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    try:
        state.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        yield state
    finally:
        server.close()
        await server.wait_closed()


# What corral.connect offers by default: a bare client_max_window_bits, as browsers send it,
# so that any answer 8..15 is valid (Autobahn 13.4 and 13.6 answer 15; Node's ws refuses a
# valued offer below its own setting with 400).
DEFAULT_OFFER = f"{PMD}; {CMWB}"
OPEN_OFFER = f"{PMD}; {CMWB}"  # DeflateSettings(server/client_max_window_bits=15)

# (client settings, the raw server's answer); None: no extension.
CLIENT_ANSWERS: list[tuple[str, str | None]] = [
    ("default", None),
    ("default", PMD),  # the default offer asks nothing of the server's window: any valid
    ("default", f"{PMD}; {SNCT}"),  # answer fits it
    ("default", f"{PMD}; {CNCT}"),
    ("default", f"{PMD}; {SMWB}=12"),
    ("default", f"{PMD}; {SMWB}=9"),
    ("default", f"{PMD}; {SMWB}=12; {CMWB}=9"),
    ("default", f"{PMD}; {SMWB}=10; {CMWB}=12"),
    ("default", f"{PMD}; {SNCT}; {CNCT}; {SMWB}=9; {CMWB}=9"),
    ("default", f"{PMD}; {CMWB}=15"),  # Autobahn 13.4: the client still compresses with its own
    ("default", f"{PMD}; {SNCT}; {CMWB}=15"),  # 13.6
    ("default", f"{PMD}; {CMWB}=8"),  # 13.3: 8 asked, zlib deflates with 9 (see Deflater)
    ("open", None),
    ("open", PMD),
    ("open", f"{PMD}; {SNCT}"),
    ("open", f"{PMD}; {CNCT}"),
    ("open", f"{PMD}; {SMWB}=9"),  # unasked, the server may still limit itself (7.1.2.1)
    ("open", f"{PMD}; {CMWB}=9"),
    ("open", f"{PMD}; {SNCT}; {CNCT}; {SMWB}=15; {CMWB}=10"),
]
CLIENT_OFFERS = {"default": DEFAULT_OFFER, "open": OPEN_OFFER}


def client_options(settings: str) -> dict[str, Any]:
    return {} if settings == "default" else {"compression": SETTINGS[settings]}


@pytest.mark.parametrize(("settings", "answer"), CLIENT_ANSWERS,
                         ids=[f"{s}:{a}" for s, a in CLIENT_ANSWERS])
async def test_13_client_messages_under_each_answer(settings: str, answer: str | None) -> None:
    """corral's client offers, takes the answer, and sends and receives every size: the raw
    server inflates with what it allowed (client window, client context takeover) and
    compresses with what it announced."""
    async with (raw_server(answer) as server,
                corral.connect(server.url, **client_options(settings)) as ws):
        assert ws.ws.extensions == ((PMD,) if answer else ())
        for size in SIZES:
            text, data = payload(size).decode(), payload(size)
            await ws.send(text)
            assert await ws.recv() == text
            await ws.send(data)
            assert await ws.recv() == data
        await ws.send_fragments([payload(5000), payload(70), b"", payload(300)])
        assert await ws.recv() == payload(5000) + payload(70) + payload(300)
    assert server.problems == []
    assert [parse_extensions(offer) for offer in server.offers] == [
        parse_extensions([CLIENT_OFFERS[settings]])
    ]
    assert [len(d) for _, d, _ in server.received[:-1]] == [s for s in SIZES for _ in "tb"]
    # corral compresses what reaches its threshold, when an extension was negotiated.
    for _, data, compressed in server.received:
        assert compressed == (answer is not None and len(data) >= THRESHOLD), len(data)
    assert server.closes == [1000]


async def test_13_client_without_compression_offers_nothing() -> None:
    async with raw_server(None) as server, corral.connect(server.url, compression=None) as ws:
        assert ws.ws.extensions == ()
        await ws.send(payload(65536))
        assert await ws.recv() == payload(65536)
    assert server.offers == [[]]
    assert server.problems == []


BAD_ANSWERS = [
    # 7.1.2.1: out of range.
    f"{PMD}; {SMWB}=16",
    # 7.1.2.2: the bare offer takes any value 8..15, but a response must give one in range.
    f"{PMD}; {SMWB}=12; {CMWB}",
    f"{PMD}; {CMWB}=16",
    f"{PMD}; {CMWB}=7",
    f"{PMD}; {CMWB}=012",
    # 7.1: unknown or repeated parameters, invalid values.
    f"{PMD}; {SMWB}=12; foo",
    f"{PMD}; {SMWB}=12; {SMWB}=12",
    f"{PMD}; {SMWB}=12; {SNCT}=1",
    f"{PMD}; {SMWB}=7",
    # Not offered, or more than one.
    WEBKIT,
    "x-unknown",
    f"{PMD}; {SMWB}=12, {PMD}; {SMWB}=12",
]


@pytest.mark.parametrize("answer", BAD_ANSWERS)
async def test_13_client_fails_on_a_bad_answer(answer: str) -> None:
    """RFC 7692 7.1 / RFC 6455 4.1: the client fails the connection, close code 1010."""
    async with raw_server(answer, until_closed) as server:
        with pytest.raises(corral.NegotiationError):
            await corral.connect(server.url)
        await asyncio.wait_for(server.finished.wait(), TIMEOUT)
    assert server.problems == []
    assert server.closes == [1010]


async def test_13_client_without_offer_fails_on_an_answer() -> None:
    async with raw_server(PMD, until_closed) as server:
        with pytest.raises(corral.NegotiationError):
            await corral.connect(server.url, compression=None)
        await asyncio.wait_for(server.finished.wait(), TIMEOUT)
    assert server.closes == [1010]


async def _rsv1_on_continuation(peer: Endpoint, codec: Codec, server: RawServer) -> None:
    frames = codec.encode(TEXT, payload(2000), pieces=2)
    await peer.send_frames([frames[0], (*frames[1][:3], RSV1)])
    await until_closed(peer, codec, server)


async def _corrupt(peer: Endpoint, codec: Codec, server: RawServer) -> None:
    await peer.send_frame(BINARY, b"\xff\xff\xff\xff", rsv=RSV1)  # BTYPE 11: invalid
    await until_closed(peer, codec, server)


async def _rsv1_on_control(peer: Endpoint, codec: Codec, server: RawServer) -> None:
    peer.writer.write(build_frame(PING, b"x", rsv=RSV1, masked=False))
    await until_closed(peer, codec, server)


@pytest.mark.parametrize(("script", "code"), [(_rsv1_on_continuation, 1002), (_corrupt, 1007),
                                              (_rsv1_on_control, 1002)])
async def test_12_client_fails_on_bad_compressed_frames(
    script: Callable[[Endpoint, Codec, RawServer], Awaitable[None]], code: int
) -> None:
    async with raw_server(f"{PMD}; {SMWB}=12", script) as server, corral.connect(server.url) as ws:
        with pytest.raises(corral.ConnectionClosedError):
            await ws.recv()
        assert ws.close_code == code
        await asyncio.wait_for(server.finished.wait(), TIMEOUT)
    assert server.problems == []
    assert server.closes == [code]
