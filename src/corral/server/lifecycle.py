"""Startup and shutdown hooks: code that runs inside the server's event loop, before the
first connection is accepted and after the last one is closed (a price feed that publishes to
topics, a database pool, a cache to warm).

A hook is called with the :class:`~corral.Server` (for ``server.publish``, ``server.broker``)
or with no argument, as its signature says; it may be ``async def``. Startup hooks run in
order and the first that raises stops the start (:class:`~corral.StartupError`); shutdown
hooks all run, in order, each failure logged.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..exceptions import StartupError
from .callables import name_of, needs

__all__ = ["Hook", "check_hooks", "run_shutdown", "run_startup"]

logger = logging.getLogger("corral.server")

#: ``hook(server)`` or ``hook()``, plain or ``async def``.
Hook = Callable[..., Any]


def _wants_server(hook: Hook) -> bool:
    """Whether the hook takes an argument (any positional one): then it gets the server."""
    try:
        parameters = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
               for p in parameters)


def check_hooks(hooks: Iterable[Hook], what: str) -> tuple[Hook, ...]:
    """The hooks as a tuple, each checked to be callable with the server or with nothing
    (refused when given, not when the server starts)."""
    checked = tuple(hooks)
    for hook in checked:
        if not callable(hook):
            raise TypeError(f"{what} hooks are callables, not {hook!r}")
        arguments = needs(hook)
        if arguments.positional > 1 or arguments.keywords:
            raise TypeError(f"the {what} hook {name_of(hook)} must take the server or "
                            "nothing: def hook(server) or async def hook()")
    return checked


async def _call(hook: Hook, server: Any) -> None:
    result = hook(server) if _wants_server(hook) else hook()
    if inspect.isawaitable(result):
        await result


async def run_startup(hooks: Iterable[Hook], server: Any) -> None:
    """Run the startup hooks in order; the first failure raises StartupError."""
    for hook in hooks:
        try:
            await _call(hook, server)
        except Exception as exc:
            raise StartupError(name_of(hook), exc) from exc


async def run_shutdown(hooks: Iterable[Hook], server: Any) -> None:
    """Run every shutdown hook in order; a failure is logged and the next hook still runs."""
    for hook in hooks:
        try:
            await _call(hook, server)
        except Exception:
            logger.exception("shutdown hook %s failed", name_of(hook))
