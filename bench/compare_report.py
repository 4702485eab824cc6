#!/usr/bin/python3
"""The tables bench/compare.sh prints, from the files its runs wrote.

usage: bench/compare_report.py RESULTS DISK SPEED [WAKE]
  Each file has one line per run: "STORE WORKLOAD MODE ROUND JSON", MODE
  closed or open. RESULTS holds dynamo-bench's --json report, DISK
  bench/diskprobe.py's, SPEED `bench/procstat.py speed`'s, WAKE
  `bench/procstat.py wake`'s (runs without it show "-"). Prints the
  closed-loop table (one row per store, workload and round), the open-loop
  table (with each store's median p99 and p99.9 when it ran several
  rounds), the throughput ratios (round by round, with their median, when
  there are several rounds) and dynamo's errors and siblings.
"""
import json
import statistics
import sys

NAMES = ("dynamo", "dynamo-lww", "dynamo-uns", "dynamo-lww-uns", "redis", "etcd")
OURS = NAMES[:4]
PEERS = ("redis", "etcd")


def read_runs(path):
    """{(store, workload, mode, round): report} from one of compare.sh's files."""
    runs = {}
    for line in open(path):
        if not line.strip():
            continue
        name, workload, mode, rnd, js = line.rstrip("\n").split(" ", 4)
        runs[(name, workload, mode, int(rnd))] = json.loads(js or "{}")
    return runs


def order(workload):
    return "WCAB".index(workload) if workload in "WCAB" else 9


def keys(runs, mode):
    """The (store, workload, round) of `mode`'s runs in table order."""
    found = [(n, w, r) for (n, w, m, r) in runs if m == mode]
    return sorted(found, key=lambda k: (order(k[1]), NAMES.index(k[0]) if k[0] in NAMES else 99, k[2]))


def slowdowns(speed):
    """Each run's fixed-work p50 over the fastest run's: 1.0 the fastest."""
    p50 = {k: s["p50_ms"] for k, s in speed.items() if s.get("samples")}
    fastest = min(p50.values(), default=0)
    return {k: v / fastest for k, v in p50.items()} if fastest > 0 else {}


def ratios(results):
    """{(workload, ours, peer): [ratio per round]}: throughputs of one round's runs."""
    out = {}
    for (name, w, mode, rnd), r in results.items():
        if mode != "closed" or name not in OURS:
            continue
        for peer in PEERS:
            p = results.get((peer, w, "closed", rnd))
            if p and p["throughput"] > 0:
                out.setdefault((w, name, peer), []).append((rnd, r["throughput"] / p["throughput"]))
    return {k: [x for _, x in sorted(v)] for k, v in out.items()}


def ratio_text(values):
    """"0.55x" for one round; "0.55x median (0.51x, 0.58x, 0.55x)" for several."""
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{statistics.median(values):.2f}x median ({', '.join(f'{v:.2f}x' for v in values)})"


