#!/usr/bin/env bash
# advtrain fit's regularization flags end to end: every flag reaches the run and the model file's
# metadata, --json prints one object with the results and per-layer norms, --dropout saves a model
# that eval loads, and every misuse is a usage error (exit 2) that names the flag.
source "$(dirname "$0")/harness.sh"
# has FILE PATTERN WHAT: the file matches the (grep -E) pattern.
has() { if grep -aqE -- "$2" "$1"; then ok; else bad "$3: /$2/ not in $1"; fi; }
# json_num FILE KEY: the first number stored under "KEY".
json_num() { grep -aoE "\"$2\":-?[0-9.e+-]+" "$1" | head -1 | cut -d: -f2; }

fit=("$cli" fit --model seed-mlp --data synthetic --batch 8 --lr 0.01 --quiet)
fitv=("$cli" fit --model seed-mlp --data synthetic --batch 8 --lr 0.01)

# --- help lists the flags
expect 0 "--l1" -- "$cli" fit --help
for flag in l2 reg-layers reg-bias weight-decay decoupled prox-l1 max-norm dropout label-smoothing \
    clip-grad augment noise mixup schedule step-size gamma val-split early-stop min-delta monitor json; do
    has "$tmp/out" "--$flag" "fit --help"
done

# --- the tutorial's run: L1 + L2 on fc1; --json prints exactly one object on stdout
"${fit[@]}" --epochs 5 --l1 1e-3 --l2 1e-3 --reg-layers fc1 --json --out "$tmp/pen.safetensors" \
    >"$tmp/pen.json" 2>"$tmp/pen.err"
if [ $? -eq 0 ] && [ "$(wc -l <"$tmp/pen.json")" -eq 1 ] && head -c1 "$tmp/pen.json" | grep -q '{'; then ok; else bad "--json: not one JSON line"; fi
for key in '"train_mse":' '"test_mse":' '"generalization_gap":' '"name":"fc1.weight"' '"zero_fraction":' \
    '"l1":0.001' '"reg_layers":"fc1"' '"settings":' '"epochs_run":5'; do
    has "$tmp/pen.json" "$key" "fit --json"
done
# settings recorded in the model file (a JSON string inside the JSON header: escaped quotes)
for key in 'l1\\":0.001' 'l2\\":0.001' 'reg_layers\\":\\"fc1' 'prox_l1\\":false' 'schedule\\":\\"constant' \
    'generalization_gap'; do
    has "$tmp/pen.safetensors" "$key" "model metadata"
done

# the report: per-layer norms and zeros, train and test MSE and the gap
expect 0 "fc1.weight +linear +500" -- "${fitv[@]}" --epochs 2 --l2 1e-3 --out "$tmp/r.safetensors"
expect 0 "generalization gap \(test - train\)" -- "${fitv[@]}" --epochs 2 --out "$tmp/r.safetensors"

# --- proximal L1 gives exact zeros (fc1 only; fc2 keeps none)
"${fit[@]}" --epochs 60 --l1 0.05 --prox-l1 --reg-layers fc1 --json --out "$tmp/prox.safetensors" >"$tmp/prox.json" 2>/dev/null
zf=$(grep -aoE '"name":"fc1.weight"[^}]*"zero_fraction":[0-9.e+-]+' "$tmp/prox.json" | grep -oE '[0-9.e+-]+$')
if awk -v z="${zf:-0}" 'BEGIN { exit !(z > 0.3) }'; then ok; else bad "--prox-l1: fc1 zero fraction ${zf:-none}"; fi
has "$tmp/prox.json" '"name":"fc2.weight"[^}]*"zero_fraction":0[,}]' "fc2 is not selected"

# --- --dropout trains with dropout and saves the plain model: eval gives fit's test MSE
"${fit[@]}" --epochs 5 --dropout 0.3 --json --out "$tmp/drop.safetensors" >"$tmp/drop.json" 2>/dev/null
"$cli" eval "$tmp/drop.safetensors" --json >"$tmp/drop_eval.json" 2>"$tmp/err"
a=$(json_num "$tmp/drop.json" test_mse)
b=$(json_num "$tmp/drop_eval.json" mse)
if [ -n "$a" ] && awk -v a="$a" -v b="${b:-nan}" 'BEGIN { d = a - b; exit !(d < 1e-5 && d > -1e-5) }'; then ok; else bad "--dropout: fit test mse $a, eval mse ${b:-none}"; fi
has "$tmp/drop.safetensors" 'advtrain.arch":"seed-mlp"' "the saved architecture is the plain model"
has "$tmp/drop.safetensors" 'dropout\\":0.3' "dropout setting recorded"

# --- schedules move the learning rate (shown per epoch)
expect 0 "epoch +3/4 .* lr 0.005 " -- "$cli" fit --model seed-mlp --data synthetic --batch 8 --lr 0.01 \
    --epochs 4 --schedule step --step-size 2 --gamma 0.5 --out "$tmp/s.safetensors"
