"""bench/diskprobe.py (stall merging, percentiles, limits, a short run), bench/ab.py's summary,
bench/compare_report.py's tables and bench/procstat.py's speed and wake probes."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench")
sys.path.insert(0, BENCH)
import ab  # noqa: E402
import compare_report  # noqa: E402
import diskprobe  # noqa: E402
import procstat  # noqa: E402


def test_streams_that_see_one_stall_count_it_once():
    lat = [0.001] * 997 + [0.050, 0.060, 0.200]
    # Two streams blocked by one device stall (overlapping), a later one apart.
    stalls = [(100.0, 0.050), (100.01, 0.060), (200.0, 0.200)]
    s = diskprobe.summary(lat, stalls, 20)
    assert s["syncs"] == 1000
    assert s["p50_ms"] == 1.0
    assert s["p99_ms"] == 1.0
    assert s["p999_ms"] == 200.0
    assert s["max_ms"] == 200.0
    assert [x["ms"] for x in s["stalls"]] == [70.0, 200.0]
    assert s["stalls"][0]["at"] == diskprobe.clock(100.0)
    assert diskprobe.clock(100.25).endswith(".250")


def test_empty_summary():
    s = diskprobe.summary([], [], 20)
    assert s["syncs"] == 0 and s["max_ms"] == 0.0 and s["stalls"] == []


def run(*args):
    return subprocess.run([sys.executable, os.path.join(BENCH, "diskprobe.py"), *args],
                          capture_output=True, text=True, timeout=60)


def test_short_run_prints_one_json_object(tmp_path):
    r = run("--dir", str(tmp_path), "--seconds", "0.3", "--streams", "2", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["syncs"] > 0
    assert 0 < s["p50_ms"] <= s["max_ms"]
    assert os.listdir(tmp_path) == []  # its files are gone


def test_bad_flags_are_refused():
    for args in (["--seconds", "0"], ["--streams", "100"], ["--bytes", "0"], ["--dir", "/nonexistent/x"]):
        r = run(*args)
        assert r.returncode == 2, args
        assert "error:" in r.stderr


def test_ab_labels_of_two_builds_in_like_named_dirs_differ():
    assert ab.unique_labels(["/a/release/bin", "/b/release/bin", "/tmp/x"]) == [
        "release/bin", "release/bin#2", "x"]


def test_ab_summary_pairs_rounds_against_the_first_build():
    results = {
        ("old", "W"): [(100.0, 70.0), (200.0, 60.0)],
        ("new", "W"): [(110.0, 63.0), (180.0, 66.0)],
        ("old", "C"): [(1000.0, None)],
        ("new", "C"): [(1200.0, None)],
    }
    lines = ab.summarize(results, ["old", "new"])
    assert len(lines) == 4
    assert lines[0].startswith("old") and "median      150 ops/s" in lines[0] and "nodes   65.0" in lines[0]
    assert "vs" not in lines[0]
    # Round by round: 110/100 and 180/200 -> 0.90-1.10x; 63/70 and 66/60 -> 0.90-1.10x.
    assert "ops 0.90-1.10x" in lines[1] and "nodes' CPU per op 0.90-1.10x" in lines[1]
    assert "ops 1.20-1.20x" in lines[3] and "nodes' CPU per op n/a" in lines[3]


def bench_report(throughput, reads=0, writes=0, errors=0, siblings=0):
    """A dynamo-bench --json report with only what compare_report reads."""
    op = lambda n, e, s: {"count": n, "p50_ms": 1.0, "p99_ms": 2.0, "p999_ms": 3.0, "max_ms": 4.0,
                          "errors": e, "siblings": s}
    return {"throughput": throughput, "seconds": 10, "read": op(reads, 0, siblings),
            "write": op(writes, errors, 0)}


def write_runs(path, runs):
    path.write_text("".join(f"{' '.join(map(str, k))} {json.dumps(v)}\n" for k, v in runs.items()))
    return str(path)


def test_compare_ratios_pair_the_runs_of_one_round_and_give_their_median(tmp_path):
    results = {
        ("dynamo", "W", "closed", 1): bench_report(20000, writes=200000),
        ("redis", "W", "closed", 1): bench_report(40000, writes=400000),
        ("etcd", "W", "closed", 1): bench_report(2000, writes=20000),
        ("dynamo", "W", "closed", 2): bench_report(12000, writes=120000, errors=1),
        ("redis", "W", "closed", 2): bench_report(30000, writes=300000),
        ("etcd", "W", "closed", 2): bench_report(2000, writes=20000),
        ("dynamo", "W", "closed", 3): bench_report(27000, writes=270000, siblings=2),
        ("redis", "W", "closed", 3): bench_report(45000, writes=450000),
        ("dynamo", "W", "open", 1): bench_report(10000, writes=100000),
    }
    speed = {("dynamo", "W", "closed", 1): {"samples": 5, "p50_ms": 10.0, "max_ms": 11.0},
             ("redis", "W", "closed", 1): {"samples": 5, "p50_ms": 15.0, "max_ms": 16.0},
             ("etcd", "W", "closed", 1): {}}
    wake = {("dynamo", "W", "closed", 1): {"samples": 9000, "p50_ms": 0.1, "p99_ms": 0.5, "p999_ms": 3.25,
                                           "max_ms": 4.0},
            ("redis", "W", "closed", 1): {"samples": 0}}
    lines = compare_report.report(results, {}, speed, wake)
    ratio = next(l for l in lines if "workload W" in l)
    # Rounds 1, 2, 3: 20000/40000, 12000/30000, 27000/45000; etcd only in rounds 1 and 2.
    assert "dynamo/redis 0.50x median (0.50x, 0.40x, 0.60x)" in ratio
    assert "dynamo/etcd 8.00x median (10.00x, 6.00x)" in ratio
    assert lines[-1] == "dynamo: 1 errors, 2 reads with siblings"
    rows = [l for l in lines if l.startswith("dynamo         W")]
    assert len(rows) == 4 and rows[0].split()[2] == "1" and rows[2].split()[2] == "3"
    # The cpu column: 1.00 for the fastest run, 1.50 for one half again slower, "-" unmeasured;
    # then the wake probe's p99.9, "-" where it has no samples.
    assert rows[0].split()[-2:] == ["1.00", "3.25"]
    assert next(l for l in lines if l.startswith("redis")).split()[-2:] == ["1.50", "-"]
    assert next(l for l in lines if l.startswith("etcd")).split()[-2:] == ["-", "-"]
    # The files compare.sh writes read back the same.
    assert compare_report.read_runs(write_runs(tmp_path / "results", results)) == results


def test_compare_with_one_round_prints_plain_ratios(tmp_path):
    results = {("dynamo", "C", "closed", 1): bench_report(60000, reads=600000),
               ("redis", "C", "closed", 1): bench_report(40000, reads=400000)}
    lines = compare_report.report(results, {}, {})
    assert "  workload C: dynamo/redis 1.50x" in lines
    assert not any("rnd" in l or "median" in l for l in lines)
    empty = str(tmp_path / "empty")
    open(empty, "w").close()
    for machine in ([empty, empty], [empty, empty, empty]):  # without and with the wake probe's file
        r = subprocess.run([sys.executable, os.path.join(BENCH, "compare_report.py"),
                            write_runs(tmp_path / "r", results), *machine],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "workload C: dynamo/redis 1.50x" in r.stdout


def test_compare_open_loop_rounds_give_each_stores_median_tail():
    def tail(p99, p999):
        r = bench_report(5000, writes=50000)
        r["write"].update(p99_ms=p99, p999_ms=p999)
        return r
    results = {("dynamo", "W", "closed", 1): bench_report(10000, writes=100000),
               ("redis", "W", "closed", 1): bench_report(20000, writes=200000),
               ("dynamo", "W", "open", 1): tail(10.0, 20.0),
               ("redis", "W", "open", 1): tail(1.0, 4.0),
               ("dynamo", "W", "open", 2): tail(30.0, 70.0),
               ("redis", "W", "open", 2): tail(2.0, 5.0),
               ("dynamo", "W", "open", 3): tail(12.0, 19.0),
               ("redis", "W", "open", 3): tail(3.0, 18.0)}
    lines = compare_report.report(results, {}, {})
    head = next(l for l in lines if l.startswith("store") and "rate" in l)
    assert " rnd " in head
    rows = [l for l in lines if l.startswith("dynamo         W") and len(l.split()) > 3 and l.split()[2] in "123"]
    assert [r.split()[2] for r in rows[-3:]] == ["1", "2", "3"]
    tails = lines[lines.index("open-loop tails, median of the rounds (ms):") + 1]
    assert tails == "  workload W: dynamo p99 12.00 p99.9 20.00, redis p99 2.00 p99.9 5.00"
    # One open-loop round: no round column and no medians.
    one = {k: v for k, v in results.items() if k[3] == 1}
    lines = compare_report.report(one, {}, {})
    assert not any("median of the rounds" in l for l in lines)
    assert " rnd " not in next(l for l in lines if l.startswith("store") and "rate" in l)


def procstat_until_sigterm(*args):
    """The JSON summary `bench/procstat.py ARGS --json` prints when sent SIGTERM after 1 s."""
    p = subprocess.Popen([sys.executable, os.path.join(BENCH, "procstat.py"), *args, "--json"],
                         stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


def assert_procstat_refuses(command, *arg_lists):
    for args in arg_lists:
        r = subprocess.run([sys.executable, os.path.join(BENCH, "procstat.py"), command, *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "error:" in r.stderr, args


def test_speed_probe_times_its_work_and_stops_on_sigterm():
    s = procstat.speed_summary([0.010, 0.030, 0.020])
    assert s == {"samples": 3, "p50_ms": 20.0, "max_ms": 30.0}
    assert procstat.speed_summary([]) == {"samples": 0, "p50_ms": 0.0, "max_ms": 0.0}
    s = procstat_until_sigterm("speed", "--interval-ms", "50")
    assert s["samples"] > 0 and 0 < s["p50_ms"] <= s["max_ms"]
    assert_procstat_refuses("speed", ["--seconds", "0"], ["--seconds", "4000"], ["--interval-ms", "-1"])


def test_wake_probe_reports_how_late_its_sleeps_ended_and_stops_on_sigterm():
    s = procstat.wake_summary([0.004, 0.0001, 0.0002, 0.0003])
    assert s == {"samples": 4, "p50_ms": 0.3, "p99_ms": 4.0, "p999_ms": 4.0, "max_ms": 4.0}
    assert procstat.wake_summary([])["samples"] == 0
    late = procstat.wake(0.2, 0.001, threading.Event())
    assert 1 <= len(late) <= 200 and min(late) >= 0  # no sleep ends early
    s = procstat_until_sigterm("wake")
    assert s["samples"] > 0 and 0 <= s["p50_ms"] <= s["p999_ms"] <= s["max_ms"]
    assert_procstat_refuses("wake", ["--seconds", "0"], ["--seconds", "4000"], ["--interval-ms", "0"],
                            ["--interval-ms", "2000"])


def test_ab_summary_gives_the_fixed_work_time_and_its_ratio_by_round():
    results = {
        ("old", "W"): [(100.0, 70.0, 10.0), (200.0, 60.0, 12.0)],
        ("new", "W"): [(110.0, 63.0, 11.0), (180.0, 66.0, 18.0)],
    }
    lines = ab.summarize(results, ["old", "new"])
    assert "cpu work 11.0 ms" in lines[0]
    # 11/10 and 18/12: the second round's new build met cores half again slower.
    assert "cpu work 14.5 ms" in lines[1] and "cpu work 1.10-1.50x" in lines[1]


def test_ab_summary_gives_the_nodes_cpu_over_the_benchs_and_its_ratio_by_round():
    results = {
        ("old", "W"): [(100.0, 70.0, 10.0, 2.0), (200.0, 60.0, 12.0, 2.5)],
        ("new", "W"): [(110.0, 63.0, 11.0, 2.2), (180.0, 66.0, 18.0, 2.5)],
        ("older", "W"): [(90.0, 80.0, 10.0), (95.0, 81.0, 11.0)],
    }
    lines = ab.summarize(results, ["old", "new", "older"])
    assert "nodes/bench 2.25" in lines[0]
    # 2.2/2.0 and 2.5/2.5.
    assert "nodes/bench 2.35" in lines[1] and "nodes/bench 1.00-1.10x" in lines[1]
    # Rows of three (no bench figure) give none.
    assert "nodes/bench" not in lines[2]


def test_ab_refuses_bench_flags_it_sets_itself_before_starting_anything(tmp_path):
    run = subprocess.run([sys.executable, os.path.join(BENCH, "ab.py"), "--workloads", "A",
                          str(tmp_path), "--", "--workload", "A"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "--workload after -- is set by ab.py itself" in run.stderr


def test_ab_stops_with_the_benchs_own_message_when_the_bench_fails(tmp_path):
    cluster = tmp_path / "cluster"
    for i in (1, 2, 3):
        (cluster / f"n{i}").mkdir(parents=True)
        (cluster / f"n{i}" / "node.pid").write_text(str(os.getpid()))
    bench = tmp_path / "dynamo-bench"
    bench.write_text("#!/bin/sh\necho '--workload: At Most 1 required but received 2'\nexit 114\n")
    bench.chmod(0o755)
    try:
        ab.run_workload("old", str(tmp_path), str(cluster), 1, "A", 0.1, True, [])
    except ab.BenchFailed as e:
        assert str(e) == "old A: dynamo-bench exited 114: --workload: At Most 1 required but received 2"
    else:
        raise AssertionError("a failed bench must not give a figure")


def test_compare_refuses_sizes_that_are_not_whole_numbers_before_starting_anything():
    for flag, value in (("--duration", "2.5"), ("--keys", "0"), ("--concurrency", "-1"),
                        ("--duration", "1e3")):
        r = subprocess.run(["bash", os.path.join(BENCH, "compare.sh"), flag, value],
                           capture_output=True, text=True, timeout=30, cwd=os.path.join(BENCH, ".."))
        assert r.returncode == 2, (flag, value, r.stderr)
        assert flag + " must be a whole number" in r.stderr
