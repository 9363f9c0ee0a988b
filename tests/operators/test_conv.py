import numpy as np
import pytest
from operator_checks import assert_matches_reference, assert_well_formed

from evokernel.errors import OperatorArgumentError, UnsupportedDtypeError
from evokernel.operators import Conv1x1, Conv2d, conv1x1, conv2d, depthwise_conv2d


def conv_loops(x, weight, bias=None, stride=(1, 1), pad=(0, 0), dilation=(1, 1), groups=1, activation=None,
               residual=None):
    """Direct definition: one output element at a time, zero padding by bounds checks."""
    n, c_in, h, w = x.shape
    c_out, cpg, kh, kw = weight.shape
    oh = (h + 2 * pad[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * pad[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, c_out, oh, ow))
    for b in range(n):
        for co in range(c_out):
            g = co // (c_out // groups)
            for oy in range(oh):
                for ox in range(ow):
                    total = 0.0 if bias is None else float(bias[co])
                    for ci in range(cpg):
                        for ky in range(kh):
                            for kx in range(kw):
                                iy = oy * stride[0] + ky * dilation[0] - pad[0]
                                ix = ox * stride[1] + kx * dilation[1] - pad[1]
                                if 0 <= iy < h and 0 <= ix < w:
                                    total += float(x[b, g * cpg + ci, iy, ix]) * float(weight[co, ci, ky, kx])
                    if residual is not None:
                        total += float(residual[b, co, oy, ox])
                    if activation == "relu":
                        total = max(total, 0.0)
                    elif activation == "relu6":
                        total = min(max(total, 0.0), 6.0)
                    out[b, co, oy, ox] = total
    return out


CASES = [  # (factory kwargs, conv_loops kwargs)
    (dict(n=1, c_in=2, h=5, w=6, c_out=3, k=3), {}),
    (dict(n=2, c_in=3, h=6, w=7, c_out=2, k=(2, 3), stride=(2, 1), pad=(1, 2)), dict(stride=(2, 1), pad=(1, 2))),
    (dict(n=1, c_in=2, h=7, w=7, c_out=2, k=3, dilation=2, pad=1), dict(dilation=(2, 2), pad=(1, 1))),
    (dict(n=1, c_in=4, h=5, w=5, c_out=6, k=3, groups=2, stride=2, pad=1, bias=True),
     dict(groups=2, stride=(2, 2), pad=(1, 1))),
    (dict(n=1, c_in=2, h=4, w=5, c_out=2, k=1, bias=True, activation="relu"), dict(activation="relu")),
    (dict(n=1, c_in=3, h=4, w=4, c_out=2, k=2, activation="relu6"), dict(activation="relu6")),
]


@pytest.mark.parametrize("bias", [False, True])
def test_a_residual_is_added_after_the_bias_before_the_activation(rng, bias):
    op = conv2d(1, 3, 5, 6, 4, k=3, stride=(2, 1), pad=1, bias=bias, activation="relu6", residual=True)
    assert [s.name for s in op.inputs] == ["input", "weight", *(["bias"] if bias else []), "residual"]
    assert op.inputs[-1].shape == op.output.shape == (1, 4, 3, 6)
    assert op.flops == 4 * 3 * 6 * (2 * 3 * 3 * 3 + bias + 1 + 2)  # + bias, + residual, relu6
    arrays = [a * 4 for a in op.random_inputs(rng)]
    want = conv_loops(arrays[0], arrays[1], arrays[2] if bias else None, stride=(2, 1), pad=(1, 1),
                      activation="relu6", residual=arrays[-1])
    assert 0 < (want == 6).sum() and 0 < (want == 0).sum()
    np.testing.assert_allclose(op.reference(*arrays), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, loop_kwargs", CASES)
def test_reference_matches_loops(rng, kwargs, loop_kwargs):
    op = conv2d(**kwargs)
    arrays = [a * 4 for a in op.random_inputs(rng)]  # large enough for relu6 to clip
    np.testing.assert_allclose(op.reference(*arrays), conv_loops(*arrays, **loop_kwargs), rtol=1e-5, atol=1e-5)


def test_depthwise_reference_matches_loops(rng):
    op = depthwise_conv2d(2, 3, 6, 5, k=3, stride=(1, 2), pad=1, dilation=(2, 1), bias=True)
    arrays = op.random_inputs(rng)
    want = conv_loops(*arrays, stride=(1, 2), pad=(1, 1), dilation=(2, 1), groups=3)
    np.testing.assert_allclose(op.reference(*arrays), want, rtol=1e-5, atol=1e-5)


HALIDE_CASES = [
    conv2d(1, 3, 37, 29, 5, k=3),
    conv2d(2, 4, 11, 13, 6, k=(3, 2), stride=(2, 3), pad=(1, 2), dilation=(2, 1), groups=2, bias=True,
           activation="relu6"),
    conv2d(1, 3, 3, 3, 2, k=3, pad=1, bias=True, activation="relu"),
    conv2d(1, 5, 9, 9, 7, k=1, dtype="float64"),
    depthwise_conv2d(1, 7, 10, 12, k=3, stride=2, pad=1, bias=True),
    depthwise_conv2d(2, 3, 8, 8, k=5, pad=2, dilation=2, dtype="float64"),
    conv2d(2, 4, 9, 7, 6, k=3, stride=2, pad=1, bias=True, activation="relu", residual=True),
    conv1x1(1, 5, 6, 23, activation="relu6", residual=True),
]


@pytest.mark.parametrize("op", HALIDE_CASES, ids=str)
def test_halide_matches_reference(op):
    assert_well_formed(op)
    assert_matches_reference(op, scale=4.0)


def test_stages():
    op = conv2d(1, 4, 10, 12, 6, k=3, stride=2, pad=1, groups=2)
    stages = op.algorithm().stages
    assert [(s.name, s.optional, s.consumer) for s in stages] == [
        ("Wp", True, "acc"), ("padded", False, None), ("acc", False, None), ("out", False, None)]
    assert stages[0].extents == (6, 3, 3, 2)  # c_out innermost, then kw, kh, c_in/groups
    assert stages[1].extents == (13, 11, 4, 1)  # the padded region the windows read
    assert stages[2].extents == stages[3].extents == (6, 5, 6, 1)
    assert stages[2].rdom.dimensions() == 3


def test_pairs_are_canonical():
    a = conv2d(1, 3, 8, 8, 4, k=3, stride=1, pad=1, dilation=1)
    b = conv2d(1, 3, 8, 8, 4, k=(3, 3), stride=(1, 1), pad=[1, 1], dilation=(1, 1))
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert a.kernel == (3, 3) and a.padding == (1, 1)
    assert a.key == ("conv2d(n=1,c_in=3,h=8,w=8,c_out=4,kernel=3x3,stride=1x1,padding=1x1,dilation=1x1,"
                     "groups=1,bias=False,activation=None,dtype=float32)")
    assert a == Conv2d(1, 3, 8, 8, 4, 3, padding=1)
    assert conv2d(1, 3, 8, 8, 4, k=3, pad=1, residual=True).key == a.key[:-1] + ",residual=True)"


def test_records_made_before_the_residual_rebuild_the_same_operator():
    from evokernel.operators import from_dict

    for op in (conv2d(1, 3, 8, 8, 4, k=3, bias=True), conv1x1(1, 3, 4, 10)):
        data = op.to_dict()
        del data["args"]["residual"]
        assert from_dict(data) == op


def test_different_arguments_different_keys():
    base = dict(n=1, c_in=4, h=8, w=8, c_out=4, k=3)
    variants = [dict(), dict(k=(3, 1)), dict(stride=2), dict(pad=1), dict(dilation=2), dict(groups=2),
                dict(bias=True), dict(activation="relu"), dict(activation="relu6"), dict(dtype="float64"), dict(h=9),
                dict(residual=True)]
    keys = {conv2d(**{**base, **v}).key for v in variants}
    assert len(keys) == len(variants)
    assert depthwise_conv2d(1, 4, 8, 8, 3) == conv2d(1, 4, 8, 8, 4, 3, groups=4)


def test_costs():
    op = conv2d(1, 4, 6, 6, 8, k=3, groups=2, bias=True, activation="relu")  # out 1x8x4x4
    assert op.output.shape == (1, 8, 4, 4)
    assert op.flops == 8 * 4 * 4 * (2 * 2 * 3 * 3 + 1 + 1)
    assert op.reduction_length == 2 * 3 * 3 + 1
    assert op.bytes_moved == 4 * (4 * 6 * 6 + 8 * 2 * 3 * 3 + 8 + 8 * 4 * 4)
    assert depthwise_conv2d(1, 32, 112, 112, 3, stride=2, pad=1).flops == 32 * 56 * 56 * 2 * 9


@pytest.mark.parametrize("kwargs, match", [
    (dict(c_in=0), "c_in must be a positive integer"),
    (dict(h=-3), "h must be a positive integer"),
    (dict(k=0), "kernel must be >= 1"),
    (dict(k=(3, 3, 3)), "kernel must be an int or a pair"),
    (dict(stride=0), "stride must be >= 1"),
    (dict(pad=-1), "padding must be >= 0"),
    (dict(dilation=(1, 0)), "dilation must be >= 1"),
    (dict(groups=0), "groups must be a positive integer"),
    (dict(k=9), r"kernel 9x9 is larger than the padded input 8x8"),
    (dict(k=3, dilation=4), r"kernel 9x9 is larger than the padded input 8x8"),
    (dict(c_in=6, groups=4), "c_in=6 is not divisible by groups=4"),
    (dict(c_out=6, groups=4), "c_out=6 is not divisible by groups=4"),
    (dict(activation="gelu"), "unknown activation 'gelu'"),
    (dict(bias=1), "bias must be True or False"),
    (dict(residual="yes"), "residual must be True or False"),
])
def test_bad_arguments(kwargs, match):
    args = {**dict(n=1, c_in=4, h=8, w=8, c_out=4, k=3), **kwargs}
    with pytest.raises(OperatorArgumentError, match=match):
        conv2d(**args)


def test_bad_dtype_and_depthwise_channels():
    with pytest.raises(UnsupportedDtypeError, match="float16"):
        conv2d(1, 3, 8, 8, 4, 3, dtype="float16")
    with pytest.raises(OperatorArgumentError, match="c must be a positive integer"):
        depthwise_conv2d(1, 0, 8, 8, 3)


# -- the 1x1 convolution as a matrix product over positions ---------------------------

POINTWISE = [conv2d(1, 5, 9, 7, 6, k=1), conv2d(2, 3, 4, 5, 7, k=1, bias=True, activation="relu6"),
             conv2d(1, 4, 3, 3, 2, k=(1, 1), dilation=2, bias=True, activation="relu", dtype="float64")]


@pytest.mark.parametrize("conv", POINTWISE, ids=str)
def test_a_pointwise_conv_is_a_conv1x1_of_the_same_arrays(rng, conv):
    op = conv.pointwise()
    assert isinstance(op, Conv1x1) and op.flops == conv.flops and op.reduction_length == conv.reduction_length
    arrays = [a * 4 for a in conv.random_inputs(rng)]
    views = [a.reshape(spec.shape) for a, spec in zip(arrays, op.inputs)]
    want = conv_loops(*arrays, dilation=conv.dilation, activation=conv.activation)
    np.testing.assert_allclose(op.reference(*views).reshape(conv.output.shape), want, rtol=1e-5, atol=1e-5)
    assert_well_formed(op)
    assert_matches_reference(op, scale=4.0)
    assert [(s.name, s.optional, s.consumer) for s in op.algorithm().stages] == [
        ("Xc", True, "acc"), ("acc", False, None), ("out", False, None)]


@pytest.mark.parametrize("conv", [conv2d(1, 4, 8, 8, 4, k=3, pad=1), conv2d(1, 4, 8, 8, 4, k=1, stride=2),
                                  conv2d(1, 4, 8, 8, 4, k=1, pad=1), conv2d(1, 4, 8, 8, 4, k=1, groups=2),
                                  conv2d(1, 4, 8, 8, 4, k=(1, 3), pad=(0, 1))], ids=str)
def test_other_convs_are_not_pointwise(conv):
    assert conv.pointwise() is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(positions=0), "positions must be a positive integer"),
    (dict(c_out=-1), "c_out must be a positive integer"),
    (dict(activation="tanh"), "unknown activation 'tanh'"),
    (dict(bias="yes"), "bias must be True or False"),
])
def test_conv1x1_bad_arguments(kwargs, match):
    with pytest.raises(OperatorArgumentError, match=match):
        conv1x1(**{**dict(n=1, c_in=4, c_out=4, positions=9), **kwargs})
