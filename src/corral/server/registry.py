"""What a server has open: connections in their HTTP phase, WebSockets, and their tasks.

The HTTP phase and the WebSocket sessions report here; ``Server.close()`` walks it to shut
everything down. The callables handed to every connection are bound once, here, so a
connection holds a reference to them, not a copy.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..websocket import WebSocket
    from .connection import HttpConnection
    from .stats import Recorder

__all__ = ["Registry"]


class Registry:
    """The open connections of one server."""

    __slots__ = ("_recorder", "http", "tasks", "track_task", "websocket_finished",
                 "websockets")

    def __init__(self, recorder: Recorder | None = None) -> None:
        self.http: set[HttpConnection] = set()  # still in the HTTP phase
        self.websockets: set[WebSocket] = set()
        self.tasks: set[asyncio.Task[Any]] = set()  # started for connections (create_task)
        self._recorder = recorder  # counts how the WebSockets ended
        # What each WebSocket is given: one bound method for all of them.
        self.websocket_finished = self._websocket_finished
        self.track_task = self._track_task

    def upgraded(self, http: HttpConnection, ws: WebSocket) -> None:
        """``http``'s connection is now the WebSocket ``ws``."""
        self.http.discard(http)
        self.websockets.add(ws)

    def _websocket_finished(self, ws: WebSocket) -> None:
        self.websockets.discard(ws)
        reason = ws.close_reason
        if self._recorder is not None and reason is not None:
            self._recorder.closed(reason.kind)

    def _track_task(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def __len__(self) -> int:
        return len(self.http) + len(self.websockets)
