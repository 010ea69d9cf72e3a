#!/usr/bin/env bash
# PyTorch interop both ways (docs/interop.md): tools/interop_check.py with Debian's python3-torch
# loads advtrain-trained models into their nn.Module (strict) and compares input, logits (via
# `advtrain export --c`), per-sample predictions and accuracy with advtrain's; saves a torch model
# as safetensors (with and without the advtrain metadata) for `advtrain eval`; and fine-tunes it
# with `advtrain fit --weights`. Exit 77 (skip) when /usr/bin/python3 cannot import torch.
source "$(dirname "$0")/harness.sh"
src="${ADVTRAIN_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
python=/usr/bin/python3

if ! "$python" -c 'import torch' >/dev/null 2>&1; then
    echo "cli_interop: skipped: $python cannot import torch (Debian: apt-get install python3-torch)"
    exit 77
fi

# interop_check.py prints one line per check and the first mismatch; 77 when it skips (no data)
# Under the sanitizers the BatchNorm models' part (iv) would train three models for minutes; the
# plain build runs it, and cli_graph and test_graph_pytorch cover their files under ASan.
extra=()
[ "${ADVTRAIN_SANITIZED:-0}" = 1 ] && extra=(--skip-batchnorm)
"$python" "$src/tools/interop_check.py" "$cli" "$tmp/check" --samples 500 "${extra[@]}"
code=$?
if [ "$code" -eq 77 ]; then
    echo "cli_interop: skipped by tools/interop_check.py"
    exit 77
fi
if [ "$code" -eq 0 ]; then ok; else bad "tools/interop_check.py exited $code"; fi

# a PyTorch file without the metadata: eval says what is missing, and --model fixes it
bare="$tmp/check/torch-smallcnn-bare.safetensors"
if [ -f "$bare" ]; then
    expect 1 "no advtrain.arch/advtrain.input metadata.*--model" -- "$cli" eval "$bare" --samples 10
    expect 0 "accuracy" -- "$cli" eval "$bare" --model smallcnn --data fashion-mnist --samples 10
    # the wrong architecture: the missing state_dict key, or the shape, is named
    expect 1 "no tensor 'conv1.weight'" -- "$cli" eval "$bare" --model seed-cnn --samples 10
    expect 1 "tensor '5.weight' has shape 100x1568, the model needs 50x1568" -- "$cli" eval "$bare" \
        --model conv:16:4:2:1,relu,conv:32:4:2:1,relu,flatten,linear:50,relu,linear:10 --samples 10
fi

finish cli_interop
