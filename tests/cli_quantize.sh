#!/usr/bin/env bash
# advtrain quantize and int8 model files: post-training quantization of a BatchNorm CNN reports
# float and int8 accuracy and writes the int8 file (default name beside the model); eval reads it
# and gives the accuracy quantize reported, bit for bit the same predictions; commands that take
# float models refuse it by name, and it refuses to stand in for one; bad flags and damaged files
# get clear errors.
source "$(dirname "$0")/harness.sh"

model="$tmp/bn.safetensors"
"$cli" fit --model 'conv:8:3:1:1,bn,relu,maxpool:2,conv:16:3:1:1:groups=2,bn,relu,flatten,linear:10' \
    --train-subset 3000 --epochs 2 --batch 64 --threads 2 --quiet --out "$model" >/dev/null ||
    bad "training the model failed"

# --- help and usage errors
expect 0 "usage: advtrain quantize" -- "$cli" quantize --help
expect 0 "quantize +int8 post-training" -- "$cli" --help
expect 2 "which model" -- "$cli" quantize
expect 2 "--calib 0: out of range" -- "$cli" quantize "$model" --calib 0
expect 2 "is the float model itself" -- "$cli" quantize "$model" --out "$model"
expect 2 "--percentile 20: out of range" -- "$cli" quantize "$model" --percentile 20
expect 2 "--calib 70000: the fashion-mnist training split has only 60000" -- "$cli" quantize "$model" --calib 70000

# --- quantize: the report, the default output name, the file
expect 0 "float [0-9.]*%  int8 [0-9.]*%" -- "$cli" quantize "$model" --calib 500 --samples 1000
[ -f "$tmp/bn.int8.safetensors" ] && ok || bad "no $tmp/bn.int8.safetensors"
reported=$(sed -n 's/.*int8 \([0-9.]*\)%.*/\1/p' "$tmp/out")
"$cli" quantize "$model" --calib 500 --samples 1000 --json --out "$tmp/q.safetensors" >"$tmp/q.json" ||
    bad "quantize --json failed"
grep -q '"int8_accuracy":' "$tmp/q.json" && grep -q '"calibration_samples":500' "$tmp/q.json" && ok ||
    bad "quantize --json: $(cat "$tmp/q.json")"
cmp -s "$tmp/q.safetensors" "$tmp/bn.int8.safetensors" && ok || bad "two runs wrote different int8 files"
expect 0 "\\(percentile 99.99\\)" -- "$cli" quantize "$model" --calib 500 --samples 200 --percentile 99.99 --out "$tmp/p.safetensors"
cmp -s "$tmp/p.safetensors" "$tmp/q.safetensors" && bad "percentile calibration wrote the min/max file" || ok
# a quarter of the float file's size, about (int8 weights, one scale per channel)
fsize=$(stat -c %s "$model"); qsize=$(stat -c %s "$tmp/q.safetensors")
[ $((qsize * 3)) -lt "$fsize" ] && ok || bad "int8 file $qsize bytes, float $fsize"

# --- eval reads it: the accuracy quantize reported
expect 0 "\\(int8\\) on fashion-mnist test \\(1000 samples\\): accuracy $reported%" -- "$cli" eval "$tmp/q.safetensors" --samples 1000
expect 0 '"format":"int8"' -- "$cli" eval "$tmp/q.safetensors" --samples 10 --json

# --- attacks on the int8 model (transfer, direct with BPDA gradients, worst case) beside the float model's; at eps 0
# nothing changes, so every int8 column is the int8 clean accuracy; at eps 0.1 the worst case is
# at most each
expect 0 "int8 transfer +int8 direct +int8 worst" -- "$cli" eval "$tmp/q.safetensors" --attack pgd --eps 0.1 --steps 3 --samples 200
"$cli" eval "$tmp/q.safetensors" --attack pgd --eps 0.1 --steps 3 --samples 200 --json >"$tmp/w.json" 2>/dev/null
python3 - "$tmp/w.json" <<'PY' && ok || bad "int8 worst case above transfer or bpda: $(cat "$tmp/w.json")"
import json, sys
j = json.load(open(sys.argv[1]))
t = j["transfer_attacks"][0]
w = t["int8_robust_accuracy"]
# a plainly trained model at eps 0.1: the attack on the int8 network fools some samples
sys.exit(0 if w <= t["int8_transfer_robust_accuracy"] and w <= t["int8_direct_robust_accuracy"] and
         t["int8_direct_robust_accuracy"] < j["clean_accuracy"] else 1)
PY
"$cli" eval "$tmp/q.safetensors" --attack pgd --eps 0 --steps 1 --samples 200 --json >"$tmp/t.json" 2>"$tmp/err" ||
    bad "transfer at eps 0: $(cat "$tmp/err")"
python3 - "$tmp/t.json" <<'PY' && ok || bad "transfer at eps 0: $(cat "$tmp/t.json")"
import json, sys
j = json.load(open(sys.argv[1]))
t = j["transfer_attacks"][0]
c = j["clean_accuracy"]
sys.exit(0 if t["int8_transfer_robust_accuracy"] == c and t["int8_direct_robust_accuracy"] == c and
         t["int8_robust_accuracy"] == c and "float_clean_accuracy" in j else 1)
