#!/usr/bin/env bash
# Coverage-guided fuzzing of corral's protocol core with atheris (libFuzzer); see fuzz/README.md.
#
#   scripts/fuzz.sh                      every target, 1,000,000 inputs each (a few minutes each)
#   scripts/fuzz.sh --runs N [TARGET..]  N inputs per target; TARGET among: frames connection
#                                        session http extensions
#   scripts/fuzz.sh --smoke SECONDS      every target for SECONDS each (CI: --smoke 10)
#   scripts/fuzz.sh --sanitize ...       the targets that reach C code (frames, connection,
#                                        session, http) against corral._speedups,
#                                        corral._hotpath and corral._http built with gcc's
#                                        ASan+UBSan, 250,000 inputs each unless --runs (ASan
#                                        makes the interpreter about 5 times slower)
#   scripts/fuzz.sh ... -- FLAGS         extra libFuzzer flags (-seed=1, -only_ascii=1, ...)
#
# Prints per target the inputs run, the coverage reached (libFuzzer's cov: and ft:), the
# time taken and the crashes; exits non-zero on any crash or disagreement, whose input is in
# fuzz/artifacts/TARGET/ (replay it: .venv/bin/python fuzz/fuzz_TARGET.py FILE). Targets run
# one after the other: each uses one core. Seeds come from fuzz/seeds.py; what the fuzzer
# finds accumulates in fuzz/corpus/ (not in git), so later runs start further on.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=""
smoke=""
sanitize=0
targets=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --smoke) smoke="$2"; shift 2 ;;
        --sanitize) sanitize=1; shift ;;
        --) shift; extra=("$@"); break ;;
        frames|connection|session|http|extensions) targets+=("$1"); shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "fuzz.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$runs" ]; then
    runs=1000000
    [ "$sanitize" = 1 ] && runs=250000
fi
if [ ${#targets[@]} -eq 0 ]; then
    if [ "$sanitize" = 1 ]; then
        targets=(frames connection session http)
    else
        targets=(frames connection session http extensions)
    fi
fi

# .venv with corral and its compiled module, then the fuzz extra (atheris) if missing.
if [ ! -x .venv/bin/python ]; then
    bash scripts/bootstrap.sh
fi
PY=.venv/bin/python
if ! "$PY" -c "import atheris" 2>/dev/null; then
    mapfile -t requirements < <("$PY" -c 'import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["fuzz"]))')
    "$PY" -m pip install --quiet "${requirements[@]}"
fi
bash scripts/build-ext.sh "$PY"  # a stale compiled module would be fuzzed

"$PY" fuzz/seeds.py fuzz/seeds >/dev/null

env_args=()
if [ "$sanitize" = 1 ]; then
    # gcc's AddressSanitizer and UndefinedBehaviorSanitizer, in a build of our own: the
    # .venv's module stays as it is. libasan must come first in the process (LD_PRELOAD),
    # after fuzz/coverage_forward.c, which gives atheris its coverage back (see there).
    build=fuzz/sanitize-build
    mkdir -p "$build"
    ext=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
    include=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("include"))')
    for name in _speedups _hotpath _http; do
        module="$build/$name$ext"
        if [ ! -e "$module" ] || [ src/corral/$name.c -nt "$module" ] \
                || [ src/corral/_frame.h -nt "$module" ]; then
            gcc -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=all -Wall -I"$include" src/corral/$name.c -o "$module"
        fi
    done
    if [ ! -e "$build/coverage_forward.so" ] \
            || [ fuzz/coverage_forward.c -nt "$build/coverage_forward.so" ]; then
        gcc -shared -fPIC -O2 -Wall -Wextra fuzz/coverage_forward.c \
            -o "$build/coverage_forward.so" -ldl
    fi
    env_args=(
        "CORRAL_FUZZ_SPEEDUPS=$PWD/$build/_speedups$ext"
        "CORRAL_FUZZ_HOTPATH=$PWD/$build/_hotpath$ext"
        "CORRAL_FUZZ_HTTP=$PWD/$build/_http$ext"
        "LD_PRELOAD=$PWD/$build/coverage_forward.so:$(gcc -print-file-name=libasan.so)"
        "ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0:halt_on_error=1:abort_on_error=1"
        "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1"
        "PYTHONMALLOC=malloc"  # every Python object in ASan's heap, with redzones
    )
fi

declare -A max_len=([frames]=8192 [connection]=8192 [session]=8192 [http]=4096
                    [extensions]=4096)
failed=0
total_start=$SECONDS
printf '%-16s %10s %8s %8s %8s %8s  %s\n' target inputs cov ft corpus seconds result
for target in "${targets[@]}"; do
    label=$target
    [ "$sanitize" = 1 ] && label="$target+asan"
    artifacts="fuzz/artifacts/$label"
    corpus="fuzz/corpus/$target"
    log="fuzz/artifacts/$label.log"
    mkdir -p "$artifacts" "$corpus"
    flags=(
        "-max_len=${max_len[$target]}" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1
        "-artifact_prefix=$artifacts/"
    )
    if [ -n "$smoke" ]; then
        flags+=("-max_total_time=$smoke")
    else
        flags+=("-runs=$runs")
    fi
    [ -e "fuzz/seeds/$target.dict" ] && flags+=("-dict=fuzz/seeds/$target.dict")
    stamp=$(mktemp)
    start=$SECONDS
    status=0
    env "${env_args[@]}" "$PY" "fuzz/fuzz_$target.py" "${flags[@]}" "${extra[@]}" \
        "$corpus" "fuzz/seeds/$target" >"$log" 2>&1 || status=$?
    took=$((SECONDS - start))
    inputs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    stats=$(grep -E '^#[0-9]+' "$log" | grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' | tail -1)
    read -r _ cov _ ft _ corp <<<"${stats:-cov: - ft: - corp: -}"
    found=$(find "$artifacts" -type f -newer "$stamp" | head -3 | tr '\n' ' ')
    rm -f "$stamp"
    result="ok"
    if [ "$sanitize" = 1 ] && { ! grep -q "corral._speedups from" "$log" \
            || { [ "$target" = session ] && ! grep -q "corral._hotpath from" "$log"; } \
            || { [ "$target" = http ] && ! grep -q "corral._http from" "$log"; }; }; then
        result="FAILED: the sanitizer build was not loaded"
    fi
    if [ "$status" -ne 0 ] || [ -n "$found" ]; then
        result="FAILED (exit $status): ${found:-no input saved}"
        # the input that failed, and why
        grep -E 'Disagreement|Error|ERROR|Exception' "$log" | head -5 | sed 's/^/    /' >&2 || true
        echo "    log: $log" >&2
    fi
    [ "$result" = ok ] || failed=1
    printf '%-16s %10s %8s %8s %8s %8s  %s\n' "$label" "${inputs:-?}" "$cov" "$ft" "$corp" \
        "$took" "$result"
done
echo "total: $((SECONDS - total_start)) s"
exit "$failed"
