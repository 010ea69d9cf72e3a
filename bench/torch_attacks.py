"""torchattacks' PGD and APGD-CE on an advtrain model file, for bench/compare.py.

    .venv-peers/bin/python bench/torch_attacks.py MODEL.safetensors --eps 0.1 --samples 1000 \
        --apgd-steps 100 --threads 2 --json

On the first N Fashion-MNIST test images, with the model loaded into the equivalent nn.Module in
eval mode (the loading, data reading, attack call and accuracy code are tools/peer_compare.py's):
  torchattacks.PGD(eps, alpha=2.5*eps/steps, steps=--pgd-steps, random_start=True)
  torchattacks.APGD(norm='Linf', eps, steps=--apgd-steps, n_restarts=1, loss='ce', seed=0)
Times what advtrain's per-attack seconds cover: a clean pass, the attack calls and the pass that
judges the examples (not process start, model load or data reading), and prints robust accuracy,
seconds and the largest L-inf perturbation of each as one JSON object."""
import argparse
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from peer_compare import load_idx_test, robust_accuracy, run_torch  # noqa: E402
from torch_models import build, load_safetensors  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--apgd-steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--attacks", default="pgd,apgd-ce", help="which to run (default pgd,apgd-ce)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    import torchattacks

    torch.set_num_threads(a.threads)
    state, meta = load_safetensors(a.model)
    arch = meta.get("advtrain.arch", "smallcnn")
    model = build(arch)
    model.load_state_dict(state)
    model.eval()
    x, y = load_idx_test(a.data, a.samples)
    out = {"model": a.model, "arch": arch, "samples": len(x), "eps": a.eps, "threads": a.threads,
           "batch": a.batch, "torch": torch.__version__, "torchattacks": torchattacks.__version__,
           "clean_accuracy": robust_accuracy(model, x, y)}
    for name in a.attacks.split(","):
        torch.manual_seed(0)
        if name == "pgd":
            atk = torchattacks.PGD(model, eps=a.eps, alpha=2.5 * a.eps / a.pgd_steps, steps=a.pgd_steps,
                                   random_start=True)
            steps = a.pgd_steps
        elif name == "apgd-ce":
            atk = torchattacks.APGD(model, norm="Linf", eps=a.eps, steps=a.apgd_steps, n_restarts=1, loss="ce",
                                    seed=0)
            steps = a.apgd_steps
        else:
            sys.exit(f"torch_attacks: --attacks: unknown {name!r} (pgd, apgd-ce)")
        acc, seconds, linf = run_torch(atk, model, x, y, a.batch)
        if linf > a.eps + 1e-6:
            sys.exit(f"torch_attacks: {name} left the eps-ball: {linf} > {a.eps}")
        out[name] = {"steps": steps, "robust_accuracy": acc, "seconds": seconds, "max_perturbation": linf}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"torch {out['torch']}, torchattacks {out['torchattacks']}, {len(x)} images, eps {a.eps}, "
              f"{a.threads} threads; clean {100 * out['clean_accuracy']:.2f}%")
        for name in a.attacks.split(","):
            r = out[name]
            print(f"  {name} ({r['steps']} steps): robust {100 * r['robust_accuracy']:.2f}%, {r['seconds']:.2f} s")


if __name__ == "__main__":
    main()
