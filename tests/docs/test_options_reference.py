"""docs/reference/options.md against corral.Options: every field listed once, with its real
default, and marked run time exactly when ``ws.set_options`` accepts it."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from corral import Options
from corral.options import RUNTIME_MUTABLE

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "options.md"
FIELDS = {field.name: field for field in dataclasses.fields(Options)}


def table() -> dict[str, dict[str, str]]:
    """The rows of the table whose first column is "option": name -> column -> cell."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in PAGE.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if header[0] != "option" or set(line) <= set("|-: "):
            continue
        row = dict(zip(header, cells, strict=True))
        name = row["option"].strip("`")
        assert name not in rows, f"{name} is listed twice"
        rows[name] = row
    return rows


ROWS = table()


def test_every_field_is_listed() -> None:
    assert sorted(ROWS) == sorted(FIELDS)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_default_is_the_real_one(name: str) -> None:
    written = re.match(r"`([^`]+)`", ROWS[name]["default"])
    assert written, f"{name}: the default should start with a Python value in backticks"
    assert ast.literal_eval(written[1]) == FIELDS[name].default, name


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_run_time_column_matches_set_options(name: str) -> None:
    assert ROWS[name]["run time"] == ("yes" if name in RUNTIME_MUTABLE else "no"), name
