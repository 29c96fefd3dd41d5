#!/usr/bin/env bash
# Run corral's whole test suite (installs what it needs first). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/install-system-deps.sh  # chromium, redis-server, nginx: the real peers
bash scripts/install-node-peers.sh  # the ws npm package, for tests/interop/test_node_ws.py
.venv/bin/python -m ruff check src tests scripts fuzz bench docs/examples
.venv/bin/python -m mypy
bash scripts/docs.sh  # the documentation site into site/, strict: a broken link or reference fails
bash scripts/build-ext.sh  # a C extension older than its source is rebuilt
# The real Autobahn|Testsuite against corral's server and client, its quick selection (about
# 3.5 minutes on 2 cores, 12.1/13.1 compression most of it; wstest needs Python 2.7 and is
# installed once into .autobahn/). `scripts/autobahn.sh --full` writes compliance/RESULTS.md.
bash scripts/autobahn.sh --quick
# The same engine under an ASGI application: a Starlette echo served by corral, sections 1-10
# and 12.1 (about 75 s; docs/how-to/fastapi.md).
bash scripts/autobahn.sh --quick --asgi
# The whole suite runs twice: on the compiled fast path (when built), then on the pure-Python
# reference it must match (docs/speed.md).
.venv/bin/python -c 'import corral.accel as a; print("corral.accel.COMPILED =", a.COMPILED)'
.venv/bin/python -m pytest "$@"
echo "corral.accel.COMPILED = False (CORRAL_PURE=1)"
# The pure path too, the reference of the C one: sections 1-10 (the frame code, which is what
# differs; compression is zlib either way, and tests/conformance runs 12-13 in both modes).
CORRAL_PURE=1 bash scripts/autobahn.sh --quick --no-compression
CORRAL_PURE=1 .venv/bin/python -m pytest "$@"
# Every fuzz target (fuzz/README.md) for 10 seconds, compiled and pure side by side; a crash or
# a disagreement fails the run. `scripts/fuzz.sh` alone runs 1,000,000 inputs each.
bash scripts/fuzz.sh --smoke 10
