#!/usr/bin/env python3
"""Interleaved A/B of two advtrain binaries on `advtrain bench` workloads.

    python3 bench/ab.py OLD_BINARY NEW_BINARY [--rounds 5] [--batches 30]
                        [--models seed-cnn,smallcnn,mlp] [--modes plain,l1l2,fgsm,pgd7,pgd20-eval]

Each round runs every workload once with the old binary and once with the new one, alternating
which goes first, so that slow phases of a shared machine hit both sides alike. Prints, per
workload, the samples/s of each side (median) and the ratio new/old per round as
min/median/max. The ratio of medians is what docs/performance.md reports."""
import argparse
import json
import statistics
import subprocess
import sys


def run(binary, model, mode, batches):
    out = subprocess.run([binary, "bench", "--model", model, "--mode", mode, "--batches",
                          str(batches), "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["samples_per_s"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--models", default="seed-cnn,smallcnn,mlp")
    p.add_argument("--modes", default="plain,l1l2,fgsm,pgd7,pgd20-eval")
    a = p.parse_args()
    work = [(m, k) for m in a.models.split(",") for k in a.modes.split(",")]
    results = {w: ([], []) for w in work}
    for r in range(a.rounds):
        for w in work:
            sides = [(0, a.old), (1, a.new)]
            if r % 2:
                sides.reverse()
            for i, binary in sides:
                batches = max(1, a.batches // 5) if w[1] == "pgd20-eval" else a.batches
                results[w][i].append(run(binary, w[0], w[1], batches))
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    print(f"{'workload':24} {'old/s':>10} {'new/s':>10}   new/old min / median / max")
    for w in work:
        old, new = results[w]
        ratios = [n / o for o, n in zip(old, new)]
        print(f"{w[0] + ' ' + w[1]:24} {statistics.median(old):10.1f} {statistics.median(new):10.1f}"
              f"   {min(ratios):.3f} / {statistics.median(ratios):.3f} / {max(ratios):.3f}")


if __name__ == "__main__":
    main()
