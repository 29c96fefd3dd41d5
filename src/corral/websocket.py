"""One open WebSocket connection on asyncio, running a handler over the sans-I/O core.

Server and client share this class: after their handshakes both hand the transport to a
``WebSocket`` (``transport.set_protocol``). It owns the timers (idle, close, keepalive), turns
core events into handler callbacks, applies the commands they return, and corks every frame
produced while handling one read into a single write.

It reads as an ``asyncio.BufferedProtocol``: into one read buffer shared by the connections of
a thread, parsed in place, so an idle connection holds no buffer; or, for the rest of a large
payload, straight into the message's own buffer (``Connection.payload_buffer``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

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
from .protocol.connection import Connection, Side, State
from .protocol.frames import CloseCode, serialize_close
from .request import Request
from .timers import Timers

if TYPE_CHECKING:
    from .pubsub.broker import Broker
    from .pubsub.topics import Message, Topics

__all__ = ["WebSocket"]

logger = logging.getLogger("corral")


class _Info(NamedTuple):
    info: Any


class _Dropped(NamedTuple):
    message: str | bytes


class _Drained(NamedTuple):
    pass


_DRAINED = _Drained()


_COMMANDS = frozenset({Text, Binary, Fragment, Ping, Pong, Close, Pause, Resume, SetOptions,
                       Deflate})

# What the transport reads into, unless a large payload is due: one buffer per thread, so per
# event loop. Every read is parsed (and an incomplete frame's few bytes copied out) before the
# loop reads again, so all the loop's connections can share it. 64 KiB: libuv's read size.
_READ_BUFFER_SIZE = 64 * 1024
_thread_state = threading.local()


def _shared_read_buffer() -> memoryview:
    view: memoryview | None = getattr(_thread_state, "read_buffer", None)
    if view is None:
        view = _thread_state.read_buffer = memoryview(bytearray(_READ_BUFFER_SIZE))
    return view


class WebSocket(Timers, asyncio.BufferedProtocol):
    """An open connection, as handlers see it (the ``ws`` argument of every callback).

    Every method is non-blocking and safe to call from any task on the connection's loop;
    ``post_threadsafe`` is the one to use from other threads.
    """

    __slots__ = (
        "_backlog",
        "_busy",
        "_callback_task",
        "_closed_waiter",
        "_closing_kind",
        "_corked",
        "_direct",
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
        "_read_buffer",
        "_reading",
        "_topics",
        "_track_task",
        "_write_paused",
        "conn",
        "dropped_messages",
        "handler",
        "options",
        "request",
        "subprotocol",
        "transport",
    )

    def __init__(
        self,
        conn: Connection,
        handler: Handler,
        options: Options,
        *,
        request: Request | None = None,
        subprotocol: str | None = None,
        on_finish: Callable[[WebSocket], None] | None = None,
        track_task: Callable[[asyncio.Task[Any]], None] | None = None,
        pubsub: Topics | None = None,
    ) -> None:
        self.conn = conn
        self.handler = handler
        self.options = options
        self.request = request
        self.subprotocol = subprotocol
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_finish = on_finish
        self._track_task = track_task
        self._pubsub = pubsub  # the server's topics; None on a client
        self._topics: set[str] | None = None  # this connection's, while it has any
        self._callback_task: asyncio.Task[None] | None = None
        self._reading = True  # the transport is being read (see _update_reading)
        self._direct = False  # the last get_buffer gave the message's own buffer
        self._eof = False  # the peer half-closed while we still owed it frames
        self._corked = False
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
        self._init_timers()

    # -- starting ------------------------------------------------------------------------------

    def start(self, transport: asyncio.Transport, initial: bytes = b"") -> None:
        """Take over ``transport`` after a handshake; ``initial`` are bytes already read."""
        self.transport = transport
        self._loop = loop = asyncio.get_running_loop()
        self._read_buffer = _shared_read_buffer()
        # A BufferedProtocol: uvloop and asyncio's transports switch to get_buffer /
        # buffer_updated; bytes read with the handshake are ``initial``, handled below first.
        transport.set_protocol(self)
        self._last_recv = loop.time()
        self._arm_idle()
        self._arm_keepalive()
        self._corked = True
        try:
            self._dispatch(self.handler.on_open, self)
            if initial:
                self._handle_received(self.conn.receive_data(initial))
        finally:
            self._corked = False
        self._flush()

    # -- asyncio.BufferedProtocol ----------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the next read goes: the rest of a large payload straight into its message's
        buffer (no copy), anything else into the thread's shared read buffer."""
        conn = self.conn
        view = conn.payload_buffer() if conn.payload_pending else None
        if view is None:
            self._direct = False
            return self._read_buffer
        self._direct = True
        return view

    def buffer_updated(self, nbytes: int) -> None:
        self._last_recv = self._loop.time()  # type: ignore[union-attr]
        self._corked = True
        try:
            if self._direct:
                self._handle_received(self.conn.payload_received(nbytes))
            else:
                self._handle_received(self.conn.receive_data(self._read_buffer[:nbytes]))
        finally:
            self._corked = False
        self._flush()

    def data_received(self, data: bytes) -> None:
        """Bytes from a transport that does not read into our buffers. Also needed by
        uvloop: ``set_protocol`` keeps the previous protocol's ``data_received`` when the new
        one has none, and with it the whole HTTP protocol of every connection (2.4 KiB)."""
        self._last_recv = self._loop.time()  # type: ignore[union-attr]
        self._corked = True
        try:
            self._handle_received(self.conn.receive_data(data))
        finally:
            self._corked = False
        self._flush()

    def eof_received(self) -> bool | None:
        owing = self._busy or self._hold_for_app or self.conn.close_owed
        if owing and self.conn.state is not State.CLOSED:
            # Half-closed while answers (or our close) are still owed: keep writing, then
            # close, within the close timeout.
            self._eof = True
            self._start_close_timer()
            return True
        self.conn.receive_eof()
        return False  # let the transport close itself

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
                        self.remote_address, self.dropped_messages)
        if self._finished is None:
            self._loop.call_soon(self._deliver_event, _DRAINED)  # type: ignore[union-attr]

    # -- receiving ---------------------------------------------------------------------------------

    def _update_reading(self) -> None:
        """Read from the socket unless the handler paused, an async callback runs with
        ``max_queue`` events already waiting for it, or the peer is not reading our writes.
        One place decides, so the reasons cannot clash. (Reading on while a callback runs,
        up to that bound, is how a peer's close or disconnect is noticed meanwhile.)"""
        backlog_full = self._backlog is not None and len(self._backlog) >= self.options.max_queue
        want = not (self._paused or self._write_paused or (self._busy and backlog_full))
        transport = self.transport
        if want == self._reading or transport is None or transport.is_closing():
            return
        self._reading = want
        if want:
            transport.resume_reading()
            # The peer could not be heard while we did not read: restart its deadlines.
            self._last_recv = self._loop.time()  # type: ignore[union-attr]
        else:
            transport.pause_reading()

    def _handle_received(self, events: list[ev.Event]) -> None:
        if not events:
            return
        if self._busy or self._paused or self._backlog:
            self._defer(events)
            return
        message = ev.Message
        on_message = self.handler.on_message
        for i, event in enumerate(events):
            if type(event) is message and self._closing_kind is not CloseKind.CRASH:
                # The hot path: _dispatch(on_message, ...) written out.
                try:
                    result = on_message(self, event.data)
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
        kind = type(event)
        if kind is ev.Message:
            self._dispatch(handler.on_message, self, event.data)
        elif kind is ev.Fragment:
            self._dispatch(handler.on_fragment, self, event.data, event.last)
        elif kind is _Info:
            if self._finished is None:
                self._dispatch(handler.on_info, self, event.info)
        elif kind is _Dropped:
            if self._finished is None:
                self._dispatch(handler.on_drop, self, event.message)
        elif kind is _Drained:
            if self._finished is None:
                self._dispatch(handler.on_drain, self)
        elif kind is ev.Ping:
            self._dispatch(handler.on_ping, self, event.payload)
        elif kind is ev.Pong:
            self._ping_sent_at = 0.0
            self._dispatch(handler.on_pong, self, event.payload)
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
            self._handled(result)

    def _handled(self, result: Any) -> None:
        """Act on what a callback returned: commands, or an awaitable to run first."""
        if inspect.isawaitable(result):
            self._busy = True
            self._update_reading()
            self._callback_task = self.create_task(self._await_callback(result))
            return
        try:
            self._apply(result)
        except Exception as exc:  # a bad command (or its arguments) is the callback's error
            self._crash(exc)

    async def _await_callback(self, awaitable: Awaitable[Any]) -> None:
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
                    self._apply(result)
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
        """Start a task that belongs to this connection; the server cancels it when it shuts
        down, if it is still running after the close timeout."""
        task = self._loop.create_task(coro)  # type: ignore[union-attr]
        if self._track_task is not None:
            self._track_task(task)
        return task

    def fail(self, exc: BaseException) -> None:
        """The application failed on this connection: log, close with 1011 (no text)."""
        self._crash(exc)
        self._flush()

    def _crash(self, exc: BaseException) -> None:
        logger.error("WebSocket handler %s crashed", type(self.handler).__name__, exc_info=exc)
        if self._closing_kind is None:
            self._closing_kind = CloseKind.CRASH
            self._error = exc
        # 1011 with no exception text on the wire.
        self.conn.send_close(CloseCode.INTERNAL_ERROR, "")

    def _apply(self, result: Any) -> None:
        commands: Iterable[Any] = (result,) if type(result) in _COMMANDS else result
        for cmd in commands:
            kind = type(cmd)
            if kind is Text or kind is Binary:
                self.send(cmd.data)
            elif kind is Fragment:
                self.send_fragment(cmd.data, cmd.last)
            elif kind is Close:
                self.close(cmd.code, cmd.reason)
            elif kind is Ping:
                self.ping(cmd.payload)
            elif kind is Pong:
                self.pong(cmd.payload)
            elif kind is Pause:
                self.pause_reading()
            elif kind is Resume:
                self.resume_reading()
            elif kind is SetOptions:
                self.set_options(**cmd.changes)
            elif kind is Deflate:
                self.set_compression(cmd.enabled)
            else:
                raise TypeError(f"not a corral command: {cmd!r}")

    # -- the handler's API -------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """True while messages can be sent."""
        return self.conn.state is State.OPEN and self.conn.close_sent is None

    @property
    def remote_address(self) -> Any:
        return self.transport.get_extra_info("peername") if self.transport else None

    @property
    def buffered_amount(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return self.transport.get_write_buffer_size() if self.transport else 0

    def send(self, message: str | bytes, compress: bool = True) -> bool:
        """Send a message (text for ``str``). Returns False, sending nothing, once closing,
        or when the message is dropped by ``max_backpressure`` (``on_drop`` then gets it).
        ``compress=False`` skips compression for this message."""
        conn = self.conn
        if conn.state is not State.OPEN or conn.close_sent is not None:
            return False
        if self._write_paused and self._over_backpressure(message):
            return False
        conn.send_message(message, compress)
        if not self._corked:
            self._flush()
        return True

    def send_frame(
        self, frame: bytes | None, message: str | bytes = b"", flush: bool = True
    ) -> bool:
        """Send a published message, in order with what this connection sends: ``frame`` is
        it framed elsewhere (once for all plain subscribers), or None for this connection to
        encode ``message`` itself (a compression extension's state is its own). Returns
        False, sending nothing, once closing, or when the message is dropped (``on_drop``
        then gets ``message``): over ``max_backpressure``, or while a fragmented message is
        being sent, as its fragments cannot be interleaved with another (RFC 6455 5.4).
        ``flush=False`` leaves it queued until ``flush()``, so that several publishes go out
        in one write; it is ignored while writing is paused (the backpressure checks need
        the transport to hold what was sent)."""
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
        if not self._corked and (flush or self._write_paused):
            self._flush()
        return True

    def flush(self) -> None:
        """Write what is queued (``send_frame(..., flush=False)``) now."""
        if not self._corked:
            self._flush()

    def _over_backpressure(self, message: str | bytes) -> bool:
        """Whether ``max_backpressure`` stops this message (only asked while writing is
        paused, so the usual send costs one flag test). Applies the policy: drop it and tell
        the handler, or close with 1013 so the client can come back later."""
        limit = self.options.max_backpressure
        transport = self.transport
        if limit is None or transport is None:
            return False
        buffered = transport.get_write_buffer_size()
        if buffered < limit:
            return False
        if self.options.backpressure_policy == "close":
            self.dropped_messages += 1
            logger.warning("closing slow peer %s: %d bytes unsent, max_backpressure %d",
                           self.remote_address, buffered, limit)
            self.close(CloseCode.TRY_AGAIN_LATER, "too slow: send buffer full")
            return True
        if not self._dropping:
            self._dropping = True  # one line per episode, not per message
            logger.warning("dropping messages to slow peer %s: %d bytes unsent, "
                           "max_backpressure %d", self.remote_address, buffered, limit)
        self._drop(message)
        return True

    def _drop(self, message: str | bytes) -> None:
        """A data message was not sent: count it; ``on_drop`` gets it soon after."""
        self.dropped_messages += 1
        self._loop.call_soon(self._deliver_event, _Dropped(message))  # type: ignore[union-attr]

    def send_fragment(self, data: str | bytes, last: bool = False, compress: bool = True) -> bool:
        """Send one fragment of a message; the first fragment's type is the message's."""
        if not self.open:
            return False
        self.conn.send_fragment(data, last, compress)
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
        """Start the closing handshake; the peer's answer completes it (or the close timeout)."""
        serialize_close(code, reason)  # a bad code or reason raises before anything changes
        if self._closing_kind is None:
            self._closing_kind = CloseKind.NORMAL
        self.conn.send_close(code, reason)
        if not self._corked:
            self._flush()

    def pause_reading(self) -> None:
        """Stop reading from the socket until ``resume_reading`` (backpressure on the peer)."""
        if not self._paused:
            self._paused = True
            self._update_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._update_reading()
            if self._backlog and not self._busy:
                self._loop.call_soon(self._drain_backlog)  # type: ignore[union-attr]

    # -- topics -------------------------------------------------------------------------------

    def _server_topics(self) -> Topics:
        if self._pubsub is None:
            raise RuntimeError("topics belong to a server: a client connection has none")
        return self._pubsub

    def subscribe(self, topic: str) -> bool:
        """Receive what is published to ``topic`` until ``unsubscribe`` or the end of the
        connection. Returns False if already subscribed, or the connection has ended."""
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
        """Stop receiving ``topic``; False if not subscribed to it."""
        if not self._topics or topic not in self._topics:
            return False
        self._topics.discard(topic)
        self._server_topics().discard(topic, self)
        return True

    @property
    def topics(self) -> frozenset[str]:
        """The topics this connection is subscribed to."""
        return frozenset(self._topics) if self._topics else frozenset()

    def publish(self, topic: str, message: Message, *, keep: int = 0) -> asyncio.Future[int]:
        """Publish to every subscriber of ``topic`` on this connection's server and every
        process sharing its broker (this connection included, if subscribed). See
        :meth:`corral.Server.publish`. A failure also reaches this handler's ``on_info`` as
        :class:`~corral.pubsub.PublishFailed` (awaited or not), so a callback-style handler
        that cannot await still hears of it."""
        return self._server_topics().publish(topic, message, keep=keep, publisher=self)

    @property
    def broker(self) -> Broker:
        """The server's broker: topic history and presence (``join``/``members``)."""
        return self._server_topics().broker

    def _leave_topics(self) -> None:
        own = self._topics
        if own and self._pubsub is not None:
            self._topics = None
            topics = self._pubsub
            for topic in own:
                topics.discard(topic, self)

    @property
    def extensions(self) -> tuple[str, ...]:
        """Names of the negotiated extensions (e.g. ``("permessage-deflate",)``)."""
        return tuple(ext.name for ext in self.conn.extensions)

    def set_compression(self, enabled: bool) -> None:
        """Compress the following messages or not (no effect without a compression
        extension)."""
        for ext in self.conn.extensions:
            if hasattr(ext, "enabled"):
                ext.enabled = enabled

    @property
    def writing_paused(self) -> bool:
        """The write buffer is over ``write_limit``: ``drain()`` would wait."""
        return self._write_paused

    @property
    def reading_paused(self) -> bool:
        """The handler paused reading (``Pause`` / ``pause_reading``)."""
        return self._paused

    def set_options(self, **changes: Any) -> None:
        """Change run-time options (idle_timeout, max_message_size, max_frame_size,
        ping_interval, ping_timeout, max_backpressure, backpressure_policy) for this
        connection; a bad value raises ValueError and changes nothing."""
        check_runtime_changes(changes)
        self.options = self.options.replace(**changes)
        self.conn.max_message_size = self.options.max_message_size
        self.conn.max_frame_size = self.options.frame_limit
        if "idle_timeout" in changes:
            self._arm_idle()
        if "ping_interval" in changes:
            self._arm_keepalive()

    def post(self, info: Any) -> None:
        """Deliver ``info`` to the handler's ``on_info`` soon, in order with messages."""
        if self._finished is None and self._loop is not None:
            self._loop.call_soon(self._deliver_event, _Info(info))

    def post_threadsafe(self, info: Any) -> None:
        """``post`` from another thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver_event, _Info(info))

    def _deliver_event(self, event: _Info | _Dropped | _Drained) -> None:
        """Hand the handler something that did not come from the socket."""
        if self._finished is not None:
            return
        # Pause stops reading the socket only (Cowboy's {active, false}): posted information
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

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark (``write_limit``).

        Checked again on waking: writes made between the resume and this task running (a
        burst of publishes) may have filled the buffer again, and a send that follows a
        drain must not find it over ``max_backpressure``."""
        while self._write_paused and self._finished is None:
            fut = self._loop.create_future()  # type: ignore[union-attr]
            if self._drain_waiters is None:
                self._drain_waiters = []
            self._drain_waiters.append(fut)
            await fut

    async def wait_closed(self) -> CloseReason:
        """Wait until the connection has ended; return why."""
        if self._finished is not None:
            return self._finished
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()  # type: ignore[union-attr]
        return await asyncio.shield(self._closed_waiter)

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the connection ended, once it has."""
        return self._finished

    # -- writing and closing -------------------------------------------------------------------

    def _flush(self) -> None:
        conn = self.conn
        transport = self.transport
        if transport is None:
            return
        if conn.state is State.OPEN and not conn.close_owed:
            # The usual case: nothing about closing to decide.
            split = conn.out_split
            data = conn.data_to_send()
            if data and not transport.is_closing():
                if len(data) == 1:
                    transport.write(data[0])
                elif split:
                    transport.writelines(data)  # large payloads apart from their headers
                else:
                    transport.write(b"".join(data))
            if self._eof:
                self._flush_closing(transport)
            return
        self._flush_closing(transport)

    def _flush_closing(self, transport: asyncio.Transport) -> None:
        conn = self.conn
        # A close owed to the peer waits while the handler still answers earlier events,
        # for ANSWER_GRACE at most: the peer's close must be answered even if they never are.
        hold = self._busy or self._hold_for_app or (bool(self._backlog) and not self._paused)
        if hold and conn.close_owed:
            self._hold_close_briefly()
        split = conn.out_split
        data = conn.data_to_send(hold_close=hold)
        if data and not transport.is_closing():
            if split:
                transport.writelines(data)
            else:
                transport.write(data[0] if len(data) == 1 else b"".join(data))
        if conn.close_sent is not None or conn.state is State.CLOSED:
            self._after_close_step()
        elif self._eof and not hold and not transport.is_closing():
            transport.close()  # half-closed by the peer and nothing more is owed

    def _timed_out(self, error: BaseException | None = None) -> None:
        """A timer gave up on the peer: record that as why the connection ends."""
        if self._closing_kind in (None, CloseKind.NORMAL):
            self._closing_kind = CloseKind.TIMEOUT
            self._error = error

    def _grace_over(self) -> None:
        self._grace_timer = None
        self._send_held_close()

    def _send_held_close(self) -> None:
        """Send a held close now, whatever the application is still doing."""
        self._hold_for_app = False
        transport = self.transport
        if transport is None or not self.conn.close_owed:
            return
        data = self.conn.data_to_send()
        if data and not transport.is_closing():
            transport.writelines(data)
        self._after_close_step()

    def answers_pending(self) -> None:
        """The application got messages it answers later (async-for style): a close owed to
        the peer waits for ``answers_done`` (ANSWER_GRACE at most)."""
        self._hold_for_app = True

    def answers_done(self) -> None:
        """The application has answered every message it was given."""
        self._hold_for_app = False
        if (self.conn.close_owed or self._eof) and not self._busy:
            self._flush()

    def _after_close_step(self) -> None:
        """Decide how the TCP connection ends once close frames are in flight (7.1.1)."""
        conn = self.conn
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if conn.state is State.CLOSED:
            if conn.failure is not None and not self._eof and transport.can_write_eof():
                # A failed connection: FIN after our close frame, then read and drop what
                # still comes until the peer's FIN (eof_received closes) or the close timeout.
                # Closing with unread data would send a RST, which can destroy our close frame,
                # and with it the reason, before the peer reads it (a flood refused with 1009).
                transport.write_eof()
                self._start_close_timer()
            elif conn.side is Side.SERVER or conn.failure is not None:
                # The server closes TCP first; a failed connection is closed at once. A peer
                # that does not read keeps close() waiting: the close timeout aborts it.
                transport.close()
                self._start_close_timer()
            else:
                # The client waits for the server to close TCP, within the close timeout.
                self._start_close_timer()
        else:
            self._start_close_timer()

    def _finish(self) -> None:
        """The transport is gone: stop timers, tell the handler once, wake waiters."""
        if self._finished is not None:
            return
        self._cancel_timers()
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
            self.handler.on_close(self, reason)
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
            self._on_finish(self)

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

    def shutdown(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Close because the server is stopping (1001)."""
        if self._closing_kind is None:
            self._closing_kind = CloseKind.SHUTDOWN
        self.conn.send_close(code, reason)
        self._flush()

    def abort(self) -> None:
        """Drop the TCP connection at once, without a close handshake."""
        if self.transport is not None:
            self.transport.abort()

    def __repr__(self) -> str:
        return f"<WebSocket {self.conn.side.value} {self.remote_address} {self.conn.state.name}>"
