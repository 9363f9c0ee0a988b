"""``tune`` end to end: for every operator family a tiny search returns a Kernel
that computes the operator on inputs it never saw, and says how it was found."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from _families import FAMILIES, FAMILY_IDS, assert_close, box_blur_operator, fresh_inputs

import evokernel as ek

BUDGET = 6
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=[op for _, op in FAMILIES], ids=FAMILY_IDS)
def family(request, tuned):
    """An operator of each family and its kernel, a fresh search of BUDGET evaluations."""
    op = request.param
    return op, tuned(op, budget=BUDGET)


def test_kernel_equals_the_reference_on_fresh_inputs(family):
    op, kernel = family
    for seed in (1, 2):
        arrays = fresh_inputs(op, seed)
        assert_close(op, kernel(*arrays), op.reference(*arrays))


def test_kernel_says_how_it_was_found(family):
    op, kernel = family
    assert isinstance(kernel, ek.Kernel) and kernel.operator == op
    assert isinstance(kernel.schedule, str) and kernel.schedule.strip()
    assert not kernel.schedule.startswith("# Halide rejects")
    compile(kernel.schedule, "<schedule>", "exec")
    report = kernel.report()
    assert op.key in report and "speedup" in report
    assert kernel.time_ms > 0 and np.isfinite(kernel.time_ms)
    history = kernel.history
    assert len(history) == BUDGET == sum(kernel.stats.outcomes.values())
    assert all(later <= earlier for earlier, later in zip(history, history[1:])), history
    assert np.isfinite(history[-1])
    assert kernel.stats.seed == 0 and kernel.stats.budget == f"{BUDGET} evaluations"
    assert kernel.speedup is not None and kernel.speedup > 0
    assert op.key in repr(kernel)


def test_awkward_sizes_are_covered():
    shapes = {name: op for name, op in FAMILIES}
    assert shapes["matmul"].output.shape == (37, 53)
    assert shapes["relu-tiny"].output.shape == (3,)
    assert shapes["softmax-rank1"].output.shape == (3,)


def test_custom_operator_tunes_end_to_end(cache):
    op = box_blur_operator(19, 23)
    kernel = ek.tune(op, budget=BUDGET, seed=1, evaluator="local", cache_dir=cache)
    arrays = fresh_inputs(op, 3)
    assert_close(op, kernel(*arrays), op.reference(*arrays))
    assert "blur_x" in kernel.schedule or "out" in kernel.schedule
    assert op.key in kernel.report()


def test_the_custom_operator_example_tunes_on_small_images(cache):
    spec = importlib.util.spec_from_file_location("custom_operator_example", ROOT / "examples" / "custom_operator.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.H, example.W = 17, 29  # the example's algorithm reads its sizes from these
    op = example.make_op()
    kernel = ek.tune(op, budget=4, seed=0, evaluator="local", cache_dir=cache)
    image = np.random.default_rng(5).uniform(-1, 1, (17, 29)).astype(np.float32)
    assert_close(op, kernel(image), example.box_blur_reference(image))


def test_a_time_budget_is_respected(cache):
    """The search runs until its 3 s are spent and then stops: every evaluation but
    the one in progress at the deadline ended within them (the search's clock, in
    seconds since it started). How far that last one runs past depends on the
    machine's speed, so it is not bounded here; tests/search/test_strategies.py checks
    the stop on an injected clock."""
    op = ek.operators.relu((41, 43))
    kernel = ek.tune(op, budget="3s", seed=0, evaluator="local", cache_dir=cache)
    assert kernel.stats.budget == "3s"
    assert len(kernel.history) >= 1 and kernel.stats.elapsed >= 3.0
    ended = kernel.stats.history_seconds
    assert len(ended) == len(kernel.history)
    assert all(seconds <= 3.0 for seconds in ended[:-1]), ended
    x = fresh_inputs(op, 0)[0]
    np.testing.assert_array_equal(kernel(x), np.maximum(x, 0))


def test_a_subset_target_of_this_cpu_works(cache):
    op = ek.operators.matmul(37, 53, 29)
    kernel = ek.tune(op, target="x86-64-linux-avx2", budget=4, seed=0, evaluator="local", cache_dir=cache)
    assert kernel.target.string == "x86-64-linux-avx2"
    assert "avx512" not in str(kernel.target)
    arrays = fresh_inputs(op, 4)
    assert_close(op, kernel(*arrays), op.reference(*arrays))


@pytest.mark.parametrize("target", ["arm-64-linux", "x86-64-linux-cuda", "bogus", "", "x86-64-linux-avx9000", 7])
def test_targets_that_cannot_run_here_raise_target_error(target):
    with pytest.raises(ek.TargetError):
        ek.tune(ek.operators.relu((4,)), target=target, budget=2, evaluator="local")


def test_inline_evaluator_agrees_with_local(tmp_path):
    """Each in its own cache, so that neither reuses what the other measured."""
    op = ek.operators.conv2d(1, 3, 9, 11, 4, k=3, stride=2, pad=1)
    local = ek.tune(op, budget=5, seed=7, evaluator="local", cache_dir=tmp_path / "local")
    inline = ek.tune(op, budget=5, seed=7, evaluator="inline", cache_dir=tmp_path / "inline")
    arrays = fresh_inputs(op, 5)
    want = op.reference(*arrays)
    assert_close(op, local(*arrays), want)
    assert_close(op, inline(*arrays), want)
    assert len(local.history) == len(inline.history) == 5
    # the same seed evaluates the same candidates, and both judge them alike
    assert local.stats.outcomes == inline.stats.outcomes


def test_unknown_evaluator_and_bad_budget_are_refused_before_work():
    op = ek.operators.relu((4,))
    with pytest.raises(ek.EvokernelError, match="evaluator"):
        ek.tune(op, budget=2, evaluator="ray-cluster-9")
    with pytest.raises(ek.BudgetError):
        ek.tune(op, budget="soon")
