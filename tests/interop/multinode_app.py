"""The app of the multi-node test (test_multinode.py), served by ``corral run`` with
``--broker redis://...``: on ``/feed`` each client is subscribed to one topic and first told
which node (process) it landed on; every message a client sends is published to the topic."""

from __future__ import annotations

import os

from corral import Handler, Router, WebSocket

TOPIC = "feed"


class Feed(Handler):
    def on_open(self, ws: WebSocket) -> None:
        ws.subscribe(TOPIC)
        ws.send(f"node {os.getpid()}")

    def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        ws.publish(TOPIC, message)


app = Router().websocket("/feed", Feed)
