"""TVM MetaSchedule as a peer: the operator written in TVM's tensor expressions,
tuned by MetaSchedule's default search (evolutionary, XGBoost cost model) under a
deadline, in a child process (``python -m evokernel.bench._metaschedule``).

MetaSchedule has no time limit of its own: a measure callback ends its task once
the deadline has passed (the batch in flight finishes). The child exports the best
schedule found as a shared library and its best time after every measured batch;
the parent loads the library with TVM's runtime and calls it on the bench's arrays,
with the same thread count as every other method. Needs the ``tvm`` extra
(``apache-tvm``; ``apache-tvm-ffi`` 0.1.15 crashes in MetaSchedule's database
writes, 0.1.14 works).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..codegen import page_aligned, page_aligned_copy
from ..operators import Add, Conv2d, FullyConnected, MatMul, Operator, Pool2d, Relu, Relu6, Softmax
from ..search import Budget

#: Trials MetaSchedule measures per round (its own default is 64; a smaller round
#: lets a short deadline end closer to its time).
TRIALS_PER_ROUND = 32
#: Seconds the child may run past its deadline (its start, the round in flight, the export).
GRACE = 180.0
#: Seconds allowed per trial when the budget counts trials only.
TRIAL_SECONDS = 2.0


def available() -> bool:
    """Whether TVM with MetaSchedule can be imported here."""
    try:
        import tvm.s_tir.meta_schedule  # noqa: F401 (imported to see that it can be)
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class Tuned:
    """What MetaSchedule found: the exported library (``None`` with ``error``), the
    trials it measured, and its best time (seconds) after each measured round, as
    ``(wall seconds, trials, best)``."""

    library: Path | None
    trials: int = 0
    curve: list = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


def tune(op: Operator, budget, threads: int, work_dir: Path, seed: int = 0) -> Tuned:
    """Tune ``op`` with MetaSchedule within ``budget`` (seconds, trials, or both, as
    ``tune``'s) in a child process; the library is written into ``work_dir``. Any
    failure comes back in ``error``."""
    budget = Budget.parse(budget)
    if prim_func(op) is None:
        return Tuned(None, error=f"no TVM expression for {type(op).__name__}")
    request = {"operator": op.to_dict(), "seconds": budget.seconds, "trials": budget.evaluations,
               "threads": threads, "dir": str(work_dir), "seed": seed}
    limit = (budget.seconds or TRIAL_SECONDS * budget.evaluations) + GRACE
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", __name__], input=json.dumps(request), text=True,
                              capture_output=True, timeout=limit, env={**os.environ, **_env(threads)})
    except subprocess.TimeoutExpired:
        return Tuned(None, seconds=time.monotonic() - start, error=f"still running {limit:g} s after start")
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return Tuned(None, seconds=elapsed, error=f"exit status {done.returncode}: {' / '.join(lines[-3:])[:400]}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return Tuned(Path(answer["library"]), answer["trials"], answer["curve"], elapsed)


def baseline(library: Path, op: Operator, inputs: Sequence[np.ndarray], threads: int) -> Callable[[], np.ndarray]:
    """A call of the tuned library on copies of ``inputs`` into one output array,
    for the bench's side-by-side timing (TVM takes arrays aligned to 64 bytes only:
    the copies start on a page)."""
    os.environ.update(_env(threads))
    import tvm

    function = tvm.runtime.load_module(str(library))["main"]
    out = page_aligned(op.output.shape, op.output.dtype)
    arrays = [tvm.runtime.from_dlpack(a) for a in (*map(page_aligned_copy, inputs), out)]

    def call() -> np.ndarray:
        function(*arrays)
        return out
    return call


def _env(threads: int) -> dict[str, str]:
    return {"TVM_NUM_THREADS": str(threads)}


# -- the operators in TVM's tensor expressions ------------------------------------------


def prim_func(op: Operator):
    """``op`` as a TVM ``PrimFunc`` (inputs, then the output, in evokernel's order
    and layouts), or ``None`` for an operator with no expression here."""
    from tvm import te

    dtype = op.dtype
    inputs = [te.placeholder(s.shape, dtype, s.name) for s in op.inputs]
    for kind, expression in _EXPRESSIONS:
        if isinstance(op, kind):
            return te.create_prim_func([*inputs, expression(op, *inputs)])
    return None


def _matmul(op: MatMul, a, b):
    from tvm import te

    k = te.reduce_axis((0, op.k), "k")
    return te.compute((op.m, op.n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), "out")


def _fc(op: FullyConnected, x, w, bias=None):
    from tvm import te

    k = te.reduce_axis((0, op.in_features), "k")
    out = te.compute((op.batch, op.out_features), lambda i, j: te.sum(x[i, k] * w[j, k], axis=k), "acc")
    return out if bias is None else te.compute(out.shape, lambda i, j: out[i, j] + bias[j], "out")


def _padded(x, pads: tuple[int, int], far: tuple[int, int], value):
    """``x`` [n, c, h, w] with ``pads`` before and ``far`` after its spatial axes."""
    from tvm import te, tirx

    (ph, pw), (fh, fw) = pads, far
    if not any((ph, pw, fh, fw)):
        return x
    n, c, h, w = x.shape
    return te.compute(
        (n, c, h + ph + fh, w + pw + fw),
        lambda b, ch, y, z: tirx.if_then_else(
            tirx.all(y >= ph, y < h + ph, z >= pw, z < w + pw), x[b, ch, y - ph, z - pw],
            tirx.const(value, x.dtype)), "padded")


def _conv2d(op: Conv2d, x, w, bias=None):
    from tvm import te

    (kh, kw), (sy, sx), (dy, dx), cpg = op.kernel, op.stride, op.dilation, op.channels_per_group
    padded = _padded(x, op.padding, op.padding, 0.0)
    oh, ow = op.out_hw
    per_group = op.c_out // op.groups
    rc, ry, rx = te.reduce_axis((0, cpg), "rc"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    acc = te.compute(
        (op.n, op.c_out, oh, ow),
        lambda b, co, y, z: te.sum(
            padded[b, co // per_group * cpg + rc, y * sy + ry * dy, z * sx + rx * dx] * w[co, rc, ry, rx],
            axis=[rc, ry, rx]), "acc")
    if bias is None and op.activation is None:
        return acc
    act = {"relu": _relu, "relu6": _relu6}.get(op.activation, lambda v, dtype: v)
    return te.compute(acc.shape, lambda b, co, y, z: act(acc[b, co, y, z] + (0 if bias is None else bias[co]),
                                                         op.dtype), "out")


def _pool(op: Pool2d, x):
    from tvm import te, tirx

    (kh, kw), (sy, sx) = op.kernel, op.stride
    is_max = op.method == "max"
    padded = _padded(x, op.padding, op.far_padding, float("-inf") if is_max else 0.0)
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    window = lambda b, c, y, z: padded[b, c, y * sy + ry, z * sx + rx]  # noqa: E731
    if is_max:
        return te.compute((op.n, op.c, *op.out_hw), lambda *i: te.max(window(*i), axis=[ry, rx]), "out")
    total = te.compute((op.n, op.c, *op.out_hw), lambda *i: te.sum(window(*i), axis=[ry, rx]), "acc")
    return te.compute(total.shape, lambda *i: total[i] / tirx.const(kh * kw, x.dtype), "out")


def _elementwise(fn):
    def expression(op, *arrays):
        from tvm import te

        return te.compute(op.output.shape, lambda *i: fn(*(a[i] for a in arrays), op.dtype), "out")
    return expression


def _relu(v, dtype: str):
    from tvm import tirx

    return tirx.max(v, tirx.const(0, dtype))


def _relu6(v, dtype: str):
    from tvm import tirx

    return tirx.min(tirx.max(v, tirx.const(0, dtype)), tirx.const(6, dtype))


def _softmax(op: Softmax, x):
    from tvm import te

    *rows, length = op.shape
    k1, k2 = te.reduce_axis((0, length), "k1"), te.reduce_axis((0, length), "k2")
    top = te.compute(tuple(rows), lambda *r: te.max(x[(*r, k1)], axis=k1), "top")
    e = te.compute(op.shape, lambda *i: te.exp(x[i] - top[i[:-1]]), "e")
    total = te.compute(tuple(rows), lambda *r: te.sum(e[(*r, k2)], axis=k2), "total")
    return te.compute(op.shape, lambda *i: e[i] / total[i[:-1]], "out")


_EXPRESSIONS = ((MatMul, _matmul), (FullyConnected, _fc), (Conv2d, _conv2d), (Pool2d, _pool),
                (Relu, _elementwise(_relu)), (Relu6, _elementwise(_relu6)),
                (Add, _elementwise(lambda a, b, dtype: a + b)), (Softmax, _softmax))


# -- the child ----------------------------------------------------------------------------


def _import_tensor_intrinsics() -> None:
    """Import MetaSchedule's tensor intrinsics (every tune imports them) with a quick
    ``inspect.stack``: TVMScript calls it once per intrinsic, and the standard one
    looks every frame's module up among all loaded modules (minutes of CPU here)."""
    import inspect
    import linecache

    def stack(context: int = 1) -> list:
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            name, line = frame.f_code.co_filename, frame.f_lineno
            text = linecache.getline(name, line)
            frames.append(inspect.FrameInfo(frame, name, line, frame.f_code.co_name, [text] if text else None,
                                            0 if text else None))
            frame = frame.f_back
        return frames

    standard, inspect.stack = inspect.stack, stack
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.stack = standard


