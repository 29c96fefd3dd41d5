"""The Redis broker against a real redis-server: two corral servers in this process are two
nodes sharing it, with clients on each.

A publish reaches every node's subscribers once, in order, text and binary kept; history;
presence across nodes, a node killed without leaving, a node closing; topic names that would
be glob characters or key separators; Redis going away (publishes fail, loudly, at once) and
coming back (the broker reconnects by itself); a Redis that hangs; a Redis that is not there
at start. The topic encoding is checked on its own with hypothesis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

pytest.importorskip("redis")

import redis.asyncio as redis_asyncio

import corral
from corral import Handler, PublishError, PublishFailed, Text, WebSocket
from corral.pubsub import make_broker
from corral.pubsub.redis import (
    RedisBroker,
    _display_url,
    _split_url,
    decode_topic,
    encode_topic,
    pack_message,
    unpack_message,
)

redis_test = pytest.mark.usefixtures("clean_logs", "no_leftover_tasks")

TIMEOUT = 5.0  # the longest bounded wait of these tests


# -- the topic encoding (no Redis) ------------------------------------------------------------


@given(st.text())
@example("")
@example("a*b?c[d]e\\f:g%h")
@example("\ud800 lone surrogate")
@example("é 中文 🎉")
def test_any_topic_round_trips_through_its_name(topic: str) -> None:
    assert decode_topic(encode_topic(topic)) == topic
    assert decode_topic(encode_topic(topic).encode()) == topic


@given(st.text())
@example("*")
@example("news:*")
def test_a_topic_name_is_glob_safe_and_has_no_separator(topic: str) -> None:
    # Nothing Redis's glob reads specially (* ? [ ] \ ^ -... only within [ ]), and no ':'.
    assert re.fullmatch(r"[A-Za-z0-9._~%-]*", encode_topic(topic))


@given(st.text(), st.text())
def test_different_topics_have_different_names(a: str, b: str) -> None:
    assert (encode_topic(a) == encode_topic(b)) == (a == b)


@given(st.one_of(st.text(), st.binary()))
def test_a_payload_keeps_text_and_binary_apart(message: str | bytes) -> None:
    assert unpack_message(pack_message(message)) == message
    assert type(unpack_message(pack_message(message))) is type(message)


def test_url_prefix_parameter_and_display() -> None:
    assert _split_url("redis://h:1/0?prefix=app%3A&db=2") == ("redis://h:1/0?db=2", "app:")
    assert _split_url("redis://h:1/0") == ("redis://h:1/0", None)
    assert _display_url("redis://user:secret@h:1/0?password=x") == "redis://user:***@h:1/0"
    with pytest.raises(ValueError, match="protocol"):
        RedisBroker("redis://h:1/0?protocol=3")
    with pytest.raises(ValueError, match="presence_ttl"):
        RedisBroker("redis://h:1/0", presence_ttl=0)
    broker = make_broker("redis://127.0.0.1:1/0?prefix=app:")
    assert isinstance(broker, RedisBroker)
    assert broker.prefix == "app:"
    assert broker.channel("a:b*") == "app:msg:a%3Ab%2A"
    assert "secret" not in repr(RedisBroker("redis://:secret@h:1/0"))


# -- nodes and clients ------------------------------------------------------------------------


class Node(Handler):
    """Text commands, each answered: ``sub T``, ``pub T text`` and ``pubbin T text``
    (awaited: answers the count), ``fire T text`` (not awaited: a failure comes back through
    on_info), ``burst T N`` (N publishes, text and binary in turn, none awaited), ``join T
    member info``, ``leave T member``, ``members T``, ``history T``, ``echo X``."""

    async def on_message(self, ws: WebSocket, message: str | bytes) -> Any:
        assert isinstance(message, str)
        command, _, rest = message.partition(" ")
        topic, _, arg = rest.partition(" ")
        if command == "sub":
            return Text(f"sub {ws.subscribe(topic)}")
        if command in ("pub", "pubbin"):
            data: str | bytes = arg if command == "pub" else arg.encode()
            try:
                return Text(f"published {await ws.publish(topic, data)}")
            except PublishError as exc:
                return Text(f"error {exc.topic} {exc.reason}")
        if command == "fire":
            ws.publish(topic, arg)
            return None
        if command == "burst":
            for i in range(int(arg)):
                ws.publish(topic, f"m{i}" if i % 2 == 0 else f"m{i}".encode())
            return Text("burst sent")
        if command == "join":
            member, _, info = arg.partition(" ")
            await ws.broker.join(topic, member, info)
            return Text("joined")
        if command == "leave":
            await ws.broker.leave(topic, arg)
            return Text("left")
        if command == "members":
            present = await ws.broker.members(topic)
            return Text(",".join(f"{m}={i}" for m, i in sorted(present.items())))
        if command == "history":
            return Text(repr(await ws.broker.history(topic)))
        if command == "echo":
            return Text(rest)
        raise AssertionError(message)

    def on_info(self, ws: WebSocket, info: Any) -> Any:
        if isinstance(info, PublishFailed):
            return Text(f"failed {info.topic} {info.message!r} {type(info.error).__name__}")
        return None


def node_broker(url: str, **options: Any) -> RedisBroker:
    options.setdefault("timeout", 1.0)
    return RedisBroker(url, **options)


@contextlib.asynccontextmanager
async def nodes(url: str, count: int = 2, **options: Any
                ) -> AsyncIterator[list[corral.Server]]:
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(
            corral.serve(Node, "127.0.0.1", 0, broker=node_broker(url, **options)))
            for _ in range(count)]
        yield servers


def client(server: corral.Server) -> Any:
    return corral.connect(f"ws://127.0.0.1:{server.port}/", compression=None)


async def ask(ws: Any, command: str) -> str | bytes:
    await ws.send(command)
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def recv(ws: Any) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def nothing_else(ws: Any) -> None:
    """The next message is the answer to a fresh echo: nothing else was queued before it."""
    assert await ask(ws, "echo sentinel") == "sentinel"


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def broker_of(server: corral.Server) -> RedisBroker:
    broker = server.broker
    assert isinstance(broker, RedisBroker)
    return broker


@contextlib.asynccontextmanager
async def raw_redis(url: str) -> AsyncIterator[redis_asyncio.Redis]:
    """A plain client, to look at the keys the broker left."""
    connection = redis_asyncio.Redis.from_url(url, protocol=2)
    try:
        yield connection
    finally:
        await connection.aclose()


# -- delivery ---------------------------------------------------------------------------------


@redis_test
async def test_a_publish_reaches_every_node_once_in_order(redis_server: Any) -> None:
    n = 60
    async with nodes(redis_server.url) as (a, b):
        a1, a2, b1, publisher, other = (await client(a), await client(a), await client(b),
                                        await client(a), await client(b))
        try:
            for ws in (a1, a2, b1):
                assert await ask(ws, "sub news") == "sub True"
            assert await ask(other, "sub sport") == "sub True"
            assert await ask(publisher, f"burst news {n}") == "burst sent"
            expected = [f"m{i}" if i % 2 == 0 else f"m{i}".encode() for i in range(n)]
            for ws in (a1, a2, b1):
                assert [await recv(ws) for _ in range(n)] == expected
            # Awaited, from either node: the count is the nodes that heard it.
            assert await ask(publisher, "pub news from a") == "published 2"
            assert await ask(other, "pubbin news from b") == "published 2"
            for ws in (a1, a2, b1):
                assert await recv(ws) == "from a"
                assert await recv(ws) == b"from b"
                await nothing_else(ws)
            await nothing_else(other)
            await nothing_else(publisher)
            # Server.publish goes the same way.
            assert await a.publish("sport", b"\x00\xff") == 2
            assert await recv(other) == b"\x00\xff"
        finally:
            for ws in (a1, a2, b1, publisher, other):
                await ws.close()


@redis_test
async def test_topic_names_are_not_patterns_or_key_paths(redis_server: Any) -> None:
    topics = ["a*", "a:b", "é[1]?", "x\\y", ""]
    async with nodes(redis_server.url) as (a, b), client(b) as ws:
        for topic in topics:
            assert await ask(ws, f"sub {topic}") == "sub True"
        for near_miss in ("ab", "a*b", "a", "é1", "xy", "a:b:c"):
            await a.publish(near_miss, "wrong")
        for topic in topics:
            await a.publish(topic, f"to {topic}")
        assert [await recv(ws) for _ in topics] == [f"to {topic}" for topic in topics]
        await nothing_else(ws)


@redis_test
async def test_history_is_kept_per_topic_and_shared(redis_server: Any) -> None:
    async with nodes(redis_server.url) as (a, b), client(b) as ws:
        for i in range(5):
            await a.publish("log", f"line {i}" if i != 3 else b"bin 3", keep=3)
        await b.publish("log", "not kept")
        expected = [b"bin 3", "line 4"]
        assert await broker_of(b).history("log") == ["line 2", *expected]
        assert await broker_of(a).history("log", limit=2) == expected
        assert await broker_of(a).history("log", limit=0) == []
        assert await broker_of(a).history("nothing") == []
        assert await ask(ws, "history log") == repr(["line 2", *expected])
        async with raw_redis(redis_server.url) as raw:
            assert await raw.llen("corral:history:log") == 3


@redis_test
async def test_prefixes_keep_deployments_apart(redis_server: Any) -> None:
    async with (nodes(redis_server.url, 1, prefix="one:") as (a,),
                nodes(redis_server.url, 1, prefix="two:") as (b,), client(b) as ws):
        assert await ask(ws, "sub news") == "sub True"
        assert await a.publish("news", "for one") == 1  # only its own node heard it
        assert await b.publish("news", "for two") == 1
        assert await recv(ws) == "for two"
        await nothing_else(ws)


# -- presence ---------------------------------------------------------------------------------


@redis_test
async def test_presence_is_shared_by_the_nodes(redis_server: Any) -> None:
    async with nodes(redis_server.url) as (a, b), client(a) as wa, client(b) as wb:
        assert await ask(wa, "join room alice Alice é") == "joined"
        assert await ask(wb, "join room bob Bob") == "joined"
        assert await ask(wb, "join other carol") == "joined"
        for ws in (wa, wb):
            assert await ask(ws, "members room") == "alice=Alice é,bob=Bob"
        assert await ask(wa, "leave room alice") == "left"
        assert await ask(wa, "leave room nobody") == "left"
        assert await broker_of(b).members("room") == {"bob": "Bob"}
        assert await broker_of(a).members("other") == {"carol": ""}
        assert await broker_of(a).members("empty") == {}


DEAD_NODE = """
import asyncio, sys
from corral.pubsub.redis import RedisBroker

