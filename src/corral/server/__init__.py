"""The asyncio server: HTTP phase, routing, WebSocket sessions, serve()/run()."""

from .router import Router, StaticFiles
from .serve import Server, run, serve

__all__ = ["Router", "Server", "StaticFiles", "run", "serve"]
