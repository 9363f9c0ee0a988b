import importlib.util
import pathlib

import halide as hl
import numpy as np
import pytest
from operator_checks import assert_matches_reference, assert_well_formed

from evokernel.errors import OperatorArgumentError, UnsupportedDtypeError
from evokernel.operators import CustomOperator, Stage, custom

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "custom_operator.py"


def scale_shift_tanh(params):
    """A single-Func algorithm: out = tanh(x * s + b), s and b per column."""
    x, scale, shift = params
    i, j = hl.Var("i"), hl.Var("j")
    out = hl.Func("scale_shift_tanh")
    out[i, j] = hl.tanh(x[i, j] * scale[i] + shift[i])
    return out


def scale_shift_tanh_ref(x, scale, shift):
    return np.tanh(x * scale + shift)


def blur3(params):
    """A two-stage algorithm: a 3-tap sum, then a scaled copy."""
    (x,) = params
    i = hl.Var("i")
    total, out = hl.Func("total"), hl.Func("out")
    total[i] = x[i] + x[i + 1] + x[i + 2]
    out[i] = total[i] * hl.f32(1 / 3)
    return [Stage(total, (8,)), Stage(out, (8,))]


def make(name="sst", shapes=((3, 5), 5, 5), dtype="float32", **kwargs):
    inputs = list(zip(("x", "scale", "shift"), shapes))
    return custom(name, inputs, (3, 5), scale_shift_tanh, scale_shift_tanh_ref, dtype=dtype, **kwargs)


def test_func_algorithm_matches_reference():
    op = make(flops=45)
    assert_well_formed(op)
    assert_matches_reference(op)
    (stage,) = op.algorithm().stages
    assert stage.name == "scale_shift_tanh" and stage.extents == (5, 3)
    assert op.flops == 45 and op.inputs[1].shape == (5,)


def test_stage_list_algorithm_matches_reference():
    op = custom("blur3", [("x", 10)], 8, blur3, lambda a: (a[:-2] + a[1:-1] + a[2:]) / 3, reduction_length=3)
    assert_well_formed(op)
    assert_matches_reference(op)
    assert [s.name for s in op.algorithm().stages] == ["total", "out"]
    assert op.reference_fn is not None and op.reduction_length == 3


def test_example_operator_matches_reference():
    spec = importlib.util.spec_from_file_location("custom_operator_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    op = module.make_op()
    assert_well_formed(op)
    assert_matches_reference(op)


def test_keys_ignore_the_functions():
    a = make()
    b = custom("sst", [("x", [3, 5]), ("scale", (5,)), ("shift", 5)], [3, 5],
               lambda p: None, lambda *arrays: None, flops=7)
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert a.key == "custom:sst(x=3x5,scale=5,shift=5,out=3x5,dtype=float32)"
    assert make().key != make(name="other").key
    assert make().key != make(dtype="float64").key
    assert make() != make(shapes=((3, 5), 5, 1))
    assert isinstance(a, CustomOperator) and a.family == "custom"


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="my op"), "operator name must be a Python identifier"),
    (dict(inputs=[]), "non-empty list of"),
    (dict(inputs=[("x", (3, 5), 1)]), r"a \(name, shape\) pair"),
    (dict(inputs=[("x-1", 3)]), "input name must be a Python identifier"),
    (dict(inputs=[("x", 3), ("x", 3)]), "input names must be distinct"),
    (dict(inputs=[("x", (3, 0))]), "shape of input 'x' must have positive sizes"),
    (dict(output_shape=()), "output_shape must have rank 1 to 4"),
    (dict(algorithm="not a function"), "algorithm must be a function"),
    (dict(reference=None), "reference must be a function"),
    (dict(flops=-1), "flops must be a non-negative integer"),
])
def test_bad_arguments(kwargs, match):
    args = dict(name="op", inputs=[("x", (3, 5))], output_shape=(3, 5), algorithm=scale_shift_tanh,
                reference=scale_shift_tanh_ref)
    with pytest.raises(OperatorArgumentError, match=match):
        custom(**{**args, **kwargs})


def test_bad_dtype():
    with pytest.raises(UnsupportedDtypeError):
        make(dtype="int16")


def test_bad_algorithm_results_are_named():
    with pytest.raises(OperatorArgumentError, match="must return an hl.Func or a list of Stage"):
        custom("bad", [("x", 3)], 3, lambda p: 42, lambda x: x).algorithm()
    with pytest.raises(OperatorArgumentError, match="output Func has 2 dimensions"):
        custom("bad", [("x", (3, 5)), ("scale", 5), ("shift", 5)], 15, scale_shift_tanh,
               scale_shift_tanh_ref).algorithm()
    with pytest.raises(OperatorArgumentError, match=r"reference returned shape \(3,\)"):
        custom("bad", [("x", 3)], 2, lambda p: None, lambda x: x).reference(np.zeros(3, np.float32))
