"""evokernel: evolve fast Halide schedules for neural-network operators.

>>> import numpy as np, evokernel as ek
>>> op = ek.operators.matmul(m=64, n=48, k=32)
>>> kernel = ek.tune(op, target="host", budget=4, seed=0)
>>> a = np.random.rand(64, 32).astype(np.float32); b = np.random.rand(32, 48).astype(np.float32)
>>> bool(np.allclose(kernel(a, b), a @ b, rtol=1e-4, atol=1e-4))
True
"""

from . import errors, evaluators, export, models, operators, search, store
from ._progress import TuningProgress
from ._version import __version__
from .codegen import CompiledObject, set_spin
from ._threads import thread_advice
from .errors import (ArgumentError, BudgetError, BuildError, CacheError, ClusterError, EvokernelError, ExportError,
                     KernelCallError, ModelError, NoGradientError, NotTunedError, OperatorArgumentError,
                     SearchSettingsError, TargetError, TuningError, UnsupportedDtypeError, UntrustedBundleError)
from .evaluators import Outcome, Result
from .export import CLibrary, compile_for, export_c, export_onnxruntime, export_tengine_plugin
from .genome import Genome
from .models import TunedModel, load_model, tune_model
from .search import Budget, SearchSettings
from .store import CachedKernel, Kernel, KernelMeta, cached_kernels, load, load_kernel, prune_cache, records
from .target import Target
from .tuner import tune

__all__ = [
    "tune", "tune_model", "TunedModel", "load_model", "ModelError", "compile_for", "CompiledObject", "load",
    "load_kernel", "records", "cached_kernels", "CachedKernel", "export_c", "CLibrary", "thread_advice", "set_spin",
    "export_tengine_plugin", "export_onnxruntime", "ExportError", "TuningProgress", "Kernel", "Target",
    "Budget", "SearchSettings", "Genome", "Outcome", "Result", "KernelMeta", "operators", "evaluators", "search",
    "store", "export", "errors", "BuildError",
    "EvokernelError", "OperatorArgumentError", "UnsupportedDtypeError", "TargetError", "KernelCallError",
    "BudgetError", "SearchSettingsError", "TuningError", "CacheError", "NotTunedError", "ArgumentError", "ClusterError",
    "UntrustedBundleError", "NoGradientError", "prune_cache", "__version__",
]


def __getattr__(name: str):
    """``ek.torch``, imported on first use: ``import evokernel`` does not import PyTorch."""
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
