#!/usr/bin/env bash
# Runs the same dynamo-bench workloads against a 3-node dynamo cluster, one
# Redis server (persistence off) and, where etcd is installed, a 3-member
# etcd cluster, all on loopback, and prints one table with the ratios
# dynamo/Redis and dynamo/etcd. Each workload runs against each store in
# turn (closed loop, fixed concurrency); then W and C run again in open loop
# at half of each store's own peak, for the latency at a sustainable rate.
# Before each run it waits, at most 30 s, until all the stores are idle
# (under 5% of a core together), so one run's background work does not
# land in the next.
# During every run, bench/diskprobe.py samples the disk's fdatasync latency
# (one sync every 10 ms), so a tail or a burst of timeouts the disk itself
# caused shows as such in the table.
# With --lww, the workloads that write also run in last-write-wins mode
# (store "dynamo-lww"), so the table shows both write paths: causal (two
# round trips, the default) and LWW (one round trip to every replica).
# With --unsynced, each dynamo store also runs the workloads that write with
# the client's durable_writes off (store "...-uns"): writes acknowledged once
# applied, with no node syncing for them, which is what Redis without
# persistence offers. The default (synced) rows are the ones the targets are
# judged by. Each of these stores has a 3-node cluster of its own, so that
# each holds the issue's key count and no store's keys crowd another's out of
# the nodes' value caches.
# Stops everything it started (by PID).
#
# Usage: bench/compare.sh [--duration S] [--keys N] [--concurrency C] [--workloads "W C A"] [--lww] [--unsynced]
# Builds build/release first (scripts/run.sh's tree). Needs python3 for the table.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10 KEYS=100000 CONCURRENCY=50 WORKLOADS="W C A" LWW=0 UNSYNCED=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --lww) LWW=1; shift ;;
    --unsynced) UNSYNCED=1; shift ;;
    *) echo "usage: $0 [--duration S] [--keys N] [--concurrency C] [--workloads \"W C A\"] [--lww] [--unsynced]" >&2; exit 2 ;;
  esac
done

BUILD=${DYNAMO_RELEASE_BUILD:-build/release}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDYNAMO_BUILD_TESTS=OFF -DDYNAMO_BUILD_BENCH=ON \
  -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build "$BUILD" -j2 --target dynamo-node dynamoctl dynamo_bench >/dev/null
BIN=$BUILD/bin

DYNAMOS=dynamo
[ $LWW = 1 ] && DYNAMOS+=" dynamo-lww"
[ $UNSYNCED = 1 ] && DYNAMOS+=" dynamo-uns"
[ $LWW = 1 ] && [ $UNSYNCED = 1 ] && DYNAMOS+=" dynamo-lww-uns"

