"""Code generation: a genome compiled to an object, linked into a small shared
library, loaded and called on NumPy arrays; the C shim, the Halide runtime library
per target, the toolchain that links each platform's code (a cross toolchain for
another's), the harness that runs a kernel in a process of its own platform, and
the private cache directory where compiled code lives.

It knows nothing of search, records or Ray: the floors above build on it.
"""

from ._build import FUNCTION, Artifact, CompiledObject, build, compile_files, compile_object
from ._harness import harness_program
from ._native import (DEFAULT_SPIN, SPIN_VAR, NativeKernel, compiler, default_threads, install_library, link_kernel, load_runtime,
                      native_runtime, openmp_calls, PAGE, page_aligned, page_aligned_copy, run_tool, runtime_library,
                      set_spin, spin, spinning, use_openmp)
from ._paths import (DAMAGED, ENV_VAR, PARTIAL, cache_dir, check_private, native_dir, read_private, set_aside, subdir,
                     write_atomic)
from ._prune import Removal, prune_native
from ._toolchain import TRIPLES, Toolchain, host_platform, platform, toolchain

__all__ = [
    "FUNCTION", "Artifact", "CompiledObject", "build", "compile_files", "compile_object",
    "NativeKernel", "compiler", "default_threads", "install_library", "link_kernel", "load_runtime", "native_runtime",
    "openmp_calls", "use_openmp", "DEFAULT_SPIN", "SPIN_VAR", "set_spin", "spin", "spinning", "PAGE", "page_aligned", "page_aligned_copy", "run_tool",
    "runtime_library", "ENV_VAR", "cache_dir", "check_private", "native_dir", "subdir", "write_atomic",
    "read_private", "set_aside", "DAMAGED", "PARTIAL", "prune_native", "Removal",
    "harness_program", "TRIPLES", "Toolchain", "host_platform", "platform", "toolchain",
]
