"""Recognising an ASGI application, and what a server keeps of one.

An ASGI 3 application is an awaitable callable of ``(scope, receive, send)``: an ``async
def app(scope, receive, send)``, or an object whose ``__call__`` is one (Starlette,
FastAPI, Django's ``get_asgi_application()``). corral's own apps are a :class:`~corral.Router`,
a :class:`~corral.Handler` subclass or an ``async def handler(ws)``: one argument, so the two
kinds cannot be confused. ``interface`` forces the choice when a signature cannot be read.
"""

from __future__ import annotations

import inspect
from typing import Any

from .lifespan import Lifespan
from .websocket import ASGIApp

__all__ = ["INTERFACES", "AsgiApp", "is_asgi_app"]

INTERFACES = ("auto", "asgi", "corral")


def _positional_count(function: Any) -> int | None:
    """How many positional arguments ``function`` takes (None: any number, or unknown)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def is_asgi_app(obj: Any) -> bool:
    """Whether ``obj`` looks like an ASGI 3 application: a coroutine function (or an
    object whose ``__call__`` is one) of three positional arguments."""
    if inspect.isclass(obj):
        return False  # a class is called with its constructor's arguments: ASGI 2, or ours
    if not callable(obj):
        return False
    # A function, or the bound __call__ of an application object (Starlette, FastAPI).
    function = obj if inspect.isfunction(obj) or inspect.ismethod(obj) else type(
        obj).__call__.__get__(obj)
    if not inspect.iscoroutinefunction(function) and not inspect.iscoroutinefunction(obj):
        return False
    return _positional_count(function) == 3


class AsgiApp:
    """An ASGI application as a server runs it: the callable, its ``root_path`` and its
    lifespan (whose ``state`` every request's scope copies)."""

    __slots__ = ("app", "lifespan", "root_path")

    def __init__(self, app: ASGIApp, root_path: str = "") -> None:
        if root_path and (not root_path.startswith("/") or root_path.endswith("/")):
            raise ValueError(f"root_path must start with '/' and not end with one: "
                             f"{root_path!r}")
        self.app = app
        self.root_path = root_path
        self.lifespan = Lifespan(app)

    @property
    def state(self) -> dict[str, Any] | None:
        """What the lifespan startup put in its ``state`` (None without lifespan support)."""
        return self.lifespan.state if self.lifespan.supported else None

    def __repr__(self) -> str:
        return f"<AsgiApp {self.app!r} root_path={self.root_path!r}>"
