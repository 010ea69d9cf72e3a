#!/usr/bin/python3
"""Writes the PyTorch reference fixtures that tests/test_pytorch.c compares advtrain against.

Run with Debian's PyTorch (python3-torch):  /usr/bin/python3 tools/make_fixtures.py
Output: tests/fixtures/<model>.safetensors, one file per model. Deterministic (torch.manual_seed).
No `safetensors` package is needed: the files are written by hand (8-byte little-endian header
length, JSON header, raw little-endian float32 data, offsets contiguous from 0).

Contents of every file (all tensors F32):
  <param name>           the initial weights under their PyTorch state_dict names
  x                      input batch, values in [0,1): (N, C, H, W), or (N, 10) for seed_mlp
  y                      labels as float values 0..9, shape (N,)   (classification models)
  target                 regression target (N, 10)                  (seed_mlp only)
  logits                 model output at the initial weights, (N, 10)
  loss                   shape [1]: mean cross-entropy (mean MSE for seed_mlp)
  grad.<param name>      dloss/dparam at the initial weights
  input_grad             dloss/dx, same shape as x
  sgd_losses, sgd.<p>    torch.optim.SGD(lr=0.05, momentum=0.9), 5 steps on the same batch
  adam_losses, adam.<p>  torch.optim.Adam(lr=1e-3) (betas 0.9/0.999, eps 1e-8), 5 steps
  sgdn_losses, sgdn.<p>  SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4), 5 steps
  Each *_losses has shape [6]: losses[i] (i < 5) is the loss evaluated just before step i+1,
  losses[5] the loss after the 5th step; <opt>.<p> are the weights after the 5 steps. Every
  optimizer run starts again from the initial weights. A step is: zero_grad, forward, loss,
  backward, optimizer.step().
  metadata: model (file name), torch_version, spec (the advtrain spec / built-in model name),
  input ("C,H,W"), batch, precision.

Precision: the initial weights and x are float32 values; every reference quantity is computed
from them in float64 (model.double()) and rounded to float32 only when written, so the fixtures
are as close to the exact result as float32 storage allows and a float32 implementation is
compared against the truth, not against another float32 rounding.

smallcnn additionally holds two attack results (model in eval mode, loss = mean cross-entropy
over the batch with labels y, gradients taken with respect to the input only):
  fgsm_x = clamp(x + 0.1 * sign(dloss/dx at x), 0, 1)              (at the initial weights)
  pgd_x  = PGD L-inf, eps = 0.1, alpha = 0.02, 10 steps, ZERO start (no random start):
           x_adv = x
           repeat 10 times:
               g = dloss/dx at x_adv
               x_adv = clamp(min(max(x_adv + alpha * sign(g), x - eps), x + eps), 0, 1)
  sign(0) = 0 (torch.sign). Exact gradient zeros and near-ties can flip a sign between
  implementations, so the test accepts a tiny fraction of differing elements.
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
STEPS = 5


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, numpy array); written as F32 in the given order."""
    header = {}
    blobs = []
    offset = 0
    for name, arr in tensors:
        a = np.ascontiguousarray(np.asarray(arr, dtype="<f4"))
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # pad so the data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ---------------------------------------------------------------- models


class SeedCNN(nn.Module):
    def __init__(self, in_c=1, pad=2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, 6, 5, padding=pad)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class SeedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        return self.fc2(self.fc1(x))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def smallcnn():
    return nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(1568, 100), nn.ReLU(), nn.Linear(100, 10))


CUSTOM_SPEC = "conv:4:3:1:1,tanh,avgpool:2,conv:8:3:2:0,leakyrelu:0.1,maxpool:2,flatten,linear:16,sigmoid,linear:10"


def custom():
    features = nn.Sequential(nn.Conv2d(1, 4, 3, stride=1, padding=1), nn.Tanh(), nn.AvgPool2d(2, 2),
                             nn.Conv2d(4, 8, 3, stride=2, padding=0), nn.LeakyReLU(0.1), nn.MaxPool2d(2, 2),
                             nn.Flatten())
    with torch.no_grad():
        flat = features(torch.zeros(1, 1, 28, 28)).shape[1]
    assert flat == 8 * 3 * 3, flat
    return nn.Sequential(*features, nn.Linear(flat, 16), nn.Sigmoid(), nn.Linear(16, 10))


