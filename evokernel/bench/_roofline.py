"""This machine's roofline: peak FMA throughput and read bandwidth per memory level,
measured in this process, and the roofline time of an operator.

Why a small C file and not a Halide kernel: the peak needs a loop whose accumulators
never leave the registers, with enough independent FMA chains to hide the FMA
latency on every FMA unit. GCC's vector extensions at the widest width the CPU has
(``-march=native``: 512 bits with AVX-512, 256 with AVX, else 128) state exactly
that, 12 chains of ``acc = acc * a + b`` in named variables; a Halide schedule would
have to be coaxed into the same register allocation, and its compile costs more than
``cc`` does. The same file holds the read kernel (a sum over per-thread segments with
8 vector accumulators). Both run on pthreads inside one ctypes call (ctypes releases
the GIL), one thread per bench thread. Every rate is the median of several repeats
taken in turns, each long enough (``MIN_TIME``) for the thread start to vanish in it.
A run lasts as long as its longest thread's CPU time (``CLOCK_THREAD_CPUTIME_ID``),
not its wall time: on a shared machine a thread that other work preempts would
count its wait for a CPU, and the roofline is what the machine can do, not what
was left of it (wall time is used where there are more threads than CPUs). Where
the threads share a level (L3, DRAM) and other work keeps them from overlapping,
this overstates its bandwidth somewhat; on an idle machine both times agree.

The working sets of the bandwidth levels come from the caches in
``/sys/devices/system/cpu/cpu*/cache``: their aggregate capacity over the CPUs this
process may run on (each cache counted once). Level L is read at the midpoint
between the capacity of the level below and its own; DRAM at 4x the largest cache
(at least 64 MiB). An operator's level is the smallest whose capacity holds its
arrays, each counted once (``Operator.bytes_moved``).
"""

from __future__ import annotations

import ctypes
import math
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from ..codegen import compiler, default_threads, run_tool
from ..errors import BuildError, EvokernelError
from ..operators import Operator

#: Seconds one timed repeat lasts at least, and repeats per rate (the median is kept).
MIN_TIME, REPEATS = 0.03, 7
#: FMA iterations per calibration unit (one iteration is 12 vector FMAs per thread).
FMA_UNIT = 4096
#: Cache capacities assumed where sysfs does not tell them: per core for L1d and L2, total for L3.
ASSUMED_CACHES = {1: 32 << 10, 2: 512 << 10, 3: 8 << 20}
#: The least DRAM working set, and the most.
DRAM_MIN, DRAM_MAX = 64 << 20, 1 << 30
#: The most threads the kernels start (as ``MAX_THREADS`` in ``_roofline.c``).
MAX_THREADS = 1024
_FLAGS = (["-march=native"], ["-mcpu=native"], [])


@dataclass(frozen=True)
class Roofline:
    """What this machine can do with ``threads`` threads: peak GFLOP/s per dtype
    (FMAs, 2 flops each), read GB/s per memory level, and the aggregate capacity of
    each cache level (``cache_source``: ``"sysfs"`` or ``"assumed"``)."""

    cpu: str
    microarchitecture: str | None
    threads: int
    cores: int
    vector_bits: int
    peak_gflops: dict
    bandwidth_gbps: dict
    capacity_bytes: dict
    cache_source: str
    seconds: float

    def level(self, nbytes: int) -> str:
        """The smallest memory level whose capacity holds ``nbytes``."""
        fits = [name for name, capacity in self.capacity_bytes.items()
                if name in self.bandwidth_gbps and nbytes <= capacity]
        return fits[0] if fits else "DRAM"

    def per_core(self, dtype: str) -> float:
        """Peak GFLOP/s of one core."""
        return self.peak_gflops[dtype] / self.cores

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Roofline":
        return cls(**data)

    def __str__(self) -> str:
        arch = f" ({self.microarchitecture})" if self.microarchitecture else ""
        peaks = ", ".join(f"{_short(d)} {g:.0f} GFLOP/s ({self.per_core(d):.0f} per core)"
                          for d, g in self.peak_gflops.items())
        bands = ", ".join(f"{level} {g:.0f} GB/s" for level, g in self.bandwidth_gbps.items())
        return (f"{self.cpu}{arch}, {self.threads} threads, {self.vector_bits}-bit vectors: peak FMA {peaks}; "
                f"read bandwidth {bands}")


