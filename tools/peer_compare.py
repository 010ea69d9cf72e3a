#!/usr/bin/env python3
"""advtrain's attacks against torchattacks on the same weights, images and eps.

Needs torch and torchattacks from PyPI in a virtual environment (the repository ignores .venv*):
    python3 -m venv .venv-peers && .venv-peers/bin/pip install torch torchattacks
    .venv-peers/bin/python tools/peer_compare.py MODEL.safetensors --eps 0.02 --samples 1000

For each eps it runs, on the first N Fashion-MNIST test images:
  advtrain   `advtrain eval MODEL --attack pgd,auto --eps E --samples N --json` (PGD-20, alpha 2.5 eps/20,
             random start; auto = APGD-CE + APGD-T + Square, AutoAttack's standard settings)
  PyTorch    torchattacks.PGD(eps, alpha=2.5 eps/20, steps=20, random_start=True) and
             torchattacks.AutoAttack(norm='Linf', eps, version='standard', n_classes=10, seed=0)
             on the model file loaded into the equivalent nn.Module (tools/torch_models.py), in eval mode,
and prints robust accuracy and wall time for each, as a Markdown table (and --json for machines).
Both sides use the same number of CPU threads (--threads).

Robust accuracy = the fraction of the N images classified correctly after the attack (an image
misclassified on the clean input counts as not robust on both sides). torchattacks' AutoAttack
"standard" runs APGD and APGD-T with torchattacks' default of 10 steps (the original AutoAttack uses
100), plus FAB-T and Square with 5000 queries; advtrain's auto uses 100 steps and no FAB-T.
"""
import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import build, load_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load_idx_test(directory, n):
    def opener(base):
        for name in (base + ".gz", base):
            path = os.path.join(directory, name)
            if os.path.exists(path):
                return gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")
        raise SystemExit(f"peer_compare: {base} not found in {directory} (apt-get install dataset-fashion-mnist)")

    with opener("t10k-images-idx3-ubyte") as f:
        magic, count, h, w = struct.unpack(">IIII", f.read(16))
        assert magic == 0x803
        count = min(count, n)
        x = torch.frombuffer(bytearray(f.read(count * h * w)), dtype=torch.uint8)
    with opener("t10k-labels-idx1-ubyte") as f:
        magic, _ = struct.unpack(">II", f.read(8))
        assert magic == 0x801
        y = torch.frombuffer(bytearray(f.read(count)), dtype=torch.uint8)
    return x.float().div(255.0).view(count, 1, h, w), y.long()


def robust_accuracy(model, x, y, batch=500):
    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            hits += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return hits / len(x)


