#!/usr/bin/env bash
# Start corral's demo server on the embedded defaults: the echo server on ws://127.0.0.1:9001/.
# Extra arguments go to the server (e.g. --port 8080). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m corral.examples.echo --host "${HOST:-127.0.0.1}" --port "${PORT:-9001}" "$@"
