"""A client that outlives its connections: ``corral.connect(url, reconnect=True)``.

When a server node stops (close 1001), restarts (1012), is overloaded (1013), or the TCP
connection simply drops, a :class:`ReconnectingWebSocket` dials again with exponential backoff
and full jitter, so a fleet of clients does not come back in one wave. ``async for`` keeps
iterating: messages already queued from the old connection come first, then those of the new
one. An optional ``message_id`` callable lets corral remember the last message id received;
it is offered back on reconnect (a request header and/or an ``on_reconnect`` hook) so the
server can replay what the client missed.

Each connection is an ordinary :class:`AsyncWebSocket` (a "link"); this module only decides
when to dial again and stitches the links together. Opening one link is injected as a
callable (``dial``), so the policy knows nothing of URLs, TLS or handshakes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import random as random_module
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any

from .async_api import AsyncWebSocket
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidResponse,
    InvalidStatus,
    closed_error,
)
from .handler import CloseKind, CloseReason, Handler
from .websocket import WebSocket

__all__ = ["RETRY_CLOSE_CODES", "Reconnect", "ReconnectingWebSocket"]

logger = logging.getLogger("corral.client")

# Close codes that say "this node, not you": going away (1001), internal error (1011),
# service restart (1012), try again later (1013), bad gateway (1014). 1000 and 1005 are a
# normal end; protocol and policy errors would only fail again.
RETRY_CLOSE_CODES = frozenset({1001, 1011, 1012, 1013, 1014})

# HTTP answers to the upgrade worth another try: the server or a proxy is in trouble (5xx),
# asks us to slow down (429), or timed out waiting for our request (408).
_RETRY_STATUSES = frozenset({408, 429})

MessageId = Callable[[str | bytes], str | None]
OnReconnect = Callable[["ReconnectingWebSocket", str | None], Awaitable[None] | None]
Dial = Callable[[Handler, Sequence[tuple[str, str]]], Awaitable[WebSocket]]

# Set in the reconnecting task while on_reconnect runs: its sends go out at once, before the
# application's sends that waited for the new connection.
_in_hook: ContextVar[ReconnectingWebSocket | None] = ContextVar("corral_in_hook", default=None)


@dataclasses.dataclass(frozen=True, slots=True)
class Reconnect:
    """When and how often to dial again. Times in seconds.

    - ``initial_delay`` (0.5): cap of the first retry's random delay, so a connection that
      had been up comes back within half a second on average.
    - ``max_delay`` (30): the cap never grows past this.
    - ``factor`` (2): the cap is multiplied by this after each failed try.
    - ``max_attempts`` (None: never give up): failed connection attempts in a row after which
      the client gives up.
    - ``reset_after`` (5): a connection must have stayed up this long for the backoff to
      start over; one that opens and dies at once counts as a failure, so a server that
      accepts and crashes is not hammered.
    - ``send_timeout`` (10; None: no limit): how long ``send()`` waits for a reconnection
      before raising ``ConnectionClosedError``.
    - ``close_codes`` (1001, 1011, 1012, 1013, 1014): close codes from the server that lead to
      a reconnection. A dropped connection (1006) or a keepalive timeout always does.
    """

    initial_delay: float = 0.5
    max_delay: float = 30.0
    factor: float = 2.0
    max_attempts: int | None = None
    reset_after: float = 5.0
    send_timeout: float | None = 10.0
    close_codes: frozenset[int] = RETRY_CLOSE_CODES

    def __post_init__(self) -> None:
        if not self.initial_delay >= 0 or not self.max_delay >= self.initial_delay:
            raise ValueError("need 0 <= initial_delay <= max_delay")
        if not self.factor >= 1:
            raise ValueError("factor must be at least 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 or None")
        if not self.reset_after >= 0:
            raise ValueError("reset_after must not be negative")
        if self.send_timeout is not None and not self.send_timeout >= 0:
            raise ValueError("send_timeout must not be negative")
        object.__setattr__(self, "close_codes", frozenset(self.close_codes))

    def delay(self, retry: int, random: Callable[[], float] = random_module.random) -> float:
        """The wait before retry number ``retry`` (0 first): "full jitter", uniform between 0
        and ``min(max_delay, initial_delay * factor ** retry)``, which spreads clients that
        lost the same server better than a fixed delay plus a little noise."""
        try:
            cap = min(self.max_delay, self.initial_delay * self.factor ** retry)
        except OverflowError:
            cap = self.max_delay
        return random() * cap

    def retries_close(self, reason: CloseReason) -> bool:
        """Whether a connection that ended this way (not closed by us) is dialled again."""
        if reason.kind in (CloseKind.LOST, CloseKind.TIMEOUT):
            return True
        return reason.kind is CloseKind.REMOTE and reason.code in self.close_codes

    @staticmethod
    def retries_error(exc: BaseException) -> bool:
        """Whether a failed connection attempt is worth another: network errors, timeouts, a
        connection cut mid-handshake, 5xx/408/429. A refusal (4xx), a bad answer, a bad
        certificate or a bad URL would fail the same way again."""
        if isinstance(exc, InvalidStatus):
            return exc.status >= 500 or exc.status in _RETRY_STATUSES
        if isinstance(exc, InvalidResponse):
            return exc.status == 0  # the connection ended before a full answer
        if isinstance(exc, ssl.SSLCertVerificationError):
            return False
        return isinstance(exc, OSError)  # refused, reset, unreachable, DNS, TimeoutError


class _Link(AsyncWebSocket):
    """One connection of a reconnecting client: counts what it holds for ``recv`` and
    reports each message's arrival (for the last message id)."""

    def __init__(self, max_queue: int, arrived: Callable[[str | bytes], None] | None) -> None:
        super().__init__(max_queue)
        self._arrived = arrived
        self.pending = 0

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        super().on_message(ws, message)
        self.pending += 1
        if self._arrived is not None:
            self._arrived(message)  # a raise fails this connection (1011), like a handler's

    async def recv(self) -> str | bytes:
        message = await super().recv()
        self.pending -= 1
        return message

    @property
    def ended(self) -> bool:
        return self.close_reason is not None

    def abandon(self) -> None:
        """Drop a connection opened by an attempt that was cancelled."""
        if self.ws is not None:
            self.ws.abort()


