#!/usr/bin/env bash
# The project's main job. Installs what is missing, builds an optimised tree in
# build/release and runs the micro-benchmarks of the shared core.
# Usage: scripts/run.sh [extra Google Benchmark flags]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
BUILD=${DYNAMO_RELEASE_BUILD:-build/release}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDYNAMO_BUILD_TESTS=OFF -DDYNAMO_BUILD_BENCH=ON \
  -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build "$BUILD" -j2

echo
echo "== micro-benchmarks (bench/README.md explains them) =="
"$BUILD/bin/dynamo_micro_bench" --benchmark_min_time=0.2 "$@"
