#!/usr/bin/env python3
"""Certified training with auto_LiRPA, the reference implementation, with advtrain's recipe, for
the side-by-side comparison of docs/certified.md (verified accuracy and training time).

    /work/venv-lirpa/bin/python tools/lirpa_train.py --method crown-ibp --eps 0.1 \
        --epochs 6 --train-subset 20000 --out lirpa.safetensors

The same recipe as `advtrain fit --certify METHOD` (src/certify/schedule.c): Fashion-MNIST from
Debian's dataset-fashion-mnist, pixels /255, the first N training images in a fresh random order
every epoch, batches of 128, Adam; the loss kappa * CE(clean) + (1 - kappa) * CE(-lb), lb the
lower bounds of the margins z_y - z_j over each image's eps-ball clipped to [0, 1] (the
worst-case logits of Gowal et al.), computed by auto_LiRPA: IBP with the last Linear folded in
(C), and for CROWN-IBP beta * CROWN-IBP + (1 - beta) * IBP as auto_LiRPA's own
examples/vision/simple_training.py mixes them (no CROWN pass once beta is 0); CROWN-IBP's
intermediate bounds are IBP's (method "CROWN-IBP"), as advtrain's. After WARMUP clean
epochs, eps rises linearly per step over RAMP epochs while kappa falls to KAPPA and beta from 1 to
0. The model is torch_models' (smallcnn by default) and is saved as safetensors that `advtrain
verify` reads, so both sides are verified by the same code. Prints the training time."""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train import load, test_accuracy  # noqa: E402
from torch_models import build, save_safetensors  # noqa: E402
from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm  # noqa: E402


def margins_spec(y, k):
    """C of shape (n, k - 1, k): rows e_y - e_j for every j != y (auto_LiRPA's convention)."""
    eye = torch.eye(k)
    c = eye[y].unsqueeze(1) - eye.unsqueeze(0)
    keep = ~(y.unsqueeze(1) == torch.arange(k).unsqueeze(0))
    return c[keep].view(len(y), k - 1, k)


def schedule(step, nbatches, a):
    """eps, kappa, beta at this step: advtrain's certify_schedule."""
    warm, ramp = a.warmup * nbatches, a.ramp * nbatches
    t = (step + 1 - warm) / ramp if ramp > 0 else (1.0 if step >= warm else 0.0)
    t = min(max(t, 0.0), 1.0)
    beta = 1.0 - t if a.method == "crown-ibp" else 0.0
    return t * a.eps, 1.0 - t * (1.0 - a.kappa), beta


def robust_loss(bounded, x, y, eps, beta, k):
    box = BoundedTensor(x, PerturbationLpNorm(norm=np.inf, x_L=(x - eps).clamp(0, 1), x_U=(x + eps).clamp(0, 1)))
    c = margins_spec(y, k)
    lb, _ = bounded.compute_bounds(x=(box,), IBP=True, C=c, method=None)
    if beta > 1e-5:
        clb, _ = bounded.compute_bounds(x=(box,), C=c, method="CROWN-IBP", bound_upper=False)
        lb = clb * beta + lb * (1 - beta)
    padded = torch.cat((torch.zeros(len(y), 1), lb), dim=1)
    return F.cross_entropy(-padded, torch.zeros(len(y), dtype=torch.long))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smallcnn")
    ap.add_argument("--method", choices=["ibp", "crown-ibp"], default="crown-ibp")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--ramp", type=int, default=3)
    ap.add_argument("--kappa", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--train-subset", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    xtr, ytr = load("train")
    xtr, ytr = xtr[:a.train_subset], ytr[:a.train_subset]
    xte, yte = load("test")
    model = build(a.model, 1, 28)
    bounded = BoundedModule(model, torch.zeros(1, 1, 28, 28), device="cpu")
    opt = torch.optim.Adam(bounded.parameters(), lr=a.lr)
    nbatches = (len(xtr) + a.batch - 1) // a.batch
    k, step, train_time = 10, 0, 0.0
    for epoch in range(1, a.epochs + 1):
        start = time.perf_counter()
        bounded.train()
        order = torch.randperm(len(xtr))
        for i in range(0, len(xtr), a.batch):
            idx = order[i:i + a.batch]
            x, y = xtr[idx].float().div_(255.0).unsqueeze(1), ytr[idx]
            eps, kappa, beta = schedule(step, nbatches, a)
            loss = kappa * F.cross_entropy(bounded(x), y)
            if kappa < 1.0 and eps > 0.0:
                loss = loss + (1.0 - kappa) * robust_loss(bounded, x, y, eps, beta, k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        train_time += time.perf_counter() - start
        acc = test_accuracy(model, xte, yte)
        print(f"epoch {epoch}/{a.epochs} eps {eps:.4f} test {100 * acc:.2f}% "
              f"({train_time:.1f}s training so far)", flush=True)
    print(f"auto_LiRPA {a.method} {a.model} seed {a.seed}: test {100 * acc:.2f}%, "
          f"training {train_time:.1f}s on {a.threads} threads")
    if a.out:
        save_safetensors(a.out, model.state_dict(), {"advtrain.arch": a.model, "advtrain.input": "1,28,28",
                                                     "advtrain.data": "fashion-mnist"})


if __name__ == "__main__":
    main()