class ReconnectingWebSocket:
    """What ``corral.connect(url, reconnect=...)`` gives: the :class:`AsyncWebSocket` API
    (``recv``, ``send``, ``async for``, ``close``) over a series of connections.

    ``reconnects`` counts reconnections; ``last_id`` is the id of the last message received
    (with ``message_id``). ``send()`` while disconnected waits for the next connection, up to
    ``Reconnect.send_timeout``; once the client has ended for good it raises at once.
    """

    def __init__(
        self,
        dial: Dial,
        policy: Reconnect,
        *,
        target: str,
        max_queue: int = 16,
        message_id: MessageId | None = None,
        on_reconnect: OnReconnect | None = None,
        resume_header: str | None = None,
        random: Callable[[], float] = random_module.random,
    ) -> None:
        self.url = target  # for logs: scheme, host, port and path, never the query string
        self.reconnects = 0
        self.last_id: str | None = None
        self._dial = dial
        self._policy = policy
        self._max_queue = max_queue
        self._message_id = message_id
        self._on_reconnect = on_reconnect
        self._resume_header = resume_header
        self._random = random
        self._chain: deque[_Link] = deque()  # recv reads the first, the last is the newest
        self._live: _Link | None = None  # where send() goes; None while (re)connecting
        self._retry = 0  # index of the next backoff delay
        self._opened_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Why the client ended: close code, reason, cause, and whether that is an error even
        # with 1000/1001 (a going-away that could not be followed is not a normal end).
        self._end: tuple[int, str, BaseException | None, bool] | None = None
        self._ended = asyncio.Event()
        self._changed = asyncio.Event()  # replaced after each set: wakes every waiter once

    # -- state -------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """True while connected (False between connections and after the end)."""
        return self._live is not None and self._live.open

    @property
    def connection(self) -> AsyncWebSocket | None:
        """The current connection, None while reconnecting."""
        return self._live

    @property
    def subprotocol(self) -> str | None:
        return self._chain[-1].subprotocol if self._chain else None

    @property
    def remote_address(self) -> Any:
        return self._live.remote_address if self._live else None

    @property
    def close_code(self) -> int | None:
        """The close code the client ended with; None while it goes on."""
        return self._end[0] if self._end else None

    @property
    def close_reason(self) -> CloseReason | None:
        """The last connection's CloseReason, once the client has ended."""
        return self._chain[-1].close_reason if self._end and self._chain else None

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _stop(
        self, code: int, reason: str, cause: BaseException | None = None, error: bool = False
    ) -> None:
        if self._end is None:
            self._end = (code, reason, cause, error)
        self._live = None
        self._ended.set()
        self._notify()

    def _end_error(self) -> ConnectionClosed:
        assert self._end is not None
        code, reason, _, error = self._end
        if error:
            return ConnectionClosedError(code, reason)
        return closed_error(code, reason)  # raised ``from`` the cause

    # -- receiving ---------------------------------------------------------------------------

    def _arrived(self, message: str | bytes) -> None:
        assert self._message_id is not None
        message_id = self._message_id(message)
        if message_id is not None:
            if not isinstance(message_id, str):
                raise TypeError(f"message_id must return str or None, not {message_id!r}")
            self.last_id = message_id

    async def recv(self) -> str | bytes:
        """The next message, from whichever connection it came on; raises ConnectionClosed
        once the client has ended (normal close, refusal, give-up, or ``close()``)."""
        while True:
            link = self._chain[0]
            try:
                return await link.recv()
            except ConnectionClosed:
                if self._chain[0] is not link:
                    continue  # dropped from the chain meanwhile (ended and empty)
                if len(self._chain) > 1:
                    self._chain.popleft()
                    continue
                if self._end is not None:
                    raise self._end_error() from self._end[2]
                await self._changed.wait()  # the next connection, or the end

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str | bytes]:
        while True:
            try:
                yield await self.recv()
            except ConnectionClosedOK:
                return

    # -- sending -----------------------------------------------------------------------------

    async def _sending_link(self) -> AsyncWebSocket:
        if _in_hook.get() is self:
            return self._chain[-1]
        loop = asyncio.get_running_loop()
        timeout = self._policy.send_timeout
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._end is not None:
                raise self._end_error() from self._end[2]
            live = self._live
            if live is not None and live.open:
                return live
            changed = self._changed
            remaining = None if deadline is None else deadline - loop.time()
            try:
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                raise ConnectionClosedError(1006, "not reconnected within send_timeout") from None

    async def send(self, message: str | bytes) -> None:
        """Send on the current connection, waiting for a reconnection if there is none. A
        message written just before a drop may be lost: use ids and a resume to be sure."""
        link = await self._sending_link()
        await link.send(message)

    async def send_fragments(self, fragments: Any) -> None:
        link = await self._sending_link()
        await link.send_fragments(fragments)

    async def ping(self, payload: bytes = b"") -> Awaitable[float]:
        link = await self._sending_link()
        return await link.ping(payload)

    # -- closing -----------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Stop reconnecting, close the current connection and wait until it is over."""
        if self._closing:
            await self._ended.wait()
            return
        self._closing = True
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait([task])  # never raises, so our own cancellation stays ours
        link = self._chain[-1] if self._chain else None
        if link is not None and not link.ended:
            await link.close(code, reason)
            ended = link.close_reason
            if ended is not None and ended.kind is not CloseKind.LOST:
                code, reason = ended.code, ended.reason
        self._stop(code, reason)

    async def wait_closed(self) -> CloseReason | None:
        """Wait until the client has ended for good; the last connection's CloseReason."""
        await self._ended.wait()
        return self.close_reason

    # -- connecting --------------------------------------------------------------------------

    async def start(self) -> ReconnectingWebSocket:
        """Open the first connection (retried like the others), then watch over it."""
        self._live = await self._open_link(0.0)
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"corral reconnect {self.url}"
        )
        return self

    def _next_delay(self) -> float:
        delay = self._policy.delay(self._retry, self._random)
        self._retry += 1
        return delay

    async def _open_link(self, delay: float) -> _Link:
        """Dial until a connection opens; raise what cannot be retried, or the last error
        once ``max_attempts`` have failed."""
        policy = self._policy
        failed = 0
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            if self._closing:
                # close() cancels this task, but 3.11's wait_for can swallow a cancellation
                # that races with a finished connect: the flag ends the loop regardless.
                raise asyncio.CancelledError
            link = _Link(self._max_queue, self._arrived if self._message_id else None)
            headers: list[tuple[str, str]] = []
            if self._resume_header is not None and self.last_id is not None:
                headers.append((self._resume_header, self.last_id))
            try:
                await self._dial(link, headers)
            except asyncio.CancelledError:
                link.abandon()
                raise
            except Exception as exc:
                failed += 1
                if not policy.retries_error(exc):
                    raise
                if policy.max_attempts is not None and failed >= policy.max_attempts:
                    logger.warning("giving up on %s after %d failed attempts: %s",
                                   self.url, failed, _describe(exc))
                    raise
                delay = self._next_delay()
                logger.info("connecting to %s failed (%s); retrying in %.2f s",
                            self.url, _describe(exc), delay)
                continue
            self._opened_at = asyncio.get_running_loop().time()
            # Forget connections that are over and hold nothing more for recv().
            self._chain = deque(old for old in self._chain if old.pending or not old.ended)
            self._chain.append(link)
            self._notify()  # recv() moves on to it; send() waits for _live
            return link

    async def _supervise(self) -> None:
        try:
            while True:
                link = self._chain[-1]
                reason = await link.wait_closed()
                self._live = None
                self._notify()
                if self._closing:
                    return
                if not self._policy.retries_close(reason):
                    self._stop(reason.code, reason.reason, reason.error)
                    return
                now = asyncio.get_running_loop().time()
                if now - self._opened_at >= self._policy.reset_after:
                    self._retry = 0
                delay = self._next_delay()
                logger.info("connection to %s ended (%s, %d%s); reconnecting in %.2f s",
                            self.url, reason.kind.value, reason.code,
                            f" {reason.reason!r}" if reason.reason else "", delay)
                try:
                    link = await self._open_link(delay)
                except Exception as exc:
                    logger.warning("stopped reconnecting to %s: %s", self.url, _describe(exc))
                    self._stop(reason.code, reason.reason, exc, error=True)
                    return
                self.reconnects += 1
                logger.info("reconnected to %s (reconnection %d, last id %s)",
                            self.url, self.reconnects, self.last_id)
                if not await self._run_hook(link):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must end recv(), not leave it waiting
            logger.exception("reconnecting to %s failed", self.url)
            self._stop(1011, "", exc, error=True)

    async def _run_hook(self, link: _Link) -> bool:
        """Run on_reconnect before the application's waiting sends go out. A connection lost
        meanwhile is reconnected as usual; any other error ends the client (False)."""
        hook = self._on_reconnect
        if hook is None:
            self._live = link
            self._notify()
            return True
        token = _in_hook.set(self)
        try:
            result = hook(self, self.last_id)
            if inspect.isawaitable(result):
                await result
        except ConnectionClosed:
            pass  # the new connection ended: the supervisor sees it and dials again
        except Exception as exc:
            logger.error("on_reconnect for %s raised", self.url, exc_info=exc)
            if link.open:
                await link.close(1011, "")
            self._stop(1011, "", exc, error=True)
            return False
        finally:
            _in_hook.reset(token)
        if link.open:
            self._live = link
            self._notify()
        return True


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
