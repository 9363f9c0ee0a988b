"""Kernels of another platform, run under an emulator (qemu-user): the check against
the reference is real, the timings are the emulator's.

A kernel for another platform (``arm-64-linux`` on an x86 machine) cannot be loaded
into this Python. It is linked with that platform's cross toolchain instead and run
in the kernel harness (``evokernel.codegen.harness_program``), a small program of
that platform, under the emulator configured for it:
``$EVOKERNEL_EMULATOR_<ARCH>_<BITS>_<OS>`` (a command line, such as
``qemu-aarch64 -L /opt/sysroot``), else qemu-user's program for the architecture,
with Debian's cross sysroot where it is installed (``qemu-aarch64 -L
/usr/aarch64-linux-gnu``). The checking and timing protocol is ``run_one``'s,
unchanged: the harness is a kernel whose calls go over a pipe.

``EmulatedProcess`` is the worker of a runner node whose CPU is not its target's
(an x86 node started with the resource ``evokernel-runner:arm-64-linux``: a stand-in
for an ARM board that checks correctness); ``EmulatedRunner`` does the same without
Ray, asked for by name, never chosen behind the user's back: an emulator's timings
say nothing about the target's speed.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..codegen import TRIPLES, harness_program, host_platform, platform, toolchain
from ..errors import EvokernelError, KernelRuntimeError, TargetError
from ..target import Target
from ._context import Context
from ._protocol import Measurement, Protocol, Task, run_one
from ._result import Outcome
from ._runner import _WorkerRunner

#: Platform -> qemu-user's program for it.
QEMU = {"arm-64-linux": "qemu-aarch64", "arm-32-linux": "qemu-arm", "x86-64-linux": "qemu-x86_64",
        "x86-32-linux": "qemu-i386", "riscv-64-linux": "qemu-riscv64", "powerpc-64-linux": "qemu-ppc64le"}
_TYPE_CODES = {"i": 0, "u": 1, "f": 2}  # halide_type_code_t


def emulator_env_var(platform_name: str) -> str:
    """The environment variable that sets the emulator of a platform.

    >>> emulator_env_var("arm-64-linux")
    'EVOKERNEL_EMULATOR_ARM_64_LINUX'
    """
    return "EVOKERNEL_EMULATOR_" + platform_name.upper().replace("-", "_")


def emulator_for(target: "str | Target") -> tuple[str, ...] | None:
    """The command line that runs programs of ``target``'s platform here (the
    program to run follows it), or ``None`` where none is configured or installed.
    GPU targets are never emulated. Raises ``TargetError`` for a configured
    emulator that is not installed."""
    target = Target.parse(target)
    if target.is_gpu:
        return None
    name = platform(target)
    configured = os.environ.get(emulator_env_var(name), "").strip()
    if configured:
        command = tuple(shlex.split(configured))
        if shutil.which(command[0]) is None:
            raise TargetError(f"${emulator_env_var(name)} names {command[0]!r}, which is not installed")
        return command
    program = QEMU.get(name)
    if program is None or shutil.which(program) is None:
        return None
    sysroot = Path("/usr", TRIPLES.get(name, "none"))
    return (program, "-L", str(sysroot)) if sysroot.is_dir() else (program,)


def no_emulator(target: Target) -> TargetError:
    """The error for a target of another platform that no emulator here runs."""
    name = platform(target)
    install = ""
    if name in QEMU and name in TRIPLES:
        install = (f"install qemu-user ({QEMU[name]}) and the cross toolchain (Debian: apt-get install qemu-user "
                   f"gcc-{TRIPLES[name]}), or ")
    return TargetError(
        f"target {target.string} is not this machine's platform ({host_platform()}) and no emulator for "
        f"{name} is installed: {install}set ${emulator_env_var(name)} to an emulator's command line")


def required_emulator(target: Target) -> tuple[str, ...]:
    """``emulator_for(target)``, or the ``TargetError`` saying how to get one."""
    command = emulator_for(target)
    if command is None:
        raise no_emulator(target)
    return command


class _Ended(Exception):
    """The harness process ended (a crash in the kernel, or it could not start)."""


class _TimedOut(Exception):
    """The harness gave no answer in time (and was killed)."""


class EmulatedProcess:
    """The worker of ``WorkerProcess``'s kind for kernels of another platform: each
    kernel runs in its own harness process under ``emulator``, which is killed on
    a timeout and whose crash is the kernel's alone. ``startup_timeout`` bounds the
    emulator's start and the libraries' loading, which are not the kernel's time.
    The harness keeps the task's inputs; the kernel is called on them."""

    startup_timeout = 120.0

    def __init__(self, task: Task, target: Target, emulator: Sequence[str], directory: Path):
        self.task = dataclasses.replace(task, movable=False)  # the harness holds the inputs
        self.target, self.emulator = target, tuple(emulator)
        self.harness = harness_program(target.string, directory)
        if len(task.shapes) > 16:  # MAX_BUFFERS in _harness.c
            raise TargetError(f"the kernel harness takes 16 arrays at most, this kernel has {len(task.shapes)}")
        self._tmp = tempfile.TemporaryDirectory(prefix="evokernel-emulated-")
        self.directory = Path(self._tmp.name)  # the harness's working directory: the spec names files in it
        self.output_path = self.directory / "out.bin"
        lines = []
        for i, (shape, dtype) in enumerate(zip(task.shapes, task.dtypes)):
            name = "out.bin" if i == len(task.shapes) - 1 else f"in{i}.bin"
            if i < len(task.inputs):
                np.ascontiguousarray(task.inputs[i], dtype=dtype).tofile(self.directory / name)
            else:
                np.zeros(shape, dtype).tofile(self.directory / name)
            dt = np.dtype(dtype)
            lines.append(f"buffer {name} {_TYPE_CODES[dt.kind]} {dt.itemsize * 8} {len(shape)} "
                         f"{' '.join(map(str, shape))}")
        (self.directory / "spec").write_text("\n".join(lines) + "\n")

    def measure(self, library: Path, function: str, protocol: Protocol, best: float | None,
                timeout: float) -> Measurement:
        """Check and time one kernel library, as ``WorkerProcess.measure`` does;
        never raises for the kernel's faults."""
        kernel = _HarnessKernel(self, library, function)
        try:
            kernel.start()
            kernel.deadline = time.monotonic() + timeout
            return run_one(kernel, self.task, protocol, best)
        except _TimedOut:
            return Measurement(Outcome.RUN_TIMEOUT, message=f"no result after {timeout:.3g} s ({self.runs_under})")
        except _Ended as ended:
            return Measurement(Outcome.RUN_CRASH, message=str(ended))
        finally:
            kernel.close()

    @property
    def runs_under(self) -> str:
        return f"under {self.emulator[0]}" if self.emulator else "in the harness"

    def close(self) -> None:
        self._tmp.cleanup()


