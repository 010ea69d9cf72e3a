#!/usr/bin/python3
"""Writes the PyTorch reference fixture that tests/test_graph_pytorch.c compares advtrain's graph
engine against: one network that uses every graph-only feature (BatchNorm2d, BatchNorm1d, residual
Add with a strided 1x1 projection, depthwise and grouped Conv2d, bias-free Conv2d, global average
pooling), in training mode and in eval mode.

Run with Debian's PyTorch (python3-torch):  /usr/bin/python3 tools/make_graph_fixtures.py
Output: tests/fixtures/graph_bn_res_dw.safetensors. Deterministic (torch.manual_seed(2000)).
No `safetensors` package is needed: the file is written by hand as in tools/make_fixtures.py
(8-byte little-endian header length, JSON header, raw little-endian data, offsets contiguous from
0), except that num_batches_tracked tensors are written as I64, as torch.save/safetensors would
write PyTorch's int64 counters; every other tensor is F32.

The network (advtrain spec, stored as the "spec" metadata; input 3x12x12, batch 8, 10 classes):
  conv:8:3:1:1:bias=0,bn,a=relu,conv:8:3:1:1:groups=8:bias=0,bn,relu,conv:8:1:1:0,bn,add:a,
  b=relu,conv:16:3:2:1:bias=0,bn,relu,conv:16:3:1:1:groups=4:bias=0,m=bn,conv:16:1:2:0:bias=0@b,
  add:m,relu,gap,flatten,linear:12,bn1d,relu,linear:10
Nodes are numbered as nn.Sequential numbers its children, so the state_dict names ("0.weight",
"1.running_mean", ...) are advtrain's:
   0 Conv2d(3,8,3,p1,bias=False)  1 BN2d(8)  2 ReLU = a
   3 Conv2d(8,8,3,p1,groups=8,bias=False) (depthwise)  4 BN2d(8)  5 ReLU
   6 Conv2d(8,8,1) (bias)  7 BN2d(8)  8 Add(7, a)  9 ReLU = b
  10 Conv2d(8,16,3,s2,p1,bias=False)  11 BN2d(16)  12 ReLU
  13 Conv2d(16,16,3,p1,groups=4,bias=False)  14 BN2d(16) = m
  15 Conv2d(8,16,1,s2,bias=False) reading b (projection)  16 Add(15, m)  17 ReLU
  18 AdaptiveAvgPool2d(1)  19 Flatten  20 Linear(16,12)  21 BN1d(12)  22 ReLU  23 Linear(12,10)

Initial state: convolution and linear weights/biases are PyTorch's default init; every BatchNorm's
weight, bias, running_mean, running_var and num_batches_tracked are drawn at random (weight
U(0.5,1.5), bias N(0,0.2^2), running_mean N(0,0.3^2), running_var U(0.5,2), num_batches_tracked
an integer in [3,50)), so that eval mode (normalising by the running statistics) differs from
training mode and from the identity, and the running-statistics update is tested from a
non-default state.

Contents of the file:
  <state_dict name>       the initial parameters AND buffers (num_batches_tracked I64, 0-dim)
  x                       input batch (8,3,12,12), values in [0,1)
  y                       labels as float values 0..9, shape (8,)
  Training mode (model.train(): BatchNorm uses the batch's statistics), from the initial state:
  logits_train (8,10), loss_train [1] (mean cross-entropy), grad_train.<param> for every
  parameter, input_grad_train (dloss/dx, shaped like x)
  Eval mode (model.eval(): BatchNorm uses the running statistics), from the initial state:
  logits_eval, loss_eval, grad_eval.<param>, input_grad_eval
  sgd_losses [6], sgd.<param>, sgd.<buffer>: torch.optim.SGD(lr=0.05, momentum=0.9), 5 steps in
      training mode on the same batch from the initial state. A step is zero_grad, forward
      (which also moves the running statistics), loss, backward, optimizer.step().
      sgd_losses[i] (i < 5) is the loss just before step i+1, sgd_losses[5] the loss after the
      5th step, from one more training-mode forward (batch statistics, as the other five).
      sgd.<param> are the weights after the 5 steps; sgd.<buffer> every buffer (running_mean,
      running_var, num_batches_tracked = initial + 5) after the 5 steps, taken BEFORE the forward
      that gives sgd_losses[5] (that forward would move them a 6th time).
  pgd_x                   PGD in eval mode from the initial state, loss = mean cross-entropy
      against y, gradient with respect to the input only; L-inf, eps = 0.1, alpha = 0.02,
      10 steps, ZERO start, as smallcnn's pgd_x in tools/make_fixtures.py:
           x_adv = x
           repeat 10 times:
               g = dloss/dx at x_adv
               x_adv = clamp(min(max(x_adv + alpha * sign(g), x - eps), x + eps), 0, 1)
      sign(0) = 0. The state (parameters and buffers) is unchanged afterwards (checked here).
  metadata: model ("graph_bn_res_dw"), torch_version, spec, input ("3,12,12"), batch ("8"),
  precision, params (the parameter names in order), buffers (the buffer names in order).

Precision: the initial state and x are float32 values; every reference quantity is computed from
them in float64 (model.double(); num_batches_tracked stays int64) and rounded to float32 only when
written.
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
NAME = "graph_bn_res_dw"
BATCH = 8
IN_SHAPE = (3, 12, 12)
STEPS = 5
SEED = 2000

SPEC = ("conv:8:3:1:1:bias=0,bn,a=relu,conv:8:3:1:1:groups=8:bias=0,bn,relu,conv:8:1:1:0,bn,add:a,"
        "b=relu,conv:16:3:2:1:bias=0,bn,relu,conv:16:3:1:1:groups=4:bias=0,m=bn,"
        "conv:16:1:2:0:bias=0@b,add:m,relu,gap,flatten,linear:12,bn1d,relu,linear:10")


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, array); integer arrays are written as I64, all others as F32, in
    the given order."""
    header = {}
    blobs = []
    offset = 0
    for name, arr in tensors:
        a = np.asarray(arr)
        if np.issubdtype(a.dtype, np.integer):
            a, dtype = np.array(a, dtype="<i8", order="C"), "I64"  # keeps 0-dim shapes
        else:
            a, dtype = np.array(a, dtype="<f4", order="C"), "F32"
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
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


