"""evokernel: evolve fast Halide schedules for neural-network operators.

>>> import numpy as np, evokernel as ek
>>> op = ek.operators.matmul(m=64, n=48, k=32)
>>> kernel = ek.tune(op, target="host", budget=4, seed=0)
>>> a = np.random.rand(64, 32).astype(np.float32); b = np.random.rand(32, 48).astype(np.float32)
>>> bool(np.allclose(kernel(a, b), a @ b, rtol=1e-4, atol=1e-4))
True
"""

from . import errors, evaluators, operators
from ._progress import TuningProgress
from .errors import (BudgetError, CacheError, EvokernelError, ExportError, KernelCallError, NotTunedError,
                     OperatorArgumentError, SearchSettingsError, TargetError, TuningError,
                     UnsupportedDtypeError)
from .evaluators import Outcome, Result
from .genome import Genome
from .runtime import Kernel
from .runtime._catalog import CachedKernel, cached_kernels
from .runtime._cross import CompiledObject, compile_for
from .runtime._export_c import CLibrary, export_c
from .runtime._export_tengine import export_tengine_plugin
from .runtime._records import records
from .runtime._store import load, load_kernel
from .search import Budget, SearchSettings
from .target import Target
from .tuner import tune

__version__ = "0.1.0"

__all__ = [
    "tune", "compile_for", "CompiledObject", "load", "load_kernel", "records", "cached_kernels", "CachedKernel", "export_c", "CLibrary",
    "export_tengine_plugin", "ExportError", "TuningProgress", "Kernel", "Target",
    "Budget", "SearchSettings", "Genome", "Outcome", "Result", "operators", "evaluators", "errors",
    "EvokernelError", "OperatorArgumentError", "UnsupportedDtypeError", "TargetError", "KernelCallError",
    "BudgetError", "SearchSettingsError", "TuningError", "CacheError", "NotTunedError", "__version__",
]
