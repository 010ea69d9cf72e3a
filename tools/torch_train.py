#!/usr/bin/python3
"""The same training recipes in PyTorch, for side-by-side accuracy and time comparisons.

    /usr/bin/python3 tools/torch_train.py --model seed-cnn --epochs 10 --lr 0.05 --seed 1
    /usr/bin/python3 tools/torch_train.py --model smallcnn --adv pgd --eps 0.1 --steps 7

Fashion-MNIST from Debian's dataset-fashion-mnist, pixels /255, a fresh random order every
epoch, cross-entropy, SGD with momentum. --adv pgd trains on PGD examples (random start, steps of
2.5*eps/steps, crafted in eval mode), as advtrain fit --adv pgd. Prints test accuracy per epoch,
the training time, and optionally saves the weights (--out) for advtrain eval."""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_eval import find, read_idx  # noqa: E402
from torch_models import build, save_safetensors  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def load(split):
    prefix = "train" if split == "train" else "t10k"
    x = torch.from_numpy(read_idx(find(DATA, f"{prefix}-images-idx3-ubyte")).copy())
    y = torch.from_numpy(read_idx(find(DATA, f"{prefix}-labels-idx1-ubyte")).astype("int64"))
    return x, y


def test_accuracy(model, xte, yte):
    """Accuracy on the test images (uint8, N x 28 x 28), in eval mode, 1000 at a time."""
    model.eval()
    with torch.no_grad():
        xt = xte.float().div(255.0).unsqueeze(1)
        return sum(int((model(xt[j:j + 1000]).argmax(1) == yte[j:j + 1000]).sum())
                   for j in range(0, len(xt), 1000)) / len(xt)


def pgd(model, x, y, eps, alpha, steps):
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        with torch.no_grad():
            x_adv = torch.min(torch.max(x_adv + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="seed-cnn")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                    help="cosine: CosineAnnealingLR(T_max=epochs, eta_min=0) stepped after each "
                         "epoch, as advtrain fit --schedule cosine")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--adv", choices=["none", "pgd"], default="none")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    xtr, ytr = load("train")
    xte, yte = load("test")
    model = build(a.model, 1, 28)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs)
             if a.schedule == "cosine" else None)
    alpha = 2.5 * a.eps / a.steps
    train_time = 0.0
    for epoch in range(1, a.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(xtr))
        for i in range(0, len(xtr), a.batch):
            idx = order[i:i + a.batch]
            x = xtr[idx].float().div_(255.0).unsqueeze(1)
            y = ytr[idx]
            if a.adv == "pgd":
                model.eval()
                x = pgd(model, x, y, a.eps, alpha, a.steps)
            model.train()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
        train_time += time.perf_counter() - start
        acc = test_accuracy(model, xte, yte)
        print(f"epoch {epoch}/{a.epochs} test {100 * acc:.2f}% ({train_time:.1f}s training so far)", flush=True)
    print(f"torch {torch.__version__} {a.model} seed {a.seed}: test {100 * acc:.2f}%, "
          f"training {train_time:.1f}s on {a.threads} threads")
    if a.out:
        save_safetensors(a.out, model.state_dict(), {"advtrain.arch": a.model,
                                                     "advtrain.input": "1,28,28",
                                                     "advtrain.data": "fashion-mnist"})


if __name__ == "__main__":
    main()
