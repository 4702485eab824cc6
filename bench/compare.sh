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
# caused shows as such in the table, and `bench/procstat.py speed` times a
# fixed piece of CPU work every 500 ms: its "cpu" column is how much slower
# the cores ran during that run than during the command's fastest run (this
# machine's cores run up to half again slower at times, docs/performance.md
# item 30), so a ratio between runs that met different speeds shows as such;
# and `bench/procstat.py wake` sleeps 1 ms again and again: its "wake" column
# is the p99.9 of how late it woke, the machine's own floor under any store's
# tail in that run (docs/performance.md item 34).
# With --rounds N, the closed-loop runs repeat N times, the stores in turn
# within each round, and the ratios are given round by round with their
# median; the open loop runs once, at half of each store's median peak.
# With --open-rounds N the open-loop runs repeat N times too (the stores in
# turn within each round, each at that one rate), and the report gives each
# store's median p99 and p99.9 over them: one open-loop run's tail is a
# single draw from a wide spread on these machines.
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
# Usage: bench/compare.sh [--duration S] [--keys N] [--concurrency C] [--workloads "W C A"] [--rounds N] [--open-rounds N] [--lww] [--unsynced]
# Builds build/release first (scripts/run.sh's tree). Needs python3 for the table.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10 KEYS=100000 CONCURRENCY=50 WORKLOADS="W C A" ROUNDS=1 OPEN_ROUNDS=1 LWW=0 UNSYNCED=0
ROUNDS_MAX=20
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --open-rounds) OPEN_ROUNDS=$2; shift 2 ;;
    --lww) LWW=1; shift ;;
    --unsynced) UNSYNCED=1; shift ;;
    *) echo "usage: $0 [--duration S] [--keys N] [--concurrency C] [--workloads \"W C A\"] [--rounds N] [--open-rounds N] [--lww] [--unsynced]" >&2; exit 2 ;;
  esac
done
for flag in "--rounds $ROUNDS" "--open-rounds $OPEN_ROUNDS"; do
  n=${flag#* }
  if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt $ROUNDS_MAX ]; then
    echo "compare: ${flag% *} must be a whole number from 1 to $ROUNDS_MAX" >&2
    exit 2
  fi
