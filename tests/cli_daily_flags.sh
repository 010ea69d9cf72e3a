#!/usr/bin/env bash
# Issue 21, items 6, 8 and 10: one eps parser for every subcommand (fit accepts 8/255 and gives
# eval's hint for 8); fit --weights without --model takes the architecture the file records, and
# a mismatch names both architectures; a file that is not safetensors is called that.
source "$(dirname "$0")/harness.sh"

small=(--train-subset 200 --epochs 1 --threads 2)

# --- item 6: fit --eps 8/255 as eval, attack and report take it; fit --eps 8 gets the hint
expect 0 "eps 0.0313726" -- "$cli" fit --model mlp "${small[@]}" --adv fgsm --eps 8/255 --out "$tmp/e.safetensors"
expect 2 "fit: --eps 8: eps is on the 0-1 pixel scale; for 8 on the 0-255 scale write 8/255" -- \
    "$cli" fit --model mlp --adv fgsm --eps 8
expect 2 "eval: --eps 8: eps is on the 0-1 pixel scale; for 8 on the 0-255 scale write 8/255" -- \
    "$cli" eval "$tmp/e.safetensors" --attack fgsm --eps 8
expect 2 "fit: --eps 0.1,0.2: takes one value here" -- "$cli" fit --model mlp --adv fgsm --eps 0.1,0.2
expect 2 "fit: --eps: 'x' is not a number" -- "$cli" fit --model mlp --adv fgsm --eps x
# a config file takes the same text, and the effective config records it as given
printf '[fit]\nadv = fgsm\neps = 4/255\n' >"$tmp/eps.ini"
expect 0 "eps 0.0156863" -- "$cli" fit --model mlp "${small[@]}" --config "$tmp/eps.ini" --checkpoint-dir "$tmp/run"
grep -qx "eps = 4/255" "$tmp/run/config.ini" && ok || bad "config.ini eps: $(grep eps "$tmp/run/config.ini")"

# --- item 8: --weights FILE with no --model: the file's advtrain.arch (smallcnn) is trained
expect 0 "saved" -- "$cli" fit --model smallcnn "${small[@]}" --quiet --out "$tmp/cnn.safetensors"
expect 0 "--weights $tmp/cnn.safetensors holds the architecture 'smallcnn'" -- \
    "$cli" fit --weights "$tmp/cnn.safetensors" "${small[@]}" --out "$tmp/ft.safetensors"
grep -q "smallcnn on fashion-mnist" "$tmp/out" && ok || bad "fine-tuning did not train smallcnn: $(head -3 "$tmp/out")"
# --model given and different: both architectures named
expect 1 "this run trains 'mlp' \(--model\); the file holds 'smallcnn' \(its advtrain.arch metadata\)" -- \
    "$cli" fit --weights "$tmp/cnn.safetensors" --model mlp "${small[@]}" --out "$tmp/ft2.safetensors"

# --- item 10: a text file is "not a safetensors file", not a 19-digit header length
printf 'hello, this is a text file\nand not a model\n' >"$tmp/some.txt"
expect 1 "some.txt: not a safetensors file" -- "$cli" eval "$tmp/some.txt"
expect 1 "some.txt: not a safetensors file" -- "$cli" fit --weights "$tmp/some.txt" --model mlp "${small[@]}" --out "$tmp/x.safetensors"
printf 'ab' >"$tmp/short.bin"
expect 1 "short.bin: file is 2 bytes, too short" -- "$cli" eval "$tmp/short.bin"

finish cli_daily_flags
