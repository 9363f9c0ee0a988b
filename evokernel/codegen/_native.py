"""Compiled kernels as small shared libraries, called through ctypes.

Why this shape (measured on a 2-core AMD Zen 5 machine, 2026-11): Halide compiles a
pipeline to an object *without* its runtime in ~0.07 s, against ~0.8 s with it, and
linking the object into a shared library takes ~25 ms. So the runtime is compiled once
per target (with evokernel's C shim) into ``libevokernel_runtime_<hash>.so`` in the
cache, and every kernel is a tiny library that depends on it. Objects are the portable
artifact (they move between processes and machines); the library is linked where it
runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import Sequence

import numpy as np
from filelock import FileLock

from ..errors import ArgumentError, BuildError, KernelRuntimeError
from ..target import GPU_APIS
from ._paths import native_dir, read_private, set_aside, write_atomic
from ._scratch import scratch_dir, trim
from ._toolchain import Toolchain, host_platform, toolchain

_TYPE_CODES = {"i": 0, "u": 1, "f": 2}  # halide_type_code_t


class HalideDimension(ctypes.Structure):
    _fields_ = [("min", ctypes.c_int32), ("extent", ctypes.c_int32),
                ("stride", ctypes.c_int32), ("flags", ctypes.c_uint32)]


class HalideType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class HalideBuffer(ctypes.Structure):
    """``halide_buffer_t`` from HalideRuntime.h."""

    _fields_ = [("device", ctypes.c_uint64), ("device_interface", ctypes.c_void_p),
                ("host", ctypes.c_void_p), ("flags", ctypes.c_uint64), ("type", HalideType),
                ("dimensions", ctypes.c_int32), ("dim", ctypes.POINTER(HalideDimension)),
                ("padding", ctypes.c_void_p)]


def describe_buffer(shape: Sequence[int], dtype: str) -> HalideBuffer:
    """A buffer header for a dense row-major array (Halide dim 0 = last axis);
    its ``host`` pointer is filled in per call."""
    dt = np.dtype(dtype)
    dims = (HalideDimension * max(1, len(shape)))()
    stride = 1
    for i, extent in enumerate(reversed(tuple(shape))):
        dims[i] = HalideDimension(0, int(extent), stride, 0)
        stride *= int(extent)
    buf = HalideBuffer()
    buf.type = HalideType(_TYPE_CODES[dt.kind], dt.itemsize * 8, 1)
    buf.dimensions = len(shape)
    buf.dim = dims
    buf._dims = dims  # keep the dimension array alive with the header
    return buf


def default_threads() -> int:
    """Halide's thread pool size: every core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def compiler() -> str:
    """The C compiler/linker used to link kernels for this machine (``$CC``, default ``cc``)."""
    return Toolchain(host_platform()).cc()


def run_tool(cmd: list[str], error: type[Exception] = BuildError) -> None:
    """Run a compiler or binutils command; its failure raises ``error`` with the tool's stderr."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise error(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")


def runtime_library(target: str, directory: Path) -> Path:
    """Build (once, under a file lock) the shared Halide runtime + shim for ``target``,
    with the toolchain of its platform (a cross toolchain for another platform's)."""
    path = directory / _runtime_name(target)
    if _runtime_intact(path):  # the common case: built by an earlier call or process (written atomically)
        return path
    import halide as hl

    with FileLock(str(path) + ".lock"):
        if _runtime_intact(path):
            return path
        if os.path.lexists(path) and os.path.lexists(_runtime_record(path)):
            set_aside(path, "the Halide runtime library", "it does not match the checksum recorded when it was built")
        with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
            runtime_obj, shim_src, lib = Path(tmp, "runtime.o"), Path(tmp, "shim.c"), Path(tmp, path.name)
            hl.compile_standalone_runtime(str(runtime_obj), hl.Target(target))
            shim_src.write_text(_shim_source())
            run_tool([toolchain(target).cc(), "-shared", "-fPIC", "-O2", f"-I{_halide_include()}", "-o", str(lib),
                      str(shim_src), str(runtime_obj), f"-Wl,-soname,{path.name}", "-lpthread", "-ldl", "-lm"])
            data = lib.read_bytes()
            os.replace(lib, path)
        record = {"sha256": hashlib.sha256(data).hexdigest(), "target": target, "halide": metadata.version("halide")}
        write_atomic(_runtime_record(path), json.dumps(record).encode())
    return path


def _runtime_record(path: Path) -> Path:
    """Beside a runtime library: its checksum, target and Halide version (JSON)."""
    return path.with_name(path.name + ".json")


_intact_runtimes: dict[str, tuple] = {}


def _runtime_intact(path: Path) -> bool:
    """Whether the runtime library ``path`` is a private regular file matching the
    checksum recorded when it was built: it is loaded unchecked otherwise, as the
    kernels are not. Checked once per process while the file stays the same."""
    try:
        stamp = tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in map(os.lstat, (path, _runtime_record(path))))
    except FileNotFoundError:
        return False
    if _intact_runtimes.get(str(path)) == stamp:
        return True
    data, record = read_private(path, "the Halide runtime library"), read_private(_runtime_record(path))
    try:
        expected = json.loads(record)["sha256"] if record is not None else None
    except (ValueError, TypeError, KeyError):
        expected = None
    intact = data is not None and hashlib.sha256(data).hexdigest() == expected
    if intact:
        _intact_runtimes[str(path)] = stamp
    return intact