# ---------------------------------------------------------------- the network


class GraphNet(nn.Module):
    """The spec's graph; the parameterised nodes are registered under their node index."""

    def __init__(self):
        super().__init__()
        mods = {
            0: nn.Conv2d(3, 8, 3, 1, 1, bias=False),
            1: nn.BatchNorm2d(8),
            3: nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False),
            4: nn.BatchNorm2d(8),
            6: nn.Conv2d(8, 8, 1, 1, 0),
            7: nn.BatchNorm2d(8),
            10: nn.Conv2d(8, 16, 3, 2, 1, bias=False),
            11: nn.BatchNorm2d(16),
            13: nn.Conv2d(16, 16, 3, 1, 1, groups=4, bias=False),
            14: nn.BatchNorm2d(16),
            15: nn.Conv2d(8, 16, 1, 2, 0, bias=False),
            20: nn.Linear(16, 12),
            21: nn.BatchNorm1d(12),
            23: nn.Linear(12, 10),
        }
        for i in sorted(mods):
            self.add_module(str(i), mods[i])

    def node(self, i):
        return self._modules[str(i)]

    def forward(self, x):
        a = F.relu(self.node(1)(self.node(0)(x)))
        h = F.relu(self.node(4)(self.node(3)(a)))
        h = self.node(7)(self.node(6)(h))
        b = F.relu(h + a)                                     # 8 add:a, 9 relu = b
        h = F.relu(self.node(11)(self.node(10)(b)))
        m = self.node(14)(self.node(13)(h))                   # m
        h = F.relu(self.node(15)(b) + m)                      # 15 @b, 16 add:m, 17 relu
        h = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)     # 18 gap, 19 flatten
        h = F.relu(self.node(21)(self.node(20)(h)))
        return self.node(23)(h)


