#!/usr/bin/env bash
# advtrain fit --adv end to end on a small Fashion-MNIST subset, and its usage errors.
source "$(dirname "$0")/harness.sh"
small=(--model "conv:8:4:2:1,relu,flatten,linear:10" --train-subset 600 --epochs 1 --batch 64)

expect 2 "--adv pgd needs --eps" -- "$cli" fit "${small[@]}" --adv pgd
expect 2 "--eps sets the adversarial training radius" -- "$cli" fit "${small[@]}" --eps 0.1
expect 2 "unknown adversarial training method 'madry'" -- "$cli" fit "${small[@]}" --adv madry --eps 0.1
expect 2 "L2 norm is available with pgd only" -- "$cli" fit "${small[@]}" --adv trades --eps 0.1 --adv-norm l2
expect 2 "--adv-norm l3: use linf or l2" -- "$cli" fit "${small[@]}" --adv pgd --eps 0.1 --adv-norm l3
expect 2 "--eps 2: eps is on the 0-1 pixel scale; for 2 on the 0-255 scale write 2/255" -- "$cli" fit "${small[@]}" --adv pgd --eps 2
expect 2 "adversarial training needs an image classification" -- "$cli" fit --model seed-mlp --data synthetic --epochs 1 --adv pgd --eps 0.1

# every method trains and saves; the settings are in the model file
for m in fgsm fgsm-rs pgd trades free; do
    expect 0 "saved" -- "$cli" fit "${small[@]}" --adv "$m" --eps 0.1 --steps 2 --replays 2 \
        --val-split 0.2 --robust-val-samples 50 --out "$tmp/$m.safetensors"
    cp "$tmp/out" "$tmp/log"
    expect 0 "$m eps 0.1 \\(0-1 scale\\)" -- cat "$tmp/log"
    # the settings JSON sits escaped inside the safetensors header
    if grep -a -q -F "\\\"adv\\\":\\\"$m\\\"" "$tmp/$m.safetensors"; then ok; else bad "$m: no adv setting in the metadata"; fi
done
expect 0 '"adv_method":"pgd"' -- "$cli" fit "${small[@]}" --adv pgd --eps 0.1 --steps 2 --json --quiet --out "$tmp/j.safetensors"
expect 0 "clean_accuracy" -- "$cli" eval "$tmp/pgd.safetensors" --json --samples 100

finish cli_adv
