#!/usr/bin/env bash
# advtrain fit --checkpoint-dir / --resume / --log / --config: a run killed with SIGKILL and
# resumed ends with bit-identical weights to an uninterrupted run; the killed run's checkpoint
# still loads; the CSV holds one row per epoch (the same numbers as the uninterrupted run's);
# config files set flags, the command line overrides them, and bad files or flags fail clearly.
source "$(dirname "$0")/harness.sh"

# The data section of a safetensors file (everything after the JSON header): the tensors.
tensors() {
    local n
    n=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
    tail -c +$((9 + n)) "$1" | cksum
}

# Dropout, augmentation and L1 exercise every random stream and the penalty columns.
run=(fit --model smallcnn --train-subset 6000 --val-split 0.1 --epochs 5 --dropout 0.2
     --augment flip --l1 1e-5 --threads 2 --quiet)

"$cli" "${run[@]}" --checkpoint-dir "$tmp/whole" --out "$tmp/whole.safetensors" >/dev/null ||
    bad "the uninterrupted run failed"

# --- interrupted: SIGKILL once epoch 1 is logged, then resume
"$cli" "${run[@]}" --checkpoint-dir "$tmp/part" --out "$tmp/part.safetensors" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 3000); do
    [ -f "$tmp/part/metrics.csv" ] && [ "$(wc -l <"$tmp/part/metrics.csv")" -ge 2 ] && break
    sleep 0.01
done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rows=$(($(wc -l <"$tmp/part/metrics.csv") - 1))
if [ -f "$tmp/part/last.safetensors" ]; then
    expect 0 "accuracy" -- "$cli" eval "$tmp/part/last.safetensors" --samples 200
fi
[ "$rows" -lt 5 ] && ok || bad "the run ended before it could be killed ($rows rows): nothing interrupted"

expect 0 "resuming .*part after epoch|no checkpoint in" -- "$cli" fit --resume "$tmp/part" --quiet
[ "$(tensors "$tmp/whole/last.safetensors")" = "$(tensors "$tmp/part/last.safetensors")" ] && ok ||
    bad "resumed last.safetensors differs from the uninterrupted run's"
[ "$(tensors "$tmp/whole.safetensors")" = "$(tensors "$tmp/part.safetensors")" ] && ok ||
    bad "resumed final model differs from the uninterrupted run's"
[ "$(tensors "$tmp/whole/best.safetensors")" = "$(tensors "$tmp/part/best.safetensors")" ] && ok ||
    bad "resumed best.safetensors differs from the uninterrupted run's"

# --- the CSV: header, epochs 1..5 once each, the same numbers (all but the seconds column)
head -1 "$tmp/part/metrics.csv" | grep -q '^epoch,lr,train_loss,train_acc,val_loss,val_acc,test_acc,eps,adv_train_acc,robust_val_acc,guard_acc,penalty,l1_penalty,l2_penalty,seconds,skipped_batches$' &&
    ok || bad "metrics.csv header: $(head -1 "$tmp/part/metrics.csv")"
[ "$(cut -d, -f1 "$tmp/part/metrics.csv" | tail -n +2 | tr '\n' ' ')" = "1 2 3 4 5 " ] && ok ||
    bad "metrics.csv epochs: $(cut -d, -f1 "$tmp/part/metrics.csv" | tr '\n' ' ')"
[ "$(cut -d, -f1-14 "$tmp/whole/metrics.csv")" = "$(cut -d, -f1-14 "$tmp/part/metrics.csv")" ] && ok ||
    bad "resumed metrics differ from the uninterrupted run's"
awk -F, 'NR > 1 && ($2 != 0.05 || $3 <= 0 || $4 < 0 || $4 > 1 || $6 < 0 || $6 > 1 || $12 <= 0 || $13 <= 0 || $14 != "" || $15 <= 0 || $16 != 0) { bad = 1 } END { exit bad }' \
    "$tmp/part/metrics.csv" && ok || bad "implausible metrics.csv rows: $(cat "$tmp/part/metrics.csv")"

# --- resuming a finished run changes nothing (not even a separate --log: tests/cli_daily_rundir.sh)
expect 0 "the run is complete" -- "$cli" fit --resume "$tmp/whole" --log "$tmp/extra.csv"
[ ! -e "$tmp/extra.csv" ] && ok || bad "a finished run wrote a log"

