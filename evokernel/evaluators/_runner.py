"""Runners check a built kernel against the reference and time it on the target,
one kernel at a time, with nothing else running on that device."""

from __future__ import annotations

import abc

from ..codegen import FUNCTION, Artifact, NativeKernel, load_runtime
from ..errors import EvokernelError, TargetError
from ..target import Target
from ._cluster import runner_resources
from ._context import Context
from ._process import WorkerProcess
from ._protocol import Measurement, Protocol, run_one
from ._result import Outcome


class Runner(abc.ABC):
    """Checks and times built kernels for one ``Context`` at a time."""

    def check_target(self, target: Target) -> None:
        """Raise ``TargetError`` unless this runner can execute ``target`` (here:
        this machine's CPU, and its GPU for a GPU target)."""
        if not target.runs_here():
            raise no_runner(target, f"on this machine ({Target.parse('host').string})")

    def prepare(self, context: Context) -> None:
        """Get ready to time kernels of ``context`` (called before every tuning run,
        and again, without ``close``, when a scheduler moves to another operator)."""
        self.context = context

    @abc.abstractmethod
    def measure(self, artifact: Artifact, best: float | None, timeout: float, protocol: Protocol) -> Measurement:
        """Check and time one built kernel as ``protocol`` says, against the ``best``
        time so far (``None``: time it fully); a kernel that crashes, hangs past
        ``timeout`` seconds or computes wrong values is a ``Measurement`` saying so."""

    def close(self) -> None:
        """Release workers; the runner may be prepared again afterwards."""


def no_runner(target: Target, where: str) -> TargetError:
    """The error for a target no runner can execute, with the two ways out."""
    resource = next(iter(runner_resources(target)))
    return TargetError(
        f"no runner can execute target {target.string!r} {where}. Cross-compile for it with "
        f"ek.compile_for(kernel_or_operator, {target.string!r}, path), or tune with evaluator='ray' on a "
        f"Ray cluster where a node offers the runner resource {resource!r} "
        f"(ray start --resources='{{\"{resource}\": 1}}')")


class _LinksHere(Runner):
    """Links each artifact in this process, then runs the library."""

    def measure(self, artifact, best, timeout, protocol):
        try:
            library = self.context.link(artifact)
        except EvokernelError as error:
            return Measurement(Outcome.COMPILE_ERROR, message=str(error))
        return self.run(library, best, timeout, protocol)

    @abc.abstractmethod
    def run(self, library, best: float | None, timeout: float, protocol: Protocol) -> Measurement:
        """Check and time a linked kernel library."""


class _WorkerRunner(_LinksHere):
    """A runner that checks and times in a worker (``_worker``: a ``WorkerProcess``
    or alike) that its ``prepare`` makes."""

    _worker = None

    def run(self, library, best, timeout, protocol):
        return self._worker.measure(library, FUNCTION, protocol, best, timeout)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


class LocalRunner(_WorkerRunner):
    """Checks and times in a worker process that is killed on a timeout and
    replaced after a crash."""

    def prepare(self, context: Context) -> None:
        super().prepare(context)
        if self._worker is None:
            self._worker = WorkerProcess(context.task())
        else:  # the same worker process takes the new operator
            self._worker.retask(context.task())


class InlineRunner(_LinksHere):
    """Calls kernels in this process (no isolation: a crash in generated code ends
    the process, a hang hangs it): for debugging."""

    def prepare(self, context: Context) -> None:
        super().prepare(context)
        self._task = context.task()
        self._runtime = load_runtime(context.runtime, context.threads)

    def run(self, library, best, timeout, protocol):
        kernel = NativeKernel(library, FUNCTION, self._runtime, self._task.shapes, self._task.dtypes)
        return run_one(kernel, self._task, protocol, best)
