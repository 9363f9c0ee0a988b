import numpy as np
import pytest
from operator_checks import assert_matches_reference, assert_well_formed

from evokernel.errors import OperatorArgumentError, UnsupportedDtypeError
from evokernel.operators import FullyConnected, MatMul, fc, matmul


def matmul_loops(a, b):
    m, k = a.shape
    n = b.shape[1]
    return np.array([[sum(float(a[i, t]) * float(b[t, j]) for t in range(k)) for j in range(n)] for i in range(m)])


def fc_loops(x, w, bias=None):
    out = np.zeros((x.shape[0], w.shape[0]))
    for i, o in np.ndindex(out.shape):
        out[i, o] = sum(float(x[i, t]) * float(w[o, t]) for t in range(x.shape[1]))
        out[i, o] += 0.0 if bias is None else float(bias[o])
    return out


def test_matmul_reference_matches_loops(rng):
    op = matmul(3, 4, 5)
    a, b = op.random_inputs(rng)
    np.testing.assert_allclose(op.reference(a, b), matmul_loops(a, b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_fc_reference_matches_loops(rng, bias):
    op = fc(2, 5, 3, bias=bias)
    arrays = op.random_inputs(rng)
    np.testing.assert_allclose(op.reference(*arrays), fc_loops(*arrays), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", [matmul(37, 53, 29), matmul(3, 1, 3), matmul(8, 16, 4, "float64"),
                                fc(3, 37, 5), fc(1, 3, 17, bias=False), fc(4, 9, 6, dtype="float64")], ids=str)
def test_halide_matches_reference(op):
    assert_well_formed(op)
    assert_matches_reference(op)


def test_stages():
    stages = matmul(4, 5, 6).algorithm().stages
    assert [(s.name, s.extents, s.optional, s.consumer) for s in stages] == [
        ("Bc", (5, 6), True, "acc"), ("acc", (5, 4), False, None), ("out", (5, 4), False, None)]
    assert [s.name for s in fc(2, 3, 4).algorithm().stages] == ["Wt", "acc", "out"]
    assert fc(2, 3, 4).algorithm().stages[0].extents == (4, 3)


def test_keys_and_equality():
    assert matmul(2, 3, 4) == MatMul(2, 3, 4, "float32") == matmul(2, 3, 4, dtype=np.float32)
    assert matmul(2, 3, 4).key == matmul(np.int64(2), 3, 4).key == "matmul(m=2,n=3,k=4,dtype=float32)"
    assert len({matmul(2, 3, 4), matmul(2, 4, 3), matmul(2, 3, 4, "float64"), matmul(2, 3, 4)}) == 3
    assert fc(2, 3, 4) == FullyConnected(2, 3, 4, True)
    assert fc(2, 3, 4).key != fc(2, 3, 4, bias=False).key


def test_costs():
    assert matmul(2, 3, 4).flops == 2 * 2 * 3 * 4
    assert matmul(2, 3, 4).bytes_moved == (2 * 4 + 4 * 3 + 2 * 3) * 4
    assert matmul(2, 3, 4, "float64").bytes_moved == (2 * 4 + 4 * 3 + 2 * 3) * 8
    assert matmul(2, 3, 4).reduction_length == 4
    assert fc(2, 3, 4).flops == 2 * 4 * (2 * 3 + 1)
    assert fc(2, 3, 4, bias=False).flops == 2 * 4 * 2 * 3
    assert fc(2, 3, 4).bytes_moved == (2 * 3 + 4 * 3 + 4 + 2 * 4) * 4
    assert [s.shape for s in fc(2, 3, 4).inputs] == [(2, 3), (4, 3), (4,)]


@pytest.mark.parametrize("args, match", [
    ((0, 3, 4), "m must be a positive integer"),
    ((2, -1, 4), "n must be a positive integer"),
    ((2, 3, 2.5), "k must be a positive integer"),
    ((2, 3, True), "k must be a positive integer"),
])
def test_matmul_bad_arguments(args, match):
    with pytest.raises(OperatorArgumentError, match=match):
        matmul(*args)


def test_bad_dtype():
    with pytest.raises(UnsupportedDtypeError, match="int32"):
        matmul(2, 3, 4, dtype="int32")
    with pytest.raises(UnsupportedDtypeError, match="float16"):
        fc(2, 3, 4, dtype="float16")


def test_fc_bad_arguments():
    with pytest.raises(OperatorArgumentError, match="in_features"):
        fc(2, 0, 4)
    with pytest.raises(OperatorArgumentError, match="bias must be True or False"):
        fc(2, 3, 4, bias="yes")