done
# Whole numbers: the probes' loops count in them (a fraction made them stop
# at once, leaving the machine columns empty).
for flag in "--duration $DURATION" "--keys $KEYS" "--concurrency $CONCURRENCY"; do
  n=${flag#* }
  if ! [[ $n =~ ^[1-9][0-9]{0,8}$ ]]; then
    echo "compare: ${flag% *} must be a whole number from 1 to 999999999" >&2
    exit 2
  fi
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
PIDS=() PROBES=()
# Beside every run: the disk's syncs, the cores' speed, a sleeping thread's wake-ups.
MACHINE_PROBES="disk speed wake"
cleanup() {
  local status=$?
  if [ "$status" != 0 ] && [ -s "$WORK/results" ]; then
    local kept
    kept=$(mktemp /tmp/dynamo-compare-partial.XXXXXX)
    cp "$WORK/results" "$kept"
    echo "compare: failed (status $status); the runs done so far (one line each:" \
      "store, workload, mode, round, dynamo-bench's JSON) are kept in $kept" >&2
  fi
  for d in $DYNAMOS; do "$BIN/dynamoctl" cluster stop --dir "$WORK/$d" >/dev/null 2>&1 || true; done
  for pid in "${PIDS[@]}" "${PROBES[@]}"; do kill "$pid" 2>/dev/null || true; done
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
# A server that could not start (its port taken, say by a store left from
# an earlier run) must not leave the runs to measure whatever answers there.
for pid in "${PIDS[@]}"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "compare: a server this script started has exited; its log:" >&2
    tail -n 5 "$WORK"/redis.log "$WORK"/etcd*.log 2>/dev/null >&2 || true
    exit 1
  fi
done

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
run() {  # backend workload mode round [extra flags...]; appends "backend workload mode round json" to results
  local backend=$1 workload=$2 mode=$3 round=$4; shift 4
  local load=--no-load out
  settle
  # Every key is written once before the first run. dynamo reloads before each
  # workload that writes: a new bench process knows no contexts, and its
  # first write of a key would otherwise read the key first (LWW writes read
  # nothing, so the LWW stores load once).
  if [ -z "${LOADED[$backend]:-}" ] || { [[ $backend != *lww* ]] && [[ $backend == dynamo* ]] && [ "$workload" != C ]; }; then load=""; fi
  LOADED[$backend]=1
  local probe at="$backend.$workload.$mode.$round"
  # The probes watch the measured phase only: each waits for the bench's
  # marker (written after the load and the warm-up), at most as long as it
  # would have run.
  local marker="$WORK/measuring.$at"
  for probe in $MACHINE_PROBES; do
    echo '{}' >"$WORK/$probe.$at"
    local cmd=(bench/procstat.py "$probe")
    [ "$probe" = disk ] && cmd=(bench/diskprobe.py --dir "$WORK")
    (
      for _ in $(seq 1 $(((DURATION + 300) * 20))); do
        [ -e "$marker" ] && exec /usr/bin/python3 "${cmd[@]}" --seconds $((DURATION + 300)) --json >"$WORK/$probe.$at"
        sleep 0.05
      done
    ) &
    PROBES+=($!)
  done
  # shellcheck disable=SC2086
  out=$("$BIN/dynamo-bench" ${ARGS[$backend]} --workload "$workload" $load "${COMMON[@]}" \
    --measure-marker "$marker" "$@" | tail -1)
  local pid
  for pid in "${PROBES[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || true
  done
  PROBES=()
  echo "$backend $workload $mode $round $out" >>"$WORK/results"
  for probe in $MACHINE_PROBES; do echo "$backend $workload $mode $round $(cat "$WORK/$probe.$at")" >>"$WORK/$probe"; done
  echo "compare: $backend $workload $mode round $round done" >&2
}
throughput() {  # backend workload: median closed-loop ops/s over the rounds
  awk -v b="$1" -v w="$2" '$1 == b && $2 == w && $3 == "closed" { $1 = $2 = $3 = $4 = ""; print }' "$WORK/results" |
    /usr/bin/python3 -c 'import json, statistics, sys; print(statistics.median(json.loads(l)["throughput"] for l in sys.stdin))'
}
for round in $(seq 1 "$ROUNDS"); do
  for w in $WORKLOADS; do
    for backend in $(stores_for "$w"); do run $backend "$w" closed "$round"; done
  done
done
# Open loop at half of each store's own closed-loop peak: latency from each
# operation's intended start, so queueing is measured.
declare -A RATE
for round in $(seq 1 "$OPEN_ROUNDS"); do
  for w in W C; do
    case " $WORKLOADS " in *" $w "*) ;; *) continue ;; esac
    for backend in $(stores_for "$w"); do
      [ -n "${RATE[$backend.$w]:-}" ] ||
        RATE[$backend.$w]=$(/usr/bin/python3 -c "print(round($(throughput $backend $w) / 2))")
      if [ "${RATE[$backend.$w]}" -lt 1 ]; then  # --rate 0 would be a closed loop
        echo "compare: $backend $w did under 2 operations a second in closed loop; its open loop is left out" >&2
        continue
      fi
      run $backend "$w" open "$round" --rate "${RATE[$backend.$w]}"
    done
  done
done

machine_notes() {  # what else takes this machine's cores at intervals, for reading the tails
  local k us
  for k in /sys/kernel/mm/damon/admin/kdamonds/[0-9]*; do
    [ "$(cat "$k/state" 2>/dev/null)" = on ] || continue
    us=$(cat "$k/contexts/0/monitoring_attrs/intervals/sample_us" 2>/dev/null) || continue
    echo "machine: the kernel's DAMON monitor (kdamond.${k##*/}) samples memory every $((us / 1000)) ms;" \
      "each sample holds a core for 1-5 ms without yielding, threads woken on it wait, and most of dynamo's open-loop" \
      "reads over 2 ms fall in those samples (docs/performance.md items 24 and 34)"
  done
  local poll=/sys/module/haltpoll/parameters/guest_halt_poll_ns ns
  if ns=$(cat "$poll" 2>/dev/null); then
    echo "machine: idle virtual CPUs poll for $((ns / 1000)) us before they halt ($poll);" \
      "with 0 each wake-up goes through the host, and both stores run slower (docs/performance.md item 30)"
  fi
}

/usr/bin/python3 bench/compare_report.py "$WORK/results" "$WORK/disk" "$WORK/speed" "$WORK/wake"
machine_notes