WORK=$(mktemp -d /tmp/dynamo-compare.XXXXXX)
PIDS=()
cleanup() {
  for d in $DYNAMOS; do "$BIN/dynamoctl" cluster stop --dir "$WORK/$d" >/dev/null 2>&1 || true; done
  for pid in "${PIDS[@]}" ${PROBE:-}; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

DYN_PORT=17500 REDIS_PORT=17600 ETCD_PORT=17700
declare -A SEED
i=0
for d in $DYNAMOS; do  # ports 17500, 17510, ...
  "$BIN/dynamoctl" cluster start --nodes 3 --base-port $((DYN_PORT + 10 * i)) --dir "$WORK/$d" >/dev/null
  SEED[$d]=127.0.0.1:$((DYN_PORT + 10 * i))
  i=$((i + 1))
done
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
declare -A ARGS LOADED
ARGS[dynamo]="--backend dynamo --seed ${SEED[dynamo]}"
ARGS[dynamo-lww]="--backend dynamo --seed ${SEED[dynamo-lww]:-} --mode lww"
ARGS[dynamo-uns]="--backend dynamo --seed ${SEED[dynamo-uns]:-} --unsynced"
ARGS[dynamo-lww-uns]="--backend dynamo --seed ${SEED[dynamo-lww-uns]:-} --mode lww --unsynced"
ARGS[redis]="--backend redis --address 127.0.0.1:$REDIS_PORT"
ARGS[etcd]="--backend etcd --address 127.0.0.1:$((ETCD_PORT + 1)) --address 127.0.0.1:$((ETCD_PORT + 2)) --address 127.0.0.1:$((ETCD_PORT + 3))"
BACKENDS="dynamo redis"
[ $HAVE_ETCD = 1 ] && BACKENDS+=" etcd"
BACKENDS="$DYNAMOS ${BACKENDS#dynamo }"
stores_for() {  # workload: the stores it runs against (the variants only where it writes)
  local b
  for b in $BACKENDS; do
    if [ "$b" = dynamo ] || [[ $b != dynamo-* ]] || [ "$1" != C ]; then echo "$b"; fi
  done
}

settle() {  # waits (at most 30 s) until every store is idle, so one run's flushes, compactions or snapshots do not land in the next
  local pids=("${PIDS[@]}") f
  for f in "$WORK"/dynamo*/n*/node.pid; do pids+=("$(cat "$f")"); done
  echo "compare: $(/usr/bin/python3 bench/procstat.py settle --max-s 30 "${pids[@]}")" >&2
}
run() {  # backend workload mode [extra flags...]; appends "backend workload mode json" to results
  local backend=$1 workload=$2 mode=$3; shift 3
  local load=--no-load out
  settle
  # Every key is written once before the first run. dynamo reloads before each
  # workload that writes: a new bench process knows no contexts, and its
  # first write of a key would otherwise read the key first (LWW writes read
  # nothing, so the LWW stores load once).
  if [ -z "${LOADED[$backend]:-}" ] || { [[ $backend != *lww* ]] && [[ $backend == dynamo* ]] && [ "$workload" != C ]; }; then load=""; fi
  LOADED[$backend]=1
  local disk="$WORK/disk.$backend.$workload.$mode"
  echo '{}' >"$disk"
  /usr/bin/python3 bench/diskprobe.py --dir "$WORK" --seconds $((DURATION + 300)) --json >"$disk" &
  PROBE=$!
  # shellcheck disable=SC2086
  out=$("$BIN/dynamo-bench" ${ARGS[$backend]} --workload "$workload" $load "${COMMON[@]}" "$@" | tail -1)
  if [ -n "${PROBE:-}" ]; then
    kill -TERM "$PROBE"
    wait "$PROBE" || true
    PROBE=""
  fi
  echo "$backend $workload $mode $out" >>"$WORK/results"
  echo "$backend $workload $mode $(cat "$disk")" >>"$WORK/disk"
  echo "compare: $backend $workload $mode done" >&2
}
throughput() {  # backend workload: closed-loop ops/s of this run
  awk -v b="$1" -v w="$2" '$1 == b && $2 == w && $3 == "closed" { $1 = $2 = $3 = ""; print }' "$WORK/results" |
    /usr/bin/python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["throughput"])'
}
for w in $WORKLOADS; do
  for backend in $(stores_for "$w"); do run $backend "$w" closed; done
done
# Open loop at half of each store's own closed-loop peak: latency from each
# operation's intended start, so queueing is measured.
for w in W C; do
  case " $WORKLOADS " in *" $w "*) ;; *) continue ;; esac
  for backend in $(stores_for "$w"); do
    rate=$(/usr/bin/python3 -c "print(round($(throughput $backend $w) / 2))")
    run $backend "$w" open --rate "$rate"
  done
done

machine_notes() {  # what else takes this machine's cores at intervals, for reading the tails
  local k us
  for k in /sys/kernel/mm/damon/admin/kdamonds/[0-9]*; do
    [ "$(cat "$k/state" 2>/dev/null)" = on ] || continue
    us=$(cat "$k/contexts/0/monitoring_attrs/intervals/sample_us" 2>/dev/null) || continue
    echo "machine: the kernel's DAMON monitor (kdamond.${k##*/}) samples memory every $((us / 1000)) ms;" \
      "each sample takes a core for 1-5 ms and open-loop operations queue behind it (docs/performance.md item 24)"
  done
}

