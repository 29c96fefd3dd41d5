"""Topics: topic name -> this process's connections subscribed to it, over a broker.

A server owns one ``Topics`` (``server.topics``). A publish goes to the broker, which hands it
back to every process with subscribers (``deliver``), this one included. There it is framed
once and the same bytes are written to every plain subscriber. Compressed subscribers that
keep no compression context (``server_no_context_takeover``) share one compressed frame per
set of parameters; one that keeps a context encodes the message itself (that state is its
own). Writes are held until the loop comes round, so the publishes made while one read is
handled reach each subscriber in one write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..exceptions import PublishError
from ..protocol.frames import Opcode
from .broker import Broker, MemoryBroker

if TYPE_CHECKING:
    from ..options import Options
    from ..protocol.connection import Connection

__all__ = ["Message", "PublishFailed", "Subscriber", "Topics"]

logger = logging.getLogger("corral.pubsub")

Message = str | bytes | bytearray | memoryview


def encode_message(message: Message) -> tuple[int, bytes]:
    """The opcode and payload of a message: text for ``str``, binary for bytes-like."""
    if isinstance(message, str):
        return Opcode.TEXT, message.encode()
    if isinstance(message, bytes):
        return Opcode.BINARY, message
    if isinstance(message, (bytearray, memoryview)):
        return Opcode.BINARY, bytes(message)
    raise TypeError(f"a message is str or bytes-like, not {type(message).__name__}")


class PublishFailed(NamedTuple):
    """What a handler's ``on_info`` receives when a message it published with
    ``ws.publish`` did not reach the broker (no subscriber anywhere got it)."""

    topic: str
    message: str | bytes
    error: PublishError


class Subscriber(Protocol):
    """What topics need of a subscribed connection (a server's sessions are)."""

    @property
    def options(self) -> Options: ...

    @property
    def conn(self) -> Connection:
        """Asked for the frame of each publish (``Connection.broadcast_frame``)."""

    def send_frame(self, frame: bytes | None, message: str | bytes, flush: bool) -> bool:
        """Queue the frame (or encode ``message``); False if not sent."""

    def flush(self) -> None: ...

    def post(self, info: Any) -> None:
        """Deliver ``info`` to the handler's ``on_info`` (a failed publish)."""


class Topics:
    """Which connections listen to which topic. Connections subscribe through
    ``ws.subscribe(topic)``; they leave every topic when they end."""

    __slots__ = ("_subscribers", "_unflushed", "broker", "failed_publishes", "publishes")

    def __init__(self, broker: Broker | None = None) -> None:
        self._subscribers: dict[str, set[Subscriber]] = {}
        # Subscribers with published frames queued but not yet written, and how many bytes.
        self._unflushed: dict[Subscriber, int] = {}
        self.broker: Broker = broker if broker is not None else MemoryBroker()
        self.publishes = 0  # publishes made in this process, since start
        self.failed_publishes = 0  # publishes the broker did not take, since start

    async def start(self) -> None:
        await self.broker.start(self.deliver)

    async def close(self) -> None:
        await self.broker.close()

    def add(self, topic: str, ws: Subscriber) -> None:
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            self._subscribers[topic] = subscribers = set()
        subscribers.add(ws)

    def discard(self, topic: str, ws: Subscriber) -> None:
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            return
        subscribers.discard(ws)
        if not subscribers:
            del self._subscribers[topic]  # a topic nobody listens to costs nothing

    def subscriber_count(self, topic: str) -> int:
        subscribers = self._subscribers.get(topic)
        return len(subscribers) if subscribers else 0

    def names(self) -> frozenset[str]:
        """The topics with at least one subscriber."""
        return frozenset(self._subscribers)

    def subscription_count(self) -> int:
        """Subscriptions of this process's connections, every topic together."""
        return sum(len(subscribers) for subscribers in self._subscribers.values())

    def publish(
        self, topic: str, message: Message, *, keep: int = 0, publisher: Subscriber | None = None
    ) -> asyncio.Future[int]:
        """Publish through the broker; the future gives the broker's count (see
        :meth:`Broker.publish`) or raises :class:`PublishError`. A failure nobody awaits is
        still logged, counted in ``failed_publishes`` and, for a ``publisher``, given to its
        handler's ``on_info`` as :class:`PublishFailed`."""
        if not isinstance(topic, str):
            raise TypeError(f"a topic is a str, not {type(topic).__name__}")
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        elif not isinstance(message, (str, bytes)):
            raise TypeError(f"a message is str or bytes-like, not {type(message).__name__}")
        loop = asyncio.get_running_loop()
        self.publishes += 1
        try:
            result = self.broker.publish(topic, message, keep)
        except PublishError as exc:
            future: asyncio.Future[int] = loop.create_future()
            future.set_exception(exc)
            self._failed(future, topic, message, publisher)
            return future
        if isinstance(result, int):
            future = loop.create_future()
            future.set_result(result)
            return future
        future = asyncio.ensure_future(result)
        future.add_done_callback(lambda f: self._failed(f, topic, message, publisher))
        return future

    def _failed(
        self, future: asyncio.Future[int], topic: str, message: str | bytes,
        publisher: Subscriber | None,
    ) -> None:
        if future.cancelled():
            return
        error = future.exception()  # marks it retrieved: the failure is reported here
        if error is None:
            return
        if not isinstance(error, PublishError):
            error = PublishError(topic, f"{type(error).__name__}: {error}")
        self.failed_publishes += 1
        logger.warning("%s (broker %s)", error, self.broker.name)
        if publisher is not None:
            publisher.post(PublishFailed(topic, message, error))

    def deliver(self, topic: str, message: Message) -> int:
        """Write ``message`` to every open subscriber of ``topic`` in this process; return how
        many it was written to. A subscriber that is closing does not get it; one in the
        middle of sending a fragmented message, or over its ``max_backpressure``, drops it
        (counted in ``dropped_messages``, given to its handler's ``on_drop``)."""
        opcode, payload = encode_message(message)  # a bad message raises, even unheard
        subscribers = self._subscribers.get(topic)
        if not subscribers:
            return 0
        # What a compressed subscriber encodes: bytes-like copied once, not once per send.
        whole: str | bytes = message if isinstance(message, str) else payload
        size = len(payload) + 10
        count = 0
        unflushed = self._unflushed
        if not unflushed:
            asyncio.get_running_loop().call_soon(self._flush_all)
        # The frames of this message, each built once: plain, and compressed once per set of
        # parameters that keep no context. A copy of the set: a subscriber's write may end a
        # connection, which unsubscribes it.
        shared: dict[Hashable, bytes] = {}
        for sub in tuple(subscribers):
            sent = sub.send_frame(sub.conn.broadcast_frame(opcode, payload, shared), whole, False)
            if sent:
                count += 1
                queued = unflushed.get(sub, 0) + size
                if queued >= sub.options.write_limit:
                    unflushed.pop(sub, None)
                    sub.flush()
                else:
                    unflushed[sub] = queued
        return count

    def _flush_all(self) -> None:
        """Write what publishes queued since the last loop iteration: a subscriber gets the
        messages published while one read was handled (or in one burst) in one write."""
        unflushed = self._unflushed
        self._unflushed = {}
        for sub in unflushed:
            sub.flush()

    def __repr__(self) -> str:
        return f"<Topics {len(self._subscribers)} topics, {self.broker!r}>"
