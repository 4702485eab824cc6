"""The Python module against real daemons."""

import base64
import functools
import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref

import pytest

import dynamo


def union(values):
    items = set()
    for v in values:
        items.update(x for x in v.split(b",") if x)
    return b",".join(sorted(items))


class Ticker:
    """Counts 10 ms ticks on another thread: it counts only while Python runs."""

    def __enter__(self):
        self.ticks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.ticks += 1
            time.sleep(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_module_surface():
    for name in ("Client", "GetResult", "Receipt", "Error", "QuorumError", "TimeoutError", "BusyError",
                 "InvalidArgument", "ClosedError"):
        assert hasattr(dynamo, name)
    assert issubclass(dynamo.ClosedError, dynamo.Error)
    assert not issubclass(dynamo.ClosedError, ValueError)
    assert issubclass(dynamo.QuorumError, dynamo.Error)
    assert issubclass(dynamo.BusyError, dynamo.Error)
    assert issubclass(dynamo.TimeoutError, TimeoutError)
    assert issubclass(dynamo.InvalidArgument, ValueError)
    # Every public call and property says what it does (pybind11's own
    # docstring is the signature line alone).
    calls = [("Client.__init__", dynamo.Client.__init__), ("Receipt.__init__", dynamo.Receipt.__init__)]
    for cls in (dynamo.Client, dynamo.GetResult, dynamo.Receipt):
        calls += [(f"{cls.__name__}.{n}", a) for n, a in vars(cls).items() if not n.startswith("_")]
    for name, attr in calls:
        doc = (attr.__doc__ or "").strip().splitlines()
        signature_only = len(doc) == 1 and doc[0].startswith(name.split(".")[1] + "(")
        assert doc and not signature_only, f"{name} has no docstring"


def test_put_get_bytes_and_str(cluster):
    with dynamo.Client(cluster.seeds) as c:
        ctx = c.put("greeting", "hello")
        assert isinstance(ctx, bytes) and ctx
        r = c.get(b"greeting")
        assert r.found and r.values == [b"hello"]
        assert isinstance(r.context, bytes)
        c.put(b"bin\x00key", bytes(range(256)), context=None)
        assert c.get(b"bin\x00key").values == [bytes(range(256))]
        missing = c.get("no such key")
        assert not missing.found and missing.values == []
        c.put(bytearray(b"ba"), bytearray(b"from a bytearray"))
        assert c.get(b"ba").values == [b"from a bytearray"]


def test_concurrent_writes_become_siblings_and_the_resolver_merges(cluster):
    a = dynamo.Client(cluster.seeds)
    b = dynamo.Client(cluster.seeds)
    a.put("cart:py", b"apples")
    read = a.get("cart:py")
    a.put("cart:py", b"apples,pears", context=read.context)
    b.put("cart:py", b"apples,plums", context=read.context)
    assert sorted(a.get("cart:py").values) == [b"apples,pears", b"apples,plums"]

    caller = threading.get_ident()
    seen = []

    def resolver(values):
        seen.append(threading.get_ident())
        assert all(isinstance(v, bytes) for v in values)
        return union(values)

    a.set_resolver(resolver)
    merged = a.get("cart:py")
    assert merged.values == [b"apples,pears,plums"]
    assert seen == [caller]  # run on the calling thread
    a.put("cart:py", merged.values[0], context=merged.context)
    a.set_resolver(None)
    assert a.get("cart:py").values == [b"apples,pears,plums"]
    a.close()
    b.close()


def test_a_write_a_node_refuses_to_shed_raises_busy_error(one_version_cluster):
    with dynamo.Client(one_version_cluster.seeds) as c:
        c.put("cart:carol", b"apples")
        # Without the first write's context the second would stand beside it:
        # a second version, over the key's limit of one.
        with pytest.raises(dynamo.BusyError) as err:
            c.put("cart:carol", b"pears")
        assert err.value.code == "Busy"
        assert not err.value.in_doubt
        assert "siblings, over the limit of 1" in str(err.value)
        assert c.get("cart:carol").values == [b"apples"]


def test_delete(cluster):
    c = dynamo.Client(cluster.seeds)
    c.put("temp", b"x")
    r = c.get("temp")
    c.delete("temp", context=r.context)
    assert not c.get("temp").found
    tombstones = sum(v["tombstone"] for rep in c.inspect("temp") for v in rep["versions"])
    assert tombstones >= 2
    # Without a context the delete reads first: both blind siblings go.
    c.put("temp:blind", b"a")
    c.put("temp:blind", b"b")
    assert len(c.get("temp:blind").values) == 2
    c.delete("temp:blind")
    assert not c.get("temp:blind").found


def test_where_inspect_members_ring(cluster):
    c = dynamo.Client(cluster.seeds)
    c.put("k", b"v")
    where = c.where("k")
    assert [p["role"] for p in where] == ["primary"] * 3
    assert set(where[0]) == {"id", "address", "state", "role"}
    assert {p["state"] for p in where} == {"up"}
    replicas = c.inspect("k")
    assert len(replicas) == 3
    # W=2 copies at once; the third arrives right after.
    assert sum(1 for rep in replicas if rep["versions"]) >= 2
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(rep["versions"] for rep in replicas):
        time.sleep(0.05)
        replicas = c.inspect("k")
    for rep in replicas:
        assert rep["versions"][0]["value"] == b"v"
        assert set(rep["versions"][0]) >= {"dot", "value", "tombstone", "context"}
    members = c.members()
    assert sorted(m["id"] for m in members) == ["n1", "n2", "n3"]
    assert set(members[0]) == {"id", "address", "state", "partitions"}
    assert sum(m["partitions"] for m in members) == 64
    ring = c.ring()
    assert ring["partitions"] == 64 and ring["replicas"] == 3 and len(ring["owners"]) == 64
    stats = c.stats()
    assert stats["puts"] >= 1 and stats["redirects"] == 0


def test_bad_input_raises_invalid_argument(cluster):
    c = dynamo.Client(cluster.seeds)
    with pytest.raises(dynamo.InvalidArgument):
        c.put("", b"x")
    with pytest.raises(dynamo.InvalidArgument):
        c.put("k" * 5000, b"x")
    # Sizes are checked before the value is copied: a 256 MiB value is
    # refused without doubling the process's memory.
    big = bytearray(256 << 20)
    with pytest.raises(dynamo.InvalidArgument, match="value_bytes_max"):
        c.put("k", big)
    # A str is measured by its characters before it is encoded: its UTF-8 is
    # at least that long.
    with pytest.raises(dynamo.InvalidArgument, match="at least 1048577 bytes exceeds value_bytes_max"):
        c.put("k", "\u00e9" * ((1 << 20) + 1))
    for call in (c.get, c.where, c.inspect):
        with pytest.raises(dynamo.InvalidArgument, match="key_bytes_max"):
            call("k" * 5000)
    with pytest.raises(dynamo.InvalidArgument, match="context"):
        c.put("k", b"x", context=bytes(1 << 20))
    with pytest.raises(dynamo.InvalidArgument):
        c.put("k", b"x", context=b"not a context")
    # Another key's context would supersede this key's versions it never saw.
    c.put("bad-input-a", b"1")
    ctx_b = c.put("bad-input-b", b"2")
    with pytest.raises(dynamo.InvalidArgument, match="another key"):
        c.put("bad-input-a", b"3", context=ctx_b)
    with pytest.raises(dynamo.InvalidArgument, match="another key"):
        c.delete("bad-input-a", context=c.get("bad-input-b").context)
    assert c.get("bad-input-a").values == [b"1"]
    with pytest.raises(TypeError, match="key must be bytes, bytearray or str, not int"):
        c.put(42, b"x")
    with pytest.raises(TypeError, match="value must be"):
        c.put("k", 42)
    with pytest.raises(TypeError, match="context must be"):
        c.put("k", b"x", context=42)
    for seeds in ([("127.0.0.1", 7000)], ["127.0.0.1:7000", None], b"127.0.0.1:7000", 7000):
        with pytest.raises(TypeError, match="seed"):
            dynamo.Client(seeds)
    with pytest.raises(dynamo.InvalidArgument, match="a seed is a str that is not valid UTF-8"):
        dynamo.Client(["\udcff:7000"])
    with pytest.raises(dynamo.InvalidArgument):
        c.put("lone surrogate \udcff", b"x")
    for timeout in (0, -1.0, float("inf"), float("nan"), 1e30):
        with pytest.raises(dynamo.InvalidArgument):
            dynamo.Client(cluster.seeds, timeout=timeout)
    with pytest.raises(dynamo.InvalidArgument):
        dynamo.Client(cluster.seeds, mode="eventual")
    with pytest.raises(dynamo.InvalidArgument):
        dynamo.Client(cluster.seeds, coordinator="nearest")
    with pytest.raises(dynamo.InvalidArgument):
        dynamo.Client(cluster.seeds, r=4).get("k")
    # Numbers out of range are InvalidArgument too, however large.
    for bad in (0, -1, 2**31, 2**64):
        with pytest.raises(dynamo.InvalidArgument, match="r must be from 1"):
            c.get("k", r=bad)
        with pytest.raises(dynamo.InvalidArgument, match="w must be from 1"):
            c.put("k", b"x", w=bad)
        with pytest.raises(dynamo.InvalidArgument, match="w must be from 1"):
            dynamo.Client(cluster.seeds, w=bad)
    for bad in (0, 2**32, (256 << 20) + 1):
        with pytest.raises(dynamo.InvalidArgument, match="value_bytes_max"):
            dynamo.Client(cluster.seeds, value_bytes_max=bad)
    with pytest.raises(dynamo.InvalidArgument, match="key_bytes_max"):
        dynamo.Client(cluster.seeds, key_bytes_max=(64 << 10) + 1)
    with pytest.raises(TypeError, match="r must be an int"):
        c.get("k", r=1.5)
    # None (or 0) is not taken for False: a wrapper passing None on must not
    # turn durable writes off.
    for flag in (None, 0, "no"):
        with pytest.raises(TypeError):
            dynamo.Client(cluster.seeds, durable_writes=flag)
    c.close()
    with pytest.raises(dynamo.ClosedError):
        c.get("k")


def test_value_bytes_max_bounds_what_a_client_writes_not_what_it_reads(big_value_cluster):
    seeds = big_value_cluster.seeds
    value = bytes(range(256)) * (8 << 10)  # 2 MiB
    small = dynamo.Client(seeds)
    with pytest.raises(dynamo.InvalidArgument, match="value_bytes_max"):
        small.put("big", value)
    big = dynamo.Client(seeds, value_bytes_max=4 << 20)
    big.put("big", value)
    assert big.get("big").values == [value]
    # Stored data is read up to the largest value any node may take.
    assert small.get("big").values == [value]
    small.close()
    big.close()


def test_unreachable_cluster_raises_quorum_error():
    with pytest.raises(dynamo.QuorumError) as info:
        dynamo.Client(["127.0.0.1:1"], timeout=0.3)
    assert info.value.acks == 0
    assert info.value.code == "Unavailable"


def test_lww_mode(cluster):
    a = dynamo.Client(cluster.seeds, mode="lww")
    b = dynamo.Client(cluster.seeds, mode="lww")
    a.put("lww-key", b"first")
    time.sleep(0.005)
    b.put("lww-key", b"second")
    assert a.get("lww-key").values == [b"second"]


def test_unsynced_writes_are_acknowledged_without_a_coordinator_sync(cluster):
    before = cluster.node_counter("coord_puts_unsynced")
    c = dynamo.Client(cluster.seeds, durable_writes=False)
    ctx = c.put("unsynced-key", b"v1")
    c.put("unsynced-key", b"v2", ctx)
    assert c.get("unsynced-key").values == [b"v2"]
    assert cluster.node_counter("coord_puts_unsynced") - before == 2
    durable = dynamo.Client(cluster.seeds)
    durable.put("synced-key", b"v")
    assert cluster.node_counter("coord_puts_unsynced") - before == 2


def test_one_write_may_choose_otherwise_than_its_client(cluster):
    def unsynced():
        return cluster.node_counter("coord_puts_unsynced")

    before = unsynced()
    durable = dynamo.Client(cluster.seeds)
    ctx = durable.put("override-key", b"v1", durable=False)
    ctx = durable.put("override-key", b"v2", ctx, durable=None)
    assert unsynced() - before == 1
    fast = dynamo.Client(cluster.seeds, durable_writes=False)
    ctx = fast.put("override-key", b"v3", ctx, durable=True)
    fast.delete("override-key", ctx, durable=True)
    assert unsynced() - before == 1
    cluster.dynamoctl("put", "override-ctl", "v", "--unsynced")
    assert unsynced() - before == 2
    got = cluster.dynamoctl("get", "override-ctl")
    ctl_ctx = next(line.split()[1] for line in got.splitlines() if line.startswith("context: "))
    cluster.dynamoctl("delete", "override-ctl", "--context", ctl_ctx, "--unsynced")
    assert unsynced() - before == 3
    assert durable.get("override-ctl").found is False


def test_dynamoctl_prints_strict_json_and_refuses_bad_arguments(cluster):
    # A UTF-16 surrogate and an overlong form are not UTF-8: strict JSON
    # parsers refuse them raw, so they are printed as base64.
    client = dynamo.Client(cluster.seeds)
    odd = [b"\xed\xa0\x80", b"\xc0\xaf", "plain \u00e9".encode()]
    for i, value in enumerate(odd):
        client.put("ctl-json-%d" % i, value)
        got = json.loads(cluster.run_dynamoctl("--json", "get", "ctl-json-%d" % i).stdout)
        replicas = json.loads(cluster.dynamoctl("--json", "inspect", "ctl-json-%d" % i))
        versions = [v for r in replicas for v in r["versions"]]
        assert versions
        if i < 2:
            assert [base64.b64decode(v) for v in got["values_base64"]] == [value]
            assert all(base64.b64decode(v["value_base64"]) == value for v in versions)
        else:
            assert got["values"] == [value.decode()]
            assert all(v["value"] == value.decode() for v in versions)

    for args, why in ((["put", "ctl-json-0", "v", "--context", "A"], b"not base64"),
                      (["put", "ctl-json-0", "v", "--context", "QQ=A"], b"not base64"),
                      (["put", "ctl-json-0", "v", "--context", "QR=="], b"not base64"),
                      (["--r", "0", "get", "ctl-json-0"], b"--r"),
                      (["--w", "-1", "put", "ctl-json-0", "v"], b"--w"),
                      (["--timeout", "0", "get", "ctl-json-0"], b"--timeout")):
        out = cluster.run_dynamoctl(*args)
        assert out.returncode != 0, args
        assert why in out.stderr, (args, out.stderr)
        # With --json, usage errors too are one error object and status 1.
        out = cluster.run_dynamoctl("--json", *args)
        assert out.returncode == 1, (args, out.returncode)
        assert json.loads(out.stdout)["error"] == "InvalidArgument", (args, out.stdout)
    assert client.get("ctl-json-0").values == [odd[0]]


def test_a_client_coordinates_its_writes_through_the_node_it_ranks_first(cluster):
    def grown(before):
        after = cluster.node_counters("coord_puts")
        return sorted(after[n] - before[n] for n in after)

    before = cluster.node_counters("coord_puts")
    ranked = dynamo.Client(cluster.seeds)
    for i in range(30):
        ranked.put(f"ranked-{i}", b"v")
    assert grown(before) == [0, 0, 30]  # every key's replicas are all 3 nodes

    before = cluster.node_counters("coord_puts")
    spread = dynamo.Client(cluster.seeds, coordinator="fastest")
    for i in range(30):
        spread.put(f"spread-{i}", b"v")
    counts = grown(before)
    assert sum(counts) == 30 and counts[-1] < 30  # each key's first primary


def test_paused_cluster_times_out_and_the_gil_is_free_meanwhile(fresh_cluster):
    c = dynamo.Client(fresh_cluster.seeds, timeout=0.5)
    c.put("k", b"v")
    ids = ["n1", "n2", "n3"]
    for node in ids:
        fresh_cluster.signal(node, signal.SIGSTOP)
    try:
        with Ticker() as ticker:
            with pytest.raises(dynamo.TimeoutError):
                c.get("k")
        assert ticker.ticks >= 10  # Python kept running while get waited
        with pytest.raises(dynamo.Error) as info:
            c.put("k", b"w")
        assert info.value.in_doubt
    finally:
        for node in ids:
            fresh_cluster.signal(node, signal.SIGCONT)


def test_too_few_nodes_raise_quorum_error_with_acks(fresh_cluster):
    # The key's first primary coordinates and stays up; the others are gone.
    c = dynamo.Client(fresh_cluster.seeds, timeout=1.0, coordinator="fastest")
    primary = c.where("k")[0]["id"]
    for node in ("n1", "n2", "n3"):
        if node != primary:
            fresh_cluster.signal(node, signal.SIGKILL)
    with pytest.raises(dynamo.QuorumError) as info:
        c.put("k", b"v")
    assert info.value.acks == 1
    assert info.value.in_doubt
    # R=1, W=1 still work with one node, the coordinator (a client ranking
    # the nodes itself could pick a killed one its map still shows up, whose
    # socket may take a connection before the process is gone).
    one = dynamo.Client([fresh_cluster.seeds[int(primary[1:]) - 1]], r=1, w=1,
                        coordinator="fastest")
    one.put("k", b"v1")
    assert one.get("k").found


def test_a_forked_child_cannot_use_its_parents_client(cluster):
    c = dynamo.Client(cluster.seeds)
    c.put("fork:k", b"v")
    pid = os.fork()
    if pid == 0:  # the child: calls fail at once, dropping the client does not hang
        code = 0
        signal.alarm(20)
        try:
            c.get("fork:k")
            code = 1
        except dynamo.ClosedError:
            code = 0
        except dynamo.Error:
            code = 2
        if code == 0 and len(c.where("fork:k")) < 3:  # the snapshot from before the fork
            code = 3
        del c
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"the child was ended by signal {os.WTERMSIG(status)}"
    assert os.WEXITSTATUS(status) == 0
    assert c.get("fork:k").values == [b"v"]
    c.close()


def test_a_closed_client_raises_closed_error(cluster):
    c = dynamo.Client(cluster.seeds)
    c.close()
    for call in (lambda: c.inspect("k"), lambda: c.get("k"), lambda: c.put("k", b"v")):
        with pytest.raises(dynamo.ClosedError):
            call()


def test_closing_while_other_threads_call_ends_their_calls(cluster):
    a = dynamo.Client(cluster.seeds)
    b = dynamo.Client(cluster.seeds)
    a.put("close:sib", b"x")
    b.put("close:sib", b"y")  # blind: two siblings, so get also reads the options
    b.close()
    for _ in range(10):
        c = dynamo.Client(cluster.seeds)
        ended = []

        def reader():
            while True:
                try:
                    c.get("close:sib")
                except dynamo.Error:
                    ended.append(1)
                    return

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        c.close()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert len(ended) == 4
        with pytest.raises(dynamo.Error):
            c.get("close:sib")
    a.close()


def test_dropping_an_open_client_lets_other_threads_run_while_it_drains(fresh_cluster):
    c = dynamo.Client(fresh_cluster.seeds, timeout=2.0, coordinator="fastest")
    c.put("k", b"v")
    fresh_cluster.signal("n3", signal.SIGSTOP)
    try:
        assert c.get("k").found  # n1 and n2 answer; the read of n3 stays out
        with Ticker() as ticker:
            start = time.monotonic()
            del c  # drains: waits for the read of n3, up to the timeout
            waited = time.monotonic() - start
        assert waited >= 0.5
        assert ticker.ticks >= 10  # Python kept running meanwhile
    finally:
        fresh_cluster.signal("n3", signal.SIGCONT)


def test_receipts_say_who_answered(cluster):
    c = dynamo.Client(cluster.seeds)
    receipt = dynamo.Receipt()
    assert receipt.acks == [] and receipt.epoch == 0
    ctx = c.put("receipt:k", b"v", receipt=receipt)
    assert len(receipt.acks) >= 2
    assert {a["role"] for a in receipt.acks} <= {"coordinator", "primary", "fallback"}
    assert any(a["role"] == "coordinator" for a in receipt.acks)
    assert receipt.epoch > 0 and receipt.version_vector.startswith("{")
    # The put returned at W=2; until the third copy lands, a read that asks
    # that replica first repairs it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(rep["versions"] for rep in c.inspect("receipt:k")):
        time.sleep(0.05)
    assert all(rep["versions"] for rep in c.inspect("receipt:k"))
    read = dynamo.Receipt()
    assert c.get("receipt:k", receipt=read).values == [b"v"]
    assert len(read.acks) >= 2 and read.read_repairs == 0 and read.redirects == 0
    deleted = dynamo.Receipt()
    c.delete("receipt:k", ctx, receipt=deleted)
    assert len(deleted.acks) >= 2
    assert "acks=" in repr(deleted)
    # A call refused before it ran leaves the receipt empty, not holding the
    # last call's acknowledgements.
    for refused in (lambda: c.put("receipt:k", b"v", timeout=0, receipt=deleted),
                    lambda: c.get("receipt:k", r=0, receipt=read)):
        with pytest.raises(dynamo.InvalidArgument):
            refused()
    assert deleted.acks == [] and deleted.epoch == 0
    assert read.acks == [] and read.epoch == 0


def test_per_call_quorums_and_timeouts(fresh_cluster):
    c = dynamo.Client(fresh_cluster.seeds, timeout=30.0, coordinator="fastest")
    c.put("k", b"v0")
    for bad in (dict(r=4), dict(r=0), dict(timeout=0), dict(timeout=-1.0), dict(timeout=float("nan"))):
        with pytest.raises(dynamo.InvalidArgument):
            c.get("k", **bad)
    for bad in (dict(w=4), dict(w=0), dict(timeout=float("inf"))):
        with pytest.raises(dynamo.InvalidArgument):
            c.put("k", b"v", **bad)
        with pytest.raises(dynamo.InvalidArgument):
            c.delete("k", **bad)
    # The key's first primary coordinates and stays up; the others stop.
    primary = c.where("k")[0]["id"]
    others = [n for n in ("n1", "n2", "n3") if n != primary]
    for node in others:
        fresh_cluster.signal(node, signal.SIGSTOP)
    try:
        failed = dynamo.Receipt()
        start = time.monotonic()
        with pytest.raises(dynamo.Error) as info:
            c.put("k", b"v1", timeout=2.0, receipt=failed)
        assert time.monotonic() - start < 20  # this call's 2 s, not the client's 30 s
        assert info.value.in_doubt
        assert [a["node"] for a in failed.acks] == [primary]  # filled on failure too
        one = dynamo.Receipt()
        ctx = c.put("k", b"v2", w=1, timeout=2.0, receipt=one)
        assert [a["node"] for a in one.acks] == [primary]
        got = c.get("k", r=1, timeout=2.0)
        assert got.found and b"v2" in got.values
        c.delete("k", got.context, w=1, timeout=2.0)
        assert not c.get("k", r=1, timeout=2.0).found
        assert ctx
    finally:
        for node in others:
            fresh_cluster.signal(node, signal.SIGCONT)
    c.close()


def test_a_resolver_that_references_its_client_is_collected(cluster):
    def tasks():
        return len(os.listdir("/proc/self/task"))

    gc.collect()  # clients earlier tests left behind
    before = tasks()
    c = dynamo.Client(cluster.seeds)
    c.set_resolver(lambda values, client=c: max(values))  # a cycle through the resolver
    c.put("gc:k", b"v")
    assert tasks() > before  # the client's I/O thread
    ref = weakref.ref(c)
    del c
    gc.collect()
    assert ref() is None
    assert tasks() == before


def test_a_resolver_may_replace_itself_while_it_runs(cluster):
    a = dynamo.Client(cluster.seeds)
    b = dynamo.Client(cluster.seeds)
    a.put("resolver:self", b"x")
    b.put("resolver:self", b"y")  # blind: two siblings

    def once(client, values):
        client.set_resolver(None)  # drops the partial this call runs through
        return union(values)

    a.set_resolver(functools.partial(once, a))
    assert a.get("resolver:self").values == [b"x,y"]
    assert sorted(a.get("resolver:self").values) == [b"x", b"y"]  # no resolver now

    def refuse(values):
        raise LookupError("cannot merge %d" % len(values))

    a.set_resolver(refuse)  # its exception comes out of get as it is
    with pytest.raises(LookupError, match="cannot merge 2"):
        a.get("resolver:self")
    a.close()
    b.close()


EXITING_WITH_DAEMON_THREADS = """
import sys, threading, time, dynamo
c = dynamo.Client(sys.argv[1:])
c.put("exit:k", b"v")
calls = [0]
def reader():
    while True:
        try:
            c.get("exit:k")
        except dynamo.ClosedError:
            pass
        calls[0] += 1
for _ in range(2):
    threading.Thread(target=reader, daemon=True).start()
while calls[0] < 50:
    time.sleep(0.01)
print("exiting", flush=True)
"""


def test_a_program_exits_cleanly_with_daemon_threads_in_calls(cluster):
    # Its daemon threads are in get() as the program ends, the client never
    # closed. Before, a call that ended after the interpreter began to exit
    # took the GIL back in a noexcept destructor, where Python ends a daemon
    # thread (pthread_exit): std::terminate, status 134 in 6 runs of 6. Now
    # every open client is closed at exit and the calls end with ClosedError.
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", EXITING_WITH_DAEMON_THREADS, *cluster.seeds],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout == "exiting\n"


DROPPED_IN_A_DAEMON_THREAD = """
import sys, threading, time, dynamo
box = [dynamo.Client(sys.argv[1:], timeout=2.0)]
box[0].put("drop:k", b"v")
print("ready", flush=True)
sys.stdin.readline()  # a node is paused now
dropping = threading.Event()
def drop():
    c = box.pop()
    try:
        c.put("drop:k", b"w", w=1)
    except dynamo.Error:
        pass
    dropping.set()
    del c  # the last reference: it drains, waiting for the paused node's copy
threading.Thread(target=drop, daemon=True).start()
dropping.wait(30)
time.sleep(0.2)
print("exiting", flush=True)
"""


def _run_with_n3_paused(cluster, script):
    """Runs `script` against `cluster`; once it prints "ready", pauses n3 and
    writes a line to it. Returns its status, output after "ready" and errors."""
    child = subprocess.Popen([sys.executable, "-c", script, *cluster.seeds],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        cluster.signal("n3", signal.SIGSTOP)
        out, err = child.communicate("go\n", timeout=60)
    finally:
        cluster.signal("n3", signal.SIGCONT)
    return child.returncode, out, err


def test_a_client_dropped_in_a_daemon_thread_as_the_program_exits(fresh_cluster):
    # The daemon thread drops the client's last reference while its drain
    # waits for a paused node, and the program ends meanwhile. Before, the
    # destructor took the GIL back once the drain ended, after the
    # interpreter began to exit: Python ended the thread inside it, and the
    # process aborted. Now the drain runs on a thread of its own.
    for _ in range(3):
        returncode, out, err = _run_with_n3_paused(fresh_cluster, DROPPED_IN_A_DAEMON_THREAD)
        assert returncode == 0, err[-2000:]
        assert out == "exiting\n"


FORKED_WHILE_A_DROP_DRAINS = DROPPED_IN_A_DAEMON_THREAD.replace(
    'print("exiting", flush=True)\n', '''import os
pid = os.fork()
if pid == 0:
    sys.exit(0)  # the exit closes the clients and waits for drains: none here
for _ in range(200):
    if os.waitpid(pid, os.WNOHANG)[0] == pid:
        print("child exited", flush=True)
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("child hung", flush=True)
''')


def test_a_child_forked_while_a_dropped_client_drains_exits(fresh_cluster):
    # The drain's thread is not copied into the child, so its count of
    # drains in progress never falls there: the child waited for it at exit
    # for ever.
    returncode, out, err = _run_with_n3_paused(fresh_cluster, FORKED_WHILE_A_DROP_DRAINS)
    assert returncode == 0, err[-2000:]
    assert out == "child exited\n", err[-2000:]


INTERRUPTED_BY_CTRL_C = """
import sys, threading, time, dynamo
c = dynamo.Client(sys.argv[1:], timeout=60.0)
c.put("interrupt:k", b"v")
print("ready", flush=True)
sys.stdin.readline()  # the nodes are paused now
gets = c.stats()["gets"]
def announce():  # once the get has started, a signal finds it waiting
    while c.stats()["gets"] == gets:
        time.sleep(0.01)
    print("waiting", flush=True)
threading.Thread(target=announce, daemon=True).start()
try:
    c.get("interrupt:k")
    print("answered", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
except dynamo.Error as e:
    print("failed", type(e).__name__, flush=True)
sys.stdin.readline()  # the nodes run again: the close at exit drains at once
"""


def test_ctrl_c_interrupts_a_call_waiting_for_its_answer(fresh_cluster):
    # A get of a paused cluster with a 60 s timeout; SIGINT ends it with
    # KeyboardInterrupt well before that (before, only once the call ended).
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED_BY_CTRL_C, *fresh_cluster.seeds],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ids = ["n1", "n2", "n3"]
    try:
        assert child.stdout.readline() == "ready\n"
        for node in ids:
            fresh_cluster.signal(node, signal.SIGSTOP)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "waiting\n"
        child.send_signal(signal.SIGINT)
        ready, _, _ = select.select([child.stdout], [], [], 30)  # half the call's timeout
        assert ready, "the get was not interrupted"
        assert child.stdout.readline() == "interrupted\n"
    finally:
        for node in ids:
            fresh_cluster.signal(node, signal.SIGCONT)
    child.stdin.write("exit\n")
    child.stdin.flush()
    assert child.wait(timeout=60) == 0
