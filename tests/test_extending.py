"""Extension points, plugged in from outside the package as a user would: a search
strategy, an evaluator made of one's own builder and runner, a records store, a
strategy and an exporter registered by name, and a built-in operator family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import halide as hl
import numpy as np
import pytest
from _families import assert_close, fresh_inputs

import evokernel as ek
from evokernel.codegen import build
from evokernel.evaluators import Builder, Evaluator, LocalBuilder, LocalRunner, Runner
from evokernel.genome import templates
from evokernel.operators import Algorithm, Operator, Stage, TensorSpec, from_dict, input_param
from evokernel.search import STRATEGIES, SearchStrategy, register_strategy
from evokernel.store import MemoryRecords, Record, Records

OP = ek.operators.matmul(24, 40, 16)


class TemplatesThenNothing(SearchStrategy):
    """Asks for the space's templates two at a time, then has nothing new."""

    def __init__(self):
        self.told: list[tuple[str, str]] = []

    def start(self, space, rng, seeds=()):
        super().start(space, rng, seeds)
        self.waiting = list(templates(space))

    def ask(self):
        batch, self.waiting = self.waiting[:2], self.waiting[2:]
        return batch

    def tell(self, genomes, results):
        self.told += [(g.key, r.outcome.value) for g, r in zip(genomes, results)]


def test_a_strategy_object_drives_the_search(cache):
    strategy = TemplatesThenNothing()
    kernel = ek.tune(OP, budget=50, seed=0, strategy=strategy, evaluator="local", cache_dir=cache)
    rows = ek.records(OP, cache_dir=cache)
    assert [r["genome_key"] for r in rows] == [key for key, _ in strategy.told]
    assert [r["outcome"] for r in rows] == [outcome for _, outcome in strategy.told]
    assert len(rows) == len(templates(strategy.space)) < 50  # it stopped when the strategy had nothing new
    arrays = fresh_inputs(OP, 3)
    assert_close(OP, kernel(*arrays), OP.reference(*arrays))


def test_a_strategy_registered_by_name_is_a_string_choice(cache):
    @register_strategy("templates-only")
    class Registered(TemplatesThenNothing):
        def __init__(self, settings=None):
            super().__init__()

    try:
        kernel = ek.tune(OP, budget=50, seed=0, strategy="templates-only", evaluator="local", cache_dir=cache)
        assert len(kernel.stats.history) == len(templates(_space(OP)))
        with pytest.raises(ek.SearchSettingsError, match="templates-only"):
            ek.tune(OP, budget=2, strategy="no-such-strategy", cache_dir=cache)
    finally:
        STRATEGIES.pop("templates-only")


def _space(op):
    from evokernel.codegen import default_threads
    from evokernel.genome import ScheduleSpace

    return ScheduleSpace.of(op, ek.Target.parse("host"), default_threads())


def test_a_strategy_that_is_not_one_is_refused_by_name():
    with pytest.raises(ek.SearchSettingsError, match="SearchStrategy.*got object"):
        ek.tune(OP, budget=2, strategy=object())


class CountingBuilder(Builder):
    """Builds in this process with evokernel's compiler, two at a time, counting."""

    parallelism = 2

    def __init__(self):
        self.batches: list[int] = []

    def build(self, genomes):
        self.batches.append(len(genomes))
        out = []
        for genome in genomes:
            try:
                out.append(build(self.context.operator, self.context.space, genome, self.context.target))
            except ek.BuildError as error:
                out.append(ek.Result(genome.key, ek.Outcome.COMPILE_ERROR, message=str(error)))
        return out


class RecordingRunner(Runner):
    """Times with evokernel's killable local runner and remembers each schedule it timed."""

    def __init__(self):
        self.inner, self.timed = LocalRunner(), []

    def prepare(self, context):
        super().prepare(context)
        self.inner.prepare(context)

    def measure(self, artifact, best, timeout, protocol):
        self.timed.append(artifact.schedule)
        return self.inner.measure(artifact, best, timeout, protocol)

    def close(self):
        self.inner.close()


def test_an_evaluator_of_ones_own_builder_and_runner(cache):
    builder, runner = CountingBuilder(), RecordingRunner()
    kernel = ek.tune(OP, budget=7, seed=1, evaluator=Evaluator(builder, runner), cache_dir=cache)
    built = sum(builder.batches)
    assert max(builder.batches) <= 2  # parallelism 2, one build per slot between timings
    assert built >= 7 + 1  # every candidate and the unscheduled baseline, plus any rebuild of the winner
    assert kernel.schedule in runner.timed
    assert len(runner.timed) >= 1 + 7  # the baseline, each candidate that built, the finalists again
    arrays = fresh_inputs(OP, 4)
    assert_close(OP, kernel(*arrays), OP.reference(*arrays))


