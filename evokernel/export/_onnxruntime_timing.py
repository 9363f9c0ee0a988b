"""Time a tuned step of a model in ONNX Runtime both ways: the step's original nodes
run by ONNX Runtime's CPU kernels, and its custom node run by an evokernel library,
each as a model of its own, side by side in one process.

A node alone pays for the layout conversions ONNX Runtime wraps around it (its
blocked-channel convolutions reorder their input and output); between other nodes
of that layout it may not. The comparison is the one that matters for a node left
among evokernel nodes, and favours the kernels a little for a node left among ONNX
Runtime's own.
"""

from __future__ import annotations

import numpy as np

from .._timing import SideBySide, time_side_by_side
from ..errors import ExportError

#: Six rounds of batches of at least 6 ms each: a node takes microseconds to milliseconds.
#: Each batch after a pause: the other session's idle intra-op threads spin for a while
#: after its batch, and a batch started among them gets half the cores.
PROTOCOL = SideBySide(rounds=6, min_time=0.006, settle=0.1)


def onnxruntime():
    """The ``onnxruntime`` module, or ``ExportError`` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ExportError("timing nodes in ONNX Runtime needs onnxruntime: pip install onnxruntime") from error
    return onnxruntime


def step_times(pairs: list[tuple[bytes, bytes]], library: str, seed: int = 0) -> list[tuple[float, float] | str]:
    """For each (original, custom) pair of one-step models: ONNX Runtime's seconds
    per call of each (the custom one with ``library`` registered), timed side by
    side; or why they could not be timed."""
    ort = onnxruntime()
    rng = np.random.default_rng(seed)
    found = []
    for original, custom in pairs:
        try:
            sessions = {"onnxruntime": _session(ort, original, None), "evokernel": _session(ort, custom, library)}
            calls = {name: _call(s, rng) for name, s in sessions.items()}
            timings = time_side_by_side(calls, PROTOCOL)
            found.append((timings["onnxruntime"].median, timings["evokernel"].median))
        except Exception as error:  # ORT raises its own exception types; its message says what
            found.append(f"not timed: ONNX Runtime cannot run the node alone ({str(error).splitlines()[0]})")
    return found


def _session(ort, model: bytes, library: str | None):
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    if library is not None:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _call(session, rng):
    """A call of ``session`` on random inputs of its shapes."""
    feeds = {i.name: rng.standard_normal([int(d) for d in i.shape]).astype(np.float32) for i in session.get_inputs()}
    return lambda: session.run(None, feeds)
