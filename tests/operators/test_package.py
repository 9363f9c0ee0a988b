"""The public surface, the docstring examples, and the Stage contract."""

import doctest
import importlib
import pickle

import halide as hl
import pytest

import evokernel.operators as ops
from evokernel.operators import Stage

MODULES = ["_common", "_matmul", "_conv", "_pool", "_elementwise", "_softmax", "_custom"]


@pytest.mark.parametrize("name", MODULES + [""])
def test_docstring_examples_run(name):
    module = importlib.import_module(f"evokernel.operators.{name}" if name else "evokernel.operators")
    result = doctest.testmod(module)
    assert result.failed == 0


def test_exports():
    assert set(ops.__all__) <= set(dir(ops))
    for name in ["matmul", "fc", "conv2d", "depthwise_conv2d", "conv1x1", "max_pool2d", "avg_pool2d", "relu", "relu6",
                 "add", "softmax", "custom", "Operator", "Stage", "Algorithm", "TensorSpec", "input_param",
                 "constrain"]:
        assert name in ops.__all__


BUILTIN = [ops.matmul(2, 3, 4), ops.fc(2, 3, 4), ops.conv2d(1, 2, 5, 5, 2, 3, pad=1), ops.max_pool2d(1, 2, 4, 4, 2),
           ops.avg_pool2d(1, 2, 4, 4, 2), ops.relu(3), ops.relu6(3), ops.add(3), ops.softmax((2, 3))]


@pytest.mark.parametrize("op", BUILTIN, ids=str)
def test_operators_are_frozen_picklable_values(op):
    assert pickle.loads(pickle.dumps(op)) == op
    assert pickle.loads(pickle.dumps(op)).key == op.key
    with pytest.raises(AttributeError):
        op.dtype = "float64"
    assert op.key.startswith(op.family + "(")


def test_family_names():
    assert [op.family for op in BUILTIN] == ["matmul", "fc", "conv2d", "pool2d", "pool2d", "relu", "relu6", "add",
                                             "softmax"]


def test_stage_name_is_stable_across_builds():
    first, second = hl.Func("acc"), hl.Func("acc")
    assert second.name() != "acc"  # Halide makes reused Func names unique: "acc$1"
    assert Stage(first, (1,)).name == Stage(second, (1,)).name == "acc"
