#!/usr/bin/env bash
# Graph models end to end through the CLI: resnet8 trains on CIFAR-10-format files (generated
# here: real CIFAR-10 is not on these machines) well above chance; the model file holds
# BatchNorm's buffers and `eval` reproduces the test accuracy fit reported; a run killed with
# SIGKILL and resumed ends bit-identical to an uninterrupted one (running statistics included);
# the skip-connection spec syntax builds, trains and evaluates; attacks change no model bit.
source "$(dirname "$0")/harness.sh"

# The data section of a safetensors file (everything after the JSON header): the tensors.
tensors() {
    local n
    n=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
    tail -c +$((9 + n)) "$1" | cksum
}

# CIFAR-10 binary batches: records of 1 label byte + 3x32x32 pixels (CHW). Class k is a
# horizontal band at rows 3k..3k+5 in channel k % 3 plus noise: learnable in an epoch or two.
python3 - "$tmp/cifar" <<'EOF'
import os, random, sys
out = sys.argv[1]
os.makedirs(out)
rng = random.Random(7)
def batch(name, n):
    with open(os.path.join(out, name), "wb") as f:
        for _ in range(n):
            k = rng.randrange(10)
            px = bytearray(rng.randrange(0, 96) for _ in range(3072))
            for r in range(3 * k, 3 * k + 6):
                for c in range(32):
                    px[(k % 3) * 1024 + r * 32 + c] = 160 + rng.randrange(0, 96)
            f.write(bytes([k]) + px)
for i in range(1, 6):
    batch(f"data_batch_{i}.bin", 120)
batch("test_batch.bin", 200)
EOF

run=(fit --model resnet8 --data "cifar10:$tmp/cifar" --epochs 3 --batch 50 --lr 0.05 --momentum 0.9
     --seed 2 --threads 2)

# --- uninterrupted, then killed after epoch 1 and resumed: the same bits
"$cli" "${run[@]}" --checkpoint-dir "$tmp/whole" --out "$tmp/whole.safetensors" >"$tmp/fit.log" 2>&1 ||
    bad "resnet8 on CIFAR-format files failed: $(tail -3 "$tmp/fit.log")"
acc=$(grep -oE 'saved .*\(test accuracy [0-9.]+%' "$tmp/fit.log" | grep -oE '[0-9.]+%' | tr -d %)
awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 50) }' && ok || bad "resnet8 reached only ${acc:-?}% on the easy CIFAR-format task"
expect 0 "accuracy ${acc}%" -- "$cli" eval "$tmp/whole.safetensors"
grep -q '"bn1.num_batches_tracked":{"dtype":"I64","shape":\[\]' "$tmp/whole.safetensors" && ok ||
    bad "the model file has no I64 scalar bn1.num_batches_tracked"

"$cli" "${run[@]}" --checkpoint-dir "$tmp/part" --out "$tmp/part.safetensors" --quiet >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 3000); do
    [ -f "$tmp/part/metrics.csv" ] && [ "$(wc -l <"$tmp/part/metrics.csv")" -ge 2 ] && break
    sleep 0.01
done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rows=$(($(wc -l <"$tmp/part/metrics.csv") - 1))
[ "$rows" -lt 3 ] && ok || bad "the run ended before it could be killed ($rows rows)"
expect 0 "resuming .*part after epoch|no checkpoint in" -- "$cli" fit --resume "$tmp/part" --quiet
[ "$(tensors "$tmp/whole.safetensors")" = "$(tensors "$tmp/part.safetensors")" ] && ok ||
    bad "resumed resnet8 differs from the uninterrupted run (weights or running statistics)"

# --- the skip-connection syntax: labels, @input, add, groups, bias=0, bn, gap
spec='conv:8:3:1:1:bias=0,bn,a=relu,conv:8:3:1:1:groups=8:bias=0,bn,add:a,r=relu,conv:8:1@a,add:r,gap,flatten,linear:10'
expect 2 "reads 'nosuch', but no layer before it has that name" -- "$cli" fit --model \
    'conv:4:3,relu@nosuch,flatten,linear:10' --data "cifar10:$tmp/cifar" --epochs 1
expect 2 "layer 2 \(add\) adds a 4x32x32 input to a 4x30x30 one" -- "$cli" fit --model \
    'a=conv:4:3:1:1,conv:4:3,add:a,flatten,linear:10' --data "cifar10:$tmp/cifar" --epochs 1
expect 0 "saved" -- "$cli" fit --model "$spec" --data "cifar10:$tmp/cifar" --epochs 1 --batch 50 \
    --out "$tmp/spec.safetensors"
expect 0 "accuracy" -- "$cli" eval "$tmp/spec.safetensors"

# --- --width names preact-resnet18:W (the form the model file records), and only for it
expect 0 "saved" -- "$cli" fit --model preact-resnet18 --width 4 --data "cifar10:$tmp/cifar" --epochs 1 \
    --batch 50 --train-subset 100 --out "$tmp/pw4.safetensors"
grep -q '"advtrain.arch":"preact-resnet18:4"' "$tmp/pw4.safetensors" && ok || bad "--width 4 not recorded as preact-resnet18:4"
expect 2 "only preact-resnet18 takes a width" -- "$cli" fit --model resnet8 --width 4 --epochs 1

# --- attacks on a BatchNorm model change nothing in the file's tensors
before=$(tensors "$tmp/whole.safetensors")
expect 0 "robust" -- "$cli" eval "$tmp/whole.safetensors" --attack pgd --steps 5 --eps 0.03 --samples 50 --no-sanity
[ "$(tensors "$tmp/whole.safetensors")" = "$before" ] && ok || bad "an attack changed the model file"

finish cli_graph
