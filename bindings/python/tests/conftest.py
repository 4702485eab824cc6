"""Fixtures: real dynamo-node clusters on loopback, started with dynamoctl.

DYNAMO_BIN names the directory holding dynamo-node and dynamoctl; the dynamo
package must be importable (PYTHONPATH=<build>/python).
"""

import os
import random
import signal
import socket
import subprocess
import tempfile
import time

import pytest


def _bin(name):
    directory = os.environ.get("DYNAMO_BIN")
    if not directory:
        pytest.skip("DYNAMO_BIN is not set")
    return os.path.join(directory, name)


def _child_env():
    # The daemons carry their own sanitizer runtime; never preload another.
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    return env


def _free_block(count):
    """A block of ports below the kernel's ephemeral range, all free now."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except OSError:
        pass
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(10000, low - count - 16, 16)
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port block")


class LocalCluster:
    def __init__(self, nodes, extra_config=""):
        self.nodes = nodes
        self.base = _free_block(nodes + 2)
        self.tmp = tempfile.TemporaryDirectory(prefix="dynamo-pytest-")
        self.dir = self.tmp.name
        config = os.path.join(self.dir, "node.toml")
        with open(config, "w") as f:
            f.write("[gossip]\ninterval_ms = 200\n" + extra_config)
        subprocess.run(
            [_bin("dynamoctl"), "cluster", "start", "--nodes", str(nodes), "--base-port",
             str(self.base), "--dir", self.dir, "--partitions", "64", "--config", config],
            check=True, env=_child_env(), stdout=subprocess.DEVNULL, timeout=120)

    @property
    def seeds(self):
        return ["127.0.0.1:%d" % (self.base + i) for i in range(self.nodes)]

    def pid(self, node_id):
        with open(os.path.join(self.dir, node_id, "node.pid")) as f:
            return int(f.read().strip())

    def signal(self, node_id, sig):
        os.kill(self.pid(node_id), sig)

    def run_dynamoctl(self, *args):
        """Runs `dynamoctl --seed S ARGS` against the first node; returns the
        CompletedProcess (stdout and stderr as bytes), whatever its status."""
        return subprocess.run([_bin("dynamoctl"), "--seed", self.seeds[0], *args],
                              env=_child_env(), capture_output=True, timeout=30)

    def dynamoctl(self, *args):
        """`run_dynamoctl` that must succeed; returns its stdout as text."""
        out = self.run_dynamoctl(*args)
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        return out.stdout.decode()

    def node_counters(self, name):
        """A counter of `dynamoctl stats` on each node, by the node's address."""
        counts = {}
        for seed in self.seeds:
            out = subprocess.run([_bin("dynamoctl"), "--seed", seed, "stats"], check=True,
                                 env=_child_env(), capture_output=True, text=True, timeout=30)
            for line in out.stdout.splitlines():
                fields = line.split()
                if len(fields) == 3 and fields[1] == name:
                    counts[seed] = counts.get(seed, 0) + int(fields[2])
        return counts

    def node_counter(self, name):
        """A counter of `dynamoctl stats`, summed over the nodes."""
        return sum(self.node_counters(name).values())

    def stop(self):
        subprocess.run([_bin("dynamoctl"), "cluster", "stop", "--dir", self.dir],
                       env=_child_env(), stdout=subprocess.DEVNULL, timeout=120)
        for node in range(1, self.nodes + 1):
            try:
                self.signal("n%d" % node, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        self.tmp.cleanup()


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster(3)
    yield c
    c.stop()


@pytest.fixture()
def fresh_cluster():
    c = LocalCluster(3)
    yield c
    c.stop()


@pytest.fixture()
def one_version_cluster():
    """A cluster whose keys may hold one version only (limits.siblings_max = 1)."""
    c = LocalCluster(3, "[limits]\nsiblings_max = 1\n")
    yield c
    c.stop()


@pytest.fixture(scope="module")
def big_value_cluster():
    """A cluster whose nodes take values up to 4 MiB (the default is 1 MiB)."""
    c = LocalCluster(3, "[limits]\nvalue_bytes_max = 4194304\nframe_bytes_max = 16777216\n")
    yield c
    c.stop()
