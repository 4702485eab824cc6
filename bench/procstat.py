#!/usr/bin/python3
"""CPU time of processes, from /proc, for bench/ab.py and bench/compare.sh.

usage: bench/procstat.py settle [--below CORES] [--window S] [--max-s S] PID...
  Waits until the processes together use less than CORES of a core over one
  window (default: 0.05 over 1 s), at most --max-s seconds (default 30), and
  prints how long it waited and their last usage. Exits 0 either way: a
  store that never quiets down is measured anyway, and the line says so.
"""
import argparse
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """User and system CPU seconds of all threads of `pids`; gone ones count 0."""
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime, all threads
        except OSError:
            pass
    return total / TICK


def settle(pids, below, window, max_s):
    """Waits until `pids` use under `below` cores over `window` s, at most
    `max_s` s. Returns (seconds waited, cores used in the last window)."""
    start = time.monotonic()
    while True:
        before, t0 = cpu_seconds(pids), time.monotonic()
        time.sleep(window)
        used = (cpu_seconds(pids) - before) / (time.monotonic() - t0)
        waited = time.monotonic() - start
        if used < below or waited >= max_s:
            return waited, used


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("settle")
    s.add_argument("--below", type=float, default=0.05)
    s.add_argument("--window", type=float, default=1.0)
    s.add_argument("--max-s", type=float, default=30.0)
    s.add_argument("pids", nargs="+", type=int)
    a = p.parse_args()
    if a.below <= 0 or a.window <= 0 or a.max_s < 0:
        p.error("--below and --window must be positive and --max-s not negative")
    waited, used = settle(a.pids, a.below, a.window, a.max_s)
    quiet = "quiet" if used < a.below else "still busy"
    print(f"settled for {waited:.1f} s: {quiet}, {used:.3f} cores over the last {a.window:g} s")


if __name__ == "__main__":
    sys.exit(main())
