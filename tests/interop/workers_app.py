"""The application of tests/interop/test_workers.py: every answer carries the PID of the
worker process serving the connection, so a test can tell the workers apart."""

from __future__ import annotations

import os

import corral
from corral.metrics import metrics


class WhichWorker(corral.Handler):
    """Answers every message with its worker's PID."""

    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> corral.Text:
        return corral.Text(str(os.getpid()))


class Room(corral.Handler):
    """Says its worker's PID on open, then relays what it receives to every member of the
    "room" topic, in whichever worker they are (given a shared broker)."""

    def on_open(self, ws: corral.WebSocket) -> corral.Text:
        ws.subscribe("room")
        return corral.Text(str(os.getpid()))

    def on_message(self, ws: corral.WebSocket, message: str | bytes) -> None:
        ws.publish("room", message)


app = (corral.Router().websocket("/", WhichWorker).websocket("/room", Room)
       .http("/metrics", metrics))


def make_app() -> corral.Router:
    """A factory: called once in each worker, as with a single process."""
    return app