/usr/bin/python3 - "$WORK/results" "$WORK/disk" <<'PY'
import json, sys
closed, opened, disk = {}, {}, {}
for line in open(sys.argv[1]):
    name, workload, mode, js = line.split(" ", 3)
    (closed if mode == "closed" else opened)[(name, workload)] = json.loads(js)
for line in open(sys.argv[2]):
    name, workload, mode, js = line.split(" ", 3)
    disk[(name, workload, mode)] = json.loads(js or "{}")
order = lambda w: "WCAB".index(w) if w in "WCAB" else 9
names = ("dynamo", "dynamo-lww", "dynamo-uns", "dynamo-lww-uns", "redis", "etcd")
def rows(table):  # (store, workload, report) in table order
    for w in sorted({w for _, w in table}, key=order):
        for name in names:
            if (name, w) in table:
                yield name, w, table[(name, w)]
def fig(r, op):
    o = r[op]
    if o["count"] == 0:
        return f"{'':>9} {'':>7} {'':>7} {'':>5}"
    return f"{o['count'] / r['seconds']:>9.0f} {o['p99_ms']:>7.2f} {o['p999_ms']:>7.2f} {o['errors']:>5}"
def probe(name, w, mode):
    d = disk.get((name, w, mode), {})
    if "max_ms" not in d:
        return f"{'-':>10} {'-':>8} {'-':>6}"
    return f"{d['p999_ms']:>10.2f} {d['max_ms']:>8.2f} {len(d['stalls']):>6}"
print("closed loop (fixed concurrency): peak throughput;")
print("disk: the probe's fdatasyncs during the run (one every 10 ms): p99.9, slowest, stalls over 20 ms")
print(f"{'store':<14} {'wl':<3} {'ops/s':>9} | {'read/s':>9} {'p99':>7} {'p99.9':>7} {'err':>5} | {'write/s':>9} {'p99':>7} {'p99.9':>7} {'err':>5}"
      f" | {'disk p99.9':>10} {'max':>8} {'stalls':>6}")
for name, w, r in rows(closed):
    print(f"{name:<14} {w:<3} {r['throughput']:>9.0f} | {fig(r, 'read')} | {fig(r, 'write')} | {probe(name, w, 'closed')}")
if opened:
    print()
    print("open loop at half of the store's closed-loop peak (latency from intended start)")
    print(f"{'store':<14} {'wl':<3} {'rate':>9} {'done/s':>9} | {'p50':>7} {'p99':>7} {'p99.9':>7} {'max':>7} {'err':>5}"
          f" | {'disk p99.9':>10} {'max':>8} {'stalls':>6}")
    for name, w, r in rows(opened):
        o = r["write" if w == "W" else "read"]
        print(f"{name:<14} {w:<3} {r.get('target_rate', 0):>9.0f} {r['throughput']:>9.0f} | "
              f"{o['p50_ms']:>7.2f} {o['p99_ms']:>7.2f} {o['p999_ms']:>7.2f} {o['max_ms']:>7.2f} {o['errors']:>5}"
              f" | {probe(name, w, 'open')}")
print()
print("ratios of throughput (same run)")
for w in sorted({w for _, w in closed}, key=order):
    parts = []
    for ours in names[:4]:
        d = closed.get((ours, w))
        for peer in ("redis", "etcd"):
            p = closed.get((peer, w))
            if d and p and p["throughput"] > 0:
                parts.append(f"{ours}/{peer} {d['throughput'] / p['throughput']:.2f}x")
    print(f"  workload {w}: " + ", ".join(parts))
runs = [r for (n, _), r in list(closed.items()) + list(opened.items()) if n.startswith("dynamo")]
sib = sum(r["read"]["siblings"] for r in runs)
err = sum(r["read"]["errors"] + r["write"]["errors"] for r in runs)
print(f"dynamo: {err} errors, {sib} reads with siblings")
PY
machine_notes
