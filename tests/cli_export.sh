#!/usr/bin/env bash
# advtrain export --c: the files it writes, their default names, the generated code compiling as
# strict C99 (and its header as C++), and clear errors with the right exit codes; graph models
# (resnet8 with BatchNorm folded into its convs, a BatchNorm1d spec) from saved files. The logits
# themselves are compared with the library's in tests/test_export_c.c.
source "$(dirname "$0")/harness.sh"
cc="${CC:-cc}"

model="$tmp/seed-mlp.safetensors"
"$cli" fit --model seed-mlp --data synthetic --epochs 1 --batch 8 --lr 0.01 --out "$model" \
    --quiet >/dev/null || bad "training the seed-mlp model failed"

# --- help and usage errors
expect 0 "usage: advtrain export" -- "$cli" export --help
expect 0 "export +write a saved model" -- "$cli" --help
expect 2 "which model" -- "$cli" export
expect 2 "--c DIR" -- "$cli" export "$model"
expect 2 "--c needs a value" -- "$cli" export "$model" --c
expect 2 "--prefix 9lives: not a C identifier" -- "$cli" export "$model" --c "$tmp/gen" --prefix 9lives
expect 2 "--prefix a-b: not a C identifier" -- "$cli" export "$model" --c "$tmp/gen" --prefix a-b
expect 2 "unknown flag '--cpp'" -- "$cli" export "$model" --cpp "$tmp/gen"

# --- run failures name the file
expect 1 "$tmp/missing.safetensors" -- "$cli" export "$tmp/missing.safetensors" --c "$tmp/gen"
printf 'not a model' >"$tmp/junk.safetensors"
expect 1 "$tmp/junk.safetensors" -- "$cli" export "$tmp/junk.safetensors" --c "$tmp/gen"
touch "$tmp/a_file"
expect 1 "$tmp/a_file: exists and is not a directory" -- "$cli" export "$model" --c "$tmp/a_file"
# missing parents are created, as for every output path (tests/cli_daily_outputs.sh)
expect 0 "wrote $tmp/no/such/dir/" -- "$cli" export "$model" --c "$tmp/no/such/dir"

# --- the default prefix comes from the file name; DIR is created
expect 0 "wrote .*seed_mlp.h and .*seed_mlp.c" -- "$cli" export "$model" --c "$tmp/gen"
if [ -f "$tmp/gen/seed_mlp.h" ] && [ -f "$tmp/gen/seed_mlp.c" ]; then ok; else bad "no seed_mlp.[ch]"; fi
cp "$model" "$tmp/2nd model.v1.safetensors"
expect 0 "model_2nd_model_v1.c" -- "$cli" export "$tmp/2nd model.v1.safetensors" --c "$tmp/gen"
expect 0 "wrote .*tiny.c" -- "$cli" export "$model" --c "$tmp/gen/" --prefix tiny
if ls "$tmp/gen" | grep -q '\.tmp\.'; then bad "temporary files left in $tmp/gen"; else ok; fi

# --- the generated code: strict C99, links without libm (no Tanh/Sigmoid), header valid C++
cat >"$tmp/main.c" <<'C'
#include <stdio.h>
#include "tiny.h"
int main(void)
{
    float x[TINY_INPUT_SIZE] = {0}, z[TINY_OUTPUTS];
    static float scratch[TINY_SCRATCH_FLOATS];
    int a = tiny_predict(x, z), b = tiny_forward(x, z, scratch);
    printf("%d %d\n", a, b);
    return a != b;
}
C
if "$cc" -std=c99 -Wall -Wextra -Werror -pedantic -O2 -I"$tmp/gen" "$tmp/main.c" "$tmp/gen/tiny.c" \
    -o "$tmp/tiny" && "$tmp/tiny" >/dev/null; then ok; else bad "the exported tiny.c does not build or run"; fi
if command -v c++ >/dev/null 2>&1; then
    if echo '#include "tiny.h"
int main() { float x[TINY_INPUT_SIZE] = {}; return tiny_predict(x, nullptr) < 0; }' |
        c++ -std=c++11 -Wall -Wextra -Werror -fsyntax-only -I"$tmp/gen" -x c++ -; then ok; else
        bad "tiny.h is not valid C++"; fi
fi

# --- graph models from saved files: resnet8 (residual Adds, global average pooling, BatchNorm
# folded into each conv) trained a few steps on CIFAR-10-format files, and a BatchNorm1d spec
python3 - "$tmp/cifar" <<'EOF'
import os, random, sys
out = sys.argv[1]
os.makedirs(out)
rng = random.Random(7)
for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    with open(os.path.join(out, name), "wb") as f:
        for _ in range(8):
            f.write(bytes([rng.randrange(10)]) + bytes(rng.randrange(256) for _ in range(3072)))
EOF
"$cli" fit --model resnet8 --data "cifar10:$tmp/cifar" --epochs 1 --batch 20 --lr 0.01 \
    --out "$tmp/r8.safetensors" --quiet >/dev/null || bad "training resnet8 failed"
"$cli" fit --model "linear:16,bn1d,relu,linear:10" --data synthetic --epochs 1 --batch 8 \
    --lr 0.01 --out "$tmp/bn.safetensors" --quiet >/dev/null || bad "training the bn1d spec failed"
expect 0 "wrote .*r8.h and .*r8.c" -- "$cli" export "$tmp/r8.safetensors" --c "$tmp/graph"
expect 0 "wrote .*bn.h and .*bn.c" -- "$cli" export "$tmp/bn.safetensors" --c "$tmp/graph"
shortcut="(layer2.shortcut): Conv2d(16, 32, kernel_size=1, stride=2, padding=0) -> 32x16x16, reads (layer1)"
if grep -qF "(layer3.bn2) into (layer3.conv2)" "$tmp/graph/r8.h" &&
    grep -qF "$shortcut" "$tmp/graph/r8.h" && grep -qF "(1) into (0)" "$tmp/graph/bn.h"; then ok; else
    bad "the headers do not list the folded BatchNorm layers and the shortcut's input"; fi
if grep -q "malloc" "$tmp/graph/r8.c"; then bad "r8.c allocates"; else ok; fi
for m in r8 bn; do
    M=$(echo "$m" | tr a-z A-Z)
    sed -e "s/tiny/$m/g" -e "s/TINY/$M/g" "$tmp/main.c" >"$tmp/graph/main_$m.c"
    if "$cc" -std=c99 -Wall -Wextra -Werror -pedantic -Wshadow -Wconversion -Wdouble-promotion \
        -Wvla -O2 -I"$tmp/graph" "$tmp/graph/main_$m.c" "$tmp/graph/$m.c" -o "$tmp/graph/$m" &&
        "$tmp/graph/$m" >/dev/null; then ok; else bad "the exported $m.c does not build or run"; fi
done

finish cli_export
