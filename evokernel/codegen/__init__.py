"""Code generation: a genome compiled to an object, linked into a small shared
library, loaded and called on NumPy arrays; the C shim, the Halide runtime library
per target and the private cache directory where compiled code lives.

It knows nothing of search, records or Ray: the floors above build on it.
"""

from ._build import FUNCTION, Artifact, CompiledObject, build, compile_files, compile_object
from ._native import (NativeKernel, compiler, default_threads, install_library, link_kernel, load_runtime,
                      native_runtime, run_tool, runtime_library)
from ._paths import ENV_VAR, cache_dir, check_private, native_dir, subdir, write_atomic

__all__ = [
    "FUNCTION", "Artifact", "CompiledObject", "build", "compile_files", "compile_object",
    "NativeKernel", "compiler", "default_threads", "install_library", "link_kernel", "load_runtime", "native_runtime",
    "run_tool",
    "runtime_library", "ENV_VAR", "cache_dir", "check_private", "native_dir", "subdir", "write_atomic",
]
