"""Per-call timing of tuned kernels beside NumPy (and PyTorch), with pytest-benchmark.

    python -m pytest benchmarks/test_kernel_calls.py --benchmark-columns=median,iqr,rounds
    EVOKERNEL_BENCH_ONLY=gemm-512,relu EVOKERNEL_BENCH_BUDGET=60s python -m pytest benchmarks/test_kernel_calls.py

Every operator of the suite (``evokernel.bench.SUITE``, or those named in
``$EVOKERNEL_BENCH_ONLY``) is tuned once with ``$EVOKERNEL_BENCH_BUDGET`` (default 20
evaluations), then each call path is timed in its own benchmark group: the public
``Kernel.__call__`` with ``out=``, and the library baselines on the same inputs.
Every output is checked against the NumPy reference first. The side-by-side suite
with the autoschedulers is ``evokernel bench``; this file measures calls as a user
makes them.
"""

import os

import numpy as np
import pytest

import evokernel as ek
from evokernel import bench

CASES = bench.select(os.environ.get("EVOKERNEL_BENCH_ONLY"))
BUDGET = os.environ.get("EVOKERNEL_BENCH_BUDGET", "20")
BASELINES = {"numpy": bench.numpy_baseline, "torch": bench.torch_baseline}


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def tuned(request):
    case = request.param
    op = case.operator
    kernel = ek.tune(op, budget=int(BUDGET) if BUDGET.isdigit() else BUDGET, seed=0, evaluator="local")
    inputs = op.random_inputs(np.random.default_rng(0))
    return case, op, kernel, inputs, op.reference(*inputs)


def _check(output, op, reference):
    rtol, atol = op.tolerance
    np.testing.assert_allclose(np.asarray(output), reference, rtol=rtol, atol=atol)


def test_evokernel(benchmark, tuned):
    case, op, kernel, inputs, reference = tuned
    out = np.empty(op.output.shape, op.dtype)
    benchmark.group = case.name
    benchmark(kernel, *inputs, out=out)
    _check(out, op, reference)


@pytest.mark.parametrize("library", list(BASELINES))
def test_library(benchmark, tuned, library):
    case, op, _, inputs, reference = tuned
    call = BASELINES[library](op, inputs, ek.evaluators.default_threads())
    if call is None:
        pytest.skip(f"no {library} baseline here")
    benchmark.group = case.name
    _check(benchmark(call), op, reference)
