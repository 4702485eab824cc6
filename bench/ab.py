#!/usr/bin/python3
"""Compares dynamo builds on this machine: throughput and CPU per operation.

Each build is a directory holding dynamo-node, dynamoctl and dynamo-bench.
For each round and build, in turn: a fresh 3-node cluster (RocksDB, N=3),
then each workload (the first one loads every key; dynamo-bench reloads for
workloads that write, see compare.sh), with the CPU time the nodes and the
bench process used during the measured phase, divided by the operations
done, and the CPU time of a fixed piece of work timed every 500 ms beside
it (`procstat.py speed`: larger when the cores ran slower). Builds alternate
within a round, so noise from the machine hits them alike; compare the
builds within one run, never figures of different runs, and distrust a
round where the fixed work took much longer for one build than the other.
At the end it prints each build's medians and, for every build after the
first, the range of its round-by-round ratios to the first build.
"nodes/bench" is the nodes' CPU per operation over the bench process's:
where the builds' dynamo-bench is the same code, the bench is a control
that met the same cores, so this ratio moves with the nodes' own cost and
far less with the machine's speed than either figure alone (steadiest at a
fixed rate, `-- --rate R`, where every build does the same operations).

usage: bench/ab.py [--rounds N] [--duration S] [--port P] DIR[@CONFIG] ... [-- BENCH FLAGS]
e.g.   bench/ab.py --rounds 3 --workloads W /tmp/before build/release/bin -- --concurrency 100
       bench/ab.py build/release/bin build/release/bin@nosync.toml   (one build, two node configs)
A DIR@CONFIG entry starts its nodes with `--config CONFIG` (dynamo-node's TOML).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from procstat import cpu_seconds, speed, speed_summary


def entry_label(entry):
    """A short name for DIR[@CONFIG]: the last two parts of DIR when it ends in bin/."""
    bindir, _, config = entry.partition("@")
    parts = os.path.normpath(bindir).split(os.sep)
    name = "/".join(parts[-2:]) if parts[-1] == "bin" else parts[-1]
    return name + (f"@{os.path.basename(config)}" if config else "")


# dynamo-bench flags that run_workload sets; given again after --, the bench
# would refuse them.
BENCH_FLAGS_SET_HERE = {"--backend", "--seed", "--workload", "--duration", "--warmup", "--quiet",
                        "--no-load"}


class BenchFailed(Exception):
    """dynamo-bench exited with an error (a bad flag, no cluster): no figure to report."""


def run_workload(label, bindir, cluster, port, workload, duration, load, extra):
    nodes = [open(f"{cluster}/n{i}/node.pid").read().strip() for i in (1, 2, 3)]
    args = [f"{bindir}/dynamo-bench", "--backend", "dynamo", "--seed", f"127.0.0.1:{port}",
            "--workload", workload, "--duration", str(duration), "--warmup", "1", "--quiet"]
    args += ([] if load else ["--no-load"]) + extra
    bench = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop, work = threading.Event(), []
    prober = threading.Thread(target=lambda: work.extend(speed(duration + 600, 0.5, stop)))
    prober.start()
    samples = []
    try:
        while bench.poll() is None:
            samples.append((time.time(), cpu_seconds(nodes), cpu_seconds([bench.pid])))
            time.sleep(0.25)
    finally:
        stop.set()
        prober.join()
    out = bench.stdout.read()
    end = time.time()
    if bench.returncode != 0:
        raise BenchFailed(f"{label} {workload}: dynamo-bench exited {bench.returncode}: "
                          + (out.strip().splitlines() or ["no output"])[0])
    work_ms = speed_summary(work)["p50_ms"] or None
    # The measured phase is the last `duration` seconds before the bench
    # drained and exited; keep the samples well inside it.
    window = [s for s in samples if end - duration - 0.5 <= s[0] <= end - 1.0]
    m = re.search(r"measured ([\d.]+) s: (\d+) ops/s", out)
    ops = float(m.group(2)) if m else 0.0
    line = f"{label:<24} {workload} {ops:>8.0f} ops/s"
    node_us = over_bench = None
    if len(window) >= 2 and ops > 0:
        dt = window[-1][0] - window[0][0]
        node = (window[-1][1] - window[0][1]) / dt
        client = (window[-1][2] - window[0][2]) / dt
        node_us = node * 1e6 / ops
        line += f"  nodes {node_us:6.1f} us/op  bench {client * 1e6 / ops:5.1f} us/op"
        line += f"  (cores {node:.2f} + {client:.2f})"
        if client > 0:
            over_bench = node / client
            line += f"  nodes/bench {over_bench:.2f}"
    for row in out.splitlines():
        f = row.split()
        if f and f[0] in ("read", "write") and len(f) > 8 and f[1] != "0":
            line += f"  {f[0]} p50 {f[3]} p99 {f[5]} p99.9 {f[6]} ms errors {f[8]}"
    if work_ms:
        line += f"  cpu work {work_ms:.1f} ms"
    print(line, flush=True)
    return ops, node_us, work_ms, over_bench


def ratio_range(values, base):
    """min-max of value/base over the rounds both have, as "0.93-1.10x"."""
    r = [v / b for v, b in zip(values, base) if v is not None and b]
    return f"{min(r):.2f}-{max(r):.2f}x" if r else "n/a"


def summarize(results, labels):
    """Lines comparing each build with the first, round by round.

    results[(label, workload)] is a list of (ops, node_us[, work_ms[,
    nodes_over_bench]]) per round, in round order; labels are the builds in
    command-line order.
    """
    def column(rows, i):
        return [r[i] if len(r) > i else None for r in rows]

    lines = []
    workloads = list(dict.fromkeys(w for _, w in results))
    for w in workloads:
        base = results.get((labels[0], w), [])
        for label in labels:
            rows = results.get((label, w), [])
            if not rows:
                continue
            ops = [r[0] for r in rows]
            line = f"{label:<24} {w} median {statistics.median(ops):>8.0f} ops/s"
            node = [r[1] for r in rows if r[1] is not None]
            if node:
                line += f"  nodes {statistics.median(node):6.1f} us/op"
            work, over = column(rows, 2), column(rows, 3)
            if any(work):
                line += f"  cpu work {statistics.median(x for x in work if x):.1f} ms"
            if any(over):
                line += f"  nodes/bench {statistics.median(x for x in over if x):.2f}"
            if label != labels[0] and base:
                line += (f"  vs {labels[0]} by round: ops {ratio_range(ops, column(base, 0))}"
                         f", nodes' CPU per op {ratio_range(column(rows, 1), column(base, 1))}")
                if any(work):
                    line += f", cpu work {ratio_range(work, column(base, 2))}"
                if any(over):
                    line += f", nodes/bench {ratio_range(over, column(base, 3))}"
            lines.append(line)
    return lines


def unique_labels(entries):
    """entry_label of each entry, with #2, #3... where two would read the same."""
    out, seen = [], {}
    for e in entries:
        label = entry_label(e)
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=6)
    p.add_argument("--port", type=int, default=17900)
    p.add_argument("--workloads", default="W C")
    p.add_argument("dirs", nargs="+")
    a = p.parse_args(argv)
    own = [f for f in extra if f.split("=")[0] in BENCH_FLAGS_SET_HERE]
    if own:
        p.error(f"{own[0]} after -- is set by ab.py itself (use --workloads, --duration)")
    labels = unique_labels(a.dirs)
    results = {}
    work = tempfile.mkdtemp(prefix="dynamo-ab.")
    try:
        for _ in range(a.rounds):
            for entry, label in zip(a.dirs, labels):
                bindir, _, config = entry.partition("@")
                ctl = f"{bindir}/dynamoctl"
                cluster = f"{work}/cluster"
                shutil.rmtree(cluster, ignore_errors=True)
                subprocess.run([ctl, "cluster", "start", "--nodes", "3", "--base-port", str(a.port),
                                "--dir", cluster] + (["--config", config] if config else []),
                               check=True, capture_output=True)
                try:
                    loaded = False
                    for w in a.workloads.split():
                        results.setdefault((label, w), []).append(
                            run_workload(label, bindir, cluster, a.port, w, a.duration,
                                         not loaded or w != "C", extra))
                        loaded = True
                finally:
                    subprocess.run([ctl, "cluster", "stop", "--dir", cluster], capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("summary (median of the rounds; ratios pair the builds' runs of each round)")
    for line in summarize(results, labels):
        print(line)


if __name__ == "__main__":
    try:
        main()
    except BenchFailed as e:
        sys.exit(f"ab: {e}")
