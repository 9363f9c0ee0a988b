"""What tuning leaves behind: records of every evaluation, the kernel cache, Kernel.

``Records``, ``records``, ``load`` and ``load_kernel`` are imported on first use
(PEP 562): they build on the evaluators, which themselves use this package's
native-library helpers.
"""

from ._kernel import Kernel, Signature, TuningStats

_LAZY = {"Records": "_records", "records": "_records", "load": "_store", "load_kernel": "_store",
         "cached_kernels": "_catalog", "CachedKernel": "_catalog",
         "export_c": "_export_c", "CLibrary": "_export_c", "ExportError": "_export_c",
         "export_tengine_plugin": "_export_tengine"}

__all__ = ["Kernel", "Signature", "TuningStats", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
