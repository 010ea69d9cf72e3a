#!/usr/bin/env bash
# `mpirun -np N advtrain eval|attack|fit` (docs/distributed.md) against one process: with 2 and 3
# ranks the eval JSON (robust accuracy of every attack and member, the sanity checks) and the
# adversarial examples file are the same as one process's; data-parallel fit on 2 ranks trains
# one process's weights bit for bit; a rank that fails ends the whole job with a non-zero
# status, without hanging. Skips where mpirun or an MPI build is missing.
source "$(dirname "$0")/harness.sh"
if ! command -v mpirun >/dev/null || ! ldd "$cli" 2>/dev/null | grep -q libmpi; then
    echo "cli_mpi: mpirun or an advtrain built with Open MPI is missing (apt-get install libopenmpi-dev openmpi-bin): skipped"
    exit 0
fi
if [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v python3 >/dev/null; then
    echo "cli_mpi: Fashion-MNIST or python3 is not installed: skipped"
    exit 0
fi
# In the sanitized build, leak checking is off for the ranks: Open MPI loads its components with
# dlopen and unloads them at MPI_Finalize, so LeakSanitizer sees their never-freed allocations
# with no module to name (no suppression can match them). Memory errors are still caught here,
# and the library's sharing code (shard.c, data_parallel.c) is leak-checked by test_distributed.
if [ "${ADVTRAIN_SANITIZED:-0}" = 1 ]; then
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
fi
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
[ -n "${ASAN_OPTIONS:-}" ] && mpi+=(-x ASAN_OPTIONS)

model="$tmp/cnn.safetensors"
"$cli" fit --model 'conv:8:3:2:1,bn,relu,conv:16:3:2:1,relu,flatten,linear:10' --train-subset 3000 --epochs 2 \
    --lr 0.05 --momentum 0.9 --threads 1 --out "$model" >/dev/null 2>&1 || bad "training the test model failed"
args=(--attack fgsm,pgd,auto --eps 0.03,0.1 --steps 5 --queries 100 --samples 150 --threads 1 --json)

"$cli" eval "$model" "${args[@]}" >"$tmp/one.json" 2>"$tmp/err" || bad "one process: $(cat "$tmp/err")"
for np in 2 3; do
    timeout 300 "${mpi[@]}" -np "$np" "$cli" eval "$model" "${args[@]}" >"$tmp/np$np.json" 2>"$tmp/err" ||
        bad "eval on $np ranks failed: $(head -c 600 "$tmp/err")"
    python3 - "$tmp/one.json" "$tmp/np$np.json" "$np" <<'PY' && ok || bad "eval on $np ranks differs from one process"
import json, sys
def strip(o):  # times differ run to run
    if isinstance(o, dict):
        return {k: strip(v) for k, v in o.items() if k not in ("seconds", "ranks")}
    return [strip(v) for v in o] if isinstance(o, list) else o
raw = [json.load(open(p)) for p in sys.argv[1:3]]
assert raw[0]["ranks"] == 1 and raw[1]["ranks"] == int(sys.argv[3]), (raw[0]["ranks"], raw[1]["ranks"])
a, b = (strip(o) for o in raw)
if a != b:
    print(json.dumps(a)[:600], "\n", json.dumps(b)[:600])
    sys.exit(1)
PY
done

# verify: shared verification (and its attack) gives one process's counts
"$cli" verify "$model" --eps 0.01 --attack pgd --samples 150 --threads 1 --json >"$tmp/v1.json" 2>/dev/null || bad "verify, one process"
timeout 300 "${mpi[@]}" -np 3 "$cli" verify "$model" --eps 0.01 --attack pgd --samples 150 --threads 1 --json \
    >"$tmp/v3.json" 2>"$tmp/err" || bad "verify on 3 ranks: $(head -c 400 "$tmp/err")"
python3 - "$tmp/v1.json" "$tmp/v3.json" <<'PY' && ok || bad "verify on 3 ranks differs: $(cat "$tmp/v1.json" "$tmp/v3.json")"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
keys = ("samples", "clean_accuracy", "verified_accuracy", "robust_accuracy", "ordered")
sys.exit(0 if all(a[k] == b[k] for k in keys) else 1)
PY

# attack: the same examples file, written once (by rank 0)
"$cli" attack "$model" --attack pgd --eps 0.1 --samples 100 --threads 1 --out "$tmp/one.safetensors" >/dev/null 2>&1 ||
    bad "attack, one process"
for np in 2 3; do
    timeout 300 "${mpi[@]}" -np "$np" "$cli" attack "$model" --attack pgd --eps 0.1 --samples 100 --threads 1 \
        --out "$tmp/np$np.safetensors" >"$tmp/out" 2>"$tmp/err" || bad "attack on $np ranks: $(head -c 600 "$tmp/err")"
    cmp -s "$tmp/one.safetensors" "$tmp/np$np.safetensors" && ok || bad "attack on $np ranks: another examples file"
    [ "$(grep -c '^wrote .*np'"$np"'.safetensors' "$tmp/out")" = 1 ] && ok || bad "attack on $np ranks: not written once: $(cat "$tmp/out")"
done

# fit: data-parallel training. 2 ranks x 1 thread slice each batch where one process's 2 threads
# split it: the same weights bit for bit (BatchNorm synchronised, dropout by global index,
# augmentation and mixup drawn once for the whole batch, L1/L2 after the gradient sum); FGSM
# adversarial training too where the products are advtrain's kernel's.
# same_tensors A B [TOL]: the tensors of two safetensors files bit for bit (the metadata differ:
# threads, times), or within TOL of the largest value
same_tensors() {
    python3 - "$1" "$2" "${3:-0}" <<'PY'
import array, json, struct, sys
def tensors(path):
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    head = json.loads(blob[8:8 + n])
    head.pop("__metadata__", None)
    return {k: (v["dtype"], blob[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in head.items()}
a, b, tol = tensors(sys.argv[1]), tensors(sys.argv[2]), float(sys.argv[3])
if not a or a.keys() != b.keys():
    sys.exit(1)
if tol == 0:
    sys.exit(0 if a == b else 1)
gap = scale = 0.0
for k, (dtype, data) in a.items():
    if dtype != "F32":
        continue
    x, y = array.array("f", data), array.array("f", b[k][1])
    gap = max([gap] + [abs(p - q) for p, q in zip(x, y)])
    scale = max([scale] + [abs(p) for p in x])
print(f"largest weight difference {gap:.3g} of {scale:.3g}", file=sys.stderr)
sys.exit(0 if gap <= tol * scale else 1)
PY
}
fit_args=(--model 'conv:8:3:2:1,bn,relu,conv:16:3:2:1,bn,relu,flatten,dropout:0.2,linear:10' --train-subset 3000
          --epochs 2 --batch 64 --lr 0.05 --momentum 0.9 --augment crop:2,flip --mixup 0.2 --l1 1e-5 --l2 1e-4 --seed 3 --quiet)
for adv in none fgsm pgd; do
    extra=()
    [ "$adv" = fgsm ] && extra=(--adv fgsm --eps 0.05 --mixup 0)
    [ "$adv" = pgd ] && extra=(--adv pgd --steps 3 --eps 0.05 --mixup 0) # random starts by sample index
    "$cli" fit "${fit_args[@]}" "${extra[@]}" --threads 2 --out "$tmp/fit1-$adv.safetensors" >/dev/null 2>"$tmp/err" ||
        bad "fit ($adv), one process: $(head -c 400 "$tmp/err")"
    timeout 300 "${mpi[@]}" -np 2 "$cli" fit "${fit_args[@]}" "${extra[@]}" --threads 1 --checkpoint-dir "$tmp/ck-$adv" \
        --out "$tmp/fit2-$adv.safetensors" >/dev/null 2>"$tmp/err" || bad "fit ($adv) on 2 ranks: $(head -c 600 "$tmp/err")"
    # FGSM and PGD craft in eval passes whose chunks follow the batch's size: with OpenBLAS a row's
    # last bits (and an input gradient's sign) can differ, so their weights agree within rounding growth.
    tol=0
    [ "$adv" != none ] && [ "$("$cli" bench --mode sgemm --size 64 --batches 1 --threads 1 2>&1 | grep -c 'advtrain kernel (')" = 0 ] && tol=0.05
    same_tensors "$tmp/fit1-$adv.safetensors" "$tmp/fit2-$adv.safetensors" "$tol" 2>"$tmp/gap" && ok ||
        bad "fit ($adv): 2 ranks x 1 thread and 1 process x 2 threads trained other weights ($(cat "$tmp/gap"))"
    [ "$(grep -c '^[0-9]' "$tmp/ck-$adv/metrics.csv")" = 2 ] && ok || bad "fit ($adv) on 2 ranks: metrics.csv not written once per epoch"
done
# repeated runs on a fixed rank and thread count: the same bits
timeout 300 "${mpi[@]}" -np 2 "$cli" fit "${fit_args[@]}" --threads 1 --out "$tmp/again.safetensors" >/dev/null \
    2>"$tmp/err" || bad "fit on 2 ranks, again: $(head -c 400 "$tmp/err")"
same_tensors "$tmp/fit2-none.safetensors" "$tmp/again.safetensors" && ok || bad "two 2-rank runs trained other weights"
# 3 ranks (slices of 21 and 22 of each batch of 64): the run completes on every rank, rank 0 logs
# every epoch, and its test accuracy is one process's within what the summation order moves this
# BatchNorm + dropout + mixup model (1 and 2 threads in one process: 0.5 points, docs/distributed.md)
timeout 300 "${mpi[@]}" -np 3 "$cli" fit "${fit_args[@]}" --threads 1 --checkpoint-dir "$tmp/ck3" \
    --out "$tmp/fit3.safetensors" 2>&1 >/dev/null | tail -1 >"$tmp/saved3" || bad "fit on 3 ranks failed"
"$cli" eval "$tmp/fit1-none.safetensors" --json --threads 1 >"$tmp/acc1.json" 2>/dev/null
"$cli" eval "$tmp/fit3.safetensors" --json --threads 1 >"$tmp/acc3.json" 2>/dev/null
python3 - "$tmp/acc1.json" "$tmp/acc3.json" <<'PY' && ok || bad "fit on 3 ranks: test accuracy too far from one process's"
import json, sys
a, b = (json.load(open(p))["clean_accuracy"] for p in sys.argv[1:3])
print(f"3 ranks {100 * b:.2f}%, one process {100 * a:.2f}%", file=sys.stderr)
sys.exit(0 if abs(a - b) <= 0.01 else 1)
PY
[ "$(grep -c '^[0-9]' "$tmp/ck3/metrics.csv")" = 2 ] && ok || bad "fit on 3 ranks: metrics.csv not written once per epoch"

# SIGTERM reaching one rank only (rank 1, after its 50th batch; the ranks agree on it at the next
# gradient sum): every rank stops after the same step (batch 51), rank 0 writes the mid-epoch checkpoint, the job exits 143, and --resume under mpirun ends
# with the uninterrupted 2-rank run's weights bit for bit.
ADVTRAIN_TEST_SIGNAL_AFTER=50 ADVTRAIN_TEST_SIGNAL_RANK=1 timeout 300 "${mpi[@]}" -x ADVTRAIN_TEST_SIGNAL_AFTER \
    -x ADVTRAIN_TEST_SIGNAL_RANK -np 2 "$cli" fit "${fit_args[@]}" --threads 1 --checkpoint-dir "$tmp/ck-stop" \
    --out "$tmp/stop.safetensors" >/dev/null 2>"$tmp/err"
code=$?
[ "$code" -eq 143 ] && ok || bad "SIGTERM on rank 1: the job exited $code, want 143: $(head -c 500 "$tmp/err")"
grep -q "stopped by SIGTERM during epoch 2 after batch 4" "$tmp/err" && grep -q "rank 0 stopped with the others" "$tmp/err" &&
    ok || bad "SIGTERM on rank 1: messages: $(head -c 600 "$tmp/err")"
timeout 300 "${mpi[@]}" -np 2 "$cli" fit --resume "$tmp/ck-stop" --quiet >/dev/null 2>"$tmp/err" ||
    bad "resume under mpirun: $(head -c 500 "$tmp/err")"
same_tensors "$tmp/fit2-none.safetensors" "$tmp/stop.safetensors" && ok ||
    bad "stopped on one rank and resumed: other weights than the uninterrupted 2-rank run"

# what is not shared is refused, naming it, and the job ends
timeout 120 "${mpi[@]}" -np 2 "$cli" fit "${fit_args[@]}" --adv free --eps 0.05 --mixup 0 --threads 1 \
    --out "$tmp/free.safetensors" >/dev/null 2>"$tmp/err"
code=$?
[ "$code" -ne 0 ] && [ "$code" -ne 124 ] && grep -q "free adversarial training is not shared" "$tmp/err" && ok ||
    bad "free training on 2 ranks: exit $code, $(head -c 300 "$tmp/err")"

# A rank that fails (here: no such model file on every rank) ends the job, non-zero, in bounded time.
start=$(date +%s)
timeout 120 "${mpi[@]}" -np 2 "$cli" eval "$tmp/missing.safetensors" --attack pgd --eps 0.1 >/dev/null 2>"$tmp/err"
code=$?
[ "$code" -ne 0 ] && [ "$code" -ne 124 ] && ok || bad "a failing job exited $code (124: it hung)"
[ $(($(date +%s) - start)) -lt 60 ] && ok || bad "a failing job took $(($(date +%s) - start)) s to end"
# A rank killed outright (SIGKILL, as by the OOM killer) mid-training: mpirun ends the job,
# non-zero, within 60 s, and the last checkpoint (epoch 1's) resumes.
timeout 300 "${mpi[@]}" -np 2 "$cli" fit "${fit_args[@]}" --epochs 50 --threads 1 --checkpoint-dir "$tmp/ck-kill" \
    --out "$tmp/kill.safetensors" >/dev/null 2>"$tmp/err" &
job=$!
for _ in $(seq 1 600); do [ -s "$tmp/ck-kill/last.safetensors" ] && break; sleep 0.1; done
victim="$(pgrep -f "advtrain fit .*ck-kill" | while read -r p; do [ "$(ps -o comm= -p "$p")" = advtrain ] && echo "$p"; done | tail -1)"
start=$(date +%s)
[ -n "$victim" ] && kill -KILL "$victim"
wait "$job"
code=$?
[ -n "$victim" ] && [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && [ $(($(date +%s) - start)) -lt 60 ] && ok ||
    bad "a killed rank: the job exited $code after $(($(date +%s) - start)) s (victim '$victim')"
sed -i 's/^epochs = 50$/epochs = 2/' "$tmp/ck-kill/config.ini" 2>/dev/null
timeout 300 "${mpi[@]}" -np 2 "$cli" fit --resume "$tmp/ck-kill" --epochs 2 --quiet >/dev/null 2>"$tmp/err" &&
    [ -s "$tmp/kill.safetensors" ] && ok || bad "resuming after a killed rank: $(head -c 400 "$tmp/err")"
# A rank that hangs (SIGSTOP): the others wait in the gradient sum; after ADVTRAIN_MPI_TIMEOUT
# seconds (here 5) the watchdog ends the job with a message, no silent hang.
ADVTRAIN_MPI_TIMEOUT=5 timeout 120 "${mpi[@]}" -x ADVTRAIN_MPI_TIMEOUT -np 2 "$cli" fit "${fit_args[@]}" --epochs 50 \
    --threads 1 --out "$tmp/hang.safetensors" >/dev/null 2>"$tmp/err" &
job=$!
sleep 3
victim="$(pgrep -f "advtrain fit .*hang.safetensors" | while read -r p; do [ "$(ps -o comm= -p "$p")" = advtrain ] && echo "$p"; done | tail -1)"
start=$(date +%s)
[ -n "$victim" ] && kill -STOP "$victim"
wait "$job"
code=$?
[ -n "$victim" ] && kill -KILL "$victim" 2>/dev/null
[ -n "$victim" ] && [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && [ $(($(date +%s) - start)) -lt 60 ] &&
    grep -q "hung or stopped" "$tmp/err" && ok || bad "a hung rank: the job exited $code after $(($(date +%s) - start)) s: $(head -c 300 "$tmp/err")"
finish cli_mpi
