#!/usr/bin/env bash
# End-to-end checks of `advtrain report`: a run directory (metrics.csv, config.ini and the model as
# best.safetensors, written here as a fixture) and a bare model file give PNG plots and an HTML
# page; the robustness table matches `advtrain eval --attack`; bad input fails with a message that
# names the file or flag. Needs Fashion-MNIST (Debian's dataset-fashion-mnist); skips without it.
source "$(dirname "$0")/harness.sh"
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "cli_report: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): skipped"
    exit 0
fi

# Under AddressSanitizer: PLplot's cairo driver never frees what it loads through libltdl and the
# font caches of fontconfig and pango, so LeakSanitizer is told to ignore leaks allocated inside
# those libraries (and only those: a leak in advtrain's own code is still reported).
printf '%s\n' 'leak:libplplot.so' 'leak:drivers/cairo.so' 'leak:libltdl.so' 'leak:libfontconfig.so' \
    'leak:libexpat.so' 'leak:libpango-1.0.so' 'leak:libpangoft2-1.0.so' 'leak:libpangocairo-1.0.so' \
    'leak:libcairo.so' 'leak:libglib-2.0.so' 'leak:libgobject-2.0.so' 'leak:libharfbuzz.so' \
    'leak:libfreetype.so' >"$tmp/lsan-plplot.supp"
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$tmp/lsan-plplot.supp:print_suppressions=0"

# A real run directory (fit --checkpoint-dir): FGSM adversarial training with a validation split,
# so metrics.csv has robust validation accuracy and best.safetensors names its epoch.
model="$tmp/mlp.safetensors"
"$cli" fit --model 'flatten,linear:32,relu,linear:10' --train-subset 2000 --epochs 2 --lr 0.05 \
    --momentum 0.9 --l1 1e-4 --prox-l1 --val-split 0.1 --adv fgsm --eps 0.05 --threads 1 --quiet \
    --checkpoint-dir "$tmp/ck" --out "$model" >/dev/null 2>&1 || bad "training the test model failed"
expect 0 "wrote .*index.html" -- "$cli" report "$tmp/ck" --out "$tmp/report0" --attack fgsm --eps 0,0.1 \
    --samples 50 --threads 1
for png in loss accuracy robustness weights examples; do
    [ -s "$tmp/report0/$png.png" ] && ok || bad "run directory: no $png.png"
done
grep -q "best epoch [12] (as recorded in best.safetensors)" "$tmp/report0/index.html" && ok ||
    bad "run directory: best epoch not taken from best.safetensors"
grep -q '<tr class="set"><td>train-subset</td><td>2000</td></tr>' "$tmp/report0/index.html" && ok ||
    bad "run directory: config.ini settings missing"
grep -q "<td>robust_val_acc</td>" "$tmp/report0/index.html" && ok || bad "run directory: no robust_val_acc"

# A hand-made run directory: an unknown (future) column, empty cells (not measured), and a setting
# with HTML special characters.
run="$tmp/run"
mkdir -p "$run"
cp "$model" "$run/best.safetensors"
printf '%s\n' 'epoch,lr,train_loss,train_acc,val_loss,val_acc,test_acc,eps,adv_train_acc,robust_val_acc,guard_acc,penalty,l1_penalty,l2_penalty,seconds,future_col' \
    '1,0.05,1.20,0.55,1.00,0.62,,0.05,0.40,0.30,,0.01,0.004,0.006,1.5,7' \
    '2,0.05,0.80,0.70,0.75,0.72,0.71,0.1,0.50,0.38,,0.012,0.005,0.007,1.4,' \
    '3,0.04,0.65,0.76,0.66,0.75,0.74,0.1,0.55,0.41,,0.011,0.005,0.006,1.4,9' >"$run/metrics.csv"
printf '%s\n' '; written by advtrain fit' '[fit]' 'model = flatten,linear:32,relu,linear:10' \
    'data = fashion-mnist' 'epochs = 3' 'lr = 0.05' 'note = <b>&"fixture"</b>' >"$run/config.ini"

out="$tmp/report"
expect 0 "wrote .*index.html" -- "$cli" report "$run" --out "$out" --samples 100 --eps 0,0.05,0.1 \
    --seed 3 --threads 1
