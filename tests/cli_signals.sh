#!/usr/bin/env bash
# SIGTERM (a cluster's preemption) and Ctrl-C during `advtrain fit --checkpoint-dir`: the run
# finishes its step, writes a mid-epoch checkpoint, says where it stopped and how to resume, and
# exits 128 + the signal (143, 130) without writing the model file; the resumed run ends bit for
# bit as an uninterrupted one (the model, last.safetensors, best.safetensors, and every metrics
# column but the seconds), for plain training with dropout, augmentation and L1, for PGD-AT and
# for Free-AT (whose perturbation carries over from batch to batch). A second signal exits at
# once and leaves the previous checkpoint loadable. The signals land at a known batch through a
# test hook (ADVTRAIN_TEST_SIGNAL_AFTER in cli/fit.c), whatever the machine's speed.
source "$(dirname "$0")/harness.sh"

# The data section of a safetensors file (everything after the JSON header): the tensors.
tensors() {
    local n
    n=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
    tail -c +$((9 + n)) "$1" | cksum
}

same() { # WHAT A B
    [ "$(tensors "$2")" = "$(tensors "$3")" ] && ok || bad "$1 differs from the uninterrupted run's"
}

# NAME SIGNAL CODE ARGS...: an uninterrupted run, one stopped by SIGNAL after batch 20 (epoch 2
# of 15-batch epochs), resumed, compared.
stop_and_resume() {
    local name="$1" sig="$2" code="$3"
    shift 3
    "$cli" "$@" --checkpoint-dir "$tmp/$name-whole" --out "$tmp/$name-whole.safetensors" >/dev/null 2>&1 ||
        bad "$name: the uninterrupted run failed"
    ADVTRAIN_TEST_SIGNAL_AFTER=20 ADVTRAIN_TEST_SIGNAL=$sig "$cli" "$@" --checkpoint-dir "$tmp/$name-part" \
        --out "$tmp/$name-part.safetensors" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    [ "$got" -eq "$code" ] && ok || bad "$name: stopped run exited $got, want $code: $(head -c 300 "$tmp/err")"
    grep -q "stopped by .* during epoch 2 after batch 5; the checkpoint .*$name-part/last.safetensors holds it. Resume with: advtrain fit --resume" "$tmp/err" &&
        ok || bad "$name: stop message: $(head -c 400 "$tmp/err")"
    [ ! -e "$tmp/$name-part.safetensors" ] && ok || bad "$name: the model file was written by a stopped run"
    expect 0 "accuracy" -- "$cli" eval "$tmp/$name-part/last.safetensors" --samples 100
    expect 0 "resuming .*$name-part in epoch 2 after batch 5" -- "$cli" fit --resume "$tmp/$name-part" --quiet
    same "$name: the final model" "$tmp/$name-whole.safetensors" "$tmp/$name-part.safetensors"
    same "$name: last.safetensors" "$tmp/$name-whole/last.safetensors" "$tmp/$name-part/last.safetensors"
    [ "$(cut -d, -f1-14 "$tmp/$name-whole/metrics.csv")" = "$(cut -d, -f1-14 "$tmp/$name-part/metrics.csv")" ] &&
        ok || bad "$name: resumed metrics differ: $(cat "$tmp/$name-part/metrics.csv")"
}

# 1800 training images (a 10% validation split of 2000) in batches of 128: 15 batches an epoch.
base=(fit --model smallcnn --train-subset 2000 --val-split 0.1 --epochs 3 --threads 2 --quiet)
stop_and_resume plain TERM 143 "${base[@]}" --dropout 0.2 --augment flip --l1 1e-5
same "plain: best.safetensors" "$tmp/plain-whole/best.safetensors" "$tmp/plain-part/best.safetensors"
# The sanitized build (3-10x slower) keeps to the plain run: the adversarial runs go through the
# same stop and resume code, which the plain build checks with them.
if [ "${ADVTRAIN_SANITIZED:-0}" != 1 ]; then
    stop_and_resume pgd INT 130 "${base[@]}" --adv pgd --eps 0.1 --steps 2 --robust-val-samples 100
    stop_and_resume free TERM 143 "${base[@]}" --adv free --eps 0.1 --replays 2 --epochs 2
fi

# --- a second signal exits at once: the epoch-1 checkpoint stays, loadable and resumable
ADVTRAIN_TEST_SIGNAL_AFTER=20 ADVTRAIN_TEST_SIGNAL_TWICE=1 "$cli" "${base[@]}" --checkpoint-dir "$tmp/twice" \
    --out "$tmp/twice.safetensors" >"$tmp/out" 2>"$tmp/err"
got=$?
[ "$got" -eq 143 ] && ok || bad "second SIGTERM: exit $got, want 143"
grep -q "epoch 1 of 3 was the last one finished" "$tmp/err" && ok || bad "second SIGTERM message: $(head -c 300 "$tmp/err")"
expect 0 "accuracy" -- "$cli" eval "$tmp/twice/last.safetensors" --samples 100
expect 0 "resuming .*twice after epoch 1" -- "$cli" fit --resume "$tmp/twice" --quiet

finish cli_signals