async def main() -> None:
    broker = RedisBroker(sys.argv[1], presence_ttl=float(sys.argv[2]))
    await broker.start(lambda topic, message: None)
    await broker.join("room", "ghost", "boo")
    print("joined", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@redis_test
async def test_a_node_killed_without_leaving_drops_out_of_presence(redis_server: Any) -> None:
    async with nodes(redis_server.url, 1) as (b,), raw_redis(redis_server.url) as raw:
        await broker_of(b).join("room", "bob", "Bob")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", DEAD_NODE, redis_server.url, "0.5",
            stdout=asyncio.subprocess.PIPE)
        try:
            assert process.stdout is not None
            assert await asyncio.wait_for(process.stdout.readline(), 10) == b"joined\n"
            assert await broker_of(b).members("room") == {"ghost": "boo", "bob": "Bob"}
        finally:
            process.kill()  # no leave, no close: its heartbeat stops
            await process.wait()
        deadline = time.monotonic() + TIMEOUT
        while (present := await broker_of(b).members("room")) != {"bob": "Bob"}:
            assert time.monotonic() < deadline, present
            await asyncio.sleep(0.05)
        # Cleaned up, not only hidden: only bob's entry is left in the hash.
        assert await raw.hlen("corral:presence:room") == 1


@redis_test
async def test_a_closed_node_takes_its_members_and_heartbeat_away(redis_server: Any) -> None:
    async with nodes(redis_server.url, 1) as (b,), raw_redis(redis_server.url) as raw:
        async with nodes(redis_server.url, 1) as (a,):
            await broker_of(a).join("room", "alice", "")
            await broker_of(a).join("lobby", "alice", "")
            assert await broker_of(b).members("room") == {"alice": ""}
            node_key = broker_of(a).node_key(broker_of(a).node_id)
            assert await raw.exists(node_key) == 1
        assert await broker_of(b).members("room") == {}
        assert await raw.exists(node_key, "corral:presence:room",
                                "corral:presence:lobby") == 0


