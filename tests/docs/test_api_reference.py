"""The API reference (docs/reference/*.md, rendered by mkdocstrings) has an entry for every
public name of corral: a name added to ``corral.__all__`` fails here until a page shows it
(the docs build, strict, then fails if the entry does not resolve)."""

from __future__ import annotations

import re
from pathlib import Path

import corral

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"


def test_every_public_name_has_an_entry() -> None:
    pages = "".join(page.read_text() for page in sorted(REFERENCE.glob("*.md")))
    entries = set(re.findall(r"^::: ([\w.]+)", pages, re.MULTILINE))
    missing = [name for name in corral.__all__ if not name.startswith("__")
               and not any(entry == f"corral.{name}" or entry.endswith(f".{name}")
                           for entry in entries)]
    assert not missing, f"no ::: entry in docs/reference/ for {missing}"
