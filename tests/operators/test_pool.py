import math

import numpy as np
import pytest
from operator_checks import assert_matches_reference, assert_well_formed, realize

from evokernel.errors import OperatorArgumentError, UnsupportedDtypeError
from evokernel.operators import Pool2d, avg_pool2d, max_pool2d


def pool_loops(x, method, kernel, stride, pad):
    """Direct definition: -inf padding for max, zeros counted in the area for avg."""
    n, c, h, w = x.shape
    oh = (h + 2 * pad[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * pad[1] - kernel[1]) // stride[1] + 1
    out = np.zeros((n, c, oh, ow))
    for b, ch, oy, ox in np.ndindex(n, c, oh, ow):
        values = []
        for ky in range(kernel[0]):
            for kx in range(kernel[1]):
                iy, ix = oy * stride[0] + ky - pad[0], ox * stride[1] + kx - pad[1]
                inside = 0 <= iy < h and 0 <= ix < w
                values.append(float(x[b, ch, iy, ix]) if inside else (-math.inf if method == "max" else 0.0))
        out[b, ch, oy, ox] = max(values) if method == "max" else sum(values) / len(values)
    return out


CASES = [  # (method, kernel, stride, pad, input shape)
    ("max", (2, 2), (2, 2), (0, 0), (1, 2, 4, 6)),
    ("max", (3, 3), (2, 2), (1, 1), (2, 3, 7, 6)),
    ("max", (3, 2), (1, 2), (1, 0), (1, 2, 5, 5)),
    ("avg", (2, 2), (2, 2), (0, 0), (1, 2, 5, 4)),
    ("avg", (3, 3), (2, 1), (1, 1), (1, 3, 6, 5)),
    ("avg", (3, 3), (3, 3), (0, 0), (1, 1, 3, 3)),
]


@pytest.mark.parametrize("method, kernel, stride, pad, shape", CASES)
def test_reference_matches_loops(rng, method, kernel, stride, pad, shape):
    op = Pool2d(method, *shape, kernel=kernel, stride=stride, padding=pad)
    (x,) = op.random_inputs(rng)
    np.testing.assert_allclose(op.reference(x), pool_loops(x, method, kernel, stride, pad), rtol=1e-6, atol=1e-6)


def test_max_pool_pads_with_minus_infinity():
    op = max_pool2d(1, 1, 2, 2, k=2, stride=1, pad=1)
    x = -np.ones((1, 1, 2, 2), np.float32)  # every window sees padding; the max is still -1
    np.testing.assert_array_equal(op.reference(x), -np.ones((1, 1, 3, 3)))


@pytest.mark.parametrize("op", [
    max_pool2d(1, 3, 37, 29, k=3, stride=2, pad=1),
    max_pool2d(2, 2, 8, 8, k=2),
    max_pool2d(1, 2, 3, 3, k=(3, 2), stride=(1, 2), pad=(1, 0), dtype="float64"),
    avg_pool2d(1, 3, 13, 11, k=3, stride=2, pad=1),
    avg_pool2d(1, 5, 7, 7, k=7),
    avg_pool2d(2, 2, 9, 10, k=(2, 3), stride=(2, 1), pad=(1, 1), dtype="float64"),
], ids=str)
def test_halide_matches_reference(op):
    assert_well_formed(op)
    assert_matches_reference(op)
    arrays = [-np.ones(op.inputs[0].shape, op.dtype)]  # all negative: padding must not win the max
    np.testing.assert_allclose(realize(op, arrays), op.reference(*arrays), rtol=1e-6)


def test_stages():
    stages = max_pool2d(1, 4, 9, 9, k=3, stride=2, pad=1).algorithm().stages
    assert [(s.name, s.extents, s.rdom is not None) for s in stages] == [
        ("padded", (11, 11, 4, 1), False), ("acc", (5, 5, 4, 1), True), ("out", (5, 5, 4, 1), False)]


def test_keys():
    assert max_pool2d(1, 2, 8, 8, k=2) == max_pool2d(1, 2, 8, 8, k=(2, 2), stride=2, pad=0)
    assert max_pool2d(1, 2, 8, 8, k=2).stride == (2, 2)
    assert max_pool2d(1, 2, 8, 8, k=2).key != avg_pool2d(1, 2, 8, 8, k=2).key
    assert max_pool2d(1, 2, 8, 8, k=2).key != max_pool2d(1, 2, 8, 8, k=2, stride=1).key
    assert len({max_pool2d(1, 2, 8, 8, k=2, pad=p) for p in (0, 1, (0, 1))}) == 3


def test_costs():
    op = avg_pool2d(1, 2, 4, 4, k=2)  # out 1x2x2x2
    assert op.flops == 8 * (4 + 1) and op.reduction_length == 4
    assert op.bytes_moved == 4 * (2 * 4 * 4 + 2 * 2 * 2)
    assert max_pool2d(1, 2, 4, 4, k=2).flops == 8 * 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="min"), "unknown pooling method 'min'"),
    (dict(c=0), "c must be a positive integer"),
    (dict(kernel=0), "kernel must be >= 1"),
    (dict(stride=(1, 0)), "stride must be >= 1"),
    (dict(padding=-1), "padding must be >= 0"),
    (dict(kernel=3, padding=2), "padding 2 along h is more than half the kernel size 3"),
    (dict(kernel=(2, 4), padding=(1, 3)), "padding 3 along w is more than half the kernel size 4"),
    (dict(kernel=7), "kernel 7 along h is larger than the padded input 6"),
    (dict(kernel=(2, 8), padding=(0, 1)), "kernel 8 along w is larger than the padded input 7"),
])
def test_bad_arguments(kwargs, match):
    args = {**dict(method="max", n=1, c=2, h=6, w=5, kernel=2), **kwargs}
    with pytest.raises(OperatorArgumentError, match=match):
        Pool2d(**args)


def test_bad_dtype():
    with pytest.raises(UnsupportedDtypeError):
        avg_pool2d(1, 2, 8, 8, k=2, dtype="int8")
