"""A real browser against corral: headless Chromium (Debian's) driven by Playwright.

The page corral serves at "/" uses the browser's own WebSocket API; each test calls one of
its functions with ``page.evaluate``. What is checked: Chromium's permessage-deflate offer
and corral's answer as the browser reports it (``ws.extensions``); text, a large compressible
text and binary echoed intact, and compressed on the wire (counted by a TCP relay between
browser and server); the close code and reason reaching the handler; the default origin
policy refusing a page from another origin, and a route's ``allowed_origins`` admitting it.

Skipped when Playwright or /usr/bin/chromium is missing (``scripts/test.sh`` installs both).
Playwright's own browser download is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install "
                    "-e '.[test]')")
from playwright.async_api import Page, async_playwright

import corral
from corral import (
    Accept,
    Binary,
    CloseKind,
    CloseReason,
    DeflateSettings,
    Handler,
    Options,
    Request,
    Response,
    Router,
    Text,
    WebSocket,
)
from corral.protocol.extensions.negotiation import server_accept
from corral.protocol.handshake import parse_extension_header

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
MiB = 2**20

pytestmark = [
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"{CHROMIUM} is missing (apt-get install chromium; "
                              "scripts/install-system-deps.sh does it)"),
    pytest.mark.timeout(30),
]

# The page: helpers over the browser's WebSocket API, and a log of what happened in the DOM.
# Every wait has a time limit, so a silent server fails the test instead of hanging it.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>corral in Chromium</title>
<style>
body { font: 14px monospace; margin: 1em; }
li.ok { color: #060; } li.bad { color: #a00; }
</style></head>
<body><h1>corral &harr; Chromium</h1><ul id="log"></ul>
<script>
"use strict";

function log(text, ok) {
  const li = document.createElement("li");
  li.textContent = (ok ? "\\u2713 " : "\\u2717 ") + text;
  li.className = ok ? "ok" : "bad";
  document.getElementById("log").append(li);
}

// A WebSocket whose events queue up; next() waits for the following one (5 s at most).
function connect(url) {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const queue = [], waiters = [];
  const push = (event) => waiters.length ? waiters.shift()(event) : queue.push(event);
  ws.onopen = () => push({type: "open"});
  ws.onmessage = (e) => push({type: "message", data: e.data});
  ws.onerror = () => push({type: "error"});
  ws.onclose = (e) => push({type: "close", code: e.code, reason: e.reason,
                           wasClean: e.wasClean});
  const next = () => new Promise((resolve, reject) => {
    if (queue.length) return resolve(queue.shift());
    const timer = setTimeout(() => reject(new Error("no WebSocket event in 5 s")), 5000);
    waiters.push((event) => { clearTimeout(timer); resolve(event); });
  });
  return {ws, next};
}

function sameBytes(a, b) {
  if (!(a instanceof ArrayBuffer) || a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a), y = new Uint8Array(b);
  return x.every((v, i) => v === y[i]);
}

function bigJson(size) {  // JSON-like records, mixed UTF-8 widths, about `size` characters
  const parts = [];
  let length = 0;
  for (let i = 0; length < size; i++) {
    const part = JSON.stringify({id: i, user: "corral", text: "h\\u00e9llo w\\u00f6rld \\u20ac",
                                 tags: ["ws", "deflate"], ok: i % 3 === 0}) + "\\n";
    parts.push(part);
    length += part.length;
  }
  return parts.join("");
}

async function echoTest(url) {
  const {ws, next} = connect(url);
  const opened = await next();
  if (opened.type !== "open") throw new Error("not opened: " + JSON.stringify(opened));
  log("open " + url + ", extensions: " + ws.extensions, true);
  const bytes = new Uint8Array(70000).map((_, i) => (i * 7) % 256);
  const messages = ["hello", "", "h\\u00e9llo w\\u00f6rld \\u20ac \\ud83d\\ude00",
                    JSON.stringify({kind: "chat", body: "x".repeat(200)}),
                    bigJson(1 << 20), bytes.buffer];
  const echoes = [];
  for (const sent of messages) {
    ws.send(sent);
    const got = await next();
    const binary = sent instanceof ArrayBuffer;
    const same = got.type === "message" &&
      (binary ? sameBytes(got.data, sent) : got.data === sent);
    const size = binary ? sent.byteLength : sent.length;
    echoes.push({binary, size, same});
    log((binary ? "binary, bytes: " : "text, characters: ") + size +
        (same ? ", echoed" : ", NOT echoed"), same);
  }
  ws.close(4000, "bye from chromium");
  const closed = await next();
  log("closed " + closed.code + " " + closed.reason, closed.wasClean);
  return {extensions: ws.extensions, echoes, closed};
}

// Connect, and if that works send one message and close: what a cross-origin page sees.
async function tryConnect(url, message) {
  const {ws, next} = connect(url);
  const first = await next();
  if (first.type !== "open") {
    const events = [first];
    if (first.type === "error") events.push(await next());
    log("refused: " + url, false);
    return {opened: false, events};
  }
  ws.send(message);
  const echo = await next();
  ws.close(1000);
  const closed = await next();
  log("open " + url + ", echoed " + echo.data, true);
  return {opened: true, echo: echo.data, closed};
}
</script></body></html>
"""


