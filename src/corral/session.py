"""The session: runs one handler over one open WebSocket connection.

It sits between a :class:`~corral.transport.Wire` (what carries the bytes) and the handler.
It turns the sans-I/O core's events into handler callbacks, keeps the events that must wait
(a running ``async`` callback, a paused handler) in a backlog, applies the commands callbacks
return (one table, ``_COMMANDS``), applies the backpressure policy, and corks every frame
produced while handling one read into a single write. The deadlines are a
:class:`~corral.deadlines.Deadlines` it hosts; the handler sees the session through its thin
public handle, :class:`~corral.websocket.WebSocket`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from .accel import Counters, configure_hot_path
from .deadlines import Deadlines
from .exceptions import PayloadTooBig
from .handler import (
    Binary,
    Close,
    CloseKind,
    CloseReason,
    Deflate,
    Fragment,
    Handler,
    Pause,
    Ping,
    Pong,
    Resume,
    SetOptions,
    Text,
)
from .options import Options, check_runtime_changes
from .protocol import events as ev
from .protocol.connection import SPLIT_PAYLOAD, Connection, Side, State
from .protocol.frames import CloseCode, serialize_close

if TYPE_CHECKING:
    from .pubsub.broker import Broker
    from .pubsub.topics import Message, Topics
    from .transport import Wire
    from .websocket import WebSocket

__all__ = ["Session"]

logger = logging.getLogger("corral")


# Events that do not come from the wire, queued in order with those that do.
class _Info(NamedTuple):
    info: Any


class _Dropped(NamedTuple):
    message: str | bytes


class _Drained(NamedTuple):
    pass


_DRAINED = _Drained()


class Session:
    """The handler runner of one connection (see the module docstring)."""

    __slots__ = (
        "_backlog",
        "_busy",
        "_callback_task",
        "_closed_waiter",
        "_closing_kind",
        "_corked",
        "_drain_waiters",
        "_dropping",
        "_eof",
        "_error",
        "_finished",
        "_hold_for_app",
        "_loop",
        "_on_finish",
        "_paused",
        "_pubsub",
        "_reading",
        "_soon",
        "_topics",
        "_track_task",
        "_write_paused",
        "conn",
        "counters",
        "deadlines",
        "dropped_messages",
        "handler",
        "options",
        "wire",
        "ws",
    )

    def __init__(
        self,
        ws: WebSocket,
        conn: Connection,
        handler: Handler,
        options: Options,
        *,
        on_finish: Callable[[WebSocket], None] | None = None,
        track_task: Callable[[asyncio.Task[Any]], None] | None = None,
        pubsub: Topics | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.ws = ws  # what the handler's callbacks are given
        # The server's counters (corral.server.stats), shared by its sessions; a client's
        # session counts into its own, which nobody reads.
        self.counters = counters if counters is not None else Counters()
        self.conn = conn
        self.handler = handler
        self.options = options
        self.wire: Wire | None = None
        self.deadlines: Deadlines | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_finish = on_finish
        self._track_task = track_task
        self._pubsub = pubsub  # the server's topics; None on a client
        self._topics: set[str] | None = None  # this connection's, while it has any
        self._callback_task: asyncio.Task[None] | None = None
        self._reading = True  # the wire is being read (see _update_reading)
        self._eof = False  # the peer half-closed while we still owed it frames
        self._corked = False  # frames are collected for one write at the end of a read
        self._soon = 0  # bytes queued by send_soon, waiting for their flush (0: none due)
        self._busy = False  # an async callback is running: events wait in the backlog
        # The application (the async-for style) has messages it has not answered yet.
        self._hold_for_app = False
        self._paused = False  # the handler asked to stop reading
        self._backlog: deque[Any] | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._dropping = False  # messages are being dropped: over max_backpressure
        self.dropped_messages = 0  # data messages not sent because of max_backpressure
        self._closed_waiter: asyncio.Future[CloseReason] | None = None
        self._closing_kind: CloseKind | None = None
        self._error: BaseException | None = None
        self._finished: CloseReason | None = None

    # -- starting ------------------------------------------------------------------------------

    def start(self, wire: Wire, initial: bytes = b"") -> None:
        """Run on ``wire`` (already feeding this session); ``initial`` are bytes read with
        the handshake, handled right after ``on_open``."""
        self.wire = wire
        self._loop = loop = asyncio.get_running_loop()
        self.deadlines = deadlines = Deadlines(self, loop)
        deadlines.arm_idle()
        deadlines.arm_keepalive()
        self._corked = True
        try:
            self._dispatch(self.handler.on_open, self.ws)
            if initial:
                self._handle_received(self.conn.receive_data(initial))
        finally:
            self._corked = False
        self._flush()

    # -- fed by the wire (transport.Receiver) ----------------------------------------------------

    def read_target(self) -> memoryview | None:
        conn = self.conn
        return conn.payload_buffer() if conn.payload_pending else None

    def data_received(self, data: bytes | bytearray | memoryview) -> None:
        self._read(self.conn.receive_data, data)

    def payload_received(self, nbytes: int) -> None:
        self._read(self.conn.payload_received, nbytes)

    def _read(self, parse: Callable[[Any], list[ev.Event]], received: Any) -> None:
        """One read: stamp it for the deadlines, then handle its events with every frame
        they produce corked into one write."""
        self.deadlines.last_recv = self._loop.time()  # type: ignore[union-attr]
        self.counters.bytes_received += received if type(received) is int else len(received)
        self._corked = True
        try:
            self._handle_received(parse(received))
        finally:
            self._corked = False
        self._flush()

    def eof_received(self) -> bool:
        owing = self._busy or self._hold_for_app or self.conn.close_owed
        if owing and self.conn.state is not State.CLOSED:
            # Half-closed while answers (or our close) are still owed: keep writing, then
            # close, within the close timeout.
            self._eof = True
            self.deadlines.start_close()  # type: ignore[union-attr]
            return True
        self.conn.receive_eof()
        return False  # let the wire close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.receive_eof()
        self._finish()

    def pause_writing(self) -> None:
        # The peer does not take what we write: stop reading what it sends (its pings and
        # messages would only make us write more) until it catches up.
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
        waiters = self._drain_waiters
        if waiters:
            self._drain_waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        if self._dropping:
            self._dropping = False
            logger.info("peer %s caught up; %d message(s) dropped so far",
                        self.ws.remote_address, self.dropped_messages)
        if self._finished is None:
            self._loop.call_soon(self._deliver_event, _DRAINED)  # type: ignore[union-attr]

    # -- receiving ---------------------------------------------------------------------------------

    def _update_reading(self) -> None:
        """Read from the wire unless the handler paused, an async callback runs with
        ``max_queue`` events already waiting for it, or the peer is not reading our writes.
        One place decides, so the reasons cannot clash. (Reading on while a callback runs,
        up to that bound, is how a peer's close or disconnect is noticed meanwhile.)"""
        backlog_full = self._backlog is not None and len(self._backlog) >= self.options.max_queue
        want = not (self._paused or self._write_paused or (self._busy and backlog_full))
        wire = self.wire
        if want == self._reading or wire is None or wire.is_closing():
            return
        self._reading = want
        if want:
            wire.resume_reading()
            # The peer could not be heard while we did not read: restart its deadlines.
            self.deadlines.last_recv = self._loop.time()  # type: ignore[union-attr]
        else:
            wire.pause_reading()

    def _handle_received(self, events: list[ev.Event]) -> None:
        if not events:
            return
        if self._busy or self._paused or self._backlog:
            self._defer(events)
            return
        message = ev.Message
        on_message = self.handler.on_message
        ws = self.ws
        counters = self.counters
        for i, event in enumerate(events):
            if type(event) is message and self._closing_kind is not CloseKind.CRASH:
                # The hot path: _dispatch(on_message, ...) written out.
                counters.messages_received += 1
                try:
                    result = on_message(ws, event.data)
                except Exception as exc:
                    self._crash(exc)
                    result = None
                if result is not None:
                    self._handled(result)
            else:
                self._handle_event(event)
            if self._busy or self._paused:
                self._defer(events[i + 1 :])
                return

    def _defer(self, items: Iterable[Any]) -> None:
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.extend(items)
        if self._busy:
            self._update_reading()

    def _drain_backlog(self) -> None:
        backlog = self._backlog
        self._corked = True
        try:
            while backlog and not self._busy and not self._paused:
                self._handle_event(backlog.popleft())
        finally:
            self._corked = False
        if backlog is not None and not backlog:
            self._backlog = None
        self._flush()

    def _handle_event(self, event: Any) -> None:
        handler = self.handler
        ws = self.ws
        kind = type(event)
        if kind is ev.Message:
            self.counters.messages_received += 1
            self._dispatch(handler.on_message, ws, event.data)
        elif kind is ev.Fragment:
            if event.last:
                self.counters.messages_received += 1
            self._dispatch(handler.on_fragment, ws, event.data, event.last)
        elif kind is _Info:
            if self._finished is None:
                self._dispatch(handler.on_info, ws, event.info)
        elif kind is _Dropped:
            if self._finished is None:
                self._dispatch(handler.on_drop, ws, event.message)
        elif kind is _Drained:
            if self._finished is None:
                self._dispatch(handler.on_drain, ws)
        elif kind is ev.Ping:
            self._dispatch(handler.on_ping, ws, event.payload)
        elif kind is ev.Pong:
            if self.deadlines is not None:
                self.deadlines.pong_received(event.payload)
            self._dispatch(handler.on_pong, ws, event.payload)
        elif kind is ev.CloseReceived:
            if self._closing_kind is None:
                self._closing_kind = CloseKind.REMOTE
        elif kind is ev.Failed:
            if self._closing_kind is None:
                self._closing_kind = CloseKind.PROTOCOL_ERROR
                self._error = self.conn.failure
            if self.conn.failure is not None and not isinstance(self.conn.failure, PayloadTooBig):
                logger.debug("connection failed: %s", event.reason)

    def _dispatch(self, callback: Callable[..., Any], *args: Any) -> None:
        """Call a handler callback and apply what it returns; a raise closes with 1011."""
        if self._closing_kind is CloseKind.CRASH:
            return  # a handler that raised is not called again, except on_close
        try:
            result = callback(*args)
        except Exception as exc:
            self._crash(exc)
            return
        if result is not None:
            self._handled(result, callback.__name__)

    def _handled(self, result: Any, callback: str = "on_message") -> None:
        """Act on what a callback (named for errors) returned: commands, or an awaitable to
        run first."""
        if inspect.isawaitable(result):
            self._busy = True
            self._update_reading()
            self._callback_task = self.create_task(self._await_callback(result, callback))
            return
        try:
            self._apply(result, callback)
        except Exception as exc:  # a bad command (or its arguments) is the callback's error
            self._crash(exc)

    async def _await_callback(self, awaitable: Awaitable[Any], callback: str) -> None:
        try:
            try:
                result = await awaitable
            except asyncio.CancelledError as exc:
                if self._finished is None:  # cancelled by someone else: the handler failed
                    self._crash(exc)
                return
            except Exception as exc:
                self._crash(exc)
                return
            if result is not None:
                try:
                    self._apply(result, callback)
                except Exception as exc:  # as in _dispatch: crash, not a lost task error
                    self._crash(exc)
        finally:
            self._busy = False
            self._callback_task = None
            if self._finished is None:
                if self._backlog:
                    self._drain_backlog()
                else:
                    self._flush()
                self._update_reading()

    def create_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)  # type: ignore[union-attr]
        if self._track_task is not None:
            self._track_task(task)
        return task

    def fail(self, exc: BaseException) -> None:
        self._crash(exc)
        self._flush()

    def _crash(self, exc: BaseException) -> None:
        if (isinstance(exc, TypeError) and str(exc) == _AWAITED_BOOL
                and _AWAIT_HINT not in getattr(exc, "__notes__", ())):
            exc.add_note(_AWAIT_HINT)  # `await ws.send(...)` in a callback: say what to do
        logger.error("WebSocket handler %s crashed", type(self.handler).__name__, exc_info=exc)
        if self._closing_kind is None:
            self._closing_kind = CloseKind.CRASH
            self._error = exc
        # 1011 with no exception text on the wire.
        self.conn.send_close(CloseCode.INTERNAL_ERROR, "")

    def _apply(self, result: Any, callback: str = "on_message") -> None:
        """Carry out a command, a message to send (``str``, ``bytes``), or each of an iterable
        of them (see ``_COMMANDS``); anything else is the callback's mistake, named."""
        run = _COMMANDS.get(type(result))
        if run is not None:
            run(self, result)
            return
        if isinstance(result, _NOT_LISTS) or not isinstance(result, Iterable):
            self._command(result, callback, None)
            return
        for cmd in result:
            run = _COMMANDS.get(type(cmd))
            if run is None:
                self._command(cmd, callback, result)
            else:
                run(self, cmd)

    def _command(self, cmd: Any, callback: str, within: Any) -> None:
        """A returned value that is not an exact command type: a message of a subclass of
        str or bytes-like, a command's subclass, or an error that says what is allowed."""
        for kind, run in _COMMANDS.items():
            if isinstance(cmd, kind):
                run(self, cmd)
                return
        where = f"{type(self.handler).__qualname__}.{callback}"
        what = f"{_a(type(cmd).__name__)} ({cmd!r:.40})"
        if within is not None:
            what = f"{_a(type(within).__name__)} holding {what}"
        hint = " (to send JSON, return json.dumps(...))" if isinstance(cmd, Mapping) else ""
        raise TypeError(
            f"{where} returned {what}{hint}: a callback returns None, a message to send (str "
            "for text, bytes for binary), a command (Text, Binary, Close, Pause, Resume, "
            "Ping, Pong, Fragment, SetOptions, Deflate), a list of those, or an awaitable of "
            "them"
        )

    # -- sending -----------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self.conn.state is State.OPEN and self.conn.close_sent is None

    @property
    def ended(self) -> bool:
        return self._finished is not None

    def send(self, message: str | bytes, compress: bool = True) -> bool:
        conn = self.conn
        if conn.state is not State.OPEN or conn.close_sent is not None:
            return False
        if self._write_paused and self._over_backpressure(message):
            return False
        conn.send_message(message, compress)
        self.counters.messages_sent += 1
        if not self._corked:
            self._flush()
        return True

    def send_soon(self, message: str | bytes) -> bool:
        """``send``, with the write left to the next loop iteration unless ``write_limit``
        bytes are waiting by then: replies to a burst of messages go out in one write (as a
        callback's do, corked by the read), not in one write each."""
        if self._corked:
            return self.send(message)
        conn = self.conn
        if conn.state is not State.OPEN or conn.close_sent is not None:
            return False
        if self._write_paused and self._over_backpressure(message):
            return False
        conn.send_message(message)
        self.counters.messages_sent += 1
        due = self._soon
        self._soon = due + len(message) + 1
        if self._soon >= self.options.write_limit:
            self._flush()
        elif not due:
            self._loop.call_soon(self._flush_soon)  # type: ignore[union-attr]
        return True

    def _flush_soon(self) -> None:
        if self._soon:
            self._flush()

    def send_frame(self, frame: bytes | None, message: str | bytes, flush: bool) -> bool:
        conn = self.conn
        if conn.state is not State.OPEN or conn.close_sent is not None:
            return False
        if conn.sending_fragmented:
            self._drop(message)
            return False
        if self._write_paused and self._over_backpressure(message):
            return False
        if frame is None:
            conn.send_message(message)
        else:
            conn.queue_frame(frame)
        self.counters.messages_sent += 1
        if not self._corked and (flush or self._write_paused):
            self._flush()
        return True

    def flush(self) -> None:
        if not self._corked:
            self._flush()

    def _over_backpressure(self, message: str | bytes) -> bool:
        """Whether ``max_backpressure`` stops this message (only asked while writing is
        paused, so the usual send costs one flag test). Applies the policy: drop it and tell
        the handler, or close with 1013 so the client can come back later."""
        limit = self.options.max_backpressure
        wire = self.wire
        if limit is None or wire is None:
            return False
        buffered = wire.get_write_buffer_size()
        if buffered < limit:
            return False
        if self.options.backpressure_policy == "close":
            self.dropped_messages += 1
            self.counters.dropped_messages += 1
            self.counters.backpressure_closes += 1
            logger.warning("closing slow peer %s: %d bytes unsent, max_backpressure %d",
                           self.ws.remote_address, buffered, limit)
            self.close(CloseCode.TRY_AGAIN_LATER, "too slow: send buffer full")
            return True
        if not self._dropping:
            self._dropping = True  # one line per episode, not per message
            logger.warning("dropping messages to slow peer %s: %d bytes unsent, "
                           "max_backpressure %d", self.ws.remote_address, buffered, limit)
        self._drop(message)
        return True

    def _drop(self, message: str | bytes) -> None:
        """A data message was not sent: count it; ``on_drop`` gets it soon after."""
        self.dropped_messages += 1
        self.counters.dropped_messages += 1
        self._loop.call_soon(self._deliver_event, _Dropped(message))  # type: ignore[union-attr]

    def send_fragment(self, data: str | bytes, last: bool = False, compress: bool = True) -> bool:
        if not self.open:
            return False
        self.conn.send_fragment(data, last, compress)
        if last:
            self.counters.messages_sent += 1
        if not self._corked:
            self._flush()
        return True

    def ping(self, payload: bytes = b"") -> bool:
        return self._emit(self.conn.send_ping, payload)

    def pong(self, payload: bytes = b"") -> bool:
        return self._emit(self.conn.send_pong, payload)

    def _emit(self, queue: Callable[[bytes], None], payload: bytes) -> bool:
        if not self.open:
            return False
        queue(payload)
        if not self._corked:
            self._flush()
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        serialize_close(code, reason)  # a bad code or reason raises before anything changes
        if self._closing_kind is None:
            self._closing_kind = CloseKind.NORMAL
        self.conn.send_close(code, reason)
        if not self._corked:
            self._flush()

    def shutdown(self, code: int, reason: str) -> None:
        if self._closing_kind is None:
            self._closing_kind = CloseKind.SHUTDOWN
        self.conn.send_close(code, reason)
        self._flush()

    def abort(self) -> None:
        if self.wire is not None:
            self.wire.abort()

    # -- reading control ---------------------------------------------------------------------------

    @property
    def queued_events(self) -> int:
        """Events waiting for the handler (a running async callback, a pause)."""
        return len(self._backlog) if self._backlog else 0

    @property
    def reading_paused(self) -> bool:
        return self._paused

    @property
    def writing_paused(self) -> bool:
        return self._write_paused

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            self._update_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._update_reading()
            if self._backlog and not self._busy:
                self._loop.call_soon(self._drain_backlog)  # type: ignore[union-attr]

    # -- topics (pubsub.topics.Subscriber) -------------------------------------------------------

    def _server_topics(self) -> Topics:
        if self._pubsub is None:
            raise RuntimeError("topics belong to a server: a client connection has none")
        return self._pubsub

    def subscribe(self, topic: str) -> bool:
        if not isinstance(topic, str):
            raise TypeError(f"a topic is a str, not {type(topic).__name__}")
        topics = self._server_topics()
        if self._finished is not None:
            return False
        if self._topics is None:
            self._topics = set()
        elif topic in self._topics:
            return False
        self._topics.add(topic)
        topics.add(topic, self)
        return True

    def unsubscribe(self, topic: str) -> bool:
        if not self._topics or topic not in self._topics:
            return False
        self._topics.discard(topic)
        self._server_topics().discard(topic, self)
        return True

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._topics) if self._topics else frozenset()

    def publish(self, topic: str, message: Message, keep: int) -> asyncio.Future[int]:
        return self._server_topics().publish(topic, message, keep=keep, publisher=self)

    @property
    def broker(self) -> Broker:
        return self._server_topics().broker

    def _leave_topics(self) -> None:
        own = self._topics
        if own and self._pubsub is not None:
            self._topics = None
            topics = self._pubsub
            for topic in own:
                topics.discard(topic, self)

    # -- options ---------------------------------------------------------------------------------

    def set_compression(self, enabled: bool) -> None:
        self.conn.set_compression(enabled)

    def set_options(self, **changes: Any) -> None:
        check_runtime_changes(changes)
        self.options = self.options.replace(**changes)
        self.conn.max_message_size = self.options.max_message_size
        self.conn.max_frame_size = self.options.frame_limit
        deadlines = self.deadlines
        if deadlines is not None:
            if "idle_timeout" in changes:
                deadlines.arm_idle()
            if "ping_interval" in changes:
                deadlines.arm_keepalive()

    # -- events from elsewhere in the program ----------------------------------------------------

    def post(self, info: Any) -> None:
        if self._finished is None and self._loop is not None:
            self._loop.call_soon(self._deliver_event, _Info(info))

    def post_threadsafe(self, info: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver_event, _Info(info))

    def _deliver_event(self, event: _Info | _Dropped | _Drained) -> None:
        """Hand the handler something that did not come from the wire."""
        if self._finished is not None:
            return
        # Pause stops reading the wire only (Cowboy's {active, false}): posted information
        # still arrives, so on_info can answer with Resume.
        if self._busy or (self._backlog and not self._paused):
            self._defer((event,))
            return
        self._corked = True
        try:
            self._handle_event(event)
        finally:
            self._corked = False
        self._flush()

    # -- waiting -----------------------------------------------------------------------------------

    async def drain(self) -> None:
        while self._write_paused and self._finished is None:
            fut = self._loop.create_future()  # type: ignore[union-attr]
            if self._drain_waiters is None:
                self._drain_waiters = []
            self._drain_waiters.append(fut)
            await fut

    async def wait_closed(self) -> CloseReason:
        if self._finished is not None:
            return self._finished
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()  # type: ignore[union-attr]
        return await asyncio.shield(self._closed_waiter)

    @property
    def close_reason(self) -> CloseReason | None:
        return self._finished

    # -- the async style's hold on a close owed to the peer ----------------------------------------

    def answers_pending(self) -> None:
        self._hold_for_app = True

    def answers_done(self) -> None:
        self._hold_for_app = False
        if (self.conn.close_owed or self._eof) and not self._busy:
            self._flush()

    # -- writing and closing -------------------------------------------------------------------

    def _flush(self) -> None:
        self._soon = 0
        conn = self.conn
        wire = self.wire
        if wire is None:
            return
        if conn.state is State.OPEN and not conn.close_owed:
            # The usual case: nothing about closing to decide.
            split = conn.out_split
            data = conn.data_to_send()
            if data and not wire.is_closing():
                self._count_sent(data)
                if len(data) == 1:
                    wire.write(data[0])
                elif split:
                    wire.writelines(data)  # large payloads apart from their headers
                else:
                    wire.write(b"".join(data))
            if self._eof:
                self._flush_closing(wire)
            return
        self._flush_closing(wire)

    def _count_sent(self, data: list[bytes]) -> None:
        self.counters.bytes_sent += sum(map(len, data))

    def _flush_closing(self, wire: Wire) -> None:
        conn = self.conn
        # A close owed to the peer waits while the handler still answers earlier events,
        # for ANSWER_GRACE at most: the peer's close must be answered even if they never are.
        hold = self._busy or self._hold_for_app or (bool(self._backlog) and not self._paused)
        if hold and conn.close_owed and self.deadlines is not None:
            self.deadlines.hold_close()
        split = conn.out_split
        data = conn.data_to_send(hold_close=hold)
        if data and not wire.is_closing():
            self._count_sent(data)
            if split:
                wire.writelines(data)
            else:
                wire.write(data[0] if len(data) == 1 else b"".join(data))
        if conn.close_sent is not None or conn.state is State.CLOSED:
            self._after_close_step()
        elif self._eof and not hold and not wire.is_closing():
            wire.close()  # half-closed by the peer and nothing more is owed

    def _timed_out(self, error: BaseException | None = None) -> None:
        """A deadline gave up on the peer: record that as why the connection ends."""
        if self._closing_kind in (None, CloseKind.NORMAL):
            self._closing_kind = CloseKind.TIMEOUT
            self._error = error

    def _after_close_step(self) -> None:
        """Decide how the connection ends once close frames are in flight (7.1.1)."""
        conn = self.conn
        wire = self.wire
        if wire is None or wire.is_closing():
            return
        deadlines = self.deadlines
        assert deadlines is not None
        if conn.state is State.CLOSED:
            if conn.failure is not None and not self._eof and wire.can_write_eof():
                # A failed connection: FIN after our close frame, then read and drop what
                # still comes until the peer's FIN (eof_received closes) or the close timeout.
                # Closing with unread data would send a RST, which can destroy our close frame,
                # and with it the reason, before the peer reads it (a flood refused with 1009).
                wire.write_eof()
            elif conn.side is Side.SERVER or conn.failure is not None:
                # The server closes first; a failed connection is closed at once. A peer
                # that does not read keeps close() waiting: the close timeout aborts it.
                wire.close()
            # Otherwise the client waits for the server to close, within the close timeout.
        deadlines.start_close()

    # -- what the deadlines do (deadlines.DeadlineHost) ------------------------------------------

    def deaf(self) -> bool:
        """We do not read, by our own choice (pause, busy handler): the peer's deadlines
        wait. Not when the peer itself does not read our writes: that is its fault."""
        return not self._reading and not self._write_paused

    def send_keepalive(self, payload: bytes) -> None:
        self.ping(payload)

    def idle_expired(self) -> None:
        self._timed_out()
        self.close(CloseCode.GOING_AWAY, "idle timeout")

    def peer_gone(self) -> None:
        self._timed_out(TimeoutError("keepalive ping timeout"))
        self.abort()

    def close_expired(self) -> None:
        if self.conn.state is not State.CLOSED:
            self._timed_out()
        self.abort()

    def grace_over(self) -> None:
        """Send a held close now, whatever the application is still doing."""
        self._hold_for_app = False
        wire = self.wire
        if wire is None or not self.conn.close_owed:
            return
        data = self.conn.data_to_send()
        if data and not wire.is_closing():
            self._count_sent(data)
            wire.writelines(data)
        self._after_close_step()

    # -- the end -----------------------------------------------------------------------------------

    def _finish(self) -> None:
        """The wire is gone: stop deadlines, tell the handler once, wake waiters."""
        if self._finished is not None:
            return
        if self.deadlines is not None:
            self.deadlines.cancel()
        reason = self._close_reason()
        self._finished = reason
        if self._topics:
            self._leave_topics()  # nothing more is written to a connection that is gone
        self._backlog = None
        task = self._callback_task
        if task is not None and not task.done():
            # Callbacks never overlap, on_close included: it runs once the cancelled
            # callback has finished.
            task.cancel()
            task.add_done_callback(lambda _: self._closed(reason))
            return
        self._closed(reason)

    def _closed(self, reason: CloseReason) -> None:
        try:
            self.handler.on_close(self.ws, reason)
        except Exception:
            logger.exception("on_close of %s raised", type(self.handler).__name__)
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(reason)
        if self._drain_waiters:
            for fut in self._drain_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._drain_waiters = None
        if self._on_finish is not None:
            self._on_finish(self.ws)

    def _close_reason(self) -> CloseReason:
        conn = self.conn
        kind = self._closing_kind
        received = conn.close_received
        if kind is None and conn.failure is not None:
            kind = CloseKind.PROTOCOL_ERROR  # its Failed event was still in the backlog
        if kind is CloseKind.PROTOCOL_ERROR and conn.failure is not None:
            return CloseReason(kind, conn.failure.close_code, str(conn.failure), conn.failure)
        if kind is CloseKind.CRASH:
            return CloseReason(kind, CloseCode.INTERNAL_ERROR, "", self._error)
        if kind is CloseKind.TIMEOUT:
            code = received[0] if received else CloseCode.ABNORMAL
            return CloseReason(kind, code, received[1] if received else "", self._error)
        if received is None:
            if kind is CloseKind.SHUTDOWN:
                return CloseReason(kind, CloseCode.ABNORMAL)
            return CloseReason(CloseKind.LOST, CloseCode.ABNORMAL)
        if kind is None:
            kind = CloseKind.REMOTE
        return CloseReason(kind, received[0], received[1])


