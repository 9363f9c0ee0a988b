"""The worker process of ``WorkerProcess``: ``python -m evokernel.evaluators._worker FD``.

Receives the task, then checks and times one kernel library per request until its
parent closes the connection.
"""

import sys
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path

from ..codegen import NativeKernel, load_runtime
from ._protocol import Protocol, run_one


def serve(conn: Connection) -> None:
    """Worker loop: receive the task, then check and time kernels until EOF."""
    kind, task = conn.recv()
    runtime = load_runtime(Path(task.runtime), task.threads)
    conn.send(("ready", None))
    while True:
        try:
            kind, request = conn.recv()
        except EOFError:
            return
        kernel = NativeKernel(Path(request["library"]), request["function"], runtime,
                              task.shapes, task.dtypes)
        result = run_one(kernel, task, Protocol(**request["protocol"]), request["best"])
        conn.send(("result", {**asdict(result), "outcome": result.outcome.value}))


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
