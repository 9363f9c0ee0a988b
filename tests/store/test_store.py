"""Records, resume, kernel cache and bundles, exercised as a user would: real
tuning runs in subprocesses, SIGKILL mid-run, concurrent processes, damaged files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _families import assert_close, fresh_inputs

import evokernel as ek
from evokernel.errors import CacheError, NotTunedError
from evokernel.store import KernelCache
from evokernel.store import machine_fingerprint

TUNE_SCRIPT = textwrap.dedent("""
    import sys, evokernel as ek
    op = ek.operators.matmul(*map(int, sys.argv[1:4]))
    budget = int(sys.argv[4])
    evaluator = {"default": {}}.get(sys.argv[6], {"evaluator": sys.argv[6]})
    kernel = ek.tune(op, budget=budget, seed=int(sys.argv[5]), **evaluator)
    print(f"ray={'ray' in sys.modules}")
""")


def tune_in_subprocess(cache: Path, m, n, k, budget, seed=0, wait=True, evaluator="local"):
    """``evaluator="default"`` calls tune() without one (its default is Ray)."""
    env = {**os.environ, "EVOKERNEL_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-c", TUNE_SCRIPT, str(m), str(n), str(k), str(budget), str(seed), evaluator]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return dict(line.split("=", 1) for line in out.split())


def rows(cache: Path, key: str | None = None) -> list[tuple]:
    """Recorded (operator, genome key, outcome) rows; OperationalError before the
    database or its table exists (opened read-only: a test never creates it)."""
    db = sqlite3.connect(f"file:{cache / 'records.sqlite3'}?mode=ro", uri=True)
    try:
        query = "SELECT operator, genome_key, outcome FROM evaluations"
        return db.execute(query + (" WHERE operator = ?" if key else ""), (key,) if key else ()).fetchall()
    finally:
        db.close()


def test_killed_run_resumes_without_redoing_any_evaluation(cache):
    """SIGKILL a tuning run mid-search; the database opens cleanly, and the rerun
    evaluates no finished candidate a second time and ends with a correct kernel."""
    op = ek.operators.matmul(48, 40, 32)
    proc = tune_in_subprocess(cache, 48, 40, 32, budget=40, wait=False)
    while proc.poll() is None:  # the run is killed after 10 rows, long before its 40
        try:
            if len(rows(cache)) >= 10:
                break
        except sqlite3.OperationalError:  # the run has not created its table yet
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    db = sqlite3.connect(cache / "records.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    before = rows(cache, op.key)
    assert 10 <= len(before) < 40

    kernel = ek.tune(op, budget=40, seed=0, evaluator="local", cache_dir=cache)
    after = rows(cache, op.key)
    keys = [k for _, k, _ in after]
    assert len(keys) == len(set(keys)), "a finished candidate was evaluated twice"
    assert len(after) - len(before) < 40, "the rerun reused nothing"
    inputs = fresh_inputs(op, 7)
    assert_close(op, kernel(*inputs), op.reference(*inputs))


def test_two_processes_tune_into_one_cache_and_keep_all_records(cache):
    ops = [ek.operators.matmul(40, 24, 16), ek.operators.matmul(24, 40, 20)]
    procs = [tune_in_subprocess(cache, 40, 24, 16, 14, wait=False),
             tune_in_subprocess(cache, 24, 40, 20, 14, wait=False)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    for op in ops:
        found = rows(cache, op.key)
        assert len(found) == 14
        assert len({k for _, k, _ in found}) == 14
        assert ek.load(op, cache_dir=cache) is not None


def test_tuned_operator_returns_at_once_in_a_fresh_process(cache):
    """At once: the second run starts no evaluator (not even the default, Ray),
    evaluates nothing and compiles nothing."""
    tune_in_subprocess(cache, 32, 32, 32, budget=6)
    count = len(rows(cache))
    native = sorted(p.name for p in (cache / "native").iterdir())
    again = tune_in_subprocess(cache, 32, 32, 32, budget=6, evaluator="default")
    assert again["ray"] == "False", "the cached kernel should not start Ray"
    assert len(rows(cache)) == count, "the cached kernel should not evaluate anything"
    assert sorted(p.name for p in (cache / "native").iterdir()) == native, "nothing compiled or linked"


@pytest.mark.parametrize("column, value", [("machine", "another-machine"),
                                           ("evokernel_version", "0.1.0+schedules.1")])
def test_records_of_another_machine_or_schedule_encoding_are_kept_but_not_trusted(cache, column, value):
    """Timings of another machine, or of genomes that decoded to other schedules
    under an older encoding, are never reused."""
    op = ek.operators.relu((4, 33))
    ek.tune(op, budget=3, seed=0, evaluator="local", cache_dir=cache)
    db = sqlite3.connect(cache / "records.sqlite3")
    db.execute(f"UPDATE evaluations SET {column} = ?", (value,))
    db.commit()
    db.close()
    ek.tune(op, budget=4, seed=0, evaluator="local", cache_dir=cache)  # nothing trusted to resume from
    found = ek.records(op, cache_dir=cache)
    assert [r["trusted"] for r in found] == [False] * 3 + [True] * 4


def test_a_larger_budget_tunes_on_from_the_records(cache):
    op = ek.operators.relu((3, 70))
    first = ek.tune(op, budget=4, seed=0, evaluator="local", cache_dir=cache)
    assert len(rows(cache, op.key)) == 4
    assert ek.tune(op, budget=4, evaluator="local", cache_dir=cache).genome == first.genome
    ek.tune(op, budget=8, seed=1, evaluator="local", cache_dir=cache)
    assert 4 < len(rows(cache, op.key)) <= 8


def entry_of(op, cache):
    entry = KernelCache(cache).lookup(op.key, ek.Target.parse("host").string, machine_fingerprint())
    assert entry is not None
    return entry


def flip_byte(path: Path, offset: int = 100) -> None:
    """Damage a file on disk. Written as a new file: rewriting in place a library
    this very process has mapped would crash the test, not test the cache."""
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    tmp = path.with_suffix(".damaged")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)


@pytest.mark.parametrize("damaged", ["kernel.o", "kernel.so"])
def test_damaged_artifact_is_detected_and_rebuilt(cache, damaged):
    op = ek.operators.matmul(16, 24, 8)
    ek.tune(op, budget=3, seed=0, evaluator="local", cache_dir=cache)
    entry = entry_of(op, cache)
    flip_byte(entry.object_path if damaged == "kernel.o" else entry.library_path)
    assert (entry.verified_object() is None) == (damaged == "kernel.o")
    kernel = ek.load(op, cache_dir=cache)
    inputs = fresh_inputs(op, 3)
    assert_close(op, kernel(*inputs), op.reference(*inputs))
    repaired = entry_of(op, cache)
    assert repaired.verified_object() is not None and repaired.library_intact()


def test_missing_artifact_is_rebuilt(cache):
    op = ek.operators.relu(40)
    ek.tune(op, budget=2, seed=0, evaluator="local", cache_dir=cache)
    (entry_of(op, cache).directory / "kernel.o").unlink()
    x = np.linspace(-1, 1, 40, dtype=np.float32)
    assert np.array_equal(ek.load(op, cache_dir=cache)(x), np.maximum(x, 0))


def test_cache_writable_by_others_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(CacheError, match="writable by other users"):
        ek.tune(ek.operators.relu(8), budget=2, evaluator="local", cache_dir=shared)


def test_artifact_writable_by_others_is_refused(cache):
    op = ek.operators.relu(24)
    ek.tune(op, budget=2, seed=0, evaluator="local", cache_dir=cache)
    (entry_of(op, cache).directory / "kernel.o").chmod(0o666)
    with pytest.raises(CacheError, match="writable by other users"):
        ek.load(op, cache_dir=cache)


def test_bundle_round_trip_in_a_fresh_process(cache, tmp_path):
    op = ek.operators.conv2d(1, 3, 9, 9, 4, 3, pad=1, bias=True, activation="relu")
    kernel = ek.tune(op, budget=3, seed=0, evaluator="local", cache_dir=cache)
    path = kernel.save(tmp_path / "conv.ekb")
    inputs = fresh_inputs(op, 5)
    np.save(tmp_path / "expected.npy", kernel(*inputs))
    for i, array in enumerate(inputs):
        np.save(tmp_path / f"in{i}.npy", array)
    script = textwrap.dedent(f"""
        import numpy as np, evokernel as ek
        kernel = ek.load_kernel({str(path)!r}, keys=[{ek.store.public_key(cache)!r}])  # another cache: its key
        inputs = [np.load({str(tmp_path)!r} + f"/in{{i}}.npy") for i in range({len(inputs)})]
        assert np.array_equal(kernel(*inputs), np.load({str(tmp_path / 'expected.npy')!r}))
        print(kernel.signature.key)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EVOKERNEL_CACHE_DIR": str(tmp_path / "other-cache")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == op.key


