#!/usr/bin/python3
"""Writes the auto_LiRPA reference fixture that tests/test_bounds.c compares advtrain's certified
bounds against (issue 26): interval bounds of the logits and CROWN-IBP bounds of the margins of the
graph network of tools/make_graph_fixtures.py (BatchNorm in eval mode with random statistics,
residual adds, a strided 1x1 projection, depthwise and grouped convs, bias-free convs, global
average pooling, BatchNorm1d) on boxes around 6 inputs.

Run with Debian's PyTorch and auto_LiRPA from PyPI, in a venv that sees the system packages:
    python3 -m venv --system-site-packages /work/venv-lirpa
    /work/venv-lirpa/bin/pip install --no-deps auto-lirpa==0.3 && /work/venv-lirpa/bin/pip install appdirs tqdm pyyaml
    /work/venv-lirpa/bin/python tools/make_bound_fixtures.py
(auto-lirpa 0.3, the newest on PyPI, declares torch < 1.13 but runs on Debian's 1.13.)
Output: tests/fixtures/bounds_lirpa.safetensors. Deterministic (torch.manual_seed(2600)).

Contents: the network's state_dict (the initial state of make_graph_fixtures.py's GraphNet, drawn
with this script's seed), x (6,3,12,12) in [0,1), y (6,) labels as floats, eps [1] = 0.02, and,
over the box [max(x - eps, 0), min(x + eps, 1)] in eval mode, computed in float64:
  ibp_lo, ibp_hi (6,10)   method='IBP': every logit of the box lies within
  crown_ibp (6,10)        method='CROWN-IBP' with C rows e_y - e_j: lower bounds of z_y - z_j
                          (the row j = y is written as +inf)
Metadata: model, spec, input, torch_version, lirpa_version, eps.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_graph_fixtures import IN_SHAPE, SPEC, GraphNet, randomize_batchnorm, write_safetensors  # noqa: E402

import auto_LiRPA  # noqa: E402
from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "bounds_lirpa.safetensors")
N, K, EPS, SEED = 6, 10, 0.02, 2600


def main():
    torch.manual_seed(SEED)
    model = GraphNet()
    randomize_batchnorm(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = model.double().eval()
    x = torch.rand(N, *IN_SHAPE)
    y = torch.randint(0, K, (N,))
    xd = x.double()
    lo, hi = (xd - EPS).clamp(0, 1), (xd + EPS).clamp(0, 1)
    bounded = BoundedModule(model, torch.zeros(1, *IN_SHAPE, dtype=torch.float64))
    box = BoundedTensor(xd, PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi))
    ibp_lo, ibp_hi = bounded.compute_bounds(x=(box,), method="IBP")
    C = torch.zeros(N, K, K, dtype=torch.float64)
    for s in range(N):
        for j in range(K):
            if j != y[s]:
                C[s, j, y[s]], C[s, j, j] = 1.0, -1.0
    crown, _ = bounded.compute_bounds(x=(box,), C=C, method="CROWN-IBP")
    crown = crown.detach().clone()
    # Full CROWN (every ReLU's input bounded by CROWN too); auto_LiRPA 0.3's default "patches"
    # convolution mode fails on this graph, its "matrix" mode computes the same bounds.
    torch.set_default_dtype(torch.float64)  # matrix mode makes its identity in the default type
    matrix = BoundedModule(model, torch.zeros(1, *IN_SHAPE, dtype=torch.float64), bound_opts={"conv_mode": "matrix"})
    full, _ = matrix.compute_bounds(x=(box,), C=C, method="CROWN", bound_upper=False)
    full = full.detach().clone()
    for s in range(N):
        crown[s, y[s]] = float("inf")
        full[s, y[s]] = float("inf")
    # The box must hold the forward pass of its centre and corners.
    with torch.no_grad():
        for pt in (xd, lo, hi):
            z = model(pt)
            assert bool((z >= ibp_lo - 1e-9).all() and (z <= ibp_hi + 1e-9).all())
    tensors = [(k, v.numpy()) for k, v in state.items()]
    tensors += [("x", x.numpy()), ("y", y.float().numpy()), ("eps", np.array([EPS], dtype=np.float32)),
                ("ibp_lo", ibp_lo.detach().numpy()), ("ibp_hi", ibp_hi.detach().numpy()),
                ("crown_ibp", crown.numpy()), ("crown", full.numpy())]
    meta = {"model": "bounds_lirpa", "spec": SPEC, "input": ",".join(map(str, IN_SHAPE)),
            "torch_version": torch.__version__, "lirpa_version": auto_LiRPA.__version__, "eps": EPS}
    write_safetensors(OUT, tensors, meta)
    print(f"wrote {OUT}: ibp width {float((ibp_hi - ibp_lo).mean()):.4f}, crown-ibp margins mean "
          f"{float(crown[torch.isfinite(crown)].mean()):.4f}, crown margins mean {float(full[torch.isfinite(full)].mean()):.4f}")


if __name__ == "__main__":
    main()