_AWAITED_BOOL = "object bool can't be used in 'await' expression"
_AWAIT_HINT = (
    "corral: in a callback handler, ws.send(), ws.ping(), ws.close() and the other WebSocket "
    "methods act at once and return a bool: call them without await (await ws.drain() waits "
    "for the write buffer). In the async for style (async def handler(ws)), ws.send() is a "
    "coroutine to await."
)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


# -- the commands a callback may return: one entry each --------------------------------------

# Returned values that are iterable but are not lists of commands: messages, and mappings
# (a dict's keys sent as messages would only hide the mistake).
_NOT_LISTS = (str, bytes, bytearray, memoryview, Mapping)

_COMMANDS: dict[type, Callable[[Session, Any], Any]] = {
    str: lambda s, cmd: s.send(str(cmd)),  # a message returned as it is: sent as text,
    bytes: lambda s, cmd: s.send(bytes(cmd)),  # and bytes-like as binary
    bytearray: lambda s, cmd: s.send(bytes(cmd)),
    memoryview: lambda s, cmd: s.send(bytes(cmd)),
    Text: lambda s, cmd: s.send(cmd.data),
    Binary: lambda s, cmd: s.send(cmd.data),
    Fragment: lambda s, cmd: s.send_fragment(cmd.data, cmd.last),
    Close: lambda s, cmd: s.close(cmd.code, cmd.reason),
    Ping: lambda s, cmd: s.ping(cmd.payload),
    Pong: lambda s, cmd: s.pong(cmd.payload),
    Pause: lambda s, cmd: s.pause_reading(),
    Resume: lambda s, cmd: s.resume_reading(),
    SetOptions: lambda s, cmd: s.set_options(**cmd.changes),
    Deflate: lambda s, cmd: s.set_compression(cmd.enabled),
}

# What the compiled hot path compares against (corral._hotpath; a no-op in pure mode).
configure_hot_path(State.OPEN, State.CLOSED, CloseKind.CRASH, ev.Message, Side.SERVER,
                   SPLIT_PAYLOAD)
