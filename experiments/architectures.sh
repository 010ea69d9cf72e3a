#!/usr/bin/env bash
# Reproduces the accuracy rows of docs/architectures.md, one run per call:
#
#   bash experiments/architectures.sh MODEL SIDE [SEED]
#
# MODEL: a built-in model (resnet8, preact-resnet18:16, dscnn, seed-cnn, ...). SIDE: advtrain
# (`advtrain fit`, 2 threads) or torch (tools/torch_train.py with Debian's /usr/bin/python3,
# or PYTHON=path for another PyTorch). The recipe is the core one of docs/architectures.md:
# Fashion-MNIST, 10 epochs, batch 128, SGD lr 0.05 momentum 0.9, no augmentation, seed SEED
# (default 1); SCHEDULE=cosine decays the learning rate to 0 over the 10 epochs (CosineAnnealingLR
# stepped per epoch, on both sides; default constant). Prints one line: model, side, seed, test accuracy in %, training seconds. Model
# files and logs go to OUT_DIR (default ~/.local/share/advtrain/experiments).
set -euo pipefail
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage
repo="$(cd "$(dirname "$0")/.." && pwd)"
model="$1" side="$2" seed="${3:-1}"
out="${OUT_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/advtrain/experiments}"
mkdir -p "$out"
schedule="${SCHEDULE:-constant}"
tag="${model//:/-w}-$side-seed$seed"
[ "$schedule" = constant ] || tag="$tag-$schedule"
case "$side" in
    advtrain)
        "${ADVTRAIN:-$repo/build/advtrain}" fit --model "$model" --data fashion-mnist --epochs 10 \
            --batch 128 --lr 0.05 --momentum 0.9 --schedule "$schedule" --seed "$seed" --threads 2 --json --force \
            --out "$out/$tag.safetensors" >"$out/$tag.json" 2>"$out/$tag.log"
        python3 - "$out/$tag.json" "$model" "$seed" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
acc, secs = d["results"]["test_accuracy"], d["seconds"]
print(f"{sys.argv[2]} advtrain seed {sys.argv[3]}: test {100 * acc:.2f}%, {secs:.1f} s")
PY
        ;;
    torch)
        "${PYTHON:-/usr/bin/python3}" "$repo/tools/torch_train.py" --model "$model" --seed "$seed" \
            --schedule "$schedule" --threads 2 --out "$out/$tag.safetensors" | tee "$out/$tag.log" | tail -1 ;;
    *) usage ;;
esac
