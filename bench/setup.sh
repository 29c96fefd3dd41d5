#!/usr/bin/env bash
# Prepare bench/run.py: a separate venv (bench/.venv) with the peer servers and corral itself,
# and the C load generator (bench/build/loadgen). Safe to run twice: what is there is kept.
#
#     bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv=bench/.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# Already-installed packages are left as they are (no upgrade): the versions actually measured
# are written into bench/RESULTS.md by run.py.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    websockets aiohttp picows uvloop redis starlette uvicorn httptools granian
# socketify (uWebSockets through CFFI) loads the system's libuv at import time.
if ! ldconfig -p 2>/dev/null | grep -q 'libuv\.so\.1'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        if ! apt-get install -y -q libuv1 >/dev/null 2>&1; then
            apt-get update -q >/dev/null 2>&1 || true
            apt-get install -y -q libuv1 >/dev/null \
                || echo "setup.sh: could not install libuv1; socketify will be skipped" >&2
        fi
    else
        echo "setup.sh: libuv1 missing (apt-get install libuv1); socketify will be skipped" >&2
    fi
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check socketify \
    || echo "setup.sh: socketify did not install; run.py will skip it" >&2
# corral itself, editable. Installing compiles corral._speedups into src/corral/, so it is
# done once only: later runs see the live sources anyway.
here=$(pwd)
if ! "$venv/bin/python" -c 'import corral, sys; sys.exit(not corral.__file__.startswith(sys.argv[1]))' \
        "$here/src/corral" 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e .
fi

mkdir -p bench/build
if command -v gcc >/dev/null; then
    if [ ! -x bench/build/loadgen ] || [ bench/loadgen.c -nt bench/build/loadgen ]; then
        gcc -O2 -Wall -o bench/build/loadgen bench/loadgen.c
    fi
    if [ ! -x bench/build/fanout ] || [ bench/fanout.c -nt bench/build/fanout ] \
            || [ bench/loadgen.c -nt bench/build/fanout ]; then
        gcc -O2 -Wall -o bench/build/fanout bench/fanout.c
    fi
    if [ -e bench/servers/c_echo.c ] && { [ ! -x bench/build/c_echo ] \
            || [ bench/servers/c_echo.c -nt bench/build/c_echo ]; }; then
        gcc -O2 -Wall -o bench/build/c_echo bench/servers/c_echo.c
    fi
else
    echo "setup.sh: gcc not found: bench/run.py needs bench/build/loadgen (fanout.py: fanout)" >&2
    exit 1
fi
"$venv/bin/python" - <<'PY'
import importlib.metadata as m
for name in ("corral", "websockets", "aiohttp", "picows", "socketify", "uvloop"):
    try:
        print(f"  {name} {m.version(name)}")
    except m.PackageNotFoundError:
        print(f"  {name}: not installed")
PY
