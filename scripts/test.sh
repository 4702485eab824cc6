#!/usr/bin/env bash
# Runs every test. Installs what is missing, builds build/test with clang,
# AddressSanitizer + UndefinedBehaviorSanitizer and -Werror, then runs the
# whole ctest suite: unit tests and each libFuzzer target for
# DYNAMO_FUZZ_SECONDS (default 60) seconds.
# Usage: scripts/test.sh [extra ctest flags, e.g. -L unit or -R Ring]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
BUILD=${DYNAMO_TEST_BUILD:-build/test}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DDYNAMO_SANITIZE=ON -DDYNAMO_FUZZ=ON -DDYNAMO_BUILD_TESTS=ON -DDYNAMO_BUILD_BENCH=ON \
  -DDYNAMO_FUZZ_SECONDS="${DYNAMO_FUZZ_SECONDS:-60}" \
  -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build "$BUILD" -j2

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$BUILD" --output-on-failure -j2 "$@"
