"""A damaged store heals instead of blocking the user: damage is moved aside with a
warning that says where, the rest is kept, and work goes on. Each test damages a
copy of one tuned cache, as a crash, a full disk or a careless hand would."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

import evokernel as ek
from evokernel.store import KernelCache, SQLiteRecords, machine_fingerprint

OP = ek.operators.relu((4, 40))
X = np.linspace(-1, 1, 160, dtype=np.float32).reshape(4, 40)


@pytest.fixture(scope="module")
def tuned_cache(tuned):
    return tuned(OP).cache_dir


@pytest.fixture
def copy(tuned_cache, cache):
    """A copy of the tuned cache, to damage."""
    shutil.copytree(tuned_cache, cache, dirs_exist_ok=True, ignore=shutil.ignore_patterns("scratch"))
    return cache


def entry(root: Path):
    found = KernelCache(root).lookup(OP.key, ek.Target.parse("host").string, machine_fingerprint())
    assert found is not None
    return found


def assert_runs(kernel) -> None:
    assert np.array_equal(kernel(X), np.maximum(X, 0))


def in_time(call, seconds: float = 60.0):
    """``call()``, failing (not hanging) if it takes longer than ``seconds``."""
    box = {}
    worker = threading.Thread(target=lambda: box.update(value=call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    return box["value"]


def fill(path: Path, rows: int) -> None:
    """``rows`` copies of a recorded evaluation of OP, in one transaction."""
    db = sqlite3.connect(path)
    columns = ", ".join([d[1] for d in db.execute("PRAGMA table_info(evaluations)")][1:])
    (first,) = db.execute("SELECT min(id) FROM evaluations WHERE operator = ?", (OP.key,)).fetchone()
    with db:
        for _ in range(rows):
            db.execute(f"INSERT INTO evaluations ({columns}) SELECT {columns} FROM evaluations WHERE id = {first}")
    db.close()


def damage_a_table_page(path: Path) -> None:
    """Overwrite one leaf page of the evaluations table (from the middle) with garbage."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    data = bytearray(path.read_bytes())
    leaves = [i for i in range(1, len(data) // size) if data[i * size] == 0x0D]  # table b-tree leaf pages
    victim = leaves[len(leaves) // 2] * size
    data[victim:victim + size] = b"\xa5" * size
    path.write_bytes(bytes(data))


def test_a_damaged_page_sets_the_database_aside_and_keeps_the_rows_that_read(copy, caplog):
    path = copy / "records.sqlite3"
    fill(path, 300)
    before = len(ek.records(cache_dir=copy))
    damage_a_table_page(path)
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):  # what SQLite itself says of it
        db = sqlite3.connect(path)
        db.execute("SELECT * FROM evaluations").fetchall()
    db.close()

    found = ek.records(cache_dir=copy)  # no error: healed
    (aside,) = copy.glob("records.sqlite3.damaged-*")
    assert str(aside) in caplog.text and "malformed" in caplog.text
    assert before - 100 < len(found) < before, "one page of rows lost, the rest kept"
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()


def test_rows_that_do_not_parse_are_skipped_counted_and_the_tune_goes_on(copy, caplog):
    db = sqlite3.connect(copy / "records.sqlite3")
    good = db.execute("SELECT id FROM evaluations WHERE operator = ?", (OP.key,)).fetchall()
    assert len(good) == 2
    columns = [d[1] for d in db.execute("PRAGMA table_info(evaluations)")][1:]
    insert = (f"INSERT INTO evaluations ({', '.join(columns)}) SELECT {', '.join(columns)} FROM evaluations "
              f"WHERE id = {good[0][0]}")
    for change in ("time = NULL", "outcome = 'exploded'", "genome = '{not json'", "genome = '[]'"):
        db.execute(insert)
        db.execute(f"UPDATE evaluations SET {change}, genome_key = 'bad' || id WHERE id = last_insert_rowid()")
    db.commit()
    db.close()

    records = SQLiteRecords(copy / "records.sqlite3")
    assert len(records.trusted(OP.key, ek.Target.parse("host").string)) == 2
    assert records.skipped == 4
    records.close()
    assert "skipped 4 rows" in caplog.text and str(copy / "records.sqlite3") in caplog.text
    kernel = ek.tune(OP, budget=4, seed=1, evaluator="local", cache_dir=copy, progress=False)  # resumes
    assert_runs(kernel)
    assert len(ek.records(OP, cache_dir=copy)) == 4


def test_a_fifo_in_place_of_the_library_neither_hangs_nor_stops_the_load(copy, caplog):
    library = entry(copy).library_path
    library.unlink()
    os.mkfifo(library)
    kernel = in_time(lambda: ek.load(OP, cache_dir=copy))
    assert_runs(kernel)
    (aside,) = library.parent.glob(library.name + ".damaged-*")
    assert str(aside) in caplog.text and "not a regular file" in caplog.text
    assert entry(copy).library_intact(), "relinked"


def test_a_fifo_in_place_of_the_object_is_set_aside_and_rebuilt_from_the_genome(copy):
    obj = entry(copy).object_path
    obj.unlink()
    os.mkfifo(obj)
    assert_runs(in_time(lambda: ek.load(OP, cache_dir=copy)))
    assert list(obj.parent.glob("kernel.o.damaged-*")) and entry(copy).verified_object() is not None


def test_a_directory_in_place_of_the_metadata_is_set_aside_and_the_operator_tuned_again(copy, caplog):
    meta = entry(copy).directory / "meta.json"
    meta.unlink()
    meta.mkdir()
    with pytest.raises(ek.NotTunedError, match="holds no usable metadata"):
        ek.load(OP, cache_dir=copy)
    assert str(meta) in caplog.text
    kernel = ek.tune(OP, budget=2, seed=0, evaluator="local", cache_dir=copy, progress=False)
    assert_runs(kernel)
    assert len(ek.records(OP, cache_dir=copy)) == 2, "the records were kept: nothing evaluated twice"
    assert_runs(ek.load(OP, cache_dir=copy))


def test_a_file_in_place_of_an_entry_directory_is_set_aside(copy):
    directory = entry(copy).directory
    shutil.rmtree(directory)
    directory.write_bytes(b"in the way")
    with pytest.raises(ek.NotTunedError):
        ek.load(OP, cache_dir=copy)
    assert [p.read_bytes() for p in directory.parent.glob(directory.name + ".damaged-*")] == [b"in the way"]


def test_a_changed_runtime_library_is_set_aside_and_rebuilt(copy, caplog):
    (runtime,) = (copy / "native").glob("libevokernel_runtime_*.so")
    data = bytearray(runtime.read_bytes())
    data[len(data) // 2] ^= 0xFF
    runtime.unlink()  # a new file: the one this process may have loaded is left alone
    runtime.write_bytes(bytes(data))
    assert_runs(ek.load(OP, cache_dir=copy))
    (aside,) = runtime.parent.glob(runtime.name + ".damaged-*")
    assert aside.read_bytes() == bytes(data)
    assert "does not match the checksum" in caplog.text and str(aside) in caplog.text
    assert runtime.read_bytes() != bytes(data)


@pytest.mark.slow
def test_a_runtime_library_that_is_a_fifo_is_set_aside_and_rebuilt(copy):
    (runtime,) = (copy / "native").glob("libevokernel_runtime_*.so")
    runtime.unlink()
    os.mkfifo(runtime)
    assert_runs(in_time(lambda: ek.load(OP, cache_dir=copy)))
    assert runtime.is_file() and list(runtime.parent.glob(runtime.name + ".damaged-*"))