def measure(threads: int | None = None) -> Roofline:
    """This machine's roofline with ``threads`` threads (default: the bench's), measured
    once per process (a second or two).

    >>> roof = measure()
    >>> roof.peak_gflops["float64"] > 0, list(roof.bandwidth_gbps)[-1]
    (True, 'DRAM')
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or not 1 <= threads <= MAX_THREADS):
        raise EvokernelError(f"the roofline's threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}")
    return _measure(threads or default_threads())


@lru_cache(maxsize=None)
def _measure(threads: int) -> Roofline:
    start = time.perf_counter()
    lib, cpus = _library(), _cpus()
    capacity, source = caches(cpus)
    vector_bytes = lib.roofline_vector_bytes()
    sets = _working_sets(capacity)
    by_cpu = threads <= len(cpus)  # else threads take turns on a core, each at full speed while it runs
    kernels = {dtype: _fma(lib, threads, dtype, vector_bytes, by_cpu) for dtype in ("float32", "float64")}
    kernels.update({level: _read(lib, threads, nbytes, by_cpu) for level, nbytes in sets.items()})
    rates = _rates(kernels)
    info = cpuinfo()
    return Roofline(cpu=info.get("model name", "unknown CPU"), microarchitecture=microarchitecture(info),
                    threads=threads, cores=max(1, min(threads, len(cpus))), vector_bits=8 * vector_bytes,
                    peak_gflops={d: rates[d] / 1e9 for d in ("float32", "float64")},
                    bandwidth_gbps={level: rates[level] / 1e9 for level in sets},
                    capacity_bytes={k: v for k, v in capacity.items() if k in sets}, cache_source=source,
                    seconds=time.perf_counter() - start)


def bound(op: Operator, roofline: Roofline) -> tuple[float, str, str]:
    """The roofline time of one call of ``op``: the longer of its flops at the peak of
    its dtype and its bytes at the bandwidth of the level its arrays fit in; with
    whether that is ``"compute"`` or ``"memory"``, and the level. A kernel's
    fraction of the roofline is this time over its measured time.

    >>> from evokernel import operators
    >>> roof = Roofline("a CPU", None, 1, 1, 256, {"float32": 100.0, "float64": 50.0},
    ...                 {"L2": 200.0, "L3": 100.0, "DRAM": 20.0}, {"L2": 1 << 20, "L3": 32 << 20}, "sysfs", 1.0)
    >>> seconds, kind, level = bound(operators.matmul(1024, 1024, 1024), roof); round(seconds * 1e3, 2), kind, level
    (21.47, 'compute', 'L3')
    >>> seconds, kind, level = bound(operators.relu((1 << 20,)), roof); kind, level
    ('memory', 'L3')
    """
    peak = roofline.peak_gflops.get(op.dtype)
    if peak is None:
        raise EvokernelError(f"the roofline has no peak for dtype {op.dtype} of {op.key} "
                             f"(it has {', '.join(roofline.peak_gflops)})")
    level = roofline.level(op.bytes_moved)
    compute = op.flops / (peak * 1e9)
    memory = op.bytes_moved / (roofline.bandwidth_gbps[level] * 1e9)
    return (compute, "compute", level) if compute >= memory else (memory, "memory", level)


# -- the measurements ---------------------------------------------------------------

@dataclass(frozen=True)
class _Kernel:
    """One roofline kernel on all threads: ``call(units, cpu_seconds)`` runs ``units``
    of it (each thread's CPU seconds into the array), ``work`` per thread and unit
    (flops or bytes). ``by_cpu_time``: its seconds are the longest thread's CPU time
    (what the run would have lasted had no thread waited for a CPU), else wall time."""

    call: Callable
    threads: int
    work: float
    by_cpu_time: bool

    def run(self, units: int) -> tuple[float, list[float]]:
        """Wall seconds of ``units``, and each thread's CPU seconds."""
        cpu = (ctypes.c_double * self.threads)()
        start = time.perf_counter()
        if self.call(units, cpu) < 0:
            raise EvokernelError("the roofline kernels could not start their threads")
        return time.perf_counter() - start, list(cpu)

    def rate(self, units: int) -> float:
        """Work per second of one run of ``units``."""
        wall, cpu = self.run(units)
        seconds = max(cpu) if self.by_cpu_time and min(cpu) > 0 else wall
        return self.threads * self.work * units / seconds


def _fma(lib, threads: int, dtype: str, vector_bytes: int, by_cpu_time: bool) -> _Kernel:
    """The FMA chains; a unit is ``FMA_UNIT`` iterations."""
    lanes = vector_bytes // np.dtype(dtype).itemsize
    float64 = int(dtype == "float64")
    return _Kernel(lambda units, cpu: lib.roofline_fma(float64, threads, units * FMA_UNIT, cpu), threads,
                   FMA_UNIT * lib.roofline_chains() * lanes * 2, by_cpu_time)


def _read(lib, threads: int, total_bytes: int, by_cpu_time: bool) -> _Kernel:
    """Reading ``total_bytes`` split over the threads; a unit is one pass."""
    per_thread = max(512, total_bytes // threads // 512 * 512)
    data = np.empty(per_thread * threads + 64, np.uint8)
    offset = (-data.ctypes.data) % 64
    data[offset:offset + per_thread * threads].view(np.float32).fill(1.0)  # touched: no shared zero pages
    address = data.ctypes.data + offset

    def call(passes: int, cpu, _keep=data) -> float:  # the default keeps the buffer alive with the kernel
        return lib.roofline_read(address, per_thread, threads, passes, cpu)

    return _Kernel(call, threads, per_thread, by_cpu_time)


def _rates(kernels: dict[str, _Kernel]) -> dict[str, float]:
    """Work per second of each kernel: the median of ``REPEATS`` runs of as many units
    as last ``MIN_TIME``, taken in turns (the order rotating), so all see the same noise."""
    units = {name: _units(kernel, MIN_TIME) for name, kernel in kernels.items()}
    names, samples = list(kernels), {name: [] for name in kernels}
    for r in range(REPEATS):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(kernels[name].rate(units[name]))
    return {name: statistics.median(rates) for name, rates in samples.items()}


def _units(kernel: _Kernel, min_time: float, paces: int = 3) -> int:
    """Units a run needs to last ``min_time`` at the fastest pace seen in at least
    ``paces`` runs (after one warm-up): runs grow, at most 10x a step, until one is
    long enough at that pace. A run slowed by other work cannot end the search early."""
    kernel.run(1)
    units, seen, pace = 1, 0, float("inf")
    while True:
        pace, seen = min(pace, kernel.run(units)[0] / units), seen + 1
        if units * pace >= min_time and seen >= paces:
            return units
        units = min(10 * units, max(units, math.ceil(1.2 * min_time / pace)))


def _working_sets(capacity: dict[str, int]) -> dict[str, int]:
    """Total bytes read per level: L2, L3 where each is larger than the level below, DRAM."""
    sets, below = {}, capacity.get("L1", 0)
    for level in ("L2", "L3"):
        if capacity.get(level, 0) > below:
            sets[level] = (below + capacity[level]) // 2
            below = capacity[level]
    sets["DRAM"] = min(max(4 * below, DRAM_MIN), max(2 * below, DRAM_MAX))
    return sets


# -- the machine ----------------------------------------------------------------------

def caches(cpus: "set[int] | None" = None, root: Path = Path("/sys/devices/system/cpu")) -> tuple[dict, str]:
    """Aggregate bytes of the L1d, L2 and L3 caches of ``cpus`` (default: those this
    process may run on), each cache counted once, and where that came from:
    ``"sysfs"``, or ``"assumed"`` (``ASSUMED_CACHES``) where sysfs tells nothing.

    >>> sizes, source = caches()
    >>> source in ("sysfs", "assumed") and 0 < sizes["L1"] < sizes["L2"]
    True
    """
    cpus = _cpus() if cpus is None else cpus
    seen: dict[tuple[int, str], int] = {}
    for cpu in sorted(cpus):
        for index in sorted((root / f"cpu{cpu}" / "cache").glob("index*")):
            try:
                kind = (index / "type").read_text().strip()
                level = int((index / "level").read_text())
                size = _size((index / "size").read_text())
                shared = (index / "shared_cpu_list").read_text().strip()
            except (OSError, ValueError):
                continue
            if kind != "Instruction":
                seen[(level, shared)] = size
    totals = {f"L{level}": sum(s for (lv, _), s in seen.items() if lv == level) for level in (1, 2, 3)}
    if totals["L1"] and totals["L2"]:
        return {k: v for k, v in totals.items() if v}, "sysfs"
    n = len(cpus)
    return {"L1": ASSUMED_CACHES[1] * n, "L2": ASSUMED_CACHES[2] * n, "L3": ASSUMED_CACHES[3]}, "assumed"


def _size(text: str) -> int:
    """``"512K"`` -> 524288."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def _cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return set(range(os.cpu_count() or 1))


def cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


def microarchitecture(info: dict[str, str]) -> str | None:
    """AMD's Zen generation from ``cpuinfo()``'s family and model; ``None`` for
    other CPUs (their model name says it).

    >>> microarchitecture({"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "1"})
    'Zen 3'
    >>> microarchitecture({"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "97"})
    'Zen 4'
    """
    if info.get("vendor_id") != "AuthenticAMD":
        return None
    try:
        family, model = int(info["cpu family"]), int(info["model"])
    except (KeyError, ValueError):
        return None
    if family == 23:
        return "Zen 2" if model >= 0x30 else "Zen / Zen+"
    if family == 25:
        return "Zen 4" if 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF else "Zen 3"
    if family == 26:
        return "Zen 5"
    return None


# -- the kernels ------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _library() -> ctypes.CDLL:
    """``_roofline.c`` compiled for this machine (``$CC``, default ``cc``) and loaded."""
    source = resources.files(__package__).joinpath("_roofline.c").read_text()
    errors = []
    with tempfile.TemporaryDirectory(prefix="evokernel-roofline-") as tmp:
        src, lib = Path(tmp, "roofline.c"), Path(tmp, "roofline.so")
        src.write_text(source)
        for flags in _FLAGS:
            cmd = [compiler(), "-O2", *flags, "-ffp-contract=fast", "-fPIC", "-shared", "-pthread",
                   "-o", str(lib), str(src)]
            try:
                run_tool(cmd)
                break
            except BuildError as error:
                errors.append(str(error))
        else:
            raise BuildError("cannot compile the roofline kernels:\n" + "\n".join(errors))
        loaded = ctypes.CDLL(str(lib))  # stays mapped once the directory is gone
    seconds = ctypes.POINTER(ctypes.c_double)
    loaded.roofline_fma.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, seconds]
    loaded.roofline_fma.restype = ctypes.c_double
    loaded.roofline_read.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_long, seconds]
    loaded.roofline_read.restype = ctypes.c_double
    return loaded


def _short(dtype: str) -> str:
    return {"float32": "FP32", "float64": "FP64"}.get(dtype, dtype)
