# Shared by the tests/cli_*.sh scripts (sourced, not a test itself): a temporary folder removed
# on exit, pass/fail counters, and `expect`.
set -u
cli="${ADVTRAIN_CLI:?set ADVTRAIN_CLI to the advtrain binary}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0

ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }

# expect CODE PATTERN -- command...: exit code and a stderr (or stdout) line matching PATTERN.
# The command's output stays in $tmp/out and $tmp/err for further checks.
expect() {
    local code="$1" pattern="$2"
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    if [ "$got" -ne "$code" ]; then
        bad "$* exited $got, expected $code; stderr: $(head -c 400 "$tmp/err")"
    elif [ "$got" -ge 128 ]; then
        bad "$* crashed (signal $((got - 128)))"
    elif ! grep -qE -- "$pattern" "$tmp/err" "$tmp/out"; then
        bad "$*: output does not match /$pattern/: $(head -c 400 "$tmp/err") $(head -c 400 "$tmp/out")"
    else
        ok
    fi
}

# finish NAME: the closing line, and the exit status.
finish() {
    echo "$1: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
