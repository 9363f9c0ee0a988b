"""Nothing waits without a limit: a stopped runner worker (and a stopped worker
started in its place) becomes a recorded failure within the run's timeouts; the
worker dies with its parent; and the run timeout allows for what a measurement of
a big operator costs around its kernel (allocating and checking a 10⁸-element
output), so a 10000×10000 ReLU tunes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

import evokernel as ek
from evokernel import codegen
from evokernel.codegen import FUNCTION, build, default_threads
from evokernel.evaluators import (Context, Evaluator, LocalBuilder, LocalRunner, Outcome, Protocol, Settings,
                                  WorkerProcess, check)
from evokernel.genome import ScheduleSpace, templates, unscheduled

FAST = Protocol(warmup=0, min_calls=2, max_calls=5, min_time=0.0)


@pytest.fixture(scope="module")
def relu():
    """A ReLU's context and its unscheduled kernel, linked here."""
    op = ek.operators.relu((64,))
    target = ek.Target.parse("host")
    space = ScheduleSpace.of(op, target, default_threads())
    context = Context(op, target, space, default_threads(), codegen.cache_dir())
    return context, context.link(build(op, space, unscheduled(space), target))


def _workers() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children():
        try:
            if "evokernel.evaluators._worker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _stop_the_next_worker(known: set[int], stopped: list[psutil.Process], done: threading.Event) -> None:
    """SIGSTOP the first runner worker started after ``known``, as it starts."""
    while not done.is_set():
        for p in _workers():
            if p.pid not in known:
                p.suspend()
                stopped.append(p)
                return
        time.sleep(0.002)


def test_a_stopped_worker_and_a_stopped_replacement_are_failures_within_their_limits(relu):
    """The worker SIGSTOPped mid-run: ``run_timeout`` after the run timeout. The one
    started in its place, SIGSTOPped before it is ready: ``run_crash`` once its start
    limit passes (it was waited on for good before). Then a fresh worker times."""
    context, library = relu
    worker = WorkerProcess(context.task())
    worker.min_restart, worker.restart_factor = 3.0, 1.0
    try:
        assert worker.measure(library, FUNCTION, FAST, None, 30.0).outcome is Outcome.OK
        (first,) = _workers()
        first.suspend()
        start = time.monotonic()
        m = worker.measure(library, FUNCTION, FAST, None, 1.0)
        assert m.outcome is Outcome.RUN_TIMEOUT, m
        assert time.monotonic() - start < 1.0 + 5.0

        stopped, done = [], threading.Event()
        stopper = threading.Thread(target=_stop_the_next_worker, args=({first.pid}, stopped, done))
        stopper.start()
        limit, start = worker.start_limit, time.monotonic()
        m = worker.measure(library, FUNCTION, FAST, None, 1.0)
        waited = time.monotonic() - start
        done.set()
        stopper.join()
        assert stopped, "no replacement worker was started"
        assert m.outcome is Outcome.RUN_CRASH and "not ready after" in m.message, m
        assert limit <= waited < limit + 5.0
        assert not _running(stopped[0]), "it was killed"

        assert worker.measure(library, FUNCTION, FAST, None, 30.0).outcome is Outcome.OK
    finally:
        worker.close()


def test_the_worker_dies_with_its_parent(relu, tmp_path):
    """A worker whose parent is SIGKILLed goes too, even inside a kernel that never
    returns (here: stopped, so it could not notice anything itself)."""
    context, library = relu
    program = (
        "import pickle, sys\n"
        "from evokernel.codegen import FUNCTION\n"
        "from evokernel.evaluators import WorkerProcess, Protocol\n"
        "task, library = pickle.load(open(sys.argv[1], 'rb'))\n"
        "w = WorkerProcess(task)\n"
        "print(w.measure(library, FUNCTION, Protocol(), None, 30.0).outcome.value, w._proc.pid, flush=True)\n"
        "sys.stdin.read()\n")
    import pickle

    (tmp_path / "task.pickle").write_bytes(pickle.dumps((context.task(), library)))
    parent = subprocess.Popen([sys.executable, "-c", program, str(tmp_path / "task.pickle")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    outcome, pid = parent.stdout.readline().split()
    assert outcome == "ok"
    child = psutil.Process(int(pid))
    child.suspend()
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child), "the worker outlived its parent"


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_check_compares_block_by_block_as_a_whole_array_would():
    n = (1 << 16) * 3 + 5  # more than one block, and a partial last one
    ref = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    assert check(ref.copy(), ref, 1e-6, 1e-6) == (True, 0.0)
    late = ref.copy()
    late[-1] += 0.5
    good, error = check(late, ref, 1e-6, 1e-6)
    assert not good and error == pytest.approx(0.5, rel=1e-3)
    nan = ref.copy()
    nan[-2] = np.nan
    assert check(nan, ref, 1e-6, 1e-6) == (False, float("inf"))
    small = np.array([0, 10] * (n // 2), np.uint8)
    assert check(small[::-1].copy(), small, 0.0, 0.0) == (False, 10.0), "unsigned differences do not wrap"


def test_the_run_timeout_allows_for_what_a_measurement_costs_around_the_kernel(cache):
    """A run timeout of a few hundredths of a second per call: the kernels fit in it
    (the templates, vectorised and parallel: a random serial schedule may not, and
    is rightly cut off), allocating and checking its 9-million-element output does
    not; each candidate's timeout includes three times the cost seen, so none is."""
    op = ek.operators.relu((3000, 3000))
    count = len(templates(ScheduleSpace.of(op, ek.Target.parse("host"), default_threads())))
    settings = Settings(min_run_timeout=0.02, protocol=Protocol(slow_factor=1e-3))
    evaluator = Evaluator(LocalBuilder(), LocalRunner(), settings)
    kernel = ek.tune(op, budget=count, seed=0, evaluator=evaluator, records="memory", cache_dir=cache)
    assert evaluator.overhead > 0.02, "the check of 9 million elements costs more than the kernel's timeout"
    assert kernel.stats.outcomes == {"ok": count}


@pytest.mark.slow
def test_a_10000_by_10000_relu_tunes(cache):
    op = ek.operators.relu((10000, 10000))
    kernel = ek.tune(op, budget=4, seed=0, evaluator="local", records="memory", cache_dir=cache)
    assert kernel.stats.outcomes.get("ok", 0) >= 3, kernel.stats.outcomes
    x = np.random.default_rng(1).standard_normal((10000, 10000), dtype=np.float32)
    assert np.array_equal(kernel(x), np.maximum(x, 0))
