#!/usr/bin/env bash
# End-to-end checks of `advtrain verify`: verified accuracy next to clean and robust accuracy, in
# order (verified <= robust <= clean), IBP <= CROWN-IBP <= CROWN on a plain network, the JSON object (clean_accuracy, verified_accuracy, method,
# eps), verified accuracy falling as eps grows and equal to the clean accuracy at eps 0, the
# network untouched, and bad usage (a clear message, exit 2). Needs Fashion-MNIST; skips without it.
source "$(dirname "$0")/harness.sh"
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "cli_verify: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): skipped"
    exit 0
fi

model="$tmp/cnn.safetensors"
"$cli" fit --model 'conv:8:3:2:1,bn,relu,conv:16:3:2:1,relu,flatten,linear:10' --train-subset 3000 --epochs 2 \
    --lr 0.05 --momentum 0.9 --threads 1 --out "$model" >/dev/null 2>&1 || bad "training the test model failed"
sum_before="$(sha256sum "$model")"

expect 0 "verified accuracy .* \(ibp, eps 0.01" -- "$cli" verify "$model" --eps 0.01 --attack pgd --samples 200 --threads 1
grep -q "check verified <= robust <= clean: ok" "$tmp/out" && ok || bad "order not checked: $(cat "$tmp/out")"

# JSON: the issue's fields; verified accuracy falls with eps, equals the clean accuracy at eps 0
for eps in 0 0.002 0.01 0.05; do
    expect 0 '"verified_accuracy"' -- "$cli" verify "$model" --eps "$eps" --samples 300 --threads 2 --json
    cp "$tmp/out" "$tmp/v$eps.json"
done
if command -v python3 >/dev/null; then
    python3 - "$tmp" <<'PY' && ok || bad "verify JSON: $(cat "$tmp"/v*.json)"
import json, sys
d = {e: json.load(open(f"{sys.argv[1]}/v{e}.json")) for e in ("0", "0.002", "0.01", "0.05")}
for e, o in d.items():
    assert o["method"] == "ibp" and abs(o["eps"] - float(e)) < 1e-9 and o["samples"] == 300 and o["ordered"], o
    assert 0 <= o["verified_accuracy"] <= o["clean_accuracy"] <= 1, o
assert d["0"]["verified_accuracy"] == d["0"]["clean_accuracy"], d["0"]
v = [d[e]["verified_accuracy"] for e in ("0", "0.002", "0.01", "0.05")]
assert v == sorted(v, reverse=True) and v[-1] < v[0], v
PY
fi
[ "$(sha256sum "$model")" = "$sum_before" ] && ok || bad "verify changed the model file"

# The three bound methods on the same samples: CROWN proves at least what CROWN-IBP proves on this
# plainly trained network (its ReLUs' bounds are tighter), and CROWN-IBP at least what IBP proves
for m in ibp crown-ibp crown; do
    expect 0 "\"method\": *\"$m\"" -- "$cli" verify "$model" --eps 0.005 --samples 40 --threads 2 --method "$m" --json
    cp "$tmp/out" "$tmp/m$m.json"
done
python3 - "$tmp" <<'PY' && ok || bad "verify --method: $(cat "$tmp"/m*.json)"
import json, sys
v = [json.load(open(f"{sys.argv[1]}/m{m}.json"))["verified_accuracy"] for m in ("ibp", "crown-ibp", "crown")]
assert v[0] <= v[1] <= v[2] and v[2] > v[0], v
PY

# Certified training (fit --certify ibp) proves far more at its eps than plain training
plain="$tmp/plain.safetensors" ibp="$tmp/ibp.safetensors"
net='conv:8:3:2:1,relu,conv:16:3:2:1,relu,flatten,linear:32,relu,linear:10'
"$cli" fit --model "$net" --train-subset 3000 --epochs 3 --optim adam --lr 0.005 --threads 2 --quiet --out "$plain" \
    >/dev/null 2>&1 || bad "plain training failed"
"$cli" fit --model "$net" --train-subset 3000 --epochs 3 --optim adam --lr 0.005 --threads 2 --quiet --out "$ibp" \
    --certify ibp --eps 0.05 --certify-warmup 0 --certify-ramp 1 >/dev/null 2>"$tmp/err" || bad "IBP training: $(cat "$tmp/err")"
vp="$("$cli" verify "$plain" --eps 0.05 --samples 300 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["verified_accuracy"])')"
vi="$("$cli" verify "$ibp" --eps 0.05 --samples 300 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["verified_accuracy"])')"
python3 -c "import sys; sys.exit(0 if float('$vi') > float('$vp') + 0.2 else 1)" && ok ||
    bad "IBP training: verified accuracy $vi at eps 0.05, plain training $vp"
# CROWN-IBP training with its bounds throughout (beta 1 to 1): what CROWN-IBP proves of it
crown="$tmp/crown.safetensors"
"$cli" fit --model "$net" --train-subset 3000 --epochs 3 --optim adam --lr 0.005 --threads 2 --quiet --out "$crown" \
    --certify crown-ibp --eps 0.05 --certify-warmup 0 --certify-ramp 1 --beta-end 1 >/dev/null 2>"$tmp/err" ||
    bad "CROWN-IBP training: $(cat "$tmp/err")"
vc="$("$cli" verify "$crown" --eps 0.05 --samples 300 --method crown-ibp --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["verified_accuracy"])')"
vpc="$("$cli" verify "$plain" --eps 0.05 --samples 300 --method crown-ibp --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["verified_accuracy"])')"
python3 -c "import sys; sys.exit(0 if float('$vc') > float('$vpc') + 0.2 else 1)" && ok ||
    bad "CROWN-IBP training: verified accuracy (CROWN-IBP) $vc at eps 0.05, plain training $vpc"
expect 2 "--certify crown: use ibp or crown-ibp" -- "$cli" fit --model "$net" --certify crown --eps 0.1 --epochs 1
expect 2 "maxpool" -- "$cli" fit --model 'conv:8:3:1:1,relu,maxpool:2,flatten,linear:10' --certify crown-ibp --eps 0.1 \
    --epochs 1 --train-subset 500
expect 2 "--beta-end" -- "$cli" fit --model "$net" --certify crown-ibp --eps 0.1 --beta-end 1.5 --epochs 1
expect 2 "--certify and --adv: choose one" -- "$cli" fit --model "$net" --certify ibp --adv pgd --eps 0.1 --epochs 1
expect 2 "--certify ibp needs --eps" -- "$cli" fit --model "$net" --certify ibp --epochs 1
expect 2 "BatchNorm" -- "$cli" fit --model 'conv:8:3:2:1,bn,relu,flatten,linear:10' --certify ibp --eps 0.1 --epochs 1 --train-subset 500

# Bad usage
expect 2 "--eps is required" -- "$cli" verify "$model"
expect 2 "eps" -- "$cli" verify "$model" --eps -0.1
expect 2 "eps" -- "$cli" verify "$model" --eps nan
expect 2 "--method crown-lp: use ibp .*, crown-ibp .* or crown" -- "$cli" verify "$model" --eps 0.1 --method crown-lp
expect 2 "unknown attack" -- "$cli" verify "$model" --eps 0.1 --attack deepfool
expect 2 "--offset 10000: the test split has only 10000 samples" -- "$cli" verify "$model" --eps 0.1 --offset 10000
expect 1 "no-such.safetensors" -- "$cli" verify "$tmp/no-such.safetensors" --eps 0.1
finish cli_verify
