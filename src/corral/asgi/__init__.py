"""ASGI 3 applications (FastAPI, Starlette, Django) served by corral, with corral's WebSocket
engine under their ``websocket`` scope and server-side pub/sub through the ``corral.pubsub``
scope extension (docs/how-to/fastapi.md).

``corral.serve(app)``, ``corral.run(app)`` and ``corral run module:app`` recognise an ASGI
application by its signature (``interface="asgi"`` / ``--interface asgi`` forces it). From
the application, :func:`subscribe`, :func:`unsubscribe`, :func:`topics` and :func:`publish`
use the extension through a Starlette or FastAPI ``WebSocket`` or ``Request``.
"""

from .app import AsgiApp, is_asgi_app
from .pubsub import publish, subscribe, topics, unsubscribe
from .websocket import ClientDisconnected

__all__ = ["AsgiApp", "ClientDisconnected", "is_asgi_app", "publish", "subscribe", "topics",
           "unsubscribe"]
