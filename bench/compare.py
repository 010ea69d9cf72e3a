#!/usr/bin/env python3
"""Every number of the performance targets, measured in one run, each with PASS/FAIL.

    python3 bench/compare.py --write docs/BENCHMARKS.md     # the full run (needs a quiet machine)
    python3 bench/compare.py --quick                         # smoke test: 1 repetition, tiny sizes

Sections, all run with the same thread count (--threads) under the same environment (every
process inherits this one's; the OPENBLAS_* / OMP_* / MKL_* values are printed):

  ceiling    `advtrain bench --mode sgemm`: SGEMM 1024^3 GFLOP/s of OpenBLAS on --threads threads,
             and of OpenBLAS and advtrain's kernel single-threaded, --threads products at once
             (how advtrain's layers call GEMM). The ceiling is the best of the three. And the
             arithmetic peak: --threads threads doing nothing but independent vector
             multiply-adds, the bound no float32 implementation of a workload can pass.
  workloads  for mlp, seed-cnn, smallcnn x plain, l1l2, fgsm, pgd7, pgd20-eval (and resnet8 x
             plain, pgd7, pgd20-eval: 2x, or 70% of the arithmetic peak if lower): advtrain at
             --threads and each PyTorch (the newest from PyPI in .venv-peers, Debian's
             python3-torch at /usr/bin/python3) at 1 and at --threads threads, each PyTorch at its
             best thread count (by median). Target: advtrain / faster PyTorch >= 3 (plain, l1l2),
             >= 5 (fgsm, pgd7, pgd20-eval). Achieved GFLOP/s (the work a step needs, counted
             the same for every implementation: `advtrain bench` "flops_per_sample") as a
             fraction of the arithmetic peak, and the GFLOP/s each target demands: the target
             ratio times the faster PyTorch's samples/s times the work per sample.
  scaling    advtrain smallcnn pgd7 at --threads over 1 thread. Target >= 1.6.
  memory     peak resident memory (wait4 ru_maxrss) of `advtrain fit --model smallcnn|resnet8
             --data fashion-mnist --epochs 1`. Target < 120 MB and < 150 MB (MB of 2^20 bytes). Each PyTorch's one-epoch training
             (bench/torch_bench.py --fit-epoch) for context.
  attacks    on the same weights (--attack-model; created by `advtrain fit` when missing), the
             first --samples test images, eps --eps: `advtrain eval --attack pgd --steps 20` vs
             torchattacks.PGD(eps, alpha=2.5*eps/20, steps=20, random_start=True), and
             `advtrain eval --attack apgd-ce --steps S` vs torchattacks.APGD(norm='Linf', eps,
             steps=S, n_restarts=1, loss='ce'), S = --apgd-steps on both sides. Times cover the same
             work on both sides: a clean pass, the attack and the pass that judges the examples
             (advtrain eval --json "seconds"; torchattacks' attack calls and two model passes).
             Target: time ratio >= 5 and advtrain robust accuracy <= torchattacks' + 0.5 points.

Repetitions interleave the sides so that machine noise hits all of them alike; ratios are taken
per repetition and reported as min / median / max; PASS/FAIL uses the median. Uses only the
standard library (the PyTorch sides run in their own interpreters)."""
import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("mlp", "seed-cnn", "smallcnn")
MODES = ("plain", "l1l2", "fgsm", "pgd7", "pgd20-eval")
# The graph engine's model (issue 20): at least 2x the faster PyTorch, or 70% of the measured
# arithmetic peak, whichever is lower.
GRAPH_WORKLOADS = [("resnet8", mode) for mode in ("plain", "pgd7", "pgd20-eval")]
WORKLOADS = [(m, mode) for m in MODELS for mode in MODES] + GRAPH_WORKLOADS
GRAPH_TARGET_RATIO, GRAPH_PEAK_SHARE = 2.0, 0.70
SECTIONS = ("ceiling", "workloads", "scaling", "memory", "attacks")
TARGET_RATIO = {"plain": 3.0, "l1l2": 3.0, "fgsm": 5.0, "pgd7": 5.0, "pgd20-eval": 5.0}
TARGET_SCALING = 1.6
# Peak RSS of one training epoch, in MB of 2^20 bytes: smallcnn's target, and issue 20's for resnet8.
MEMORY_TARGETS = (("smallcnn", 120.0), ("resnet8", 150.0))
TARGET_ATTACK_RATIO = 5.0
ATTACK_ACC_MARGIN = 0.005  # robust accuracy noise margin: 0.5 points
ENV_PREFIXES = ("OPENBLAS_", "OMP_", "MKL_", "GOTO_", "KMP_")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd):
    """Runs cmd in the repository root. Returns (the JSON object on its last stdout line that
    parses, or None; its peak resident memory in MB from wait4; wall seconds)."""
    start = time.time()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        wall = time.time() - start
        if code != 0:
            err.seek(0)
            sys.exit(f"compare: {' '.join(shlex.quote(c) for c in cmd)} failed ({code}):\n"
                     f"{err.read().decode(errors='replace')[-2000:]}")
    parsed = None
    for line in reversed(out.decode().strip().splitlines()):
        try:
            parsed = json.loads(line)
            break
        except ValueError:
            continue
    return parsed, usage.ru_maxrss / 1024.0, wall


