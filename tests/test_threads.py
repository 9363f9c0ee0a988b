"""ek.thread_advice: the thread pools of NumPy's OpenBLAS (and OpenMP) that spin
after their calls, named with the setting that makes them sleep, and that setting
checked to work on the real OpenBLAS NumPy loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, time, numpy as np, evokernel as ek
a = np.ones((600, 600), np.float32)
a @ a                                   # OpenBLAS's threads work, then wait for more
idle = time.process_time()
time.sleep(0.3)                         # this thread sleeps: what is spent now, its workers spend
spun = time.process_time() - idle
print(json.dumps({"advice": ek.thread_advice(), "spun": spun}))
"""


def probe(**env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY")}
    clean.update(OPENBLAS_NUM_THREADS="2", **env)
    done = subprocess.run([sys.executable, "-c", PROBE], env=clean, capture_output=True, text=True, check=True,
                          timeout=120)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def default_and_advised() -> tuple[dict, dict]:
    return probe(), probe(OPENBLAS_THREAD_TIMEOUT="4", OMP_WAIT_POLICY="PASSIVE")


def test_openblas_is_named_with_its_setting_until_it_is_set(default_and_advised):
    default, advised = default_and_advised
    assert any("openblas" in line and "OPENBLAS_THREAD_TIMEOUT=4" in line for line in default["advice"])
    assert advised["advice"] == []


def test_the_setting_puts_openblas_threads_to_sleep_after_a_call(default_and_advised):
    """By default OpenBLAS's idle workers burn CPU for about 0.1 s after the call; with
    the advised setting they sleep at once."""
    default, advised = default_and_advised
    assert advised["spun"] < 0.02, advised
    assert default["spun"] > max(0.02, 3 * advised["spun"]), default
