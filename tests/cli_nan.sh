#!/usr/bin/env bash
# Numeric faults (issue 24), injected at a known step by test hooks (cli/fit.c): weights blown up
# mid-epoch (ADVTRAIN_TEST_EXPLODE_AFTER) stop training at the next step, where the loss or a
# gradient stops being finite, naming the epoch and batch; a weight turned NaN
# (ADVTRAIN_TEST_NAN_AFTER) is refused before any checkpoint is written, naming the tensor; with
# --on-nonfinite skip such steps are skipped, each halving the learning rate, 10 in a row stop. Either way the epoch-1
# checkpoint stays as it was (its tensors equal a 1-epoch run's), no model file is written,
# and --resume from it works (after the hook's fault it ends bit for bit as an uninterrupted
# run). eval refuses a model file holding a NaN, naming the tensor.
source "$(dirname "$0")/harness.sh"

tensors() {
    local n
    n=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
    tail -c +$((9 + n)) "$1" | cksum
}

run=(fit --model smallcnn --train-subset 1000 --threads 2 --quiet)   # 8 batches an epoch
"$cli" "${run[@]}" --epochs 1 --checkpoint-dir "$tmp/one" --out "$tmp/one.safetensors" >/dev/null 2>&1 || bad "1-epoch run"
"$cli" "${run[@]}" --epochs 3 --checkpoint-dir "$tmp/whole" --out "$tmp/whole.safetensors" >/dev/null 2>&1 || bad "3-epoch run"
epoch1=$(tensors "$tmp/one/last.safetensors")

# --- weights blown up by 1e30 after batch 10 (as by a huge step): stopped at the next step,
# the checkpoint of epoch 1 kept
expect 1 "(training loss became|gradient of .* became) .*at epoch 2, batch 3: training diverged" -- \
    env ADVTRAIN_TEST_EXPLODE_AFTER=10 "$cli" "${run[@]}" --epochs 3 --checkpoint-dir "$tmp/lr" --out "$tmp/lr.safetensors"
[ "$(tensors "$tmp/lr/last.safetensors")" = "$epoch1" ] && ok || bad "exploding lr: the epoch-1 checkpoint changed"
[ ! -e "$tmp/lr.safetensors" ] && ok || bad "exploding lr: a model file was written"
expect 0 "accuracy" -- "$cli" eval "$tmp/lr/last.safetensors" --samples 100

# --- a NaN weight at the end of epoch 2 (a ReLU hides it from the loss): the checkpoint is
# refused, naming the tensor
expect 1 "nan/last.safetensors not written: 0.weight holds nan at index 0, the weights are not finite" -- \
    env ADVTRAIN_TEST_NAN_AFTER=16 "$cli" "${run[@]}" --epochs 3 --checkpoint-dir "$tmp/nan" --out "$tmp/nan.safetensors"
[ "$(tensors "$tmp/nan/last.safetensors")" = "$epoch1" ] && ok || bad "NaN weight: the epoch-1 checkpoint changed"
[ ! -e "$tmp/nan.safetensors" ] && ok || bad "NaN weight: a model file was written"
expect 0 "resuming .*nan after epoch 1" -- "$cli" fit --resume "$tmp/nan" --quiet
[ "$(tensors "$tmp/nan.safetensors")" = "$(tensors "$tmp/whole.safetensors")" ] && ok ||
    bad "resumed after the NaN: the model differs from the uninterrupted run's"

# --- without checkpoints the model file is refused the same way
expect 1 "nofile.safetensors not written: 0.weight holds nan" -- \
    env ADVTRAIN_TEST_NAN_AFTER=16 "$cli" "${run[@]}" --epochs 2 --out "$tmp/nofile.safetensors"
[ ! -e "$tmp/nofile.safetensors" ] && ok || bad "a NaN model file was written"

# --- --on-nonfinite skip: the blown-up batches are skipped, each halving the learning rate; once
# 10 in a row are skipped training stops, naming the cause
expect 1 "at epoch 3, batch [0-9]+: training diverged .*10 batches in a row were skipped" -- \
    env ADVTRAIN_TEST_EXPLODE_AFTER=10 "$cli" fit --model smallcnn --train-subset 1000 --threads 2 --epochs 4 \
    --on-nonfinite skip --out "$tmp/skip.safetensors" --log "$tmp/skip.csv"
grep -q "6 batches skipped: a non-finite loss or gradient (--on-nonfinite skip); lr halved each time, now 0.00078125" "$tmp/out" &&
    ok || bad "--on-nonfinite skip: epoch line: $(grep skipped "$tmp/out")"
[ "$(awk -F, '$1 == 2 { print $16 }' "$tmp/skip.csv")" = 6 ] && ok ||
    bad "--on-nonfinite skip: the log's skipped_batches: $(cat "$tmp/skip.csv")"
expect 2 "--on-nonfinite maybe: use stop or skip" -- "$cli" "${run[@]}" --on-nonfinite maybe

# --- eval (and attack) refuse a model file with a NaN weight, naming the tensor
python3 - "$tmp/one.safetensors" "$tmp/bad.safetensors" <<'PY'
import json, struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
start = 8 + n + header["2.weight"]["data_offsets"][0]
data[start + 12:start + 16] = struct.pack("<f", float("nan"))
open(sys.argv[2], "wb").write(data)
PY
expect 1 "bad.safetensors: tensor '2.weight' holds nan at index 3" -- "$cli" eval "$tmp/bad.safetensors"
expect 1 "tensor '2.weight' holds nan" -- "$cli" attack "$tmp/bad.safetensors" --attack fgsm --eps 0.1 --samples 10 --out "$tmp/adv.safetensors"

finish cli_nan
