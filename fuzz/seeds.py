"""Write the fuzz targets' seed corpora and dictionaries: ``python fuzz/seeds.py [DIR]``.

The seeds are what the conformance suite (tests/conformance) sends, case by case: frames of
every opcode and length encoding (Autobahn 1.x), pings and pongs (2.x), RSV bits (3.x),
reserved opcodes (4.x), fragmented messages with control frames between (5.x), valid and
broken UTF-8 (6.x), close frames with every kind of code (7.x), the limits and masking
rules of section 10, compressed messages (12.x/13.x); upgrade requests and responses; and
the extension offers and answers of the compression tests, malformed ones included. Each
is wrapped in the input layout its target reads (``_harness.Input``: configuration bytes,
a cut plan, then the stream), under several configurations.

Frames are built here by hand, not by corral, so a bug in corral's encoder cannot shape
the seeds. Everything written is derived from this file: DIR (default ``fuzz/seeds``) is
not kept in git.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
KEY = b"\x37\xfa\x21\x3d"  # the masking key of RFC 6455 section 5.7
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the Sec-WebSocket-Key of section 1.3
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- frames, by hand --------------------------------------------------------------------------


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          masked: bool = True, length_bytes: int | None = None) -> bytes:
    """One frame (section 5.2); ``rsv`` as in the first byte (0x40 RSV1); ``length_bytes``
    0, 2 or 8 forces a (possibly non-minimal) length encoding."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    mbit = 0x80 if masked else 0
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 65536 else 8
    if length_bytes == 0:
        head = bytes((b0, mbit | n))
    elif length_bytes == 2:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not masked:
        return head + payload
    body = bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))
    return head + KEY + body


