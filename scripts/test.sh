#!/usr/bin/env bash
# Second command of the README: build and run the whole test suite, once plainly and once under
# AddressSanitizer + UndefinedBehaviorSanitizer, then fuzz each parser for 20 seconds
# (scripts/fuzz.sh: libFuzzer with clang; a crash leaves its reproducer in tests/fuzz/corpus).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs="$(nproc)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs")
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DADVTRAIN_SANITIZE=ON
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j"$jobs")
bash scripts/fuzz.sh 20