expect 0 "epoch +4/4 .* lr 0.001464" -- "$cli" fit --model seed-mlp --data synthetic --batch 8 --lr 0.01 \
    --epochs 4 --schedule cosine --out "$tmp/s.safetensors"

# --- early stopping with a validation split; adamw's default decay is recorded
expect 0 "saved" -- "${fit[@]}" --epochs 30 --val-split 0.25 --early-stop 2 --min-delta 0.5 \
    --optim adamw --out "$tmp/es.safetensors"
has "$tmp/es.safetensors" 'weight_decay\\":0.01' "adamw default weight decay"
has "$tmp/es.safetensors" 'decoupled\\":true' "adamw is decoupled"
has "$tmp/es.safetensors" 'stopped_early\\":true' "a huge min-delta stops early"

# --- images: a tiny IDX set, every image option at once
mkdir -p "$tmp/idx"
n=120
hdr() { printf '\x00\x00\x08\x03\x00\x00\x00\x78\x00\x00\x00\x1c\x00\x00\x00\x1c'; }
{ hdr; LC_ALL=C awk -v n=$n 'BEGIN { for (i = 0; i < n * 784; i++) printf "%c", 1 + (i * 37 + int(i / 784) * 11) % 250 }'; } >"$tmp/idx/train-images-idx3-ubyte"
{ printf '\x00\x00\x08\x01\x00\x00\x00\x78'; for ((i = 0; i < n; i++)); do printf "\\x0$((i % 10))"; done; } >"$tmp/idx/train-labels-idx1-ubyte"
cp "$tmp/idx/train-images-idx3-ubyte" "$tmp/idx/t10k-images-idx3-ubyte"
cp "$tmp/idx/train-labels-idx1-ubyte" "$tmp/idx/t10k-labels-idx1-ubyte"
expect 0 "saved" -- "$cli" fit --model mlp --data "idx:$tmp/idx" --epochs 3 --batch 16 --augment crop:2,flip \
    --dropout 0.2 --label-smoothing 0.1 --mixup 0.2 --noise 0.1 --clip-grad 1 --max-norm 3 \
    --l2 1e-4 --weight-decay 1e-4 --decoupled --schedule onecycle --val-split 0.2 --early-stop 5 \
    --monitor metric --out "$tmp/img.safetensors"
has "$tmp/out" "accuracy: train .* gap \(train - test\)" "classification report"
has "$tmp/img.safetensors" 'augment\\":\\"crop:2,flip' "augment recorded"
expect 0 "accuracy" -- "$cli" eval "$tmp/img.safetensors"
expect 0 "saved" -- "$cli" fit --model 'flatten,linear:32,relu,dropout:0.5,linear:10' --data "idx:$tmp/idx" \
    --epochs 1 --schedule plateau --plateau-patience 0 --out "$tmp/img2.safetensors" --quiet
expect 0 "saved" -- "$cli" fit --model 'conv:4:3:1:1,relu,dropout2d:0.3,flatten,linear:10' --data "idx:$tmp/idx" \
    --epochs 1 --reg-layers conv --l1 1e-4 --out "$tmp/img3.safetensors" --quiet

# --- misuse: usage errors that name the flag
expect 2 "--early-stop.*--val-split" -- "${fit[@]}" --epochs 2 --early-stop 3
expect 2 "--prox-l1.*--l1" -- "${fit[@]}" --epochs 2 --prox-l1
expect 2 "--reg-layers fc9: .*'fc9'.*fc1, fc2" -- "${fit[@]}" --epochs 2 --l2 1e-3 --reg-layers fc9
expect 2 "--reg-layers conv: .*selects no parameters" -- "${fit[@]}" --epochs 2 --l2 1e-3 --reg-layers conv
expect 2 "--augment bogus" -- "${fit[@]}" --epochs 2 --augment bogus
expect 2 "--augment needs images" -- "${fit[@]}" --epochs 2 --augment flip
expect 2 "--label-smoothing applies to classification" -- "${fit[@]}" --epochs 2 --label-smoothing 0.1
expect 2 "--schedule linear" -- "${fit[@]}" --epochs 2 --schedule linear
expect 2 "--monitor acc" -- "${fit[@]}" --epochs 2 --monitor acc
expect 2 "--decoupled needs --weight-decay" -- "${fit[@]}" --epochs 2 --decoupled
expect 2 "--dropout: .*no hidden Linear" -- "$cli" fit --model linear:10 --data synthetic --epochs 1 --dropout 0.5
expect 2 "--l1 -1: out of range" -- "${fit[@]}" --l1 -1
expect 2 "--dropout 1: out of range" -- "${fit[@]}" --dropout 1
expect 2 "--optim rmsprop" -- "${fit[@]}" --optim rmsprop

finish cli_regularize
