"""One evaluator going back and forth between operators, as the network scheduler
drives it: the local runner's worker process takes each new operator without a
restart, and the fastest artifacts of every operator are kept across the switches."""

from __future__ import annotations

import evokernel as ek
from evokernel.evaluators import Context
from evokernel.genome import ScheduleSpace, templates


def _context(op, cache):
    target = ek.Target.parse("host")
    return Context(op, target, ScheduleSpace.of(op, target, 2), 2, cache, 0)


def test_the_worker_process_and_the_finalists_survive_a_switch(cache):
    relu, softmax = _context(ek.operators.relu(512), cache), _context(ek.operators.softmax((8, 64)), cache)
    ev = ek.evaluators.create_evaluator("local")
    try:
        ev.prepare(relu)
        first = templates(relu.space)[0]
        assert ev.evaluate_one(first).ok
        worker, artifact = ev.runner._worker._proc.pid, ev.artifact(first)
        ev.prepare(softmax)
        assert ev.evaluate_one(templates(softmax.space)[0]).ok  # the softmax runs in the relu's worker
        assert ev.runner._worker._proc.pid == worker
        ev.prepare(relu)
        assert ev.artifact(first) is artifact  # kept, not rebuilt
        assert ev.evaluate_one(first).ok
    finally:
        ev.close()
