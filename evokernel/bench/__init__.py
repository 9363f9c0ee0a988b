"""The side-by-side benchmark suite: evokernel beside the unscheduled
pipeline, Halide's autoschedulers (Mullapudi2016, Li2018, Adams2019), NumPy and
PyTorch, every output checked, every method timed the same way in one process.

    evokernel bench --budget 3m                    # the default suite, into ./evokernel-bench/
    python -m evokernel.bench --only gemm-1024,conv2d --search both
    evokernel bench --roofline                     # this machine's peak and bandwidths alone

Every run also measures this machine's roofline (``measure``) and states each
kernel's speed as a fraction of it (``bound``).

From Python (tiny shapes, a budget of evaluations):

>>> import evokernel as ek
>>> from evokernel import bench
>>> case = bench.Case("tiny", lambda: ek.operators.relu((4, 64)), "bytes")
>>> config = bench.Config(budget=3, evaluator="local", autoschedulers=(),
...                       protocol=bench.SideBySide(rounds=2, min_time=0.001))
>>> results = bench.run([case], config)
>>> sorted(results["operators"][0]["methods"]), results["operators"][0]["methods"]["numpy"]["status"]
(['evokernel', 'evokernel-call', 'numpy', 'torch', 'unscheduled'], 'ok')
"""

from ._autoschedule import AUTOSCHEDULERS, Compiled, compile_isolated
from ._baselines import numpy_baseline, torch_baseline
from ._cli import main
from ._report import markdown, write
from ._roofline import Roofline, bound, measure
from ._run import Config, machine, run
from ._suite import CLASSES, SHAPES, SUITE, SUITES, Case, select
from .._timing import SideBySide, Timing, time_side_by_side

__all__ = ["main", "run", "Config", "Case", "SUITE", "SHAPES", "CLASSES", "SUITES", "select", "SideBySide", "Timing", "time_side_by_side",
           "AUTOSCHEDULERS", "Compiled", "compile_isolated", "numpy_baseline", "torch_baseline", "markdown", "write",
           "Roofline", "measure", "bound", "machine"]