def test_an_evaluator_needs_a_builder_and_a_runner():
    with pytest.raises(TypeError, match="Builder and Runner"):
        Evaluator(LocalRunner(), LocalBuilder())


class ListRecords(Records):
    """A store of one's own: a list, and a note of every query."""

    def __init__(self):
        self.rows: list[Record] = []
        self.queries: list[tuple] = []

    def add(self, record):
        self.rows.append(record)

    def find(self, operator=None, target=None):
        self.queries.append((operator, target))
        return iter([r for r in self.rows if operator in (None, r.operator) and target in (None, r.target)])


def test_a_records_store_of_ones_own_is_written_and_resumed_from(cache):
    db = ListRecords()
    first = ek.tune(OP, budget=5, seed=2, evaluator="local", records=db, cache_dir=cache)
    assert len(db.rows) == 5 and all(r.operator == OP.key and r.trusted for r in db.rows)
    assert not ek.records(OP, cache_dir=cache), "the default database was not written"
    again = ek.tune(OP, budget=8, seed=2, evaluator="local", records=db, cache_dir=cache)
    keys = [r.genome.key for r in db.rows]
    assert len(keys) == len(set(keys)) == 8, "the second run reused the first run's five evaluations"
    assert (OP.key, first.target.string) in db.queries
    best_first = min(r.result.time for r in db.rows[:5] if r.result.ok)
    assert again.stats.history[0] == best_first, "the resumed run did not start from the best recorded genome"


def test_memory_records_by_name_leave_the_database_alone(cache):
    kernel = ek.tune(OP, budget=3, seed=0, evaluator="local", records="memory", cache_dir=cache)
    assert len(kernel.stats.history) == 3 and not ek.records(OP, cache_dir=cache)
    with pytest.raises(ek.ArgumentError, match="records must be one of 'sqlite', 'memory'.*'postgres'"):
        ek.tune(OP, budget=3, records="postgres", cache_dir=cache, retune=True)
    assert isinstance(MemoryRecords(), Records)


def test_an_exporter_registered_by_name_is_an_export_format(cache, tmp_path, capsys, monkeypatch):
    from evokernel import cli
    from evokernel.export import EXPORTERS

    def export_npz(kernels, path, **options):
        path = tmp_path / path
        np.savez(path, **{k.signature.key: np.frombuffer(k.object_bytes, np.uint8) for k in kernels})
        return path

    kernel = ek.tune(OP, budget=2, seed=0, evaluator="local", cache_dir=cache)
    EXPORTERS["npz"] = export_npz
    try:
        monkeypatch.setenv("EVOKERNEL_CACHE_DIR", str(cache))
        assert cli.main(["export", "npz", "objects.npz", "--operator", OP.key]) == 0
    finally:
        del EXPORTERS["npz"]
    stored = np.load(tmp_path / "objects.npz")
    assert stored[OP.key].tobytes() == kernel.object_bytes
    assert "objects.npz" in capsys.readouterr().out


@dataclass(frozen=True)
class Scale(Operator):
    """An operator family defined outside the package: ``y = 2 x``."""

    family: ClassVar[str] = "scale_for_test"

    n: int

    @property
    def inputs(self):
        return (TensorSpec("x", (self.n,), "float32"),)

    @property
    def output(self):
        return TensorSpec("y", (self.n,), "float32")

    @property
    def flops(self):
        return self.n

    def algorithm(self):
        x = input_param(self.inputs[0])
        i, y = hl.Var("i"), hl.Func("y")
        y[i] = x[i] * hl.f32(2)
        return Algorithm(inputs=[x], stages=[Stage(y, (self.n,))], output_shape=(self.n,))

    def reference(self, x):
        return 2 * x


def test_an_operator_class_registers_its_family_when_defined(cache, tmp_path):
    op = Scale(64)
    assert from_dict(op.to_dict()) == op
    kernel = ek.tune(op, budget=2, seed=0, evaluator="local", cache_dir=cache)
    loaded = ek.load_kernel(kernel.save(tmp_path / "scale.ekb"), cache_dir=cache)
    assert loaded.operator == op, "the bundle's operator was rebuilt from its registered family"
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    assert np.array_equal(loaded(x), 2 * x)
    with pytest.raises(TypeError, match="family 'scale_for_test' is taken"):
        type("Other", (Scale,), {"family": "scale_for_test"})
