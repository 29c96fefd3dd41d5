#!/usr/bin/env bash
# Install the system packages the test suite uses on Debian: chromium, for the browser interop
# test (tests/interop/test_browser.py). Called by scripts/test.sh; safe to run again (does
# nothing when chromium is there). Without root, apt-get or a network it only warns: that one
# test is then skipped, the rest of the suite still runs.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the browser test (apt-get, about a minute)..." >&2
    if apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
        exit 0
    fi
    echo "warning: installing chromium failed; the browser test will be skipped" >&2
else
    echo "note: /usr/bin/chromium is missing and cannot be installed here (needs root and" \
        "apt-get); the browser test will be skipped" >&2
fi
