#!/usr/bin/env python3
"""Shopping carts on dynamo, the paper's running example.

Several shoppers (threads, each with its own client) add items to a few
shared carts at the same time, with read-modify-write: read the cart, add an
item, write it back with the read's context. Concurrent writes become
siblings, and a resolver merges them by set union, so no item that was
acknowledged is ever lost.

With --cluster-dir (a cluster started by `dynamoctl cluster start`), one
replica of the first cart is killed with kill -9 a third of the way through
and restarted at two thirds: writes keep succeeding through the sloppy
quorum, and the replica catches up from its hints afterwards.

    PYTHONPATH=build/release/python /usr/bin/python3 examples/shopping_cart.py \\
        --seed 127.0.0.1:7000 --cluster-dir var/demo-cluster \\
        --dynamoctl build/release/bin/dynamoctl
"""

import argparse
import random
import subprocess
import sys
import threading
import time

import dynamo


def parse_cart(value: bytes) -> set:
    return {item for item in value.split(b",") if item}


def union(values):
    merged = set()
    for v in values:
        merged |= parse_cart(v)
    return b",".join(sorted(merged))


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    def add(self, name, n=1):
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def __getitem__(self, name):
        with self.lock:
            return self.counts.get(name, 0)


class Shopper(threading.Thread):
    def __init__(self, name, seeds, carts, items, counter, acked, progress, think):
        super().__init__(name=name)
        self.think = think
        self.client = dynamo.Client(seeds, timeout=1.0)
        self.carts = carts
        self.items = items
        self.counter = counter
        self.acked = acked
        self.progress = progress
        self.rng = random.Random(name)

        def resolver(values):
            counter.add("siblings merged", len(values))
            counter.add("reads that merged siblings")
            return union(values)

        self.client.set_resolver(resolver)

    def add_item(self, cart, item):
        for attempt in range(20):
            try:
                current = self.client.get(cart)
                items = parse_cart(current.values[0]) if current.found else set()
                items.add(item)
                self.client.put(cart, b",".join(sorted(items)), context=current.context)
                return True
            except (dynamo.QuorumError, dynamo.TimeoutError, dynamo.BusyError) as e:
                # A failed write may still have been applied (in doubt); the
                # retry reads it back, so nothing is counted twice. Busy: a
                # node or the client shed load; the back-off below is the
                # retry it asks for.
                self.counter.add("writes retried")
                if e.in_doubt:
                    self.counter.add("writes in doubt")
                time.sleep(0.05 * (attempt + 1))
        return False

    def run(self):
        for i in range(self.items):
            cart = self.rng.choice(self.carts)
            item = f"{self.name}-item{i:03d}".encode()
            if self.add_item(cart, item):
                with self.acked[cart][0]:
                    self.acked[cart][1].add(item)
            else:
                self.counter.add("items given up")
            self.progress.add("done")
            time.sleep(self.think)
        stats = self.client.stats()
        self.counter.add("writes through fallbacks (hints)", stats["hints"])
        self.counter.add("read repairs", stats["read_repairs"])


def dynamoctl(args, tool):
    return subprocess.run([tool] + args, check=True, capture_output=True, text=True).stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", action="append", required=True, help="HOST:PORT (repeatable)")
    parser.add_argument("--shoppers", type=int, default=4)
    parser.add_argument("--carts", type=int, default=3)
    parser.add_argument("--items", type=int, default=60, help="items each shopper adds")
    parser.add_argument("--think", type=float, default=0.05, help="seconds between a shopper's adds")
    parser.add_argument("--cluster-dir", help="local cluster to kill -9 and restart a node in")
    parser.add_argument("--dynamoctl", default="dynamoctl")
    args = parser.parse_args()

    start = time.monotonic()

    def say(text):
        print(f"[{time.monotonic() - start:5.1f}s] {text}", flush=True)

    admin = dynamo.Client(args.seed)
    ring = admin.ring()
    carts = [f"cart:{i}".encode() for i in range(args.carts)]
    print(f"== shopping carts: {args.shoppers} shoppers, {args.carts} carts, {len(admin.members())} nodes, "
          f"N={ring['replicas']} R=2 W=2")
    counter, progress = Counter(), Counter()
    acked = {cart: (threading.Lock(), set()) for cart in carts}
    shoppers = [Shopper(f"shopper{i}", args.seed, carts, args.items, counter, acked, progress, args.think)
                for i in range(args.shoppers)]
    total = args.shoppers * args.items
    victim = None
    if args.cluster_dir:
        victim = next(p["id"] for p in admin.where(carts[0]) if p["role"] == "primary")

    say("shoppers start")
    for s in shoppers:
        s.start()
    if victim:
        while progress["done"] < total // 4:
            time.sleep(0.01)
        dynamoctl(["cluster", "kill", "--dir", args.cluster_dir, "--node", victim], args.dynamoctl)
        say(f"kill -9 {victim}, a replica of {carts[0].decode()}; shoppers keep writing")
        # The cluster notices the failure within a few seconds.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            admin.refresh()
            if any(p["id"] == victim and p["state"] == "down" for p in admin.where(carts[0])):
                break
            time.sleep(0.25)
        say(f"where {carts[0].decode()}: " + ", ".join(
            f"{p['id']} ({p['role']}, {p['state']})" for p in admin.where(carts[0])[:4]))
        while progress["done"] < 3 * total // 4:
            time.sleep(0.01)
        dynamoctl(["cluster", "start", "--dir", args.cluster_dir, "--node", victim], args.dynamoctl)
        say(f"restarted {victim}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            admin.refresh()
            if any(m["id"] == victim and m["state"] == "up" for m in admin.members()):
                say(f"the cluster sees {victim} up again")
                break
            time.sleep(0.25)
    for s in shoppers:
        s.join()
    acked_items = sum(len(items) for _, items in acked.values())
    say(f"shoppers done: {acked_items} items acknowledged, {counter['writes retried']} writes retried "
        f"({counter['writes in doubt']} of them in doubt)")

    if victim:
        # Hints travel back to the restarted replica; wait until every replica
        # of every cart holds the same versions.
        def replicas_agree():
            for cart in carts:
                replicas = admin.inspect(cart)
                if any("error" in r for r in replicas):
                    return False
                if len({tuple(sorted(v["dot"] for v in r["versions"])) for r in replicas}) != 1:
                    return False
            return True

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not replicas_agree():
            time.sleep(0.2)
        say(f"every replica of every cart agrees again: {victim} got its hinted copies back"
            if replicas_agree() else "replicas still differ after 60 s")

    admin.set_resolver(union)
    lost = 0
    print("result:")
    for cart in carts:
        final = admin.get(cart)
        stored = parse_cart(final.values[0]) if final.found else set()
        missing = acked[cart][1] - stored
        lost += len(missing)
        print(f"  {cart.decode()}: {len(stored)} items, {len(missing)} acknowledged items missing")
    for name in ("writes through fallbacks (hints)", "reads that merged siblings", "siblings merged",
                 "read repairs", "items given up"):
        print(f"  {name}: {counter[name]}")
    print(f"  acknowledged items lost: {lost}")
    admin.close()
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
