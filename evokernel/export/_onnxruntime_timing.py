"""Time whole models in ONNX Runtime, side by side in one process, and each of
their nodes as ONNX Runtime's profiler measures it in the running graph.

A node timed in its graph is timed as it runs there: among neighbours of the same
layout (ONNX Runtime's blocked-channel convolutions keep activations in their own
layout between them and reorder only at the edges of such a run), with its
inputs fresh from the node before. Timed alone, a node pays for reorders it does
not pay in its graph, and finds its inputs in cache: both favour the custom
kernel. On SqueezeNet (Intel Xeon, 2 vCPUs) 27 of 30 tuned kernels beat ONNX
Runtime's nodes timed alone, and 1 of 30 in the graph.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._timing import SideBySide, time_side_by_side
from ..errors import ExportError

#: Nine rounds of batches of at least 50 ms each, each batch after a pause: the
#: other session's idle intra-op threads spin for a while after its batch, and a
#: batch started among them gets half the cores.
PROTOCOL = SideBySide(rounds=9, min_time=0.05, settle=0.1)
_NODE_EVENT = "_kernel_time"


@dataclass(frozen=True)
class Profile:
    """A model's median seconds per run, and each node's (by the node's name in
    ONNX Runtime's optimised graph)."""

    seconds: float
    nodes: dict[str, float]


def onnxruntime():
    """The ``onnxruntime`` module, or ``ExportError`` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ExportError("timing nodes in ONNX Runtime needs onnxruntime: pip install onnxruntime") from error
    return onnxruntime


def profiles(models: dict[str, bytes], library: str, shapes: dict, directory: Path, seed: int = 0
             ) -> dict[str, Profile]:
    """Each of ``models`` (serialised, run with ``library`` registered) timed by
    ONNX Runtime on random inputs (of ``shapes``, by value name, where an input's
    own shape is not fixed), the models side by side; the profiler's files are
    written under ``directory`` and removed."""
    ort = onnxruntime()
    rng = np.random.default_rng(seed)
    try:
        sessions = {name: _session(ort, model, library, directory / name) for name, model in models.items()}
        timings = time_side_by_side({name: _call(s, shapes, rng) for name, s in sessions.items()}, PROTOCOL)
    except Exception as error:  # ORT raises its own exception types; its message says what
        raise ExportError(f"ONNX Runtime cannot run the model to time it: {str(error).splitlines()[0]}") from error
    return {name: Profile(timings[name].median, _node_medians(Path(s.end_profiling())))
            for name, s in sessions.items()}


def _session(ort, model: bytes, library: str, profile: Path):
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(profile)
    options.register_custom_ops_library(library)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _call(session, shapes: dict, rng):
    """A call of ``session`` on random inputs of ``shapes``."""
    feeds = {i.name: rng.standard_normal(shapes[i.name]).astype(np.float32) for i in session.get_inputs()}
    return lambda: session.run(None, feeds)


def _node_medians(path: Path) -> dict[str, float]:
    """Node name -> median seconds of its runs, from a profiler's file (then removed)."""
    runs: dict[str, list[float]] = {}
    for event in json.loads(path.read_text()):
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith(_NODE_EVENT):
            runs.setdefault(name[:-len(_NODE_EVENT)], []).append(event["dur"] * 1e-6)
    path.unlink()
    return {name: statistics.median(seconds) for name, seconds in runs.items()}
