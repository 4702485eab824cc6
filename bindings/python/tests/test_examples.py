"""The examples run and lose nothing."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_python_shopping_cart(fresh_cluster):
    # The example imports dynamo like these tests do, so it keeps their environment.
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "shopping_cart.py"),
         "--seed", fresh_cluster.seeds[0], "--shoppers", "3", "--items", "15", "--think", "0"],
        check=True, capture_output=True, text=True, timeout=120).stdout
    assert "acknowledged items lost: 0" in out


def test_cpp_shopping_cart(fresh_cluster):
    binary = os.path.join(os.environ["DYNAMO_BIN"], "shopping_cart_example")
    if not os.path.exists(binary):
        pytest.skip("shopping_cart_example not built")
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)  # a program with its own sanitizer runtime
    out = subprocess.run([binary, "--seed", fresh_cluster.seeds[0]], check=True,
                         capture_output=True, text=True, timeout=120, env=env).stdout
    assert "none lost" in out
