"""Smoke test of bench/fragments.py: the quick run measures every case (no timing checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "fragments.py"

pytestmark = pytest.mark.timeout(60)


def test_quick_run_prints_one_row_per_case() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    names = [row.split(" | ")[0][2:] for row in rows]
    assert names == [f"fragments of {size} B" for size in (0, 1, 16, 64, 1024)] + [
        "empty pings", "1-byte messages"]
    for row in rows:
        wire, per_frame, per_byte = (float(cell) for cell in row.strip("| ").split(" | ")[1:])
        assert wire > 0 and per_frame > 0 and per_byte > 0, row
