import numpy as np
import pytest
from operator_checks import assert_matches_reference, assert_well_formed

from evokernel.errors import OperatorArgumentError, UnsupportedDtypeError
from evokernel.operators import Add, Relu, Relu6, add, relu, relu6


def test_references_match_loops(rng):
    x = rng.uniform(-10, 10, (3, 4)).astype(np.float32)
    y = rng.uniform(-10, 10, (3, 4)).astype(np.float32)
    loops = {
        "relu": [[max(float(v), 0.0) for v in row] for row in x],
        "relu6": [[min(max(float(v), 0.0), 6.0) for v in row] for row in x],
        "add": [[float(a) + float(b) for a, b in zip(r, s)] for r, s in zip(x, y)],
    }
    np.testing.assert_array_equal(relu((3, 4)).reference(x), np.float32(loops["relu"]))
    np.testing.assert_array_equal(relu6((3, 4)).reference(x), np.float32(loops["relu6"]))
    np.testing.assert_allclose(add((3, 4)).reference(x, y), loops["add"], rtol=1e-6)


@pytest.mark.parametrize("op", [
    relu(3), relu((37, 53)), relu((2, 3, 5, 7), "float64"),
    relu6(1), relu6((29, 3, 37)),
    add(5), add((3, 37, 2, 5)), add((8, 8), "float64"),
], ids=str)
def test_halide_matches_reference(op):
    assert_well_formed(op)
    assert_matches_reference(op, scale=10.0)  # beyond 6, so relu6 clips


def test_single_stage():
    (stage,) = relu6((2, 3, 4)).algorithm().stages
    assert stage.name == "out" and stage.extents == (4, 3, 2) and stage.rdom is None
    assert [v.name() for v in stage.func.args()] == ["x", "y", "z"]


def test_keys_and_equality():
    assert relu(5) == relu((5,)) == relu([5]) == Relu((5,))
    assert relu((2, 3)).key == "relu(shape=2x3,dtype=float32)"
    assert relu((2, 3)).key != relu((3, 2)).key != relu6((3, 2)).key
    assert relu((2, 3)) != relu6((2, 3))  # same fields, different families
    assert add((2, 3)) == Add((2, 3)) and add((2, 3)).key == "add(shape=2x3,dtype=float32)"
    assert Relu6((4,), "float64").key == "relu6(shape=4,dtype=float64)"


def test_costs():
    assert relu((2, 3)).flops == 6 and relu6((2, 3)).flops == 12 and add((2, 3)).flops == 6
    assert relu((2, 3)).bytes_moved == 2 * 6 * 4
    assert add((2, 3), "float64").bytes_moved == 3 * 6 * 8


@pytest.mark.parametrize("shape, match", [
    ((), "rank 1 to 4"),
    ((1, 2, 3, 4, 5), "rank 1 to 4"),
    ((2, 0), "positive sizes"),
    (-3, "positive sizes"),
    ((2.0, 3), "an int or a tuple of ints"),
    ("2x3", "an int or a tuple of ints"),
])
@pytest.mark.parametrize("factory", [relu, relu6, add])
def test_bad_shapes(factory, shape, match):
    with pytest.raises(OperatorArgumentError, match=match):
        factory(shape)


def test_bad_dtype():
    with pytest.raises(UnsupportedDtypeError, match="int32"):
        relu((2,), dtype="int32")