# -- Redis going away -------------------------------------------------------------------------


def lost_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "corral.pubsub" and "lost connection" in r.getMessage()]


@redis_test
async def test_redis_down_fails_publishes_and_the_broker_comes_back(
        redis_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="corral.pubsub")
    async with nodes(redis_server.url) as (a, b):
        wa, wb = await client(a), await client(b)
        try:
            assert await ask(wa, "sub news") == "sub True"
            assert await ask(wb, "join room bob Bob") == "joined"
            assert await ask(wb, "pub news before") == "published 2"
            assert await recv(wa) == "before"

            redis_server.stop()
            await until(lambda: not broker_of(a).connected and not broker_of(b).connected)
            with pytest.raises(PublishError) as failure:
                await a.publish("news", "while down")
            assert failure.value.topic == "news"
            assert "redis://127.0.0.1" in failure.value.reason
            assert (await ask(wb, "pub news awaited")).startswith("error news ")
            # topics.py gives on_info every failure of ws.publish, awaited or not.
            assert await recv(wb) == "failed news 'awaited' PublishError"
            # Not awaited: the publisher's handler hears of it.
            await wb.send("fire news lost")
            assert await recv(wb) == "failed news 'lost' PublishError"
            assert b.topics.failed_publishes == 2
            assert a.topics.failed_publishes == 1
            with pytest.raises(ConnectionError):
                await broker_of(a).history("news")
            with pytest.raises(ConnectionError):
                await broker_of(a).members("room")
            await asyncio.sleep(0.4)  # a few reconnection attempts: still one warning each
            assert len(lost_lines(caplog)) == 2

            redis_server.start()  # empty: no persistence
            await until(lambda: broker_of(a).connected and broker_of(b).connected)
            assert await ask(wb, "pub news after") == "published 2"
            assert await recv(wa) == "after"
            await nothing_else(wa)
            # bob's node registered its members again in the new Redis.
            deadline = time.monotonic() + TIMEOUT
            while await broker_of(a).members("room") != {"bob": "Bob"}:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            await wa.close()
            await wb.close()
    assert len(lost_lines(caplog)) == 2
    reconnected = [r for r in caplog.records if "reconnected to" in r.getMessage()]
    assert len(reconnected) == 2
    assert all(r.levelno == logging.INFO for r in reconnected)
    assert all(r.levelno == logging.WARNING for r in caplog.records
               if "lost connection" in r.getMessage())