def deflate(message: bytes, pieces: int = 1, wbits: int = 15) -> list[bytes]:
    """``message`` compressed as RFC 7692 sends it, in ``pieces`` fragments: a sync flush
    after each, the final 00 00 ff ff removed."""
    obj = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    step = max(1, -(-len(message) // pieces))
    out = []
    for i in range(0, max(len(message), 1), step):
        out.append(obj.compress(message[i : i + step]) + obj.flush(zlib.Z_SYNC_FLUSH))
    out[-1] = out[-1][:-4]
    return out


def close(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


TEXTS = [b"", b"Hello", "κόσμε".encode(), b"\xf0\x90\x80\x80", ("a" * 125 + "é").encode(),
         b"*" * 300]
BAD_UTF8 = [b"\xce\xba\xe1\xbd", b"\xed\xa0\x80", b"\xc0\xaf", b"\xff", b"Hello\xf4\x90\x80\x80"]
CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000,
               4999, 0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]


def streams(masked: bool) -> Iterator[tuple[str, bytes]]:
    """(case name, byte stream) for the conformance cases, from one side of the wire."""

    def f(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          length_bytes: int | None = None) -> bytes:
        return frame(opcode, payload, fin=fin, rsv=rsv, masked=masked,
                     length_bytes=length_bytes)

    for n in (0, 1, 125, 126, 127, 128, 1000, 4000):
        yield f"1.1-text-{n}", f(TEXT, b"*" * n)
        yield f"1.2-binary-{n}", f(BINARY, bytes(i & 0xFF for i in range(n)))
    yield "1-several", f(TEXT, b"one") + f(BINARY, b"\x00\x01") + f(TEXT, b"")
    yield "2.1-ping", f(PING)
    yield "2.3-ping-binary", f(PING, b"\x00\xff\xfe\xfd\xfc")
    yield "2.4-ping-125", f(PING, b"*" * 125)
    yield "2.5-ping-126", f(PING, b"*" * 126)
    yield "2.7-pong", f(PONG, b"unsolicited") + f(TEXT, b"after")
    yield "2.10-pings", b"".join(f(PING, str(i).encode()) for i in range(10))
    for rsv in range(1, 8):
        yield f"3-rsv{rsv}", f(TEXT, b"Hello", rsv=rsv << 4)
        yield f"3-rsv{rsv}-ping", f(PING, b"", rsv=rsv << 4)
    for opcode in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
        yield f"4-opcode-{opcode}", f(TEXT, b"ok") + f(opcode, b"x") + f(PING)
    yield "5.1-fragmented-ping", f(PING, b"x", fin=False)
    yield "5.3-two-fragments", f(TEXT, b"fragment1", fin=False) + f(CONTINUATION, b"fragment2")
    yield "5.6-ping-between", (f(TEXT, b"frag1", fin=False) + f(PING, b"ping")
                               + f(CONTINUATION, b"frag2"))
    yield "5.9-continuation-first", f(CONTINUATION, b"x") + f(TEXT, b"y")
    yield "5.18-text-after-text", f(TEXT, b"a", fin=False) + f(TEXT, b"b")
    yield "5.19-many", b"".join(f(TEXT if i == 0 else CONTINUATION, b"ab", fin=i == 9)
                                for i in range(10))
    yield "5-empty-fragments", (f(BINARY, b"", fin=False) + f(CONTINUATION, b"", fin=False)
                                + f(CONTINUATION, b""))
    for i, text in enumerate(TEXTS):
        yield f"6-valid-{i}", f(TEXT, text)
        if len(text) > 2:
            yield f"6-valid-split-{i}", (f(TEXT, text[:3], fin=False)
                                         + f(CONTINUATION, text[3:]))
    for i, bad in enumerate(BAD_UTF8):
        yield f"6-invalid-{i}", f(TEXT, bad)
        yield f"6-invalid-split-{i}", f(TEXT, bad[:1], fin=False) + f(CONTINUATION, bad[1:])
    for code in CLOSE_CODES:
        yield f"7-close-{code}", f(CLOSE, close(code, b"bye")) + f(TEXT, b"after")
    yield "7.3.1-close-empty", f(CLOSE)
    yield "7.3.2-close-1-byte", f(CLOSE, b"\x03")
    yield "7.5.1-close-bad-reason", f(CLOSE, close(1000, b"\xce\xba\xe1\xbd"))
    yield "7.3.6-close-long", f(CLOSE, close(1000, b"*" * 124))
    for n in (0, 5, 126):
        yield f"10.5-length-16-{n}", f(BINARY, b"x" * n, length_bytes=2)
        yield f"10.5-length-64-{n}", f(BINARY, b"x" * n, length_bytes=8)
    head = bytes((0x82, (0x80 if masked else 0) | 127))
    for high in (2**63, 2**64 - 1, 2**32, 2**20 + 1):
        yield f"10.3-length-{high:x}", head + struct.pack("!Q", high) + (KEY if masked else b"")
    yield "10.4-wrong-mask", frame(TEXT, b"hi", masked=not masked)
    yield "10.4-wrong-mask-after", f(TEXT, b"ok") + frame(TEXT, b"hi", masked=not masked)
    for i, text in enumerate(TEXTS[1:4]):
        (one,) = deflate(text)
        yield f"12-compressed-{i}", f(TEXT, one, rsv=0x40)
        parts = deflate(text * 20, 3)
        yield f"12-compressed-fragments-{i}", b"".join(
            f(TEXT if j == 0 else CONTINUATION, part, rsv=0x40 if j == 0 else 0,
              fin=j == len(parts) - 1) for j, part in enumerate(parts))
        yield f"12-webkit-{i}", b"".join(
            f(TEXT if j == 0 else CONTINUATION, deflate(part)[0], rsv=0x40, fin=j == 2)
            for j, part in enumerate((text, text, text)))
    yield "12-compressed-bomb", f(BINARY, deflate(bytes(200_000))[0], rsv=0x40)
    yield "12-corrupt", f(TEXT, b"\xff\xff\xff\xff", rsv=0x40)
    yield "12-rsv1-continuation", (f(TEXT, deflate(b"ab")[0], rsv=0x40, fin=False)
                                   + f(CONTINUATION, b"x", rsv=0x40))


def plans() -> Iterator[bytes]:
    """A few cut plans: one read, byte by byte for a while, reads of 2, 7 and 125 bytes."""
    yield b"\x00"
    yield bytes((31,)) + b"\x01" * 31
    yield bytes((6, 2, 7, 0, 125, 3, 1))


# -- targets ----------------------------------------------------------------------------------


def frames_seeds() -> Iterator[bytes]:
    for masked in (True, False):
        config = 0x08 if masked else 0x00  # bit 3: require_mask
        for i, (_, stream) in enumerate(streams(masked)):
            plan = list(plans())[i % 3]
            kind = i % 4  # bytes, bytearray, memoryview, memoryview of a bytearray
            in_place = 0x10 if i % 5 == 0 else 0
            limit_pick = i % 14
            yield bytes((config | kind | in_place, limit_pick, 0, 100, i % 256, 4, i)) + plan \
                + stream


def connection_seeds() -> Iterator[bytes]:
    for masked in (True, False):
        side = 0 if masked else 1  # a server receives masked frames
        for i, (name, stream) in enumerate(streams(masked)):
            ext = 0
            if name.startswith("12-"):
                ext = 2 if "webkit" in name else 1 + 2 * (i % 2)
            config = side | (i % 2) << 1 | ext << 2 | (0x20 if i % 3 else 0)
            plan = list(plans())[i % 3]
            yield bytes((config, i % 11, 0, 7)) + plan + stream
    # Built streams (config bit 4): large messages read straight into their buffers, and
    # compressed ones with their windows.
    large_text = bytes((0x89, 0x81))  # TEXT, FIN, large, 2-byte characters
    large_bin = bytes((0x8A, 0xFF))  # BINARY, FIN, large
    fragment = bytes((0x81 & ~0x08 | 0x80, 0x90))  # TEXT, not FIN, large
    last = bytes((0x88, 0x05)) + b"hello"  # CONTINUATION, FIN, 5 bytes
    compressed = bytes((0x39, 0x20)) + b"compressible " * 2 + b"abcdef"  # TEXT FIN RSV1 deflate
    for side in (0, 1):
        for plan in (b"\x00", bytes((4, 130, 255, 200, 3)), bytes((2, 0x7F, 255))):
            for ext, body in ((0, large_text), (0, large_bin + large_text), (0, fragment + last),
                              (1, compressed * 3), (2, compressed), (3, compressed * 2)):
                for limit in (0, 8, 9, 10):
                    yield bytes((0x10 | 0x20 | side | ext << 2, limit, 0, 7)) + plan + body


def session_seeds() -> Iterator[bytes]:
    """Client streams (masked) cut by each plan; messages led by the scripted handler's
    answer letters (tests/server/test_hot_path.py: s t m b l u c x p a n)."""
    for i, (_, stream) in enumerate(streams(True)):
        yield list(plans())[i % 3] + stream
    answers = [frame(TEXT if i % 2 else BINARY, letter.encode() + b"payload %d" % i)
               for i, letter in enumerate("stmblucxpan")]
    for plan in plans():
        for i in range(len(answers)):
            yield plan + b"".join(answers[i:] + answers[:i])


def _request(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


UPGRADE = ["GET /chat?x=1 HTTP/1.1", "Host: server.example.com", "Upgrade: websocket",
           "Connection: Upgrade", f"Sec-WebSocket-Key: {WS_KEY}", "Sec-WebSocket-Version: 13"]
RESPONSE = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {_accept(WS_KEY)}"]
OFFERS = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
    " server_max_window_bits=9; client_max_window_bits=9",
    'permessage-deflate; client_max_window_bits="10"; server_max_window_bits=8',
    "permessage-deflate; server_max_window_bits=15, permessage-deflate",
    "x-webkit-deflate-frame",
    "x-webkit-deflate-frame; max_window_bits=8; no_context_takeover",
    "deflate-frame; no_context_takeover",
    "foo; bar=baz, permessage-deflate; client_max_window_bits=12",
    'permessage-deflate; client_max_window_bits="1 0"',
    "permessage-deflate;; server_no_context_takeover",
    "permessage-deflate; =9",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; unknown",
    'x-foo; a="b\\"c"; d=e, , permessage-deflate',
    "permessage-deflate\npermessage-deflate; client_no_context_takeover",
]
ANSWERS = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits=9",
    "permessage-deflate; server_max_window_bits=12; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=15; client_no_context_takeover",
    "x-webkit-deflate-frame; max_window_bits=10",
    "permessage-deflate, permessage-deflate",
    "foo",
]


def http_seeds() -> Iterator[bytes]:
    requests = [
        _request(*UPGRADE),
        _request(*UPGRADE, "Origin: http://example.com", "Sec-WebSocket-Protocol: chat, super"),
        _request(*UPGRADE[:5], "Sec-WebSocket-Version: 8", "Sec-WebSocket-Origin: null"),
        _request(*UPGRADE[:4], "Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5", "Sec-WebSocket-Key2:"
                 " 12998 5 Y3 1  .P00"),
        _request(*UPGRADE[:5], "Sec-WebSocket-Version: 12"),
        _request(*UPGRADE[:4], "Sec-WebSocket-Key: short", "Sec-WebSocket-Version: 13"),
        _request("POST /chat HTTP/1.1", *UPGRADE[1:]),
        _request("GET / HTTP/1.0", *UPGRADE[1:]),
        _request("GET / HTTP/1.1", "Host: a", "Upgrade: h2c, WebSocket/13",
                 "Connection: keep-alive, Upgrade", *UPGRADE[4:]),
        _request("GET / HTTP/1.1", "Host: a") + _request(*UPGRADE) + frame(TEXT, b"early"),
        _request("POST /x HTTP/1.1", "Host: a", "Content-Length: 5", body=b"hello"),
        _request("POST /x HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                 body=b"5\r\nhello\r\n0\r\n\r\n"),
        b"\r\n\r\n" + _request(*UPGRADE),
        _request(*UPGRADE, "X-Long: " + "v" * 300, "Host: again"),
        _request("GET /%E2%82%AC?q=%ff HTTP/1.1", *UPGRADE[1:]),
        _request("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443"),
    ]
    requests += [_request(*UPGRADE, f"Sec-WebSocket-Extensions: {offer}") for offer in OFFERS
                 if "\n" not in offer]
    responses = [
        _request(*RESPONSE) + frame(TEXT, b"hi", masked=False),
        _request(*RESPONSE, "Sec-WebSocket-Protocol: chat"),
        _request(*RESPONSE, "Sec-WebSocket-Protocol: other"),
        _request(*RESPONSE[:3], "Sec-WebSocket-Accept: wrong"),
        _request("HTTP/1.1 101 Switching Protocols", "Connection: Upgrade",
                 f"Sec-WebSocket-Accept: {_accept(WS_KEY)}"),
        _request("HTTP/1.1 100 Continue") + _request(*RESPONSE),
        _request("HTTP/1.1 400 Bad Request", "Content-Length: 5", body=b"nope!"),
        _request("HTTP/1.1 426 Upgrade Required", "Sec-WebSocket-Version: 13"),
        _request("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n"),
        _request("HTTP/1.1 200 OK", body=b"until the end"),
    ]
    responses += [_request(*RESPONSE, f"Sec-WebSocket-Extensions: {answer}")
                  for answer in ANSWERS]
    for plan in plans():
        for i, request in enumerate(requests):
            limits = bytes((255, 255, 255, 255)) if i % 3 else bytes((30, 8, 40, 3))
            yield bytes((0x00,)) + limits + plan + request
        for i, response in enumerate(responses):
            limits = bytes((255, 255, 255, 255)) if i % 3 else bytes((255, 6, 40, 3))
            yield bytes((0x01 | (i % 2) << 1 | (i % 3 == 1) << 2,)) + limits + plan + response


def extensions_seeds() -> Iterator[bytes]:
    texts = [t for t in TEXTS if t] + [b"compress me " * 40]
    for i, header in enumerate(OFFERS + ANSWERS):
        raw = header.encode("latin-1")
        for j, text in enumerate(texts):
            decode_config = bytes((3, 5, 9, 200, 0b11, 0x40)).ljust(40, b"\x00")
            parts = deflate(text, 1 + j % 3)
            data = b"".join(parts)
            yield (bytes((i + j, 0x3F, 0, 0, 1, 0x2A ^ j, j & 1, i & 1, 8, len(raw))) + raw
                   + bytes((j * 37 % 256, j)) + decode_config + data)


TARGETS = {
    "frames": frames_seeds,
    "connection": connection_seeds,
    "session": session_seeds,
    "http": http_seeds,
    "extensions": extensions_seeds,
}

DICTIONARIES = {
    "http": ["GET", "POST", "HTTP/1.1", "HTTP/1.0", "\r\n", "\r\n\r\n", ": ", "Host: ",
             "Upgrade: ", "websocket", "Connection: ", "Upgrade", "keep-alive", "close",
             "Sec-WebSocket-Key: ", WS_KEY, "Sec-WebSocket-Version: ", "13", "8", "7",
             "Sec-WebSocket-Accept: ", _accept(WS_KEY), "Sec-WebSocket-Protocol: ", "chat",
             "Sec-WebSocket-Extensions: ", "Origin: ", "Sec-WebSocket-Origin: ",
             "Sec-WebSocket-Key1: ", "Content-Length: ", "Transfer-Encoding: ", "chunked",
             "101 Switching Protocols", "100 Continue", "null", "http://", "permessage-deflate"],
    "extensions": ["permessage-deflate", "x-webkit-deflate-frame", "deflate-frame",
                   "server_no_context_takeover", "client_no_context_takeover",
                   "server_max_window_bits", "client_max_window_bits", "max_window_bits",
                   "no_context_takeover", "=", ";", ", ", '"', "\\", "8", "9", "15"],
}


def _escape(token: str) -> str:
    return "".join(ch if " " <= ch <= "~" and ch not in '"\\' else f"\\x{ord(ch):02x}"
                   for ch in token)


def write(directory: Path, seeds: Iterable[bytes]) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for seed in seeds:
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        count += 1
    return count


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "seeds"
    for name, make in TARGETS.items():
        count = write(root / name, make())
        print(f"{name}: {count} seeds in {root / name}")
    for name, tokens in DICTIONARIES.items():
        lines = [f'"{_escape(token)}"' for token in tokens]
        (root / f"{name}.dict").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
