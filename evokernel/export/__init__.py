"""Exporters: tuned kernels as a C library, a Tengine plugin, an ONNX Runtime
custom-op library with its rewritten model, or objects for other targets
(cross-compilation).

Every exporter takes the kernels (``export_onnxruntime``: a tuned model) and a path
first, options after, and is registered
by name in ``EXPORTERS`` (what ``evokernel export NAME`` runs).
"""

from ._c import CLibrary, export_c
from ._cross import compile_for
from ._onnxruntime import export_onnxruntime
from ._tengine import export_tengine_plugin

#: Name -> exporter ``(kernels, path, **options)``. Registering one is one line.
EXPORTERS = {"c": export_c, "tengine": export_tengine_plugin, "onnxruntime": export_onnxruntime}

__all__ = ["EXPORTERS", "CLibrary", "export_c", "export_tengine_plugin", "export_onnxruntime", "compile_for"]
