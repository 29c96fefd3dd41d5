"""A background feed: a task that starts with the server publishes a tick to the topic
"ticks" every second; every client on /ticks gets each one."""

import asyncio
import contextlib
import json
import logging
import time

import corral

logger = logging.getLogger("feed")


class Clock:
    """Publishes {"n": 1, "time": ...}, {"n": 2, ...} to ``topic`` every ``interval`` s."""

    def __init__(self, topic: str = "ticks", interval: float = 1.0) -> None:
        self.topic = topic
        self.interval = interval
        self.task: asyncio.Task[None] | None = None

    def start(self, server: corral.Server) -> None:
        # A startup hook: runs in the server's event loop before anything listens.
        self.task = asyncio.create_task(self.run(server))

    async def stop(self) -> None:
        # A shutdown hook: runs after the last connection has closed.
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self, server: corral.Server) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.interval)
            n += 1
            tick = json.dumps({"n": n, "time": time.time()})
            try:
                await server.publish(self.topic, tick)  # to every subscriber, every process
            except corral.PublishError as exc:  # Redis away: this tick is lost, go on
                logger.warning("tick %d not published: %s", n, exc)


class Ticks(corral.Handler):
    def on_open(self, ws: corral.WebSocket) -> None:
        ws.subscribe("ticks")


def app(interval: float = 1.0) -> corral.Router:
    """The feed and its subscribers in one process: `corral run feed:app`."""
    clock = Clock(interval=interval)
    return corral.Router(on_startup=[clock.start], on_shutdown=[clock.stop]).websocket(
        "/ticks", Ticks)


def subscribers() -> corral.Router:
    """The subscribers without a feed, for any number of workers on a shared broker."""
    return corral.Router().websocket("/ticks", Ticks)


def publisher(interval: float = 1.0) -> corral.Router:
    """The feed without routes: one process of it, on the same broker as the workers."""
    clock = Clock(interval=interval)
    return corral.Router(on_startup=[clock.start], on_shutdown=[clock.stop])


if __name__ == "__main__":
    corral.run(app, "127.0.0.1", 8000, factory=True)
