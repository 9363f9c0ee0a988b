"""Per-call overhead of a tuned kernel on a tiny operator, beside NumPy.

    python -m pytest benchmarks/test_call_overhead.py --benchmark-columns=median,min,max

ReLU on 256 float32 values costs NumPy well under a microsecond of arithmetic, so
what is left is call overhead: argument checks, the ctypes call, Halide's own
entry (buffer checks). The two rows should sit within a few microseconds.
"""

import numpy as np
import pytest

import evokernel as ek

SHAPE = (256,)


@pytest.fixture(scope="module")
def relu_kernel():
    return ek.tune(ek.operators.relu(SHAPE), budget=4, seed=0)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(-1, 1, SHAPE).astype(np.float32)


def test_numpy_relu(benchmark, x):
    out = np.empty_like(x)
    benchmark(np.maximum, x, 0, out=out)


def test_evokernel_relu(benchmark, relu_kernel, x):
    out = np.empty_like(x)
    benchmark(relu_kernel, x, out=out)
    assert np.array_equal(out, np.maximum(x, 0))


def test_evokernel_relu_new_output(benchmark, relu_kernel, x):
    benchmark(relu_kernel, x)
