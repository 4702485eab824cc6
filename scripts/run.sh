#!/usr/bin/env bash
# The project's main job. Installs what is missing, builds an optimised tree
# in build/release, starts a 5-node local cluster (RocksDB data under
# var/demo-cluster, which git ignores), runs the shopping-cart demo (with a
# kill -9 of one node mid-run and its restart) and the C++ example, prints
# what happened, and stops the cluster.
#
# Usage: scripts/run.sh          the demo
#        scripts/run.sh bench    the micro-benchmarks of the shared core
# DYNAMO_DEMO_PORT sets the first node's port (default 7000).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
BUILD=${DYNAMO_RELEASE_BUILD:-build/release}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDYNAMO_BUILD_TESTS=OFF -DDYNAMO_BUILD_BENCH=ON \
  -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build "$BUILD" -j2

if [ "${1:-demo}" = "bench" ]; then
  echo
  echo "== micro-benchmarks (bench/README.md explains them) =="
  exec "$BUILD/bin/dynamo_micro_bench" --benchmark_min_time=0.2 "${@:2}"
fi

CTL="$BUILD/bin/dynamoctl"
DIR=var/demo-cluster
PORT=${DYNAMO_DEMO_PORT:-7000}
SEEDS=(--seed "127.0.0.1:$PORT" --seed "127.0.0.1:$((PORT + 1))" --seed "127.0.0.1:$((PORT + 2))")

"$CTL" cluster stop --dir "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR"
echo
echo "== starting a local cluster of 5 nodes (data and logs in $DIR)"
"$CTL" cluster start --nodes 5 --base-port "$PORT" --dir "$DIR" --partitions 256
trap '"$CTL" cluster stop --dir "$DIR" >/dev/null' EXIT
"$CTL" --seed "127.0.0.1:$PORT" status

echo
PYTHONPATH="$BUILD/python" /usr/bin/python3 examples/shopping_cart.py "${SEEDS[@]}" \
  --cluster-dir "$DIR" --dynamoctl "$CTL"

echo
"$BUILD/bin/shopping_cart_example" "${SEEDS[@]}"

echo
echo "== the cluster after the demo"
"$CTL" --seed "127.0.0.1:$PORT" status
echo
echo "== stopping the cluster"
