"""bench/diskprobe.py (stall merging, percentiles, limits, a short run) and bench/ab.py's summary."""
import json
import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench")
sys.path.insert(0, BENCH)
import ab  # noqa: E402
import diskprobe  # noqa: E402


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