# --- config files: values from the file, the command line wins, effective config written
cat >"$tmp/run.ini" <<'EOF'
; a comment
[fit]
model = mlp
epochs = 3
lr = 0.02
train-subset = 500
nesterov = true
EOF
expect 0 '"epochs":1' -- "$cli" fit --config "$tmp/run.ini" --epochs 1 --json --checkpoint-dir "$tmp/cfg" --out "$tmp/cfg.safetensors"
grep -q '"lr":0.02' "$tmp/out" && grep -q '"model":"mlp"' "$tmp/out" && grep -q '"nesterov":true' "$tmp/out" &&
    ok || bad "config values not applied: $(head -c 600 "$tmp/out")"
grep -qx 'epochs = 1' "$tmp/cfg/config.ini" && grep -qx 'lr = 0.02' "$tmp/cfg/config.ini" &&
    grep -qx 'model = mlp' "$tmp/cfg/config.ini" && ok || bad "effective config: $(cat "$tmp/cfg/config.ini")"
# the effective config reproduces the run (in a new directory, as its rerun hint says: the
# directory itself holds that run)
expect 0 '"epochs":1' -- "$cli" fit --config "$tmp/cfg/config.ini" --checkpoint-dir "$tmp/cfg-rerun" --json --out "$tmp/cfg2.safetensors"
[ "$(tensors "$tmp/cfg.safetensors")" = "$(tensors "$tmp/cfg2.safetensors")" ] && ok ||
    bad "rerunning the effective config gave other weights"

# a setting longer than libinih's 200-byte line, written without a blank after '=' (it was read
# as empty: the reader cut the line after '=' in place, through the value's first byte)
long="$tmp/$(printf 'd%.0s' {1..120})/$(printf 'm%.0s' {1..120}).safetensors"
mkdir -p "${long%/*}"
printf '[fit]\nmodel = mlp\nepochs = 1\ntrain-subset = 200\nout=%s\n' "$long" >"$tmp/long.ini"
expect 0 "saved" -- "$cli" fit --config "$tmp/long.ini" --quiet
[ -f "$long" ] && ok || bad "the long out= of a config file was not used: $(cat "$tmp/out")"

printf '[fit]\nepochs = 2\nlearning-rate = 0.1\n' >"$tmp/unknown.ini"
expect 2 "unknown.ini line 3: 'learning-rate' is not a setting" -- "$cli" fit --config "$tmp/unknown.ini"
printf '[fit]\nepochs = many\n' >"$tmp/badvalue.ini"
expect 2 "badvalue.ini line 2" -- "$cli" fit --config "$tmp/badvalue.ini"
printf '[fit]\nnesterov = maybe\n' >"$tmp/badflag.ini"
expect 2 "nesterov = maybe: use true or false" -- "$cli" fit --config "$tmp/badflag.ini"
printf '[eval]\nepochs = 2\n' >"$tmp/section.ini"
expect 2 "section \[eval\]" -- "$cli" fit --config "$tmp/section.ini"
printf 'epochs 2\n' >"$tmp/syntax.ini"
expect 2 "syntax.ini line 1" -- "$cli" fit --config "$tmp/syntax.ini"
expect 2 "cannot open config file $tmp/none.ini" -- "$cli" fit --config "$tmp/none.ini"
expect 2 "cannot open config file $tmp/nodir/config.ini" -- "$cli" fit --resume "$tmp/nodir"
expect 2 "give no --config" -- "$cli" fit --resume "$tmp/part" --config "$tmp/run.ini"
expect 2 "names another" -- "$cli" fit --resume "$tmp/part" --checkpoint-dir "$tmp/whole"
# a resume with other settings than the checkpoint's is refused
expect 2 "batch size 128, this run has 64" -- "$cli" fit --resume "$tmp/part" --batch 64 --epochs 7
touch "$tmp/plainfile"
expect 1 "--checkpoint-dir $tmp/plainfile: exists and is not a directory" -- "$cli" fit --model mlp --train-subset 100 --epochs 1 --checkpoint-dir "$tmp/plainfile" --out "$tmp/x.safetensors"
expect 1 "--log $tmp/plainfile/m.csv" -- "$cli" fit --model mlp --train-subset 100 --epochs 1 --log "$tmp/plainfile/m.csv" --out "$tmp/x.safetensors"

finish cli_checkpoint