for png in loss accuracy robustness weights examples; do
    f="$out/$png.png"
    if [ ! -f "$f" ]; then
        bad "$png.png missing"
        continue
    fi
    head -c 8 "$f" | od -An -tx1 | grep -q "89 50 4e 47 0d 0a 1a 0a" && ok || bad "$png.png is not a PNG"
    [ "$(stat -c %s "$f")" -gt 2048 ] && ok || bad "$png.png is only $(stat -c %s "$f") bytes"
    grep -q "<img src=\"$png.png\"" "$out/index.html" && ok || bad "index.html has no <img> for $png.png"
done
html="$out/index.html"
[ -s "$html" ] && ok || bad "no index.html"
ls "$out" | grep -q '\.tmp$' && bad "temporary files left in $out: $(ls "$out")" || ok
grep -q "<td>lr</td><td>0.05</td>" "$html" && ok || bad "config.ini settings missing from index.html"
grep -q "&lt;b&gt;&amp;&quot;fixture&quot;&lt;/b&gt;" "$html" && ok || bad "setting not HTML-escaped"
grep -q "<b>&\"fixture" "$html" && bad "raw HTML from config.ini in index.html" || ok
grep -q "last epoch (3)" "$html" && ok || bad "no final-metrics table for epoch 3"
grep -qE "best epoch [1-3] \(as recorded in best.safetensors\)" "$html" && ok || bad "best epoch not named"
grep -q "<td>future_col</td>" "$html" && ok || bad "unknown column dropped from the final metrics"
grep -q 'data-attack="fgsm" data-eps="0.1"' "$html" && ok || bad "no fgsm row at eps 0.1"

# The robustness table against a direct `advtrain eval` (same samples, steps and seed).
row="$(grep -o '<tr data-attack="pgd" data-eps="0.05"[^>]*>' "$html")"
robust="$(sed -n 's/.*data-robust="\([0-9]*\)".*/\1/p' <<<"$row")"
samples="$(sed -n 's/.*data-samples="\([0-9]*\)".*/\1/p' <<<"$row")"
steps="$(sed -n 's/.*data-steps="\([0-9]*\)".*/\1/p' <<<"$row")"
[ "$samples" = 100 ] && [ "$steps" = 20 ] && ok || bad "pgd row at eps 0.05: '$row'"
"$cli" eval "$run/best.safetensors" --attack pgd --eps 0.05 --samples 100 --seed 3 --threads 1 --json \
    --no-sanity >"$tmp/eval.json" 2>/dev/null || bad "eval failed"
acc="$(grep -o '"robust_accuracy":[0-9.eE+-]*' "$tmp/eval.json" | head -1 | cut -d: -f2)"
eval_steps="$(grep -o '"steps":[0-9]*' "$tmp/eval.json" | head -1 | cut -d: -f2)"
if [ -n "$acc" ] && [ -n "$robust" ] && [ "$eval_steps" = "$steps" ] &&
    awk -v a="$acc" -v r="$robust" -v n="$samples" 'BEGIN { exit !(a * n > r - 0.01 && a * n < r + 0.01) }'; then
    ok
else
    bad "report says $robust/$samples robust (steps $steps), eval says $acc (steps $eval_steps)"
fi

# last.safetensors alone (its __train__. tensors ignored)
mkdir -p "$tmp/run2"
cp "$run/metrics.csv" "$tmp/run2/"
if command -v python3 >/dev/null; then
    python3 - "$model" "$tmp/run2/last.safetensors" <<'PY' && ok || bad "writing last.safetensors"
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n]); data = raw[8 + n:]
end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
h["__train__.step"] = {"dtype": "F32", "shape": [1], "data_offsets": [end, end + 4]}
hb = json.dumps(h).encode()
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + data[:end] + struct.pack("<f", 42.0))
PY
else
    cp "$model" "$tmp/run2/last.safetensors"
fi
expect 0 "wrote .*index.html" -- "$cli" report "$tmp/run2" --out "$tmp/report2" --attack pgd --eps 0.1 \
    --samples 20 --threads 1
grep -q "last.safetensors" "$tmp/report2/index.html" && ok || bad "report2 does not name last.safetensors"

# A model file: no curves (said so), the model's own settings.
expect 0 "wrote .*index.html" -- "$cli" report "$model" --out "$tmp/report3" --attack fgsm --eps 0,0.1 \
    --samples 30 --threads 1
[ ! -e "$tmp/report3/loss.png" ] && [ -s "$tmp/report3/robustness.png" ] && [ -s "$tmp/report3/weights.png" ] &&
    ok || bad "model-file report: $(ls "$tmp/report3")"
