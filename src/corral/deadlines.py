"""The deadlines of one open connection: idle, keepalive ping, close handshake, held close.

:class:`Deadlines` keeps the timers and decides when each one is due; what to do then is the
host's (a :class:`DeadlineHost`, the session), through a few narrow methods. Timers are
re-armed lazily: receiving data only stamps the time (``last_recv``), and a timer that fires
early re-arms itself for the remaining time, so deadlines cost nothing per message.
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .options import Options

__all__ = ["ANSWER_GRACE", "DeadlineHost", "Deadlines"]

# How long a close owed to the peer may wait for the application to answer the messages that
# came before it (seconds).
ANSWER_GRACE = 1.0

_PING_PAYLOAD = struct.Struct("!d").pack  # a keepalive ping's payload: its loop time


class DeadlineHost(Protocol):
    """What the deadlines need from the connection they watch."""

    @property
    def options(self) -> Options:
        """Where ``idle_timeout``, ``ping_interval``, ``ping_timeout`` and ``close_timeout``
        are read, each time (they change at run time)."""

    @property
    def ended(self) -> bool:
        """The connection is over: no deadline applies any more."""

    @property
    def open(self) -> bool:
        """Messages (and keepalive pings) can still be sent."""

    def deaf(self) -> bool:
        """We do not read the peer, by our own choice: its silence does not count."""

    def send_keepalive(self, payload: bytes) -> None:
        """Send a keepalive ping with this payload."""

    def idle_expired(self) -> None:
        """Nothing came for ``idle_timeout``: close."""

    def peer_gone(self) -> None:
        """Nothing came for ``ping_timeout`` after a keepalive ping: drop the connection."""

    def close_expired(self) -> None:
        """The close handshake did not end within ``close_timeout``: drop the connection."""

    def grace_over(self) -> None:
        """A close held for the application (ANSWER_GRACE) must go out now."""


class Deadlines:
    """The timers of one connection, armed on the given loop for the given host."""

    __slots__ = (
        "_close",
        "_grace",
        "_host",
        "_idle",
        "_keepalive",
        "_loop",
        "last_recv",
        "latency",
        "ping_payload",
        "ping_sent_at",
    )

    def __init__(self, host: DeadlineHost, loop: asyncio.AbstractEventLoop) -> None:
        self._host = host
        self._loop = loop
        self._idle: asyncio.TimerHandle | None = None
        self._close: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._grace: asyncio.TimerHandle | None = None
        # Loop time of the last read from the peer, stamped by the session on every read.
        self.last_recv = loop.time()
        self.ping_sent_at = 0.0  # of the keepalive ping not answered yet; 0.0 if none
        self.ping_payload = b""  # of the last keepalive ping: its pong measures the latency
        self.latency: float | None = None  # the last keepalive round trip, in seconds

    # -- the close handshake -------------------------------------------------------------------

    def start_close(self) -> None:
        """The close handshake (or the end of TCP) has begun: bound how long it may take."""
        if self._close is None:
            self._close = self._loop.call_later(self._host.options.close_timeout,
                                                self._close_due)

    def _close_due(self) -> None:
        self._close = None
        self._host.close_expired()

    def hold_close(self) -> None:
        """A close owed to the peer waits for the application: for ANSWER_GRACE at most."""
        if self._grace is None:
            self._grace = self._loop.call_later(ANSWER_GRACE, self._grace_due)

    def _grace_due(self) -> None:
        self._grace = None
        self._host.grace_over()

    # -- idle ------------------------------------------------------------------------------------

    def arm_idle(self) -> None:
        """(Re)start the idle deadline from ``last_recv`` (after ``idle_timeout`` changed)."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        timeout = self._host.options.idle_timeout
        if timeout is not None and not self._host.ended:
            self._idle = self._loop.call_at(self.last_recv + timeout, self._idle_due)

    def _idle_due(self) -> None:
        """A read only stamps the time; the timer checks it and re-arms for the rest."""
        self._idle = None
        host = self._host
        timeout = host.options.idle_timeout
        if timeout is None or host.ended:
            return
        now = self._loop.time()
        if host.deaf():
            self.last_recv = now  # we chose not to listen: the peer is not idle
        deadline = self.last_recv + timeout
        if now < deadline:
            self._idle = self._loop.call_at(deadline, self._idle_due)
            return
        if host.open:
            host.idle_expired()

    # -- keepalive -------------------------------------------------------------------------------

    def arm_keepalive(self) -> None:
        """(Re)start keepalive pings (after ``ping_interval`` changed)."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        interval = self._host.options.ping_interval
        if interval is not None and not self._host.ended:
            self._keepalive = self._loop.call_later(interval, self._keepalive_due)

    def _keepalive_due(self) -> None:
        self._keepalive = None
        host = self._host
        if host.ended or not host.open:
            return
        now = self._loop.time()
        if host.deaf():
            self.last_recv = now  # a pong cannot be read while we chose not to read
        options = host.options
        timeout = options.ping_timeout
        sent = self.ping_sent_at
        if sent and timeout is not None and self.last_recv < sent and now - sent >= timeout:
            host.peer_gone()  # nothing at all from the peer since the ping
            return
        if not sent or self.last_recv >= sent:
            self.ping_sent_at = sent = now
            # Its own payload (the send time), so that only its pong, not one answering an
            # application's ping, is taken as its round trip.
            self.ping_payload = _PING_PAYLOAD(now)
            host.send_keepalive(self.ping_payload)
        interval = options.ping_interval
        if interval is not None:
            delay = interval
            if timeout is not None and sent:
                delay = min(interval, max(0.0, sent + timeout - now))
            self._keepalive = self._loop.call_later(delay or interval, self._keepalive_due)

    def pong_received(self, payload: bytes) -> None:
        """Any pong shows the peer is there; the keepalive ping's own also gives the round
        trip time (``latency``)."""
        if self.ping_sent_at and payload == self.ping_payload:
            self.latency = self._loop.time() - self.ping_sent_at
        self.ping_sent_at = 0.0

    # -- the end ---------------------------------------------------------------------------------

    def cancel(self) -> None:
        """The connection is over: stop every timer."""
        for timer in (self._idle, self._close, self._keepalive, self._grace):
            if timer is not None:
                timer.cancel()
        self._idle = self._close = self._keepalive = self._grace = None
