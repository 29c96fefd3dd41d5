"""What a callable the application hands corral (a handler, a factory, a hook) is: its name
for error messages and the arguments it needs, so that one that cannot be called the way
corral will call it is refused when it is given, with a message that names it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Needs", "name_of", "needs"]


def name_of(obj: Any) -> str:
    """``obj``'s qualified name, or its repr (an object, a partial)."""
    return getattr(obj, "__qualname__", None) or repr(obj)


class Needs(NamedTuple):
    """Arguments a call must pass: positional ones, and whether some keyword-only one has no
    default. ``positional`` is -1 when the signature cannot be read (some builtins): then the
    callable is given the benefit of the doubt."""

    positional: int
    keywords: bool


def needs(fn: Callable[..., Any]) -> Needs:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return Needs(-1, False)
    required = [p for p in parameters if p.default is p.empty]
    positional = sum(1 for p in required
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    return Needs(positional, any(p.kind is p.KEYWORD_ONLY for p in required))
