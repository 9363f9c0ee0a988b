"""The kernel cache keeps one winner per operator, and every distinct artifact loads
as its own code: a second winner stored for the operator in the same process runs
the second winner's code, while the first kernel goes on running its own."""

from __future__ import annotations

import numpy as np
import pytest

import evokernel as ek
from evokernel.codegen import build
from evokernel.genome import ScheduleSpace, templates
from evokernel.search import Budget
from evokernel.store import KernelMeta, TuningStats, store

#: A reduction long enough that schedules summing in another order give other bits.
OP = ek.operators.matmul(8, 16, 512)
THREADS = 2


def winner(genome, space, target):
    """What tune() stores for a winner: its metadata and object."""
    artifact = build(OP, space, genome, target)
    stats = TuningStats(time=1e-5, spread=0.0, baseline=None, budget="3", seed=0)
    return KernelMeta.new(OP, target, genome, artifact.schedule, stats, Budget(evaluations=3)), artifact.object_bytes


def test_two_winners_of_one_operator_in_one_process_run_their_own_code(cache, tmp_path):
    target = ek.Target.parse("host")
    space = ScheduleSpace.of(OP, target, THREADS)
    a, b = OP.random_inputs(np.random.default_rng(0))
    # two schedules whose results differ in their last bits (another summation order), each
    # run from a bundle of its own: what each one's code computes
    own = {}
    for genome in templates(space):
        meta, object_bytes = winner(genome, space, target)
        bundle = store(cache, meta, object_bytes, OP, THREADS).save(tmp_path / f"{genome.key}.ekb")
        out = ek.load_kernel(bundle, cache_dir=cache, threads=THREADS)(a, b)
        if all(not np.array_equal(out, seen) for seen in own.values()):
            own[genome.key] = out
        if len(own) == 2:
            break
    assert len(own) == 2, "no two templates sum in another order"
    first, second = (next(g for g in templates(space) if g.key == key) for key in own)

    k1 = store(cache, *winner(first, space, target), OP, THREADS)  # as tune(op, budget=3) ends
    assert np.array_equal(k1(a, b), own[first.key])
    k2 = store(cache, *winner(second, space, target), OP, THREADS)  # as tune(op, budget=40) ends: a new winner
    assert k2.genome == second and k2.schedule != k1.schedule
    assert np.array_equal(k2(a, b), own[second.key]), "the second winner must run its own code"
    assert np.array_equal(k1(a, b), own[first.key]), "and the first kernel keeps running its own"
    assert np.array_equal(ek.load(OP, cache_dir=cache)(a, b), own[second.key])
    (entry,) = ek.store.KernelCache(cache).entries()
    assert sorted(p.name for p in entry.directory.iterdir()) == sorted(["kernel.o", "meta.json",
                                                                       entry.library_path.name]), \
        "the first winner's library is gone from the entry"


@pytest.mark.slow
def test_a_retuned_operator_runs_the_new_winner(cache):
    """The user's way: tune, then tune on with a larger budget, in one process."""
    op = ek.operators.matmul(8, 16, 256)
    a, b = op.random_inputs(np.random.default_rng(1))
    k1 = ek.tune(op, budget=3, seed=0, evaluator="local", cache_dir=cache, progress=False)
    first = k1(a, b)
    k2 = ek.tune(op, budget=40, seed=0, evaluator="local", cache_dir=cache, progress=False)
    if k2.genome == k1.genome:
        pytest.skip("the larger search found the same winner")
    fresh = ek.load_kernel(k2.save(cache / "k2.ekb"), cache_dir=cache)  # the new winner, loaded on its own
    assert np.array_equal(k2(a, b), fresh(a, b))
    assert np.array_equal(k1(a, b), first)
