"""The worker process of ``WorkerProcess``: ``python -m evokernel.evaluators._worker FD PARENT_PID``.

Receives a task, then checks and times one kernel library per request until its
parent closes the connection; a new task replaces the old one. It dies with its parent (on Linux, by the kernel's
parent-death signal), even in the middle of a kernel that never returns.
"""

import ctypes
import os
import signal
import sys
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path

from ..codegen import NativeKernel, load_runtime
from ._protocol import Protocol, run_one


def serve(conn: Connection) -> None:
    """Worker loop: receive a task, then check and time kernels until EOF; a new
    task (another operator) may come between kernels and replaces the old one."""
    runtime, task = None, None
    while True:
        try:
            kind, request = conn.recv()
        except EOFError:
            return
        if kind == "task":
            try:
                if task is None or (task.runtime, task.threads) != (request.runtime, request.threads):
                    runtime = load_runtime(Path(request.runtime), request.threads)
            except Exception as error:  # noqa: BLE001 - the parent reports it
                conn.send(("error", f"{type(error).__name__}: {error}"))
                return
            task = request
            conn.send(("ready", None))
            continue
        kernel = NativeKernel(Path(request["library"]), request["function"], runtime,
                              task.shapes, task.dtypes)
        result = run_one(kernel, task, Protocol(**request["protocol"]), request["best"])
        conn.send(("result", {**asdict(result), "outcome": result.outcome.value}))


def die_with_parent(parent: int) -> None:
    """Be killed when ``parent`` exits (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit(0)


if __name__ == "__main__":
    die_with_parent(int(sys.argv[2]))
    serve(Connection(int(sys.argv[1])))