@dataclass
class Record:
    """What the server's handlers saw, for the test to check."""

    offers: list[str | None] = field(default_factory=list)
    origins: list[str | None] = field(default_factory=list)
    extensions: list[tuple[str, ...]] = field(default_factory=list)
    messages: list[tuple[type, int]] = field(default_factory=list)
    closes: list[CloseReason] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class Echo(Handler):
    """Echoes every message and notes the handshake, the messages and the close."""

    def __init__(self, record: Record) -> None:
        self.record = record

    def upgrade(self, request: Request) -> Accept:
        self.record.offers.append(request.headers.get("sec-websocket-extensions"))
        self.record.origins.append(request.origin)
        return Accept()

    def on_open(self, ws: WebSocket) -> None:
        self.record.extensions.append(ws.extensions)

    def on_message(self, ws: WebSocket, message: str | bytes) -> Text | Binary:
        self.record.messages.append((type(message), len(message)))
        return Text(message) if isinstance(message, str) else Binary(message)

    def on_close(self, ws: WebSocket, reason: CloseReason) -> None:
        self.record.closes.append(reason)
        self.record.closed.set()


def page_router() -> Router:
    return Router().http("/", lambda request: Response.html(PAGE))


class Relay:
    """A TCP relay that counts the bytes of each connection both ways: how the test sees
    what compression did on the wire (the browser reports only inflated messages)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections: list[dict[str, Any]] = []
        self.port = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        counts = {"first": b"", "up": 0, "down": 0}
        self.connections.append(counts)
        await asyncio.gather(self._pipe(reader, up_writer, counts, "up"),
                             self._pipe(up_reader, writer, counts, "down"))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    counts: dict[str, Any], direction: str) -> None:
        try:
            while data := await reader.read(65536):
                if not counts["first"]:
                    counts["first"] = data
                counts[direction] += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def websocket_bytes(self, path: str) -> tuple[int, int]:
        """Bytes (browser to server, server to browser) of the connection that asked for
        ``path``, handshake included."""
        prefix = f"GET {path} ".encode()
        (counts,) = [c for c in self.connections if c["first"].startswith(prefix)]
        return counts["up"], counts["down"]


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS)
        try:
            yield await browser.new_page(viewport={"width": 900, "height": 420})
        finally:
            await browser.close()


async def test_echo_with_permessage_deflate(page: Page) -> None:
    record = Record()
    router = page_router().websocket(
        "/ws", lambda: Echo(record),
        options=Options(compression=DeflateSettings(), max_message_size=4 * MiB),
    )
    async with corral.serve(router, "127.0.0.1", 0) as server, \
            Relay(server.port).running() as relay:
        await page.goto(f"http://127.0.0.1:{relay.port}/")
        result = await page.evaluate("url => echoTest(url)", f"ws://127.0.0.1:{relay.port}/ws")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "browser-echo.png"), full_page=True)
        await asyncio.wait_for(record.closed.wait(), 5)

    # Chromium offers permessage-deflate; the answer it reports is the one corral sent.
    (offer,) = record.offers
    assert offer is not None and offer.startswith("permessage-deflate")
    _, answer = server_accept(parse_extension_header([offer]), DeflateSettings())
    assert answer is not None and answer.startswith("permessage-deflate")
    assert result["extensions"] == answer
    assert record.extensions == [("permessage-deflate",)]

    echoes = result["echoes"]
    assert [e["same"] for e in echoes] == [True] * 6, echoes
    assert [e["binary"] for e in echoes] == [False] * 5 + [True]
    assert echoes[4]["size"] >= MiB
    assert [kind for kind, _ in record.messages] == [str] * 5 + [bytes]
    assert record.messages[-1] == (bytes, 70000)

    # Both directions went compressed: far fewer bytes on the wire than the ~1.1 MiB sent.
    up, down = relay.websocket_bytes("/ws")
    sent = sum(e["size"] for e in echoes)
    assert up < sent / 4 and down < sent / 4, (up, down, sent)

    # corral answers with the code it received and no reason (RFC 6455 5.5.1 asks no more).
    assert result["closed"] == {"type": "close", "code": 4000, "reason": "", "wasClean": True}
    (reason,) = record.closes
    assert (reason.kind, reason.code, reason.reason) == (CloseKind.REMOTE, 4000,
                                                         "bye from chromium")


async def test_cross_origin_page(page: Page) -> None:
    """A page from another origin (another port) is refused by default (section 10.2: the
    browser sees only a failed connection, 1006) and admitted by a route's allowed_origins."""
    default, listed = Record(), Record()
    async with corral.serve(page_router(), "127.0.0.1", 0) as other:
        other_origin = f"http://127.0.0.1:{other.port}"
        router = (page_router()
                  .websocket("/ws", lambda: Echo(default))
                  .websocket("/ws-listed", lambda: Echo(listed),
                             options={"allowed_origins": [other_origin]}))
        async with corral.serve(router, "127.0.0.1", 0) as server:
            await page.goto(other_origin + "/")
            base = f"ws://127.0.0.1:{server.port}"
            refused = await page.evaluate("url => tryConnect(url, 'hi')", base + "/ws")
            admitted = await page.evaluate("url => tryConnect(url, 'hi')", base + "/ws-listed")
            await asyncio.wait_for(listed.closed.wait(), 5)
            # The same route from its own origin: the refusal above was the origin's doing.
            own_origin = f"http://127.0.0.1:{server.port}"
            await page.goto(own_origin + "/")
            same = await page.evaluate("url => tryConnect(url, 'hi')", base + "/ws")
            await asyncio.wait_for(default.closed.wait(), 5)

    assert refused["opened"] is False
    assert refused["events"][0] == {"type": "error"}
    assert refused["events"][1]["type"] == "close"
    assert refused["events"][1]["code"] == 1006
    assert same["opened"] is True and same["echo"] == "hi"
    # Only the same-origin page reached the handler: the refusal came before it existed.
    assert default.origins == [own_origin]

    assert admitted["opened"] is True and admitted["echo"] == "hi"
    assert admitted["closed"]["code"] == 1000
    assert listed.origins == [other_origin]
    assert listed.closes[0].kind is CloseKind.REMOTE


