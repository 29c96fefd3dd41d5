#!/usr/bin/env bash
# Install the Debian packages the test suite drives as real peers: chromium (browser tests),
# redis-server (the Redis broker tests), nginx and haproxy (the reverse proxies in the
# multi-node and client-address tests).
# Called by scripts/test.sh; safe to run again (installs only what is missing). Without root,
# apt-get or a network it only warns: the tests needing a missing program are then skipped,
# the rest of the suite still runs.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/sbin/haproxy ] || missing+=(haproxy)
if [ ${#missing[@]} = 0 ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} for the interop tests (apt-get, about a minute)..." >&2
    # The packages' own services must not start (policy-rc.d says no): the tests start
    # their own, on random ports.
    policy=/usr/sbin/policy-rc.d
    ours=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1
    fi
    status=0
    apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || status=$?
    [ "$ours" = 1 ] && rm -f "$policy"
    if [ "$status" = 0 ]; then
        exit 0
    fi
    echo "warning: installing ${missing[*]} failed; the tests needing them will be skipped" >&2
else
    echo "note: ${missing[*]} missing and cannot be installed here (needs root and apt-get);" \
        "the tests needing them will be skipped" >&2
fi
