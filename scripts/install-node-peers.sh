#!/usr/bin/env bash
# Install the Node.js peers of the interop tests (the `ws` npm package, pinned in
# tests/interop/node/package.json) into tests/interop/node/node_modules. Called by
# scripts/test.sh; safe to run again (npm installs only what is missing). Without node or
# npm, or without the registry, it only warns: tests/interop/test_node_ws.py then skips.
set -euo pipefail
cd "$(dirname "$0")/../tests/interop/node"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "note: node/npm missing: the Node ws interop tests will be skipped" >&2
    exit 0
fi
if [ -f node_modules/ws/package.json ] && [ node_modules/.package-lock.json -nt package.json ]; then
    exit 0
fi
npm install --silent --no-audit --no-fund --no-package-lock >/dev/null \
    || echo "warning: npm install of the ws package failed; its interop tests will be skipped" >&2
