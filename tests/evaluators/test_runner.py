"""The runner turns a kernel's faults into typed outcomes: a wrong answer, a
crash, a hang, an error return, a missing entry point; and the worker is replaced
so that the next measurement succeeds."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import halide as hl
import numpy as np
import pytest
from _families import prepared

import evokernel as ek
from evokernel import codegen
from evokernel.codegen import FUNCTION, Artifact
from evokernel.evaluators import Outcome, Protocol, Task, WorkerProcess, check
from evokernel.genome import templates, unscheduled
from evokernel.target import Target

SIZE = 37

# Hand-written kernels with the generated code's C entry point: evokernel_kernel_argv
# receives the halide_buffer_t pointers of the input and the output.
PRELUDE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
typedef struct { int32_t min, extent, stride; uint32_t flags; } dim_t;
typedef struct { uint8_t code, bits; uint16_t lanes; } type_t;
typedef struct {
    uint64_t device; void *device_interface; uint8_t *host; uint64_t flags;
    type_t type; int32_t dimensions; dim_t *dim; void *padding;
} buffer_t;
extern void halide_error(void *user_context, const char *msg);
static int count(buffer_t *b) { return b->dim[0].extent; }
"""

KERNELS = {
    "copy": "int evokernel_kernel_argv(void **args) {"
            "  buffer_t *in = args[0], *out = args[1]; const float *x = (const float *)in->host;"
            "  float *y = (float *)out->host;"
            "  for (int i = 0; i < count(out); i++) y[i] = x[i];"
            "  return 0; }",
    "wrong": "int evokernel_kernel_argv(void **args) {"
             "  buffer_t *in = args[0], *out = args[1]; const float *x = (const float *)in->host;"
             "  float *y = (float *)out->host;"
             "  for (int i = 0; i < count(out); i++) y[i] = x[i] + (i == 5 ? 0.5f : 0.0f);"
             "  return 0; }",
    "nan": "int evokernel_kernel_argv(void **args) { (void)args; return 0; }",  # leaves the NaN-filled output
    "segfault": "int evokernel_kernel_argv(void **args) {"
                "  (void)args; volatile int *p = 0; *p = 42; return 0; }",
    "hang": "int evokernel_kernel_argv(void **args) {"
            "  (void)args; volatile unsigned long n = 0; for (;;) n++; return 0; }",
    "abort": "int evokernel_kernel_argv(void **args) { (void)args; abort(); }",
    "exit": "int evokernel_kernel_argv(void **args) { (void)args; _exit(3); }",
    "error": "int evokernel_kernel_argv(void **args) {"
             "  (void)args; halide_error(0, \"Input buffer x is accessed out of bounds (test)\"); return -7; }",
    "no_entry": "int some_other_function(void) { return 0; }",
    # counts its calls in out[0] and copies the rest
    "tally": "int evokernel_kernel_argv(void **args) {"
             "  buffer_t *in = args[0], *out = args[1]; const float *x = (const float *)in->host;"
             "  float *y = (float *)out->host; y[0] += 1.0f;"
             "  for (int i = 1; i < count(out); i++) y[i] = x[i];"
             "  return 0; }",
    # fast only where its input sits near a page boundary: spins 1000 rounds per float past it
    "placed": "int evokernel_kernel_argv(void **args) {"
              "  buffer_t *in = args[0], *out = args[1]; const float *x = (const float *)in->host;"
              "  float *y = (float *)out->host; volatile unsigned long n = 0;"
              "  for (unsigned long i = 0; i < 1000 * (((uintptr_t)x % 4096) / 4); i++) n++;"
              "  for (int i = 0; i < count(out); i++) y[i] = x[i];"
              "  return 0; }",
}


@pytest.fixture(scope="module")
def runtime() -> str:
    native = codegen.native_dir(codegen.cache_dir())
    return str(codegen.runtime_library(Target.parse("host").string, native))


