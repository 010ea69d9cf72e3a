#!/usr/bin/env bash
# advtrain export on int8 model files (docs/export.md): integer-only C99 with the library's own
# kernels. For smallcnn, seed-cnn and a network with every int8 kernel (grouped conv, BatchNorm
# applied on its own, Add, average and global pooling): the exported C, built with gcc on this
# machine and with arm-none-eabi-gcc for a Cortex-M4 run under QEMU (MPS2 AN386, semihosting),
# gives advtrain's int8 logits bit for bit on 200 test images (the golden file's check), and the
# check fails when a single golden value is changed. Bad flags and files get clear errors.
source "$(dirname "$0")/harness.sh"
m4dir="$(dirname "$0")/m4"

declare -A specs=(
    [smallcnn]=smallcnn
    [seed_cnn]=seed-cnn
    [graph]='conv:8:3:1:1:bias=0,bn,a=relu,conv:8:3:1:1:groups=8:bias=0,bn,relu,conv:8:1,bn,add:a,bn,relu,avgpool:2,gap,flatten,linear:10'
)
for name in smallcnn seed_cnn graph; do
    "$cli" fit --model "${specs[$name]}" --train-subset 2000 --epochs 1 --batch 64 --threads 2 --quiet \
        --out "$tmp/$name.safetensors" >/dev/null 2>"$tmp/err" || bad "training $name: $(cat "$tmp/err")"
    "$cli" quantize "$tmp/$name.safetensors" --calib 300 --samples 100 >/dev/null 2>"$tmp/err" ||
        bad "quantizing $name: $(cat "$tmp/err")"
    expect 0 "int8, integer arithmetic only" -- \
        "$cli" export "$tmp/$name.int8.safetensors" --c "$tmp/$name" --prefix "$name" --golden 200
    grep -q "MACs per inference: [1-9]" "$tmp/out" && grep -q "RAM: [1-9][0-9]* bytes of scratch" "$tmp/out" && ok ||
        bad "$name: no figures printed: $(cat "$tmp/out")"
done

# --- on this machine: strict C99, no warnings, every golden sample identical
for name in smallcnn seed_cnn graph; do
    upper=$(echo "$name" | tr a-z A-Z)
    gcc -std=c99 -pedantic -Wall -Wextra -Werror -O2 -D"${upper}_GOLDEN_MAIN" "$tmp/$name/$name.c" \
        "$tmp/$name/${name}_golden.c" -o "$tmp/$name/host" 2>"$tmp/err" || bad "$name: gcc: $(head -c 600 "$tmp/err")"
    expect 0 "$name: 0 of 200 golden samples differ" -- "$tmp/$name/host"
done
# the check can fail: one golden logit changed is found
sed '/_golden_logits\[200\]\[10\] = {/{n;s/{\(-\?[0-9]*\),/{\1+1,/}' "$tmp/smallcnn/smallcnn_golden.c" >"$tmp/smallcnn/bad_golden.c"
cmp -s "$tmp/smallcnn/bad_golden.c" "$tmp/smallcnn/smallcnn_golden.c" && bad "could not damage the golden file" || ok
gcc -std=c99 -O2 -DSMALLCNN_GOLDEN_MAIN "$tmp/smallcnn/smallcnn.c" "$tmp/smallcnn/bad_golden.c" -o "$tmp/smallcnn/bad" &&
    expect 1 "1 of 200 golden samples differ.*first: sample 0" -- "$tmp/smallcnn/bad"
# the exported header also compiles as C++ and without the static buffers
if command -v g++ >/dev/null; then
    echo '#include "smallcnn.h"
int main() { return SMALLCNN_OUTPUTS == 10 ? 0 : 1; }' >"$tmp/smallcnn/cpp.cc"
    g++ -Wall -Werror -I"$tmp/smallcnn" "$tmp/smallcnn/cpp.cc" -o "$tmp/smallcnn/cpp" && "$tmp/smallcnn/cpp" && ok ||
        bad "the header does not compile as C++"
fi
gcc -std=c99 -pedantic -Wall -Wextra -Werror -c -DSMALLCNN_NO_STATIC_SCRATCH "$tmp/smallcnn/smallcnn.c" \
    -o "$tmp/smallcnn/ns.o" && ! nm "$tmp/smallcnn/ns.o" | grep -q smallcnn_predict && ok ||
    bad "SMALLCNN_NO_STATIC_SCRATCH left smallcnn_predict in"

# the default prefix: the file's name ("smallcnn.int8.safetensors" -> smallcnn_int8)
expect 0 "smallcnn_int8.h" -- "$cli" export "$tmp/smallcnn.int8.safetensors" --c "$tmp/default"
[ -f "$tmp/default/smallcnn_int8.c" ] && [ ! -e "$tmp/default/smallcnn_int8_golden.c" ] && ok ||
    bad "default prefix: $(ls "$tmp/default")"

