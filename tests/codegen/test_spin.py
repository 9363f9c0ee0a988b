"""Kernels' parallel loops on evokernel's spinning pool: right results on every
path (back to back, from two threads at once, in a forked child), workers that
stay awake for the time set and no longer, and bad settings refused. Real tuned
kernels with a parallel loop, in fresh processes (a pool, once started, stays)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import evokernel as ek

OPERATOR = ek.operators.fc(64, 512, 512)
BUDGET = 6

PROBE = """
import json, os, signal, sys, threading, time
import numpy as np, evokernel as ek
ek.set_spin(float(sys.argv[2]))
op = ek.operators.fc(64, 512, 512)
kernel = ek.tune(op, budget=%d, seed=0, evaluator="local", cache_dir=sys.argv[1], progress=False)
arrays = op.random_inputs(np.random.default_rng(0))
expected = op.reference(*arrays)

def error():
    return float(np.abs(kernel(*arrays) - expected).max())

errors = [error() for _ in range(50)]                         # back to back
def caller():
    errors.extend(error() for _ in range(100))
callers = [threading.Thread(target=caller) for _ in range(2)]  # two threads at once
for t in callers: t.start()
for t in callers: t.join()
error()
idle = time.process_time()
time.sleep(0.3)                  # this thread sleeps: what the process spends now, its workers spend
spun = time.process_time() - idle
child = os.fork()
if child == 0:                   # the workers stay behind in the parent: the child's calls still finish
    signal.alarm(30)
    os._exit(0 if error() < 1e-3 else 3)
child_code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
print(json.dumps({"parallel": ".parallel(" in kernel.schedule, "max_error": max(errors), "calls": len(errors),
                  "spun": spun, "child": child_code}))
""" % BUDGET


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("spin") / "cache"
    cache.mkdir(mode=0o700)
    ek.tune(OPERATOR, budget=BUDGET, seed=0, evaluator="local", cache_dir=cache, progress=False)
    return cache


def probe(cache, seconds: float) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(cache), str(seconds)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("seconds", [0.2, 0.0], ids=["spinning", "halide-pool"])
def test_kernels_compute_right_on_every_path_and_workers_spin_as_long_as_set(cache, seconds):
    """Set to spin 0.2 s, the workers spend at least a third of a 0.3 s sleep of
    the caller on the CPU; set to 0 (Halide's pool) almost nothing. Every call
    is right, also from two threads at once and in a child forked after the
    workers started (the caller finishes a loop alone, the exit code says so)."""
    seen = probe(cache, seconds)
    assert seen["parallel"], "the tuned kernel has no parallel loop"
    assert seen["calls"] == 250 and seen["max_error"] < 1e-3, seen
    assert seen["child"] == 0, seen
    if seconds:
        assert seen["spun"] > 0.1, seen
    else:
        assert seen["spun"] < 0.05, seen


@pytest.mark.parametrize("bad", [-1, 11, "fast", None, True])
def test_set_spin_refuses_what_is_not_a_time(bad):
    with pytest.raises(ek.ArgumentError, match="set_spin"):
        ek.set_spin(bad)
    assert ek.codegen.spin() >= 0


def test_the_environment_sets_the_spin_of_new_processes():
    """``$EVOKERNEL_SPIN`` is the default; a bad value is named when it is read."""
    code = "import evokernel as ek; print(ek.codegen.spin())"
    env = {**__import__("os").environ, ek.codegen.SPIN_VAR: "0.005"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert float(done.stdout) == 0.005
    env[ek.codegen.SPIN_VAR] = "soon"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "EVOKERNEL_SPIN" in done.stderr


def test_spinning_sets_the_spin_for_a_block_then_restores_what_was_set():
    """Inside ``spinning``, every loaded runtime spins as long as it says; after it
    (also after an exception), the earlier setting is back: ``set_spin``'s value,
    or the environment's default where none was set; a bad time changes nothing."""
    from evokernel.codegen import _native

    before = _native._spin
    try:
        ek.set_spin(0.003)
        with ek.codegen.spinning(0.02):
            assert ek.codegen.spin() == 0.02
        assert ek.codegen.spin() == 0.003
        _native._spin = None
        with pytest.raises(RuntimeError), ek.codegen.spinning(0.5):
            assert ek.codegen.spin() == 0.5
            raise RuntimeError("inside")
        assert _native._spin is None
        with pytest.raises(ek.ArgumentError):
            with ek.codegen.spinning(-1):
                pass
        assert _native._spin is None
    finally:
        _native._spin = before