PY
# the gradient-masking check: an untrained network of the same architecture as the stand-in gives
# gradients that miss the int8 model's way, so Square on its logits fools it far more often
"$cli" fit --model 'conv:8:3:1:1,bn,relu,maxpool:2,conv:16:3:1:1:groups=2,bn,relu,flatten,linear:10' \
    --train-subset 200 --epochs 1 --batch 64 --lr 0 --seed 7 --threads 2 --quiet --out "$tmp/untrained.safetensors" \
    >/dev/null 2>&1 || bad "training the untrained stand-in failed"
expect 0 "" -- "$cli" eval "$tmp/q.safetensors" --float-model "$tmp/untrained.safetensors" --attack pgd,square \
    --queries 300 --steps 5 --eps 0.1 --samples 200 --threads 2
grep -q "possible gradient masking" "$tmp/err" && ok || bad "no gradient-masking warning with an untrained stand-in"
"$cli" eval "$tmp/q.safetensors" --attack pgd,square --queries 300 --steps 5 --eps 0.1 --samples 200 --threads 2 \
    >/dev/null 2>"$tmp/err2"
grep -q "possible gradient masking" "$tmp/err2" && bad "a gradient-masking warning with the model's own float stand-in" || ok
expect 1 "--float-model: $tmp/missing.safetensors: cannot open" -- "$cli" eval "$tmp/q.safetensors" --attack pgd --eps 0.1 --float-model "$tmp/missing.safetensors"
expect 2 "--float-model goes with an int8 model file" -- "$cli" eval "$model" --float-model "$model"

# --- where an int8 model does not go, and the other way round
expect 1 "is an int8 model .*attack takes float models" -- "$cli" attack "$tmp/q.safetensors" --attack pgd --eps 0.1 --out "$tmp/a.safetensors"
expect 1 "is an int8 model .*verify takes float models" -- "$cli" verify "$tmp/q.safetensors" --eps 0.01
expect 0 "int8, integer arithmetic only" -- "$cli" export "$tmp/q.safetensors" --c "$tmp/gen" # integer-only C (cli_export_int8)
expect 1 "is an int8 model .*quantize takes float models" -- "$cli" quantize "$tmp/q.safetensors" --out "$tmp/qq.safetensors"

# --- damaged int8 files name the file
head -c 2000 "$tmp/q.safetensors" >"$tmp/cut.safetensors"
expect 1 "$tmp/cut.safetensors" -- "$cli" eval "$tmp/cut.safetensors"
python3 - "$tmp/q.safetensors" "$tmp/bad.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = bytearray(raw[8 + n:])
begin, end = header["0.shift"]["data_offsets"]
data[begin:begin + 4] = struct.pack("<i", 77)  # a shift no kernel takes
open(sys.argv[2], "wb").write(raw[:8 + n] + bytes(data))
PY
expect 1 "'0.shift' holds 77 at index 0" -- "$cli" eval "$tmp/bad.safetensors"

# --- quantization-aware training: fit --qat leaves its activation ranges in the model file and
# quantize uses them (the int8 model is the one trained); a damaged range is refused by name
qat="$tmp/qat.safetensors"
"$cli" fit --model 'conv:8:3:1:1,bn,relu,maxpool:2,flatten,linear:10' --train-subset 2000 --epochs 1 --batch 64 \
    --threads 2 --qat --quiet --out "$qat" >/dev/null || bad "fit --qat failed"
grep -aq '"advtrain.qat":"0 ' "$qat" && bad "the folded conv has a range of its own" || ok
grep -aq '"advtrain.qat":"1 [-0-9.e]* [0-9.e]*"' "$qat" && ok || bad "no BatchNorm range in advtrain.qat"
expect 0 "ranges quantization-aware training left in the file \\(1 tensor\\)" -- "$cli" quantize "$qat" --calib 200 --samples 500
expect 0 '"qat_ranges":1' -- "$cli" quantize "$qat" --calib 200 --samples 50 --json --out "$tmp/qat8.safetensors"
expect 0 "PTQ|post-training" -- "$cli" quantize "$model" --calib 200 --samples 50 --out "$tmp/ptq.safetensors"
sed 's/"advtrain.qat":"1 /"advtrain.qat":"7 /' "$qat" >"$tmp/badqat.safetensors"
expect 1 "$tmp/badqat.safetensors: advtrain.qat metadata" -- "$cli" quantize "$tmp/badqat.safetensors"
expect 2 "--qat-momentum 2: out of range" -- "$cli" fit --model smallcnn --qat --qat-momentum 2 --out "$tmp/x.safetensors"
expect 2 "quantization-aware training: int8 quantization: layer 2 \\(tanh\\) has no int8 kernel" -- "$cli" fit --model 'flatten,linear:32,tanh,linear:10' --qat --train-subset 200 \
    --epochs 1 --out "$tmp/x.safetensors"
finish cli_quantize