def native_runtime(root: Path, target: str) -> tuple[Path, Path]:
    """The cache ``root``'s directory of compiled code, and in it the runtime library
    for ``target`` (built on first use)."""
    native = native_dir(root)
    return native, runtime_library(target, native)


def _halide_include() -> Path:
    """The wheel's C headers (``HalideRuntime.h``, for the shim)."""
    import halide as hl

    return Path(hl.__file__).parent / "include"


def _shim_source() -> str:
    return resources.files(__package__).joinpath("_shim.c").read_text()


@lru_cache(maxsize=None)
def _runtime_name(target: str) -> str:
    """The runtime library's file name: it changes with the target, Halide and the shim."""
    text = f"{target}\n{metadata.version('halide')}\n{_shim_source()}"
    return f"libevokernel_runtime_{hashlib.sha256(text.encode()).hexdigest()[:16]}.so"


def link_kernel(object_bytes: bytes, runtime: Path, directory: Path, target: "str | None" = None) -> Path:
    """Link a kernel object into a shared library that depends on ``runtime``, with
    the toolchain of ``target``'s platform (``None``: this machine's). Named by
    content, but always relinked (~15 ms): a library is never trusted just because
    a file of that name exists."""
    cc = compiler() if target is None else toolchain(target).cc()
    digest = hashlib.sha256(object_bytes + runtime.name.encode()).hexdigest()[:24]
    scratch = scratch_dir(directory)  # this process's: only the newest few are kept (see _scratch)
    path = scratch / f"kernel_{digest}.so"
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        obj, lib = Path(tmp, "kernel.o"), Path(tmp, "kernel.so")
        obj.write_bytes(object_bytes)
        run_tool([cc, "-shared", "-o", str(lib), str(obj), f"-L{runtime.parent}", f"-l:{runtime.name}",
              "-Wl,-rpath,$ORIGIN/../..", f"-Wl,-rpath,{runtime.parent}"])
        os.replace(lib, path)
    trim(scratch)
    return path


def install_library(library_bytes: bytes, directory: Path) -> Path:
    """Write a kernel library linked elsewhere into the scratch space of the native
    ``directory`` that holds a runtime of the same name (its ``$ORIGIN/../..``
    rpath finds it there)."""
    scratch = scratch_dir(directory)
    path = scratch / f"kernel_{hashlib.sha256(library_bytes).hexdigest()[:24]}.so"
    write_atomic(path, library_bytes)
    trim(scratch)
    return path


@lru_cache(maxsize=None)
def load_runtime(path: Path, threads: int) -> ctypes.CDLL:
    """Load a runtime library once per process, with evokernel's error handler
    and ``threads`` worker threads."""
    lib = ctypes.CDLL(str(path))
    lib.evokernel_last_error.restype = ctypes.c_char_p
    lib.evokernel_call.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.evokernel_time_sets.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_double), ctypes.c_int]
    lib.evokernel_install_error_handler()
    lib.halide_set_num_threads(int(threads))
    lib.evokernel_spin.argtypes = [ctypes.c_int, ctypes.c_double]
    lib.evokernel_spin(int(threads), spin())
    lib.evokernel_use_openmp.argtypes = [ctypes.c_void_p]
    if _openmp_parallel is not None:
        lib.evokernel_use_openmp(_openmp_parallel)
    _runtimes.append((lib, int(threads)))
    return lib


_runtimes: list[tuple[ctypes.CDLL, int]] = []  # every runtime loaded in this process, with its threads
_openmp_parallel: int | None = None  # the GOMP_parallel given to use_openmp

