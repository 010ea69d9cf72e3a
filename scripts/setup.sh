#!/usr/bin/env bash
# First command of the README: install dependencies, build, and run the main job
# (the tutorial's seed-cnn LeNet on Fashion-MNIST), printing its test accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
./build/advtrain fit --model seed-cnn --data fashion-mnist --epochs 10 --batch 128 --lr 0.05 \
    --momentum 0.9 --seed 1 --out seed-cnn.safetensors
./build/advtrain eval seed-cnn.safetensors