def target(threads: int):
    """This machine's CPU as a TVM target (a dict, as TVM 0.27 takes them)."""
    import tvm

    cpu = tvm.target.codegen.llvm_get_system_cpu()
    return tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": threads})


def _child(request: dict) -> dict:
    """Tune until the deadline, export the best schedule, say what was found."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    from ..operators import from_dict

    _import_tensor_intrinsics()
    op = from_dict(request["operator"])
    function = prim_func(op)
    if function is None:
        raise SystemExit(f"no TVM expression for {type(op).__name__}")
    started = time.monotonic()
    deadline = started + (request["seconds"] or float("inf"))
    curve: list = []

    @derived_object
    class Deadline(ms.measure_callback.PyMeasureCallback):
        """Ends the task once the deadline has passed; notes the best time so far."""

        def apply(self, scheduler, task_id, candidates, builds, runs) -> None:
            times = [float(np.mean([float(t) for t in r.run_secs])) for r in runs if r.error_msg is None]
            previous = curve[-1][2] if curve else float("inf")
            trials = (curve[-1][1] if curve else 0) + len(runs)
            curve.append((time.monotonic() - started, trials, min([previous, *times])))
            if time.monotonic() > deadline:
                scheduler.terminate_task(task_id)

    tvm_target = target(request["threads"])
    work = Path(request["dir"])
    work.mkdir(parents=True, exist_ok=True)
    database = ms.tir_integration.tune_tir(
        function, tvm_target, str(work / "metaschedule"), max_trials_global=request["trials"] or 1_000_000,
        num_trials_per_iter=TRIALS_PER_ROUND, seed=request["seed"], num_tuning_cores=request["threads"],
        builder=ms.builder.LocalBuilder(max_workers=request["threads"], initializer=_import_tensor_intrinsics),
        measure_callbacks=[*ms.MeasureCallback.create("default"), Deadline()])
    schedule = ms.tir_integration.compile_tir(database, function, tvm_target)
    if schedule is None:
        raise SystemExit("MetaSchedule measured no correct candidate")
    library = work / "metaschedule.so"
    tvm.compile(schedule.mod, target=tvm_target).export_library(str(library))
    return {"library": str(library), "trials": curve[-1][1] if curve else 0, "curve": curve}


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
