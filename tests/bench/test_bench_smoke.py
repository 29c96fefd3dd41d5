"""Smoke test of bench/compression.py: the quick run works end to end (no timing checks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "compression.py"
RESULTS = ROOT / "bench" / "RESULTS.md"

pytestmark = [
    pytest.mark.timeout(90),
    # The script is checked once, on the compiled path: pure mode is the library's reference,
    # and running this 17-second check again there would only cost CI time.
    pytest.mark.skipif(os.environ.get("CORRAL_PURE") == "1", reason="checked in compiled mode"),
]


def _snapshot() -> bytes | None:
    return RESULTS.read_bytes() if RESULTS.exists() else None


def test_quick_run_prints_the_tables_and_writes_nothing() -> None:
    before = _snapshot()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-write"],
        cwd=ROOT, capture_output=True, text=True, timeout=80,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("## Compression")
    assert "| server compression | msgs/s |" in out  # throughput
    assert "| server compression | 2" in out  # compression ratio by message size
    assert "| server compression | negotiated" in out  # memory per idle connection
    assert out.count("| off |") == 2  # no ratio to show for off
    for row in ("| low-memory |", "| balanced |", "| max-compression |",
                "| balanced + server_no_context_takeover |"):
        assert out.count(row) == 3, row  # one row in each table
    assert "echo mismatches: 0." in out
    assert _snapshot() == before  # --no-write left RESULTS.md alone
