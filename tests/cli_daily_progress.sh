#!/usr/bin/env bash
# Issue 21, items 7 and 11: the progress line fits the terminal (80 and 200 columns, under
# script(1) for a pseudo-terminal; the width comes from $COLUMNS), shows the whole run's ETA and
# the evaluation phase, and piped output holds no progress at all; Ctrl-C (SIGINT) ends the
# progress line, says how to resume (or that nothing was kept and how to keep it) and exits 130.
source "$(dirname "$0")/harness.sh"
command -v script >/dev/null || { echo "cli_daily_progress: script(1) missing, skipped"; exit 77; }

train=(fit --model smallcnn --train-subset 3000 --threads 2)
# wait_rows FILE N: until FILE has N lines (at most 60 s)
wait_rows() {
    for _ in $(seq 1 600); do
        [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
# the progress segments of a terminal transcript: split at carriage returns, erase codes removed
segments() { sed 's/\x1b\[K//g' "$1" | tr '\r' '\n' | grep -E '^epoch [0-9]+/[0-9]+( \[|:)'; }

# --- piped: no carriage returns or escape codes
"$cli" "${train[@]}" --epochs 1 --out "$tmp/p.safetensors" | cat >"$tmp/piped.txt"
grep -q $'\r\|\x1b' "$tmp/piped.txt" && bad "piped output holds progress codes" || ok

# --- 80 and 200 columns
for cols in 80 200; do
    COLUMNS=$cols script -qfec "$cli ${train[*]} --epochs 2 --adv fgsm --eps 0.1 --val-split 0.1 --out $tmp/t$cols.safetensors" \
        /dev/null >"$tmp/tty$cols.txt" 2>&1
    segments "$tmp/tty$cols.txt" >"$tmp/seg$cols.txt"
    [ -s "$tmp/seg$cols.txt" ] && ok || bad "no progress line at $cols columns: $(head -c 300 "$tmp/tty$cols.txt")"
    wide=$(awk '{ if (length($0) > m) m = length($0) } END { print m + 0 }' "$tmp/seg$cols.txt")
    [ "$wide" -lt "$cols" ] && ok || bad "a progress line is $wide columns wide at $cols: $(awk -v c="$cols" 'length($0) >= c' "$tmp/seg$cols.txt" | head -2)"
    grep -q "ETA .* (run [0-9]" "$tmp/seg$cols.txt" && ok || bad "no whole-run ETA at $cols columns: $(head -2 "$tmp/seg$cols.txt")"
    grep -q "evaluating robust validation (PGD-10), validation, test" "$tmp/seg$cols.txt" && ok ||
        bad "no evaluation phase at $cols columns: $(cat "$tmp/seg$cols.txt")"
done
[ "$(awk '{ if (length($0) > m) m = length($0) } END { print m }' "$tmp/seg200.txt")" -gt 80 ] && ok ||
    bad "at 200 columns the progress line does not use the width"

# --- without $COLUMNS the terminal's own width (TIOCGWINSZ), here set to 60 with stty
env -u COLUMNS script -qfec "stty cols 60; $cli ${train[*]} --epochs 1 --out $tmp/t60.safetensors" /dev/null >"$tmp/tty60.txt" 2>&1
segments "$tmp/tty60.txt" >"$tmp/seg60.txt"
wide=$(awk '{ if (length($0) > m) m = length($0) } END { print m + 0 }' "$tmp/seg60.txt")
[ "$wide" -gt 0 ] && [ "$wide" -lt 60 ] && ok || bad "at stty cols 60 the progress line is $wide wide"

# --- Ctrl-C on a terminal, with --checkpoint-dir: the step finishes, its checkpoint is written,
# the line is ended, resume is explained, 130 (tests/cli_signals.sh checks the resumed bits)
COLUMNS=80 script -qfec "bash -c '$cli ${train[*]} --epochs 30 --checkpoint-dir $tmp/run & echo \$! >$tmp/pid; wait \$!; echo exit=\$?'" \
    /dev/null >"$tmp/int.txt" 2>&1 &
spid=$!
wait_rows "$tmp/run/metrics.csv" 2 && sleep 0.3 || bad "the run never finished an epoch"
kill -INT "$(cat "$tmp/pid")"
wait "$spid"
grep -q "exit=130" "$tmp/int.txt" && ok || bad "Ctrl-C: not exit 130: $(tail -c 300 "$tmp/int.txt")"
last=$(tr '\r' '\n' <"$tmp/int.txt" | sed 's/\x1b\[K//g' | grep -v '^$' | tail -2 | head -1)
[[ "$last" == "advtrain fit: stopped by Ctrl-C "*"the checkpoint $tmp/run/last.safetensors holds it. Resume with: advtrain fit --resume $tmp/run" ]] && ok ||
    bad "Ctrl-C message (on a line of its own): '$last'"
expect 0 "resuming $tmp/run (after epoch|in epoch)" -- "$cli" fit --resume "$tmp/run" --epochs 3 --quiet

# --- Ctrl-C without --checkpoint-dir: nothing kept, and how to keep it next time
"$cli" "${train[@]}" --epochs 30 --out "$tmp/n.safetensors" >"$tmp/n.out" 2>"$tmp/n.err" &
pid=$!
for _ in $(seq 1 600); do grep -q "^epoch   1/" "$tmp/n.out" && break; sleep 0.1; done
kill -INT "$pid"
wait "$pid"
[ $? -eq 130 ] && ok || bad "Ctrl-C without a checkpoint: not exit 130"
grep -q "interrupted; [0-9]* finished epochs\? lost: without --checkpoint-dir" "$tmp/n.err" &&
    grep -q "add --checkpoint-dir DIR .* advtrain fit --resume DIR" "$tmp/n.err" && ok ||
    bad "Ctrl-C without a checkpoint: $(cat "$tmp/n.err")"

finish cli_daily_progress
