"""The Redis broker: every corral process using one Redis hears every publish.

Each process (a *node*, named by a uuid4) keeps three kinds of connection to Redis, each
with one job, so a slow one never holds up another:

- a subscriber: one ``PSUBSCRIBE {prefix}msg:*``. Its reader hands every message to the
  local fan-out (``deliver``) in the order Redis published them; a topic nobody here listens
  to is a dictionary miss there. It is also the liveness check: when it drops (or stays
  silent past a PING), the node logs one warning, reports ``connected`` False, fails
  publishes at once and reconnects with a capped backoff.
- a publisher: publishes queue in call order and go out pipelined on one connection, so
  Redis sees a node's publishes in the order they were made; each is ``PUBLISH``, or
  ``MULTI RPUSH LTRIM PUBLISH EXEC`` when it is kept in the topic's history.
- a small pool for history and presence (``join``/``leave``/``members``).

Keys, with ``t`` the percent-encoded topic (:func:`encode_topic`)::

    {prefix}msg:t        the pub/sub channel; a payload is b"t" + UTF-8 text, or b"b" + bytes
    {prefix}history:t    list of the kept messages, oldest first
    {prefix}presence:t   hash "{node}\\0{member}" -> info
    {prefix}node:{node}  the node's heartbeat: it expires presence_ttl after the node dies

Pub/sub gives no replay: a node that is disconnected misses what others publish meanwhile.
History (``keep=``) is how a client catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import uuid
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, quote_from_bytes, unquote_to_bytes, urlencode, urlsplit

from ..exceptions import PublishError
from .broker import Broker, BrokerMessage, Deliver

try:
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError, ResponseError, WatchError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # an optional extra: corral runs without it
    raise ImportError(
        "the Redis broker needs the redis package: pip install 'corral[redis]'"
    ) from exc

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

__all__ = ["RedisBroker", "decode_topic", "encode_topic"]

logger = logging.getLogger("corral.pubsub")

# What a lost or unreachable Redis raises (builtin TimeoutError is an OSError).
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

_TEXT = b"t"
_BINARY = b"b"
_FIRST_DELAY = 0.1  # seconds before the first reconnection attempt; doubles up to the cap
_BATCH_ITEMS = 512  # publishes written to Redis in one go, at most...
_BATCH_BYTES = 1 << 20  # ...and about this many payload bytes


# -- names -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def encode_topic(topic: str) -> str:
    """A topic as it appears in key and channel names: its UTF-8 bytes percent-encoded, every
    byte but ``A-Z a-z 0-9 - . _ ~``. So no topic can inject a glob character (``* ? [ ] \\``)
    into the subscription pattern or a ``:`` into the key layout, and any ``str`` (lone
    surrogates included) maps to exactly one name."""
    return quote_from_bytes(topic.encode("utf-8", "surrogatepass"), safe="")


@functools.lru_cache(maxsize=4096)
def decode_topic(name: str | bytes) -> str:
    """The topic :func:`encode_topic` made ``name`` from."""
    return unquote_to_bytes(name).decode("utf-8", "surrogatepass")


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis glob pattern (the prefix is the user's)."""
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


def pack_message(message: BrokerMessage) -> bytes:
    """The payload stored in Redis: one byte saying text or binary, then the data."""
    if isinstance(message, str):
        return _TEXT + message.encode()
    if isinstance(message, bytes):
        return _BINARY + message
    raise TypeError(f"a message is str or bytes, not {type(message).__name__}")


def unpack_message(payload: bytes) -> BrokerMessage:
    """The message :func:`pack_message` stored; ValueError for anything else."""
    kind = payload[:1]
    if kind == _TEXT:
        return payload[1:].decode()
    if kind == _BINARY:
        return payload[1:]
    raise ValueError(f"not a corral payload (kind byte {kind!r})")


def _split_url(url: str) -> tuple[str, str | None]:
    """``url`` without corral's own ``prefix=`` query parameter, and that parameter: the
    command line gives a broker nothing but its URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    for key, _ in query:
        if key in ("protocol", "decode_responses"):
            raise ValueError(f"the redis broker sets {key} itself: remove it from {url!r}")
    prefixes = [value for key, value in query if key == "prefix"]
    if not prefixes:
        return url, None
    rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    base = url.split("?", 1)[0]
    return (f"{base}?{rest}" if rest else base), prefixes[-1]


def _display_url(url: str) -> str:
    """The URL for log lines and errors: no password, no query string."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task})
    if task is not None and not task.cancelled() and task.exception() is not None:
        logger.error("redis broker: task %s had failed", task.get_name(),
                     exc_info=task.exception())


