"""Helpers shared by the tests: frames as a client writes them, frames as a server sends
them, waiting for a condition, a free port, a sample upgrade request. One copy here instead
of one per test file (tests/conftest.py puts this folder on ``sys.path``:
``from helpers import masked``)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import pytest

from corral.protocol.frames import apply_mask

__all__ = ["FRAME", "UPGRADE", "Receive", "Scope", "Send", "asgi_body", "asgi_respond",
           "close_payload", "close_raw", "eventually", "free_port", "http_request", "masked",
           "read_frame", "read_response", "read_to_eof", "twins"]

#: The RFC 6455 section 1.2 upgrade request, with a query (an HTTP parser's usual input).
UPGRADE = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)
FRAME = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"  # RFC 6455 5.7 masked "Hello"


def masked(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
           mask: bool = True, key: bytes | None = None) -> bytes:
    """One frame as a client sends it (RFC 6455 5.2): masked with ``key`` (random by
    default), or unmasked with ``mask=False`` to break the rules; any opcode and RSV bits."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = key if key is not None else os.urandom(4)
    return head + key + apply_mask(payload, key)


def close_payload(code: int, reason: str | bytes = "") -> bytes:
    """A close frame's payload: the code, then the reason's UTF-8 (5.5.1)."""
    return code.to_bytes(2, "big") + (reason.encode() if isinstance(reason, str) else reason)


async def read_frame(reader: asyncio.StreamReader, *, strict: bool = False,
                     timeout: float = 2.0) -> tuple[int, bytes]:
    """One frame from a server: (opcode, payload). Server frames are never masked;
    ``strict``: also FIN set and no RSV bit (no extension in use)."""
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), timeout)
    assert not b1 & 0x80, "server frames are never masked"
    if strict:
        assert b0 & 0xF0 == 0x80, f"FIN without RSV bits expected, got {b0:#x}"
    length = b1 & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await asyncio.wait_for(reader.readexactly(length), timeout)


async def read_to_eof(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    """Everything until the server closes (a reset counts as the end)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


async def close_raw(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def eventually(predicate: Callable[[], object], timeout: float = 2.0,
                     step: float = 0.01) -> None:
    """Wait until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(step)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server in another process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def twins(pure: ModuleType, compiled: str) -> tuple[ModuleType | None, Any, list[Any]]:
    """A pure module and its compiled twin (``"corral._speedups"``): the compiled module or
    None when it is not built, a mark that skips a test without it, and both as
    ``pytest.param``s for ``@pytest.mark.parametrize("impl", ...)``."""
    try:
        module: ModuleType | None = importlib.import_module(compiled)
    except ImportError:
        module = None
    needs_compiled = pytest.mark.skipif(module is None, reason=f"{compiled} is not built")
    return module, needs_compiled, [pytest.param(pure, id="pure"),
                                    pytest.param(module, id="compiled", marks=needs_compiled)]


async def read_response(reader: asyncio.StreamReader, *, head: bool = False,
                        timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: (status, headers with lowercased names, body), the body
    framed by Content-Length, chunked encoding or the end of the connection (none for
    ``head``, the answer to a HEAD, nor for 1xx, 204, 304)."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if head or status < 200 or status in (204, 304):
        return status, headers, b""
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])),
                                      timeout)
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)).strip(),
                       16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await read_to_eof(reader, timeout)
    return status, headers, body


# -- ASGI applications in tests (tests/asgi) --------------------------------------------------

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def asgi_body(receive: Receive) -> bytes:
    """The whole request body, as an application reads it; a disconnect raises OSError, as
    frameworks do (Starlette's ClientDisconnect)."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("the client went away")
        assert message["type"] == "http.request", message
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def asgi_respond(send: Send, status: int, body: bytes,
                       headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A whole response in two messages."""
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


def http_request(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    """An HTTP/1.1 request with a Host, the extra ``headers`` and a Content-Length body."""
    lines = [f"{method} {path} HTTP/1.1", "Host: example.test", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
