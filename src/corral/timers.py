"""The timers of one open connection: idle, keepalive ping, close handshake, held close.

They are re-armed lazily: receiving data only stamps the time (``_last_recv``), and a timer
that fires early re-arms itself for the remaining time. Timers cost nothing per message.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .protocol.connection import State
from .protocol.frames import CloseCode

if TYPE_CHECKING:
    from .handler import CloseReason
    from .options import Options
    from .protocol.connection import Connection

__all__ = ["ANSWER_GRACE", "Timers"]

# How long a close owed to the peer may wait for the application to answer the messages that
# came before it (seconds).
ANSWER_GRACE = 1.0


class Timers:
    """Mixin of :class:`corral.websocket.WebSocket` (which holds the slots)."""

    __slots__ = (
        "_close_timer",
        "_grace_timer",
        "_idle_timer",
        "_keepalive_timer",
        "_last_recv",
        "_ping_sent_at",
    )

    def _init_timers(self) -> None:
        self._idle_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._grace_timer: asyncio.TimerHandle | None = None
        self._last_recv = 0.0
        self._ping_sent_at = 0.0

    if TYPE_CHECKING:
        conn: Connection
        options: Options
        transport: asyncio.Transport | None
        _loop: asyncio.AbstractEventLoop | None
        _finished: CloseReason | None
        _reading: bool
        _write_paused: bool

        @property
        def open(self) -> bool: ...

        def _timed_out(self, error: BaseException | None = None) -> None: ...

        def _grace_over(self) -> None: ...

        def close(self, code: int = 1000, reason: str = "") -> None: ...

        def ping(self, payload: bytes = b"") -> bool: ...

    def _start_close_timer(self) -> None:
        if self._close_timer is None and self._loop is not None:
            self._close_timer = self._loop.call_later(self.options.close_timeout,
                                                      self._close_timeout)

    def _close_timeout(self) -> None:
        self._close_timer = None
        if self.conn.state is not State.CLOSED:
            self._timed_out()
        if self.transport is not None:
            self.transport.abort()

    def _arm_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        timeout = self.options.idle_timeout
        if timeout is not None and self._loop is not None and self._finished is None:
            self._idle_timer = self._loop.call_at(self._last_recv + timeout, self._idle_check)

    def _idle_check(self) -> None:
        """Timers are re-armed lazily: a read only stamps the time, the timer checks it."""
        self._idle_timer = None
        timeout = self.options.idle_timeout
        if timeout is None or self._finished is not None:
            return
        loop = self._loop
        assert loop is not None
        if self._deaf():
            self._last_recv = loop.time()  # we chose not to listen: the peer is not idle
        deadline = self._last_recv + timeout
        if loop.time() < deadline:
            self._idle_timer = loop.call_at(deadline, self._idle_check)
            return
        if self.open:
            self._timed_out()
            self.close(CloseCode.GOING_AWAY, "idle timeout")

    def _arm_keepalive(self) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        interval = self.options.ping_interval
        if interval is not None and self._loop is not None and self._finished is None:
            self._keepalive_timer = self._loop.call_later(interval, self._keepalive)

    def _keepalive(self) -> None:
        self._keepalive_timer = None
        if self._finished is not None or not self.open:
            return
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if self._deaf():
            self._last_recv = now  # a pong cannot be read while we chose not to read
        timeout = self.options.ping_timeout
        if (self._ping_sent_at and timeout is not None and self._last_recv < self._ping_sent_at
                and now - self._ping_sent_at >= timeout):
            # Nothing at all from the peer since the ping: it is gone.
            self._timed_out(TimeoutError("keepalive ping timeout"))
            if self.transport is not None:
                self.transport.abort()
            return
        if not self._ping_sent_at or self._last_recv >= self._ping_sent_at:
            self._ping_sent_at = now
            self.ping(b"")
        interval = self.options.ping_interval
        if interval is not None:
            delay = interval
            if timeout is not None and self._ping_sent_at:
                delay = min(interval, max(0.0, self._ping_sent_at + timeout - now))
            self._keepalive_timer = loop.call_later(delay or interval, self._keepalive)

    def _deaf(self) -> bool:
        """We do not read, by our own choice (pause, busy handler): the peer's deadlines
        wait. Not when the peer itself does not read our writes: that is its fault."""
        return not self._reading and not self._write_paused

    def _cancel_timers(self) -> None:
        for timer in (self._idle_timer, self._close_timer, self._keepalive_timer,
                      self._grace_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._close_timer = self._keepalive_timer = self._grace_timer = None

    def _hold_close_briefly(self) -> None:
        """Start the grace period of a close held for the application (see ANSWER_GRACE)."""
        if self._grace_timer is None and self._loop is not None:
            self._grace_timer = self._loop.call_later(ANSWER_GRACE, self._grace_over)
