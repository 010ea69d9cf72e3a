"""The five advtrain benchmark workloads written in PyTorch, for a side-by-side comparison.

    python bench/torch_bench.py --model smallcnn --mode pgd7 --threads 1 --json

Same data (Fashion-MNIST, bytes converted to [0,1] floats per batch), same batch (128; 512 for
pgd20-eval), same optimizer (SGD lr 0.01 momentum 0.9), same attack settings as
`advtrain bench`. Attacks are crafted in eval mode with gradients for the input only.

    python bench/torch_bench.py --model smallcnn --fit-epoch --threads 2 --json

instead trains one epoch over the whole training set (batch 128, no warm-up), then measures test
accuracy, like `advtrain fit --epochs 1`: for the peak resident memory of a whole training run
(--batches N stops after N batches, for smoke tests)."""
import argparse
import gzip
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from torch_models import build  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(name):
    for candidate in (name + ".gz", name):
        path = os.path.join(DATA, candidate)
        if os.path.exists(path):
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                blob = f.read()
            ndim = blob[3]
            dims = [int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    sys.exit(f"torch_bench: {DATA}/{name}(.gz) not found: sudo apt-get install dataset-fashion-mnist")


def pgd(model, x, y, eps, alpha, steps):
    """L-inf PGD with a uniform random start; the input gradient only."""
    delta = torch.empty_like(x).uniform_(-eps, eps)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def fit_epoch(a):
    """One epoch of plain training (shuffled, batch 128) and a test accuracy pass."""
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    images = torch.from_numpy(read_idx("train-images-idx3-ubyte").copy())
    labels = torch.from_numpy(read_idx("train-labels-idx1-ubyte").astype(np.int64))
    test_x = torch.from_numpy(read_idx("t10k-images-idx3-ubyte").copy())
    test_y = torch.from_numpy(read_idx("t10k-labels-idx1-ubyte").astype(np.int64))
    model = build(a.model, 1, 28)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    order = torch.randperm(len(images))
    batches = (len(images) + 127) // 128
    if a.batches is not None:
        batches = min(batches, a.batches)
    start = time.perf_counter()
    model.train()
    for b in range(batches):
        idx = order[b * 128:(b + 1) * 128]
        x = images[idx].float().div_(255.0).unsqueeze(1)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(test_x), 1000):
            x = test_x[i:i + 1000].float().div_(255.0).unsqueeze(1)
            hits += (model(x).argmax(1) == test_y[i:i + 1000]).sum().item()
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {"model": a.model, "mode": "fit-epoch", "threads": a.threads, "batches": batches,
              "seconds": seconds, "samples_per_s": batches * 128 / seconds,
              "test_accuracy": hits / len(test_x), "torch": torch.__version__, "peak_rss_mb": peak_mb}
    if a.json:
        print(json.dumps(result))
    else:
        print(f"torch {torch.__version__} {a.model}: one epoch ({batches} batches) in {seconds:.1f}s, "
              f"test accuracy {100 * result['test_accuracy']:.2f}%, peak {peak_mb:.0f} MB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smallcnn")
    ap.add_argument("--mode", default="plain", choices=["plain", "l1l2", "fgsm", "pgd7", "pgd20-eval"])
    ap.add_argument("--batches", type=int, default=None, help="timed batches (default 50)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fit-epoch", action="store_true",
                    help="one epoch of plain training over the whole training set, then test accuracy")
    a = ap.parse_args()
    if a.fit_epoch:
        return fit_epoch(a)
    if a.batches is None:
        a.batches = 50
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    split = "t10k" if a.mode == "pgd20-eval" else "train"
    images = torch.from_numpy(read_idx(f"{split}-images-idx3-ubyte").copy())
    labels = torch.from_numpy(read_idx(f"{split}-labels-idx1-ubyte").astype(np.int64))
    model = build(a.model, 1, 28)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    weights = [p for p in model.parameters() if p.dim() > 1]
    batch = 512 if a.mode == "pgd20-eval" else 128
    n = len(images)
    nxt = 0
    start = 0.0
    for it in range(a.warmup + a.batches):
        if it == a.warmup:
            start = time.perf_counter()
        idx = torch.arange(nxt, nxt + batch) % n
        nxt = (nxt + batch) % n
        x = images[idx].float().div_(255.0).unsqueeze(1)
        y = labels[idx]
        if a.mode == "pgd20-eval":
            model.eval()
            pgd(model, x, y, 0.1, 0.01, 20)
            continue
        if a.mode in ("fgsm", "pgd7"):
            model.eval()
            steps, alpha = (1, 0.125) if a.mode == "fgsm" else (7, 2.5 * 0.1 / 7)
            x = pgd(model, x, y, 0.1, alpha, steps)
        model.train()
        loss = F.cross_entropy(model(x), y)
        if a.mode == "l1l2":
            loss = loss + 1e-5 * sum(w.abs().sum() for w in weights) + 1e-4 * sum((w * w).sum() for w in weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    rate = a.batches * batch / seconds
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if a.json:
        print(json.dumps({"model": a.model, "mode": a.mode, "threads": a.threads, "batch": batch,
                          "batches": a.batches, "seconds": seconds, "samples_per_s": rate,
                          "torch": torch.__version__, "peak_rss_mb": peak_mb}))
    else:
        print(f"torch {torch.__version__} {a.model} {a.mode}: {rate:.0f} samples/s "
              f"({a.threads} threads, {seconds:.2f}s, peak {peak_mb:.0f} MB)")


if __name__ == "__main__":
    main()