def report(results, disk, speed, wake=None):
    """The lines compare.sh prints."""
    wake = wake or {}
    slow = slowdowns(speed)
    several = len({k[3] for k in results if k[2] == "closed"}) > 1
    lines = []

    def fig(r, op):
        o = r[op]
        if o["count"] == 0:
            return f"{'':>9} {'':>7} {'':>7} {'':>5}"
        return f"{o['count'] / r['seconds']:>9.0f} {o['p99_ms']:>7.2f} {o['p999_ms']:>7.2f} {o['errors']:>5}"

    def machine(key):
        d = disk.get(key, {})
        dtext = (f"{d['p999_ms']:>10.2f} {d['max_ms']:>8.2f} {len(d['stalls']):>6}" if "max_ms" in d
                 else f"{'-':>10} {'-':>8} {'-':>6}")
        w = wake.get(key, {})
        return (dtext + (f" {slow[key]:>5.2f}" if key in slow else f" {'-':>5}") +
                (f" {w['p999_ms']:>6.2f}" if w.get("samples") else f" {'-':>6}"))

    lines.append("closed loop (fixed concurrency): peak throughput;")
    lines.append("disk: the probe's fdatasyncs during the measured phase (one every 10 ms): p99.9, slowest, stalls over 20 ms;")
    lines.append("cpu: a fixed piece of work's CPU time during the measured phase over the fastest run's (1.00 the fastest);")
    lines.append("wake: how late a thread sleeping 1 ms at a time woke during the measured phase, p99.9 ms (the machine's floor)")
    rnd_head = f" {'rnd':>3}" if several else ""
    machine_head = f" | {'disk p99.9':>10} {'max':>8} {'stalls':>6} {'cpu':>5} {'wake':>6}"
    lines.append(f"{'store':<14} {'wl':<3}{rnd_head} {'ops/s':>9} | {'read/s':>9} {'p99':>7} {'p99.9':>7} {'err':>5}"
                 f" | {'write/s':>9} {'p99':>7} {'p99.9':>7} {'err':>5}" + machine_head)
    for name, w, rnd in keys(results, "closed"):
        r = results[(name, w, "closed", rnd)]
        rnd_col = f" {rnd:>3}" if several else ""
        lines.append(f"{name:<14} {w:<3}{rnd_col} {r['throughput']:>9.0f} | {fig(r, 'read')} | {fig(r, 'write')} | "
                     f"{machine((name, w, 'closed', rnd))}")
    opened = keys(results, "open")
    if opened:
        open_several = len({k[2] for k in opened}) > 1
        open_rnd_head = f" {'rnd':>3}" if open_several else ""
        lines.append("")
        lines.append("open loop at half of the store's closed-loop peak (latency from intended start)")
        lines.append(f"{'store':<14} {'wl':<3}{open_rnd_head} {'rate':>9} {'done/s':>9} | {'p50':>7} {'p99':>7} {'p99.9':>7}"
                     f" {'max':>7} {'err':>5}" + machine_head)
        tails = {}
        for name, w, rnd in opened:
            r = results[(name, w, "open", rnd)]
            o = r["write" if w == "W" else "read"]
            tails.setdefault((name, w), []).append(o)
            rnd_col = f" {rnd:>3}" if open_several else ""
            lines.append(f"{name:<14} {w:<3}{rnd_col} {r.get('target_rate', 0):>9.0f} {r['throughput']:>9.0f} | "
                         f"{o['p50_ms']:>7.2f} {o['p99_ms']:>7.2f} {o['p999_ms']:>7.2f} {o['max_ms']:>7.2f} {o['errors']:>5}"
                         f" | {machine((name, w, 'open', rnd))}")
        if open_several:
            lines.append("open-loop tails, median of the rounds (ms):")
            for w in sorted({w for _, w in tails}, key=order):
                parts = [f"{name} p99 {statistics.median(o['p99_ms'] for o in ops):.2f}"
                         f" p99.9 {statistics.median(o['p999_ms'] for o in ops):.2f}"
                         for (name, ww), ops in tails.items() if ww == w]
                lines.append(f"  workload {w}: " + ", ".join(parts))
    lines.append("")
    lines.append("ratios of throughput (same run" + (", round by round)" if several else ")"))
    by_ratio = ratios(results)
    for w in sorted({k[0] for k in by_ratio}, key=order):
        parts = [f"{ours}/{peer} {ratio_text(by_ratio[(w, ours, peer)])}"
                 for ours in OURS for peer in PEERS if (w, ours, peer) in by_ratio]
        lines.append(f"  workload {w}: " + ", ".join(parts))
    ours = [r for (n, *_), r in results.items() if n.startswith("dynamo")]
    sib = sum(r["read"]["siblings"] for r in ours)
    err = sum(r["read"]["errors"] + r["write"]["errors"] for r in ours)
    lines.append(f"dynamo: {err} errors, {sib} reads with siblings")
    return lines


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    print("\n".join(report(*(read_runs(p) for p in sys.argv[1:]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
