"""``tune_model`` end to end on small ONNX networks (real Halide builds, the local
evaluator, SQLite records), checked against onnxruntime running the same model."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from _graphs import small_cnn

import evokernel as ek
from evokernel.tuner import family_genomes
from evokernel.tuner import OperatorTuning, adapt

SHAPE = (2, 4, 12, 12)


def onnxruntime_output(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def tuned_cnn(tmp_path_factory):
    """small_cnn tuned once with 2 evaluations per distinct operator (7 of them)."""
    root = tmp_path_factory.mktemp("cache")
    net = ek.tune_model(small_cnn(), budget=14, input_shapes={"x": SHAPE}, seed=3, evaluator="local",
                        cache_dir=root, progress=False)
    return net, root


def test_the_tuned_network_equals_onnxruntime(tuned_cnn):
    net, _ = tuned_cnn
    x = np.random.default_rng(7).random(SHAPE, dtype=np.float32)
    np.testing.assert_allclose(net(x), onnxruntime_output(small_cnn(), x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(net(x=x), net(x))


def test_a_result_is_not_overwritten_by_the_next_run(tuned_cnn):
    """The steps reuse their buffers from run to run; what a call returns is the caller's."""
    net, _ = tuned_cnn
    rng = np.random.default_rng(8)
    a, b = rng.random(SHAPE, dtype=np.float32), rng.random(SHAPE, dtype=np.float32)
    first = net(a)
    kept = first.copy()
    net(b)
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_allclose(net(a), kept, rtol=1e-6)


def test_every_distinct_operator_gets_a_kernel_and_the_report_says_so(tuned_cnn):
    net, _ = tuned_cnn
    assert len(net.kernels) + len(net.failed) == 7
    assert not net.failed
    report = net.report()
    assert "7 of 9 nodes on tuned kernels" in report
    assert "no evokernel operator computes Sigmoid" in report and "conv1+relu1" in report
    assert net.report("markdown").count("\n|") >= 10


def test_a_second_call_with_the_same_budget_returns_at_once(tuned_cnn):
    net, root = tuned_cnn
    started = time.monotonic()
    again = ek.tune_model(small_cnn(), budget=14, input_shapes={"x": SHAPE}, evaluator="local", cache_dir=root,
                          progress=False)
    assert again.summary.get("cached") is True
    assert time.monotonic() - started < 10  # nothing built or timed: no worker, no compiler
    assert {k.genome for k in again.kernels} == {k.genome for k in net.kernels}


def test_save_and_load_in_another_process(tuned_cnn, tmp_path):
    net, root = tuned_cnn
    path = net.save(tmp_path / "cnn.evokernel-model")
    x = np.random.default_rng(2).random(SHAPE, dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import numpy as np, evokernel as ek
        net = ek.load_model({str(path)!r}, cache_dir={str(root)!r})
        np.save({str(tmp_path / 'y.npy')!r}, net(np.load({str(tmp_path / 'x.npy')!r})))
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), net(x), rtol=1e-6)


def test_a_model_saved_in_another_cache_loads_only_when_trusted(tuned_cnn, tmp_path):
    net, _ = tuned_cnn
    path = net.save(tmp_path / "cnn.evokernel-model")
    with pytest.raises(ek.errors.UntrustedBundleError):
        ek.load_model(path, cache_dir=tmp_path / "elsewhere")
    assert len(ek.load_model(path, cache_dir=tmp_path / "elsewhere", trusted=True).kernels) == len(net.kernels)


def test_exporters_take_a_tuned_model(tuned_cnn, tmp_path):
    net, _ = tuned_cnn
    library = ek.export_c(net, tmp_path / "c", name="cnn")
    header = library.header.read_text()
    assert header.count("int cnn_") >= len(net.kernels) and library.shared.stat().st_size > 0


def test_wrong_inputs_to_the_network_are_named(tuned_cnn):
    net, _ = tuned_cnn
    with pytest.raises(ek.KernelCallError, match=r"'x' must be float32 of shape \(2, 4, 12, 12\)"):
        net(np.zeros((1, 4, 12, 12), np.float32))
    with pytest.raises(ek.KernelCallError, match="unknown: y"):
        net(y=np.zeros(SHAPE, np.float32))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x00" * 100])