def test_custom_operator_bundle_loads_without_its_code(cache, tmp_path):
    import halide as hl

    def double(params):
        (x,) = params
        i = hl.Var("i")
        out = hl.Func("out")
        out[i] = x[i] * 2
        return out

    op = ek.operators.custom("double", [("x", (50,))], (50,), double, lambda x: x * 2)
    path = ek.tune(op, budget=2, seed=0, evaluator="local", cache_dir=cache).save(tmp_path / "double.ekb")
    loaded = ek.load_kernel(path, cache_dir=cache)
    assert loaded.operator is None and loaded.signature.key == op.key
    x = np.arange(50, dtype=np.float32)
    assert np.array_equal(loaded(x), 2 * x)


def rewrite_member(path: Path, name: str, change) -> None:
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    files[name] = change(files[name])
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)


def test_tampered_or_broken_bundles_are_refused(cache, tmp_path):
    kernel = ek.tune(ek.operators.relu(16), budget=2, seed=0, evaluator="local", cache_dir=cache)
    good = kernel.save(tmp_path / "k.ekb")
    object_edit = tmp_path / "object.ekb"
    object_edit.write_bytes(good.read_bytes())
    rewrite_member(object_edit, "kernel.o", lambda b: b[:-1] + bytes([b[-1] ^ 1]))
    with pytest.raises(CacheError, match="kernel.o does not match its checksum"):
        ek.load_kernel(object_edit, cache_dir=cache)
    meta_edit = tmp_path / "meta.ekb"
    meta_edit.write_bytes(good.read_bytes())
    rewrite_member(meta_edit, "meta.json", lambda b: b.replace(b'"schedule"', b'"schedul3"'))
    with pytest.raises(CacheError, match="meta.json does not match"):
        ek.load_kernel(meta_edit, cache_dir=cache)
    garbage = tmp_path / "garbage.ekb"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(CacheError, match="not a readable evokernel bundle"):
        ek.load_kernel(garbage, cache_dir=cache)
    with pytest.raises(CacheError, match="no kernel bundle"):
        ek.load_kernel(tmp_path / "missing.ekb", cache_dir=cache)


