"""The cost model and the "ga+model" search, on real records of real tuning runs:
the model ranks candidates it never saw better than chance, screening never
evaluates a genome twice, without records the search is the GA, damaged or foreign
rows do not stop it, and predictions reach the records and the kernel's report."""

from __future__ import annotations

import dataclasses
import math
import random
import sqlite3
import sys

import pytest
from _families import FAMILIES, prepared

import evokernel as ek
from evokernel import Budget
from evokernel.codegen import default_threads
from evokernel.genome import Genome, ScheduleSpace, StageGene, random_genome, templates
from evokernel.search import (Experience, GeneticSearch, GradientBoostingModel, Measured, ModelGuidedSearch,
                              SearchSettings, create_strategy, features, operator_of, rank_correlation, run_search)
from evokernel.store import MemoryRecords, Record, SQLiteRecords

OPS = dict(FAMILIES)
HOST = ek.Target.parse("host")
#: The operator the records come from: big enough that schedules differ by 100x.
RECORDED = ek.operators.matmul(128, 128, 128)
#: The rank correlation (Spearman) the model's out-of-fold predictions must exceed:
#: chance gives 0 +- 0.15 on these 44 rows. Measured on a 2-core VM shared with other
#: jobs (load 5-6): 0.17-0.63, mostly above 0.5; two timings of the same candidates
#: there agree to 0.39-0.59 only, which bounds what any model can reach.
FLOOR = 0.25


@pytest.fixture(scope="module")
def recorded(make_cache):
    """Records of a small real tuning run of ``RECORDED``: a first generation of 44
    (the templates and random genomes, diverse), then one of offspring."""
    db = MemoryRecords()
    ek.tune(RECORDED, budget=48, seed=0, evaluator="local", records=db, cache_dir=make_cache("model"),
            strategy=SearchSettings(mu=44, lambda_=4), progress=False)
    return db


def measured(records) -> list[Measured]:
    space = ScheduleSpace.of(RECORDED, HOST, default_threads())
    return [Measured(RECORDED, space, r.genome, r.result.time if r.result.ok else None)
            for r in records.trusted(RECORDED.key, HOST.string)]


def test_the_model_ranks_candidates_it_never_saw_better_than_chance(recorded):
    """Four folds: each candidate predicted by a model fitted on the other three
    (two shuffles, their correlations averaged)."""
    rows = measured(recorded)
    assert len(rows) == 48
    found = []
    for shuffle in range(2):
        order = list(range(len(rows)))
        random.Random(shuffle).shuffle(order)
        predicted = {}
        for fold in range(4):
            held = order[fold::4]
            model = GradientBoostingModel()
            model.fit([rows[i] for i in order if i not in held])
            for i, seconds in zip(held, model.predict(RECORDED, rows[0].space, [rows[i].genome for i in held])):
                predicted[i] = seconds
        pairs = [(predicted[i], rows[i].time) for i in predicted if rows[i].time is not None]
        assert len(pairs) >= 40
        assert all(p > 0 for p, _ in pairs), "predictions are seconds"
        found.append(rank_correlation(pairs))
    print(f"out-of-fold rank correlations {found}")
    assert sum(found) / len(found) > FLOOR


def test_screening_never_evaluates_a_genome_twice(recorded):
    """A tiny space (a few hundred genomes), the model on from the first generation
    (trained on the records of another shape and 8 of this one): every generation
    is screened from a pool eight times its size, and no genome is evaluated twice,
    nor one the records already hold for this operator."""
    op = OPS["matmul-tiny"]
    evaluator, context = prepared(op)
    try:
        drawn = {g.key: g for g in (random_genome(context.space, random.Random(i)) for i in range(8))}
        already = [Record.new(op.key, HOST.string, g, r, "before")
                   for g, r in zip(drawn.values(), evaluator.evaluate(list(drawn.values())))]
        past = [*recorded.trusted_family("matmul", HOST.string), *already]
        strategy = ModelGuidedSearch(SearchSettings(mu=4, lambda_=8), min_samples=16)
        history = run_search(strategy, context.space, evaluator.evaluate, Budget(evaluations=25).clock(),
                             random.Random(3), experience=Experience(op, HOST, lambda: past))
    finally:
        evaluator.close()
    keys = [g.key for g, _ in history]
    assert len(keys) == 25 and len(set(keys)) == 25
    assert not set(drawn) & set(keys)
    screened = [g for g, _ in history if strategy.prediction(g) is not None]
    assert len(screened) >= len(keys) - len(templates(context.space)), "the model screened all but the templates"
    assert len(strategy.fit_seconds) >= 2, "refitted as results arrived"


