#!/usr/bin/env bash
# Issue 21, items 9, 12 and 14: the kept robust-validation epoch is named; an exploding loss
# (not only NaN) stops the run with exit 1, a message and what usually fixes it, and no model;
# a run that never starts learning (PGD-AT at a large eps from epoch 1) is warned about.
source "$(dirname "$0")/harness.sh"

base=(fit --model mlp --train-subset 1000 --threads 2)

# --- item 12: --lr 100 explodes in epoch 1; --lr 1 in epoch 2 (loss 2.4e4): exit 1, no model
expect 1 "training exploded at epoch 1: loss .*ln 10" -- "$cli" "${base[@]}" --epochs 3 --lr 100 --out "$tmp/e.safetensors"
grep -q "What usually fixes it: a smaller --lr" "$tmp/err" && ok || bad "no fix suggested: $(cat "$tmp/err")"
[ ! -e "$tmp/e.safetensors" ] && ok || bad "an exploded run saved its model"
grep -q "epoch   2/3" "$tmp/out" && bad "the exploded run went on training" || ok
expect 1 "training exploded at epoch 2" -- "$cli" "${base[@]}" --epochs 3 --lr 1 --checkpoint-dir "$tmp/ex"
grep -q "$tmp/ex/last.safetensors holds the diverged weights: start a new run" "$tmp/err" && ok ||
    bad "exploded run with a checkpoint: $(cat "$tmp/err")"
[ ! -e "$tmp/ex/model.safetensors" ] && ok || bad "an exploded run saved its model"
expect 1 "training exploded" -- "$cli" "${base[@]}" --epochs 3 --lr 100 --json --out "$tmp/e.safetensors"
# a sane learning rate is left alone
expect 0 "saved" -- "$cli" "${base[@]}" --epochs 2 --out "$tmp/ok.safetensors"
grep -q "exploded\|no learning" "$tmp/err" "$tmp/out" && bad "a sane run was flagged: $(cat "$tmp/err")" || ok

# --- item 14: PGD-AT at eps 0.3 from epoch 1 sits at ln 10 with chance accuracy
adv=("${base[@]}" --epochs 4 --adv pgd --eps 0.3 --steps 3)
expect 0 "warning: no learning for 3 epochs: loss 2\.3.* = ln 10" -- "$cli" "${adv[@]}" --out "$tmp/s.safetensors"
grep -q -- "--eps-warmup" "$tmp/err" && ok || bad "the no-learning warning does not suggest --eps-warmup: $(cat "$tmp/err")"
expect 0 '"no_learning_warning":true' -- "$cli" "${adv[@]}" --json --out "$tmp/s.safetensors"
# the fix the warning suggests: no warning
expect 0 "saved" -- "$cli" "${adv[@]}" --eps-warmup 3 --out "$tmp/w.safetensors"
grep -q "no learning" "$tmp/err" && bad "--eps-warmup 3 still warned: $(cat "$tmp/err")" || ok

# --- item 9: the kept robust-validation epoch is named: the epoch with the best robust
# validation line (the first of equals), its accuracy, and the last epoch's when that differs.
# (The numbers differ between builds, e.g. Release and the ASan Debug build: read them back.)
kept=(fit --model mlp --train-subset 1000 --threads 2 --epochs 4 --adv pgd --eps 0.1 --steps 3 --val-split 0.2 --lr 0.2)
expect 0 "^kept the weights of epoch [1-4] of 4: the best robust validation accuracy \([0-9.]+%\)" -- "$cli" "${kept[@]}" --out "$tmp/k.safetensors"
robust=$(grep -o "robust val (PGD) [0-9.]*%" "$tmp/out" | awk '{ print $4 + 0 }')
best=$(awk '$1 > m || NR == 1 { m = $1; e = NR } END { print e }' <<<"$robust")
acc=$(sed -n "${best}p" <<<"$robust")
line=$(grep "^kept the weights" "$tmp/out")
[[ "$line" == "kept the weights of epoch $best of 4: the best robust validation accuracy ($(printf '%.2f' "$acc")%)"* ]] && ok ||
    bad "kept line '$line', but the best robust validation was epoch $best ($acc%)"
if [ "$best" != 4 ]; then
    [[ "$line" == *"; the last epoch's was $(sed -n 4p <<<"$robust" | xargs printf '%.2f')% (--keep-last keeps it)" ]] && ok ||
        bad "kept line without the last epoch's accuracy: '$line'"
fi
expect 0 "\"kept_epoch\":$best" -- "$cli" "${kept[@]}" --json --out "$tmp/k.safetensors"
expect 0 "kept the weights of epoch [0-9] of 3: the best validation loss" -- \
    "$cli" "${base[@]}" --epochs 3 --val-split 0.2 --early-stop 5 --out "$tmp/es.safetensors"

finish cli_daily_training
