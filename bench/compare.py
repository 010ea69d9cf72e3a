#!/usr/bin/env python3
"""Runs advtrain and PyTorch on the same workloads in the same run and prints a table.

    python3 bench/compare.py [--reps 3] [--batches 40] [--threads 2] [--write docs/BENCHMARKS.md]

For each workload: advtrain at --threads, and each PyTorch (the newest from PyPI in .venv-peers,
and Debian's python3-torch at /usr/bin/python3) at 1 and at --threads threads, keeping each
PyTorch's best thread count. Repetitions interleave the sides so that machine noise hits all of
them alike. Ratios are advtrain / PyTorch samples per second: min, median, max over repetitions
(each repetition's advtrain against the best PyTorch of that repetition). Peak resident memory
of each process comes from wait4. Uses only the standard library."""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = [(m, mode) for m in ("mlp", "seed-cnn", "smallcnn")
             for mode in ("plain", "l1l2", "fgsm", "pgd7", "pgd20-eval")]


def run(cmd):
    """Runs cmd, returns (parsed JSON of its last stdout line, peak RSS in MB)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"compare: {' '.join(cmd)} failed:\n{err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024.0


def pythons():
    sides = []
    venv = os.path.join(ROOT, ".venv-peers", "bin", "python")
    if os.path.exists(venv):
        sides.append(("pytorch (PyPI)", venv))
    if os.path.exists("/usr/bin/python3"):
        sides.append(("pytorch (Debian)", "/usr/bin/python3"))
    return sides


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--advtrain", default=os.path.join(ROOT, "build", "advtrain"))
    ap.add_argument("--only", help="comma-separated model:mode filter, e.g. smallcnn:pgd7")
    ap.add_argument("--write", help="write the markdown table to this file")
    a = ap.parse_args()
    workloads = WORKLOADS
    if a.only:
        keep = set(a.only.split(","))
        workloads = [w for w in WORKLOADS if f"{w[0]}:{w[1]}" in keep]
    sides = pythons()
    thread_options = sorted({1, a.threads})
    rows = []
    for model, mode in workloads:
        batches = max(4, a.batches // (8 if mode == "pgd20-eval" else 1))
        ours, theirs, peaks = [], {}, {}
        for _ in range(a.reps):
            r, peak = run([a.advtrain, "bench", "--model", model, "--mode", mode,
                           "--batches", str(batches), "--threads", str(a.threads), "--json"])
            ours.append(r)
            peaks["advtrain"] = max(peaks.get("advtrain", 0), peak)
            for name, py in sides:
                for t in thread_options:
                    r, peak = run([py, "bench/torch_bench.py", "--model", model, "--mode", mode,
                                   "--batches", str(batches), "--threads", str(t), "--json"])
                    theirs.setdefault((name, t), []).append(r["samples_per_s"])
                    peaks[name] = max(peaks.get(name, 0), peak)
        our_rates = [r["samples_per_s"] for r in ours]
        best_torch = {}
        for name, _ in sides:
            # each PyTorch at its best thread count (by median)
            t_best = max(thread_options, key=lambda t: statistics.median(theirs[(name, t)]))
            best_torch[name] = (t_best, theirs[(name, t_best)])
        fastest = max(best_torch, key=lambda n: statistics.median(best_torch[n][1])) if best_torch else None
        ratios = []
        if fastest:
            ratios = [o / t for o, t in zip(our_rates, best_torch[fastest][1])]
        rows.append({"model": model, "mode": mode, "advtrain": our_rates,
                     "gflops": statistics.median(r["gflops"] for r in ours),
                     "torch": {n: {"threads": t, "rates": v} for n, (t, v) in best_torch.items()},
                     "fastest": fastest, "ratios": ratios, "peak_mb": peaks})
        print(format_row(rows[-1]), flush=True)
    table = markdown(rows, a, sides, ours[0]["gemm"] if ours else "")
    print(table)
    if a.write:
        with open(a.write, "w") as f:
            f.write(table)


def format_row(r):
    ratio = f"{min(r['ratios']):.2f}/{statistics.median(r['ratios']):.2f}/{max(r['ratios']):.2f}" if r["ratios"] else "-"
    return f"{r['model']:9s} {r['mode']:11s} advtrain {statistics.median(r['advtrain']):9.0f}/s  ratio {ratio}"


def markdown(rows, a, sides, gemm):
    lines = ["| workload | advtrain samples/s (median) | achieved GFLOP/s | "
             + " | ".join(f"{n} samples/s (threads)" for n, _ in sides)
             + " | ratio vs faster PyTorch min / median / max | peak RSS MB (advtrain / "
             + " / ".join(n for n, _ in sides) + ") |",
             "|---|---|---|" + "---|" * len(sides) + "---|---|"]
    for r in rows:
        cells = [f"{r['model']} {r['mode']}", f"{statistics.median(r['advtrain']):.0f}", f"{r['gflops']:.1f}"]
        for n, _ in sides:
            t = r["torch"].get(n)
            cells.append(f"{statistics.median(t['rates']):.0f} ({t['threads']})" if t else "-")
        cells.append(" / ".join(f"{x:.2f}" for x in (min(r["ratios"]), statistics.median(r["ratios"]), max(r["ratios"]))) if r["ratios"] else "-")
        cells.append(" / ".join(f"{r['peak_mb'].get(k, 0):.0f}" for k in ["advtrain"] + [n for n, _ in sides]))
        lines.append("| " + " | ".join(cells) + " |")
    env = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    lines.append("")
    lines.append(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
                 f"advtrain {a.threads} threads, GEMM: {gemm}; environment: "
                 + ", ".join(f"{k}={v}" for k, v in env.items()) + f"; {a.reps} repetitions.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