def test_load_before_tuning_says_not_tuned(cache):
    with pytest.raises(NotTunedError, match="has not been tuned"):
        ek.load(ek.operators.matmul(5, 6, 7), cache_dir=cache)


def test_a_records_file_that_is_not_a_database_is_set_aside_and_tuning_goes_on(cache, caplog):
    (cache / "records.sqlite3").write_bytes(b"this is not SQLite" * 100)
    kernel = ek.tune(ek.operators.relu(8), budget=2, evaluator="local", cache_dir=cache)
    (aside,) = cache.glob("records.sqlite3.damaged-*")
    assert aside.read_bytes() == b"this is not SQLite" * 100
    assert str(aside) in caplog.text
    assert len(rows(cache, kernel.signature.key)) == 2


def test_records_rows_are_flat_and_trusted(cache):
    op = ek.operators.relu((2, 33))
    ek.tune(op, budget=3, seed=0, evaluator="local", cache_dir=cache)
    found = ek.records(op, "host", cache_dir=cache)
    assert len(found) == 3
    row = found[0]
    assert row["operator"] == op.key and row["trusted"] is True
    assert {"outcome", "time_ms", "genome", "machine", "halide_version", "created"} <= set(row)
    assert json.loads(row["genome"])["stages"]
    assert ek.records(ek.operators.relu(999), cache_dir=cache) == []


def test_retune_searches_afresh_and_keeps_the_old_records(cache):
    op = ek.operators.relu((5, 40))
    ek.tune(op, budget=3, seed=0, evaluator="local", cache_dir=cache)
    ek.tune(op, budget=3, seed=0, evaluator="local", cache_dir=cache, retune=True)
    found = rows(cache, op.key)
    assert len(found) == 6, "retune measures again and appends; nothing is lost"
