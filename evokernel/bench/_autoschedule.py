"""Halide's own autoschedulers as baselines, each run in a child process.

An autoscheduler that meets a parameter it does not know (or trips over a
pipeline) aborts the whole process, so every (operator, autoscheduler) pair is
scheduled and compiled in a fresh child: ``python -m evokernel.bench._autoschedule``.
The child compiles an object without the Halide runtime, exactly as evokernel's
builder does, so the parent links and times it like an evokernel kernel.
``name=None`` compiles the unscheduled pipeline the same way (``tune``'s baseline:
Halide's default schedule with reductions computed once at root).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..codegen import FUNCTION

AUTOSCHEDULERS = ("Mullapudi2016", "Li2018", "Adams2019")


@dataclass(frozen=True)
class Compiled:
    """An object file for the parent to link, or the reason there is none; the
    autoscheduler's schedule source; seconds the child took (schedule and compile)."""

    object_bytes: bytes | None
    schedule: str = ""
    seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.object_bytes is not None


def plugin_path(name: str) -> Path:
    """The autoscheduler plugin shipped in Halide's wheel."""
    import halide as hl

    return Path(hl.__file__).parent / "lib64" / f"libautoschedule_{name.lower()}.so"


def compile_isolated(operator, name: str | None, target: str, parallelism: int, params: dict | None = None,
                     timeout: float = 600.0) -> Compiled:
    """Schedule ``operator`` with autoscheduler ``name`` (``None``: leave it
    unscheduled) and compile it for ``target``, in a child process; any abort,
    error or timeout there comes back as a ``Compiled`` with ``error`` set."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "kernel.o")
        request = {"operator": operator.to_dict(), "name": name, "target": target, "out": str(out),
                   "params": {"parallelism": str(parallelism), **(params or {})}}
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", __name__], input=json.dumps(request), text=True,
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Compiled(None, seconds=timeout, error=f"timed out after {timeout:g} s")
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            return Compiled(None, seconds=seconds, error=_failure(done.returncode, done.stderr))
        return Compiled(out.read_bytes(), json.loads(done.stdout.strip().splitlines()[-1]), seconds)


def _failure(rc: int, stderr: str) -> str:
    """How the child ended, with its stderr from the last line that names an error."""
    how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    named = [i for i, line in enumerate(lines) if "error" in line.lower()]
    return f"{how}: {' / '.join(lines[named[-1] if named else -1:])[:400]}" if lines else how


def _child(request: dict) -> str:
    """Schedule and compile as asked; returns the schedule's source."""
    import halide as hl

    from ..operators import from_dict

    operator = from_dict(request["operator"])
    algorithm = operator.algorithm()
    target = hl.Target(request["target"])
    if request["name"] is None:  # tune()'s baseline: Halide's default, reductions once at root
        from ..genome import ScheduleSpace, apply, unscheduled

        space = ScheduleSpace.from_algorithm(algorithm, 1, 1)
        schedule = apply(unscheduled(space), algorithm, space)
    else:
        for param, spec in zip(algorithm.inputs, operator.inputs):
            param.set_estimates([hl.Range(0, extent) for extent in reversed(spec.shape)])
        algorithm.output.func.set_estimates([hl.Range(0, extent) for extent in reversed(operator.output.shape)])
        hl.load_plugin(str(plugin_path(request["name"])))
        result = algorithm.pipeline().apply_autoscheduler(
            target, hl.AutoschedulerParams(request["name"], request["params"]))
        schedule = result.schedule_source
    algorithm.pipeline().compile_to({hl.OutputFileType.object: request["out"]}, algorithm.inputs, FUNCTION,
                                    target.with_feature(hl.TargetFeature.NoRuntime))
    return schedule


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
