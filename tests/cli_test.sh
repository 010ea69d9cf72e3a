#!/usr/bin/env bash
# End-to-end checks of the advtrain CLI: a tiny training run and its model file, and bad input:
# every failure must give a clear message naming the culprit and a non-zero exit, never a crash.
source "$(dirname "$0")/harness.sh"

# --- a tiny run end to end: seed-mlp on the synthetic regression set
expect 0 "saved" -- "$cli" fit --model seed-mlp --data synthetic --epochs 3 --batch 8 --lr 0.01 \
    --out "$tmp/seed-mlp.safetensors" --quiet
expect 0 '"mse":' -- "$cli" eval "$tmp/seed-mlp.safetensors" --json
expect 0 "mse" -- "$cli" eval "$tmp/seed-mlp.safetensors"
# the same seed gives the same file, byte for byte
"$cli" fit --model seed-mlp --data synthetic --epochs 3 --batch 8 --lr 0.01 --threads 2 \
    --out "$tmp/a.safetensors" --quiet >/dev/null
"$cli" fit --model seed-mlp --data synthetic --epochs 3 --batch 8 --lr 0.01 --threads 2 \
    --out "$tmp/b.safetensors" --quiet >/dev/null
if cmp -s "$tmp/a.safetensors" "$tmp/b.safetensors"; then ok; else bad "same seed, different model files"; fi

# --- help and usage
expect 0 "usage: advtrain fit" -- "$cli" fit --help
expect 0 "usage: advtrain eval" -- "$cli" eval --help
expect 0 "commands:" -- "$cli" --help
expect 2 "unknown command 'frobnicate'" -- "$cli" frobnicate
expect 2 "unknown flag '--bogus'" -- "$cli" fit --bogus 3
expect 2 "--epochs abc: not a whole number" -- "$cli" fit --epochs abc
expect 2 "--lr -1: out of range" -- "$cli" fit --lr -1
expect 2 "--lr nan: not a finite number" -- "$cli" fit --lr nan
expect 2 "--batch needs a value" -- "$cli" fit --batch
expect 2 "--optim rmsprop: unknown optimizer" -- "$cli" fit --optim rmsprop --data synthetic
expect 2 "which model" -- "$cli" eval

# --- bad models and data
expect 2 "unknown model 'resnet9000'" -- "$cli" fit --model resnet9000 --data synthetic --epochs 1
expect 2 "--model conv:8: .*needs at least 2" -- "$cli" fit --model conv:8 --data synthetic --epochs 1
expect 2 "mlp takes 784 inputs" -- "$cli" fit --model mlp --data synthetic --epochs 1
expect 1 "$tmp/nowhere" -- "$cli" fit --data "mnist:$tmp/nowhere" --epochs 1
expect 1 "unknown data source|valid" -- "$cli" fit --data "imagenet" --epochs 1
expect 1 "$tmp/missing.safetensors" -- "$cli" eval "$tmp/missing.safetensors"

# truncated, corrupted and foreign model files
head -c 100 "$tmp/seed-mlp.safetensors" >"$tmp/truncated.safetensors"
expect 1 "truncated.safetensors" -- "$cli" eval "$tmp/truncated.safetensors"
printf 'this is not a model file at all, just text\n' >"$tmp/garbage.safetensors"
expect 1 "garbage.safetensors" -- "$cli" eval "$tmp/garbage.safetensors"
: >"$tmp/empty.safetensors"
expect 1 "empty.safetensors" -- "$cli" eval "$tmp/empty.safetensors"
# a model that does not fit the data: seed-mlp weights evaluated on images
expect 1 "samples of|784|10" -- "$cli" eval "$tmp/seed-mlp.safetensors" --data "mnist:$tmp/nowhere"

# truncated IDX data
mkdir -p "$tmp/idx"
printf '\x00\x00\x08\x03\x00\x00\x00\x0a\x00\x00\x00\x1c\x00\x00\x00\x1c' >"$tmp/idx/train-images-idx3-ubyte"
printf '\x00\x00\x08\x01\x00\x00\x00\x0a' >"$tmp/idx/train-labels-idx1-ubyte"
cp "$tmp/idx/train-images-idx3-ubyte" "$tmp/idx/t10k-images-idx3-ubyte"
cp "$tmp/idx/train-labels-idx1-ubyte" "$tmp/idx/t10k-labels-idx1-ubyte"
expect 1 "truncated" -- "$cli" fit --data "idx:$tmp/idx" --model mlp --epochs 1

# writing the model where it cannot go (a missing directory is created: tests/cli_daily_outputs.sh)
touch "$tmp/a_file"
expect 1 "$tmp/a_file/m.safetensors" -- "$cli" fit --model seed-mlp --data synthetic --epochs 1 \
    --out "$tmp/a_file/m.safetensors" --quiet

finish cli_test
