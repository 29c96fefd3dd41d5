"""docs/reference/cli.md against the command line: every option that ``corral --help``,
``corral run --help`` and ``corral demo --help`` print is documented on the page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "cli.md"


def printed_options(command: list[str]) -> set[str]:
    result = subprocess.run([sys.executable, "-m", "corral", *command, "--help"],
                            capture_output=True, text=True, timeout=30, check=True)
    # Option names where argparse lists them: at the start of a help line ("  --port PORT",
    # "  -h, --help"), not where the epilog's prose mentions one.
    options = set()
    for line in result.stdout.splitlines():
        match = re.match(r"\s+(-[\w-]+(?:[ =][A-Z:{}a-z,_]+)?(?:, -[\w-]+)*)", line)
        if match:
            options.update(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", match[1]))
    return options


@pytest.mark.parametrize("command", [["run"], ["demo"], []], ids=["run", "demo", "corral"])
def test_every_printed_option_is_documented(command: list[str]) -> None:
    options = printed_options(command)
    assert "--help" in options and (not command or "--port" in options)  # parsing works
    page = PAGE.read_text()
    missing = sorted(option for option in options if f"`{option}" not in page)
    shown = " ".join(["corral", *command])
    assert not missing, f"{shown} --help prints options {PAGE.name} lacks: {missing}"
