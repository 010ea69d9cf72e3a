#!/usr/bin/env bash
# End-to-end checks of `advtrain eval --attack` and `advtrain attack`: the table and the JSON
# object (shape of issue 4, sanity results), the examples written as safetensors and IDX (read
# back, inside the eps-ball and [0,1]), the PNG grid, and bad usage: a clear message and exit 2.
# Needs Fashion-MNIST (Debian's dataset-fashion-mnist); skips (exit 0) without it.
source "$(dirname "$0")/harness.sh"
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "cli_attack: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): skipped"
    exit 0
fi

model="$tmp/mlp.safetensors"
"$cli" fit --model 'flatten,linear:32,relu,linear:10' --train-subset 3000 --epochs 2 --lr 0.05 \
    --momentum 0.9 --threads 1 --out "$model" >/dev/null 2>&1 || bad "training the test model failed"

# --- eval --attack: the table, eps scale stated, sanity checks
expect 0 "0-1 pixel scale" -- "$cli" eval "$model" --attack fgsm,pgd --eps 0,0.03,0.1 --samples 100 --threads 1
grep -qE "^pgd +linf +0.03 " "$tmp/out" && ok || bad "no pgd row at eps 0.03: $(cat "$tmp/out")"
grep -q "sanity checks: [0-9]* passed, 0 failed" "$tmp/out" && ok || bad "sanity checks failed: $(cat "$tmp/out")"
for c in eps0_equals_clean inside_ball_and_box monotone_in_eps pgd_below_fgsm gradients_nonzero_finite unbounded_eps_breaks_model; do
    grep -q "ok   $c" "$tmp/out" && ok || bad "check $c missing or failed: $(cat "$tmp/out")"
done

# --- --json: exactly one object with the issue's shape
expect 0 '"attacks":' -- "$cli" eval "$model" --attack pgd,auto --eps 0.02,0.05 --steps 10 --queries 100 \
    --samples 60 --threads 1 --json
if command -v python3 >/dev/null; then
    python3 - "$tmp/out" <<'PY' && ok || bad "JSON shape: $(head -c 800 "$tmp/out")"
import json, sys
o = json.load(open(sys.argv[1]))
assert 0 <= o["clean_accuracy"] <= 1 and o["eps_scale"] == "0-1 pixels"
a = o["attacks"]
assert [(x["attack"], x["eps"]) for x in a] == [("pgd", 0.02), ("pgd", 0.05), ("auto", 0.02), ("auto", 0.05)], a
for x in a:
    for k in ("attack", "eps", "steps", "restarts", "robust_accuracy"):
        assert k in x, k
    assert 0 <= x["robust_accuracy"] <= o["clean_accuracy"] + 1e-9
assert a[0]["steps"] == 10 and a[0]["restarts"] == 1
assert [m["attack"] for m in a[2]["members"]] == ["apgd-ce", "apgd-t", "square"]
assert a[2]["robust_accuracy"] <= a[0]["robust_accuracy"] + 1e-9   # auto <= its PGD
s = o["sanity"]
assert s["passed"] is True and s["warnings"] == [], s
assert {c["check"] for c in s["checks"]} >= {"eps0_equals_clean", "inside_ball_and_box", "monotone_in_eps",
                                             "ensemble_not_weaker", "gradients_nonzero_finite"}
PY
else
    grep -q '"sanity":{"passed":true' "$tmp/out" && ok || bad "JSON sanity: $(head -c 800 "$tmp/out")"
fi
[ "$(wc -l <"$tmp/out")" -eq 1 ] && ok || bad "--json printed more than one line"