grep -q "No training curves" "$tmp/report3/index.html" && ok || bad "missing curves not explained"
grep -q "<td>train_subset</td><td>2000</td>" "$tmp/report3/index.html" && ok || bad "model settings missing"

# Regression: no attacks, still the weights and the page.
"$cli" fit --model seed-mlp --data synthetic --epochs 1 --batch 8 --lr 0.01 --quiet \
    --out "$tmp/reg.safetensors" >/dev/null 2>&1 || bad "training the regression model failed"
expect 0 "wrote .*index.html" -- "$cli" report "$tmp/reg.safetensors" --out "$tmp/report4"
grep -q "regression dataset" "$tmp/report4/index.html" && ok || bad "regression: no note on the attacks"
mkdir -p "$tmp/regrun"
cp "$tmp/reg.safetensors" "$tmp/regrun/last.safetensors"
printf '%s\n' 'epoch,lr,train_loss,train_mse,val_loss,val_mse,test_mse,seconds' '1,0.01,2.0,2.0,1.8,1.8,1.9,0.1' \
    '2,0.01,1.5,1.5,1.6,1.6,1.4,0.1' '3,0.01,1.2,1.2,1.7,1.7,1.3,0.1' >"$tmp/regrun/metrics.csv"
expect 0 "wrote .*mse.png" -- "$cli" report "$tmp/regrun" --out "$tmp/report5"
grep -q "best epoch 2 (lowest validation MSE)" "$tmp/report5/index.html" && ok || bad "regression: best epoch"

# --- bad input: a message naming the file or flag, non-zero exit
expect 1 "missing.safetensors: No such file" -- "$cli" report "$tmp/missing.safetensors" --out "$tmp/r"
mkdir -p "$tmp/empty"
expect 1 "empty: no best.safetensors or last.safetensors" -- "$cli" report "$tmp/empty" --out "$tmp/r"
mkdir -p "$tmp/bad"
cp "$model" "$tmp/bad/best.safetensors"
printf 'epoch,train_loss,val_acc\n1,0.5,0.5\n2,0.4\n' >"$tmp/bad/metrics.csv"
expect 1 "bad/metrics.csv:3: malformed line" -- "$cli" report "$tmp/bad" --out "$tmp/r"
printf 'epoch,train_loss,val_acc\n1,0.5,high\n' >"$tmp/bad/metrics.csv"
expect 1 "metrics.csv:2: column 'val_acc': 'high' is not a number" -- "$cli" report "$tmp/bad" --out "$tmp/r"
printf 'epoch,train_loss,val_acc\n1,0.5,85\n' >"$tmp/bad/metrics.csv"
expect 1 "metrics.csv:2: column 'val_acc' holds 85: accuracies are fractions" -- "$cli" report "$tmp/bad" --out "$tmp/r"
printf 'train_loss,val_acc\n0.5,0.5\n' >"$tmp/bad/metrics.csv"
expect 1 "metrics.csv:1: the header has no 'epoch' column" -- "$cli" report "$tmp/bad" --out "$tmp/r"
printf 'epoch,train_loss\n1,0.5\n' >"$tmp/bad/metrics.csv"
printf '[fit]\nthis is not a setting\n' >"$tmp/bad/config.ini"
expect 1 "config.ini:2: malformed line" -- "$cli" report "$tmp/bad" --out "$tmp/r"
head -c 100 "$model" >"$tmp/truncated.safetensors"
expect 1 "cannot load the model: .*truncated.safetensors" -- "$cli" report "$tmp/truncated.safetensors" --out "$tmp/r"
expect 1 "--out .*mlp.safetensors/sub" -- "$cli" report "$model" --out "$model/sub"
expect 2 "--eps: 'abc' is not a number" -- "$cli" report "$model" --out "$tmp/r" --eps 0.1,abc
expect 2 "--eps 8: eps is on the 0-1 pixel scale" -- "$cli" report "$model" --out "$tmp/r" --eps 8
expect 2 "unknown attack 'deepfool'" -- "$cli" report "$model" --out "$tmp/r" --attack deepfool
expect 2 "--samples 0: out of range" -- "$cli" report "$model" --out "$tmp/r" --samples 0
expect 2 "unknown flag '--bogus'" -- "$cli" report "$model" --out "$tmp/r" --bogus
expect 2 "--out DIR is required" -- "$cli" report "$model"
expect 0 "usage: advtrain report" -- "$cli" report --help
[ ! -e "$tmp/r" ] && ok || bad "a failed report left $tmp/r behind"

finish cli_report
