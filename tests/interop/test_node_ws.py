"""corral against Node's ``ws`` package (version 8, tests/interop/node), both ways round.

Issue 9 found that a ``ws`` server with ``perMessageDeflate: {clientMaxWindowBits: 15}``
refused corral's client with HTTP 400, because the client offered
``client_max_window_bits=12``. Now the client offers the parameter bare, as browsers do: every
``ws`` server setting below must accept it, agree on the parameters, and echo text and
binary messages of many sizes intact. The other way round, a ``ws`` client (with and without
compression) echoes through corral's server.

The peer is tests/interop/node/ws_peer.js; scripts/install-node-peers.sh installs ``ws``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import corral
from corral import AsyncWebSocket, DeflateSettings

NODE_DIR = Path(__file__).parent / "node"
PEER = NODE_DIR / "ws_peer.js"
NODE = shutil.which("node")
PMD = "permessage-deflate"


def _skip_reason() -> str | None:
    if NODE is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "ws" / "package.json").exists():
        return "the ws npm package is not installed (scripts/install-node-peers.sh)"
    return None


pytestmark = [pytest.mark.timeout(30),
              pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]


async def _line(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 10)
    assert line, "the node peer exited without a word"
    return json.loads(line)  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def ws_server(deflate: Any) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """A ``ws`` echo server with ``perMessageDeflate: deflate``; yields its URL."""
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE, str(PEER), "server", json.dumps(deflate), cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE)
    try:
        port = (await _line(process))["listening"]
        yield f"ws://127.0.0.1:{port}/", process
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 5)


def messages() -> list[str | bytes]:
    out: list[str | bytes] = []
    for size in (0, 1, 64, 1000, 70_000, 1 << 20):
        text = ("corral and ws, " * (size // 15 + 1))[:size]
        out += [text, text.encode(), bytes(i * 7 % 256 for i in range(size))]
    return out


# ws option -> what ws answers to corral's default offer
# (permessage-deflate; client_max_window_bits).
WS_SERVERS: dict[str, tuple[Any, str | None]] = {
    "off": (False, None),  # ws 8's default: no compression
    "defaults": (True, PMD),
    "client-15": ({"clientMaxWindowBits": 15}, f"{PMD}; client_max_window_bits=15"),
    "client-10": ({"clientMaxWindowBits": 10}, f"{PMD}; client_max_window_bits=10"),
    "server-10": ({"serverMaxWindowBits": 10}, f"{PMD}; server_max_window_bits=10"),
    "no-takeover": ({"serverNoContextTakeover": True, "clientNoContextTakeover": True},
                    f"{PMD}; server_no_context_takeover; client_no_context_takeover"),
}


@pytest.mark.parametrize("name", list(WS_SERVERS))
async def test_corral_client_against_ws_server(name: str) -> None:
    deflate, expected = WS_SERVERS[name]
    async with (ws_server(deflate) as (url, process),
                corral.connect(url, max_message_size=4 << 20) as ws):
        assert isinstance(ws, AsyncWebSocket)
        handshake = await _line(process)
        assert handshake["offer"] == f"{PMD}; client_max_window_bits"
        assert handshake["answer"] == (None if expected is None
                                       else f"Sec-WebSocket-Extensions: {expected}")
        assert ws.ws is not None
        assert ws.ws.extensions == ((PMD,) if expected else ())
        if expected:
            # corral compresses with its own window (12) when ws allows more.
            (ext,) = ws.ws.conn.extensions
            bits = 10 if name == "client-10" else 12
            assert ext.local_max_window_bits == bits  # type: ignore[attr-defined]
        for message in messages():
            await ws.send(message)
            assert await ws.recv() == message
        await ws.send_fragments([b"x" * 5000, b"", b"y" * 70, b"z"])
        assert await ws.recv() == b"x" * 5000 + b"y" * 70 + b"z"


class Echo(corral.Handler):
    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> None:
        ws.send(message)


@pytest.mark.parametrize("deflate", [False, True, {"clientMaxWindowBits": 10}],
                         ids=["off", "on", "client-10"])
@pytest.mark.parametrize("preset", ["balanced", "low-memory", "max-compression"])
async def test_ws_client_against_corral_server(deflate: Any, preset: str) -> None:
    assert NODE is not None
    compression: DeflateSettings = corral.COMPRESSION_PRESETS[preset]
    async with corral.serve(Echo, "127.0.0.1", 0, compression=compression) as server:
        process = await asyncio.create_subprocess_exec(
            NODE, str(PEER), "client", f"ws://127.0.0.1:{server.port}/", json.dumps(deflate),
            "40", cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE)
        try:
            answer = (await _line(process))["answer"]
            outcome = await _line(process)
            assert await asyncio.wait_for(process.wait(), 10) == 0, outcome
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert outcome == {"echoed": 40, "code": 1000}
    if deflate is False:
        assert answer is None
    else:
        assert answer is not None and answer.startswith(PMD)
