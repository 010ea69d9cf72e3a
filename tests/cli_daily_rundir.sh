#!/usr/bin/env bash
# Issue 21, items 2, 3, 4 and 13: a new run never writes into a directory holding another run
# unless --force (which clears the old run's files) is given; a refused --resume changes
# nothing on disk; --config DIR is an error; resuming a finished run touches no file.
source "$(dirname "$0")/harness.sh"

sums() { (cd "$1" && md5sum * | sort); }
run=(fit --model smallcnn --train-subset 300 --val-split 0.2 --epochs 2 --threads 2 --quiet)

expect 0 "saved" -- "$cli" "${run[@]}" --checkpoint-dir "$tmp/r"
before=$(sums "$tmp/r")
[ -f "$tmp/r/best.safetensors" ] && ok || bad "the first run wrote no best.safetensors"

# --- item 2: a fresh run into that directory is refused, a fresh name suggested, nothing changed
expect 2 "--checkpoint-dir $tmp/r already holds a run .*--resume $tmp/r.*--checkpoint-dir $tmp/r-2.*--force" -- \
    "$cli" fit --model mlp --train-subset 300 --epochs 1 --checkpoint-dir "$tmp/r"
[ "$(sums "$tmp/r")" = "$before" ] && ok || bad "a refused run changed $tmp/r"
# config.ini's own rerun hint names a new directory, and rerunning it as is is refused
grep -q "Rerun with: advtrain fit --config $tmp/r/config.ini --checkpoint-dir NEW_DIR" "$tmp/r/config.ini" &&
    ok || bad "config.ini's hint: $(grep Rerun "$tmp/r/config.ini")"
expect 2 "already holds a run" -- "$cli" fit --config "$tmp/r/config.ini"
[ "$(sums "$tmp/r")" = "$before" ] && ok || bad "rerunning config.ini changed its run"
# --out or --log replacing one of the run's own files from another run: refused the same way
expect 2 "--out $tmp/r/model.safetensors: $tmp/r holds another run" -- \
    "$cli" fit --model mlp --train-subset 300 --epochs 1 --out "$tmp/r/model.safetensors"
expect 2 "--log $tmp/r/metrics.csv: $tmp/r holds another run" -- \
    "$cli" fit --model mlp --train-subset 300 --epochs 1 --log "$tmp/r/metrics.csv" --out "$tmp/elsewhere.safetensors"
[ "$(sums "$tmp/r")" = "$before" ] && ok || bad "a refused --out/--log changed $tmp/r"
# another name next to the run (a fine-tuned model) is fine
expect 0 "saved $tmp/r/finetuned.safetensors" -- "$cli" fit --weights "$tmp/r/best.safetensors" --train-subset 300 --epochs 1 \
    --threads 2 --quiet --out "$tmp/r/finetuned.safetensors"
rm -f "$tmp/r/finetuned.safetensors"
# --force: the old run's files are replaced, the old best.safetensors is gone
cp -r "$tmp/r" "$tmp/f"
expect 0 "saved" -- "$cli" fit --model mlp --train-subset 300 --epochs 1 --threads 2 --quiet --checkpoint-dir "$tmp/f" --force
[ ! -e "$tmp/f/best.safetensors" ] && ok || bad "--force kept the old run's best.safetensors"
grep -qx "model = mlp" "$tmp/f/config.ini" && ok || bad "--force: config.ini is not the new run's"
grep -q "force" "$tmp/f/config.ini" && bad "config.ini records --force" || ok
# an empty directory, or one holding other files, is fine
mkdir -p "$tmp/empty" && touch "$tmp/empty/notes.txt"
expect 0 "saved" -- "$cli" fit --model mlp --train-subset 300 --epochs 1 --threads 2 --quiet --checkpoint-dir "$tmp/empty"

# --- item 3: a resume the checkpoint refuses changes nothing
expect 2 "--resume $tmp/r: .*architecture 'smallcnn'.*'mlp'.*nothing was changed" -- "$cli" fit --resume "$tmp/r" --model mlp --epochs 3
[ "$(sums "$tmp/r")" = "$before" ] && ok || bad "a refused --resume changed $tmp/r: $(diff <(echo "$before") <(sums "$tmp/r"))"
expect 2 "batch size 128, this run has 64" -- "$cli" fit --resume "$tmp/r" --batch 64 --epochs 3
[ "$(sums "$tmp/r")" = "$before" ] && ok || bad "a refused --resume (batch) changed $tmp/r"
# and a plain resume still works afterwards
expect 0 "resuming $tmp/r after epoch 2" -- "$cli" fit --resume "$tmp/r" --epochs 3
[ "$(cut -d, -f1 "$tmp/r/metrics.csv" | tail -n +2 | tr '\n' ' ')" = "1 2 3 " ] && ok ||
    bad "metrics.csv after the resume: $(cat "$tmp/r/metrics.csv")"

# --- item 13: resuming a finished run says so and touches no file
done_sums=$(sums "$tmp/r")
expect 0 "the run is complete \(3 epochs\).*nothing to do" -- "$cli" fit --resume "$tmp/r"
[ "$(sums "$tmp/r")" = "$done_sums" ] && ok || bad "resuming a finished run changed files"
grep -q "resuming .* after epoch" "$tmp/out" && bad "a finished run claims to resume" || ok

# --- item 4: --config naming a directory
expect 2 "--config $tmp/r: is a directory.*$tmp/r/config.ini" -- "$cli" fit --config "$tmp/r" --epochs 1
grep -q "epoch" "$tmp/out" && bad "fit --config DIR trained the defaults" || ok

finish cli_daily_rundir