def test_without_records_it_is_the_ga_draw_for_draw():
    """No past evaluations: the same genomes as the GA in the first generation and,
    told the same results, in the second (the model is still off)."""
    op = OPS["matmul"]
    settings = SearchSettings(mu=10, lambda_=6)
    evaluator, context = prepared(op)
    try:
        ga, guided = GeneticSearch(settings), ModelGuidedSearch(settings)
        ga.start(context.space, random.Random(42))  # driven by hand, to tell both the same results
        guided.learn_from(Experience(op, HOST))
        guided.start(context.space, random.Random(42))
        first = ga.ask()
        assert guided.ask() == first and len(first) == max(10, len(templates(context.space)))
        results = evaluator.evaluate(first)
        ga.tell(first, results)
        guided.tell(first, results)
        assert guided.ask() == ga.ask()
        assert all(guided.prediction(g) is None for g in first)
    finally:
        evaluator.close()


def test_damaged_and_foreign_rows_do_not_stop_training(recorded, cache):
    """A database holding the real records plus a row whose genome is not JSON, one
    of unknown outcome, one from another machine, one of an operator that no longer
    rebuilds, one whose genome has another number of stages, one of another family
    and one of an operator with a custom key: the model trains on the real rows."""
    db = SQLiteRecords(cache / "records.sqlite3")
    for r in recorded.find():
        db.add(r)
    real = len(db.trusted_family("matmul", HOST.string))
    good = next(iter(recorded.find()))
    odd_stages = Genome(good.genome.stages[:2])
    for record in (
            Record.new("matmul(m=1,n=2,weird=3)", HOST.string, good.genome, good.result, "r"),
            Record.new("matmul(m=8,n=8,k=8,dtype=float32)", HOST.string, odd_stages, good.result, "r"),
            Record.new("relu(shape=8,dtype=float32)", HOST.string, good.genome, good.result, "r")):
        db.add(record)
    db.add(dataclasses.replace(good, machine="elsewhere"))
    raw = sqlite3.connect(cache / "records.sqlite3")
    raw.execute("UPDATE evaluations SET genome = '{not json' WHERE id = 1")
    raw.execute("UPDATE evaluations SET outcome = 'exploded' WHERE id = 2")
    raw.commit()
    raw.close()
    rows = db.trusted_family("matmul", HOST.string)
    assert len(rows) == real - 2 + 2  # two damaged rows skipped, two odd matmul rows read

    op = ek.operators.matmul(96, 128, 64)
    strategy = ModelGuidedSearch(SearchSettings(mu=4, lambda_=4), min_samples=16)
    strategy.learn_from(Experience(op, HOST, lambda: db.trusted_family("matmul", HOST.string)))
    strategy.start(ScheduleSpace.of(op, HOST, default_threads()), random.Random(0))
    first = strategy.ask()
    assert strategy.fit_seconds, "the model trained"
    predicted = [strategy.prediction(g) for g in first if strategy.prediction(g) is not None]
    assert predicted and all(p > 0 for p in predicted)
    db.close()


def test_a_store_that_fails_while_read_leaves_the_search_running(recorded):
    def failing():
        yield from recorded.trusted_family("matmul", HOST.string)
        raise sqlite3.DatabaseError("database disk image is malformed")

    op = ek.operators.matmul(96, 128, 64)
    strategy = ModelGuidedSearch(SearchSettings(mu=4, lambda_=4), min_samples=16)
    strategy.learn_from(Experience(op, HOST, failing))
    strategy.start(ScheduleSpace.of(op, HOST, default_threads()), random.Random(0))
    assert strategy.ask() and strategy.fit_seconds


