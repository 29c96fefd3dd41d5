"""Routing: path patterns to WebSocket handlers and plain HTTP handlers on one port.

Patterns are literal paths with ``{name}`` segments (one path segment) and at most one
trailing ``{name:path}`` (the rest of the path, slashes included).
"""

from __future__ import annotations

import asyncio
import inspect
import mimetypes
import os
import re
import warnings
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, cast

from ..async_api import AsyncWebSocket, CoroutineHandler
from ..handler import Handler
from ..options import Options
from ..request import Request, Response
from .callables import name_of, needs
from .lifecycle import Hook, check_hooks

__all__ = ["HTTPHandler", "Route", "RouteShadowedWarning", "Router", "StaticFiles"]

HTTPHandler = Callable[[Request], Response | Awaitable[Response]]
HandlerFactory = Callable[[], Handler]
App = Union["Router", type[Handler], Callable[[AsyncWebSocket], Awaitable[Any]]]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


def _compile(pattern: str) -> re.Pattern[str]:
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern must start with '/': {pattern!r}")
    out = []
    pos = 0
    for match in _PARAM.finditer(pattern):
        out.append(re.escape(pattern[pos : match.start()]))
        name, is_path = match.group(1), match.group(2)
        if is_path and match.end() != len(pattern):
            raise ValueError("{name:path} is only allowed at the end of a pattern")
        out.append(f"(?P<{name}>.*)" if is_path else f"(?P<{name}>[^/]+)")
        pos = match.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z")


def websocket_factory(
    target: type[Handler] | Callable[..., Any], subprotocols: tuple[str, ...] = ()
) -> HandlerFactory:
    """Turn what a user registers into a per-connection handler factory.

    A :class:`Handler` subclass is instantiated per connection; an ``async def fn(ws)`` is
    run in the ``async for`` style; any other callable that takes no argument is taken as a
    factory. What cannot be any of these (a plain ``def fn(ws)``, an ASGI application, an
    ``async def`` with another number of arguments) is refused here, when it is registered,
    with what to write instead, rather than failing on every connection.
    """
    if inspect.isclass(target) and issubclass(target, Handler):
        return target
    if inspect.iscoroutinefunction(target):
        required = needs(target).positional
        if required == 1:
            return lambda: CoroutineHandler(target, subprotocols)
        if required == 3:
            raise TypeError(_ASGI.format(target=target))
        raise TypeError(f"{name_of(target)} takes {required} arguments: an async def handler "
                        "takes one, the connection: async def handler(ws): "
                        "async for message in ws: ...")
    if not callable(target):
        raise TypeError(f"not a WebSocket handler: {target!r}: give a Handler subclass, an "
                        "async def handler(ws), or a function that makes a Handler")
    if (not inspect.isroutine(target) and not inspect.isclass(target)
            and inspect.iscoroutinefunction(type(target).__call__)
            and needs(target).positional == 3):
        raise TypeError(_ASGI.format(target=target))  # an ASGI app object (Starlette, ...)
    if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
        raise TypeError(f"{name_of(target)} is a generator function: write async def "
                        "handler(ws) and send with await ws.send(...)")
    required = needs(target).positional
    if required > 0:
        raise TypeError(
            f"{name_of(target)} needs {required} argument(s), but corral calls what it is given "
            "with none, once per connection, to make that connection's handler. Write async "
            "def handler(ws) for the async for style, or a Handler subclass with "
            "on_message(self, ws, message) for callbacks"
        )
    return cast(HandlerFactory, target)


_ASGI = ("{target!r} looks like an ASGI application (async (scope, receive, send)): corral "
         "serves one as a whole, not as a route: corral.serve(app), corral.run(app) or "
         "`corral run module:app`")


@dataclass(slots=True)
class Route:
    pattern: str
    regex: re.Pattern[str]
    websocket: HandlerFactory | None = None
    http: HTTPHandler | None = None
    options: Options | dict[str, Any] | None = None
    # The methods ``http`` answers (upper case; HEAD with GET); None: every method.
    methods: frozenset[str] | None = None

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    @property
    def allow_header(self) -> str:
        """The ``Allow`` field of a 405 (RFC 9110 15.5.6)."""
        return ", ".join(sorted(self.methods or ()))