async def test_a_starlette_app_served_by_corral(page: Page) -> None:
    """The same echo through an ASGI application (Starlette) on corral: Chromium's page from
    a Starlette route, its WebSocket on corral's engine, compressed as a corral handler's."""
    from starlette.applications import Starlette
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import HTMLResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket as StarletteWebSocket

    disconnects: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def home(request: StarletteRequest) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def echo(websocket: StarletteWebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                disconnects.append(message)
                done.set()
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])

    app = Starlette(routes=[Route("/", home), WebSocketRoute("/ws", echo)])
    async with corral.serve(app, "127.0.0.1", 0, compression=DeflateSettings(),
                            max_message_size=4 * MiB) as server, \
            Relay(server.port).running() as relay:
        await page.goto(f"http://127.0.0.1:{relay.port}/")
        result = await page.evaluate("url => echoTest(url)", f"ws://127.0.0.1:{relay.port}/ws")
        await asyncio.wait_for(done.wait(), 5)

    assert result["extensions"].startswith("permessage-deflate")
    assert [e["same"] for e in result["echoes"]] == [True] * 6, result["echoes"]
    up, down = relay.websocket_bytes("/ws")
    sent = sum(e["size"] for e in result["echoes"])
    assert up < sent / 4 and down < sent / 4, (up, down, sent)
    assert result["closed"] == {"type": "close", "code": 4000, "reason": "", "wasClean": True}
    assert disconnects == [{"type": "websocket.disconnect", "code": 4000,
                            "reason": "bye from chromium"}]
