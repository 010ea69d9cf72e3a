#!/usr/bin/env bash
# Installs the Debian 12 packages advtrain needs to build, test and train on Fashion-MNIST.
# Idempotent: does nothing when everything is already installed.
set -euo pipefail
# clang, its runtimes (libFuzzer, ASan, UBSan) and its OpenMP: the fuzz build (scripts/fuzz.sh).
# Open MPI: `mpirun -np N advtrain eval|attack` (docs/distributed.md) and its test.
# The Arm toolchain, newlib and QEMU: the exported int8 C run on an emulated Cortex-M4
# (tests/cli_export_int8.sh, docs/export.md). protobuf-c: the ONNX export (src/io/onnx).
packages=(build-essential cmake pkg-config libopenblas-dev libcjson-dev zlib1g-dev libpng-dev libinih-dev
          libplplot-dev plplot-driver-cairo
          clang libclang-rt-14-dev libomp-dev
          libopenmpi-dev openmpi-bin
          gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
          libprotobuf-c-dev protobuf-c-compiler
          dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present"
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
