"""The handle of one open WebSocket connection: what handlers get as ``ws``.

Server and client share it: after their handshakes both build a ``WebSocket`` and ``start`` it
on the transport. It is a thin facade: the work is done by its
:class:`~corral.session.Session` (handler runner, backpressure, close sequence), fed by a
:class:`~corral.transport.StreamProtocol` over TCP, TLS or a Unix socket, over the sans-I/O
:class:`~corral.protocol.connection.Connection`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .accel import Counters, HandleCore
from .handler import CloseReason, Handler
from .options import Options
from .protocol.connection import Connection
from .protocol.frames import CloseCode
from .request import Request
from .session import Session
from .transport import StreamProtocol

if TYPE_CHECKING:
    from .pubsub.broker import Broker
    from .pubsub.topics import Message, Topics
    from .transport import Receiver, Wire

__all__ = ["WebSocket"]


class WebSocket(HandleCore):
    """An open connection, as handlers see it (the ``ws`` argument of every callback).

    Every method is non-blocking and safe to call from any task on the connection's loop;
    ``post_threadsafe`` is the one to use from other threads. ``send``, ``writing_paused``
    and ``reading_paused`` are :class:`~corral.accel.HandleCore`'s (compiled: in C).
    """

    __slots__ = ("request", "subprotocol")

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
        counters: Counters | None = None,
    ) -> None:
        self.request = request
        self.subprotocol = subprotocol
        self._session = Session(self, conn, handler, options, on_finish=on_finish,
                                track_task=track_task, pubsub=pubsub, counters=counters)

    def start(self, transport: asyncio.Transport, initial: bytes = b"") -> None:
        """Take over ``transport`` after a handshake; ``initial`` are bytes already read."""
        session = self._session
        # A BufferedProtocol: uvloop and asyncio's transports switch to get_buffer /
        # buffer_updated; bytes read with the handshake are ``initial``, handled first.
        protocol = StreamProtocol(session)
        transport.set_protocol(protocol)
        session.start(transport, initial)
        protocol.bind(session)  # from here the compiled hot path may take reads

    def attach(self, wire: Wire, initial: bytes = b"") -> Receiver:
        """Run on a wire that is not an asyncio transport (an HTTP/2 stream, an ASGI
        connection): what the wire receives goes to the returned receiver's methods."""
        self._session.start(wire, initial)
        return self._session

    # -- what it runs on ---------------------------------------------------------------------

    @property
    def conn(self) -> Connection:
        """The sans-I/O protocol state (close frames sent and received, extensions)."""
        return self._session.conn

    @property
    def handler(self) -> Handler:
        return self._session.handler

    @property
    def options(self) -> Options:
        """This connection's options (``set_options`` changes them)."""
        return self._session.options

    @property
    def transport(self) -> Wire | None:
        """What carries the bytes: the asyncio transport over TCP, TLS or a Unix socket."""
        return self._session.wire

    @property
    def open(self) -> bool:
        """True while messages can be sent."""
        return self._session.open

    @property
    def remote_address(self) -> Any:
        """The peer's address; on a server, the client's (``request.remote_address``: behind
        a trusted reverse proxy, the client it names)."""
        if self.request is not None:
            return self.request.remote_address
        wire = self._session.wire
        return wire.get_extra_info("peername") if wire is not None else None

    @property
    def buffered_amount(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        wire = self._session.wire
        return wire.get_write_buffer_size() if wire is not None else 0

    @property
    def latency(self) -> float | None:
        """The round trip time of the last keepalive ping answered, in seconds (the time
        from sending it to reading its pong, the peer's and both kernels' delays included);
        None before the first, or without keepalive (``ping_interval``)."""
        deadlines = self._session.deadlines
        return deadlines.latency if deadlines is not None else None

    @property
    def dropped_messages(self) -> int:
        """Data messages not sent because of ``max_backpressure``."""
        return self._session.dropped_messages

    @property
    def extensions(self) -> tuple[str, ...]:
        """Names of the negotiated extensions (e.g. ``("permessage-deflate",)``)."""
        return tuple(ext.name for ext in self._session.conn.extensions)

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the connection ended, once it has."""
        return self._session.close_reason

    # -- sending -----------------------------------------------------------------------------

    def send_soon(self, message: str | bytes) -> bool:
        """``send``, written at the next loop iteration with whatever else is sent until
        then (at once past ``write_limit`` bytes): for many messages sent in a row outside
        a callback, one write instead of one each."""
        return self._session.send_soon(message)

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
        return self._session.send_frame(frame, message, flush)

    def flush(self) -> None:
        """Write what is queued (``send_frame(..., flush=False)``) now."""
        self._session.flush()

    def send_fragment(self, data: str | bytes, last: bool = False, compress: bool = True) -> bool:
        """Send one fragment of a message; the first fragment's type is the message's."""
        return self._session.send_fragment(data, last, compress)

    def ping(self, payload: bytes = b"") -> bool:
        """Send a ping (``on_pong`` hears the answer); False, sending nothing, once closing."""
        return self._session.ping(payload)

    def pong(self, payload: bytes = b"") -> bool:
        """Send an unsolicited pong; False, sending nothing, once closing."""
        return self._session.pong(payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the peer's answer completes it (or the close timeout)."""
        self._session.close(code, reason)

    def pause_reading(self) -> None:
        """Stop reading from the socket until ``resume_reading`` (backpressure on the peer)."""
        self._session.pause_reading()

    def resume_reading(self) -> None:
        """Read from the socket again after ``pause_reading``."""
        self._session.resume_reading()

    def set_compression(self, enabled: bool) -> None:
        """Compress the following messages or not (no effect without a compression
        extension)."""
        self._session.set_compression(enabled)

    def set_options(self, **changes: Any) -> None:
        """Change run-time options (idle_timeout, max_message_size, max_frame_size,
        ping_interval, ping_timeout, max_backpressure, backpressure_policy) for this
        connection; a bad value raises ValueError and changes nothing."""
        self._session.set_options(**changes)

    # -- topics ------------------------------------------------------------------------------

    def subscribe(self, topic: str) -> bool:
        """Receive what is published to ``topic`` until ``unsubscribe`` or the end of the
        connection. Returns False if already subscribed, or the connection has ended."""
        return self._session.subscribe(topic)

    def unsubscribe(self, topic: str) -> bool:
        """Stop receiving ``topic``; False if not subscribed to it."""
        return self._session.unsubscribe(topic)

    @property
    def topics(self) -> frozenset[str]:
        """The topics this connection is subscribed to."""
        return self._session.topics

    def publish(self, topic: str, message: Message, *, keep: int = 0) -> asyncio.Future[int]:
        """Publish to every subscriber of ``topic`` on this connection's server and every
        process sharing its broker (this connection included, if subscribed). See
        :meth:`corral.Server.publish`. A failure also reaches this handler's ``on_info`` as
        :class:`~corral.pubsub.PublishFailed` (awaited or not), so a callback-style handler
        that cannot await still hears of it."""
        return self._session.publish(topic, message, keep)

    @property
    def broker(self) -> Broker:
        """The server's broker: topic history and presence (``join``/``members``)."""
        return self._session.broker

    # -- the rest of the program -------------------------------------------------------------

    def post(self, info: Any) -> None:
        """Deliver ``info`` to the handler's ``on_info`` soon, in order with messages."""
        self._session.post(info)

    def post_threadsafe(self, info: Any) -> None:
        """``post`` from another thread."""
        self._session.post_threadsafe(info)

    def create_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start a task that belongs to this connection; the server cancels it when it shuts
        down, if it is still running after the close timeout."""
        return self._session.create_task(coro)

    def fail(self, exc: BaseException) -> None:
        """The application failed on this connection: log, close with 1011 (no text)."""
        self._session.fail(exc)

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark (``write_limit``).

        Checked again on waking: writes made between the resume and this task running (a
        burst of publishes) may have filled the buffer again, and a send that follows a
        drain must not find it over ``max_backpressure``."""
        await self._session.drain()

    async def wait_closed(self) -> CloseReason:
        """Wait until the connection has ended; return why."""
        return await self._session.wait_closed()

    def shutdown(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Close because the server is stopping (1001)."""
        self._session.shutdown(code, reason)

    def abort(self) -> None:
        """Drop the connection at once, without a close handshake."""
        self._session.abort()

    def __repr__(self) -> str:
        conn = self._session.conn
        return f"<WebSocket {conn.side.value} {self.remote_address} {conn.state.name}>"