def pythons():
    sides = []
    venv = os.path.join(ROOT, ".venv-peers", "bin", "python")
    if os.path.exists(venv):
        sides.append(("pytorch (PyPI)", venv))
    # Debian's python3-torch (and its numpy) only where installed: a side that cannot import
    # them would fail the whole run
    debian = "/usr/bin/python3"
    if os.path.exists(debian) and subprocess.run([debian, "-c", "import torch, numpy"],
                                                  capture_output=True).returncode == 0:
        sides.append(("pytorch (Debian)", debian))
    return sides


def mmm(values, fmt="{:.2f}"):
    if not values:
        return "-"

    def one(v):
        text = fmt.format(v)
        # 2.995 would print as "3.00" next to a FAIL against 3x: show the digit that decides.
        if fmt == "{:.2f}" and text.endswith(".00") and float(text) != v:
            text = f"{v:.3f}"
        return text

    return " / ".join(one(v) for v in (min(values), statistics.median(values), max(values)))


def plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def verdict(ok):
    return "PASS" if ok else "FAIL"


# ------------------------------------------------------------------ machine and provenance

def machine_info(sides):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "include", "cli", "CMakeLists.txt")
    versions = {}
    for name, py in sides:
        out = subprocess.run([py, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
        versions[name] = out.stdout.strip() or "unavailable"
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}
    return {"cpu": cpu, "cores": os.cpu_count(), "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "commit": commit, "dirty": bool(dirty), "torch": versions, "env": env,
            "kernel": platform.release()}


# ------------------------------------------------------------------ sections

def section_ceiling(a):
    cmd = [a.advtrain, "bench", "--mode", "sgemm", "--size", "1024", "--batches", str(a.sgemm_reps),
           "--warmup", "2", "--threads", str(a.threads), "--json"]
    runs = [run(cmd)[0] for _ in range(a.reps)]
    keys = ("openblas_gflops", "openblas_per_thread_gflops", "own_per_thread_gflops")
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    best = max(keys, key=lambda k: med[k])
    # the peak is a best case by nature: the highest of the runs (noise only ever lowers it)
    peak = max(r["fma_peak_gflops"] for r in runs)
    res = {"runs": runs, "median": med, "ceiling": med[best], "ceiling_from": best, "peak": peak,
           "core": runs[0]["openblas_core"], "gemm": runs[0]["gemm"]}
    log(f"ceiling: OpenBLAS {a.threads}T {med['openblas_gflops']:.1f}, OpenBLAS 1T x{a.threads} "
        f"{med['openblas_per_thread_gflops']:.1f}, advtrain kernel 1T x{a.threads} {med['own_per_thread_gflops']:.1f} GFLOP/s; "
        f"arithmetic peak {peak:.1f} GFLOP/s")
    return res


def section_workloads(a, sides, workloads, ceiling, arith_peak):
    thread_options = sorted({1, a.threads})
    rows = []
    for model, mode in workloads:
        batches = max(min(4, a.batches), a.batches // (8 if mode == "pgd20-eval" else 1))
        ours, theirs, peaks, walls = [], {}, {}, {}
        for _ in range(a.reps):
            r, peak, wall = run([a.advtrain, "bench", "--model", model, "--mode", mode, "--batches", str(batches),
                                 "--warmup", str(a.warmup), "--threads", str(a.threads), "--json"])
            ours.append(r)
            peaks["advtrain"] = max(peaks.get("advtrain", 0), peak)
            walls.setdefault("advtrain", []).append(wall)
            for name, py in sides:
                for t in thread_options:
                    r, peak, wall = run([py, "bench/torch_bench.py", "--model", model, "--mode", mode,
                                         "--batches", str(batches), "--warmup", str(a.warmup),
                                         "--threads", str(t), "--json"])
                    theirs.setdefault((name, t), []).append(r["samples_per_s"])
                    peaks[name] = max(peaks.get(name, 0), peak)
                    walls.setdefault(f"{name} {t}T", []).append(wall)
        our_rates = [r["samples_per_s"] for r in ours]
        best_torch = {}
        for name, _ in sides:
            # each PyTorch at its best thread count (by median)
            t_best = max(thread_options, key=lambda t: statistics.median(theirs[(name, t)]))
            best_torch[name] = (t_best, theirs[(name, t_best)])
        fastest = max(best_torch, key=lambda n: statistics.median(best_torch[n][1])) if best_torch else None
        ratios = [o / t for o, t in zip(our_rates, best_torch[fastest][1])] if fastest else []
        gflops = statistics.median(r["gflops"] for r in ours)
        graph = (model, mode) in GRAPH_WORKLOADS
        target = GRAPH_TARGET_RATIO if graph else TARGET_RATIO[mode]
        flops = ours[0]["flops_per_sample"]
        needs = target * statistics.median(best_torch[fastest][1]) * flops / 1e9 if fastest else None
        row = {"model": model, "mode": mode, "batches": batches, "advtrain": our_rates, "gflops": gflops,
               "ceiling_fraction": gflops / ceiling if ceiling else None, "flops_per_sample": flops,
               "peak_fraction": gflops / arith_peak if arith_peak else None, "needs_gflops": needs,
               "needs_fraction": needs / arith_peak if arith_peak and needs else None,
               "torch": {n: {"threads": t, "rates": v} for n, (t, v) in best_torch.items()},
               "fastest": fastest, "ratios": ratios, "peak_mb": peaks, "walls": walls, "target": target,
               "pass": bool(ratios) and statistics.median(ratios) >= target}
        if graph and arith_peak:  # or the peak-capped figure, whichever is lower
            row["peak_target"] = GRAPH_PEAK_SHARE
            row["pass"] = row["pass"] or gflops >= GRAPH_PEAK_SHARE * arith_peak
        rows.append(row)
        log(f"{model:9s} {mode:11s} advtrain {statistics.median(our_rates):9.0f}/s  ratio {mmm(ratios)} "
            f"(target {target:g}x: {verdict(row['pass'])})")
    return rows


def section_scaling(a):
    one, many = [], []
    cmd = [a.advtrain, "bench", "--model", "smallcnn", "--mode", "pgd7", "--batches", str(a.batches),
           "--warmup", str(a.warmup), "--json"]
    for _ in range(a.reps):
        one.append(run(cmd + ["--threads", "1"])[0]["samples_per_s"])
        many.append(run(cmd + ["--threads", str(a.threads)])[0]["samples_per_s"])
    ratios = [m / o for m, o in zip(many, one)]
    res = {"one": one, "many": many, "ratios": ratios, "target": TARGET_SCALING,
           "pass": statistics.median(ratios) >= TARGET_SCALING}
    log(f"scaling smallcnn pgd7: {statistics.median(one):.0f}/s at 1 thread, {statistics.median(many):.0f}/s at "
        f"{a.threads}: {mmm(ratios)} ({verdict(res['pass'])})")
    return res


def memory_of(a, sides, model, target):
    """Peak RSS of `advtrain fit --model MODEL` for one epoch, and of each PyTorch's for context."""
    out_file = os.path.join(ROOT, "out", f"bench-fit-memory-{os.getpid()}.safetensors")
    os.makedirs(os.path.dirname(out_file), exist_ok=True)
    cmd = [a.advtrain, "fit", "--model", model, "--data", "fashion-mnist", "--epochs", "1",
           "--threads", str(a.threads), "--out", out_file, "--quiet"]
    if a.quick:
        cmd += ["--train-subset", "2048"]
    _, peak, wall = run(cmd)
    try:
        os.remove(out_file)
    except OSError:
        pass
    shown = ["advtrain"] + cmd[1:cmd.index("--out")] + cmd[cmd.index("--out") + 2:]
    res = {"model": model, "command": " ".join(c for c in shown if c != "--quiet"), "advtrain_mb": peak, "advtrain_seconds": wall,
           "target": target, "pass": peak < target, "torch": {}}
    for name, py in sides:
        tcmd = [py, "bench/torch_bench.py", "--model", model, "--fit-epoch", "--threads", str(a.threads), "--json"]
        if a.quick:
            tcmd += ["--batches", "16"]
        r, tpeak, twall = run(tcmd)
        res["torch"][name] = {"mb": tpeak, "seconds": twall, "batches": r["batches"]}
    log(f"memory: advtrain fit {model} 1 epoch peak {peak:.0f} MB ({verdict(res['pass'])}); "
        + ", ".join(f"{n} {v['mb']:.0f} MB" for n, v in res["torch"].items()))
    return res


def section_memory(a, sides):
    return [memory_of(a, sides, model, target) for model, target in MEMORY_TARGETS]


def ensure_attack_model(a):
    path = a.attack_model
    if os.path.exists(path):
        return False
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cmd = [a.advtrain, "fit", "--model", "smallcnn", "--data", "fashion-mnist", "--epochs", "2",
           "--adv", "pgd", "--eps", str(a.eps), "--steps", "7", "--seed", "1", "--threads", str(a.threads),
           "--out", path, "--quiet"]
    if a.quick:
        cmd[cmd.index("--epochs") + 1] = "1"
        cmd += ["--train-subset", "1024"]
    log(f"creating the attack model: {' '.join(cmd)}")
    run(cmd)
    return True


def describe_model(path):
    """One line on how a model file was trained, from its advtrain metadata."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            meta = json.loads(f.read(n)).get("__metadata__", {})
        st = json.loads(meta.get("advtrain.settings", "{}"))
        rs = json.loads(meta.get("advtrain.results", "{}"))
    except (OSError, ValueError, struct.error):
        return "no advtrain metadata"
    epochs = st.get("epochs", "?")
    parts = [meta.get("advtrain.arch", "?"), f"{epochs} epoch{'' if epochs == 1 else 's'}"]
    if st.get("adv") and st.get("adv") != "none":
        parts.append(f"{st['adv']} adversarial training at eps {st.get('eps')} ({st.get('adv_steps')} steps)")
    if st.get("train_subset"):
        parts.append(f"first {st['train_subset']} training images")
    if "test_accuracy" in rs:
        parts.append(f"test accuracy {100 * rs['test_accuracy']:.2f}%")
    return ", ".join(str(p) for p in parts)


def section_attacks(a, sides):
    pypi = dict(sides).get("pytorch (PyPI)")
    if not pypi:
        sys.exit("compare: attacks need torchattacks in .venv-peers "
                 "(python3 -m venv .venv-peers && .venv-peers/bin/pip install torch torchattacks)")
    created = ensure_attack_model(a)
    common = [a.advtrain, "eval", a.attack_model, "--eps", str(a.eps), "--samples", str(a.samples),
              "--threads", str(a.threads), "--batch", str(a.attack_batch), "--json", "--no-sanity"]
    # torchattacks' PGD attacks every image; its APGD (like AutoAttack) only the correctly
    # classified ones: advtrain does the same work (--all for PGD only).
    ours_cmd = {"pgd": common + ["--attack", "pgd", "--steps", "20", "--all"],
                "apgd-ce": common + ["--attack", "apgd-ce", "--steps", str(a.apgd_steps)]}
    torch_cmd = [pypi, "bench/torch_attacks.py", a.attack_model, "--eps", str(a.eps), "--samples", str(a.samples),
                 "--pgd-steps", "20", "--apgd-steps", str(a.apgd_steps), "--threads", str(a.threads),
                 "--batch", str(a.attack_batch), "--json"]
    rec = {k: {"ours_acc": [], "ours_s": [], "theirs_acc": [], "theirs_s": []} for k in ours_cmd}
    versions = {}
    clean = {}
    for _ in range(a.reps_attacks):
        for k in ours_cmd:
            r = run(ours_cmd[k])[0]
            atk = r["attacks"][0]
            rec[k]["ours_acc"].append(atk["robust_accuracy"])
            rec[k]["ours_s"].append(atk["seconds"])
            rec[k]["steps"] = atk["steps"]
            clean["advtrain"] = r["clean_accuracy"]
            if k == "pgd":
                # torchattacks in the middle: every side's repetitions interleave
                t = run(torch_cmd)[0]
                versions = {"torch": t["torch"], "torchattacks": t["torchattacks"]}
                clean["torch"] = t["clean_accuracy"]
                for kk in ours_cmd:
                    rec[kk]["theirs_acc"].append(t[kk]["robust_accuracy"])
                    rec[kk]["theirs_s"].append(t[kk]["seconds"])
                    rec[kk]["theirs_steps"] = t[kk]["steps"]
    if abs(clean.get("advtrain", 0) - clean.get("torch", 0)) > 0.005:
        log(f"compare: warning: clean accuracy differs between advtrain ({clean.get('advtrain')}) and PyTorch "
            f"({clean.get('torch')}) on the same weights and images: the model did not load the same")
    rows = []
    for k, v in rec.items():
        ratios = [t / o for t, o in zip(v["theirs_s"], v["ours_s"])]
        acc_o, acc_t = statistics.median(v["ours_acc"]), statistics.median(v["theirs_acc"])
        ok_time = statistics.median(ratios) >= TARGET_ATTACK_RATIO
        ok_acc = acc_o <= acc_t + ATTACK_ACC_MARGIN
        rows.append({"attack": k, "steps": v["steps"], "theirs_steps": v["theirs_steps"], "ours_acc": acc_o,
                     "theirs_acc": acc_t, "ours_s": v["ours_s"], "theirs_s": v["theirs_s"], "ratios": ratios,
                     "pass_time": ok_time, "pass_acc": ok_acc, "pass": ok_time and ok_acc})
        log(f"attack {k}: advtrain {100 * acc_o:.2f}% in {statistics.median(v['ours_s']):.2f}s, torchattacks "
            f"{100 * acc_t:.2f}% in {statistics.median(v['theirs_s']):.2f}s: ratio {mmm(ratios)} ({verdict(rows[-1]['pass'])})")
    return {"rows": rows, "versions": versions, "clean": clean, "created": created, "model": a.attack_model,
            "model_info": describe_model(a.attack_model)}


# ------------------------------------------------------------------ report

def markdown(a, info, sides, res, command, elapsed):
    L = []
    L.append("# Benchmarks")
    L.append("")
    L.append("Written by `bench/compare.py` (one run; do not edit by hand). Rerun on a quiet machine with:")
    L.append("")
    L.append("```sh")
    L.append("cmake -S . -B build && cmake --build build -j")
    L.append(command)
    L.append("```")
    L.append("")
    L.append(f"- machine: {info['cpu']}, {info['cores']} cores (Linux {info['kernel']})")
    L.append(f"- date: {info['date']}; the run took {elapsed / 60:.0f} minutes")
    L.append(f"- advtrain commit {info['commit']}" + (" with uncommitted changes to src/, include/, cli/ or CMakeLists.txt" if info["dirty"] else ""))
    L.append("- PyTorch: " + ", ".join(f"{n} {v}" for n, v in info["torch"].items())
             + (f"; torchattacks {res['attacks']['versions'].get('torchattacks')}" if "attacks" in res else ""))
    env = ", ".join(f"`{k}={v}`" for k, v in info["env"].items()) or "none set (OPENBLAS_*, OMP_*, MKL_*, GOTO_*, KMP_* all unset)"
    L.append(f"- environment, the same for every side of every comparison (each process inherits the script's): {env}")
    L.append(f"- threads: advtrain {a.threads}; each PyTorch at its best of 1 and {a.threads} (workloads), "
             f"{a.threads} (memory, attacks); {plural(a.reps, 'repetition')} interleaving the sides "
             f"({a.reps_attacks} for the attacks); ratios per repetition, min / median / max; PASS/FAIL on the median")
    L.append("")
    summary = []
    checks = []  # every PASS/FAIL of the report

    if "ceiling" in res:
        c = res["ceiling"]
        m = c["median"]
        L.append(f"## SGEMM ceiling (1024 x 1024 x 1024, {a.threads} threads)")
        L.append("")
        L.append("| SGEMM | GFLOP/s (median) |")
        L.append("|---|---|")
        L.append(f"| OpenBLAS, {a.threads} threads in one product (OpenBLAS core: {c['core']}) | {m['openblas_gflops']:.1f} |")
        L.append(f"| OpenBLAS single-threaded, {a.threads} products at once | {m['openblas_per_thread_gflops']:.1f} |")
        L.append(f"| advtrain's kernel single-threaded, {a.threads} products at once | {m['own_per_thread_gflops']:.1f} |")
        L.append("")
        L.append(f"| arithmetic peak: {a.threads} threads doing only independent vector multiply-adds (best run) | {c['peak']:.1f} |")
        L.append("")
        L.append(f"Ceiling: {c['ceiling']:.1f} GFLOP/s (the best of the three products). advtrain's layers use: {c['gemm']}; "
                 "each thread runs its own share of the batch with single-threaded GEMMs. The arithmetic peak bounds "
                 "every implementation of the same float32 work, advtrain's and PyTorch's alike.")
        L.append("")

    if "workloads" in res:
        rows = res["workloads"]
        L.append(f"## Workloads: samples/s, advtrain vs the faster PyTorch")
        L.append("")
        L.append("Batch 128 (pgd20-eval: 512 test images per batch), SGD lr 0.01 momentum 0.9, eps 0.1; "
                 "the same code paths as `advtrain bench` and `bench/torch_bench.py`. GFLOP/s count the work a step "
                 "needs, the same for any implementation: a training step is the forward pass, the weight gradients "
                 "and the input gradients above the lowest layer with weights; an attack step the forward pass and "
                 "every input gradient. \"target needs\" is the target ratio times the faster PyTorch's samples/s "
                 "times that work: above 100% of the arithmetic peak, no implementation can meet the target.")
        L.append("")
        L.append("| workload | advtrain samples/s | GFLOP/s (% of peak) | "
                 + " | ".join(f"{n} samples/s (threads)" for n, _ in sides)
                 + " | ratio min / median / max | target | target needs GFLOP/s (% of peak) | result | "
                 "peak RSS MB (advtrain / " + " / ".join(n for n, _ in sides) + ") |")
        L.append("|---|---|---|" + "---|" * len(sides) + "---|---|---|---|---|")
        for r in rows:
            frac = f" ({100 * r['peak_fraction']:.0f}%)" if r.get("peak_fraction") is not None else ""
            cells = [f"{r['model']} {r['mode']}", f"{statistics.median(r['advtrain']):.0f}", f"{r['gflops']:.1f}{frac}"]
            for n, _ in sides:
                t = r["torch"].get(n)
                cells.append(f"{statistics.median(t['rates']):.0f} ({t['threads']})" if t else "-")
            needs = "-"
            if r.get("needs_gflops") is not None:
                needs = f"{r['needs_gflops']:.0f}" + (f" ({100 * r['needs_fraction']:.0f}%)" if r.get("needs_fraction") else "")
            goal = f">= {r['target']:g}x" + (f" or {100 * r['peak_target']:.0f}% of peak" if r.get("peak_target") else "")
            cells += [mmm(r["ratios"]), goal, needs, verdict(r["pass"]),
                      " / ".join(f"{r['peak_mb'].get(k, 0):.0f}" for k in ["advtrain"] + [n for n, _ in sides])]
            L.append("| " + " | ".join(cells) + " |")
        L.append("")
        beyond = [f"{r['model']} {r['mode']}" for r in rows
                  if not r["pass"] and r.get("needs_fraction") is not None and r["needs_fraction"] > 1.0]
        if beyond:
            L.append(f"Beyond this CPU's arithmetic peak ({len(beyond)} of {len(rows)}): {', '.join(beyond)}. Their "
                     "targets demand more multiply-adds per second than the cores can issue, so no implementation of "
                     "the same float32 work meets them on this machine; only doing less work (lower precision, or "
                     "skipping samples, which changes the workload) could.")
            L.append("")
        passed = sum(r["pass"] for r in rows)
        checks += [r["pass"] for r in rows]
        failed = [f"{r['model']} {r['mode']}" for r in rows if not r["pass"]]
        n_beyond = sum(1 for r in rows if not r["pass"] and (r.get("needs_fraction") or 0) > 1.0)
        summary.append(f"workloads {passed}/{len(rows)} PASS" + (f" (FAIL: {', '.join(failed)}"
                       + (f"; {n_beyond} of them need more than the arithmetic peak" if n_beyond else "") + ")"
                       if failed else ""))

    if "scaling" in res:
        s = res["scaling"]
        L.append("## Scaling: smallcnn pgd7")
        L.append("")
        L.append(f"| 1 thread samples/s | {a.threads} threads samples/s | ratio min / median / max | target | result |")
        L.append("|---|---|---|---|---|")
        L.append(f"| {statistics.median(s['one']):.0f} | {statistics.median(s['many']):.0f} | {mmm(s['ratios'])} | "
                 f">= {s['target']:g} | {verdict(s['pass'])} |")
        L.append("")
        checks.append(s["pass"])
        summary.append(f"scaling {verdict(s['pass'])}")

    if "memory" in res:
        L.append("## Peak resident memory: training on Fashion-MNIST, one epoch")
        L.append("")
        L.append("| process | peak RSS MB | wall s | target | result |")
        L.append("|---|---|---|---|---|")
        for m in res["memory"]:
            L.append(f"| `{m['command']}` | "
                     f"{m['advtrain_mb']:.0f} | {m['advtrain_seconds']:.0f} | < {m['target']:g} MB | {verdict(m['pass'])} |")
            for n, v in m["torch"].items():
                L.append(f"| {n}: `bench/torch_bench.py --model {m['model']} --fit-epoch` ({v['batches']} batches) | "
                         f"{v['mb']:.0f} | {v['seconds']:.0f} | (context) | |")
            checks.append(m["pass"])
            summary.append(f"memory {m['model']} {verdict(m['pass'])}")
        L.append("")
        L.append("Peak RSS from wait4's ru_maxrss of each process in MB of 2^20 bytes (each loads the whole "
                 "dataset, trains one epoch at batch 128, then measures test accuracy).")
        L.append("")

    if "attacks" in res:
        t = res["attacks"]
        L.append(f"## Attacks vs torchattacks (eps {a.eps:g}, first {a.samples} test images, {a.threads} threads)")
        L.append("")
        L.append(f"Model `{os.path.relpath(t['model'], ROOT)}` ({t['model_info']}; "
                 f"{'created by this run' if t['created'] else 'made by an earlier run of the script, which creates it when missing'}); "
                 f"clean accuracy on these images: advtrain "
                 f"{100 * t['clean'].get('advtrain', 0):.2f}%, PyTorch {100 * t['clean'].get('torch', 0):.2f}%. "
                 f"torch {t['versions'].get('torch')}, torchattacks {t['versions'].get('torchattacks')}; batch {a.attack_batch} on both sides.")
        L.append("")
        L.append("| attack | advtrain robust acc | advtrain s | torchattacks robust acc | torchattacks s | "
                 "time ratio min / median / max | target | result |")
        L.append("|---|---|---|---|---|---|---|---|")
        for r in t["rows"]:
            label = (f"PGD-{r['steps']} (random start, alpha 2.5 eps/{r['steps']}) vs torchattacks.PGD"
                     if r["attack"] == "pgd" else
                     f"APGD-CE {r['steps']} steps, 1 restart vs torchattacks.APGD(loss='ce', steps={r['theirs_steps']})")
            why = [] if r["pass_time"] else ["time"]
            why += [] if r["pass_acc"] else ["robust accuracy"]
            L.append(f"| {label} | {100 * r['ours_acc']:.2f}% | {statistics.median(r['ours_s']):.2f} | "
                     f"{100 * r['theirs_acc']:.2f}% | {statistics.median(r['theirs_s']):.2f} | {mmm(r['ratios'])} | "
                     f">= {TARGET_ATTACK_RATIO:g}x, acc <= theirs + 0.5 pt | "
                     f"{verdict(r['pass'])}{' (' + ', '.join(why) + ')' if why else ''} |")
        L.append("")
        L.append("Times cover the same work on both sides, no process start, model load or data reading: advtrain's "
                 "from `advtrain eval --json` (per-attack seconds: clean pass, attack and final pass), torchattacks' "
                 "around a clean pass, its attack calls and the pass that judges the examples. "
                 "advtrain's PGD runs with `--all` (every image, as torchattacks.PGD); both APGDs attack the correctly "
                 "classified images only. advtrain stops iterating on an image at the first iterate that fools the "
                 "model and counts it fooled (APGD as AutoAttack; for PGD at least as strong as torchattacks' "
                 "last-iterate judgement, so its robust accuracy can only be lower); torchattacks runs every step on "
                 "every image, so the time ratio grows as robust accuracy falls.")
        L.append("")
        checks += [r["pass"] for r in t["rows"]]
        summary.append("attacks " + ", ".join(f"{r['attack']} {verdict(r['pass'])}" for r in t["rows"]))

    all_pass = all(checks) and bool(checks)
    line = "; ".join(summary)
    partial = "" if set(res) == set(SECTIONS) and not a.only else " (partial run: " + ", ".join(res) + ")"
    L.insert(2, f"**Summary: {'every target met' if all_pass else 'not every target met'}{partial}** ({line}).")
    L.insert(3, "")
    return "\n".join(L) + "\n", all_pass, line


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="repetitions of every measurement (default 3)")
    ap.add_argument("--batches", type=int, default=40, help="timed batches per workload run (pgd20-eval: /8)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--advtrain", default=os.path.join(ROOT, "build", "advtrain"))
    ap.add_argument("--only", help="comma-separated model:mode filter for the workloads, e.g. smallcnn:pgd7")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="which sections (default all: " + ",".join(SECTIONS) + ")")
    ap.add_argument("--sgemm-reps", type=int, default=20, help="1024^3 products per ceiling measurement (default 20)")
    ap.add_argument("--attack-model", default=os.path.join(ROOT, "out", "bench-smallcnn-pgd.safetensors"),
                    help="model file for the attack comparison (created with advtrain fit when missing)")
    ap.add_argument("--samples", type=int, default=1000, help="test images the attacks run on (default 1000)")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--apgd-steps", type=int, default=100, help="APGD-CE steps on both sides (default 100)")
    ap.add_argument("--attack-batch", type=int, default=500)
    ap.add_argument("--reps-attacks", type=int, help="repetitions of the attack comparison (default --reps)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 repetition, 2 batches, 64 images, tiny training; refuses --write")
    ap.add_argument("--json", help="also write every measurement to this file")
    ap.add_argument("--write", help="write the markdown report to this file (docs/BENCHMARKS.md)")
    a = ap.parse_args()
    given = set(arg.split("=")[0] for arg in sys.argv[1:])
    sections = [s for s in a.sections.split(",") if s]
    for s in sections:
        if s not in SECTIONS:
            ap.error(f"--sections: unknown {s!r} ({', '.join(SECTIONS)})")
    if a.write and (a.quick or a.only or set(sections) != set(SECTIONS)):
        ap.error("--write records the full run only: drop --quick, --only and --sections")
    if a.quick:
        a.reps = 1 if "--reps" not in given else a.reps
        a.batches = 2 if "--batches" not in given else a.batches
        a.warmup = 1 if "--warmup" not in given else a.warmup
        a.samples = 64 if "--samples" not in given else a.samples
        a.sgemm_reps = 2 if "--sgemm-reps" not in given else a.sgemm_reps
        if "--attack-model" not in given:
            a.attack_model = os.path.join(ROOT, "out", "bench-smallcnn-pgd-quick.safetensors")
    if a.reps_attacks is None:
        a.reps_attacks = a.reps
    a.advtrain = os.path.abspath(a.advtrain)
    a.attack_model = os.path.abspath(a.attack_model)
    if not os.path.exists(a.advtrain):
        sys.exit(f"compare: {a.advtrain} not found: build it (cmake -S . -B build && cmake --build build -j) or pass --advtrain")
    probe = subprocess.run([a.advtrain, "bench", "--mode", "sgemm", "--size", "8", "--batches", "1", "--warmup", "0",
                            "--threads", "1", "--json"], capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"compare: {a.advtrain} has no `bench --mode sgemm`: rebuild it\n{probe.stderr}")
    workloads = WORKLOADS
    if a.only:
        keep = set(a.only.split(","))
        workloads = [w for w in WORKLOADS if f"{w[0]}:{w[1]}" in keep]
    sides = pythons()
    info = machine_info(sides)
    log(f"{info['cpu']}, {info['cores']} cores; advtrain {info['commit'][:12]}{' (dirty)' if info['dirty'] else ''}; "
        + ", ".join(f"{n} {v}" for n, v in info["torch"].items())
        + "; environment: " + (", ".join(f"{k}={v}" for k, v in info["env"].items()) or "no OPENBLAS_/OMP_/MKL_ variables"))
    start = time.time()
    res, timing = {}, {}
    for s in SECTIONS:
        if s not in sections:
            continue
        t0 = time.time()
        if s == "ceiling":
            res[s] = section_ceiling(a)
        elif s == "workloads":
            res[s] = section_workloads(a, sides, workloads, res.get("ceiling", {}).get("ceiling"),
                                       res.get("ceiling", {}).get("peak"))
        elif s == "scaling":
            res[s] = section_scaling(a)
        elif s == "memory":
            res[s] = section_memory(a, sides)
        elif s == "attacks":
            res[s] = section_attacks(a, sides)
        timing[s] = time.time() - t0
        log(f"[{s}: {timing[s]:.0f} s]")
    elapsed = time.time() - start
    # the exact command of this run, paths relative to the repository root
    argv = []
    for arg in sys.argv[1:]:
        if os.path.isabs(arg) and arg.startswith(ROOT + os.sep):
            arg = os.path.relpath(arg, ROOT)
        argv.append(arg)
    command = "python3 bench/compare.py" + ("" if not argv else " " + shlex.join(argv))
    text, all_pass, line = markdown(a, info, sides, res, command, elapsed)
    print(text)
    log("section times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items()) + f"; total {elapsed:.0f} s")
    log(("every target met" if all_pass else "not every target met") + f": {line}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "results": res, "section_seconds": timing}, f, indent=1, default=str)
    if a.write:
        with open(a.write, "w") as f:
            f.write(text)
        log(f"wrote {a.write}")


if __name__ == "__main__":
    main()
