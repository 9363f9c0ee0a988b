"""The records behind their interface: the SQLite database and the in-memory store
keep, find and trust the same evaluations; a store is chosen by name or passed in."""

from __future__ import annotations

import dataclasses

import pytest

import evokernel as ek
from evokernel.genome import Genome, StageGene
from evokernel.store import MemoryRecords, Record, SQLiteRecords, open_records


def _genome(i: int) -> Genome:
    return Genome((StageGene(vector=0, width=i + 1),))


def _record(i: int, operator="relu(shape=8,dtype=float32)", target="host", **changes) -> Record:
    result = ek.Result(_genome(i).key, ek.Outcome.OK if i % 2 == 0 else ek.Outcome.WRONG_RESULT,
                       time=1e-3 * (i + 1) if i % 2 == 0 else None, samples=3, max_error=float("inf"))
    return dataclasses.replace(Record.new(operator, target, _genome(i), result, "run"), **changes)


@pytest.fixture(params=["sqlite", "memory"])
def store(request, cache):
    db = open_records(request.param, cache)
    yield db
    db.close()


def test_what_is_added_is_found_oldest_first(store):
    for i in range(4):
        store.add(_record(i))
    store.add(_record(9, operator="relu(shape=9,dtype=float32)"))
    store.add(_record(8, target="arm-64-linux"))
    found = list(store.find("relu(shape=8,dtype=float32)", "host"))
    assert [r.genome for r in found] == [_genome(i) for i in range(4)]
    assert [r.result.outcome for r in found] == [ek.Outcome.OK, ek.Outcome.WRONG_RESULT] * 2
    assert found[0].result.time == pytest.approx(1e-3) and found[1].result.time is None
    assert len(list(store.find())) == 6 and len(list(store.find(target="arm-64-linux"))) == 1


def test_only_evaluations_made_here_with_these_versions_are_trusted(store):
    store.add(_record(0))
    store.add(_record(2, machine="elsewhere"))
    store.add(_record(4, halide_version="19.0.0"))
    store.add(_record(6, evokernel_version="0.1.0+schedules.1"))
    trusted = store.trusted("relu(shape=8,dtype=float32)", "host")
    assert [r.genome for r in trusted] == [_genome(0)]
    assert len(list(store.find("relu(shape=8,dtype=float32)"))) == 4, "the others are kept, not trusted"


def test_sqlite_records_survive_reopening(cache):
    db = SQLiteRecords(cache / "records.sqlite3")
    db.add(_record(0))
    db.close()
    again = open_records("sqlite", cache)
    assert [r.genome for r in again.find()] == [_genome(0)]
    again.close()


def test_an_instance_is_used_as_it_is_and_a_bad_name_is_named(cache):
    mine = MemoryRecords()
    assert open_records(mine, cache) is mine
    for bad in ("postgres", None, 3):
        with pytest.raises(ek.CacheError, match="unknown records store"):
            open_records(bad, cache)