def test_tune_records_predictions_and_reports_the_rank_correlation(recorded, cache):
    db = MemoryRecords()
    for r in recorded.find():
        db.add(r)
    op = ek.operators.matmul(64, 128, 96)
    strategy = ModelGuidedSearch(SearchSettings(mu=4, lambda_=4), min_samples=16)
    kernel = ek.tune(op, budget=20, seed=0, evaluator="local", strategy=strategy, records=db, cache_dir=cache,
                     progress=False)
    mine = list(db.find(op.key))
    assert len(mine) == 20
    with_prediction = [r for r in mine if r.predicted is not None]
    assert len(with_prediction) >= 2 and all(r.predicted > 0 for r in with_prediction)  # warm-start seeds come first, unscreened
    assert all(strategy.prediction(r.genome) == pytest.approx(r.predicted) for r in with_prediction)
    assert kernel.stats.predicted == sum(r.result.ok for r in with_prediction)
    assert kernel.stats.rank_correlation is not None and -1 <= kernel.stats.rank_correlation <= 1
    assert "cost model" in kernel.report() and "rank correlation" in kernel.report()
    assert with_prediction[0].row()["predicted_ms"] == pytest.approx(with_prediction[0].predicted * 1e3)


def test_an_older_database_gains_the_predicted_column(cache):
    """A database made before predictions were recorded opens, keeps its rows and
    records predictions from then on."""
    path = cache / "records.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(ek.store._records.SCHEMA)
    old.execute("INSERT INTO evaluations (operator, target, genome_key, genome, outcome, time, halide_version, "
                "evokernel_version, machine, run_id, created) VALUES ('relu(shape=8,dtype=float32)', 'host', 'k', "
                "?, 'ok', 0.001, 'h', 'e', 'm', 'r', 0)", (Genome((StageGene(),)).to_json(),))
    old.commit()
    old.close()
    db = SQLiteRecords(path)
    (row,) = db.find()
    assert row.predicted is None and row.result.time == 0.001
    db.add(Record.new("relu(shape=8,dtype=float32)", "host", Genome((StageGene(),)), row.result, "r2",
                      predicted=0.002))
    assert [r.predicted for r in db.find()] == [None, 0.002]
    db.close()
    again = SQLiteRecords(path)
    assert [r.predicted for r in again.find()] == [None, 0.002]
    again.close()


def test_features_and_keys():
    """Every built-in family's plans give finite features of one length; an
    operator rebuilds from its key, anything else does not."""
    for name, op in FAMILIES:
        space = ScheduleSpace.of(op, HOST, 2)
        rows = [features(op, space, random_genome(space, random.Random(i))) for i in range(3)]
        assert all(len(r) == len(rows[0]) and all(math.isfinite(v) for v in r) for r in rows), name
        assert operator_of(op.key) == op, name
    for key in ("matmul(m=1)", "nothing", "matmul(m=1,n=1,k=1,dtype=float32", "", "box_blur(h=3)"):
        assert operator_of(key) is None


def test_without_lightgbm_the_strategy_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # as if it were not installed
    with pytest.raises(ek.SearchSettingsError, match="lightgbm"):
        create_strategy("ga+model")
    with pytest.raises(ek.SearchSettingsError, match=r"evokernel\[model\]"):
        ek.tune(OPS["relu"], budget=2, evaluator="local", strategy="ga+model")
    assert isinstance(create_strategy("ga"), GeneticSearch), "the other strategies need no model"


@pytest.mark.slow
def test_the_model_transfers_across_shapes(make_cache):
    """Trained on a run of one shape, the model ranks another shape's candidates
    (a fresh run) better than chance (measured 0.4-0.6 on the shared 2-core VM)."""
    db = MemoryRecords()
    a, b = ek.operators.matmul(128, 128, 128), ek.operators.matmul(96, 160, 112)
    for i, op in enumerate((a, b)):
        ek.tune(op, budget=64, seed=i, evaluator="local", records=db, cache_dir=make_cache("transfer"),
                strategy=SearchSettings(mu=32, lambda_=8), progress=False)
    space = {op.key: ScheduleSpace.of(op, HOST, default_threads()) for op in (a, b)}
    rows = {op.key: [Measured(op, space[op.key], r.genome, r.result.time if r.result.ok else None)
                     for r in db.trusted(op.key, HOST.string)] for op in (a, b)}
    model = GradientBoostingModel()
    model.fit(rows[a.key])
    predicted = model.predict(b, space[b.key], [m.genome for m in rows[b.key]])
    assert rank_correlation([(p, m.time) for p, m in zip(predicted, rows[b.key]) if m.time]) > FLOOR
