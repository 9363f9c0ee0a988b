"""Exporters: tuned kernels as a C library, a Tengine plugin, or objects for other
targets (cross-compilation).

Every exporter takes the kernels and a path first, options after, and is registered
by name in ``EXPORTERS`` (what ``evokernel export NAME`` runs).
"""

from ._c import CLibrary, export_c
from ._cross import compile_for
from ._tengine import export_tengine_plugin

#: Name -> exporter ``(kernels, path, **options)``. Registering one is one line.
EXPORTERS = {"c": export_c, "tengine": export_tengine_plugin}

__all__ = ["EXPORTERS", "CLibrary", "export_c", "export_tengine_plugin", "compile_for"]
