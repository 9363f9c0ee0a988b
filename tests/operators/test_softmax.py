import math

import numpy as np
import pytest
from operator_checks import assert_matches_reference, assert_well_formed, realize

from evokernel.errors import OperatorArgumentError, UnsupportedDtypeError
from evokernel.operators import Softmax, softmax


def softmax_loops(x):
    out = np.zeros(x.shape)
    for index in np.ndindex(x.shape[:-1]):
        row = [float(v) for v in x[index]]
        exps = [math.exp(v - max(row)) for v in row]
        out[index] = [e / sum(exps) for e in exps]
    return out


def test_reference_matches_loops(rng):
    op = softmax((2, 3, 5))
    (x,) = op.random_inputs(rng)
    np.testing.assert_allclose(op.reference(x), softmax_loops(x), rtol=1e-6)


def test_reference_is_stable_for_large_inputs():
    op = softmax(3)
    np.testing.assert_allclose(op.reference(np.float32([1000, 1000, 1000])), [1 / 3] * 3, rtol=1e-6)


@pytest.mark.parametrize("op", [softmax(3), softmax(37), softmax((53, 29)), softmax((2, 3, 4, 17)),
                                softmax((5, 7), "float64")], ids=str)
def test_halide_matches_reference(op):
    assert_well_formed(op)
    assert_matches_reference(op, scale=20.0)


def test_halide_is_stable_for_large_inputs():
    op = softmax((2, 4))
    x = np.float32([[1000, 1001, 1002, 999], [-1000, -1000, -1000, -1000]])
    np.testing.assert_allclose(realize(op, [x]), softmax_loops(x), rtol=1e-5)


def test_stages():
    stages = softmax((4, 10)).algorithm().stages
    assert [(s.name, s.extents, s.consumer, s.rdom is not None) for s in stages] == [
        ("row_max", (4,), None, True), ("exps", (10, 4), "out", False),
        ("row_sum", (4,), None, True), ("out", (10, 4), None, False)]
    assert softmax(7).algorithm().stages[0].extents == ()  # rank 1: a scalar row max


def test_keys_and_costs():
    assert softmax(5) == Softmax((5,)) and softmax((2, 5)).key == "softmax(shape=2x5,dtype=float32)"
    assert softmax((2, 5)).key != softmax((5, 2)).key
    assert softmax((2, 5)).flops == 50 and softmax((2, 5)).reduction_length == 5


def test_bad_arguments():
    with pytest.raises(OperatorArgumentError, match="rank 1 to 4"):
        softmax((1, 2, 3, 4, 5))
    with pytest.raises(OperatorArgumentError, match="positive sizes"):
        softmax((3, 0))
    with pytest.raises(UnsupportedDtypeError):
        softmax(3, dtype="float16")