class _HarnessKernel:
    """One kernel in a harness process, called as ``run_one`` calls a
    ``NativeKernel``: ``kernel(arrays)`` and ``kernel.time(sets, calls)``."""

    def __init__(self, owner: EmulatedProcess, library: Path, function: str):
        self.owner, self.library, self.function = owner, library, function
        self.deadline = time.monotonic() + owner.startup_timeout
        self._proc: subprocess.Popen | None = None
        self._pending = b""
        self._stderr = owner.directory / "stderr.txt"

    def start(self) -> None:
        owner = self.owner
        command = [*owner.emulator, str(owner.harness), str(Path(owner.task.runtime).resolve()),
                   str(Path(self.library).resolve()), self.function, str(owner.task.threads), "spec"]
        try:
            with open(self._stderr, "wb") as err:
                self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                              cwd=owner.directory, start_new_session=True)
        except OSError as error:
            raise _Ended(f"cannot start the harness {owner.runs_under}: {error}") from None
        try:  # no core files from a crashing kernel (qemu-user writes one where the limit allows)
            resource.prlimit(self._proc.pid, resource.RLIMIT_CORE, (0, 0))
        except (OSError, AttributeError):  # pragma: no cover - it exited already, or not Linux
            pass
        try:
            ready = self._reply()
        except _TimedOut:
            raise _Ended(f"the harness did not start {owner.runs_under} within {owner.startup_timeout:g} s") from None
        if ready != "ready":
            raise _Ended(self._death())

    def __call__(self, arrays: Sequence[np.ndarray]) -> None:
        self._check(arrays)
        np.ascontiguousarray(arrays[-1]).tofile(self.owner.output_path)
        self._request("call")
        out = np.fromfile(self.owner.output_path, dtype=arrays[-1].dtype).reshape(arrays[-1].shape)
        np.copyto(arrays[-1], out)

    def time(self, sets: Sequence[Sequence[np.ndarray]], calls: int, fresh: bool = False) -> np.ndarray:
        """Back-to-back calls in the harness on the one set it holds (rotating sets
        and ``fresh`` inputs are not modelled under emulation)."""
        for arrays in sets:
            self._check(arrays)
        words = self._request(f"time {int(calls)}")
        return np.array([float(w) for w in words[1:]], dtype=np.float64)

    def _check(self, arrays: Sequence[np.ndarray]) -> None:
        if any(a is not b for a, b in zip(arrays, self.owner.task.inputs)):
            raise ValueError("an emulated kernel is called on its task's inputs, which its harness holds")

    def _request(self, command: str) -> list[str]:
        try:
            self._proc.stdin.write(f"{command}\n".encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Ended(self._death()) from None
        reply = self._reply()
        if reply.startswith("error "):
            _, rc, message = (reply + " ").split(" ", 2)
            raise KernelRuntimeError(f"kernel returned error {rc}: {message.strip() or 'no message'}")
        return reply.split()

    def _reply(self) -> str:
        """The harness's next line, or ``_TimedOut`` (it is killed) past the deadline."""
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._pending:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                self.close()
                raise _TimedOut()
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _Ended(self._death())
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace").strip()

    def _death(self) -> str:
        """How the harness ended: the signal that killed the kernel, or its message."""
        try:
            rc = self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.close()
            return "the harness stopped answering"
        if rc < 0:
            return f"killed by signal {signal.Signals(-rc).name}"
        lines = [line for line in self._stderr.read_text(errors="replace").splitlines() if line.strip()]
        return f"harness exited with status {rc}" + (f": {lines[-1].strip()}" if lines else "")

    def close(self) -> None:
        """Kill the harness (its whole process group) if it still runs; idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class EmulatedRunner(_WorkerRunner):
    """Runs kernels of another platform here, under an emulator: ``emulator`` is its
    command line (a string or a list), else the one configured or installed for the
    target's platform (``emulator_for``). Correctness is checked for real; the
    times are the emulator's and say nothing of the target's speed, so tune for
    speed on the target itself (a Ray node on it) and use this to check schedules.

    For example (with qemu-user and gcc-aarch64-linux-gnu installed)::

        ev = ek.evaluators.Evaluator(ek.evaluators.LocalBuilder(), ek.evaluators.EmulatedRunner())
        kernel = ek.tune(ek.operators.relu(64), "arm-64-linux", budget=4, evaluator=ev)
        ek.export_c([kernel], "build/", name="relu_arm")   # an AArch64 library, schedule checked
    """

    def __init__(self, emulator: "Sequence[str] | str | None" = None):
        if isinstance(emulator, str):
            emulator = shlex.split(emulator)
        if emulator is not None and (not emulator or not all(isinstance(w, str) for w in emulator)):
            raise TargetError(f"emulator must be a command line (a string or a list of strings), got {emulator!r}")
        self.emulator = tuple(emulator) if emulator is not None else None
        self._worker: EmulatedProcess | None = None

    def _command(self, target: Target) -> tuple[str, ...]:
        if self.emulator is not None:
            if shutil.which(self.emulator[0]) is None:
                raise TargetError(f"the emulator {self.emulator[0]!r} is not installed")
            return self.emulator
        return required_emulator(target)

    def check_target(self, target: Target) -> None:
        """Raise ``TargetError`` unless an emulator and a toolchain for ``target``'s
        platform are here (GPU targets are never emulated)."""
        if target.is_gpu:
            raise TargetError(f"target {target.string}: a GPU target cannot be emulated; tune it where its "
                              "device is (a Ray node offering its runner resource)")
        self._command(target)
        try:
            toolchain(target).cc(TargetError)
        except EvokernelError as error:
            raise TargetError(str(error)) from error

    def prepare(self, context: Context) -> None:
        self.close()
        super().prepare(context)
        self._worker = EmulatedProcess(context.task(), context.target, self._command(context.target),
                                       context.native_dir)
