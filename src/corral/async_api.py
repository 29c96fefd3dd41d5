"""The ``async for message in ws`` style, built as a handler over the callback core.

``AsyncWebSocket`` is itself a :class:`Handler`: it queues incoming messages and pauses
reading when ``max_queue`` of them wait, so a slow consumer pushes back on the peer instead of
growing memory. Server coroutines (``async def handler(ws)``) and ``corral.connect`` both
hand one out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from .exceptions import ConnectionClosed, ConnectionClosedOK, closed_error
from .handler import Accept, CloseReason, Handler
from .protocol.frames import CloseCode
from .request import Request
from .websocket import WebSocket

if TYPE_CHECKING:
    from .pubsub.broker import Broker

__all__ = ["AsyncWebSocket", "CoroutineHandler"]

logger = logging.getLogger("corral")


class AsyncWebSocket(Handler):
    """A connection used with ``await ws.recv()``, ``async for message in ws``,
    ``await ws.send(message)`` and ``await ws.close()``."""

    def __init__(self, max_queue: int = 16) -> None:
        self.ws: WebSocket | None = None
        self._max_queue = max_queue
        self._messages: deque[str | bytes] = deque()
        self._owing = False  # the session was told we owe answers (answers_pending)
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # known from on_open
        self._closed: CloseReason | None = None
        self._pongs: dict[bytes, list[asyncio.Future[float]]] = {}
        self._opened: asyncio.Future[None] | None = None

    # -- callbacks ---------------------------------------------------------------------------

    def on_open(self, ws: WebSocket) -> None:
        self.ws = ws
        self._loop = asyncio.get_running_loop()
        self._max_queue = ws.options.max_queue
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(None)

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        messages = self._messages
        messages.append(message)
        if not self._owing:
            self._owing = True
            ws.answers_pending()  # a close owed to the peer waits for our answer
        if len(messages) >= self._max_queue:
            ws.pause_reading()
        if self._waiter is not None:
            self._wake()

    def on_pong(self, ws: WebSocket, payload: bytes) -> None:
        if payload not in self._pongs:
            return  # unsolicited, or the answer to a keepalive ping
        loop_time = asyncio.get_running_loop().time()
        # A pong acknowledges its ping and every ping sent before it (RFC 6455 5.5.3).
        for key in list(self._pongs):
            for fut in self._pongs.pop(key):
                if not fut.done():
                    fut.set_result(loop_time)
            if key == payload:
                break

    def on_close(self, ws: WebSocket, reason: CloseReason) -> None:
        self._closed = reason
        self._wake()
        for futures in self._pongs.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(self._closed_exc())
        self._pongs.clear()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _closed_exc(self) -> ConnectionClosed:
        reason = self._closed
        if reason is None:
            # Closing, not closed yet: report the close frames so far, as recv() will later.
            if self.ws is None:
                return closed_error(1006)
            conn = self.ws.conn
            if conn.failure is not None:
                return closed_error(conn.failure.close_code)
            code, text = conn.close_received or conn.close_sent or (1006, "")
            return closed_error(code, text)
        return closed_error(reason.code, reason.reason)

    # -- the API -----------------------------------------------------------------------------

    @property
    def request(self) -> Request | None:
        return self.ws.request if self.ws else None

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol if self.ws else None

    @property
    def remote_address(self) -> Any:
        return self.ws.remote_address if self.ws else None

    @property
    def open(self) -> bool:
        return self.ws is not None and self.ws.open

    @property
    def close_reason(self) -> CloseReason | None:
        return self._closed

    @property
    def close_code(self) -> int | None:
        return self._closed.code if self._closed else None

    # Topics (server side): see WebSocket.subscribe.

    def _session(self) -> WebSocket:
        if self.ws is None:
            raise RuntimeError("the connection is not open yet")
        return self.ws

    def subscribe(self, topic: str) -> bool:
        return self._session().subscribe(topic)

    def unsubscribe(self, topic: str) -> bool:
        return self._session().unsubscribe(topic)

    @property
    def topics(self) -> frozenset[str]:
        return self.ws.topics if self.ws else frozenset()

    def publish(self, topic: str, message: str | bytes, *, keep: int = 0) -> asyncio.Future[int]:
        """See :meth:`corral.WebSocket.publish`; await the result to learn the broker took
        it (a failure raises :class:`~corral.PublishError` there)."""
        return self._session().publish(topic, message, keep=keep)

    @property
    def broker(self) -> Broker:
        """The server's broker: topic history and presence."""
        return self._session().broker

    @property
    def latency(self) -> float | None:
        """See :attr:`corral.WebSocket.latency`: the last keepalive round trip, seconds."""
        return self.ws.latency if self.ws else None

    @property
    def dropped_messages(self) -> int:
        """Messages not sent to this peer because of ``max_backpressure`` (publishes: this
        style's own ``send`` waits instead)."""
        return self.ws.dropped_messages if self.ws else 0

    @property
    def buffered_amount(self) -> int:
        """Bytes written to this peer but not yet taken by the kernel."""
        return self.ws.buffered_amount if self.ws else 0

    async def drain(self) -> None:
        """Wait until the write buffer is below ``write_limit`` (``send`` does this itself;
        useful after publishes, or ``ws.ws.send`` calls that do not wait)."""
        if self.ws is not None:
            await self.ws.drain()

    def recv(self) -> Coroutine[Any, Any, str | bytes]:
        """``await ws.recv()``: the next message; raises ConnectionClosed once the connection
        is over."""
        return self._receive(False)

    def __aiter__(self) -> AsyncWebSocket:
        return self

    def __anext__(self) -> Coroutine[Any, Any, str | bytes]:
        # The coroutine itself, not one awaiting it (nor an async generator): one layer less
        # per message, and less memory for a connection waiting in ``async for``.
        return self._receive(True)

    async def _receive(self, iterating: bool) -> str | bytes:
        """The next message; at the end, ConnectionClosed, or StopAsyncIteration when
        ``iterating`` and the connection closed normally."""
        while not self._messages:
            if self.ws is not None:
                self._owing = False
                self.ws.answers_done()
            if self._closed is not None:
                exc = self._closed_exc()
                if iterating and isinstance(exc, ConnectionClosedOK):
                    raise StopAsyncIteration
                raise exc
            if self._waiter is not None:
                raise RuntimeError("another coroutine is already waiting in recv()")
            loop = self._loop or asyncio.get_running_loop()
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._messages.popleft()
        ws = self.ws
        if ws is not None and ws.reading_paused and len(self._messages) <= self._max_queue // 2:
            ws.resume_reading()
        return message

    async def send(self, message: str | bytes) -> None:
        """Send a message and wait while the write buffer is over its limit."""
        ws = self.ws
        if ws is None:
            raise self._closed_exc()
        # Wait first: a buffer filled by publishes must not make this send a drop. (Tested
        # here, not in drain(), so the usual send makes no coroutine.)
        if ws.writing_paused:
            await ws.drain()
        # More messages already wait for this task: its replies to them go out together,
        # in one write at the next loop iteration, as a callback handler's are.
        sent = ws.send_soon(message) if self._messages else ws.send(message)
        if not sent:
            raise self._closed_exc()
        if ws.writing_paused:
            await ws.drain()

    async def send_fragments(self, fragments: Any) -> None:
        """Send one message in fragments from an iterable or async iterable of str/bytes."""
        ws = self.ws
        if ws is None:
            raise closed_error(1006)
        previous: str | bytes | None = None
        started = False
        pieces = fragments if hasattr(fragments, "__aiter__") else _as_async(fragments)
        try:
            async for piece in pieces:
                # Each piece goes out once the next one is known, so the last is marked fin.
                if previous is not None:
                    self._send_fragment(ws, previous, False)
                    started = True
                    await ws.drain()
                previous = piece
            if previous is None:
                raise ValueError("a message needs at least one fragment")
            self._send_fragment(ws, previous, True)
        except BaseException:
            # A message cut short (the iterable raised, str mixed with bytes, cancellation)
            # can neither be finished nor followed by another one: close (1011) rather than
            # leave a connection that can no longer send.
            if started and ws.open:
                ws.close(CloseCode.INTERNAL_ERROR, "")
            raise
        await ws.drain()

    def _send_fragment(self, ws: WebSocket, data: str | bytes, last: bool) -> None:
        if not ws.send_fragment(data, last):
            raise self._closed_exc()

    async def ping(self, payload: bytes = b"") -> Awaitable[float]:
        """Send a ping; the returned future resolves (to the loop time) when the pong comes."""
        ws = self.ws
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if ws is None or not ws.ping(payload):
            raise self._closed_exc()
        self._pongs.setdefault(bytes(payload), []).append(fut)
        await ws.drain()
        return fut

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and wait until it is over (at most the close timeout)."""
        ws = self.ws
        if ws is None:
            return
        ws.close(code, reason)
        await ws.wait_closed()

    async def wait_closed(self) -> CloseReason:
        assert self.ws is not None
        return await self.ws.wait_closed()


async def _as_async(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


class CoroutineHandler(AsyncWebSocket):
    """Runs ``async def app(ws)`` for one server connection; closes 1000 when it returns."""

    def __init__(
        self,
        app: Callable[[AsyncWebSocket], Awaitable[Any]],
        subprotocols: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self._app = app
        self._subprotocols = subprotocols
        self._task: asyncio.Task[None] | None = None

    def upgrade(self, request: Request) -> Accept:
        chosen = next((p for p in request.subprotocols if p in self._subprotocols), None)
        return Accept(subprotocol=chosen)

    def on_open(self, ws: WebSocket) -> None:
        super().on_open(ws)
        self._task = ws.create_task(self._run(ws))

    async def _run(self, ws: WebSocket) -> None:
        try:
            await self._app(self)
        except ConnectionClosed:
            pass
        except Exception as exc:
            if ws.open:
                ws.fail(exc)
            else:
                logger.error("WebSocket coroutine %r crashed", self._app, exc_info=exc)
            return
        finally:
            ws.answers_done()  # sends a close the peer is owed, if it closed first
        if ws.open:
            ws.close(1000, "")
