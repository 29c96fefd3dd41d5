"""The asyncio server: HTTP phase, routing, WebSocket sessions, serve()/run()."""

from .router import Router, RouteShadowedWarning, StaticFiles
from .serve import Server, run, serve

__all__ = ["RouteShadowedWarning", "Router", "Server", "StaticFiles", "run", "serve"]