#: Seconds a kernel's worker threads spin after a parallel loop before they sleep,
#: unless ``SPIN_VAR`` or ``set_spin`` says otherwise; 0: Halide's own pool.
DEFAULT_SPIN = 0.0
SPIN_VAR = "EVOKERNEL_SPIN"
_spin: float | None = None  # set_spin's value; None: the environment's, else the default


def spin() -> float:
    """Seconds the workers of kernels called in this process spin after each
    parallel loop: ``set_spin``'s value, else ``$EVOKERNEL_SPIN``, else ``DEFAULT_SPIN``."""
    if _spin is not None:
        return _spin
    text = os.environ.get(SPIN_VAR)
    return DEFAULT_SPIN if text is None else _spin_seconds(text, f"${SPIN_VAR}")


def set_spin(seconds: float) -> None:
    """How long the worker threads of the kernels called in this process spin after
    a parallel loop before they sleep, waiting for the next one (``$EVOKERNEL_SPIN``
    sets it for new processes). Kernels called in a row with a little other work
    between them (a network's layers, a Python loop) then find the workers awake;
    the cores they spin on stay busy that long after the last call, which other
    threads and processes share. 0, the default: Halide's own pool, whose workers
    sleep a few microseconds after each loop.

    >>> import evokernel as ek
    >>> ek.set_spin(0.001)
    >>> ek.set_spin(ek.codegen.DEFAULT_SPIN)
    """
    global _spin
    _spin = _spin_seconds(seconds, "set_spin(seconds)")
    _apply_spin()


def _apply_spin() -> None:
    """Give every loaded runtime the current ``spin()``."""
    for lib, threads in _runtimes:
        lib.evokernel_spin(threads, spin())


@contextmanager
def spinning(seconds: float):
    """Within the block, the workers of kernels called in this process spin
    ``seconds`` after each parallel loop (as ``set_spin``); after it, as before.

    >>> from evokernel.codegen import spin
    >>> with spinning(0.001):
    ...     spin()
    0.001
    """
    global _spin
    before = _spin
    set_spin(seconds)
    try:
        yield
    finally:
        _spin = before
        _apply_spin()


def _spin_seconds(value, what: str) -> float:
    try:
        seconds = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        seconds = None
    if seconds is None:
        raise ArgumentError(f"{what} takes seconds as a number, got {value!r}")
    if not 0 <= seconds <= 10:
        raise ArgumentError(f"{what} takes 0 to 10 seconds, got {value!r}")
    return seconds


def use_openmp(gomp_parallel: int) -> None:
    """Give every runtime, loaded now or later, an OpenMP runtime's ``GOMP_parallel``
    (its address) for the calls made inside ``openmp_calls()``."""
    global _openmp_parallel
    _openmp_parallel = gomp_parallel
    for lib, _ in _runtimes:
        lib.evokernel_use_openmp(gomp_parallel)


@contextmanager
def openmp_calls():
    """Within the block, kernels called by this thread run their parallel loops on
    the OpenMP team of the runtime given to ``use_openmp`` (its threads and thread
    count), not on Halide's pool; without one given, nothing changes."""
    libs = [lib for lib, _ in _runtimes]
    previous = [lib.evokernel_openmp_calls(1) for lib in libs]
    try:
        yield
    finally:
        for lib, was in zip(libs, previous):
            lib.evokernel_openmp_calls(was)


def _address(array: np.ndarray) -> int:
    """The data address of a C-contiguous array: through the buffer protocol
    (0.17 us), or NumPy's ``ctypes`` attribute (0.8 us) where that refuses (a
    read-only array)."""
    try:
        return ctypes.addressof(ctypes.c_byte.from_buffer(array))
    except (TypeError, ValueError, BufferError):
        return array.ctypes.data