@pytest.fixture(scope="module")
def libraries(tmp_path_factory, runtime) -> dict:
    """Each fault as a shared library linked against evokernel's runtime, like a
    generated kernel (built with ``cc`` from the sources above)."""
    tmp = tmp_path_factory.mktemp("faults")
    runtime_dir, runtime_name = os.path.dirname(runtime), os.path.basename(runtime)
    out = {}
    for name, body in KERNELS.items():
        source, library = tmp / f"{name}.c", tmp / f"lib{name}.so"
        source.write_text(PRELUDE + body + "\n")
        subprocess.run(["cc", "-shared", "-fPIC", "-O0", "-o", str(library), str(source),
                        f"-L{runtime_dir}", f"-l:{runtime_name}", f"-Wl,-rpath,{runtime_dir}"],
                       check=True, capture_output=True, text=True)
        out[name] = library
    return out


@pytest.fixture
def runner(runtime):
    x = np.random.default_rng(0).uniform(-1, 1, SIZE).astype(np.float32)
    task = Task(runtime, 1, [(SIZE,), (SIZE,)], ["float32", "float32"], [x], x.copy(), 1e-6, 1e-6)
    r = WorkerProcess(task)
    yield r
    r.close()


FAST = Protocol(warmup=1, min_calls=2, max_calls=5, min_time=0.0)


def measure(runner, library, timeout=10.0, best=None):
    return runner.measure(library, FUNCTION, FAST, best, timeout)


def worker_pid(runner) -> int:
    return runner._proc.pid


def test_a_good_kernel_is_ok_and_timed(runner, libraries):
    m = measure(runner, libraries["copy"])
    assert m.outcome is Outcome.OK, m
    assert 2 <= len(m.times) <= 5 and all(t >= 0 for t in m.times)
    assert m.max_error == 0.0


@pytest.mark.parametrize("name, error", [("wrong", 0.5), ("nan", float("inf"))])
def test_wrong_values_are_wrong_result(runner, libraries, name, error):
    m = measure(runner, libraries[name])
    assert m.outcome is Outcome.WRONG_RESULT
    assert m.max_error == pytest.approx(error)
    assert "exceeds tolerance" in m.message and not m.times
    assert measure(runner, libraries["copy"]).outcome is Outcome.OK


@pytest.mark.parametrize("name, message", [("segfault", "SIGSEGV"), ("abort", "SIGABRT"),
                                           ("exit", "exited with status 3"), ("no_entry", "exited with status")])
def test_a_dying_worker_is_run_crash_and_is_replaced(runner, libraries, name, message):
    assert measure(runner, libraries["copy"]).outcome is Outcome.OK
    before = worker_pid(runner)
    m = measure(runner, libraries[name])
    assert m.outcome is Outcome.RUN_CRASH
    assert message in m.message
    after = measure(runner, libraries["copy"])
    assert after.outcome is Outcome.OK, after
    assert worker_pid(runner) != before, "a fresh worker took over"


def test_a_hanging_kernel_is_run_timeout_and_is_killed(runner, libraries):
    assert measure(runner, libraries["copy"]).outcome is Outcome.OK
    before = runner._proc
    m = measure(runner, libraries["hang"], timeout=1.0)
    assert m.outcome is Outcome.RUN_TIMEOUT
    assert "1 s" in m.message
    assert before.poll() is not None, "the hung worker was killed"
    after = measure(runner, libraries["copy"])
    assert after.outcome is Outcome.OK, after
    assert worker_pid(runner) != before.pid


def test_an_error_return_is_run_crash_with_halides_message(runner, libraries):
    assert measure(runner, libraries["copy"]).outcome is Outcome.OK
    before = worker_pid(runner)
    m = measure(runner, libraries["error"])
    assert m.outcome is Outcome.RUN_CRASH
    assert "error -7" in m.message and "out of bounds (test)" in m.message
    assert measure(runner, libraries["copy"]).outcome is Outcome.OK
    assert worker_pid(runner) == before, "an error return does not cost the worker"


def test_a_slow_first_call_stops_at_the_cutoff(runner, libraries):
    m = runner.measure(libraries["copy"], FUNCTION, Protocol(warmup=1, min_calls=50, max_calls=100, min_time=1.0),
                       best=-1.0, timeout=10.0)
    assert m.outcome is Outcome.OK and len(m.times) == 1 and "cut-off" in m.message


