"""Random genomes never crash the tuner: each one, built and run in a worker, ends
as a correct ``ok`` or as a typed failure with a message."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
from _families import FAMILIES, FAMILY_IDS, fresh_inputs, prepared, seeded

from evokernel.codegen import FUNCTION
from evokernel.evaluators import Outcome
from evokernel.genome import random_genome, templates
from evokernel import codegen


def check_random_genomes(op, count: int, seed: int) -> Counter:
    evaluator, context = prepared(op)
    rtol, atol = op.tolerance
    scale = float(np.max(np.abs(context.reference)))
    me = os.getpid()
    kinds: Counter = Counter()
    ok_libraries = []
    try:
        rng = seeded(seed)
        genomes = [random_genome(context.space, rng) for _ in range(count)]
        results = evaluator.evaluate(genomes)
        assert len(results) == count
        for genome, result in zip(genomes, results):
            kinds[result.outcome.value] += 1
            assert result.genome_key == genome.key
            assert isinstance(result.outcome, Outcome)
            if result.ok:
                assert result.time is not None and result.time > 0 and result.samples >= 1
                assert result.max_error is not None and result.max_error <= atol + rtol * scale
                ok_libraries.append(context.link(evaluator.artifact(genome)))
            else:
                assert isinstance(result.message, str) and result.message.strip(), result
                assert result.time is None
        # the tuner's process is alive and its worker still serves a good schedule
        assert os.getpid() == me
        after = evaluator.evaluate_one(templates(context.space)[0])
        assert after.ok, after
    finally:
        evaluator.close()
    # what the worker called correct is correct here too, on inputs it never saw
    runtime = codegen.load_runtime(context.runtime, context.threads)
    specs = (*op.inputs, op.output)
    arrays = fresh_inputs(op, seed)
    want = op.reference(*arrays)
    for library in ok_libraries[:2]:
        kernel = codegen.NativeKernel(library, FUNCTION, runtime, [s.shape for s in specs], [s.dtype for s in specs])
        out = np.full(op.output.shape, np.nan, op.dtype)
        kernel([*arrays, out])
        np.testing.assert_allclose(out, want, rtol=rtol, atol=3 * atol)
    assert kinds["ok"] >= count // 4, f"too few correct candidates: {dict(kinds)}"
    return kinds


@pytest.mark.parametrize("op", [op for _, op in FAMILIES], ids=FAMILY_IDS)
def test_random_genomes_never_crash_the_tuner(op):
    check_random_genomes(op, 6, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("op", [op for _, op in FAMILIES], ids=FAMILY_IDS)
def test_500_random_genomes_never_crash_the_tuner(op):
    kinds = check_random_genomes(op, 500, seed=2)
    print(op.key, dict(kinds))