# name, constructor, spec for advtrain, input shape (C,H,W) or (features,), regression?
MODELS = [
    ("seed_cnn", lambda: SeedCNN(1, 2), "seed-cnn", (1, 28, 28), False),
    ("seed_cnn_cifar", lambda: SeedCNN(3, 0), "seed-cnn", (3, 32, 32), False),
    ("mlp", mlp, "mlp", (1, 28, 28), False),
    ("smallcnn", smallcnn, "smallcnn", (1, 28, 28), False),
    ("seed_mlp", SeedMLP, "seed-mlp", (10,), True),
    ("custom", custom, CUSTOM_SPEC, (1, 28, 28), False),
]

# ---------------------------------------------------------------- reference computations


def loss_fn(model, x, lab, regression):
    out = model(x)
    if regression:
        return out, F.mse_loss(out, lab)
    return out, F.cross_entropy(out, lab)


def run_optimizer(make_model, init_state, opt_ctor, x, lab, regression):
    model = make_model().double()
    model.load_state_dict(init_state)
    model.eval()
    opt = opt_ctor(model.parameters())
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        _, loss = loss_fn(model, x, lab, regression)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, loss = loss_fn(model, x, lab, regression)
    losses.append(loss.item())
    return np.array(losses), {k: v.detach().clone() for k, v in model.state_dict().items()}


def input_grad(model, x, lab):
    xa = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(xa), lab)
    (g,) = torch.autograd.grad(loss, xa)
    return g


def fgsm(model, x, lab, eps):
    return torch.clamp(x + eps * torch.sign(input_grad(model, x, lab)), 0, 1)


def pgd(model, x, lab, eps, alpha, steps):
    xa = x.clone()
    for _ in range(steps):
        g = input_grad(model, xa, lab)
        xa = xa + alpha * torch.sign(g)
        xa = torch.min(torch.max(xa, x - eps), x + eps)
        xa = torch.clamp(xa, 0, 1)
    return xa


def make_fixture(index, name, make_model, spec, in_shape, regression):
    torch.manual_seed(1000 + index)
    model32 = make_model()  # float32 initial weights (PyTorch default init)
    x32 = torch.rand(BATCH, *in_shape)
    if regression:
        lab32 = torch.randn(BATCH, 10)
    else:
        lab = torch.randint(0, 10, (BATCH,))

    params = [n for n, _ in model32.named_parameters()]
    init_state = {k: v.double() for k, v in model32.state_dict().items()}
    x = x32.double()
    target = lab32.double() if regression else lab

    # Forward / backward at the initial weights.
    model = make_model().double()
    model.load_state_dict(init_state)
    model.eval()
    xg = x.clone().requires_grad_(True)
    logits, loss = loss_fn(model, xg, target, regression)
    loss.backward()

    tensors = [(n, model32.state_dict()[n].numpy()) for n in params]
    tensors.append(("x", x32.numpy()))
    if regression:
        tensors.append(("target", lab32.numpy()))
    else:
        tensors.append(("y", lab.to(torch.float32).numpy()))
    tensors.append(("logits", logits.detach().numpy()))
    tensors.append(("loss", np.array([loss.item()])))
    pdict = dict(model.named_parameters())
    for n in params:
        tensors.append(("grad." + n, pdict[n].grad.numpy()))
    tensors.append(("input_grad", xg.grad.numpy()))

    optimizers = [
        ("sgd", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        ("adam", lambda p: torch.optim.Adam(p, lr=1e-3)),
        ("sgdn", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    ]
    for tag, ctor in optimizers:
        losses, final = run_optimizer(make_model, init_state, ctor, x, target, regression)
        tensors.append((tag + "_losses", losses))
        for n in params:
            tensors.append((tag + "." + n, final[n].numpy()))

    if name == "smallcnn":
        tensors.append(("fgsm_x", fgsm(model, x, target, 0.1).numpy()))
        tensors.append(("pgd_x", pgd(model, x, target, 0.1, 0.02, 10).numpy()))

    meta = {
        "model": name,
        "torch_version": torch.__version__,
        "spec": spec,
        "input": ",".join(str(d) for d in (in_shape if len(in_shape) == 3 else (in_shape[0], 1, 1))),
        "batch": str(BATCH),
        "precision": "float32 inputs and weights, reference computed in float64",
    }
    path = os.path.join(OUT_DIR, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    print("%-16s %8d params  %8d bytes  loss %.6f" %
          (name, sum(model32.state_dict()[n].numel() for n in params), os.path.getsize(path), loss.item()))


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    for i, (name, ctor, spec, shape, regression) in enumerate(MODELS):
        make_fixture(i, name, ctor, spec, shape, regression)


if __name__ == "__main__":
    main()
