"""The chat demo's server side: one :class:`ChatHandler` per connection, the page beside it.

All state shared between connections lives in the broker (rooms are topics, history is
``publish(..., keep=N)``, presence is ``broker.join/leave/members``); a handler keeps only its
own connection's room and name. So the same :func:`app` runs unchanged in one process on the
memory broker or in several workers over Redis.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from corral import Close, CloseCode, CloseReason, Handler, Router, Text, WebSocket, run
from corral.handler import Commands

from .messages import (
    BadRequest,
    Join,
    Say,
    chat_message,
    dump,
    error,
    parse,
    presence,
    replay,
    welcome,
)

__all__ = ["DEFAULT_HISTORY", "ChatHandler", "app", "main", "topic"]

logger = logging.getLogger("corral.examples.chat")

DEFAULT_HISTORY = 50  # messages kept per room
MAX_BAD_REQUESTS = 20  # refused requests before the connection is closed with 1008
STATIC = Path(__file__).with_name("static")

# Small messages only (2,000 characters of text, JSON-escaped at worst 12 bytes per character
# pair, fit); a server ping every 20 s keeps an idle but open tab within idle_timeout; a tab
# that stops reading is closed (1013) rather than growing its buffer: it reconnects and
# resumes from the last message it saw.
ROUTE_OPTIONS: dict[str, Any] = {
    "max_message_size": 32 * 1024,
    "ping_interval": 20.0,
    "idle_timeout": 60.0,
    "backpressure_policy": "close",
}

T = TypeVar("T")


class Unavailable(Exception):
    """The broker failed: the client is told to come back later (close 1013)."""


def topic(room: str) -> str:
    """The broker topic of a room, prefixed so the demo can share a broker with others."""
    return "chat:" + room


def new_id() -> str:
    """A message id unique across processes and machines without coordination."""
    return uuid.uuid4().hex


def now_ms() -> int:
    return int(time.time() * 1000)


async def _ask(awaitable: Awaitable[T]) -> T:
    """Await a broker operation; whatever the engine raises becomes :class:`Unavailable`."""
    try:
        return await awaitable
    except Exception as exc:
        raise Unavailable(f"{type(exc).__name__}: {exc}") from exc


async def _announce_leave(ws: WebSocket, room: str, member: str, name: str) -> None:
    """Drop ``member`` from the room's presence and tell the room who is left."""
    room_topic = topic(room)
    await _ask(ws.broker.leave(room_topic, member))
    members = await _ask(ws.broker.members(room_topic))
    left = {"id": member, "name": name}
    await _ask(ws.publish(room_topic, dump(presence(room, members, left=left))))


class ChatHandler(Handler):
    """One connection: at most one room at a time (a new ``join`` leaves the previous one)."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        self.history = history
        self.member = new_id()  # this connection's presence entry: two tabs, two entries
        self.room: str | None = None
        self.name = ""
        self.bad_requests = 0

    async def on_message(self, ws: WebSocket, message: str | bytes) -> Commands:
        if isinstance(message, bytes):
            return Close(CloseCode.UNSUPPORTED_DATA, "text messages only")
        try:
            request = parse(message)
            if isinstance(request, Join):
                await self._join(ws, request)
            else:
                await self._say(ws, request)
        except BadRequest as exc:
            return self._refuse(exc)
        except Unavailable as exc:
            logger.warning("chat: broker unavailable: %s", exc)
            return Close(CloseCode.TRY_AGAIN_LATER, "broker unavailable")
        return None

    def _refuse(self, exc: BadRequest) -> Commands:
        self.bad_requests += 1
        reply = Text(dump(error(exc.code, exc.detail)))
        if self.bad_requests >= MAX_BAD_REQUESTS:
            return [reply, Close(CloseCode.POLICY_VIOLATION, "too many bad requests")]
        return reply

    async def _join(self, ws: WebSocket, join: Join) -> None:
        if self.room is not None:
            # The room is forgotten only once left: if the connection ends meanwhile (this
            # callback is then cancelled), on_close announces the leave again.
            ws.unsubscribe(topic(self.room))
            await _announce_leave(ws, self.room, self.member, self.name)
            self.room = None
        room_topic = topic(join.room)
        # Subscribe before reading the history: a message published meanwhile then arrives
        # live (perhaps also in the history; the client drops an id it has seen), never lost.
        ws.subscribe(room_topic)
        self.room, self.name = join.room, join.name
        broker = ws.broker
        await _ask(broker.join(room_topic, self.member, join.name))
        kept = await _ask(broker.history(room_topic, self.history)) if self.history else []
        members = await _ask(broker.members(room_topic))
        ws.send(dump(welcome(join.room, join.name, self.member, members,
                             replay(kept, join.since))))
        joined = {"id": self.member, "name": join.name}
        await _ask(ws.publish(room_topic, dump(presence(join.room, members, joined=joined))))

    async def _say(self, ws: WebSocket, say: Say) -> None:
        if self.room is None:
            raise BadRequest("not-joined", "join a room first")
        message = chat_message(new_id(), self.room, self.name, say.text, now_ms())
        # Awaited: with a remote broker this connection's next message waits for it, so one
        # sender's messages keep their order, and a failure is reported here.
        await _ask(ws.publish(topic(self.room), dump(message), keep=self.history))

    def on_close(self, ws: WebSocket, reason: CloseReason) -> None:
        if self.room is not None:
            ws.create_task(self._leave_after_close(ws, self.room))
            self.room = None

    async def _leave_after_close(self, ws: WebSocket, room: str) -> None:
        try:
            await _announce_leave(ws, room, self.member, self.name)
        except Unavailable as exc:  # the broker forgets this process's members on its own
            logger.warning("chat: could not announce %s leaving %s: %s", self.name, room, exc)


def app(*, history: int = DEFAULT_HISTORY) -> Router:
    """The chat demo: the page at ``/``, the WebSocket at ``/ws``. ``history``: messages kept
    per room (0: none). Builds a Router and nothing else, so each worker may call it."""
    if not isinstance(history, int) or history < 0:
        raise ValueError(f"history must be an int >= 0, not {history!r}")
    return (Router()
            .websocket("/ws", lambda: ChatHandler(history), options=dict(ROUTE_OPTIONS))
            .static("/", STATIC))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m corral.examples.chat",
        description="corral's chat demo: open http://HOST:PORT/ in two browser windows.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--broker", default=None,
                        help="'memory' (the default: this process) or redis://host:port/db")
    parser.add_argument("--history", type=int, default=DEFAULT_HISTORY, metavar="N",
                        help=f"messages kept per room (default {DEFAULT_HISTORY})")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.history < 0:
        parser.error("--history must be 0 or more")
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s")
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "", "::") else args.host
    if args.port:
        print(f"corral chat demo: open http://{shown}:{args.port}/ (Ctrl-C stops it)",
              flush=True)
    run(app(history=args.history), args.host, args.port, broker=args.broker)
