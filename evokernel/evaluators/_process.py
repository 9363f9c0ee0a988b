"""A killable worker process that checks and times kernels for its parent.

Generated code can crash, hang or run a thousand times slower than the best
candidate. Kernels are therefore called in a child process the parent can kill: a
timeout becomes ``run_timeout``, a signal ``run_crash``, and the next candidate gets
a fresh worker. The worker keeps the task's inputs and reference output, so each
candidate costs one small message.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path

from ._protocol import Measurement, Protocol, Task
from ._result import Outcome


class WorkerProcess:
    """Parent side of the worker process, restarted whenever it dies or is killed."""

    def __init__(self, task: Task):
        self.task = task
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None

    def measure(self, library: Path, function: str, protocol: Protocol, best: float | None,
                timeout: float) -> Measurement:
        """Check and time one kernel library against the ``best`` time so far (``None``:
        time it fully); never raises for the kernel's faults."""
        conn = self._connection()
        conn.send(("run", {"library": str(library), "function": function,
                           "protocol": asdict(protocol), "best": best}))
        try:
            if not conn.poll(timeout):
                self.close()
                return Measurement(Outcome.RUN_TIMEOUT, message=f"no result after {timeout:.3g} s")
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return Measurement(Outcome.RUN_CRASH, message=self._death())
        return Measurement(Outcome(payload["outcome"]), tuple(payload["times"]),
                           payload["max_error"], payload["message"])

    def _connection(self) -> Connection:
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        return self._conn

    def _start(self) -> None:
        self.close()
        parent, child = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "evokernel.evaluators._worker", str(child.fileno())],
            pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        child.close()
        self._conn = Connection(parent.detach())
        self._conn.send(("task", self.task))
        kind, payload = self._conn.recv()
        if kind != "ready":
            raise RuntimeError(f"runner worker failed to start: {payload}")

    def _death(self) -> str:
        proc = self._proc
        self._proc = None
        if proc is None:
            return "worker lost"
        rc = proc.wait()
        if rc < 0:
            return f"killed by signal {signal.Signals(-rc).name}"
        return f"worker exited with status {rc}"

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
