#!/usr/bin/python3
"""Loads an advtrain model file into the equivalent PyTorch nn.Module with load_state_dict
(strict) and prints its test accuracy on Fashion-MNIST (or another IDX directory).

    /usr/bin/python3 tools/torch_eval.py MODEL.safetensors [IDX_DIR]

Compare with `advtrain eval MODEL.safetensors`: the two accuracies must agree."""
import gzip
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import build, load_safetensors  # noqa: E402


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        blob = f.read()
    ndim = blob[3]
    dims = [int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(directory, name):
    for candidate in (name + ".gz", name):
        p = os.path.join(directory, candidate)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{directory}/{name}(.gz)")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    directory = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/datasets/fashion-mnist"
    state, meta = load_safetensors(path)
    c, h, w = (int(v) for v in meta["advtrain.input"].split(","))
    model = build(meta["advtrain.arch"], c, h)
    model.load_state_dict(state, strict=True)
    model.eval()
    images = read_idx(find(directory, "t10k-images-idx3-ubyte"))
    labels = read_idx(find(directory, "t10k-labels-idx1-ubyte"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(-1, c, h, w)
    y = torch.from_numpy(labels.astype(np.int64))
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    correct = int((pred == y).sum())
    print(f"pytorch {torch.__version__}: {path}: accuracy {100.0 * correct / len(y):.2f}% "
          f"({correct}/{len(y)})")


if __name__ == "__main__":
    main()