class _Publish(NamedTuple):
    topic: str
    commands: tuple[tuple[str | bytes | int, ...], ...]
    size: int
    future: asyncio.Future[int]


# -- the broker --------------------------------------------------------------------------------


class RedisBroker(Broker):
    """Pub/sub, history and presence shared by every process using the Redis at ``url``
    (``redis://[user:password@]host:port/db``, ``rediss://...``, ``unix:///path?db=0``; other
    query parameters go to redis-py).

    ``prefix`` (default ``corral:``, or ``?prefix=`` in the URL) starts every key and channel:
    deployments sharing a Redis need different prefixes, and pub/sub ignores the db number.
    ``presence_ttl``: how long the members of a process that died without leaving stay
    listed. ``timeout``: the bound on connecting and on each answer from Redis (a publish
    fails after it). ``start_timeout``: how long ``start`` keeps trying before it raises
    ConnectionError. ``max_reconnect_delay``: the cap of the backoff after a drop.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        presence_ttl: float = 30.0,
        timeout: float = 5.0,
        start_timeout: float = 5.0,
        max_reconnect_delay: float = 5.0,
    ) -> None:
        url, url_prefix = _split_url(url)
        for label, value in (("presence_ttl", presence_ttl), ("timeout", timeout),
                             ("max_reconnect_delay", max_reconnect_delay)):
            if not value > 0:
                raise ValueError(f"{label} must be positive, not {value!r}")
        if not start_timeout >= 0:
            raise ValueError(f"start_timeout must be 0 or more, not {start_timeout!r}")
        self.url = _display_url(url)
        self.prefix = prefix if prefix is not None else url_prefix or "corral:"
        self.node_id = uuid.uuid4().hex
        self.presence_ttl = presence_ttl
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.max_reconnect_delay = max_reconnect_delay
        # Bounded everywhere, never retried by redis-py: a retried PUBLISH may be a duplicate,
        # and a failure must reach the caller within `timeout`.
        self._pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
            url, timeout=timeout, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), client_name=f"corral-{self.node_id}",
            # RESP2 and bytes: payloads are binary, and the subscriber reads pub/sub replies
            # as plain arrays (RESP3 would make them push messages).
            protocol=2, decode_responses=False,
        )
        self._client = Redis(connection_pool=self._pool)
        self._channel_prefix = f"{self.prefix}msg:".encode()
        self._node_key = f"{self.prefix}node:{self.node_id}"

        self._deliver: Deliver | None = None
        self._connected = False
        self._closing = False
        self._session = 0  # +1 on every (re)subscription: a new Redis session
        self._heard = 0.0  # loop time of the subscriber's last reply
        self._queue: deque[_Publish] = deque()
        self._wake = asyncio.Event()  # the writer has work (or should look at the state)
        self._beat_now = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._heart: asyncio.Task[None] | None = None
        self._about = f"{socket.gethostname()} pid {os.getpid()}"  # the heartbeat's value
        self._joined: dict[str, dict[str, str]] = {}  # this node's presence, to re-register
        self._pending_leaves: set[tuple[str, str]] = set()  # leaves Redis has not seen yet

    # -- names --------------------------------------------------------------------------------

    def channel(self, topic: str) -> str:
        return f"{self.prefix}msg:{encode_topic(topic)}"

    def history_key(self, topic: str) -> str:
        return f"{self.prefix}history:{encode_topic(topic)}"

    def presence_key(self, topic: str) -> str:
        return f"{self.prefix}presence:{encode_topic(topic)}"

    def node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def _field(self, member: str) -> bytes:
        return self.node_id.encode() + b"\x00" + member.encode("utf-8", "surrogatepass")

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether this node is subscribed now: a publish can be taken and delivered here."""
        return self._connected

    async def start(self, deliver: Deliver) -> None:
        """Subscribe and register this node. Redis has ``start_timeout`` seconds to answer
        (it may be starting next to us); after that, ConnectionError saying why."""
        if self._deliver is not None or self._closing:
            raise RuntimeError("a RedisBroker starts once")
        self._deliver = deliver
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        delay = _FIRST_DELAY
        try:
            while True:
                try:
                    subscriber = await self._subscribe()
                    break
                except _UNREACHABLE as exc:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise ConnectionError(
                            f"redis broker: cannot reach {self.url} ({_reason(exc)}) "
                            f"within {self.start_timeout:g} s"
                        ) from exc
                    await asyncio.sleep(min(delay, remaining))
                    delay = min(delay * 2, self.max_reconnect_delay)
            try:
                with self._unreachable("start"):
                    await self._beat()
            except BaseException:
                await subscriber.disconnect(nowait=True)
                raise
        except BaseException:
            self._deliver = None
            await self._pool.aclose()
            raise
        self._session += 1
        self._connected = True
        self._supervisor = asyncio.create_task(self._supervise(subscriber),
                                               name="corral-redis-subscriber")
        self._writer = asyncio.create_task(self._write(), name="corral-redis-publisher")
        self._heart = asyncio.create_task(self._heartbeat(), name="corral-redis-heartbeat")
        logger.info("redis broker: connected to %s as node %s", self.url, self.node_id)

    async def close(self) -> None:
        """Send what is queued (for up to ``timeout``), take this node's members out of
        presence, then stop every task and close every connection."""
        if self._closing:
            return
        self._closing = True
        await _stop(self._heart)  # first: it could register members again
        if self._writer is not None and self._connected:
            self._wake.set()
            await asyncio.wait({self._writer}, timeout=self.timeout)
        if self._connected:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._forget_node()
            except (*_UNREACHABLE, RedisError) as exc:
                logger.warning("redis broker: could not remove node %s's presence (%s); it "
                               "expires within %g s", self.node_id, _reason(exc),
                               self.presence_ttl)
        await _stop(self._writer)
        await _stop(self._supervisor)
        self._heart = self._writer = self._supervisor = None
        self._connected = False
        self._fail_queued("the broker is closed")
        await self._pool.aclose()
        self._deliver = None

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, topic: str, message: BrokerMessage, keep: int = 0) -> asyncio.Future[int]:
        """Queue ``message`` for Redis; the future gives PUBLISH's count (the processes that
        heard it). Raises PublishError at once when this node is not connected: nothing is
        held back for later."""
        payload = pack_message(message)  # a bad message raises before anything is queued
        if self._closing or self._deliver is None:
            raise PublishError(topic, "the broker is closed" if self._closing
                               else "the broker is not started")
        if not self._connected:
            raise PublishError(topic, f"no connection to redis at {self.url} (reconnecting)")
        channel = self.channel(topic)
        commands: tuple[tuple[str | bytes | int, ...], ...]
        if keep > 0:
            history = self.history_key(topic)
            commands = (("MULTI",), ("RPUSH", history, payload), ("LTRIM", history, -keep, -1),
                        ("PUBLISH", channel, payload), ("EXEC",))
        else:
            commands = (("PUBLISH", channel, payload),)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Publish(topic, commands, len(payload), future))
        self._wake.set()
        return future

    def _fail_queued(self, reason: str) -> None:
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(PublishError(item.topic, reason))

    def _take_batch(self) -> list[_Publish]:
        batch: list[_Publish] = []
        size = 0
        queue = self._queue
        while queue and len(batch) < _BATCH_ITEMS and (not batch or size < _BATCH_BYTES):
            item = queue.popleft()
            if item.future.cancelled():  # whoever awaited it gave up before it was sent
                continue
            batch.append(item)
            size += item.size
        return batch

    async def _write(self) -> None:
        """The publisher: sends the queue in order, one pipelined batch at a time."""
        conn: AbstractConnection | None = None
        session = 0
        batch: list[_Publish] = []
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if not self._connected:
                    self._fail_queued(f"lost the connection to redis at {self.url}")
                    continue
                batch = self._take_batch()
                if not batch:
                    continue
                try:
                    if conn is None or session != self._session:
                        # A new Redis session: this connection may be to the old one.
                        if conn is not None:
                            await conn.disconnect(nowait=True)
                            conn = None
                        session = self._session
                        conn = await self._connect()
                    await self._send(conn, batch)
                except Exception as exc:
                    if not isinstance(exc, (*_UNREACHABLE, RedisError)):
                        logger.exception("redis broker: publishing failed")
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(PublishError(
                                item.topic, f"redis at {self.url}: {_reason(exc)}"))
                    if conn is not None:
                        await conn.disconnect(nowait=True)
                        conn = None
        finally:
            for item in batch:  # cancelled in the middle of a batch (close)
                if not item.future.done():
                    item.future.set_exception(PublishError(item.topic, "the broker is closed"))
            if conn is not None:
                await conn.disconnect(nowait=True)

    async def _send(self, conn: AbstractConnection, batch: list[_Publish]) -> None:
        commands = [command for item in batch for command in item.commands]
        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        for item in batch:
            try:
                count = await self._read_count(conn, item)
            except ResponseError as exc:  # Redis refused this one; the stream is still in step
                if not item.future.done():
                    item.future.set_exception(PublishError(item.topic, f"redis: {exc}"))
                continue
            if not item.future.done():
                item.future.set_result(count)

    async def _read_count(self, conn: AbstractConnection, item: _Publish) -> int:
        if len(item.commands) == 1:
            return int(await conn.read_response())
        replies: list[Any] = []
        for _ in item.commands:  # MULTI, three QUEUED, EXEC: read all, even after an error
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        executed = replies[-1]
        if isinstance(executed, ResponseError):  # EXECABORT: nothing ran
            raise executed
        if isinstance(executed[2], ResponseError):
            raise executed[2]
        errors = [reply for reply in executed if isinstance(reply, ResponseError)]
        if errors:  # Redis does not roll back: it was published, but not kept
            logger.warning("redis broker: a message to %r was published but not kept in its "
                           "history: %s", item.topic, errors[0])
        return int(executed[2])

    # -- subscribing --------------------------------------------------------------------------

    async def _connect(self) -> AbstractConnection:
        """A connection of this node's own, outside the pool."""
        conn = self._pool.connection_class(**self._pool.connection_kwargs)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return conn

    async def _subscribe(self) -> AbstractConnection:
        """A connection subscribed to every topic of this prefix."""
        conn = self._pool.connection_class(
            **{**self._pool.connection_kwargs, "socket_timeout": None})  # it waits for news
        try:
            async with asyncio.timeout(self.timeout):
                await conn.connect()  # type: ignore[no-untyped-call]
                pattern = _glob_escape(self.prefix) + "msg:*"
                await conn.send_command("PSUBSCRIBE", pattern, check_health=False)
                reply = await conn.read_response()
            if not (isinstance(reply, list) and reply[:1] == [b"psubscribe"]):
                raise RedisConnectionError(f"unexpected answer to PSUBSCRIBE: {reply!r}")
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        self._heard = asyncio.get_running_loop().time()
        return conn

    async def _supervise(self, subscriber: AbstractConnection) -> None:
        """Keep the subscription: on a drop, one warning, then reconnect with backoff."""
        loop = asyncio.get_running_loop()
        conn: AbstractConnection | None = subscriber
        lost_at = 0.0
        delay = _FIRST_DELAY
        while True:
            if conn is None:
                try:
                    conn = await self._subscribe()
                except (*_UNREACHABLE, RedisError) as exc:
                    logger.debug("redis broker: %s still unreachable (%s); next try in %.1f s",
                                 self.url, _reason(exc), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_reconnect_delay)
                    continue
                delay = _FIRST_DELAY
                self._session += 1
                self._connected = True
                self._beat_now.set()  # Redis may have forgotten this node: register it again
                logger.info("redis broker: reconnected to %s after %.1f s", self.url,
                            loop.time() - lost_at)
            try:
                await self._listen(conn)
            except Exception as exc:  # whatever ended it, the way out is a new subscription
                self._connected = False
                lost_at = loop.time()
                self._wake.set()  # the writer fails what is queued
                logger.warning("redis broker: lost connection to %s (%s); reconnecting; "
                               "messages published meanwhile do not reach this process",
                               self.url, _reason(exc),
                               exc_info=not isinstance(exc, (*_UNREACHABLE, RedisError)))
            finally:
                await conn.disconnect(nowait=True)
                conn = None

    async def _listen(self, conn: AbstractConnection) -> None:
        """Read the subscription until it fails. Silence is checked with a PING: a Redis
        that stopped answering without closing the socket counts as lost too."""
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self._read(conn), name="corral-redis-reader")
        pinged: float | None = None  # when the PING not answered yet was sent
        try:
            while True:
                done, _ = await asyncio.wait({reader}, timeout=self.timeout / 2)
                if done:
                    reader.result()  # raises what ended it
                    raise RedisConnectionError("the subscription ended")
                if pinged is not None and self._heard < pinged:
                    if loop.time() - pinged < self.timeout:
                        continue
                    for _ in range(3):  # after a stalled loop: let a waiting reply be read
                        await asyncio.sleep(0)
                    if self._heard < pinged:
                        raise RedisTimeoutError(f"no answer to PING within {self.timeout:g} s")
                pinged = None
                if loop.time() - self._heard >= self.timeout:
                    pinged = loop.time()
                    await conn.send_command("PING", check_health=False)
        finally:
            if not reader.done():
                reader.cancel()
                await asyncio.wait({reader})
            if not reader.cancelled():
                reader.exception()  # retrieved: it is what _listen raised

    async def _read(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            reply = await conn.read_response()  # no socket_timeout on this connection
            self._heard = loop.time()
            if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
                self._receive(reply[2], reply[3])

    def _receive(self, channel: bytes, payload: bytes) -> None:
        deliver = self._deliver
        if deliver is None:
            return
        try:
            topic = decode_topic(channel[len(self._channel_prefix):])
            message = unpack_message(payload)
        except ValueError as exc:  # someone else's message on our channels
            logger.debug("redis broker: ignored a message on %r: %s", channel, exc)
            return
        try:
            deliver(topic, message)
        except Exception:  # one bad delivery must not end the subscription
            logger.exception("redis broker: delivering a message to %r failed", topic)

    # -- history ------------------------------------------------------------------------------

    async def history(self, topic: str, limit: int | None = None) -> list[BrokerMessage]:
        """The kept messages of ``topic``, oldest first. ConnectionError if Redis is away."""
        if limit is not None and limit <= 0:
            return []
        with self._unreachable("history"):
            kept = await self._client.lrange(self.history_key(topic),
                                             0 if limit is None else -limit, -1)
        messages: list[BrokerMessage] = []
        for payload in kept:
            with contextlib.suppress(ValueError):
                messages.append(unpack_message(_as_bytes(payload)))
        return messages

    # -- presence -----------------------------------------------------------------------------

    async def join(self, topic: str, member: str, info: str = "") -> None:
        """Record ``member`` until ``leave``, or until this node stops beating. Raises
        ConnectionError if Redis is away (nothing is recorded then)."""
        present = self._joined.setdefault(topic, {})
        present[member] = info  # first: a re-registration meanwhile must include it
        self._pending_leaves.discard((topic, member))
        try:
            with self._unreachable("join"):
                await self._client.hset(self.presence_key(topic), self._field(member),
                                        info.encode("utf-8", "surrogatepass"))
        except BaseException:
            if present.get(member) == info:
                del present[member]
                if not present:
                    self._joined.pop(topic, None)
            raise

    async def leave(self, topic: str, member: str) -> None:
        """Forget ``member``. It never fails for want of Redis: a leave Redis has not seen is
        sent again once the connection is back."""
        present = self._joined.get(topic)
        if present is not None:
            present.pop(member, None)
            if not present:
                del self._joined[topic]
        if self._closing or self._deliver is None:
            return  # close() removes all of this node's members
        try:
            await self._client.hdel(self.presence_key(topic), self._field(member))
        except _UNREACHABLE as exc:
            logger.debug("redis broker: leave of %r postponed (%s)", topic, _reason(exc))
            self._pending_leaves.add((topic, member))

    async def members(self, topic: str) -> dict[str, str]:
        """Members of ``topic`` on every live node. Entries of nodes whose heartbeat expired
        are left out, and removed (under WATCH, so a node registering again at that moment
        keeps its entries). ConnectionError if Redis is away."""
        key = self.presence_key(topic)
        own = self.node_id.encode()
        with self._unreachable("members"):
            async with self._client.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                fields = await pipe.hgetall(key)
                entries: list[tuple[bytes, bytes, str, str]] = []
                for raw_field, raw_info in fields.items():
                    field = _as_bytes(raw_field)
                    node, sep, member = field.partition(b"\x00")
                    if sep:
                        entries.append((field, node, member.decode("utf-8", "surrogatepass"),
                                        _as_bytes(raw_info).decode("utf-8", "surrogatepass")))
                others = sorted({node for _, node, _, _ in entries if node != own})
                alive = {own}
                if others:
                    beats = await pipe.mget([self.node_key(node.decode()) for node in others])
                    alive.update(node for node, beat in zip(others, beats, strict=True)
                                 if beat is not None)
                dead = [field for field, node, _, _ in entries if node not in alive]
                if dead:
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hdel(key, *dead)
                    with contextlib.suppress(WatchError):  # someone wrote: clean up next time
                        await pipe.execute()
        return {member: info for _, node, member, info in entries if node in alive}

    async def _heartbeat(self) -> None:
        """Keep this node's heartbeat key alive (every third of ``presence_ttl``)."""
        interval = self.presence_ttl / 3
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._beat_now.wait()
            self._beat_now.clear()
            if not self._connected:
                continue  # the subscriber sets _beat_now once it is back
            try:
                await self._beat()
            except _UNREACHABLE as exc:  # the subscriber reports the connection's state
                logger.debug("redis broker: heartbeat failed (%s)", _reason(exc))
            except RedisError as exc:
                logger.warning("redis broker: heartbeat failed (%s)", _reason(exc))

    async def _beat(self) -> None:
        """Refresh the heartbeat; if it had expired (Redis restarted, or this node was cut
        off for longer than ``presence_ttl``), others may have removed this node's members,
        so write them all again. The heartbeat is set first: a ``members`` cleanup that
        started before cannot then delete what is written after (it WATCHes the hash)."""
        ttl = max(1, round(self.presence_ttl * 1000))
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._node_key, self._about, px=ttl, nx=True)  # OK only if it had gone
            pipe.pexpire(self._node_key, ttl)
            created, _ = await pipe.execute()
        if created:
            await self._register_all()
        if self._pending_leaves:
            leaves = list(self._pending_leaves)
            async with self._client.pipeline(transaction=False) as pipe:
                for topic, member in leaves:
                    pipe.hdel(self.presence_key(topic), self._field(member))
                await pipe.execute()
            self._pending_leaves.difference_update(leaves)

    async def _register_all(self) -> None:
        if not self._joined:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for topic, present in self._joined.items():
                pipe.hset(self.presence_key(topic), mapping={
                    self._field(member): info.encode("utf-8", "surrogatepass")
                    for member, info in present.items()
                })
            await pipe.execute()

    async def _forget_node(self) -> None:
        """Remove this node's members and heartbeat (at close)."""
        async with self._client.pipeline(transaction=False) as pipe:
            for topic, present in self._joined.items():
                pipe.hdel(self.presence_key(topic), *(self._field(m) for m in present))
            for topic, member in self._pending_leaves:
                pipe.hdel(self.presence_key(topic), self._field(member))
            pipe.delete(self._node_key)
            await pipe.execute()
        self._joined.clear()
        self._pending_leaves.clear()

    @contextlib.contextmanager
    def _unreachable(self, operation: str) -> Iterator[None]:
        """Redis being away is the builtin ConnectionError for callers: handlers catch it
        without knowing which engine is under them."""
        if self._closing or self._deliver is None:
            raise ConnectionError(f"redis broker: {operation}: the broker is not running")
        try:
            yield
        except _UNREACHABLE as exc:
            if isinstance(exc, ConnectionError):
                raise
            raise ConnectionError(
                f"redis broker: {operation}: redis at {self.url} is unreachable "
                f"({_reason(exc)})"
            ) from exc

    def __repr__(self) -> str:
        state = "connected" if self._connected else "closed" if self._closing else "down"
        return f"<RedisBroker {self.url} {self.prefix!r} node {self.node_id[:8]} {state}>"
