"""TVM MetaSchedule as a bench peer: real TVM (the ``tvm`` extra, in the test extra)."""

from __future__ import annotations

import numpy as np
import pytest

import evokernel as ek
from evokernel.bench import Config, _metaschedule
from evokernel.bench._report import markdown
from evokernel.errors import EvokernelError

import tvm  # the tvm extra is part of the test extra

OPERATORS = [
    ek.operators.matmul(7, 5, 3),
    ek.operators.fc(2, 9, 4),
    ek.operators.fc(3, 8, 5, bias=False),
    ek.operators.conv2d(1, 4, 9, 8, 6, 3, stride=2, pad=1, dilation=1, groups=2, bias=True, activation="relu6"),
    ek.operators.conv2d(2, 3, 7, 7, 4, (3, 2), pad=(1, 0), dilation=2, activation="relu"),
    ek.operators.depthwise_conv2d(1, 5, 8, 8, 3, pad=1, bias=True),
    ek.operators.max_pool2d(1, 3, 8, 7, 3, stride=2, ceil_mode=True),
    ek.operators.max_pool2d(1, 2, 6, 6, 3, stride=2, pad=1),
    ek.operators.avg_pool2d(1, 2, 7, 7, 3, stride=2, pad=1),
    ek.operators.relu((2, 3, 5)),
    ek.operators.relu6((11,)),
    ek.operators.add((4, 6)),
    ek.operators.softmax((2, 3, 10)),
]


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: op.key)
def test_expressions_compute_what_the_operator_does(op):
    """Every operator's TVM expression, compiled with TVM's default schedule,
    matches the operator's own reference on random inputs."""
    function = tvm.compile(_metaschedule.prim_func(op), target="llvm")
    inputs = op.random_inputs(np.random.default_rng(1))
    out = np.full(op.output.shape, np.nan, op.output.dtype)
    function(*[tvm.runtime.tensor(a) for a in inputs], result := tvm.runtime.tensor(out))
    np.testing.assert_allclose(result.numpy(), op.reference(*inputs), rtol=1e-5, atol=1e-5)


def _twice(params):
    import halide as hl

    (x,), i, out = params, hl.Var("i"), hl.Func("out")
    out[i] = x[i] * 2.0
    return out


TWICE = ek.operators.custom("twice", [("x", (4,))], (4,), _twice, lambda x: x * 2)


def test_an_unknown_peer_is_refused():
    with pytest.raises(EvokernelError, match="unknown peer"):
        Config(peers=("autotvm",))


def test_an_operator_without_an_expression_is_a_failure_not_a_crash(tmp_path):
    assert _metaschedule.prim_func(TWICE) is None
    tuned = _metaschedule.tune(TWICE, "1s", 1, tmp_path)
    assert tuned.library is None and "no TVM expression for CustomOperator" in tuned.error


@pytest.mark.slow
def test_metaschedule_tunes_within_its_budget_and_its_kernel_is_right(tmp_path):
    """A real MetaSchedule search, bounded by a deadline: it measures candidates,
    stops near the deadline, and the exported kernel computes the operator."""
    op = ek.operators.matmul(64, 64, 64)
    tuned = _metaschedule.tune(op, "20s", 2, tmp_path)
    assert tuned.error == "" and tuned.trials > 0
    assert tuned.curve[-1][0] < 20 + 120  # the deadline ends it after the round in flight
    inputs = op.random_inputs(np.random.default_rng(0))
    out = _metaschedule.baseline(tuned.library, op, inputs, 2)()
    np.testing.assert_allclose(out, op.reference(*inputs), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_bench_runs_metaschedule_beside_evokernel():
    from evokernel import bench

    case = bench.Case("mm", lambda: ek.operators.matmul(32, 32, 32))
    config = bench.Config(budget="15s", evaluator="local", autoschedulers=(), peers=("metaschedule",),
                          protocol=bench.SideBySide(rounds=2, min_time=0.001))
    results = bench.run([case], config)
    method = results["operators"][0]["methods"]["metaschedule"]
    assert method["status"] == "ok" and method["trials"] > 0
    assert "| metaschedule |" in markdown(results)
