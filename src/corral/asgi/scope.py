"""ASGI scopes from corral's view of a request (asgiref ``specs/www.rst``, spec 2.4).

The client, scheme and host come from :class:`~corral.Request`, so a trusted proxy's
``Forwarded`` / ``X-Forwarded-*`` headers or the PROXY protocol (``forwarded_allow_ips``,
``proxy_protocol``) give the application the real client, as they give corral's own
handlers. ``path`` and ``raw_path`` include ``root_path``, as Starlette expects (it strips
``root_path`` to route).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..request import Request
from .lifespan import ASGI_VERSION

__all__ = ["http_scope", "websocket_scope"]


def _common(request: Request, root_path: str, server: Any, state: dict[str, Any] | None,
            extensions: dict[str, Any]) -> dict[str, Any]:
    http = request.http
    client = request.remote_address
    scope: dict[str, Any] = {
        "asgi": dict(ASGI_VERSION),
        "http_version": http.http_version,
        "scheme": request.scheme,
        "path": root_path + http.path,
        "raw_path": quote(root_path, safe="/").encode("ascii") + http.raw_path.encode("latin-1"),
        "query_string": http.query_string.encode("latin-1"),
        "root_path": root_path,
        "headers": [(name.encode("latin-1"), value.encode("latin-1"))
                    for name, value in http.headers.lower_items()],
        "client": tuple(client[:2]) if isinstance(client, tuple) else None,
        "server": tuple(server[:2]) if isinstance(server, tuple) else None,
        "extensions": extensions,
    }
    if state is not None:
        scope["state"] = dict(state)  # each request its own copy (the lifespan spec)
    return scope


def http_scope(request: Request, root_path: str, server: Any, state: dict[str, Any] | None,
               extensions: dict[str, Any]) -> dict[str, Any]:
    """The scope of one HTTP request."""
    scope = _common(request, root_path, server, state, extensions)
    scope["type"] = "http"
    scope["method"] = request.method
    return scope


def websocket_scope(request: Request, root_path: str, server: Any,
                    state: dict[str, Any] | None, extensions: dict[str, Any]
                    ) -> dict[str, Any]:
    """The scope of one WebSocket handshake."""
    scope = _common(request, root_path, server, state, extensions)
    scope["type"] = "websocket"
    scope["subprotocols"] = list(request.subprotocols)
    return scope