# --- --offset shards an evaluation: FGSM (no random start) is deterministic per sample, so
# the robust counts of samples 0-59 and 60-99 add up to those of the first 100
robust_count() {  # ARGS...: robust samples of one FGSM run
    "$cli" eval "$model" --attack fgsm --eps 0.05 --no-sanity --threads 1 --json "$@" |
        sed -n 's/.*"samples":\([0-9]*\).*"robust_accuracy":\([0-9.eE+-]*\).*/\1 \2/p' |
        awk '{ printf "%d", $1 * $2 + 0.5 }'
}
whole=$(robust_count --samples 100); part1=$(robust_count --samples 60); part2=$(robust_count --offset 60 --samples 40)
[ -n "$whole" ] && [ "$whole" -eq $((part1 + part2)) ] && ok || bad "--offset shards: $part1 + $part2 != $whole"
expect 0 "samples 60 to 99" -- "$cli" eval "$model" --offset 60 --samples 40 --attack fgsm --eps 0.1 --no-sanity --threads 1
expect 2 "--offset 10000: the test split has only 10000 samples" -- "$cli" eval "$model" --offset 10000

# --- targeted and L2 variants run
expect 0 "target reached on" -- "$cli" eval "$model" --attack pgd --eps 0.3 --target random --samples 50 --threads 1 --no-sanity
expect 0 "pgd-l2 +l2" -- "$cli" eval "$model" --attack pgd --norm l2 --eps 1.0 --samples 50 --threads 1 --no-sanity
expect 0 "fgsm +linf +0.03137 +8 " -- "$cli" eval "$model" --attack fgsm --eps 8/255 --samples 20 --threads 1 --no-sanity

# --- attack: safetensors and IDX outputs, PNG grid
expect 0 "wrote .*adv.safetensors" -- "$cli" attack "$model" --attack pgd --eps 0.1 --samples 40 \
    --out "$tmp/adv.safetensors" --threads 1
[ -s "$tmp/adv.png" ] && ok || bad "no default grid adv.png"
head -c 8 "$tmp/adv.png" | od -An -tx1 | grep -q "89 50 4e 47 0d 0a 1a 0a" && ok || bad "adv.png is not a PNG"
expect 0 "wrote .*adv.idx.gz and .*adv-labels.idx.gz" -- "$cli" attack "$model" --attack fgsm --eps 0.05 \
    --samples 30 --out "$tmp/adv.idx.gz" --grid "$tmp/grid.png" --threads 1
[ -s "$tmp/grid.png" ] && [ -s "$tmp/adv-labels.idx.gz" ] && ok || bad "idx labels or grid missing"
if command -v python3 >/dev/null; then
    python3 - "$tmp" <<'PY' && ok || bad "reading the written examples back"
