#!/usr/bin/env bash
# First command of the README: install dependencies, build, and run the main job: the
# tutorial's whole recipe on Fashion-MNIST. Its LeNet (seed-cnn) is trained with cross-entropy,
# SGD momentum 0.9, L1 + L2 penalties on fc1 and the FGSM adversarial loss added to the clean
# loss; then it is evaluated clean and under PGD-20 and the AutoAttack-style ensemble.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
./build/advtrain fit --model seed-cnn --data fashion-mnist --epochs 10 --batch 128 --lr 0.05 \
    --momentum 0.9 --l1 1e-5 --l2 1e-4 --reg-layers fc1 --adv fgsm --eps 0.1 --seed 1 \
    --out seed-cnn.safetensors
./build/advtrain eval seed-cnn.safetensors
# robust accuracy at the training radius (0-1 pixel scale); auto on the first 1000 test images
./build/advtrain eval seed-cnn.safetensors --attack pgd --eps 0.1 --steps 20
./build/advtrain eval seed-cnn.safetensors --attack auto --eps 0.1 --samples 1000
