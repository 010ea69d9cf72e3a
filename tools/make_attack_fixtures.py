#!/usr/bin/python3
"""Writes the PyTorch references that tests/test_attack_torch.c compares advtrain's attack library with.

Run with Debian's PyTorch (python3-torch):  /usr/bin/python3 tools/make_attack_fixtures.py
Output: tests/fixtures/attack_<model>.safetensors for model in (smallcnn, mlp). Deterministic
(torch.manual_seed). Like tools/make_fixtures.py, it writes safetensors by hand and computes every
reference in float64 from float32 weights and inputs, rounding to float32 only when writing.

Every file holds (all F32; the model in eval mode; losses summed over the batch, so each sample's
gradient is its own; sign(0) = 0):
  <param name>   the weights (PyTorch default init, seed 4000 + model index)
  x              8 inputs uniform in [0,1)
  y, t           labels and target classes (t != y), as floats
  fgsm_l2_x      clamp(x + 1.0 * g / ||g||_2, 0, 1), g = d CE / dx at x
  pgd_l2_x       PGD L2, eps 1.5, alpha 0.3, 10 steps, ZERO start:
                   x_adv = x_adv + alpha * g / (||g|| + 1e-12)
                   delta = x_adv - x; delta *= min(1, eps / ||delta||); x_adv = clamp(x + delta, 0, 1)
  cw_x           PGD L-inf on the CW margin max_{j!=y} z_j - z_y, eps 0.1, alpha 0.02, 10 steps, zero start:
                   x_adv = clamp(min(max(x_adv + alpha * sign(g), x - eps), x + eps), 0, 1)
  pgd_t_x        targeted PGD L-inf on -CE(z, t), eps 0.1, alpha 0.02, 10 steps, zero start
  dlr, dlr_grad  AutoAttack's DLR loss per sample at x, -(z_y - max_{j!=y} z_j) / (z_(1) - z_(3) + 1e-12)
                 with z_(k) the k-th largest logit, and the gradient of its sum w.r.t. x
  dlr_t, dlr_t_grad  the targeted DLR loss -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2 + 1e-12) and gradient
  ce, ce_grad    per-sample cross-entropy and the gradient of its sum
  metadata: model, spec, torch_version.
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
BATCH = 8


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name, arr in tensors:
        b = np.ascontiguousarray(np.asarray(arr, dtype="<f4")).tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.asarray(arr).shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def smallcnn():
    return nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(1568, 100), nn.ReLU(), nn.Linear(100, 10))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def ce_loss(z, y, t):
    return F.cross_entropy(z, y, reduction="none")


def ce_targeted(z, y, t):
    return -F.cross_entropy(z, t, reduction="none")


def cw_loss(z, y, t):
    others = z.clone()
    others[torch.arange(z.shape[0]), y] = -float("inf")
    return others.max(1)[0] - z[torch.arange(z.shape[0]), y]


def dlr_loss(z, y, t):
    zs, ind = z.sort(dim=1)
    top_is_y = (ind[:, -1] == y).to(z.dtype)
    u = torch.arange(z.shape[0])
    return -(z[u, y] - zs[:, -2] * top_is_y - zs[:, -1] * (1.0 - top_is_y)) / (zs[:, -1] - zs[:, -3] + 1e-12)


def dlr_targeted(z, y, t):
    zs, _ = z.sort(dim=1)
    u = torch.arange(z.shape[0])
    return -(z[u, y] - z[u, t]) / (zs[:, -1] - 0.5 * (zs[:, -3] + zs[:, -4]) + 1e-12)


def loss_and_grad(model, x, y, t, fn):
    xa = x.clone().requires_grad_(True)
    per = fn(model(xa), y, t)
    (g,) = torch.autograd.grad(per.sum(), xa)
    return per.detach(), g


def l2(v):
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def pgd_linf(model, x, y, t, fn, eps, alpha, steps):
    xa = x.clone()
    for _ in range(steps):
        _, g = loss_and_grad(model, xa, y, t, fn)
        xa = torch.clamp(torch.min(torch.max(xa + alpha * torch.sign(g), x - eps), x + eps), 0, 1)
    return xa


def pgd_l2(model, x, y, t, eps, alpha, steps):
    xa = x.clone()
    for _ in range(steps):
        _, g = loss_and_grad(model, xa, y, t, ce_loss)
        xa = xa + alpha * g / (l2(g) + 1e-12)
        delta = xa - x
        delta = delta * torch.clamp(eps / l2(delta), max=1.0)
        xa = torch.clamp(x + delta, 0, 1)
    return xa


def make(index, name, ctor):
    torch.manual_seed(4000 + index)
    model32 = ctor()
    x32 = torch.rand(BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (BATCH,))
    t = (y + torch.randint(1, 10, (BATCH,))) % 10
    model = ctor().double()
    model.load_state_dict({k: v.double() for k, v in model32.state_dict().items()})
    model.eval()
    x = x32.double()

    tensors = [(n, p.detach().numpy()) for n, p in model32.state_dict().items()]
    tensors += [("x", x32.numpy()), ("y", y.float().numpy()), ("t", t.float().numpy())]
    _, g = loss_and_grad(model, x, y, t, ce_loss)
    tensors.append(("fgsm_l2_x", torch.clamp(x + 1.0 * g / (l2(g) + 1e-12), 0, 1).numpy()))
    tensors.append(("pgd_l2_x", pgd_l2(model, x, y, t, 1.5, 0.3, 10).numpy()))
    tensors.append(("cw_x", pgd_linf(model, x, y, t, cw_loss, 0.1, 0.02, 10).numpy()))
    tensors.append(("pgd_t_x", pgd_linf(model, x, y, t, ce_targeted, 0.1, 0.02, 10).numpy()))
    for tag, fn in (("ce", ce_loss), ("dlr", dlr_loss), ("dlr_t", dlr_targeted)):
        per, g = loss_and_grad(model, x, y, t, fn)
        tensors += [(tag, per.numpy()), (tag + "_grad", g.numpy())]
    path = os.path.join(OUT_DIR, "attack_%s.safetensors" % name)
    write_safetensors(path, tensors, {"model": name, "spec": name, "torch_version": torch.__version__})
    print("%-8s -> %s (%d bytes)" % (name, os.path.relpath(path), os.path.getsize(path)))


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    make(0, "smallcnn", smallcnn)
    make(1, "mlp", mlp)