class NativeKernel:
    """A loaded kernel library: call it on NumPy arrays, or time it in C.

    Arrays must already be checked (shape, dtype) and C-contiguous; ``Kernel`` does that.
    Calls are serialised by a lock, since the buffer headers are reused; the arrays of
    the last call stay referenced until the next call on other arrays (see ``_bind``).
    """

    def __init__(self, library: Path, function: str, runtime: ctypes.CDLL,
                 shapes: Sequence[Sequence[int]], dtypes: Sequence[str]):
        self._lib = ctypes.CDLL(str(library), mode=os.RTLD_LOCAL)
        self._entry = getattr(self._lib, f"{function}_argv")
        self._fn = ctypes.cast(self._entry, ctypes.c_void_p)
        # Only a runtime with a GPU device interface needs the shim's copy-back and
        # device release after a call; CPU calls go straight in (ReLU on 256 floats:
        # 4.11 -> 3.83 us a call, 5.08 -> 4.46 us with out=).
        self._device = any(hasattr(self._lib, f"halide_{api}_device_interface") for api in GPU_APIS)
        self._runtime = runtime
        self._buffers = [describe_buffer(s, d) for s, d in zip(shapes, dtypes)]
        self._argv = (ctypes.c_void_p * len(self._buffers))(*[ctypes.addressof(b) for b in self._buffers])
        self._lock = threading.Lock()
        self._bound: list = [None] * len(self._buffers)  # the arrays the headers point at
        self._timed_sets = None  # (their ids, the arrays, headers, argument vector) of the sets timed last

    def _bind(self, arrays: Sequence[np.ndarray]) -> None:
        """Point each buffer header at its array's data, unless it is the very array
        of the last call: those are kept referenced, so their data can neither move
        (NumPy refuses to resize a referenced array) nor be freed, and calls on the
        same arrays skip reading their addresses (~0.2-0.8 us each)."""
        bound = self._bound
        for i, array in enumerate(arrays):
            if bound[i] is not array:
                self._buffers[i].host = _address(array)
                bound[i] = array

    def _check(self, rc: int) -> None:
        if rc != 0:
            message = (self._runtime.evokernel_last_error() or b"").decode(errors="replace").strip()
            raise KernelRuntimeError(f"kernel returned error {rc}: {message or 'no message'}")

    def __call__(self, arrays: Sequence[np.ndarray]) -> None:
        """Run once; ``arrays`` are the inputs followed by the output (on a GPU
        target, the output is copied back and device memory released before this
        returns). Halide calls the error handler before returning an error code, so
        the kept message is always this call's: no need to clear it first."""
        with self._lock:
            self._bind(arrays)
            if self._device:
                rc = self._runtime.evokernel_call(self._fn, self._argv, len(self._buffers))
            else:
                rc = self._entry(self._argv)
        self._check(rc)

    def time(self, sets: Sequence[Sequence[np.ndarray]], calls: int, fresh: bool = False) -> np.ndarray:
        """Seconds of each of ``calls`` back-to-back calls, measured in C, in turn on
        each of ``sets`` (the inputs, then the output): with enough sets, a call
        finds its arrays out of the cores' caches, where the calls on the other sets
        pushed them. With ``fresh``, this thread rewrites a call's inputs before it
        (untimed), so they start in its cache only, as a network's previous layer
        leaves them."""
        times = np.zeros(calls, dtype=np.float64)
        with self._lock:
            argv = self._timing_argv(sets)
            self._runtime.evokernel_clear_error()
            rc = self._runtime.evokernel_time_sets(self._fn, argv, len(self._buffers), len(sets), calls,
                                                   times.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), int(fresh))
            self._check(rc)
        return times

    def _timing_argv(self, sets: Sequence[Sequence[np.ndarray]]):
        """The argument vector of ``sets``, set after set: the headers of the last
        sets timed are kept (with their arrays) and reused for the same arrays."""
        arrays = [a for one in sets for a in one]
        key = tuple(map(id, arrays))
        if self._timed_sets is None or self._timed_sets[0] != key:
            headers = [describe_buffer(a.shape, a.dtype.name) for a in arrays]
            for header, array in zip(headers, arrays):
                header.host = _address(array)
            argv = (ctypes.c_void_p * len(headers))(*map(ctypes.addressof, headers))
            self._timed_sets = (key, arrays, headers, argv)
        return self._timed_sets[3]


#: Bytes of a memory page (the alignment of ``page_aligned``).
PAGE = 4096


def page_aligned(shape, dtype, offset: int = 0) -> np.ndarray:
    """An uninitialised C-order array of ``shape`` and ``dtype`` in fresh memory,
    starting ``offset`` elements past a page boundary.

    >>> page_aligned((3, 5), np.float32).ctypes.data % 4096
    0
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(size + offset + 2 * PAGE // dtype.itemsize, dtype)
    start = (-raw.ctypes.data % PAGE) // dtype.itemsize + offset
    return raw[start:start + size].reshape(shape)


def page_aligned_copy(array: np.ndarray, offset: int = 0) -> np.ndarray:
    """A C-order copy of ``array`` in fresh memory, ``offset`` elements past a page boundary."""
    copy = page_aligned(array.shape, array.dtype, offset)
    copy[...] = array
    return copy
