#!/usr/bin/env bash
# Issue 21, item 1: every output path is checked before any work starts. Missing parents are
# created (as --checkpoint-dir always did); a path that is an existing directory, or whose parent
# is a file, fails at once naming the flag, before any training or attacking.
source "$(dirname "$0")/harness.sh"

fit=(fit --model mlp --train-subset 200 --epochs 1 --threads 2 --quiet)

# --- fit --out: missing parents created, the model saved
expect 0 "saved $tmp/nodir/sub/m.safetensors" -- "$cli" "${fit[@]}" --out "$tmp/nodir/sub/m.safetensors"
[ -f "$tmp/nodir/sub/m.safetensors" ] && ok || bad "fit --out nodir/sub/m.safetensors: no model"
# --- an --out that is a directory: an immediate usage error, nothing trained (no epoch line)
mkdir -p "$tmp/adir"
expect 2 "--out $tmp/adir: is a directory" -- "$cli" fit --model mlp --train-subset 200 --epochs 1 --out "$tmp/adir"
grep -q "epoch" "$tmp/out" && bad "fit --out DIR trained before failing" || ok
# --- a parent that is a file: fails at once (well before training would end)
touch "$tmp/plain"
expect 1 "--out $tmp/plain/m.safetensors: $tmp/plain exists and is not a directory" -- \
    "$cli" fit --model mlp --train-subset 200 --epochs 1 --out "$tmp/plain/m.safetensors"
grep -q "epoch" "$tmp/out" && bad "fit --out under a file trained before failing" || ok
# --- --log and --checkpoint-dir behave alike: parents created
expect 0 "saved" -- "$cli" "${fit[@]}" --log "$tmp/logs/a/m.csv" --out "$tmp/m2.safetensors"
[ -f "$tmp/logs/a/m.csv" ] && ok || bad "fit --log logs/a/m.csv: no log"
expect 1 "--log $tmp/plain/m.csv" -- "$cli" "${fit[@]}" --log "$tmp/plain/m.csv" --out "$tmp/m3.safetensors"
[ -f "$tmp/m3.safetensors" ] && bad "fit trained and saved although --log could not be written" || ok
expect 0 "saved" -- "$cli" "${fit[@]}" --checkpoint-dir "$tmp/runs/deep/r1"
[ -f "$tmp/runs/deep/r1/model.safetensors" ] && ok || bad "fit --checkpoint-dir runs/deep/r1: no model"

# --- attack --out and --grid: checked before attacking
model="$tmp/nodir/sub/m.safetensors"
atk=(attack "$model" --attack fgsm --eps 0.1 --samples 20)
expect 0 "wrote $tmp/adv/x/a.safetensors" -- "$cli" "${atk[@]}" --out "$tmp/adv/x/a.safetensors"
[ -f "$tmp/adv/x/a.png" ] && ok || bad "attack: no grid next to a.safetensors"
expect 1 "--out $tmp/plain/a.safetensors" -- "$cli" "${atk[@]}" --out "$tmp/plain/a.safetensors"
grep -q "robust accuracy" "$tmp/out" && bad "attack ran before failing to save" || ok
expect 2 "--out $tmp/adir2.safetensors: is a directory" -- sh -c "mkdir -p '$tmp/adir2.safetensors' && '$cli' ${atk[*]} --out '$tmp/adir2.safetensors'"
expect 1 "--grid $tmp/plain/g.png" -- "$cli" "${atk[@]}" --out "$tmp/a2.safetensors" --grid "$tmp/plain/g.png"
[ -f "$tmp/a2.safetensors" ] && bad "attack wrote its examples although --grid could not be written" || ok

# --- report --out and export --c: the same checks, before loading anything
expect 1 "report: --out $tmp/plain/rep" -- "$cli" report "$model" --out "$tmp/plain/rep"
expect 1 "export: --c $tmp/plain/c" -- "$cli" export "$model" --c "$tmp/plain/c"
expect 0 "wrote $tmp/c/deep/m.h" -- "$cli" export "$model" --c "$tmp/c/deep"

finish cli_daily_outputs
