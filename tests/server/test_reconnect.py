"""``corral.connect(url, reconnect=...)`` against real corral servers on 127.0.0.1.

A server that closes with 1001, a dropped TCP connection and a server down for a while are
all reconnected, and ``async for`` goes on; a normal close ends the iteration, a 403 is not
retried. With message ids the server replays exactly what the client missed, through a
request header or an ``on_reconnect`` message. The backoff is tested as a pure function with
an injected random source, never by the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

import corral
from corral import (
    CloseKind,
    CloseReason,
    ConnectionClosedError,
    Handler,
    InvalidStatus,
    Reconnect,
    ReconnectingWebSocket,
    Reject,
    Request,
    Text,
    WebSocket,
)
from helpers import eventually as _eventually
from helpers import free_port

pytestmark = [pytest.mark.usefixtures("clean_logs", "no_leftover_tasks"), pytest.mark.timeout(20)]

FAST = Reconnect(initial_delay=0.005, max_delay=0.03, reset_after=0.0)
STEP = 5.0  # the longest any single wait in these tests may take
eventually = functools.partial(_eventually, timeout=STEP, step=0.005)


class Greeter(Handler):
    """Says ``hello N`` (N counts this server's connections), joins topic ``feed``, and
    answers ``echo X`` with ``X``. The test reaches the server-side connections through
    ``server.connections``."""

    opened: int = 0

    def on_open(self, ws: WebSocket) -> Any:
        type(self).opened += 1
        ws.subscribe("feed")
        return Text(f"hello {type(self).opened}")

    def on_message(self, ws: WebSocket, message: str | bytes) -> Any:
        assert isinstance(message, str)
        command, _, rest = message.partition(" ")
        if command == "echo":
            return Text(rest)
        if command == "bye":
            return corral.Close(1000, "done")
        return None


def greeter() -> type[Greeter]:
    """A fresh Greeter class per test, so its connection count starts at 0."""
    return type("Greeter", (Greeter,), {"opened": 0})


@contextlib.asynccontextmanager
async def serving(app: Any, port: int = 0) -> AsyncIterator[corral.Server]:
    async with corral.serve(app, "127.0.0.1", port, close_timeout=2) as server:
        yield server


def url(server_or_port: corral.Server | int) -> str:
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    return f"ws://127.0.0.1:{port}/"


async def recv(ws: Any) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), STEP)


# -- the backoff, as pure functions ------------------------------------------------------------


def test_backoff_caps_grow_by_factor_up_to_max_delay() -> None:
    policy = Reconnect(initial_delay=1.0, factor=2.0, max_delay=10.0)
    # The largest value random() may give stands for the cap itself.
    assert [policy.delay(n, lambda: 1.0) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.delay(10_000, lambda: 0.5) == 5.0  # no overflow, however long it failed
    assert policy.delay(3, lambda: 0.0) == 0.0


def test_backoff_is_full_jitter_over_the_whole_range() -> None:
    policy = Reconnect(initial_delay=1.0, factor=2.0, max_delay=10.0)
    rng = random.Random(6455)
    samples = [policy.delay(3, rng.random) for _ in range(200)]
    assert all(0.0 <= s <= 8.0 for s in samples)
    assert min(samples) < 1.0 and max(samples) > 7.0  # spread over [0, cap], not clustered
    assert len(set(samples)) == len(samples)
    # The same seed gives the same delays: the source of randomness is the only input.
    again = random.Random(6455)
    assert [policy.delay(3, again.random) for _ in range(200)] == samples
    # Averaged, each retry waits longer than the one before until the cap.
    means = [sum(policy.delay(n, rng.random) for _ in range(400)) / 400 for n in range(4)]
    assert means == sorted(means)


def test_which_ends_are_retried() -> None:
    policy = Reconnect()
    assert policy.retries_close(CloseReason(CloseKind.REMOTE, 1001))
    assert policy.retries_close(CloseReason(CloseKind.REMOTE, 1012))
    assert policy.retries_close(CloseReason(CloseKind.LOST, 1006))
    assert policy.retries_close(CloseReason(CloseKind.TIMEOUT, 1006))
    assert not policy.retries_close(CloseReason(CloseKind.REMOTE, 1000))
    assert not policy.retries_close(CloseReason(CloseKind.REMOTE, 1008))
    assert not policy.retries_close(CloseReason(CloseKind.NORMAL, 1000))
    assert not policy.retries_close(CloseReason(CloseKind.CRASH, 1011))
    custom = Reconnect(close_codes=frozenset({4000}))
    assert custom.retries_close(CloseReason(CloseKind.REMOTE, 4000))

    assert policy.retries_error(ConnectionRefusedError())
    assert policy.retries_error(TimeoutError())
    assert policy.retries_error(InvalidStatus(503, [], b""))
    assert policy.retries_error(InvalidStatus(429, [], b""))
    assert policy.retries_error(corral.InvalidResponse("cut short", status=0))
    assert not policy.retries_error(InvalidStatus(403, [], b""))
    assert not policy.retries_error(InvalidStatus(404, [], b""))
    assert not policy.retries_error(corral.InvalidResponse("bad accept key", status=101))
    assert not policy.retries_error(corral.InvalidURI("nope"))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Reconnect(initial_delay=5, max_delay=1)
    with pytest.raises(ValueError):
        Reconnect(factor=0.5)
    with pytest.raises(ValueError):
        Reconnect(max_attempts=0)
    with pytest.raises(TypeError, match="async-for style"):
        corral.connect("ws://h/", reconnect=True, handler=Handler())
    with pytest.raises(TypeError, match="need reconnect"):
        corral.connect("ws://h/", message_id=str)
    with pytest.raises(TypeError, match="needs message_id"):
        corral.connect("ws://h/", reconnect=True, resume_header="Last-Message-Id")
    with pytest.raises(ValueError, match="header name"):
        corral.connect("ws://h/", reconnect=True, message_id=str, resume_header="Last Id")


# -- reconnecting --------------------------------------------------------------------------------


async def test_going_away_1001_reconnects_and_keeps_receiving() -> None:
    app = greeter()
    async with serving(app) as server, corral.connect(url(server), reconnect=FAST) as ws:
        assert isinstance(ws, ReconnectingWebSocket)
        assert await recv(ws) == "hello 1"
        server.publish("feed", "before")
        assert await recv(ws) == "before"
        for conn in server.connections:
            conn.close(1001, "node draining")
        assert await recv(ws) == "hello 2"
        assert ws.reconnects == 1 and ws.open
        server.publish("feed", "after")
        assert await recv(ws) == "after"
        await ws.send("echo still here")
        assert await recv(ws) == "still here"


async def test_dropped_connection_reconnects(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="corral.client")
    app = greeter()
    async with serving(app) as server, corral.connect(url(server), reconnect=FAST) as ws:
        assert await recv(ws) == "hello 1"
        for conn in server.connections:
            conn.abort()  # TCP gone, no close frame: 1006 on the client
        assert await recv(ws) == "hello 2"
        for conn in server.connections:
            conn.abort()
        assert await recv(ws) == "hello 3"
        assert ws.reconnects == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "corral.client"]
    assert sum("ended (lost, 1006)" in m for m in messages) == 2
    assert sum(m.startswith("reconnected to ws://127.0.0.1:") for m in messages) == 2


async def test_server_down_for_a_while_is_retried_until_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="corral.client")
    port = free_port()
    first, second = greeter(), greeter()
    policy = Reconnect(initial_delay=0.005, max_delay=0.03, send_timeout=None)

    def failed_attempts() -> int:
        return sum("failed" in r.getMessage() for r in caplog.records)

    server = await corral.serve(first, "127.0.0.1", port)
    async with corral.connect(url(port), reconnect=policy) as ws:
        assert await recv(ws) == "hello 1"
        await server.close()  # 1001 to every client, and nobody listens any more
        await eventually(lambda: failed_attempts() >= 3)
        assert not ws.open
        # A send while disconnected waits for the next connection, then goes out on it.
        sending = asyncio.create_task(ws.send("echo sent while down"))
        await asyncio.sleep(0)
        assert not sending.done()
        async with serving(second, port):
            assert await recv(ws) == "hello 1"  # the new server's first connection
            await asyncio.wait_for(sending, STEP)
            assert await recv(ws) == "sent while down"
            assert ws.reconnects == 1
    assert second.opened == 1


async def test_send_while_disconnected_gives_up_after_send_timeout() -> None:
    port = free_port()
    policy = Reconnect(initial_delay=0.005, max_delay=0.03, send_timeout=0.05)
    server = await corral.serve(greeter(), "127.0.0.1", port)
    async with corral.connect(url(port), reconnect=policy) as ws:
        assert await recv(ws) == "hello 1"
        await server.close()
        await eventually(lambda: not ws.open)
        with pytest.raises(ConnectionClosedError, match="send_timeout"):
            await ws.send("echo nobody")


async def test_giving_up_after_max_attempts_ends_iteration_with_the_cause() -> None:
    port = free_port()
    policy = Reconnect(initial_delay=0.005, max_delay=0.01, max_attempts=3)
    server = await corral.serve(greeter(), "127.0.0.1", port)
    async with corral.connect(url(port), reconnect=policy) as ws:
        received = []
        with pytest.raises(ConnectionClosedError) as caught:
            async with asyncio.timeout(STEP):
                async for message in ws:
                    received.append(message)
                    if message == "hello 1":
                        await server.close(1012, "restarting")
    assert received == ["hello 1"]
    assert caught.value.code == 1012
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert ws.reconnects == 0


async def test_normal_close_1000_ends_iteration_without_reconnecting() -> None:
    app = greeter()
    async with serving(app) as server, corral.connect(url(server), reconnect=FAST) as ws:
        received = []
        async with asyncio.timeout(STEP):
            async for message in ws:
                received.append(message)
                if message == "hello 1":
                    await ws.send("bye")
        assert received == ["hello 1"]
        assert ws.close_code == 1000 and ws.reconnects == 0
        assert ws.close_reason is not None and ws.close_reason.reason == "done"
    assert app.opened == 1


async def test_application_close_ends_iteration_quietly() -> None:
    async with serving(greeter()) as server, corral.connect(url(server), reconnect=FAST) as ws:
        assert await recv(ws) == "hello 1"
        await ws.close()
        with pytest.raises(corral.ConnectionClosedOK):
            await ws.recv()
        with pytest.raises(corral.ConnectionClosedOK):
            await ws.send("echo too late")
        assert ws.reconnects == 0 and not ws.open


class Gate(Handler):
    """Answers each upgrade with the next status of ``statuses`` (101 = accept)."""

    statuses: list[int]
    upgrades = 0

    def upgrade(self, request: Request) -> Any:
        type(self).upgrades += 1
        status = self.statuses.pop(0) if self.statuses else 101
        return corral.Accept() if status == 101 else Reject(status, "no")

    def on_open(self, ws: WebSocket) -> Any:
        return Text("in")


def gate(*statuses: int) -> type[Gate]:
    return type("Gate", (Gate,), {"statuses": list(statuses), "upgrades": 0})


async def test_403_at_the_handshake_raises_without_retrying() -> None:
    app = gate(403)
    async with serving(app) as server:
        with pytest.raises(InvalidStatus) as caught:
            await asyncio.wait_for(corral.connect(url(server), reconnect=FAST), STEP)
        assert caught.value.status == 403
        assert app.upgrades == 1


async def test_503_at_the_handshake_is_retried() -> None:
    app = gate(503, 503)
    async with serving(app) as server, corral.connect(url(server), reconnect=FAST) as ws:
        assert await recv(ws) == "in"
        assert app.upgrades == 3 and ws.reconnects == 0


async def test_403_on_a_reconnection_ends_the_client() -> None:
    app = gate()
    async with serving(app) as server, corral.connect(url(server), reconnect=FAST) as ws:
        assert await recv(ws) == "in"
        app.statuses.append(403)  # the session was revoked meanwhile
        for conn in server.connections:
            conn.close(1001, "")
        with pytest.raises(ConnectionClosedError) as caught:
            await recv(ws)
        assert isinstance(caught.value.__cause__, InvalidStatus)
        assert caught.value.__cause__.status == 403
        assert app.upgrades == 2


# -- resuming with message ids -------------------------------------------------------------------


class Journal:
    """What a server published, in order; message ``n`` is ``"n:payload"`` and its id ``n``."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def after(self, last_id: str | None) -> list[str]:
        return [] if last_id is None else self.messages[int(last_id) + 1 :]

    def publish(self, server: corral.Server) -> None:
        message = f"{len(self.messages)}:tick"
        self.messages.append(message)
        server.publish("feed", message)


def message_id(message: str | bytes) -> str | None:
    assert isinstance(message, str)
    return message.partition(":")[0]


def header_feed(journal: Journal) -> type[Handler]:
    class Feed(Handler):
        """Replays what came after the client's ``Last-Message-Id``, then goes live. Both
        happen in on_open without an await, so nothing is published in between."""

        def on_open(self, ws: WebSocket) -> Any:
            assert ws.request is not None
            missed = journal.after(ws.request.headers.get("last-message-id"))
            ws.subscribe("feed")
            return [Text(m) for m in missed]

    return Feed


async def collect(ws: Any, journal: Journal, server: corral.Server, drops: int) -> list[str]:
    """Publish 60 messages, dropping every connection ``drops`` times along the way (while
    messages are in flight); return what the client received."""
    received: list[str] = []
    drop_at = {15 * (i + 1) for i in range(drops)}

    async def publisher() -> None:
        for n in range(60):
            if n in drop_at:
                for conn in server.connections:
                    conn.abort()
            journal.publish(server)
            await asyncio.sleep(0.001)

    task = asyncio.create_task(publisher())
    try:
        async with asyncio.timeout(STEP):
            while len(received) < 60:
                message = await ws.recv()
                assert isinstance(message, str)
                received.append(message)
    finally:
        await task
    return received


async def test_resume_header_replays_what_was_missed() -> None:
    journal = Journal()
    async with serving(header_feed(journal)) as server, corral.connect(
        url(server), reconnect=FAST, message_id=message_id, resume_header="Last-Message-Id"
    ) as ws:
        await eventually(lambda: server.subscriber_count("feed") == 1)
        received = await collect(ws, journal, server, drops=3)
        assert received == journal.messages  # nothing lost, nothing twice, in order
        assert ws.last_id == "59" and ws.reconnects == 3


async def test_on_reconnect_hook_gets_the_last_id_and_speaks_first() -> None:
    journal = Journal()
    seen: list[str | None] = []

    class Feed(Handler):
        """Goes live only when told where to resume: ``start`` or ``resume-after N``."""

        def on_message(self, ws: WebSocket, message: str | bytes) -> Any:
            assert isinstance(message, str)
            command, _, last = message.partition(" ")
            if command == "echo":
                return Text(last)
            ws.subscribe("feed")
            return [Text(m) for m in journal.after(last if command == "resume-after" else None)]

    async def resume(ws: ReconnectingWebSocket, last_id: str | None) -> None:
        seen.append(last_id)
        await ws.send(f"resume-after {last_id}")

    async with serving(Feed) as server, corral.connect(
        url(server), reconnect=FAST, message_id=message_id, on_reconnect=resume
    ) as ws:
        await ws.send("start")
        await eventually(lambda: server.subscriber_count("feed") == 1)
        received = await collect(ws, journal, server, drops=2)
        assert received == journal.messages
        assert len(seen) == 2 and all(last is not None for last in seen)
        assert ws.reconnects == 2


async def test_messages_queued_before_a_drop_come_first() -> None:
    journal = Journal()
    async with serving(header_feed(journal)) as server, corral.connect(
        url(server), reconnect=FAST, message_id=message_id, resume_header="Last-Message-Id"
    ) as ws:
        await eventually(lambda: server.subscriber_count("feed") == 1)
        for _ in range(5):
            journal.publish(server)
        await eventually(lambda: ws.last_id == "4")  # arrived, not read yet
        for conn in server.connections:
            conn.close(1012, "restart")
        await eventually(lambda: ws.reconnects == 1)
        for _ in range(5):
            journal.publish(server)
        received = [await recv(ws) for _ in range(10)]
        assert received == journal.messages


async def test_close_while_reconnecting_ends_quietly() -> None:
    port = free_port()
    policy = Reconnect(initial_delay=0.005, max_delay=0.03)
    server = await corral.serve(greeter(), "127.0.0.1", port)
    async with corral.connect(url(port), reconnect=policy) as ws:
        assert await recv(ws) == "hello 1"
        await server.close()
        await eventually(lambda: not ws.open)
        reading = asyncio.create_task(ws.recv())
        await asyncio.wait_for(ws.close(), STEP)  # stops the retries: no task left behind
        with pytest.raises(corral.ConnectionClosedOK):
            await asyncio.wait_for(reading, STEP)
        assert ws.close_code == 1000 and ws.reconnects == 0


@pytest.mark.usefixtures("errors_expected")
async def test_a_failing_on_reconnect_hook_ends_the_client() -> None:
    async def broken(ws: ReconnectingWebSocket, last_id: str | None) -> None:
        raise LookupError("no cursor")

    async with serving(greeter()) as server, corral.connect(
        url(server), reconnect=FAST, on_reconnect=broken
    ) as ws:
        assert await recv(ws) == "hello 1"
        for conn in server.connections:
            conn.close(1001, "")
        received = []
        with pytest.raises(ConnectionClosedError) as caught:
            async with asyncio.timeout(STEP):
                async for message in ws:
                    received.append(message)
        assert isinstance(caught.value.__cause__, LookupError)
        assert caught.value.code == 1011
        assert received in ([], ["hello 2"])  # the new connection's greeting may have come
        with pytest.raises(ConnectionClosedError):
            await ws.send("echo after")
