#!/usr/bin/env bash
# Fuzzing (docs/reliability.md): builds the libFuzzer targets of tests/fuzz with clang into
# build-fuzz/ (the library under ASan + UBSan) and runs each for SECONDS (default 30), starting
# from a scratch copy of its committed seed corpus tests/fuzz/corpus/TARGET/.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]   targets: idx cifar10 safetensors model qmodel spec
#                                                config checkpoint (default: all)
#   bash scripts/fuzz.sh --seeds                 rewrites the seeds (tests/fuzz/make_corpus.c)
#
# A crash, leak, sanitizer report, timeout or out-of-memory is a bug: its reproducer is copied
# into tests/fuzz/corpus/TARGET/ as a regression file (every build then replays it: ctest's
# fuzz_replay_TARGET) and the script exits 1. Per target it prints the executions and the
# coverage of libFuzzer's final stats (cov: edges, ft: features).
set -euo pipefail
cd "$(dirname "$0")/.."
all_targets=(idx cifar10 safetensors model qmodel spec config checkpoint)

build() {
    CC=clang cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
        -DADVTRAIN_FUZZ=ON >/dev/null
    cmake --build build-fuzz -j"$(nproc)" --target fuzz >/dev/null
}

if [ "${1:-}" = "--seeds" ]; then
    build
    ./build-fuzz/tests/fuzz/fuzz_make_corpus tests/fuzz/corpus
    exit 0
fi
seconds="${1:-30}"
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
case "$seconds" in '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;; esac
for t in "${targets[@]}"; do
    [ -d "tests/fuzz/corpus/$t" ] || { echo "fuzz.sh: unknown target '$t' (${all_targets[*]})" >&2; exit 2; }
done

echo "fuzz.sh: building build-fuzz (clang, libFuzzer, ASan + UBSan)"
build
scratch_base=/dev/shm
[ -d "$scratch_base" ] && [ -w "$scratch_base" ] || scratch_base="${TMPDIR:-/tmp}"
work="$(mktemp -d "$scratch_base/advtrain-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Options of one target: its dictionary, a larger input for CIFAR-10 (records are 3073 bytes),
# and for the config reader no stderr (it prints every error it finds, by design).
target_options() {
    local t="$1"
    [ -f "tests/fuzz/dict/$t.dict" ] && echo "-dict=tests/fuzz/dict/$t.dict"
    [ "$t" = cifar10 ] && echo "-max_len=16384"
    [ "$t" = config ] && echo "-close_fd_mask=2"
    return 0
}

# Copies every reproducer libFuzzer left into the committed corpus; returns 1 if there was one.
keep_reproducers() {
    local t="$1" found=0 f kind
    for f in "$work/$t/artifacts"/*; do
        [ -f "$f" ] || continue
        kind="$(basename "$f" | cut -d- -f1)"
        [ "$kind" = slow ] && continue # slow-unit-*: slow on a busy machine, not a failure
        local dest="tests/fuzz/corpus/$t/regress-$kind-$(sha1sum "$f" | cut -c1-12)"
        cp "$f" "$dest"
        echo "fuzz.sh: $t: $kind reproducer kept as $dest (reproduce: ./build-fuzz/tests/fuzz/fuzz_$t $dest)"
        found=1
    done
    return $found
}

failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t/corpus" "$work/$t/artifacts" "$work/$t/tmp"
    cp "tests/fuzz/corpus/$t"/* "$work/$t/corpus/"
    log="$work/$t/log"
    echo "fuzz.sh: $t for ${seconds}s"
    rc=0
    # shellcheck disable=SC2046
    ADVTRAIN_FUZZ_TMP="$work/$t/tmp" "./build-fuzz/tests/fuzz/fuzz_$t" "$work/$t/corpus" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=30 \
        -artifact_prefix="$work/$t/artifacts/" -print_final_stats=1 $(target_options "$t") \
        >"$log" 2>&1 || rc=$?
    execs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)"
    last="$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)"
    cov="$(echo "$last" | grep -o 'cov: [0-9]*' | awk '{print $2}')"
    ft="$(echo "$last" | grep -o 'ft: [0-9]*' | awk '{print $2}')"
    result=ok
    if ! keep_reproducers "$t" || [ "$rc" -ne 0 ]; then
        result="FAILED (exit $rc)"
        failed=1
        echo "fuzz.sh: $t failed; the end of libFuzzer's log:"
        tail -40 "$log" | sed 's/^/    /'
    fi
    summary+=("$(printf '%-12s %6ss %10s %7s %7s  %s' "$t" "$seconds" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$result")")
done

printf '\n%-12s %7s %10s %7s %7s  %s\n' target time execs cov ft result
printf '%s\n' "${summary[@]}"
exit $failed