def test_max_calls_zero_times_a_kernel_by_its_check_call(runner, libraries):
    """The tuner's unscheduled baseline (seconds a call for a big gemm) costs one call."""
    m = runner.measure(libraries["copy"], FUNCTION, Protocol(max_calls=0), best=None, timeout=10.0)
    assert m.outcome is Outcome.OK and len(m.times) == 1 and "check call" in m.message
    one = runner.measure(libraries["copy"], FUNCTION, Protocol(min_calls=1, max_calls=1, min_time=0.0), best=None,
                         timeout=10.0)
    assert len(one.times) == 1, "without a best there is no screening: one warm call"


def test_a_kernel_slower_than_the_best_gets_only_the_screening_calls(runner, libraries):
    """Between the cut-off and the screen: ``screen_calls`` warm calls, not ``min_calls``."""
    slow = Protocol(min_calls=4, max_calls=100, min_time=1.0, slow_factor=1e12, screen_factor=1.0, screen_calls=2)
    m = runner.measure(libraries["copy"], FUNCTION, slow, best=1e-12, timeout=10.0)
    assert m.outcome is Outcome.OK and len(m.times) == 2 and "screened" in m.message
    full = runner.measure(libraries["copy"], FUNCTION, slow, best=None, timeout=10.0)
    assert len(full.times) == 100 or sum(full.times) >= 1.0


def test_many_faults_in_a_row(runner, libraries):
    outcomes = [measure(runner, libraries[n], timeout=1.0).outcome
                for n in ("segfault", "copy", "hang", "segfault", "wrong", "exit", "copy")]
    assert outcomes == [Outcome.RUN_CRASH, Outcome.OK, Outcome.RUN_TIMEOUT, Outcome.RUN_CRASH,
                        Outcome.WRONG_RESULT, Outcome.RUN_CRASH, Outcome.OK]


def test_close_ends_the_worker(runner, libraries):
    assert measure(runner, libraries["copy"]).outcome is Outcome.OK
    proc = runner._proc
    runner.close()
    assert proc.poll() is not None
    assert measure(runner, libraries["copy"]).outcome is Outcome.OK


def test_check_compares_within_tolerance():
    ref = np.array([1.0, -2.0, np.inf], np.float32)
    assert check(ref.copy(), ref, 1e-6, 1e-6)[0]
    assert not check(np.array([1.0, -2.0, 5.0], np.float32), ref, 1e-6, 1e-6)[0]
    assert not check(np.array([1.0, np.nan, np.inf], np.float32), ref, 1e-6, 1e-6)[0]
    good, error = check(np.array([1.0, -2.5, np.inf], np.float32), ref, 0.0, 0.1)
    assert not good and error == pytest.approx(0.5)


# -- faults of generated code, through the evaluator -------------------------------------

def _shifted(params):
    """Reads one element past the end of its input: Halide's bounds check fails."""
    (src,), i, out = params, hl.Var("i"), hl.Func("shifted")
    out[i] = src[i + 1]
    return out


def _plus_one(params):
    (src,), i, out = params, hl.Var("i"), hl.Func("plus_one")
    out[i] = src[i] + 1.0
    return out


def test_an_algorithm_that_disagrees_with_its_reference_is_wrong_result():
    op = ek.operators.custom("plus_one_bug", [("x", (SIZE,))], (SIZE,), _plus_one, lambda x: x)
    evaluator, context = prepared(op)
    try:
        result = evaluator.evaluate_one(templates(context.space)[0])
    finally:
        evaluator.close()
    assert result.outcome is Outcome.WRONG_RESULT
    assert result.max_error == pytest.approx(1.0) and result.message
    with pytest.raises(ek.TuningError, match="wrong_result"):
        ek.tune(op, budget=3, seed=0, evaluator="local")


