"""The ASGI ``lifespan`` scope: the application's startup and shutdown, and its ``state``.

One task runs the application with ``{"type": "lifespan"}`` for the life of the server: it
gets ``lifespan.startup`` before anything listens and ``lifespan.shutdown`` after the last
connection has closed. ``state`` is the dictionary it may fill at startup; every request's
scope gets a shallow copy of it (asgiref ``specs/lifespan.rst``).

An application that does not support lifespan (it raises or returns without answering
``lifespan.startup``) is served anyway, as the spec says; one that answers
``lifespan.startup.failed`` (Starlette and FastAPI do when their lifespan raises) stops the
server with :class:`~corral.StartupError` (``corral run`` exits with status 3).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..exceptions import StartupError
from .websocket import ASGIApp, Message

__all__ = ["Lifespan"]

logger = logging.getLogger("corral.asgi")

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}


class Lifespan:
    """Runs one application's lifespan scope (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.state: dict[str, Any] = {}
        self.supported = True  # until the application shows it is not
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._answer: asyncio.Future[Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self._received = False  # the application asked for an event: it speaks lifespan
        self._started = False  # it answered lifespan.startup

    async def startup(self) -> None:
        """Run the application's startup; StartupError when it fails."""
        loop = asyncio.get_running_loop()
        scope = {"type": "lifespan", "asgi": dict(ASGI_VERSION), "state": self.state}
        self._answer = loop.create_future()
        self._task = loop.create_task(self._run(scope), name="corral-asgi-lifespan")
        self._events.put_nowait({"type": "lifespan.startup"})
        answer = await self._answer
        if answer["type"] == "lifespan.startup.failed":
            error = RuntimeError(answer.get("message") or "startup failed")
            raise StartupError("(the ASGI application's lifespan startup)", error) from error

    async def shutdown(self) -> None:
        """Run the application's shutdown (failures are logged: the server stops anyway)."""
        task = self._task
        if task is None or task.done() or not self.supported:
            return
        self._answer = asyncio.get_running_loop().create_future()
        self._events.put_nowait({"type": "lifespan.shutdown"})
        answer = await self._answer
        if answer["type"] == "lifespan.shutdown.failed":
            logger.error("ASGI lifespan shutdown failed: %s", answer.get("message") or "")
        await asyncio.wait([task], timeout=1.0)
        if not task.done():
            task.cancel()
            await asyncio.wait([task])

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self._app(scope, self._receive, self._send)
        except Exception as exc:
            if not self._started:
                # Raised before answering lifespan.startup: the spec says to go on without
                # lifespan (an application that wants to stop the server answers
                # lifespan.startup.failed, as Starlette does for a failing lifespan).
                self._unsupported(f"{type(exc).__name__}: {exc}",
                                  exc if self._received else None)
                return
            logger.error("ASGI lifespan raised", exc_info=exc)
            self._reply({"type": "lifespan.shutdown.failed", "message": repr(exc)})
            return
        if not self._received:
            self._unsupported("it returned at once")
        elif not self._started:
            self._unsupported("it returned without answering lifespan.startup")
        else:
            self._reply({"type": "lifespan.shutdown.complete"})

    def _unsupported(self, why: str, error: BaseException | None = None) -> None:
        self.supported = False
        if error is None:
            logger.info("the ASGI application does not support lifespan (%s): serving it "
                        "without", why)
        else:  # it read lifespan.startup, then raised: worth a warning with the traceback
            logger.warning("the ASGI application raised in its lifespan startup without "
                           "answering it (%s): serving it without lifespan, as the ASGI spec "
                           "says", why, exc_info=error)
        self._reply({"type": "lifespan.startup.complete"})

    async def _receive(self) -> Message:
        self._received = True
        return await self._events.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            self._started = True
            self._reply(message)
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self._reply(message)
        else:
            raise RuntimeError(f"ASGI lifespan: unexpected message {kind!r}")

    def _reply(self, message: Message) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result(message)
