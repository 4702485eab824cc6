#!/usr/bin/python3
"""fdatasync latency of the disk under a directory, for bench/compare.sh.

usage: bench/diskprobe.py [--dir D] [--seconds S] [--streams N] [--pause-ms P]
                          [--bytes B] [--stall-ms T] [--json]
  Each of N streams (threads, one file each in D) appends B bytes and calls
  fdatasync, then sleeps P ms, for S seconds. Prints the count, p50, p99,
  p99.9 and max of the sync latency and the syncs slower than T ms with
  their times: with a long pause the probe costs the disk little, and a
  stall of the device shows up in it as in every other writer's syncs.
  SIGTERM or SIGINT ends the probe early, with its summary. --json prints
  one JSON object instead.
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time

from procstat import percentiles_ms, stop_on_signals

SECONDS_MAX = 3600
STREAMS_MAX = 64
BYTES_MAX = 1 << 20


def probe(directory, seconds, pause_s, size, stall_s, out, lock, stop):
    fd, path = tempfile.mkstemp(prefix="diskprobe.", dir=directory)
    os.unlink(path)
    buf = b"x" * size
    lat, stalls = [], []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end and not stop.is_set():
            os.write(fd, buf)
            t = time.perf_counter()
            os.fdatasync(fd)
            d = time.perf_counter() - t
            lat.append(d)
            if d > stall_s:
                stalls.append((time.time() - d, d))
            if pause_s:
                stop.wait(pause_s)
    finally:
        os.close(fd)
    with lock:
        out[0].extend(lat)
        out[1].extend(stalls)


def clock(t):
    """Local time of day to the millisecond, to line stalls up with other logs."""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def summary(lat, stalls, stall_ms):
    # Streams see one device stall together: count it once.
    merged = []
    for start, d in sorted(stalls):
        if merged and start < merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], start + d - merged[-1][0])
        else:
            merged.append([start, d])
    return {
        "syncs": len(lat), **percentiles_ms(lat), "stall_ms": stall_ms,
        "stalls": [{"at": clock(s), "ms": round(d * 1000, 1)} for s, d in merged],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=".")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--pause-ms", type=float, default=10)
    ap.add_argument("--bytes", type=int, default=2000)
    ap.add_argument("--stall-ms", type=float, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not 0 < a.seconds <= SECONDS_MAX:
        ap.error(f"--seconds must be in (0, {SECONDS_MAX}]")
    if not 1 <= a.streams <= STREAMS_MAX:
        ap.error(f"--streams must be in [1, {STREAMS_MAX}]")
    if not 1 <= a.bytes <= BYTES_MAX:
        ap.error(f"--bytes must be in [1, {BYTES_MAX}]")
    if a.pause_ms < 0 or a.stall_ms <= 0:
        ap.error("--pause-ms must not be negative and --stall-ms must be positive")
    if not os.path.isdir(a.dir):
        ap.error(f"--dir {a.dir}: not a directory")
    out, lock, stop = ([], []), threading.Lock(), stop_on_signals()
    threads = [threading.Thread(target=probe, args=(a.dir, a.seconds, a.pause_ms / 1000, a.bytes,
                                                    a.stall_ms / 1000, out, lock, stop))
               for _ in range(a.streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = summary(out[0], out[1], a.stall_ms)
    if a.json:
        print(json.dumps(s))
    else:
        stalls = ", ".join(f"{x['at']} {x['ms']} ms" for x in s["stalls"]) or "none"
        print(f"fdatasync: {s['syncs']} syncs, p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, "
              f"p99.9 {s['p999_ms']} ms, max {s['max_ms']} ms; over {a.stall_ms:g} ms: {stalls}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
