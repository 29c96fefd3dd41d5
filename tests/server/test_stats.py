"""``Server.stats()`` and the ``/metrics`` route, on real sockets (127.0.0.1, port 0).

Every figure is checked against what the test itself sent and received: exact counts of
handshakes by outcome, HTTP answers by status, closes by kind, messages and bytes each way
(frames as they cross the wire), on the compiled hot path and the pure one alike (the
suite runs in both modes). Drops and backpressure closes are checked in
test_backpressure.py, where a slow peer exists; several workers in
tests/interop/test_workers.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import corral
from corral.metrics import CorralCollector, metrics, metrics_handler
from corral.server.stats import (
    CLOSE_KINDS,
    HANDSHAKE_OUTCOMES,
    ServerStats,
    read_shared,
    share_stats,
    write_shared,
)
from helpers import close_payload, eventually, masked, read_frame, read_to_eof

pytestmark = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class Echo(corral.Handler):
    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        return message


class Crashes(corral.Handler):
    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        raise RuntimeError("boom")


class Refuses(corral.Handler):
    def upgrade(self, request: corral.Request) -> Any:
        return corral.Reject(401, "who are you?\n")


class Raises(corral.Handler):
    def upgrade(self, request: corral.Request) -> Any:
        raise RuntimeError("upgrade broke")


class Slow(corral.Handler):
    """Takes its time to decide."""

    deciding: list[corral.Request] = []

    async def upgrade(self, request: corral.Request) -> Any:
        self.deciding.append(request)
        await asyncio.sleep(0.3)
        return corral.Accept()


def app() -> corral.Router:
    router = corral.Router()
    router.websocket("/echo", Echo)
    router.websocket("/crash", Crashes)
    router.websocket("/refuse", Refuses)
    router.websocket("/raise", Raises)
    router.websocket("/slow", Slow)
    router.websocket("/strict", Echo, options={"allowed_origins": ["https://good.example"]})
    router.http("/hello", lambda request: corral.Response.text("hello"), methods=["GET"])
    router.http("/metrics", metrics)
    return router


def upgrade(path: str, *, version: str = "13", origin: str | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}",
             f"Sec-WebSocket-Version: {version}"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await read_to_eof(reader)
    finally:
        writer.close()


async def get(port: int, path: str, accept: str = "") -> tuple[int, str, str]:
    """A plain HTTP GET: status, content type, body."""

    def fetch() -> tuple[int, str, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                         headers={"Accept": accept} if accept else {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return (response.status, response.headers["Content-Type"],
                        response.read().decode())
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read().decode()

    return await asyncio.to_thread(fetch)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus text page as {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_a_fresh_server_counts_nothing() -> None:
    async with corral.serve(app(), "127.0.0.1", 0) as server:
        stats = server.stats()
    assert stats.worker == 0 and stats.pid == os.getpid()
    assert stats.started_at <= stats.taken_at
    assert dict(stats.handshakes) == dict.fromkeys(HANDSHAKE_OUTCOMES, 0)
    assert dict(stats.closes) == dict.fromkeys(CLOSE_KINDS, 0)
    assert stats.http_responses == {}
    assert (stats.connections_accepted, stats.http_connections, stats.websockets) == (0, 0, 0)
    assert (stats.messages_received, stats.messages_sent, stats.bytes_received,
            stats.bytes_sent) == (0, 0, 0, 0)
    assert (stats.broker, stats.broker_connected, stats.topics, stats.subscriptions) == (
        "memory", True, 0, 0)


async def test_messages_and_bytes_each_way_are_what_crossed_the_wire() -> None:
    async with corral.serve(app(), "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(upgrade("/echo"))
        await reader.readuntil(b"\r\n\r\n")
        # Three whole messages in one write (the compiled hot path takes such a read in C),
        # then a message in two fragments (the Python path): four messages each way.
        sent = (masked(0x1, b"one") + masked(0x2, b"two!") + masked(0x1, b"x" * 200)
                + masked(0x1, b"frag", fin=False) + masked(0x0, b"ment"))
        writer.write(sent)
        answers = [await read_frame(reader) for _ in range(4)]
        assert answers == [(1, b"one"), (2, b"two!"), (1, b"x" * 200), (1, b"fragment")]
        await eventually(lambda: server.stats().messages_received == 4)
        stats = server.stats()
        assert (stats.websockets, stats.messages_sent) == (1, 4)
        assert stats.bytes_received == len(sent)
        # Unmasked frames: a 2-byte header (4 for 126-65535 bytes) and the payload.
        assert stats.bytes_sent == (2 + 3) + (2 + 4) + (4 + 200) + (2 + 8)
        close = masked(0x8, close_payload(1000))
        writer.write(close)
        assert await read_frame(reader) == (8, close_payload(1000))
        await read_to_eof(reader)
        writer.close()
        await eventually(lambda: server.stats().websockets == 0)
        stats = server.stats()
        assert stats.bytes_received == len(sent) + len(close)
        assert stats.bytes_sent == 225 + 4
        assert stats.closes["remote"] == 1
        assert (stats.connections_accepted, stats.handshakes["accepted"]) == (1, 1)


async def test_the_async_style_and_compression_are_counted_too() -> None:
    async def echo(ws: corral.AsyncWebSocket) -> None:
        async for message in ws:
            await ws.send(message)

    deflate = corral.DeflateSettings()
    async with corral.serve(echo, "127.0.0.1", 0, compression=deflate) as server:
        async with corral.connect(f"ws://127.0.0.1:{server.port}/",
                                  compression=deflate) as client:
            for _ in range(3):
                await client.send("a" * 1000)
                assert await client.recv() == "a" * 1000
        await eventually(lambda: server.stats().closes["remote"] == 1)
        stats = server.stats()
    assert (stats.messages_received, stats.messages_sent) == (3, 3)
    # Compressed frames: far fewer bytes than the 3,000 of text each way.
    assert 0 < stats.bytes_received < 200 and 0 < stats.bytes_sent < 200


async def test_handshakes_by_outcome_and_http_answers_by_status(
    errors_expected: None,
) -> None:
    async with corral.serve(app(), "127.0.0.1", 0) as server:
        port = server.port
        assert (await exchange(port, upgrade("/refuse"))).startswith(b"HTTP/1.1 401 ")
        assert (await exchange(port, upgrade("/echo", version="99"))).startswith(
            b"HTTP/1.1 426 ")
        assert (await exchange(port, upgrade("/strict", origin="https://evil.example"))
                ).startswith(b"HTTP/1.1 403 ")
        assert (await exchange(port, upgrade("/raise"))).startswith(b"HTTP/1.1 500 ")
        assert (await get(port, "/hello"))[0] == 200
        assert (await exchange(port, b"POST /hello HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                ).startswith(b"HTTP/1.1 405 ")
        assert (await get(port, "/nowhere"))[0] == 404
        stats = server.stats()
    assert dict(stats.handshakes) == {"accepted": 0, "rejected": 1, "refused": 2, "error": 1,
                                      "abandoned": 0}
    assert dict(stats.http_responses) == {200: 1, 401: 1, 403: 1, 404: 1, 405: 1, 426: 1,
                                          500: 1}
    assert stats.connections_accepted == 7


async def test_a_handshake_abandoned_when_the_server_stops_during_an_async_upgrade() -> None:
    Slow.deciding = []
    server = await corral.serve(app(), "127.0.0.1", 0, close_timeout=0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(upgrade("/slow"))
    await eventually(lambda: len(Slow.deciding) == 1)
    await server.close()  # gives up on the connection after the close timeout
    assert await read_to_eof(reader) == b""
    writer.close()
    await eventually(lambda: server.stats().handshakes["abandoned"] == 1)
    assert server.stats().handshakes["accepted"] == 0


async def test_closes_by_kind(crash_expected: None) -> None:
    async with corral.serve(app(), "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with corral.connect(f"{url}/echo"):
            pass  # the client closes first: "remote" on the server
        async with corral.connect(f"{url}/crash") as client:
            await client.send("hi")  # the handler raises: "crash", 1011
            with pytest.raises(corral.ConnectionClosed):
                await client.recv()
        # A protocol error: an unmasked frame from a client.
        assert (await exchange(server.port, upgrade("/echo") + masked(0x1, b"x", mask=False))
                ).startswith(b"HTTP/1.1 101 ")
        # A TCP connection dropped without a close handshake.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(upgrade("/echo"))
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()
        # One still open when the server shuts down.
        client = await corral.connect(f"{url}/echo")
        await eventually(lambda: sum(server.stats().closes.values()) == 4)
        assert server.stats().websockets == 1
    stats = server.stats()
    with pytest.raises(corral.ConnectionClosed):
        await client.recv()
    assert dict(stats.closes) == {"normal": 0, "remote": 1, "timeout": 0, "protocol_error": 1,
                                  "crash": 1, "shutdown": 1, "lost": 1}
    assert stats.handshakes["accepted"] == 5 and stats.websockets == 0


async def test_publishes_topics_and_subscriptions() -> None:
    class Member(corral.Handler):
        def on_open(self, ws: corral.WebSocket) -> None:
            ws.subscribe("room")
            ws.subscribe(f"own-{id(ws)}")

    async with corral.serve(Member, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}/"
        clients = [await corral.connect(url) for _ in range(3)]
        await eventually(lambda: server.subscriber_count("room") == 3)
        assert await server.publish("room", "news") == 3
        for client in clients:
            assert await client.recv() == "news"
        stats = server.stats()
        assert (stats.publishes, stats.publish_failures) == (1, 0)
        assert (stats.topics, stats.subscriptions) == (4, 6)
        assert stats.messages_sent == 3  # one frame written to each subscriber
        for client in clients:
            await client.close()


async def test_stats_survive_json_and_the_shared_directory(tmp_path: Any) -> None:
    async with corral.serve(app(), "127.0.0.1", 0) as server:
        await get(server.port, "/hello")
        stats = server.stats()
    assert ServerStats.from_dict(json.loads(json.dumps(stats.as_dict()))) == stats
    with pytest.raises(ValueError, match="not a corral stats snapshot"):
        ServerStats.from_dict({"worker": 1})
    directory = str(tmp_path)
    other = ServerStats.from_dict({**stats.as_dict(), "worker": 3, "pid": 1})
    write_shared(directory, other)
    write_shared(directory, stats)
    (tmp_path / "worker-7.json").write_text("{not json")  # a worker caught mid-crash
    (tmp_path / "unrelated.txt").write_text("x")
    assert read_shared(directory) == [stats, other]
    assert sorted(os.listdir(directory)) == ["unrelated.txt", "worker-0.json", "worker-3.json",
                                             "worker-7.json"]  # no temporary file left


async def test_a_worker_shares_its_stats_and_sees_the_others(tmp_path: Any) -> None:
    directory = str(tmp_path)
    async with corral.serve(app(), "127.0.0.1", 0, worker=2, stats_dir=directory) as server:
        # Its own file appears at once, then is refreshed.
        await eventually(lambda: [s.worker for s in read_shared(directory)] == [2])
        other = ServerStats.from_dict({**server.stats().as_dict(), "worker": 0, "pid": 1,
                                       "messages_received": 41})
        write_shared(directory, other)
        await get(server.port, "/hello")
        together = server.worker_stats()
        assert [s.worker for s in together] == [0, 2]
        assert together[0] == other
        assert together[1].http_responses == {200: 1}  # its own: current, not the file's
        await eventually(lambda: read_shared(directory)[1].http_responses == {200: 1},
                         timeout=3)


async def test_sharing_goes_on_after_a_failed_write(tmp_path: Any,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    async with corral.serve(app(), "127.0.0.1", 0) as server:
        missing = str(tmp_path / "gone")
        task = asyncio.create_task(share_stats(missing, server.stats, interval=0.01))
        await eventually(lambda: any("cannot share" in r.getMessage() for r in caplog.records))
        os.mkdir(missing)
        await eventually(lambda: os.path.exists(os.path.join(missing, "worker-0.json")))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sum("cannot share" in r.getMessage() for r in caplog.records) == 1


async def test_a_prometheus_scrape_reads_the_same_figures() -> None:
    async with corral.serve(app(), "127.0.0.1", 0) as server:
        async with corral.connect(f"ws://127.0.0.1:{server.port}/echo") as client:
            await client.send("ping me")
            assert await client.recv() == "ping me"
            status, content_type, page = await get(server.port, "/metrics")
            assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
            values = samples(page)
            worker = (("worker", "0"),)
            assert values[("corral_websockets", worker)] == 1
            assert values[("corral_messages_received_total", worker)] == 1
            assert values[("corral_messages_sent_total", worker)] == 1
            assert values[("corral_received_bytes_total", worker)] == 2 + 4 + 7
            assert values[("corral_sent_bytes_total", worker)] == 2 + 7
            assert values[("corral_handshakes_total", (("outcome", "accepted"), *worker))] == 1
            assert values[("corral_broker_connected", (("broker", "memory"), *worker))] == 1
            assert values[("corral_worker_info", (("pid", str(os.getpid())), *worker))] == 1
            # prometheus_client's default registry is served beside corral's figures.
            assert any(name.startswith("python_gc_") for name, _ in values)
        status, _, page = await get(server.port, "/metrics")
        values = samples(page)
        # The first scrape's answer is counted by the second one.
        assert values[("corral_http_responses_total", (("status", "200"), *worker))] == 1
        assert values[("corral_websocket_closes_total", (("kind", "remote"), *worker))] == 1
        # OpenMetrics when the scraper asks for it.
        status, content_type, page = await get(
            server.port, "/metrics", accept="application/openmetrics-text; version=1.0.0")
        assert content_type.startswith("application/openmetrics-text")
        assert page.endswith("# EOF\n")


async def test_a_metrics_route_without_the_default_registry() -> None:
    router = corral.Router()
    router.http("/metrics", metrics_handler(registry=None))
    async with corral.serve(router, "127.0.0.1", 0) as server:
        _, _, page = await get(server.port, "/metrics")
    names = {family.name for family in text_string_to_metric_families(page)}
    assert names and all(name.startswith("corral_") for name in names)
    # The collector alone, for a registry of one's own.
    collected = list(CorralCollector(lambda: [server.stats()]).collect())
    assert {m.name for m in collected} == names


def test_a_metrics_handler_called_without_a_server() -> None:
    from corral.protocol.http11 import RequestParser

    (http,) = RequestParser().feed(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    response = metrics(corral.Request(http))
    assert response.status == 500 and "no server" in str(response.body)
