#!/usr/bin/python3
"""Writes the PyTorch reference fixtures for the regularization suite (tests/test_regularize_pytorch.c).

Run with Debian's PyTorch (python3-torch):  /usr/bin/python3 tools/make_reg_fixtures.py
Output (deterministic, torch.manual_seed):
  tests/fixtures/reg_optim.safetensors       optimizers, losses, clipping, whole training runs
  tests/fixtures/reg_schedules.safetensors   learning-rate sequences of each schedule
The files are written by hand like tools/make_fixtures.py (no `safetensors` package needed).
Initial weights and inputs are float32 values; every reference is computed from them in float64
and rounded to float32 when written.

reg_optim.safetensors, network "net" = nn.Sequential(Linear(6,8), Tanh(), Linear(8,4))
(advtrain spec "linear:8,tanh,linear:4", input 6x1x1), batch x (10, 6), labels y (10,):
  net.<p>                      initial weights
  x, y                         inputs and labels (labels as float values)
  <opt>.<p>, <opt>_losses      weights after 5 steps of opt on mean cross-entropy (full batch) and
                               the 6 losses (before each step, after the last); opt is one of
    sgd_wd         SGD(lr=0.1, momentum=0.9, weight_decay=0.05)               every parameter
    sgd_wd_w       SGD(lr=0.1, momentum=0.9) with weight_decay=0.05 on the weights only
                   (param groups: weights wd 0.05, biases wd 0)
    adam_wd        Adam(lr=0.01, weight_decay=0.1)         (coupled: an L2 term in the gradient)
    adamw          AdamW(lr=0.01, weight_decay=0.1)        (decoupled)
    adamw_default  AdamW(lr=1e-3)                          (torch's default weight_decay 0.01)
  ls_loss, ls_grad             cross_entropy(logits(x), y, label_smoothing=0.1) at the initial
                               weights and d loss / d logits; ls_logits the logits
  soft_targets, soft_loss, soft_grad
                               cross_entropy with probability targets (rows of soft_targets)
  clip_max, clip_norm, clip.<p>
                               clip_grad_norm_(max_norm=clip_max) (40% of the norm) on the
                               gradients of the mean cross-entropy at the initial weights: the
                               returned norm and the clipped gradients
  noclip_norm                  the same norm (max_norm=100: nothing is scaled)
  Whole training runs, 5 full-batch steps each (advtrain's at_train with batch = n):
    seed-mlp (fc1 = Linear(10,50), fc2 = Linear(50,10)), x_reg (16,10), t_reg (16,10), MSE:
      run_pen.<p>   SGD(lr=0.05, momentum=0.9); loss = mse + 1e-3*sum|fc1.w| + 1e-3*sum fc1.w^2,
                    then clip_grad_norm_(0.5), then step
      run_prox.<p>  SGD(lr=0.1); after each step fc1.weight = soft_threshold(fc1.weight, lr*0.05),
                    then each row of fc1.weight rescaled to norm <= 0.3 (c/(norm+1e-7))
      mlp.<p>       the seed-mlp initial weights
    net on (x, y), cross-entropy with label_smoothing 0.1:
      run_adamw.<p> AdamW(lr=0.05, weight_decay=0.2) on the weights only (biases wd 0), StepLR(2, 0.5)
                    stepped after each of the 5 epochs

reg_schedules.safetensors, each a sequence of learning rates (base lr 0.1):
  step      StepLR(step_size=3, gamma=0.5): lr used in epochs 0..11
  cosine    CosineAnnealingLR(T_max=10, eta_min=0.001): epochs 0..14
  onecycle  OneCycleLR(max_lr=0.1, total_steps=20, pct_start=0.3, anneal_strategy='linear',
            cycle_momentum=False, div_factor=25, final_div_factor=1e4): steps 0..19
  plateau_metrics, plateau      ReduceLROnPlateau(mode='min', factor=0.1, patience=2,
                                threshold=1e-4, cooldown=1, min_lr=1e-4): lr after each step(metric)
  plateau_max_metrics, plateau_max   mode='max', factor=0.5, patience=3
  plateau_default_metrics, plateau_default   all defaults (factor 0.1, patience 10)
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
STEPS = 5


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name, arr in tensors:
        a = np.ascontiguousarray(np.asarray(arr, dtype="<f4"))
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
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


def small_net():
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))


class SeedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        return self.fc2(self.fc1(x))


def fresh(make, state):
    m = make().double()
    m.load_state_dict(state)
    return m


def weights_and_biases(model):
    w = [p for n, p in model.named_parameters() if n.endswith("weight")]
    b = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return w, b


def run_optimizer(make, state, ctor, x, y):
    model = fresh(make, state)
    opt = ctor(model)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    with torch.no_grad():
        losses.append(F.cross_entropy(model(x), y).item())
    return np.array(losses), model.state_dict()


def optim_fixtures(tensors):
    torch.manual_seed(3001)
    net32 = small_net()
    x32 = torch.rand(10, 6) * 2 - 1
    y = torch.randint(0, 4, (10,))
    state = {k: v.double() for k, v in net32.state_dict().items()}
    x = x32.double()
    names = list(state.keys())
    for n in names:
        tensors.append(("net." + n, net32.state_dict()[n].numpy()))
    tensors.append(("x", x32.numpy()))
    tensors.append(("y", y.to(torch.float32).numpy()))

    def groups(model, wd):
        w, b = weights_and_biases(model)
        return [{"params": w, "weight_decay": wd}, {"params": b, "weight_decay": 0.0}]

    optimizers = [
        ("sgd_wd", lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)),
        ("sgd_wd_w", lambda m: torch.optim.SGD(groups(m, 0.05), lr=0.1, momentum=0.9)),
        ("adam_wd", lambda m: torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=0.1)),
        ("adamw", lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)),
        ("adamw_default", lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3)),
    ]
    for tag, ctor in optimizers:
        losses, final = run_optimizer(small_net, state, ctor, x, y)
        tensors.append((tag + "_losses", losses))
        for n in names:
            tensors.append((tag + "." + n, final[n].numpy()))

    # Label-smoothed cross-entropy and probability targets.
    model = fresh(small_net, state)
    logits = model(x).detach().requires_grad_(True)
    loss = F.cross_entropy(logits, y, label_smoothing=0.1)
    loss.backward()
    tensors += [("ls_logits", logits.detach().numpy()), ("ls_loss", np.array([loss.item()])),
                ("ls_grad", logits.grad.numpy())]
    soft32 = torch.softmax(torch.randn(10, 4) * 2, dim=1)
    soft = soft32.double()
    logits2 = logits.detach().clone().requires_grad_(True)
    loss2 = F.cross_entropy(logits2, soft)
    loss2.backward()
    tensors += [("soft_targets", soft32.numpy()), ("soft_loss", np.array([loss2.item()])),
                ("soft_grad", logits2.grad.numpy())]

    # Gradient clipping by global norm.
    model = fresh(small_net, state)
    F.cross_entropy(model(x), y).backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=100.0)
    tensors.append(("noclip_norm", np.array([norm.item()])))
    clip_max = float(np.float32(round(0.4 * norm.item(), 4)))  # clips to 40% of the norm
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=clip_max)
    assert norm.item() > clip_max, "the clipping fixture must actually clip"
    tensors.append(("clip_max", np.array([clip_max])))
    tensors.append(("clip_norm", np.array([norm.item()])))
    for n, p in model.named_parameters():
        tensors.append(("clip." + n, p.grad.numpy()))

    # Whole training runs (full batch), matching at_train's order of operations.
    torch.manual_seed(3002)
    mlp32 = SeedMLP()
    xr32 = torch.randn(16, 10)
    tr32 = torch.randn(16, 10)
    mstate = {k: v.double() for k, v in mlp32.state_dict().items()}
    for n in mstate:
        tensors.append(("mlp." + n, mlp32.state_dict()[n].numpy()))
    tensors += [("x_reg", xr32.numpy()), ("t_reg", tr32.numpy())]
    xr, tr = xr32.double(), tr32.double()

    model = fresh(SeedMLP, mstate)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    clipped = 0
    for _ in range(STEPS):
        opt.zero_grad()
        w = model.fc1.weight
        loss = F.mse_loss(model(xr), tr) + 1e-3 * w.abs().sum() + 1e-3 * (w * w).sum()
        loss.backward()
        clipped += torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5).item() > 0.5
        opt.step()
    assert clipped >= 3, "run_pen must exercise clipping"
    for n, v in model.state_dict().items():
        tensors.append(("run_pen." + n, v.numpy()))

    model = fresh(SeedMLP, mstate)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(STEPS):
        opt.zero_grad()
        F.mse_loss(model(xr), tr).backward()
        opt.step()
        with torch.no_grad():
            w = model.fc1.weight
            w.copy_(torch.sign(w) * torch.clamp(w.abs() - 0.1 * 0.05, min=0))
            norms = w.norm(dim=1, keepdim=True)
            w.mul_(torch.where(norms > 0.3, 0.3 / (norms + 1e-7), torch.ones_like(norms)))
    zeros = (model.fc1.weight == 0).sum().item()
    assert zeros > 0, "run_prox must produce exact zeros"
    for n, v in model.state_dict().items():
        tensors.append(("run_prox." + n, v.numpy()))

    model = fresh(small_net, state)
    w, b = weights_and_biases(model)
    opt = torch.optim.AdamW([{"params": w, "weight_decay": 0.2}, {"params": b, "weight_decay": 0.0}], lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(STEPS):
        opt.zero_grad()
        F.cross_entropy(model(x), y, label_smoothing=0.1).backward()
        opt.step()
        sched.step()
    for n, v in model.state_dict().items():
        tensors.append(("run_adamw." + n, v.numpy()))
    return {"prox_zeros": str(zeros)}


def lr_sequence(make_sched, n, per_step=False):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make_sched(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


def plateau_sequence(metrics, **kw):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
    lrs = []
    for m in metrics:
        opt.step()
        sched.step(m)
        lrs.append(opt.param_groups[0]["lr"])
    return np.array(lrs)


def schedule_fixtures(tensors):
    S = torch.optim.lr_scheduler
    tensors.append(("step", lr_sequence(lambda o: S.StepLR(o, step_size=3, gamma=0.5), 12)))
    tensors.append(("cosine", lr_sequence(lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.001), 15)))
    tensors.append(("onecycle", lr_sequence(
        lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=20, pct_start=0.3, anneal_strategy="linear",
                               cycle_momentum=False, div_factor=25.0, final_div_factor=1e4), 20)))
    m = [1.0, 0.9, 0.95, 0.91, 0.92, 0.89, 0.9, 0.9, 0.9, 0.9, 0.8999, 0.9, 0.9, 0.5, 0.6, 0.6, 0.6,
         0.6, 0.6, 0.6]
    tensors += [("plateau_metrics", np.array(m)),
                ("plateau", plateau_sequence(m, mode="min", factor=0.1, patience=2, threshold=1e-4,
                                             cooldown=1, min_lr=1e-4))]
    mm = [0.5, 0.6, 0.6, 0.61, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    tensors += [("plateau_max_metrics", np.array(mm)),
                ("plateau_max", plateau_sequence(mm, mode="max", factor=0.5, patience=3))]
    md = [2.0 - 0.1 * min(i, 5) for i in range(40)]
    tensors += [("plateau_default_metrics", np.array(md)), ("plateau_default", plateau_sequence(md))]


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    meta = {"torch_version": torch.__version__,
            "precision": "float32 inputs and weights, reference computed in float64"}
    t = []
    torch.set_default_dtype(torch.float32)
    extra = optim_fixtures(t)
    path = os.path.join(OUT_DIR, "reg_optim.safetensors")
    write_safetensors(path, t, dict(meta, spec="linear:8,tanh,linear:4", input="6,1,1", **extra))
    print("%-28s %6d bytes" % (os.path.basename(path), os.path.getsize(path)))
    t = []
    schedule_fixtures(t)
    path = os.path.join(OUT_DIR, "reg_schedules.safetensors")
    write_safetensors(path, t, meta)
    print("%-28s %6d bytes" % (os.path.basename(path), os.path.getsize(path)))


if __name__ == "__main__":
    main()
