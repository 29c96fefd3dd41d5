#!/usr/bin/env bash
# Run corral's whole test suite (installs what it needs first). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/install-system-deps.sh  # chromium, for tests/interop/test_browser.py
.venv/bin/python -m ruff check src tests
.venv/bin/python -m mypy
# An editable install compiles corral._speedups only when installing: rebuild a stale one.
speedups=(src/corral/_speedups.*.so)
if [ -e "${speedups[0]}" ] && [ src/corral/_speedups.c -nt "${speedups[0]}" ]; then
    .venv/bin/python -m pip install --quiet --no-deps -e .
fi
# The whole suite runs twice: on the compiled fast path (when built), then on the pure-Python
# reference it must match (docs/speed.md).
.venv/bin/python -c 'import corral.accel as a; print("corral.accel.COMPILED =", a.COMPILED)'
.venv/bin/python -m pytest "$@"
echo "corral.accel.COMPILED = False (CORRAL_PURE=1)"
CORRAL_PURE=1 .venv/bin/python -m pytest "$@"
