#!/usr/bin/env bash
# Start `corral demo` on the embedded defaults (in-memory broker): the chat demo, page and
# WebSocket on http://127.0.0.1:8000/. Extra arguments go to the server (e.g. --port 8080,
# --history 100, --workers 2 --broker redis://127.0.0.1:6379/0). Stop it with Ctrl-C.
# The echo server is still `.venv/bin/python -m corral.examples.echo` (ws://127.0.0.1:9001/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/corral demo --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
