"""Checks shared by the operator tests: run an unscheduled pipeline with Halide's
JIT, compare it with the reference, check the stage structure."""

from __future__ import annotations

import halide as hl
import numpy as np


def realize(op, arrays: list[np.ndarray]) -> np.ndarray:
    """Run ``op.algorithm()`` unscheduled on NumPy ``arrays``; return a NumPy array.

    ``hl.Buffer(ndarray)`` reverses the axes (Halide dim 0 is the last NumPy axis)
    and ``hl.Buffer(type, sizes)`` takes Halide-order sizes, so ``np.asarray`` of it
    has the NumPy shape again.
    """
    alg = op.algorithm()
    buffers = [hl.Buffer(np.ascontiguousarray(a)) for a in arrays]
    for param, buffer in zip(alg.inputs, buffers):
        param.set(buffer)
    out = hl.Buffer(alg.output.func.type(), list(reversed(op.output.shape)))
    alg.pipeline().realize(out)
    return np.asarray(out).copy()


def assert_matches_reference(op, seed: int = 0, scale: float = 1.0) -> None:
    """Random inputs (times ``scale``) through Halide and through ``op.reference``."""
    arrays = [a * np.asarray(scale, a.dtype) for a in op.random_inputs(np.random.default_rng(seed))]
    got = realize(op, arrays)
    want = op.reference(*arrays)
    assert got.shape == want.shape == op.output.shape
    assert got.dtype == want.dtype == np.dtype(op.dtype)
    rtol, atol = op.tolerance
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def assert_well_formed(op) -> None:
    """The structure a schedule search relies on."""
    alg = op.algorithm()
    names = [s.name for s in alg.stages]
    assert len(set(names)) == len(names), names
    assert all(n.isidentifier() for n in names), names
    assert [p.name() for p in alg.inputs] == [s.name for s in op.inputs]
    assert alg.output.extents == tuple(reversed(op.output.shape))
    for i, stage in enumerate(alg.stages):
        assert all(v.name().isidentifier() for v in stage.func.args())
        assert len(stage.extents) == stage.func.dimensions()
        assert all(isinstance(e, int) and e > 0 for e in stage.extents)
        # one pure init, and exactly one update over the stage's RDom if it reduces
        assert stage.func.num_update_definitions() == (stage.rdom is not None)
        if stage.consumer is not None:
            assert stage.consumer in names[i + 1:]
    assert not alg.output.optional
    fresh = op.algorithm()  # fresh Funcs: Halide gives a reused name a new "$n" suffix
    assert all(a.func.name() != b.func.name() and a.name == b.name for a, b in zip(alg.stages, fresh.stages))