def test_an_out_of_bounds_read_is_run_crash_with_halides_message():
    op = ek.operators.custom("shifted_bug", [("x", (SIZE,))], (SIZE,), _shifted, lambda x: x)
    evaluator, context = prepared(op)
    try:
        results = evaluator.evaluate([unscheduled(context.space), templates(context.space)[0]])
    finally:
        evaluator.close()
    for result in results:
        assert result.outcome is Outcome.RUN_CRASH
        assert "x" in result.message and "37" in result.message, result.message


def test_the_evaluator_survives_a_crash_and_a_hang(tmp_path, runtime):
    """Through a LocalEvaluator: hand-made artifacts (objects compiled from the C
    above) are linked and run like generated ones; the crash and the hang are
    recorded, and the next real candidate is measured."""
    op = ek.operators.relu((SIZE,))
    evaluator, context = prepared(op)
    quick = Protocol(warmup=0, min_calls=1, max_calls=1, min_time=0.0)
    try:
        for name, timeout, outcome in (("segfault", 5.0, Outcome.RUN_CRASH), ("hang", 1.0, Outcome.RUN_TIMEOUT),
                                       ("copy", 5.0, Outcome.WRONG_RESULT)):  # relu is not a copy
            source, obj = tmp_path / f"{name}.c", tmp_path / f"{name}.o"
            source.write_text(PRELUDE + KERNELS[name] + "\n")
            subprocess.run(["cc", "-c", "-fPIC", "-O0", "-o", str(obj), str(source)], check=True)
            artifact = Artifact(obj.read_bytes(), context.target.string, f"# hand-made {name}", 0.0)
            m = evaluator.runner.measure(artifact, None, timeout, quick)
            assert m.outcome is outcome, (name, m)
        result = evaluator.evaluate_one(templates(context.space)[0])
        assert result.ok, result
    finally:
        evaluator.close()


def test_an_unlinkable_candidate_is_compile_error(monkeypatch, tmp_path):
    """A build step that fails (here: no C compiler to link with) is recorded."""
    name = f"copy_{uuid.uuid4().hex[:8]}"  # a new name: nothing cached can stand in

    def copy(params):
        (src,), i, out = params, hl.Var("i"), hl.Func(name)
        out[i] = src[i]
        return out

    op = ek.operators.custom(name, [("x", (SIZE,))], (SIZE,), copy, lambda x: x)
    evaluator, context = prepared(op)
    try:
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
        result = evaluator.evaluate_one(templates(context.space)[0])
        monkeypatch.delenv("CC")
        assert evaluator.evaluate_one(templates(context.space)[0]).ok
    finally:
        evaluator.close()
    assert result.outcome is Outcome.COMPILE_ERROR
    assert "no C compiler" in result.message


def test_placements_are_fresh_copies_at_their_own_page_offsets(runner):
    task = runner.task
    placed = task.placed(3, seed=5)
    assert placed is task.placed(3, seed=5), "kept for the next kernel"
    offsets = {a.ctypes.data % 4096 for (arrays,) in placed for a in arrays}
    assert len(offsets) == 6
    for (x, out), in placed:
        np.testing.assert_array_equal(x, task.inputs[0])
        assert not np.shares_memory(x, task.inputs[0]) and out.shape == (SIZE,)
    assert task.placed(3, seed=6)[0][0][0].ctypes.data % 4096 not in offsets


def test_the_copies_of_a_placement_sit_at_its_offsets_in_memory_of_their_own():
    """The sets a placement's calls rotate through: equal arrays at the placement's
    offsets, no two sharing memory."""
    task = Task("", 1, [(SIZE,), (SIZE,)], ["float32", "float32"], [np.arange(SIZE, dtype=np.float32)],
                np.zeros(SIZE, np.float32), 0.0, 0.0)
    placed = task.placed(2, seed=3, copies=4)
    assert len(placed) == 2 and all(len(copies) == 4 for copies in placed)
    for copies in placed:
        assert len({tuple(a.ctypes.data % 4096 for a in arrays) for arrays in copies}) == 1
        for i, (x, out) in enumerate(copies):
            np.testing.assert_array_equal(x, task.inputs[0])
            assert not any(np.shares_memory(x, y) or np.shares_memory(out, o) for y, o in copies[i + 1:])
    assert [a.ctypes.data % 4096 for a in placed[0][0]] == [a.ctypes.data % 4096 for a in task.placed(2, 3)[0][0]]


