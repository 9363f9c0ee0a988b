"""``tune_model``: one budget for a whole network, shared among its operators by a
task scheduler (as Ansor's): every distinct operator first gets a slice (its
templates and a first generation), then slices go, one at a time, to the operator
whose next slice is expected to save the most network time: its time, times its
occurrences, times its recent rate of improvement. Operators that have stopped
improving get nothing more. A new operator starts from the best genomes of its
family already in the records (other shapes of conv, matmul, pooling...), as in
``tune()``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..codegen import cache_dir as resolve_cache_dir
from ..codegen import default_threads, subdir, write_atomic
from ..errors import EvokernelError
from ..evaluators import create_evaluator
from ..operators import Operator
from ..search import Budget, create_strategy
from ..store import cached_entry, from_entry, open_records
from ..target import Target
from ..tuner import OperatorTuning, family_genomes
from ._model import TunedModel
from ._onnx import import_onnx
from ._progress import ModelDisplay

log = logging.getLogger("evokernel")

#: Share of the budget spent on every operator's first slice.
FIRST_ROUND = 0.5
#: Relative improvement below which a slice counts as no progress.
MIN_GAIN = 0.01
#: Shortest slice, in seconds or evaluations.
MIN_SLICE_SECONDS, MIN_SLICE_EVALUATIONS = 2.0, 2


def tune_model(model, target="host", budget="10m", seed: int | None = None, *, input_shapes: Mapping | None = None,
               retune: bool = False, evaluator="ray", strategy="ga", records="sqlite", threads: int | None = None,
               cache_dir=None, progress=None) -> TunedModel:
    """Tune every operator of an ONNX network under one ``budget`` and return the
    network with its kernels, ready to run on NumPy arrays.

    ``model`` is a path to an ``.onnx`` file, its bytes or an ``onnx.ModelProto``;
    ``input_shapes`` (name -> shape) fixes dynamic input dimensions. The budget is
    shared as the module docstring says; the other arguments are ``tune()``'s. A
    network tuned here before with at least this budget returns at once; a killed
    run resumes from the records of every operator.

    >>> import evokernel as ek
    >>> from onnx import helper, TensorProto
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])
    >>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    >>> net = ek.tune_model(helper.make_model(graph), budget=3, input_shapes={"x": (2, 32)}, evaluator="local")
    >>> net.rows()[0]["operator"]
    'relu(shape=2x32,dtype=float32)'
    """
    network = import_onnx(model, input_shapes)
    kernels, failed, summary = tune_operators(
        network.operators(), target, budget, seed, name=network.name, retune=retune, evaluator=evaluator,
        strategy=strategy, records=records, threads=threads, cache_dir=cache_dir, progress=progress)
    shapes = {name: shape for name, (shape, _) in network.inputs.items()}
    return TunedModel(network, kernels, failed, shapes, summary)


def tune_operators(tasks: Mapping[str, tuple[Operator, int]], target="host", budget="10m", seed: int | None = None,
                   *, name: str = "network", retune: bool = False, evaluator="ray", strategy="ga", records="sqlite",
                   threads: int | None = None, cache_dir=None, progress=None) -> tuple[dict, dict, dict]:
    """Tune the operators of one network (``tasks``: key -> (operator, occurrences))
    under one ``budget``; returns ``(kernels, failed, summary)`` by operator key.
    What ``tune_model`` does once the graph is imported, for any front end (ONNX,
    PyTorch)."""
    target, budget = Target.parse(target), Budget.parse(budget)
    root, threads = resolve_cache_dir(cache_dir), threads or default_threads()
    search = create_strategy(strategy)
    key = model_key(tasks, target)
    if not retune:
        cached = _cached(root, key, budget, tasks, target, threads)
        if cached is not None:
            kernels, failed = cached
            return kernels, failed, {"budget": str(budget), "cached": True}
    ev = create_evaluator(evaluator)
    ev.check_target(target)
    db = open_records(records, root)
    display = ModelDisplay.create(progress, name, budget)
    base_seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
    started = time.monotonic()

    def start(operator: Operator, index: int) -> OperatorTuning:
        return OperatorTuning(operator, target, ev, db, root, search=search, seed=base_seed + index,
                              threads=threads, resume=not retune, warm_start=family_genomes(db, operator, target),
                              display=display.operator(operator.key))

    scheduler = TaskScheduler({k: count for k, (_, count) in tasks.items()},
                              {k: op for k, (op, _) in tasks.items()}, budget, start, display)
    try:
        scheduler.run()
        kernels, failed = scheduler.finish()
    finally:
        scheduler.close()
        display.close()
        ev.close()
        if db is not records:
            db.close()
    summary = {"budget": str(budget), "tuning": f"{time.monotonic() - started:.0f} s",
               "evaluations": sum(t.evaluations for t in scheduler.tasks.values()), "seed": base_seed}
    _remember(root, key, budget, tasks, target, failed)
    return kernels, failed, summary


def model_key(tasks: Mapping, target: Target) -> str:
    """What a tuned network is cached under: its distinct operators and the target."""
    text = json.dumps({"target": target.string, "operators": sorted(tasks)})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class Task:
    """One distinct operator of the network: how often it occurs and how its
    search went, slice by slice."""

    operator: Operator
    count: int
    job: OperatorTuning | None = None
    bests: list[float] = field(default_factory=list)  # the best time after each slice
    retired: bool = False

    @property
    def evaluations(self) -> int:
        return self.job.evaluations if self.job is not None else 0

    def rate(self) -> float:
        """Relative improvement of the last slice (of the first: over its second half);
        1 while nothing is known."""
        if not self.bests or self.bests[-1] == float("inf"):
            return 1.0
        if len(self.bests) > 1:
            before = self.bests[-2]
        elif self.job is not None:
            curve = [r.time for _, r in self.job.history if r.ok]
            before = min(curve[: max(1, len(curve) // 2)])
        else:
            return 1.0
        return max(0.0, (before - self.bests[-1]) / before) if before != float("inf") else 1.0

    def expected_gain(self) -> float:
        """Network seconds the next slice is expected to save."""
        best = self.bests[-1] if self.bests and self.bests[-1] != float("inf") else 1.0
        return self.count * best * max(self.rate(), MIN_GAIN)


class TaskScheduler:
    """Shares ``budget`` among operators (key -> occurrences in ``counts``); ``start``
    makes an operator's ``OperatorTuning``; ``display`` hears of every slice."""

    def __init__(self, counts: Mapping[str, int], operators: Mapping[str, Operator], budget: Budget,
                 start: Callable[[Operator, int], OperatorTuning], display=None):
        self.tasks = {k: Task(operators[k], counts[k]) for k in counts}
        self.budget, self.start, self.display = budget, start, display
        self.slice = _slice(budget, len(self.tasks))
        self.finish_seconds: list[float] = []

    def run(self) -> None:
        """Spend the budget: a first slice each, then the most promising, until the
        budget is spent (keeping time to finish) or every operator stopped improving."""
        clock = self.budget.clock()
        for index, task in enumerate(self.tasks.values()):
            if self._spent(clock):
                break
            task.job = self.start(task.operator, index)
            self._advance(task, clock)
        while not self._spent(clock):
            active = [t for t in self.tasks.values() if t.job is not None and not t.retired]
            if not active:
                log.info("every operator stopped improving; %s of the budget left", _left(clock))
                break
            self._advance(max(active, key=Task.expected_gain), clock)

    def _advance(self, task: Task, clock) -> None:
        before = task.evaluations
        try:
            task.job.advance(_clip(self.slice, clock))
        except EvokernelError as error:  # e.g. the operator cannot be built at all
            log.warning("%s: %s", task.operator.key, error)
            task.retired = True
        clock.evaluations += task.evaluations - before
        best = task.job.best
        task.bests.append(best if best is not None else float("inf"))
        if len(task.bests) > 1 and task.rate() < MIN_GAIN:
            task.retired = True
        if self.display is not None:
            self.display.slice(self, clock)

    def _spent(self, clock) -> bool:
        """Spent, or so nearly that finishing the operators would overrun it."""
        if clock.spent():
            return True
        if clock.deadline is None:
            return False
        per_task = sum(self.finish_seconds) / len(self.finish_seconds) if self.finish_seconds else 1.0
        unfinished = sum(t.job is not None for t in self.tasks.values())
        return time.monotonic() + per_task * unfinished >= clock.deadline

    def network_time(self) -> float:
        """The tuned operators' best times, weighted by occurrences (seconds)."""
        return sum(t.count * t.bests[-1] for t in self.tasks.values() if t.bests and t.bests[-1] != float("inf"))

    def finish(self) -> tuple[dict, dict]:
        """Each tuned operator's winner, retimed and stored: (kernels, failed) by key."""
        kernels, failed = {}, {}
        for key, task in self.tasks.items():
            if task.job is None:
                failed[key] = "the budget was spent before its turn"
                continue
            started = time.monotonic()
            try:
                kernels[key] = task.job.finish()
            except EvokernelError as error:
                failed[key] = str(error)
            self.finish_seconds.append(time.monotonic() - started)
        return kernels, failed

    def close(self) -> None:
        for task in self.tasks.values():
            if task.job is not None:
                task.job.close()


