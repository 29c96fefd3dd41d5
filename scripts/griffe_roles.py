"""A griffe extension for the documentation site (mkdocs.yml loads it for mkdocstrings).

corral's docstrings name other objects with Sphinx roles (``:class:`~corral.Server```,
``:func:`serve```). Rendered as Markdown they would show the raw role. This turns each one
into a link to the API reference when the name is part of the public API the site documents
(a name in ``corral.__all__`` or a member of one of those classes), and into plain code
otherwise, so a page shows neither a raw role nor a dead link. A line of prose that starts
with ``>`` (a wrapped ``keep > 0``) is kept as text, not made a Markdown quote. Only the
rendering changes: the docstrings in the source stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):"
    r"`(?P<tilde>~?)(?P<name>[A-Za-z_][\w.]*?)(?:\(\))?`"
)
QUOTE = re.compile(r"^(\s*)>(?!>)", re.MULTILINE)  # not a doctest's >>>


def _final(obj: Any, name: str | None = None) -> Any:
    """The object an alias points to; for a name that is both a module and a function or
    class defined in it (``corral.serve``), that function or class."""
    while obj.is_alias:
        obj = obj.final_target
    if obj.is_module and name is not None and name in obj.members:
        member = obj.members[name]
        if not member.is_module:
            return _final(member)
    return obj


def _walk(obj: Any) -> Iterator[Any]:
    """Every object defined in ``obj`` (aliases are skipped: their docstrings are their
    targets')."""
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield member
        if member.is_module or member.is_class:
            yield from _walk(member)


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "corral":
            return
        public = self._public(pkg)
        for obj in [pkg, *_walk(pkg)]:
            docstring = obj.docstring
            if docstring is None:
                continue
            if ":" in docstring.value:
                docstring.value = ROLE.sub(partial(self._link, pkg, obj, public=public),
                                           docstring.value)
            if ">" in docstring.value:
                docstring.value = QUOTE.sub(r"\1\\>", docstring.value)

    # griffe before 1.14 called the same hook by this name.
    on_package_loaded = on_package

    @staticmethod
    def _public(pkg: griffe.Module) -> set[str]:
        """The canonical paths the reference pages render: what ``corral`` exports, and the
        public members of the exported classes."""
        paths: set[str] = set()
        for name in pkg.exports or ():
            name = str(name)
            if name not in pkg.members or name.startswith("_"):
                continue
            try:
                target = _final(pkg.members[name], name)
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
            paths.add(target.path)
            if target.is_class:
                paths.update(f"{target.path}.{member}" for member in target.members
                             if not member.startswith("_"))
        return paths

    @staticmethod
    def _link(pkg: griffe.Module, obj: Any, match: re.Match[str], *, public: set[str]) -> str:
        name = match["name"]
        shown = name.rsplit(".", 1)[-1] if match["tilde"] else name
        code = f"`{shown}`"
        first, _, rest = name.partition(".")
        try:
            scope = obj if obj.is_module or obj.is_class else obj.parent
            path = first if first == pkg.name else scope.resolve(first)
            if rest:
                path = f"{path}.{rest}"
            target = _final(pkg.modules_collection.get_member(path), name.rsplit(".", 1)[-1])
        except (KeyError, ValueError, griffe.NameResolutionError, griffe.AliasResolutionError,
                griffe.CyclicAliasError):
            return code
        if target.path in public:
            return f"[{code}][{target.path}]"
        return code