def test_a_kernel_fast_only_at_some_placements_gets_its_slowest_time(runner, libraries):
    """The "placed" kernel spins in proportion to its input's offset in its page: the
    placement furthest from a page boundary sets its time."""
    def gap(seed):  # bytes between the furthest input from its page start and the next
        offsets = sorted(x.ctypes.data % 4096 for ((x, _), *_) in runner.task.placed(3, seed))
        return offsets[2] - offsets[1]

    seed = next(s for s in range(200) if gap(s) > 1500)
    protocol = Protocol(min_calls=30, max_calls=60, min_time=0.0, placements=3, placement_seed=seed)
    m = runner.measure(libraries["placed"], FUNCTION, protocol, None, 30.0)
    assert m.outcome is Outcome.OK and sorted(set(m.placements)) == [0, 1, 2]
    offsets = [x.ctypes.data % 4096 for ((x, _), *_) in runner.task.placed(3, seed)]
    medians = [float(np.median([t for t, p in zip(m.times, m.placements) if p == i])) for i in range(3)]
    assert int(np.argmax(medians)) == int(np.argmax(offsets))
    assert m.time() == max(medians) > 1.5 * sorted(medians)[1]


def test_timed_calls_take_the_sets_in_turn_each_with_its_own_arrays(runtime, libraries):
    """Seven calls on three sets: the first set is called three times, the others
    twice, each on its own input and output."""
    kernel = codegen.NativeKernel(libraries["tally"], FUNCTION, codegen.load_runtime(Path(runtime), 1),
                                  [(SIZE,), (SIZE,)], ["float32", "float32"])
    sets = [[np.full(SIZE, i, np.float32), np.zeros(SIZE, np.float32)] for i in range(3)]
    times = kernel.time(sets, 7)
    assert len(times) == 7 and (times >= 0).all()
    assert [out[0] for _, out in sets] == [3.0, 2.0, 2.0]
    assert all((out[1:] == i).all() for i, (_, out) in enumerate(sets))


FRESH_PROBE = r"""
import ctypes, mmap, sys
import numpy as np
from evokernel.codegen import FUNCTION, NativeKernel, load_runtime
from pathlib import Path
size, page = int(sys.argv[3]), mmap.PAGESIZE
memory = mmap.mmap(-1, 2 * page)
base = ctypes.addressof(ctypes.c_char.from_buffer(memory))
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert libc.mprotect(base + page, page, 0) == 0  # PROT_NONE: a write past the input's end faults
x = np.frombuffer(memory, np.uint32, count=size, offset=page - 4 * size)
x[:] = np.random.default_rng(0).integers(0, 2**32, size, dtype=np.uint32)  # any bit pattern, NaNs too
before = x.copy()
out = np.zeros(size, np.float32)
kernel = NativeKernel(Path(sys.argv[2]), FUNCTION, load_runtime(Path(sys.argv[1]), 1), [(size,), (size,)],
                      ["float32", "float32"])
times = kernel.time([[x.view(np.float32), out]], 7, fresh=True)
assert len(times) == 7 and (times >= 0).all(), times
assert np.array_equal(x, before), "the rewrite changed an input"
assert np.array_equal(out.view(np.uint32), before), "the kernel read something else"
print("ok")
"""


def test_fresh_timing_rewrites_each_input_as_it_was_and_nothing_past_it(runtime, libraries):
    """Timed with its inputs rewritten before each call, the copy kernel still
    copies every bit pattern (NaNs and all) and the input keeps them; an input
    that ends at a page the process may not touch shows nothing is written past
    its last byte (a stray write would kill the probe with SIGSEGV)."""
    probe = subprocess.run([sys.executable, "-c", FRESH_PROBE, runtime, str(libraries["copy"]), str(SIZE)],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and probe.stdout.strip() == "ok", probe.stderr[-2000:]
