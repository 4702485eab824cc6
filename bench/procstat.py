#!/usr/bin/python3
"""CPU time of processes, from /proc, and the machine's speed, for
bench/ab.py and bench/compare.sh.

usage: bench/procstat.py settle [--below CORES] [--window S] [--max-s S] PID...
  Waits until the processes together use less than CORES of a core over one
  window (default: 0.05 over 1 s), at most --max-s seconds (default 30), and
  prints how long it waited and their last usage. Exits 0 either way: a
  store that never quiets down is measured anyway, and the line says so.
usage: bench/procstat.py speed [--seconds S] [--interval-ms MS] [--json]
  Every MS ms (default 500) times one fixed piece of work (random reads of
  a 4 MiB table, about 2 ms of one core here) in the CPU time of its own
  thread, for S seconds (default 60) or until SIGTERM or SIGINT; then
  prints the count, p50 and max of those times. Waiting for a core does
  not count, so a p50 that grows says the cores themselves ran slower
  (other guests on the host, a shared cache), not that they were busy.
  The work runs under SCHED_IDLE: only on a core nothing else wants, and
  any thread that wakes takes the core from it, so it does not add to the
  tails it runs beside (four times the work a unit, about 9 ms, at normal
  priority, it doubled an open-loop read p99.9).
usage: bench/procstat.py wake [--seconds S] [--interval-ms MS] [--json]
  Sleeps MS ms (default 1) again and again, for S seconds (default 60) or
  until SIGTERM or SIGINT, and prints how late its wake-ups came: the
  count, p50, p99, p99.9 and max. A thread that only sleeps waits for
  nothing but a core, so its lateness is the machine's own floor under any
  store's tail: a kernel thread holding the core it wakes on, a VM paused
  by its host, other threads queued ahead of it.
"""
import argparse
import json
import os
import signal
import sys
import threading
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


SPEED_SECONDS_MAX = 3600
SPEED_TABLE = bytearray(range(256)) * (1 << 14)  # 4 MiB


def speed_unit(iterations=10000):
    """The fixed work `speed` times: seeded random reads of SPEED_TABLE."""
    x, acc, mask, table = 12345, 0, len(SPEED_TABLE) - 1, SPEED_TABLE
    for _ in range(iterations):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        acc += table[x & mask]
    return acc


def speed_summary(times):
    """count, p50 and max (ms) of the work's CPU times (seconds)."""
    times = sorted(times)
    n = len(times)
    return {"samples": n, "p50_ms": round(times[n // 2] * 1000, 3) if n else 0.0,
            "max_ms": round(times[-1] * 1000, 3) if n else 0.0}


def speed(seconds, interval_s, stop):
    """CPU seconds of each speed_unit run, one per interval, until `stop` or `seconds`."""
    times, end = [], time.monotonic() + seconds
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # this thread only
    except (AttributeError, OSError):
        pass
    while time.monotonic() < end and not stop.is_set():
        start = time.thread_time()
        speed_unit()
        times.append(time.thread_time() - start)
        stop.wait(interval_s)
    return times


WAKE_SECONDS_MAX = 3600
WAKE_INTERVAL_MS_MAX = 1000


def percentiles_ms(durations):
    """p50, p99, p99.9 and max (ms) of durations in seconds; zeros if none."""
    d = sorted(durations)
    n = len(d)
    at = lambda q: round(d[min(n - 1, int(n * q))] * 1000, 3) if n else 0.0
    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "p999_ms": at(0.999), "max_ms": at(1.0)}


def wake_summary(lates):
    """count, p50, p99, p99.9 and max (ms) of the wake-ups' lateness (seconds)."""
    return {"samples": len(lates), **percentiles_ms(lates)}


def wake(seconds, interval_s, stop):
    """How late each sleep of `interval_s` ended, until `stop` or `seconds`."""
    lates, end = [], time.monotonic() + seconds
    while time.monotonic() < end and not stop.is_set():
        start = time.monotonic()
        time.sleep(interval_s)
        lates.append(max(0.0, time.monotonic() - start - interval_s))
    return lates


def stop_on_signals():
    """An event that SIGTERM or SIGINT sets."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("settle")
    s.add_argument("--below", type=float, default=0.05)
    s.add_argument("--window", type=float, default=1.0)
    s.add_argument("--max-s", type=float, default=30.0)
    s.add_argument("pids", nargs="+", type=int)
    v = sub.add_parser("speed")
    v.add_argument("--seconds", type=float, default=60)
    v.add_argument("--interval-ms", type=float, default=500)
    v.add_argument("--json", action="store_true")
    w = sub.add_parser("wake")
    w.add_argument("--seconds", type=float, default=60)
    w.add_argument("--interval-ms", type=float, default=1)
    w.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.command == "wake":
        if not 0 < a.seconds <= WAKE_SECONDS_MAX or not 0 < a.interval_ms <= WAKE_INTERVAL_MS_MAX:
            p.error(f"--seconds must be in (0, {WAKE_SECONDS_MAX}] and --interval-ms in (0, {WAKE_INTERVAL_MS_MAX}]")
        r = wake_summary(wake(a.seconds, a.interval_ms / 1000, stop_on_signals()))
        print(json.dumps(r) if a.json else
              f"wake-ups: {r['samples']}, late by p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
              f"p99.9 {r['p999_ms']} ms, max {r['max_ms']} ms")
        return 0
    if a.command == "speed":
        if not 0 < a.seconds <= SPEED_SECONDS_MAX or a.interval_ms < 0:
            p.error(f"--seconds must be in (0, {SPEED_SECONDS_MAX}] and --interval-ms not negative")
        r = speed_summary(speed(a.seconds, a.interval_ms / 1000, stop_on_signals()))
        print(json.dumps(r) if a.json else
              f"fixed work: {r['samples']} samples, p50 {r['p50_ms']} ms, max {r['max_ms']} ms of CPU")
        return 0
    if a.below <= 0 or a.window <= 0 or a.max_s < 0:
        p.error("--below and --window must be positive and --max-s not negative")
    waited, used = settle(a.pids, a.below, a.window, a.max_s)
    quiet = "quiet" if used < a.below else "still busy"
    print(f"settled for {waited:.1f} s: {quiet}, {used:.3f} cores over the last {a.window:g} s")


if __name__ == "__main__":
    sys.exit(main())