# --- ONNX (float and int8; the structure and ONNX Runtime's logits: tests/test_export_onnx.c)
expect 0 'wrote .*/smallcnn.onnx: ONNX \(IR 7, opset 13\)' -- "$cli" export "$tmp/smallcnn.safetensors" --onnx "$tmp/smallcnn.onnx"
[ -s "$tmp/smallcnn.onnx" ] && ok || bad "no ONNX file"
expect 0 "g.onnx: ONNX" -- "$cli" export "$tmp/graph.safetensors" --onnx "$tmp/g.onnx" --c "$tmp/gc" --prefix g
[ -s "$tmp/g.onnx" ] && [ -f "$tmp/gc/g.c" ] && ok || bad "--onnx with --c: not both written"
expect 0 "int8 as QuantizeLinear/DequantizeLinear" -- "$cli" export "$tmp/smallcnn.int8.safetensors" --onnx "$tmp/q.onnx"
[ -s "$tmp/q.onnx" ] && ok || bad "no int8 ONNX file"
expect 2 "--golden 5: golden vectors go with the C files; add --c DIR" -- "$cli" export "$tmp/smallcnn.int8.safetensors" --onnx "$tmp/q2.onnx" --golden 5
expect 2 "say what to write: --c DIR .* or --onnx FILE" -- "$cli" export "$tmp/smallcnn.safetensors"
expect 1 "--onnx .*smallcnn.onnx exists and is not a directory" -- "$cli" export "$tmp/smallcnn.safetensors" --onnx "$tmp/smallcnn.onnx/x/y.onnx"

# --- errors
expect 2 "--int8: .* is a float model; quantize it first" -- "$cli" export "$tmp/smallcnn.safetensors" --c "$tmp/x" --int8
expect 2 "--golden: .* is a float model" -- "$cli" export "$tmp/smallcnn.safetensors" --c "$tmp/x" --golden 5
expect 2 "--golden 20000: the fashion-mnist test split has only 10000" -- \
    "$cli" export "$tmp/smallcnn.int8.safetensors" --c "$tmp/x" --golden 20000
expect 2 "--golden -1: out of range" -- "$cli" export "$tmp/smallcnn.int8.safetensors" --c "$tmp/x" --golden -1
expect 2 "--prefix 9x: not a C identifier" -- "$cli" export "$tmp/smallcnn.int8.safetensors" --c "$tmp/x" --prefix 9x
head -c 3000 "$tmp/smallcnn.int8.safetensors" >"$tmp/cut.safetensors"
expect 1 "cut.safetensors" -- "$cli" export "$tmp/cut.safetensors" --c "$tmp/x"
[ ! -e "$tmp/x/cut.c" ] && ok || bad "a damaged file left C files behind"
# a failed export leaves the earlier files as they were
before=$(md5sum <"$tmp/smallcnn/smallcnn.c")
chmod 500 "$tmp/smallcnn"
if [ "$(id -u)" -ne 0 ]; then
    expect 1 "cannot" -- "$cli" export "$tmp/smallcnn.int8.safetensors" --c "$tmp/smallcnn" --prefix smallcnn
fi
chmod 700 "$tmp/smallcnn"
[ "$(md5sum <"$tmp/smallcnn/smallcnn.c")" = "$before" ] && ok || bad "the earlier export changed"

# --- on an emulated Cortex-M4 (QEMU MPS2 AN386): the same 200 samples, bit for bit
if [ "${ADVTRAIN_SANITIZED:-0}" = 1 ]; then
    echo "cli_export_int8: the Cortex-M4 part runs in the plain build only"
elif ! command -v arm-none-eabi-gcc >/dev/null || ! command -v qemu-system-arm >/dev/null; then
    echo "cli_export_int8: arm-none-eabi-gcc or qemu-system-arm missing (scripts/install-deps.sh installs them): Cortex-M4 part skipped"
    finish cli_export_int8 || exit 1
    exit 77
else
    for name in smallcnn seed_cnn graph; do
        upper=$(echo "$name" | tr a-z A-Z)
        arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -O2 -std=c99 -Wall -Wextra -Werror --specs=rdimon.specs \
            -T "$m4dir/mps2_an386.ld" -D"${upper}_GOLDEN_MAIN" "$m4dir/startup.c" "$tmp/$name/$name.c" \
            "$tmp/$name/${name}_golden.c" -o "$tmp/$name/m4.elf" 2>"$tmp/err" ||
            bad "$name: arm-none-eabi-gcc: $(head -c 600 "$tmp/err")"
        expect 0 "$name: 0 of 200 golden samples differ" -- timeout 300 qemu-system-arm -M mps2-an386 -cpu cortex-m4 \
            -nographic -monitor none -semihosting-config enable=on,target=native -kernel "$tmp/$name/m4.elf"
        arm-none-eabi-size "$tmp/$name/m4.elf" | tail -1 | awk -v n="$name" '{print "cli_export_int8: " n " on Cortex-M4: text " $1 ", data " $2 ", bss " $3 " bytes (golden samples and printf included)"}'
    done
    # and the damaged golden file fails there too
    arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -O2 -std=c99 --specs=rdimon.specs -T "$m4dir/mps2_an386.ld" \
        -DSMALLCNN_GOLDEN_MAIN "$m4dir/startup.c" "$tmp/smallcnn/smallcnn.c" "$tmp/smallcnn/bad_golden.c" \
        -o "$tmp/smallcnn/bad.elf" &&
        expect 1 "1 of 200 golden samples differ" -- timeout 300 qemu-system-arm -M mps2-an386 -cpu cortex-m4 \
            -nographic -monitor none -semihosting-config enable=on,target=native -kernel "$tmp/smallcnn/bad.elf"
fi
finish cli_export_int8
