"""The ``evokernel::`` ops run a kernel's parallel loops on PyTorch's own OpenMP
threads (real torch, a real tuned kernel with a parallel loop, in a fresh process
so that no earlier test has started Halide's thread pool)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import evokernel as ek  # noqa: E402
from evokernel.torch._ops import aten_openmp  # noqa: E402

OPERATOR = ek.operators.fc(64, 512, 512)
BUDGET = 6

PROBE = """
import json, os, sys
import torch, evokernel as ek
from evokernel.torch._ops import Slot

def threads():
    return len(os.listdir("/proc/self/task"))

torch.set_num_threads(2)
kernel = ek.tune(ek.operators.fc(64, 512, 512), budget=%d, seed=0, evaluator="local", cache_dir=sys.argv[1],
                 progress=False)
x, w, b = (torch.randn(s) for s in ((64, 512), (512, 512), (512,)))
x @ x.T                                    # PyTorch's OpenMP team starts
slot = Slot("fc", kernel, (64, 512))
start = threads()
through_op = torch.ops.evokernel.linear(x, w, b, slot.name)
after_op = threads()
direct = torch.from_numpy(kernel(x.numpy(), w.numpy(), b.numpy()))
expected = x @ w.T + b
print(json.dumps({"parallel": ".parallel(" in kernel.schedule, "start": start, "after_op": after_op,
                  "after_direct": threads(), "op_error": float((through_op - expected).abs().max()),
                  "direct_error": float((direct - expected).abs().max())}))
""" % BUDGET


@pytest.mark.skipif(aten_openmp() is None, reason="this PyTorch build does not run ATen on OpenMP")
def test_a_kernel_called_by_an_op_runs_on_pytorchs_threads_and_called_directly_on_halides(tmp_path):
    """Through the op, the process gains no thread (the loop ran on PyTorch's team);
    the same kernel called from NumPy starts Halide's pool, as before."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    ek.tune(OPERATOR, budget=BUDGET, seed=0, evaluator="local", cache_dir=cache, progress=False)
    done = subprocess.run([sys.executable, "-c", PROBE, str(cache)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["parallel"], "the tuned kernel has no parallel loop to place"
    assert seen["after_op"] == seen["start"], seen
    assert seen["after_direct"] > seen["after_op"], seen
    assert seen["op_error"] < 1e-3 and seen["direct_error"] < 1e-3, seen
