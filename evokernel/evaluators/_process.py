"""A killable worker process that checks and times kernels for its parent.

Generated code can crash, hang or run a thousand times slower than the best
candidate. Kernels are therefore called in a child process the parent can kill: a
timeout becomes ``run_timeout``, a signal ``run_crash``, and the next candidate gets
a fresh worker. The worker keeps the task's inputs and reference output, so each
candidate costs one small message. Nothing waits on the worker without a limit: a
worker that does not get ready in time (stopped, starved) is killed and the
candidate it was for is a ``run_crash``; the worker dies with its parent.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path

from ._protocol import Measurement, Protocol, Task
from ._result import Outcome

#: The first worker of a task may take this long to start, plus a second per
#: ``TRANSFER_RATE`` bytes of inputs and reference it is sent; later ones get
#: ``RESTART_FACTOR`` times what the first took, at least ``MIN_RESTART`` seconds.
FIRST_START = 120.0
TRANSFER_RATE = 50e6
RESTART_FACTOR = 5.0
MIN_RESTART = 10.0


class WorkerProcess:
    """Parent side of the worker process, restarted whenever it dies or is killed."""

    first_start_limit = FIRST_START
    restart_factor = RESTART_FACTOR
    min_restart = MIN_RESTART

    def __init__(self, task: Task):
        self.task = task
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self.first_start: float | None = None  # seconds the first worker took to get ready

    @property
    def start_limit(self) -> float:
        """Seconds a new worker may take to get ready before it is given up."""
        if self.first_start is None:
            size = sum(a.nbytes for a in self.task.inputs) + self.task.reference.nbytes
            return self.first_start_limit + size / TRANSFER_RATE
        return max(self.min_restart, self.restart_factor * self.first_start)

    def measure(self, library: Path, function: str, protocol: Protocol, best: float | None,
                timeout: float) -> Measurement:
        """Check and time one kernel library against the ``best`` time so far (``None``:
        time it fully); never raises for the kernel's faults."""
        if self._proc is None or self._proc.poll() is not None:
            problem = self._start()
            if problem is not None:
                return Measurement(Outcome.RUN_CRASH, message=f"runner worker {problem}")
        conn = self._conn
        try:
            conn.send(("run", {"library": str(library), "function": function,
                               "protocol": asdict(protocol), "best": best}))
            if not conn.poll(timeout):
                self.close()
                return Measurement(Outcome.RUN_TIMEOUT, message=f"no result after {timeout:.3g} s")
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return Measurement(Outcome.RUN_CRASH, message=self._death())
        return Measurement(Outcome(payload["outcome"]), tuple(payload["times"]),
                           payload["max_error"], payload["message"], payload.get("overhead", 0.0),
                           tuple(payload.get("placements", ())))

    def retask(self, task: Task) -> None:
        """Work on ``task`` from now on: in the same process while it is alive (no
        new interpreter to start when a scheduler moves to another operator), else
        in the next one started."""
        self.task = task
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            self._conn.send(("task", task))
            if self._conn.poll(self.start_limit) and self._conn.recv()[0] == "ready":
                return
        except (EOFError, OSError):
            pass
        self.close()  # the next measurement starts a fresh worker with the task

    def _start(self) -> str | None:
        """Start a worker and hand it the task; ``None`` once it is ready, else why
        not (it is killed then)."""
        self.close()
        limit, began = self.start_limit, time.monotonic()
        parent, child = socket.socketpair()
        proc = self._proc = subprocess.Popen(
            [sys.executable, "-m", "evokernel.evaluators._worker", str(child.fileno()), str(os.getpid())],
            pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        child.close()
        conn = self._conn = Connection(parent.detach())
        # Sending a large task blocks while the worker does not read: a timer kills a
        # worker that is not ready in time, which ends the send too.
        timer = threading.Timer(limit, proc.kill)
        timer.start()
        try:
            conn.send(("task", self.task))
            if not conn.poll(max(0.0, limit - (time.monotonic() - began))):
                self.close()
                return f"not ready after {limit:.3g} s"
            kind, payload = conn.recv()
        except (EOFError, OSError):
            late = time.monotonic() - began >= limit
            death = self._death()
            self.close()
            return f"not ready after {limit:.3g} s" if late else f"failed to start: {death}"
        finally:
            timer.cancel()
        if kind != "ready":
            self.close()
            return f"failed to start: {payload}"
        if self.first_start is None:
            self.first_start = time.monotonic() - began
        return None

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