def run_torch(attack, model, x, y, batch):
    """Robust accuracy, seconds and largest L-inf perturbation of one attack. The seconds cover
    what advtrain's per-attack "seconds" cover: a clean pass over the images, the attack calls,
    and the pass that judges the examples (robust accuracy)."""
    start = time.time()
    robust_accuracy(model, x, y, batch)
    adv = torch.cat([attack(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)])
    acc = robust_accuracy(model, adv, y, batch)
    seconds = time.time() - start
    linf = (adv - x).abs().flatten(1).max(1)[0].max().item()
    return acc, seconds, linf


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--eps", default="0.02", help="comma-separated, 0-1 pixel scale")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--advtrain", default=os.path.join(ROOT, "build", "advtrain"))
    ap.add_argument("--skip-autoattack", action="store_true", help="only PGD-20 on the PyTorch side")
    ap.add_argument("--apgd", action="store_true",
                    help="also compare APGD-CE and APGD-T (100 steps, 9 targets) one to one with torchattacks'")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    import torchattacks

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    state, meta = load_safetensors(args.model)
    arch = meta.get("advtrain.arch", "smallcnn")
    model = build(arch)
    model.load_state_dict(state)
    model.eval()
    x, y = load_idx_test(args.data, args.samples)
    clean = robust_accuracy(model, x, y)
    results = {"model": args.model, "arch": arch, "samples": len(x), "threads": args.threads,
               "torch": torch.__version__, "torchattacks": torchattacks.__version__,
               "clean_accuracy_torch": clean, "eps_scale": "0-1 pixels", "runs": []}
    print(f"{args.model} ({arch}), first {len(x)} Fashion-MNIST test images, {args.threads} threads; "
          f"torch {torch.__version__}, torchattacks {torchattacks.__version__}")
    print(f"clean accuracy (PyTorch) {100 * clean:.2f}%\n")
    for eps in [float(e) for e in args.eps.split(",")]:
        cmd = [args.advtrain, "eval", args.model, "--attack", "pgd,auto", "--eps", str(eps), "--samples",
               str(len(x)), "--threads", str(args.threads), "--json", "--no-sanity"]
        start = time.time()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"peer_compare: {' '.join(cmd)} failed: {out.stderr}")
        ours = json.loads(out.stdout)
        wall = time.time() - start
        by = {a["attack"]: a for a in ours["attacks"]}
        run = {"eps": eps, "advtrain_clean": ours["clean_accuracy"],
               "advtrain_pgd20": by["pgd"]["robust_accuracy"], "advtrain_pgd20_seconds": by["pgd"]["seconds"],
               "advtrain_auto": by["auto"]["robust_accuracy"], "advtrain_auto_seconds": by["auto"]["seconds"],
               "advtrain_auto_members": by["auto"].get("members", []), "advtrain_wall_seconds": wall}
        pgd = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 20, steps=20, random_start=True)
        run["torch_pgd20"], run["torch_pgd20_seconds"], linf = run_torch(pgd, model, x, y, args.batch)
        assert linf <= eps + 1e-6
        if not args.skip_autoattack:
            aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
            run["torch_autoattack"], run["torch_autoattack_seconds"], linf = run_torch(aa, model, x, y, args.batch)
            assert linf <= eps + 1e-6
        if args.apgd:
            cmd = [args.advtrain, "eval", args.model, "--attack", "apgd-ce,apgd-t", "--eps", str(eps), "--samples",
                   str(len(x)), "--threads", str(args.threads), "--json", "--no-sanity"]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"peer_compare: {' '.join(cmd)} failed: {out.stderr}")
            by = {a["attack"]: a for a in json.loads(out.stdout)["attacks"]}
            for tag, ours_name, atk in (
                    ("apgd_ce", "apgd-ce", torchattacks.APGD(model, eps=eps, norm="Linf", steps=100, n_restarts=1,
                                                            loss="ce", seed=0)),
                    ("apgd_t", "apgd-t", torchattacks.APGDT(model, eps=eps, norm="Linf", steps=100, n_restarts=1,
                                                           n_classes=10, seed=0))):
                run["advtrain_" + tag] = by[ours_name]["robust_accuracy"]
                run["advtrain_" + tag + "_seconds"] = by[ours_name]["seconds"]
                run["torch_" + tag], run["torch_" + tag + "_seconds"], linf = run_torch(atk, model, x, y, args.batch)
                assert linf <= eps + 1e-6
        results["runs"].append(run)
        print(f"eps {eps:g} ({eps * 255:.2f}/255)")
        print("| attack | advtrain robust acc | time | torchattacks robust acc | time |")
        print("|---|---|---|---|---|")
        print(f"| PGD-20 | {100 * run['advtrain_pgd20']:.2f}% | {run['advtrain_pgd20_seconds']:.1f} s | "
              f"{100 * run['torch_pgd20']:.2f}% | {run['torch_pgd20_seconds']:.1f} s |")
        if not args.skip_autoattack:
            print(f"| auto / AutoAttack | {100 * run['advtrain_auto']:.2f}% | {run['advtrain_auto_seconds']:.1f} s | "
                  f"{100 * run['torch_autoattack']:.2f}% | {run['torch_autoattack_seconds']:.1f} s |")
        else:
            print(f"| auto | {100 * run['advtrain_auto']:.2f}% | {run['advtrain_auto_seconds']:.1f} s | | |")
        for tag, label in (("apgd_ce", "APGD-CE (100 steps)"), ("apgd_t", "APGD-T (9 x 100 steps)")):
            if "torch_" + tag in run:
                print(f"| {label} | {100 * run['advtrain_' + tag]:.2f}% | {run['advtrain_' + tag + '_seconds']:.1f} s | "
                      f"{100 * run['torch_' + tag]:.2f}% | {run['torch_' + tag + '_seconds']:.1f} s |")
        print()
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
