#!/usr/bin/env bash
# Rebuild corral's C extensions (corral._speedups, corral._hotpath, corral._http) when one is
# missing or older than its C sources: an editable install compiles them only when installing,
# and a stale module would be tested, fuzzed or measured instead of the code. Without a C
# compiler the install still succeeds, in pure mode (docs/speed.md).
#
#     bash scripts/build-ext.sh [python]      (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
stale=0
for name in _speedups _hotpath _http; do
    modules=(src/corral/"$name".*.so)
    module=${modules[0]}
    if [ ! -e "$module" ] || [ src/corral/"$name".c -nt "$module" ] \
            || [ src/corral/_frame.h -nt "$module" ]; then
        stale=1
    fi
done
if [ "$stale" = 1 ] && command -v cc >/dev/null; then
    "$PY" -m pip install --quiet --no-deps -e .
fi
