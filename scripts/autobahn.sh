#!/usr/bin/env bash
# Run the real Autobahn|Testsuite (wstest 0.8.2) against corral, both ways, on 127.0.0.1:
#   server side: wstest -m fuzzingclient against `corral run corral.examples.echo:app`;
#   client side: corral.examples.fuzzclient against wstest -m fuzzingserver.
#
#   scripts/autobahn.sh [--full]  every case (517) both ways; writes compliance/RESULTS.md.
#   scripts/autobahn.sh --quick   sections 1-10, 12.1 and 13.1 both ways (scripts/test.sh runs
#                                 it); leaves compliance/RESULTS.md alone.
#   ... --asgi                    the server side only, against a Starlette WebSocket echo
#                                 served by corral (corral.examples.starlette_echo:app);
#                                 quick: sections 1-10 and 12.1.
#   ... --no-compression          sections 1-10 only (no 12.*, 13.*).
# Either exits 1 when a side leaves no report (a crash, a hang) or any case is FAILED,
# NON-STRICT or UNIMPLEMENTED, or closes badly.
#
# wstest needs Python 2.7: $AUTOBAHN_PYTHON, else python2.7 on PATH, else pyenv's 2.7.x. It is
# installed once into .autobahn/ (gitignored) with the pins of compliance/wstest-requirements.txt;
# a second run installs nothing. Without Python 2.7, or when the install fails, the run is
# skipped with a warning, but is an error when CORRAL_CI=1 (CI must not pass without it).
# Reports go to test-artifacts/autobahn/{server,client}/ (gitignored). Each side is bounded by
# $AUTOBAHN_TIMEOUT seconds (quick: 600, full: 1800); what this starts is stopped on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
asgi=0
plain=0
app=corral.examples.echo:app
sides=both
for argument in "$@"; do
    case "$argument" in
        --full) ;;
        --quick) mode=quick ;;
        --asgi) app=corral.examples.starlette_echo:app sides=server asgi=1 ;;
        --no-compression) plain=1 ;;
        -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--full | --quick] [--asgi] [--no-compression]" >&2; exit 2 ;;
    esac
done
if [ "$mode" = quick ]; then
    side_timeout=${AUTOBAHN_TIMEOUT:-600}
else
    side_timeout=${AUTOBAHN_TIMEOUT:-1800}
fi

home=.autobahn
site=$home/site
wstest=$home/bin/wstest
requirements=compliance/wstest-requirements.txt
artifacts=test-artifacts/autobahn
if [ "$asgi" = 1 ]; then
    artifacts=test-artifacts/autobahn-asgi
fi
report=scripts/autobahn_report.py
venv_python=.venv/bin/python

# Missing Python 2.7 or wstest: an error in CI, a loud skip elsewhere.
unavailable() {
    if [ "${CORRAL_CI:-}" = 1 ]; then
        echo "autobahn: error: $1" >&2
        echo "autobahn: CORRAL_CI=1: the Autobahn|Testsuite must run in CI." >&2
        exit 1
    fi
    {
        echo "************************************************************************"
        echo "autobahn: SKIPPED: the Autobahn|Testsuite did not run."
        echo "autobahn: $1"
        echo "autobahn: corral's conformance against wstest is NOT checked by this run."
        echo "autobahn: set AUTOBAHN_PYTHON to a Python 2.7 interpreter to run it"
        echo "autobahn: (CORRAL_CI=1 makes this an error)."
        echo "************************************************************************"
    } >&2
    exit 0
}

# A Python 2.7 that runs: pyenv's shims are on PATH even when 2.7 is not the selected version.
is_python27() {
    [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1
}

find_python27() {
    local candidate
    if [ -n "${AUTOBAHN_PYTHON:-}" ]; then
        is_python27 "$AUTOBAHN_PYTHON" && echo "$AUTOBAHN_PYTHON"
        return 0  # given explicitly: no other is tried
    fi
    if candidate=$(command -v python2.7) && is_python27 "$candidate"; then
        echo "$candidate"
        return 0
    fi
    if command -v pyenv >/dev/null 2>&1; then
        for candidate in "$(pyenv root)"/versions/2.7*/bin/python2.7; do
            if is_python27 "$candidate"; then
                echo "$candidate"
                return 0
            fi
        done
    fi
}

install_wstest() {
    local py2=$1 stamp=$home/installed want
    want="$py2 $(cksum <"$requirements")"
    if [ -x "$wstest" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    echo "autobahn: installing wstest 0.8.2 for $py2 into $home/ (about a minute)..." >&2
    mkdir -p "$home/bin"
    rm -rf "$site.new" "$stamp"
    # --target, not a virtualenv: 2.7 has no venv module. Its .pth files (zope's namespace
    # package) are read by site.addsitedir in the launcher below, not by PYTHONPATH.
    if ! "$py2" -m pip install --disable-pip-version-check --no-warn-script-location \
            --target "$site.new" -r "$requirements" >"$home/install.log" 2>&1; then
        tail -n 20 "$home/install.log" >&2
        rm -rf "$site.new"
        unavailable "installing wstest failed with $py2 (the log: $home/install.log)"
    fi
    rm -rf "$site"
    mv "$site.new" "$site"
    cat >"$wstest" <<EOF
#!/bin/sh
# wstest from ../site (written by scripts/autobahn.sh).
site=\$(cd "\$(dirname "\$0")/../site" && pwd) || exit 1
exec "$py2" -W ignore -c "import site, sys; site.addsitedir(sys.argv.pop(1)); \\
sys.argv[0] = 'wstest'; from autobahntestsuite.wstest import run; run()" "\$site" "\$@"
EOF
    chmod +x "$wstest"
    if ! "$wstest" --autobahnversion >"$home/version.log" 2>&1; then
        cat "$home/version.log" >&2
        unavailable "the installed wstest does not start (see above)"
    fi
    echo "$want" >"$stamp"
}

py2=$(find_python27)
if [ -z "$py2" ]; then
    if [ -n "${AUTOBAHN_PYTHON:-}" ]; then
        unavailable "AUTOBAHN_PYTHON=$AUTOBAHN_PYTHON is not a working Python 2.7."
    fi
    unavailable "no Python 2.7 found (AUTOBAHN_PYTHON, python2.7 on PATH, pyenv's 2.7.x)."
fi
install_wstest "$py2"

# -- processes: everything started here is stopped by PID on any exit ---------------------------

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        # A graceful stop has 10 s, then it is killed.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Start a command in the background (output to a log), remembered for cleanup.
start() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    pids+=($!)
}

# Run a command bounded by $side_timeout. It runs in the background and is waited for, so
# that Ctrl-C reaches the trap at once (timeout puts its child in a process group of its own).
bounded() {
    local log=$1 status=0
    shift
    timeout --kill-after=10 "$side_timeout" "$@" >"$log" 2>&1 &
    pids+=($!)
    wait "$!" || status=$?
    unset 'pids[-1]'  # reaped: its PID is no longer ours to signal
    if [ "$status" = 124 ] || [ "$status" = 137 ]; then
        echo "autobahn: timed out after ${side_timeout}s: $*" >&2
    fi
    return "$status"
}

free_port() {
    "$venv_python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Wait until PID listens on PORT (30 s at most); false if it died or never did.
wait_listening() {
    local pid=$1 port=$2
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# The command as recorded in the reports: the port, new on every run, shown as PORT.
show_command() {
    local port=$1 word words=()
    shift
    for word in "$@"; do
        case "$word" in
            "$port") words+=(PORT) ;;
            "ws://127.0.0.1:$port") words+=("ws://127.0.0.1:PORT") ;;
            *) words+=("$word") ;;
        esac
    done
    echo "${words[*]}"
}