def _slice(budget: Budget, tasks: int) -> Budget:
    """One slice: the first round's share of the budget, divided among the operators."""
    if budget.seconds is not None:
        return Budget(seconds=max(MIN_SLICE_SECONDS, budget.seconds * FIRST_ROUND / max(1, tasks)))
    return Budget(evaluations=max(MIN_SLICE_EVALUATIONS, int(budget.evaluations * FIRST_ROUND / max(1, tasks))))


def _clip(piece: Budget, clock) -> Budget:
    """``piece``, no more than what is left of the running budget."""
    seconds, evaluations = piece.seconds, piece.evaluations
    if seconds is not None and clock.deadline is not None:
        seconds = max(0.5, min(seconds, clock.deadline - time.monotonic()))
    left = clock.remaining_evaluations()
    if evaluations is not None and left is not None:
        evaluations = max(1, min(evaluations, left))
    return Budget(seconds, evaluations)


def _left(clock) -> str:
    if clock.deadline is not None:
        return f"{max(0.0, clock.deadline - time.monotonic()):.0f} s"
    return f"{clock.remaining_evaluations()} evaluations"


# -- the cache of tuned networks ----------------------------------------------------------

def _cached(root, key: str, budget: Budget, tasks: Mapping, target: Target, threads: int):
    """(kernels, failed) of a network tuned here with at least ``budget``, or None."""
    path = root / "models" / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        stored = Budget.from_dict(data["budget"])
        failed = {str(k): str(v) for k, v in dict(data.get("failed") or {}).items()}
    except (OSError, ValueError, KeyError, TypeError, EvokernelError):
        return None
    if budget.exceeds(stored):
        return None
    kernels = {}
    for k, (op, _) in tasks.items():
        if k in failed:
            continue
        entry = cached_entry(root, op, target)
        if entry is None:
            return None
        kernels[k] = from_entry(root, op, entry, threads)
    return kernels, failed


def _remember(root, key: str, budget: Budget, tasks: Mapping, target: Target, failed: dict) -> None:
    data = {"budget": budget.to_dict(), "target": target.string, "operators": sorted(tasks), "failed": failed}
    write_atomic(subdir(root, "models") / f"{key}.json", json.dumps(data, indent=1).encode())