def test_a_damaged_saved_model_is_named(tmp_path, content):
    path = tmp_path / "damaged.evokernel-model"
    path.write_bytes(content)
    with pytest.raises(ek.ModelError, match="damaged.evokernel-model"):
        ek.load_model(path)


def test_bad_budget_and_target_are_refused_before_any_work():
    with pytest.raises(ek.BudgetError):
        ek.tune_model(small_cnn(), budget="soon", input_shapes={"x": SHAPE}, evaluator="local")
    with pytest.raises(ek.TargetError):
        ek.tune_model(small_cnn(), target="x86-99", input_shapes={"x": SHAPE}, evaluator="local")


# -- warm start ----------------------------------------------------------------------------

def test_a_new_shape_starts_from_the_best_genomes_of_its_family(cache):
    """After one matmul shape is tuned, a new shape's first candidates are the other
    shape's best genomes, repaired to its own space."""
    db = ek.store.SQLiteRecords(cache / "records.sqlite3")
    known = ek.operators.matmul(32, 32, 32)
    ek.tune(known, budget=6, seed=1, evaluator="local", records=db, cache_dir=cache, progress=False)
    new = ek.operators.matmul(48, 40, 24)
    genomes = family_genomes(db, new, ek.Target.parse("host"))
    assert genomes and all(r.operator == known.key for r in db.find() if r.genome in genomes)
    ev = ek.evaluators.create_evaluator("local")
    job = OperatorTuning(new, ek.Target.parse("host"), ev, db, cache, seed=2, warm_start=genomes)
    try:
        job.advance(ek.Budget(evaluations=2))
    finally:
        job.close()
        ev.close()
    first = [r.genome for r in db.find(new.key)][0]
    assert first == adapt(job.space, genomes[0])


def test_adapt_refuses_a_genome_of_another_structure():
    host = ek.Target.parse("host")
    conv = ek.genome.ScheduleSpace.of(ek.operators.conv2d(1, 8, 8, 8, 8, 3, bias=True, activation="relu"), host, 2)
    matmul = ek.genome.ScheduleSpace.of(ek.operators.matmul(8, 8, 8), host, 2)
    genome = ek.genome.templates(matmul)[0]
    assert len(conv.stages) != len(matmul.stages)
    assert adapt(conv, genome) is None
    assert adapt(matmul, genome) == genome


# -- resuming after a kill -------------------------------------------------------------------

@pytest.mark.slow
def test_a_killed_tune_model_resumes_without_evaluating_a_finished_candidate_again(tmp_path):
    _kill_and_resume(tmp_path, budget=40, rows_before_kill=12)


def test_a_killed_tune_model_resumes_quickly(tmp_path):
    """kill -9 in the middle of the search, then the same call again: no operator
    evaluates a genome twice (the records say so), and the network is right."""
    _kill_and_resume(tmp_path, budget=16, rows_before_kill=5)


def _kill_and_resume(tmp_path: Path, budget: int, rows_before_kill: int) -> None:
    model = tmp_path / "cnn.onnx"
    model.write_bytes(small_cnn().SerializeToString())
    code = textwrap.dedent(f"""
        import evokernel as ek
        ek.tune_model({str(model)!r}, budget={budget}, input_shapes={{"x": {SHAPE}}}, seed=5, evaluator="local",
                      cache_dir={str(tmp_path)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
    database = tmp_path / "records.sqlite3"
    try:
        deadline = time.monotonic() + 300
        while _rows(database) < rows_before_kill and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    killed_at = _rows(database)
    net = ek.tune_model(model, budget=budget, input_shapes={"x": SHAPE}, seed=5, evaluator="local",
                        cache_dir=tmp_path, progress=False)
    with sqlite3.connect(database) as db:
        repeats = db.execute("SELECT operator, genome_key, COUNT(*) FROM evaluations GROUP BY operator, genome_key "
                             "HAVING COUNT(*) > 1").fetchall()
        total = db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    assert repeats == [] and total > killed_at
    x = np.random.default_rng(3).random(SHAPE, dtype=np.float32)
    np.testing.assert_allclose(net(x), onnxruntime_output(small_cnn(), x), rtol=1e-4, atol=1e-5)


def _rows(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
