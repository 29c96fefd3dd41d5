#!/usr/bin/env bash
# Make .venv with corral (editable) and its test tools. Safe to run again: it only installs
# what is missing or changed. Sourced by scripts/demo.sh and scripts/test.sh. System packages
# (chromium for the browser test) are scripts/install-system-deps.sh's job, run by test.sh only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.corral-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
        || [ src/corral/_speedups.c -nt "$stamp" ] || [ src/corral/_hotpath.c -nt "$stamp" ] \
        || [ src/corral/_http.c -nt "$stamp" ] || [ src/corral/_frame.h -nt "$stamp" ] \
        || [ "${CORRAL_REINSTALL:-}" = 1 ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[test]"
    touch "$stamp"
fi
