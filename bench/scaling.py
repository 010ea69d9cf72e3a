#!/usr/bin/env python3
"""Data-parallel scaling of advtrain (docs/distributed.md), measured here and modelled on paper.

    python3 bench/scaling.py [--advtrain build/advtrain] [--batches 20] [--repeats 3]

1. Measured on this machine: `advtrain fit` for one epoch as 1 process x 2 threads and as
   `mpirun -np 2` x 1 thread (smallcnn: plain on 10,000 images, PGD-7 adversarial training on
   5,000; the gradient sum per step is then an MPI_Allreduce between two processes of one
   machine), each the best of --repeats runs of the training loop (metrics.csv's seconds: no data
   loading, no evaluation), with rank 0's share of it spent in the sums (fit --json:
   allreduce_seconds, which includes waiting for the other rank), and the whole runs' ratio.
2. Modelled: for N = 8, 16, 64 nodes on 10, 25 and 100 GbE, each node one rank training 128
   images per step (weak scaling: the global batch is 128 N, with the learning rate scaled by N
   after a warm-up, Goyal et al. 2017), a step costs its compute (measured here: `advtrain bench`,
   2 threads, so a node is this 2-core machine) plus a ring allreduce of the gradients, not
   overlapped (advtrain sums after the backward pass): 2 (N-1)/N x bytes / bandwidth +
   2 (N-1) x latency, bytes = 4 x (parameters + 5). Bandwidth: 90% of the line rate;
   latency 25 us a hop (TCP). Efficiency = compute / (compute + allreduce).

Adversarial training departs from the linear-scaling rule: its larger batches are known to
lose robustness faster than clean accuracy, and PGD-AT's step costs 8 passes, so its allreduce
share is 8 times smaller than clean training's (shown by the pgd7 rows)."""
import argparse
import csv
import json
import os
import shutil
import subprocess
import tempfile

MODELS = ["smallcnn", "resnet8", "preact-resnet18:8"]
MODES = ["plain", "pgd7"]
NODES = [8, 16, 64]
LINKS = {"10 GbE": 10e9, "25 GbE": 25e9, "100 GbE": 100e9}
LATENCY = 25e-6


def bench(exe, model, mode, batches):
    out = subprocess.run([exe, "bench", "--model", model, "--mode", mode, "--batches", str(batches), "--threads", "2",
                          "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def fit_run(cmd):
    """fit's JSON, plus train_seconds: the training loop's time (metrics.csv), without data loading and
    the evaluations before and after."""
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(cmd + ["--out", os.path.join(d, "m.safetensors"), "--checkpoint-dir", os.path.join(d, "ck")],
                             check=True, capture_output=True, text=True, cwd=d).stdout
        with open(os.path.join(d, "ck", "metrics.csv")) as f:
            rows = list(csv.DictReader(f))
    r = json.loads(out)
    r["train_seconds"] = sum(float(row["seconds"]) for row in rows)
    return r


def measured(exe, repeats):
    if not shutil.which("mpirun"):
        print("mpirun not found: the measured comparison is skipped")
        return
    mpi = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2", exe]
    print("| smallcnn, 1 epoch | 1 process x 2 threads | 2 ranks x 1 thread | 2 ranks against 1 process | "
          "allreduce share of the training loop (rank 0) | whole run, 2 ranks against 1 process |")
    print("|---|---|---|---|---|---|")
    for name, extra in [("plain, 10,000 images", ["--train-subset", "10000"]),
                        ("PGD-7 eps 0.1, 5,000 images", ["--train-subset", "5000", "--adv", "pgd", "--eps", "0.1",
                                                         "--steps", "7"])]:
        common = ["fit", "--model", "smallcnn", "--epochs", "1", "--json", "--quiet"] + extra
        ones = [fit_run([exe] + common + ["--threads", "2"]) for _ in range(repeats)]
        twos = [fit_run(mpi + common + ["--threads", "1"]) for _ in range(repeats)]
        one, two = min(r["train_seconds"] for r in ones), min(r["train_seconds"] for r in twos)
        share = min(r["allreduce_seconds"] / r["train_seconds"] for r in twos)
        whole = min(r["seconds"] for r in ones) / min(r["seconds"] for r in twos)
        print(f"| {name} | {one:.2f} s | {two:.2f} s | {one / two:.2f}x as fast | {100 * share:.1f}% | {whole:.2f}x |")


def allreduce_seconds(params, nodes, bits_per_s):
    nbytes = 4 * (params + 5)
    return 2 * (nodes - 1) / nodes * nbytes / (0.9 * bits_per_s / 8) + 2 * (nodes - 1) * LATENCY


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--advtrain", default=os.path.join(os.path.dirname(__file__), "..", "build", "advtrain"))
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    measured(a.advtrain, a.repeats)
    print()
    print("| model | mode | parameters | allreduce MB | step (128 images) ms | " +
          " | ".join(f"{n} nodes {link}" for link in LINKS for n in NODES) + " |")
    print("|---" * (5 + len(LINKS) * len(NODES)) + "|")
    for model in MODELS:
        for mode in MODES:
            r = bench(a.advtrain, model, mode, a.batches)
            step = r["batch"] / r["samples_per_s"]
            cells = []
            for link, bps in LINKS.items():
                for n in NODES:
                    ar = allreduce_seconds(r["parameters"], n, bps)
                    cells.append(f"{100 * step / (step + ar):.0f}%")
            print(f"| {model} | {mode} | {int(r['parameters']):,} | {4 * (r['parameters'] + 5) / 1e6:.2f} | "
                  f"{1000 * step:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
