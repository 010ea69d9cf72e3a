#!/usr/bin/env bash
# Issue 21, items 5 and 15: config.ini (and so the report) shows the real effective defaults,
# and uncommenting any of them reproduces the run; plurals; JSON numbers in their shortest
# round-trip form; help fits 100 columns and lists fashion-mnist:DIR; experiments/adversarial.sh
# prints a real usage message.
source "$(dirname "$0")/harness.sh"

# The report below draws with PLplot: under AddressSanitizer the same leak suppressions as
# tests/cli_report.sh (allocations inside PLplot's cairo driver and the font libraries only).
printf '%s\n' 'leak:libplplot.so' 'leak:drivers/cairo.so' 'leak:libltdl.so' 'leak:libfontconfig.so' \
    'leak:libexpat.so' 'leak:libpango-1.0.so' 'leak:libpangoft2-1.0.so' 'leak:libpangocairo-1.0.so' \
    'leak:libcairo.so' 'leak:libglib-2.0.so' 'leak:libgobject-2.0.so' 'leak:libharfbuzz.so' \
    'leak:libfreetype.so' >"$tmp/lsan-plplot.supp"
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$tmp/lsan-plplot.supp:print_suppressions=0"

tensors() {
    local n
    n=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
    tail -c +$((9 + n)) "$1" | cksum
}

# --- item 5: no "= 0" stand-ins for computed defaults
run=(fit --model mlp --train-subset 300 --epochs 2 --threads 2 --quiet --adv pgd --eps 0.1 --steps 2 --val-split 0.2 --schedule step)
expect 0 "saved" -- "$cli" "${run[@]}" --checkpoint-dir "$tmp/r"
for kv in "clean-weight = 0.5" "beta = 6" "replays = 8" "robust-val-steps = 10" "robust-val-samples = 1000" "step-size = 1"; do
    grep -qx "; $kv" "$tmp/r/config.ini" && ok || bad "config.ini lacks '; $kv': $(grep "${kv%% *}" "$tmp/r/config.ini")"
done
grep -q "^; alpha = 0  ; 0: the method's own step (pgd: 2.5 eps/steps)" "$tmp/r/config.ini" && ok ||
    bad "config.ini alpha: $(grep alpha "$tmp/r/config.ini")"
# uncommenting every default line reproduces the run (and none is "out of range")
sed -e 's/^; \([a-z-]* = \)/\1/' -e '/^checkpoint-dir/d' -e '/^out = /d' "$tmp/r/config.ini" >"$tmp/all.ini"
expect 0 "saved" -- "$cli" fit --config "$tmp/all.ini" --quiet --out "$tmp/all.safetensors"
[ "$(tensors "$tmp/all.safetensors")" = "$(tensors "$tmp/r/model.safetensors")" ] && ok ||
    bad "the uncommented config.ini trained other weights"
# the report's settings table reads config.ini: the same values
expect 0 "index.html" -- "$cli" report "$tmp/r" --out "$tmp/rep" --samples 20 --attack fgsm --eps 0,0.1
for kv in "clean-weight</td><td>0.5<" "replays</td><td>8<" "robust-val-steps</td><td>10<" "step-size</td><td>1<" \
          "alpha</td><td>0 (0: the method&#39;s own step (pgd: 2.5 eps/steps))<"; do
    grep -qF "$kv" "$tmp/rep/index.html" && ok || bad "report settings lack '$kv'"
done
# a run without --adv shows PGD's defaults for the adversarial settings, not 0
expect 0 "saved" -- "$cli" fit --model mlp --train-subset 100 --epochs 1 --quiet --checkpoint-dir "$tmp/plain"
grep -qx "; steps = 7" "$tmp/plain/config.ini" && ok || bad "no-adv config.ini steps: $(grep steps "$tmp/plain/config.ini")"

# --- item 15: plurals
expect 0 "; 1 epoch; seed 1; 1 thread$" -- "$cli" fit --model mlp --train-subset 100 --epochs 1 --threads 1 --out "$tmp/p.safetensors"
expect 0 "\(1 sample\): accuracy" -- "$cli" eval "$tmp/p.safetensors" --samples 1
# JSON numbers: the shortest text that reads back as the same float (no 0.64499998092651367)
expect 0 '"clean_accuracy":' -- "$cli" eval "$tmp/p.safetensors" --samples 300 --json
grep -qE '[0-9]\.[0-9]{10,}' "$tmp/out" && bad "eval --json has long numbers: $(cat "$tmp/out")" || ok
expect 0 '"results"' -- "$cli" fit --model mlp --train-subset 100 --epochs 1 --json --quiet --out "$tmp/j.safetensors"
grep -qE '[0-9]\.[0-9]{10,}' "$tmp/out" && bad "fit --json has long numbers: $(head -c 600 "$tmp/out")" || ok
python3 - "$tmp/out" <<'PY' && ok || bad "fit --json numbers are not the shortest float text"
import json, struct, sys
f32 = lambda x: struct.unpack('f', struct.pack('f', x))[0]
texts = []
json.load(open(sys.argv[1]), parse_float=lambda t: texts.append(t) or float(t))
assert texts
for t in texts:
    v = float(t)
    mant = t.lower().split('e')[0].replace('-', '').replace('.', '').lstrip('0')
    sig = max(len(mant), 1)
    assert sig <= 9, t
    # no shorter text reads back as the same float
    assert not any(f32(float('%.*g' % (p, v))) == f32(v) for p in range(1, sig)), t
PY
# help: at most 100 columns, and the data sources fit knows
for c in fit eval attack bench export report; do
    w=$("$cli" "$c" --help | awk '{ if (length($0) > m) m = length($0) } END { print m }')
    [ "$w" -le 100 ] && ok || bad "advtrain $c --help is $w columns wide"
done
expect 0 "fashion-mnist:DIR" -- "$cli" fit --help
# experiments/adversarial.sh: a usage message, not "line 19: 1: usage"; nothing written
src="${ADVTRAIN_SOURCE_DIR:-$(dirname "$0")/..}"
expect 2 "bash experiments/adversarial.sh ROW \[SEED\]" -- env OUT_DIR="$tmp/exp" bash "$src/experiments/adversarial.sh"
grep -q "line [0-9]*:" "$tmp/err" && bad "adversarial.sh usage: $(cat "$tmp/err")" || ok
expect 2 "unknown row 'nope'" -- env OUT_DIR="$tmp/exp" bash "$src/experiments/adversarial.sh" nope
[ ! -e "$tmp/exp" ] && ok || bad "adversarial.sh with a bad row created $tmp/exp"
grep -q 'OUT_DIR:-experiments' "$src/experiments/adversarial.sh" && bad "adversarial.sh writes into the repository by default" || ok

finish cli_daily_defaults
