#!/usr/bin/env bash
# Runs the same dynamo-bench workloads against a 3-node dynamo cluster, one
# Redis server (persistence off) and, where etcd is installed, a 3-member
# etcd cluster, all on loopback, and prints one table with the ratios
# dynamo/Redis and dynamo/etcd. Stops everything it started (by PID).
#
# Usage: bench/compare.sh [--duration S] [--keys N] [--concurrency C] [--workloads "W C A"]
# Builds build/release first (scripts/run.sh's tree). Needs python3 for the table.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10 KEYS=100000 CONCURRENCY=50 WORKLOADS="W C A"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    *) echo "usage: $0 [--duration S] [--keys N] [--concurrency C] [--workloads \"W C A\"]" >&2; exit 2 ;;
  esac
done

BUILD=${DYNAMO_RELEASE_BUILD:-build/release}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDYNAMO_BUILD_TESTS=OFF -DDYNAMO_BUILD_BENCH=ON \
  -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build "$BUILD" -j2 --target dynamo-node dynamoctl dynamo_bench >/dev/null
BIN=$BUILD/bin

WORK=$(mktemp -d /tmp/dynamo-compare.XXXXXX)
PIDS=()
cleanup() {
  "$BIN/dynamoctl" cluster stop --dir "$WORK/dynamo" >/dev/null 2>&1 || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

DYN_PORT=17500 REDIS_PORT=17600 ETCD_PORT=17700
"$BIN/dynamoctl" cluster start --nodes 3 --base-port $DYN_PORT --dir "$WORK/dynamo" >/dev/null
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
HAVE_ETCD=0
if command -v etcd >/dev/null; then
  HAVE_ETCD=1
  CLUSTER=""
  for i in 1 2 3; do CLUSTER+="${CLUSTER:+,}e$i=http://127.0.0.1:$((ETCD_PORT + 10 + i))"; done
  for i in 1 2 3; do
    etcd --name e$i --data-dir "$WORK/etcd$i" --log-level error \
      --listen-client-urls http://127.0.0.1:$((ETCD_PORT + i)) \
      --advertise-client-urls http://127.0.0.1:$((ETCD_PORT + i)) \
      --listen-peer-urls http://127.0.0.1:$((ETCD_PORT + 10 + i)) \
      --initial-advertise-peer-urls http://127.0.0.1:$((ETCD_PORT + 10 + i)) \
      --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token compare \
      >"$WORK/etcd$i.log" 2>&1 &
    PIDS+=($!)
  done
else
  echo "compare: etcd is not installed; its column is left out" >&2
fi
sleep 2

COMMON=(--keys "$KEYS" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 2 --json --quiet)
run() {  # name workload load-flag args...
  local name=$1 workload=$2 load=$3; shift 3
  local out
  out=$("$BIN/dynamo-bench" "$@" --workload "$workload" $load "${COMMON[@]}" | tail -1)
  echo "$name $workload $out" >>"$WORK/results"
  echo "compare: $name workload $workload done" >&2
}
for backend in dynamo redis etcd; do
  [ $backend = etcd ] && [ $HAVE_ETCD = 0 ] && continue
  case $backend in
    dynamo) args=(--backend dynamo --seed 127.0.0.1:$DYN_PORT) ;;
    redis) args=(--backend redis --address 127.0.0.1:$REDIS_PORT) ;;
    etcd) args=(--backend etcd --address 127.0.0.1:$((ETCD_PORT + 1)) --address 127.0.0.1:$((ETCD_PORT + 2))
                --address 127.0.0.1:$((ETCD_PORT + 3))) ;;
  esac
  load=""  # the first workload loads every key; the others reuse them
  for w in $WORKLOADS; do
    run $backend "$w" "$load" "${args[@]}"
    load=--no-load
  done
done

/usr/bin/python3 - "$WORK/results" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    name, workload, js = line.split(" ", 2)
    rows[(name, workload)] = json.loads(js)
workloads = sorted({w for _, w in rows}, key=lambda w: "WCAB".index(w) if w in "WCAB" else 9)
def fig(r, op):
    o = r[op]
    return f"{o['count'] / r['seconds']:>9.0f} {o['p99_ms']:>7.2f} {o['p999_ms']:>7.2f} {o['errors']:>5}"
print(f"{'store':<8} {'wl':<3} {'ops/s':>9} | {'read/s':>9} {'p99':>7} {'p99.9':>7} {'err':>5} | {'write/s':>9} {'p99':>7} {'p99.9':>7} {'err':>5}")
for w in workloads:
    for name in ("dynamo", "redis", "etcd"):
        r = rows.get((name, w))
        if r:
            print(f"{name:<8} {w:<3} {r['throughput']:>9.0f} | {fig(r, 'read')} | {fig(r, 'write')}")
print()
print("ratios of throughput (same run)")
for w in workloads:
    d = rows.get(("dynamo", w))
    parts = []
    for peer in ("redis", "etcd"):
        p = rows.get((peer, w))
        if d and p and p["throughput"] > 0:
            parts.append(f"dynamo/{peer} {d['throughput'] / p['throughput']:.2f}x")
    print(f"  workload {w}: " + ", ".join(parts))
sib = sum(rows[k]["read"]["siblings"] for k in rows if k[0] == "dynamo")
print(f"dynamo reads with siblings: {sib}")
PY
