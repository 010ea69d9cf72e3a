#!/usr/bin/env bash
# Saving onto a full filesystem (a small tmpfs filled up) and into a read-only one: the model
# file (fit --out), the checkpoint (fit --checkpoint-dir, resumed), the metrics log and the
# report fail with a non-zero exit and a message naming the file, and the previous files stay
# byte for byte (sha256) and loadable. Needs mount(8) rights (root, as on the CI machine);
# skipped (77) where a tmpfs cannot be mounted.
source "$(dirname "$0")/harness.sh"

full="$tmp/full" ro="$tmp/ro"
mkdir -p "$full" "$ro"
mount -t tmpfs -o size=4m tmpfs "$full" 2>/dev/null || { echo "cli_disk_faults: cannot mount a tmpfs, skipped"; exit 77; }
trap 'umount "$full" "$ro" 2>/dev/null; rm -rf "$tmp"' EXIT
mount -t tmpfs -o size=4m tmpfs "$ro" || bad "second tmpfs"

hash() { sha256sum "$1" | cut -d' ' -f1; }
# Fills the filesystem holding DIR to the last byte.
fill() { dd if=/dev/zero of="$1/filler" bs=4k >/dev/null 2>&1; sync; }

run=(fit --model smallcnn --train-subset 500 --threads 2 --quiet)
"$cli" "${run[@]}" --epochs 1 --out "$full/model.safetensors" --checkpoint-dir "$full/run" >/dev/null 2>&1 ||
    bad "the first run failed"
cp -r "$full/run" "$tmp/run-copy"
model_hash=$(hash "$full/model.safetensors") last_hash=$(hash "$full/run/last.safetensors")
fill "$full"

# --- the model file: training runs, the save fails, the old file stays
expect 1 "$full/model.safetensors.*No space left" -- "$cli" "${run[@]}" --epochs 1 --out "$full/model.safetensors" --force
[ "$(hash "$full/model.safetensors")" = "$model_hash" ] && ok || bad "--out on a full disk changed the old model"
expect 0 "accuracy" -- "$cli" eval "$full/model.safetensors" --samples 100
ls "$full"/*.tmp.* >/dev/null 2>&1 && bad "a temporary file was left on the full disk" || ok

# --- a resumed run on a full disk: it stops at its first write (config.ini), naming the file
config_hash=$(hash "$full/run/config.ini")
expect 1 "$full/run/config.ini.*No space left" -- "$cli" fit --resume "$full/run" --epochs 3 --quiet
[ "$(hash "$full/run/config.ini")" = "$config_hash" ] && ok || bad "a full disk changed config.ini"

# --- room for the log but not for the checkpoint (1.3 MB): epoch 2 trains, its checkpoint fails
# naming the file, the epoch-1 checkpoint stays and loads
rm -f "$full/filler"
fill "$full"
truncate -s -256K "$full/filler"
expect 1 "$full/run/last.safetensors.*No space left" -- "$cli" fit --resume "$full/run" --epochs 3 --quiet
[ "$(hash "$full/run/last.safetensors")" = "$last_hash" ] && ok || bad "a full disk changed last.safetensors"
expect 0 "accuracy" -- "$cli" eval "$full/run/last.safetensors" --samples 100
rm -f "$full/filler"
expect 0 "resuming .*run after epoch 1" -- "$cli" fit --resume "$full/run" --epochs 2 --quiet

# --- the report into a full disk
fill "$full"
expect 1 "$full/report" -- "$cli" report "$tmp/run-copy" --out "$full/report"
rm -f "$full/filler"

# --- a read-only filesystem: refused before training, naming the file; the old file stays
cp "$tmp/run-copy/last.safetensors" "$ro/model.safetensors"
ro_hash=$(hash "$ro/model.safetensors")
mount -o remount,ro "$ro" || bad "remount read-only"
expect 1 "$ro/model.safetensors.*Read-only" -- "$cli" "${run[@]}" --epochs 1 --out "$ro/model.safetensors" --force
[ "$(hash "$ro/model.safetensors")" = "$ro_hash" ] && ok || bad "a read-only disk's model changed"
expect 1 "$ro/run.*Read-only" -- "$cli" "${run[@]}" --epochs 1 --checkpoint-dir "$ro/run"
expect 1 "$ro/report.*Read-only" -- "$cli" report "$tmp/run-copy" --out "$ro/report"

finish cli_disk_faults
