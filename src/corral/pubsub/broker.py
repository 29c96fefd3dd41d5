"""Brokers: what carries a published message to every process that has subscribers.

A server's :class:`~corral.pubsub.topics.Topics` knows only its own connections. The broker
under it decides who else hears a publish: :class:`MemoryBroker` (the default) is this
process alone; ``RedisBroker`` (``corral.pubsub.redis``) is every corral process using the
same Redis. Handlers never see the difference: they call ``ws.publish`` and
``ws.subscribe``, and the server's broker does the rest.

A broker has four jobs, each one method or two, so another engine (NATS, Redis Streams for
resumable history) is one more subclass:

- ``publish``: hand a message to every process, this one included, through the ``deliver``
  callback given to ``start``. A broker that cannot take it raises :class:`PublishError`;
  nothing is dropped silently.
- ``history``: the last messages of a topic, for a topic published with ``keep=N``.
- presence (``join``/``leave``/``members``): who is in a topic, across processes.
- ``start``/``close`` and ``connected``: its life cycle.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Awaitable, Callable

from ..exceptions import PublishError

__all__ = ["Broker", "BrokerMessage", "Deliver", "MemoryBroker", "make_broker"]

BrokerMessage = str | bytes  # text or binary: the two kinds of WebSocket message
Deliver = Callable[[str, BrokerMessage], object]  # (topic, message): the local fan-out


class Broker(abc.ABC):
    """The interface between a server's topics and a message engine."""

    name = "broker"

    @abc.abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Connect; from now on call ``deliver(topic, message)`` for every message published
        by any process (this one included)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect and stop delivering."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether a publish can reach the engine now."""

    @abc.abstractmethod
    def publish(self, topic: str, message: BrokerMessage, keep: int = 0) -> int | Awaitable[int]:
        """Send ``message`` to every subscriber of ``topic`` in every process. With
        ``keep > 0`` it is also added to the topic's history, which keeps the last ``keep``.

        A broker that delivers at once returns a count (subscribers written to); one that
        goes over the network returns an awaitable of the count it learns (Redis: the
        processes that heard it). Either way failure is :class:`PublishError`, raised or
        awaited, and means no process delivered the message.
        """

    @abc.abstractmethod
    async def history(self, topic: str, limit: int | None = None) -> list[BrokerMessage]:
        """The kept messages of ``topic`` (at most the ``limit`` latest), oldest first."""

    @abc.abstractmethod
    async def join(self, topic: str, member: str, info: str = "") -> None:
        """Record ``member`` (unique per connection) as present
        in ``topic`` with ``info`` (a display name, JSON...) until ``leave`` or until this
        process goes away."""

    @abc.abstractmethod
    async def leave(self, topic: str, member: str) -> None:
        """Forget ``member`` in ``topic``; nothing happens if it was not there."""

    @abc.abstractmethod
    async def members(self, topic: str) -> dict[str, str]:
        """Who is present in ``topic`` in every process: member -> info."""


class MemoryBroker(Broker):
    """One process, no set-up: a publish is delivered before ``publish`` returns, so it is
    ordered with whatever the publishing handler sends next."""

    name = "memory"

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._history: dict[str, deque[BrokerMessage]] = {}
        self._members: dict[str, dict[str, str]] = {}

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        self._deliver = None

    @property
    def connected(self) -> bool:
        return self._deliver is not None

    def publish(self, topic: str, message: BrokerMessage, keep: int = 0) -> int:
        deliver = self._deliver
        if deliver is None:
            raise PublishError(topic, "the broker is closed")
        if keep > 0:
            kept = self._history.get(topic)
            if kept is None or kept.maxlen != keep:
                kept = self._history[topic] = deque(kept or (), maxlen=keep)
            kept.append(message)
        count = deliver(topic, message)
        return count if isinstance(count, int) else 0

    async def history(self, topic: str, limit: int | None = None) -> list[BrokerMessage]:
        kept = list(self._history.get(topic, ()))
        return kept if limit is None else kept[max(0, len(kept) - limit):]

    async def join(self, topic: str, member: str, info: str = "") -> None:
        self._members.setdefault(topic, {})[member] = info

    async def leave(self, topic: str, member: str) -> None:
        present = self._members.get(topic)
        if present is not None:
            present.pop(member, None)
            if not present:
                del self._members[topic]

    async def members(self, topic: str) -> dict[str, str]:
        return dict(self._members.get(topic, {}))

    def __repr__(self) -> str:
        return "<MemoryBroker>"


def make_broker(spec: str | Broker | None) -> Broker:
    """A broker from a ``--broker`` value: None or ``"memory"`` for :class:`MemoryBroker`,
    ``redis://host:port/db`` (also ``rediss://``, ``unix://``) for Redis, or a ready
    :class:`Broker`."""
    if spec is None or spec == "memory":
        return MemoryBroker()
    if isinstance(spec, Broker):
        return spec
    if isinstance(spec, str) and spec.split("://", 1)[0] in ("redis", "rediss", "unix"):
        from .redis import RedisBroker

        return RedisBroker(spec)
    raise ValueError(f"unknown broker {spec!r}: use 'memory' or a redis://host:port/db URL")