class Router:
    """Maps request paths to handlers; the first matching route wins.

    ``on_startup`` and ``on_shutdown``: hooks run in the server's event loop before the first
    connection is accepted and after the last one is closed, each called with the server or
    with nothing, plain or ``async def`` (see :mod:`corral.server.lifecycle`)."""

    def __init__(self, *, on_startup: Iterable[Hook] = (),
                 on_shutdown: Iterable[Hook] = ()) -> None:
        self.routes: list[Route] = []
        self.on_startup: list[Hook] = list(check_hooks(on_startup, "startup"))
        self.on_shutdown: list[Hook] = list(check_hooks(on_shutdown, "shutdown"))

    def websocket(
        self,
        pattern: str,
        handler: type[Handler] | Callable[..., Any],
        *,
        options: Options | dict[str, Any] | None = None,
        subprotocols: tuple[str, ...] | list[str] = (),
    ) -> Router:
        """Serve WebSocket connections on ``pattern``. Plain HTTP there gets 426."""
        route = self._route(pattern)
        route.websocket = websocket_factory(handler, tuple(subprotocols))
        route.options = options
        return self

    def http(self, pattern: str, handler: HTTPHandler, *,
             methods: Iterable[str] | None = None) -> Router:
        """Serve plain HTTP on ``pattern`` with ``handler(request) -> Response`` (or an
        awaitable of one). ``methods``: the methods it answers (``GET`` brings ``HEAD``);
        the others get 405 with ``Allow``. None: every method."""
        route = self._route(pattern)
        route.http = handler
        if methods is None:
            route.methods = None
        else:
            allowed = {method.upper() for method in methods}
            if not allowed or not all(_METHOD.fullmatch(method) for method in allowed):
                raise ValueError(f"methods are HTTP method names, not {methods!r}")
            if "GET" in allowed:
                allowed.add("HEAD")  # RFC 9110 9.3.2: HEAD is GET without the body
            route.methods = frozenset(allowed)
        return self

    def static(self, prefix: str, directory: str | os.PathLike[str]) -> Router:
        """Serve the files under ``directory`` at ``prefix/...`` (GET and HEAD); ``prefix``
        itself redirects to ``prefix/``. A relative ``directory`` is taken from the current
        directory when this is called (not when a request comes)."""
        prefix = prefix.rstrip("/")
        files = StaticFiles(directory)
        if prefix:
            self.http(prefix, _Redirect(prefix + "/"), methods=["GET"])
        self.http(prefix + "/{path:path}", files, methods=["GET"])
        return self

    def _route(self, pattern: str) -> Route:
        for route in self.routes:
            if route.pattern == pattern:
                return route
        regex = _compile(pattern)
        sample = _SAMPLE.sub("x", pattern)  # a path the new pattern matches
        for earlier in self.routes:
            if earlier.regex.match(sample):
                warnings.warn(f"route {pattern!r} is shadowed by the earlier route "
                              f"{earlier.pattern!r}, which matches its paths: the first "
                              "matching route wins; register the more specific one first",
                              RouteShadowedWarning, stacklevel=3)
                break
        route = Route(pattern, regex)
        self.routes.append(route)
        return route

    def match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            m = route.regex.match(path)
            if m is not None:
                return route, m.groupdict()
        return None


class RouteShadowedWarning(UserWarning):
    """A route was registered after one that already matches its paths: it is never used."""


_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+")  # RFC 9110 9.1: a token (upper-cased)
_SAMPLE = re.compile(r"\{[^}]*\}")  # placeholders, replaced to make a sample path


class _Redirect:
    """Answers with a permanent redirect to ``location`` (the query kept): ``/static`` to
    ``/static/``, so relative links in its index page resolve."""

    def __init__(self, location: str) -> None:
        self.location = location

    def __call__(self, request: Request) -> Response:
        query = request.query_string
        target = f"{self.location}?{query}" if query else self.location
        return Response(308, "", [("Location", target)], content_type=None)


class StaticFiles:
    """An HTTP handler serving files from one directory, never outside it."""

    def __init__(self, directory: str | os.PathLike[str], index: str = "index.html") -> None:
        self.root = Path(directory).resolve()
        self.index = index

    async def __call__(self, request: Request) -> Response:
        """Files are read in a worker thread: a slow disk must not stall other connections."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._respond, request)

    def _respond(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, "method not allowed", [("Allow", "GET, HEAD")])
        relative = request.path_params.get("path", "").lstrip("/")
        try:
            target = (self.root / relative).resolve()
            if target != self.root and self.root not in target.parents:
                return Response(404, "not found")
            if target.is_dir():
                target = target / self.index
            if not target.is_file():
                return Response(404, "not found")
        except (OSError, ValueError):  # a name the OS refuses (NUL byte, too long): no file
            return Response(404, "not found")
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type in ("application/javascript",
                                                                 "application/json"):
            content_type += "; charset=utf-8"
        # HEAD too: the HTTP layer drops the body but keeps its Content-Length and type.
        return Response(200, target.read_bytes(), content_type=content_type)


def as_router(app: App) -> Router:
    """Accept a Router, a Handler class or an ``async def`` and give back a Router; a lone
    handler serves every path."""
    if isinstance(app, Router):
        return app
    router = Router()
    router.websocket("/{path:path}", app)
    return router
