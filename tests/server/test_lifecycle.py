"""Startup and shutdown hooks (corral.server.lifecycle) on a real server: when they run
relative to connections, what they are given, and what a failing one does."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

import corral

pytestmark = pytest.mark.usefixtures("no_leftover_tasks")


class Logged(corral.Handler):
    """Records its connection's life in a shared list."""

    log: list[str] = []

    def on_open(self, ws: corral.WebSocket) -> None:
        self.log.append("open")

    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> Any:
        return message

    def on_close(self, ws: corral.WebSocket, reason: corral.CloseReason) -> None:
        self.log.append("close")


def refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_hooks_run_before_the_first_connection_and_after_the_last() -> None:
    log: list[str] = []
    Logged.log = log
    listening: list[list[Any]] = []

    async def startup(server: corral.Server) -> None:
        listening.append(server.sockets)  # nothing listens while startup hooks run
        await asyncio.sleep(0)
        log.append("startup")

    def startup_plain() -> None:  # plain, and without the server
        log.append("startup 2")

    async def shutdown() -> None:
        log.append("shutdown")

    router = corral.Router(on_startup=[startup], on_shutdown=[shutdown])
    router.websocket("/", Logged)
    async with corral.serve(router, port=0, on_startup=[startup_plain],
                            on_shutdown=[lambda server: log.append("shutdown 2")]) as server:
        assert log == ["startup", "startup 2"]
        async with corral.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 2) == "hi"
            await asyncio.sleep(0.05)  # a connection still open when the server closes
            closing = asyncio.ensure_future(server.close())
            await asyncio.wait_for(closing, 3)
    assert listening == [[]]
    # The router's hooks first, then serve()'s; shutdown after the last connection closed.
    assert log == ["startup", "startup 2", "open", "close", "shutdown", "shutdown 2"]


async def test_a_startup_hook_can_start_a_feed_that_publishes_to_topics() -> None:
    """The issue's example: a background task started by a startup hook publishes to a
    topic; a subscriber gets it; the shutdown hook stops the task."""
    tasks: list[asyncio.Task[None]] = []

    async def feed(server: corral.Server) -> None:
        while True:
            server.publish("prices", "tick")
            await asyncio.sleep(0.01)

    async def start(server: corral.Server) -> None:
        tasks.append(asyncio.create_task(feed(server)))

    async def stop() -> None:
        tasks[0].cancel()
        await asyncio.gather(tasks[0], return_exceptions=True)

    class Subscriber(corral.Handler):
        def on_open(self, ws: corral.WebSocket) -> None:
            ws.subscribe("prices")

    router = corral.Router(on_startup=[start], on_shutdown=[stop]).websocket("/", Subscriber)
    async with corral.serve(router, port=0) as server, \
            corral.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        assert await asyncio.wait_for(ws.recv(), 2) == "tick"
    assert tasks[0].done()


async def test_a_failing_startup_hook_stops_the_start(caplog: pytest.LogCaptureFixture) -> None:
    later: list[str] = []

    def broken(server: corral.Server) -> None:
        raise ConnectionError("database unreachable")

    with socket.socket() as probe:  # a free port, to show nothing listens on it after
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    router = corral.Router(on_startup=[broken, lambda: later.append("not run")])
    router.websocket("/", Logged)
    with pytest.raises(corral.StartupError) as info:
        await corral.serve(router, port=port)
    assert str(info.value) == ("startup hook test_a_failing_startup_hook_stops_the_start."
                               "<locals>.broken failed: ConnectionError: database unreachable")
    assert isinstance(info.value.__cause__, ConnectionError)
    assert later == [] and refused(port)


async def test_every_shutdown_hook_runs_and_a_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("flush failed")

    router = corral.Router(on_shutdown=[broken, lambda: ran.append("second")])
    router.websocket("/", Logged)
    caplog.set_level(logging.ERROR, logger="corral.server")
    async with corral.serve(router, port=0):
        pass
    assert ran == ["second"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "shutdown hook test_every_shutdown_hook_runs_and_a_failure_is_logged.<locals>.broken "
        "failed"]


def test_a_hook_that_cannot_be_called_is_refused_when_given() -> None:
    def two(server: Any, other: Any) -> None:
        """Two arguments: neither hook(server) nor hook() can call it."""

    with pytest.raises(TypeError, match="must take the server or nothing"):
        corral.Router(on_startup=[two])
    with pytest.raises(TypeError, match="hooks are callables"):
        corral.serve(Logged, on_shutdown=["not callable"])