def randomize_batchnorm(model):
    """Non-default BatchNorm state so that eval mode and the running update are tested."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                c = mod.num_features
                mod.weight.copy_(torch.rand(c) + 0.5)
                mod.bias.copy_(0.2 * torch.randn(c))
                mod.running_mean.copy_(0.3 * torch.randn(c))
                mod.running_var.copy_(torch.rand(c) * 1.5 + 0.5)
                mod.num_batches_tracked.fill_(int(torch.randint(3, 50, ()).item()))


# ---------------------------------------------------------------- reference computations


def fresh(init_state):
    model = GraphNet().double()
    model.load_state_dict(init_state)
    return model


def state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def forward_backward(init_state, training, x, lab):
    model = fresh(init_state)
    model.train(training)
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    loss = F.cross_entropy(logits, lab)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return logits.detach(), loss.item(), grads, xg.grad.detach()


def run_sgd(init_state, x, lab):
    model = fresh(init_state)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), lab)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    final = state_copy(model)  # buffers moved exactly STEPS times
    with torch.no_grad():
        losses.append(F.cross_entropy(model(x), lab).item())  # train mode: moves them once more
    return np.array(losses), final


def input_grad(model, x, lab):
    xa = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(xa), lab)
    (g,) = torch.autograd.grad(loss, xa)
    return g


def pgd(model, x, lab, eps, alpha, steps):
    xa = x.clone()
    for _ in range(steps):
        g = input_grad(model, xa, lab)
        xa = xa + alpha * torch.sign(g)
        xa = torch.min(torch.max(xa, x - eps), x + eps)
        xa = torch.clamp(xa, 0, 1)
    return xa


def to_np(t):
    """float64 -> float32 array; int64 counters stay integers (written as I64)."""
    t = t.detach()
    return t.numpy() if not t.is_floating_point() else t.to(torch.float32).numpy()


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    torch.manual_seed(SEED)

    model32 = GraphNet()  # float32 initial state
    randomize_batchnorm(model32)
    x32 = torch.rand(BATCH, *IN_SHAPE)
    lab = torch.randint(0, 10, (BATCH,))

    params = [n for n, _ in model32.named_parameters()]
    buffers = [n for n, _ in model32.named_buffers()]
    state32 = model32.state_dict()
    assert list(state32.keys()) == [k for k in state32], "ordered"
    init_state = {k: (v.double() if v.is_floating_point() else v.clone()) for k, v in state32.items()}
    x = x32.double()

    tensors = [(k, to_np(v)) for k, v in state32.items()]  # params and buffers, state_dict order
    tensors.append(("x", x32.numpy()))
    tensors.append(("y", lab.to(torch.float32).numpy()))

    for tag, training in (("train", True), ("eval", False)):
        logits, loss, grads, dx = forward_backward(init_state, training, x, lab)
        tensors.append(("logits_" + tag, to_np(logits)))
        tensors.append(("loss_" + tag, np.array([loss], dtype=np.float32)))
        for n in params:
            tensors.append(("grad_%s.%s" % (tag, n), to_np(grads[n])))
        tensors.append(("input_grad_" + tag, to_np(dx)))
        print("%-5s loss %.6f" % (tag, loss))

    losses, final = run_sgd(init_state, x, lab)
    tensors.append(("sgd_losses", losses.astype(np.float32)))
    for n in params + buffers:
        tensors.append(("sgd." + n, to_np(final[n])))
    for n in buffers:
        if n.endswith("num_batches_tracked"):
            assert int(final[n]) == int(init_state[n]) + STEPS, n
    print("sgd losses", " ".join("%.6f" % v for v in losses))

    model = fresh(init_state)
    model.eval()
    before = state_copy(model)
    tensors.append(("pgd_x", to_np(pgd(model, x, lab, 0.1, 0.02, 10))))
    assert same_state(before, state_copy(model)), "PGD in eval mode changed the state"
    assert same_state(before, init_state)

    meta = {
        "model": NAME,
        "torch_version": torch.__version__,
        "spec": SPEC,
        "input": ",".join(str(d) for d in IN_SHAPE),
        "batch": str(BATCH),
        "precision": "float32 inputs and weights, reference computed in float64",
        "params": ",".join(params),
        "buffers": ",".join(buffers),
    }
    path = os.path.join(OUT_DIR, NAME + ".safetensors")
    write_safetensors(path, tensors, meta)
    print("%s: %d params, %d buffer values, %d tensors, %d bytes" %
          (path, sum(state32[n].numel() for n in params), sum(state32[n].numel() for n in buffers),
           len(tensors), os.path.getsize(path)))


if __name__ == "__main__":
    main()
