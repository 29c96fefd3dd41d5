"""What a server has done and has open: the counters kept while it runs, the snapshot that
``Server.stats()`` gives, and the files through which the workers of ``corral run
--workers N`` see each other's, so that one scrape of ``/metrics`` covers every worker.

Counting costs next to nothing on the hot path: messages and bytes are plain C integers
(:class:`~corral.accel.Counters`) shared by every session of a server; handshakes, HTTP
answers and closes are counted in Python where they are decided, once per connection.

Workers share their figures through a directory the supervisor makes: each writes its
snapshot there every :data:`SHARE_INTERVAL` seconds (one small file, replaced atomically),
and reads the others' when asked (:meth:`Server.worker_stats`). A worker's own figures are
always current; the others' are at most that old. The supervisor removes the file of a
worker that exits, and the directory when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..accel import Counters
from ..handler import CloseKind

__all__ = [
    "CLOSE_KINDS",
    "HANDSHAKE_OUTCOMES",
    "SHARE_INTERVAL",
    "Recorder",
    "ServerStats",
    "read_shared",
    "remove_shared",
    "share_stats",
    "stats_file",
    "take",
    "write_shared",
]

logger = logging.getLogger("corral.server")

# How a WebSocket handshake ended:
# - accepted: the 101 was written and the connection is a WebSocket;
# - rejected: the handler's upgrade() returned Reject;
# - refused: corral refused it before the handler decided (a malformed or unsupported
#   handshake, an origin not allowed, the server shutting down);
# - error: the handler's upgrade() raised or returned something else (a 500);
# - abandoned: the connection was closed (the server shutting down) while an async
#   upgrade() was deciding. A client that leaves meanwhile is not seen until the 101 is
#   written (reading waits for the decision): that one counts as accepted, then as lost.
HANDSHAKE_OUTCOMES = ("accepted", "rejected", "refused", "error", "abandoned")
CLOSE_KINDS = tuple(kind.value for kind in CloseKind)

SHARE_INTERVAL = 1.0  # seconds between two writes of a worker's snapshot


class Recorder:
    """The live counters of one server, written by its HTTP phase, its registry and (the
    ``wire`` counters) its sessions."""

    __slots__ = ("closes", "connections_accepted", "handshakes", "http_responses",
                 "started_at", "wire")

    def __init__(self) -> None:
        self.wire = Counters()  # messages, bytes and drops, shared by every session
        self.connections_accepted = 0  # TCP (or Unix socket) connections, since start
        self.handshakes = dict.fromkeys(HANDSHAKE_OUTCOMES, 0)
        self.http_responses: dict[int, int] = {}  # status -> answers (not the 101s)
        self.closes = dict.fromkeys(CLOSE_KINDS, 0)  # ended WebSockets by CloseKind
        self.started_at = time.time()

    def handshake(self, outcome: str) -> None:
        self.handshakes[outcome] += 1

    def response(self, status: int) -> None:
        responses = self.http_responses
        responses[status] = responses.get(status, 0) + 1

    def closed(self, kind: CloseKind) -> None:
        self.closes[kind.value] += 1


@dataclass(frozen=True, slots=True)
class ServerStats:
    """What one server process has open and has done since it started: ``server.stats()``
    (this process) and ``server.worker_stats()`` (every worker of ``corral run --workers``).

    Messages are data messages (a fragmented one counts once); bytes are what the WebSocket
    connections read and wrote after their handshakes, frames and compression included.
    ``handshakes`` counts each outcome of :data:`HANDSHAKE_OUTCOMES`, ``closes`` each
    :class:`~corral.CloseKind` of the WebSockets that ended, ``http_responses`` the HTTP
    answers by status (refusals of handshakes included, 101s not)."""

    worker: int  # the worker's number under --workers (0 for a single process)
    pid: int
    started_at: float  # Unix time the server started
    taken_at: float  # Unix time of this snapshot
    connections_accepted: int  # connections accepted, HTTP and WebSocket
    http_connections: int  # open connections still in their HTTP phase
    websockets: int  # open WebSocket connections
    handshakes: Mapping[str, int]
    http_responses: Mapping[int, int]
    closes: Mapping[str, int]
    messages_received: int
    messages_sent: int
    bytes_received: int
    bytes_sent: int
    dropped_messages: int  # not sent because of max_backpressure
    backpressure_closes: int  # connections closed with 1013 by backpressure_policy "close"
    publishes: int  # publishes made in this process
    publish_failures: int  # of those, the ones the broker did not take
    broker: str  # the broker's name ("memory", "redis")
    broker_connected: bool
    topics: int  # topics with subscribers in this process
    subscriptions: int  # subscriptions of this process's connections, all topics

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready values (status codes as strings)."""
        data = asdict(self)
        data["http_responses"] = {str(k): v for k, v in self.http_responses.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerStats:
        """The inverse of :meth:`as_dict`; ValueError when a field is missing or wrong."""
        try:
            values = {f.name: data[f.name] for f in fields(cls)}
            values["http_responses"] = {int(k): int(v)
                                        for k, v in values["http_responses"].items()}
            return cls(**values)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a corral stats snapshot: {exc!r}") from exc


def take(recorder: Recorder, *, worker: int, http_connections: int, websockets: int,
         publishes: int, publish_failures: int, broker: str, broker_connected: bool,
         topics: int, subscriptions: int) -> ServerStats:
    """A snapshot of ``recorder`` with what the server has open."""
    wire = recorder.wire
    return ServerStats(
        worker=worker,
        pid=os.getpid(),
        started_at=recorder.started_at,
        taken_at=time.time(),
        connections_accepted=recorder.connections_accepted,
        http_connections=http_connections,
        websockets=websockets,
        handshakes=dict(recorder.handshakes),
        http_responses=dict(sorted(recorder.http_responses.items())),
        closes=dict(recorder.closes),
        messages_received=wire.messages_received,
        messages_sent=wire.messages_sent,
        bytes_received=wire.bytes_received,
        bytes_sent=wire.bytes_sent,
        dropped_messages=wire.dropped_messages,
        backpressure_closes=wire.backpressure_closes,
        publishes=publishes,
        publish_failures=publish_failures,
        broker=broker,
        broker_connected=broker_connected,
        topics=topics,
        subscriptions=subscriptions,
    )


# -- sharing between workers ------------------------------------------------------------------


def stats_file(directory: str, worker: int) -> str:
    return os.path.join(directory, f"worker-{worker}.json")


def write_shared(directory: str, stats: ServerStats) -> None:
    """Replace this worker's file atomically: a reader sees the old or the new one whole."""
    path = stats_file(directory, stats.worker)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(stats.as_dict(), file, separators=(",", ":"))
    os.replace(temporary, path)


def read_shared(directory: str) -> list[ServerStats]:
    """Every worker's last snapshot in ``directory``, by worker number; a file that cannot
    be read (its worker just exited, say) is left out."""
    found: list[ServerStats] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        if not (name.startswith("worker-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as file:
                found.append(ServerStats.from_dict(json.load(file)))
        except (OSError, ValueError) as exc:
            logger.debug("stats file %s skipped: %s", name, exc)
    return sorted(found, key=lambda stats: stats.worker)


async def share_stats(directory: str, take_stats: Callable[[], ServerStats],
                      interval: float = SHARE_INTERVAL) -> None:
    """Write a snapshot to ``directory`` now and every ``interval`` seconds until
    cancelled. A failed write is logged once and tried again next time."""
    failing = False
    while True:
        try:
            write_shared(directory, take_stats())
            failing = False
        except OSError as exc:
            if not failing:
                logger.warning("cannot share this worker's stats in %s: %s", directory, exc)
            failing = True
        await asyncio.sleep(interval)


def remove_shared(directory: str, worker: int) -> None:
    """Forget a worker that exited (the supervisor calls it)."""
    with contextlib.suppress(OSError):
        os.unlink(stats_file(directory, worker))
