#!/usr/bin/env bash
# Soak test (issue 24; not part of CI): a long `advtrain fit` on a subset, its resident memory
# sampled when each epoch's metrics row appears. The memory must be flat after the first epoch:
# nothing may grow per epoch or per step. Prints one line per epoch and the verdict.
#
#   bash bench/soak.sh [EPOCHS] [-- extra fit flags]
#
# Default: 50 epochs of smallcnn on 2000 images with a 10% validation split, PGD-3 adversarial
# training with robust validation, dropout and L1, checkpoints every epoch (the paths that
# allocate the most). Growth above 1 MB from epoch 2 to the one before the last fails (exit 1).
set -euo pipefail
epochs="${1:-50}"
shift $(( $# > 0 ? 1 : 0 ))
[ "${1:-}" = "--" ] && shift
repo="$(cd "$(dirname "$0")/.." && pwd)"
cli="${ADVTRAIN:-$repo/build/advtrain}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
"$cli" fit --model smallcnn --train-subset 2000 --val-split 0.1 --epochs "$epochs" --adv pgd --eps 0.1 \
    --steps 3 --robust-val-samples 100 --dropout 0.2 --l1 1e-5 --threads 2 --quiet \
    --checkpoint-dir "$dir/run" "$@" >/dev/null 2>"$dir/err" &
pid=$!
seen=0
rss=()
while kill -0 "$pid" 2>/dev/null; do
    rows=0
    [ -f "$dir/run/metrics.csv" ] && rows=$(($(wc -l <"$dir/run/metrics.csv") - 1))
    if [ "$rows" -gt "$seen" ]; then
        kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        [ "$kb" -gt 0 ] || break
        seen=$rows
        rss+=("$kb")
        printf 'epoch %3d  RSS %7.1f MB\n' "$rows" "$(awk -v k="$kb" 'BEGIN { print k / 1024 }')"
    fi
    sleep 0.05
done
wait "$pid" || { echo "soak: advtrain fit failed: $(cat "$dir/err")" >&2; exit 2; }
[ "${#rss[@]}" -ge 3 ] || { echo "soak: too few epochs sampled (${#rss[@]})" >&2; exit 2; }
# The last epoch's row is followed at once by the final evaluation and save, whose buffers a
# sample may catch: the verdict covers epochs 2 to N-1.
n=${#rss[@]}
first=${rss[1]} last=${rss[n - 2]} max=0
for kb in "${rss[@]:1:n-2}"; do [ "$kb" -gt "$max" ] && max=$kb; done
growth=$((max - first))
echo "soak: RSS epoch 2 $((first / 1024)) MB, epoch $((n - 1)) $((last / 1024)) MB, largest of epochs 2-$((n - 1)) $((max / 1024)) MB: growth ${growth} kB"
[ "$growth" -le 1024 ] && echo "soak: flat (PASS)" || { echo "soak: grows (FAIL)"; exit 1; }