@redis_test
async def test_a_hung_redis_fails_publishes_within_the_timeout(redis_server: Any) -> None:
    async with nodes(redis_server.url, 1, timeout=0.3) as (a,), client(a) as ws:
        assert await ask(ws, "sub news") == "sub True"
        redis_server.pause()
        try:
            with pytest.raises(PublishError, match=r"[Tt]imeout"):
                await asyncio.wait_for(a.publish("news", "into the void"), TIMEOUT)
            await until(lambda: not a.broker.connected)  # the unanswered PING
            with pytest.raises(PublishError):
                await a.publish("news", "while down")
        finally:
            redis_server.resume()
        await until(lambda: a.broker.connected)
        assert await a.publish("news", "back") == 1
        assert await recv(ws) == "back"


@redis_test
async def test_start_fails_fast_when_redis_is_not_there(redis_server: Any) -> None:
    url = redis_server.url
    redis_server.stop()
    broker = RedisBroker(url, start_timeout=0.3, timeout=1.0)
    with pytest.raises(ConnectionError, match=re.escape(url)):
        await broker.start(lambda topic, message: None)
    assert not broker.connected
    with pytest.raises(ConnectionError, match="cannot reach"):
        async with corral.serve(Node, "127.0.0.1", 0,
                                broker=RedisBroker(url, start_timeout=0)):
            pass


@redis_test
async def test_a_closed_broker_refuses_publishes(redis_server: Any) -> None:
    async with nodes(redis_server.url, 1) as (a,):
        broker = broker_of(a)
        pending = a.publish("news", "queued at close")
    assert await pending == 1  # what was queued went out before the broker closed
    assert not broker.connected
    with pytest.raises(PublishError, match="closed"):
        broker.publish("news", "too late")
    await broker.close()  # twice is fine