import gzip, json, struct, sys
d = sys.argv[1]
raw = open(d + "/adv.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n]); data = raw[8 + n:]
def tensor(name):
    b, e = h[name]["data_offsets"]
    return h[name]["shape"], struct.unpack("<%df" % ((e - b) // 4), data[b:e])
shape, adv = tensor("x_adv"); _, x = tensor("x"); _, lab = tensor("labels"); _, pred = tensor("adv_pred")
assert shape == [40, 1, 28, 28] and len(lab) == 40 and len(pred) == 40
assert all(0 <= v <= 1 for v in adv)
assert max(abs(a - b) for a, b in zip(adv, x)) <= 0.1 + 1e-6
assert h["__metadata__"]["advtrain.attack"] == "pgd" and h["__metadata__"]["advtrain.eps_scale"] == "0-1 pixels"
img = gzip.open(d + "/adv.idx.gz").read(); lb = gzip.open(d + "/adv-labels.idx.gz").read()
assert struct.unpack(">IIII", img[:16]) == (0x803, 30, 28, 28) and struct.unpack(">II", lb[:8]) == (0x801, 30)
assert len(img) == 16 + 30 * 784 and len(lb) == 8 + 30
PY
fi
# the IDX files load back as a dataset (idx:DIR wants the t10k/train names)
mkdir -p "$tmp/idxdir"
cp "$tmp/adv.idx.gz" "$tmp/idxdir/t10k-images-idx3-ubyte.gz"
cp "$tmp/adv-labels.idx.gz" "$tmp/idxdir/t10k-labels-idx1-ubyte.gz"
cp "$tmp/adv.idx.gz" "$tmp/idxdir/train-images-idx3-ubyte.gz"
cp "$tmp/adv-labels.idx.gz" "$tmp/idxdir/train-labels-idx1-ubyte.gz"
expect 0 "30 samples" -- "$cli" eval "$model" --data "idx:$tmp/idxdir"

# --- bad usage: a clear message, exit 2
expect 2 "0-1 pixel scale.*8/255" -- "$cli" eval "$model" --attack pgd --eps 8
expect 2 "unknown attack 'deepfool'" -- "$cli" eval "$model" --attack deepfool --eps 0.1
expect 2 "needs --eps" -- "$cli" eval "$model" --attack pgd
expect 2 "needs --attack" -- "$cli" eval "$model" --eps 0.1
expect 2 "Square attack is L-inf only" -- "$cli" eval "$model" --attack square --norm l2 --eps 0.5
expect 2 "norm.*linf or l2" -- "$cli" eval "$model" --attack pgd --norm l1 --eps 0.1
expect 2 "--target" -- "$cli" eval "$model" --attack auto --target random --eps 0.1
expect 2 "--target random: the Square attack is untargeted" -- "$cli" eval "$model" --attack square --target random --eps 0.1
expect 2 "--target 2: apgd-t aims at targets of its own" -- "$cli" eval "$model" --attack apgd-t --target 2 --eps 0.1
# the help lists what the library's table knows: every name, every kind's default budget
expect 0 "square, auto, auto-l2" -- "$cli" eval --help
expect 0 "square 5000q, auto 100\+9x100\+5000q" -- "$cli" attack --help
expect 2 "not a number" -- "$cli" eval "$model" --attack pgd --eps 0.1,abc
expect 2 "required" -- "$cli" attack "$model" --attack pgd --eps 0.1
expect 2 "one value" -- "$cli" attack "$model" --attack pgd --eps 0.1,0.2 --out "$tmp/x.safetensors"
expect 2 "\.safetensors, \.idx or \.idx\.gz" -- "$cli" attack "$model" --attack pgd --eps 0.1 --out "$tmp/x.bin"
expect 1 "cannot read the model" -- "$cli" attack "$tmp/missing.safetensors" --attack pgd --eps 0.1 --out "$tmp/x.safetensors"
"$cli" fit --model seed-mlp --data synthetic --epochs 1 --batch 8 --lr 0.01 --out "$tmp/reg.safetensors" --quiet >/dev/null 2>&1
expect 2 "classification" -- "$cli" eval "$tmp/reg.safetensors" --attack pgd --eps 0.1

# --- shards of a split evaluation (--offset) draw each sample's random start as the whole run
# does: their robust counts add up to the whole run's
rob() { python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); print(round(o["attacks"][0]["robust_accuracy"]*o["samples"]))' "$1"; }
if command -v python3 >/dev/null; then
    "$cli" eval "$model" --attack pgd --eps 0.05 --steps 5 --seed 4 --all --samples 120 --threads 1 --json --no-sanity >"$tmp/whole.json" 2>/dev/null
    "$cli" eval "$model" --attack pgd --eps 0.05 --steps 5 --seed 4 --all --samples 70 --threads 1 --json --no-sanity >"$tmp/a.json" 2>/dev/null
    "$cli" eval "$model" --attack pgd --eps 0.05 --steps 5 --seed 4 --all --offset 70 --samples 50 --threads 1 --json --no-sanity >"$tmp/b.json" 2>/dev/null
    w="$(rob "$tmp/whole.json")" a="$(rob "$tmp/a.json")" b="$(rob "$tmp/b.json")"
    [ -n "$w" ] && [ "$((a + b))" = "$w" ] && ok || bad "shards 0-69 and 70-119: $a + $b robust, the whole run $w"
fi
finish cli_attack