cases=$mode
if [ "$plain" = 1 ]; then
    cases=core  # sections 1-10 (autobahn_report.py)
elif [ "$asgi" = 1 ] && [ "$mode" = quick ]; then
    cases=asgi  # sections 1-10 and 12.1
fi

spec() {  # spec MODE URL DIR: the spec file for wstest, in DIR
    "$venv_python" "$report" spec "$1" --url "$2" --outdir "$3/reports" --cases "$cases" \
        >"$3/spec.json"
    echo "$3/spec.json"
}

# -- server side: wstest's fuzzing client against `corral run` ---------------------------------

run_server_side() {
    local dir=$artifacts/server port start=$SECONDS
    rm -rf "$dir" && mkdir -p "$dir"
    port=$(free_port)
    local server=(.venv/bin/corral run "$app" --host 127.0.0.1 --port "$port"
                  --max-message-size 16777216 --compression balanced --log-level warning)
    show_command "$port" "${server[@]}" >"$dir/command.txt"
    start "$dir/corral.log" "${server[@]}"
    if ! wait_listening "${pids[-1]}" "$port"; then
        echo "autobahn: corral did not start listening on $port:" >&2
        tail -n 20 "$dir/corral.log" >&2
        return 0  # no report: the summary says so
    fi
    echo "autobahn server: wstest -m fuzzingclient against ${server[*]}" >&2
    bounded "$dir/wstest.log" "$wstest" -m fuzzingclient -s "$(spec fuzzingclient \
        "ws://127.0.0.1:$port" "$dir")" || tail -n 20 "$dir/wstest.log" >&2
    cleanup
    echo $((SECONDS - start)) >"$dir/seconds.txt"
}

# -- client side: corral's fuzz client against wstest's fuzzing server --------------------------

run_client_side() {
    local dir=$artifacts/client port start=$SECONDS
    rm -rf "$dir" && mkdir -p "$dir"
    port=$(free_port)
    local client=("$venv_python" -m corral.examples.fuzzclient "ws://127.0.0.1:$port" corral)
    show_command "$port" "${client[@]}" >"$dir/command.txt"
    # -u 0: no web server for the reports (it would take port 8080).
    start "$dir/wstest.log" "$wstest" -m fuzzingserver -u 0 \
        -s "$(spec fuzzingserver "ws://127.0.0.1:$port" "$dir")"
    if ! wait_listening "${pids[-1]}" "$port"; then
        echo "autobahn: wstest's fuzzing server did not start listening on $port:" >&2
        tail -n 20 "$dir/wstest.log" >&2
        return 0
    fi
    echo "autobahn client: ${client[*]} against wstest -m fuzzingserver" >&2
    bounded "$dir/fuzzclient.log" "${client[@]}" || tail -n 20 "$dir/fuzzclient.log" >&2
    cleanup
    echo $((SECONDS - start)) >"$dir/seconds.txt"
}

run_server_side
summary=("$venv_python" "$report" summary "server=$artifacts/server")
if [ "$sides" = both ]; then
    run_client_side
    summary+=("client=$artifacts/client")
fi
if [ "$mode" = quick ] || [ "$sides" != both ] || [ "$plain" = 1 ]; then
    "${summary[@]}" --strict
else
    version="$("$wstest" --autobahnversion 2>/dev/null | paste -sd, - | sed 's/,/, /g'),\
 Python $("$py2" -c 'import platform; print(platform.python_version())')"
    "${summary[@]}" --strict --results compliance/RESULTS.md --wstest "$version"
fi
