#!/usr/bin/env bash
# Build the documentation site (mkdocs.yml) into site/, or the directory given as
# `--site-dir DIR`, strictly: a broken link, anchor, API reference or included file fails
# the build (scripts/test.sh runs it). `scripts/docs.sh serve` serves it instead on
# http://127.0.0.1:8001/, rebuilding pages as they change (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
# mkdocs and its plugins are in the test extra: scripts/bootstrap.sh installs them (run only
# when they are missing, so that building the docs does not rebuild corral's C extensions).
if ! .venv/bin/python -c 'import mkdocs, material, mkdocstrings_handlers.python' 2>/dev/null; then
    bash scripts/bootstrap.sh
fi
export NO_MKDOCS_2_WARNING=1  # mkdocs-material's notice about its future, on every build
if [ "${1:-}" = serve ]; then
    shift
    exec .venv/bin/python -m mkdocs serve --strict --dev-addr 127.0.0.1:8001 "$@"
fi
site_dir=site
if [ "${1:-}" = --site-dir ] && [ $# -ge 2 ]; then
    site_dir=$2
    shift 2
fi
exec .venv/bin/python -m mkdocs build --strict --site-dir "$site_dir" "$@"
