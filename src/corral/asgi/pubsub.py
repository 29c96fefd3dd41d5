"""Server-side pub/sub for ASGI applications: the ``corral.pubsub`` scope extension.

corral puts ``scope["extensions"]["corral.pubsub"]`` in every ``websocket`` and ``http``
scope it serves. Through it a WebSocket subscribes *its connection* to topics, and any
request publishes to a topic; corral then frames each publish once and writes it to every
subscriber itself, with its backpressure policy, through the configured broker (every
worker and machine on the same Redis), with no coroutine per subscriber in the application.

The extension is a dictionary of plain functions:

- ``subscribe(topic) -> bool`` and ``unsubscribe(topic) -> bool`` (``websocket`` scopes,
  once accepted): whether the subscription changed;
- ``topics() -> frozenset[str]`` (``websocket`` scopes): this connection's topics;
- ``publish(topic, message, keep=0) -> asyncio.Future[int]``: ``message`` is ``str`` (a
  text message) or bytes (binary); ``keep`` > 0 keeps it in the topic's history;
- ``subscriber_count(topic) -> int``: subscribers in this process.

The functions below find the extension in a Starlette / FastAPI ``WebSocket`` or
``Request`` (anything with a ``scope``) or a raw scope, and fail with a clear message on a
server that does not offer it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pubsub.topics import Message
    from ..server.serve import Server
    from .websocket import AsgiWebSocket

__all__ = ["EXTENSION", "extension_for", "publish", "subscribe", "topics", "unsubscribe"]

EXTENSION = "corral.pubsub"


def extension_for(server: Server, ws: AsgiWebSocket | None) -> dict[str, Callable[..., Any]]:
    """The extension of one scope: the server's publish, and for a WebSocket its own
    subscriptions."""

    def publish(topic: str, message: Message, keep: int = 0) -> asyncio.Future[int]:
        return server.publish(topic, message, keep=keep)

    functions: dict[str, Callable[..., Any]] = {
        "publish": publish,
        "subscriber_count": server.subscriber_count,
    }
    if ws is not None:
        functions.update(subscribe=ws.subscribe, unsubscribe=ws.unsubscribe,
                         topics=lambda: ws.topics)
    return functions


def _extension(connection: Any, function: str) -> Callable[..., Any]:
    scope = connection if isinstance(connection, Mapping) else getattr(connection, "scope", None)
    if not isinstance(scope, Mapping):
        raise TypeError(f"corral.asgi.{function}() needs a WebSocket, a Request or an ASGI "
                        f"scope, not {type(connection).__name__}")
    extension = (scope.get("extensions") or {}).get(EXTENSION)
    if extension is None:
        raise RuntimeError(
            f"corral.asgi.{function}() needs corral's pub/sub extension, which this server "
            f"does not offer: serve the application with corral (`corral run module:app`)")
    if function not in extension:
        raise RuntimeError(f"corral.asgi.{function}() works on WebSocket connections only")
    return extension[function]  # type: ignore[no-any-return]


def subscribe(connection: Any, topic: str) -> bool:
    """Subscribe an accepted WebSocket's connection to ``topic``: corral writes every
    publish to it. True when it was not subscribed yet."""
    return bool(_extension(connection, "subscribe")(topic))


def unsubscribe(connection: Any, topic: str) -> bool:
    """Stop a WebSocket's subscription to ``topic``; True when it was subscribed."""
    return bool(_extension(connection, "unsubscribe")(topic))


def topics(connection: Any) -> frozenset[str]:
    """The topics a WebSocket's connection is subscribed to."""
    return frozenset(_extension(connection, "topics")())


def publish(connection: Any, topic: str, message: Message, *, keep: int = 0
            ) -> asyncio.Future[int]:
    """Publish ``message`` (text for ``str``, binary for bytes) to every subscriber of
    ``topic`` in every process sharing the broker, from a WebSocket or an HTTP request.
    Await the future to learn the broker took it (``PublishError`` otherwise)."""
    future: asyncio.Future[int] = _extension(connection, "publish")(topic, message, keep)
    return future
