"""Compilation targets: ``"host"`` or any Halide target string, with or without a GPU API."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache

import halide as hl

from ._dtypes import halide_type
from .errors import TargetError

_ISA_PREFIXES = ("sse", "avx", "fma", "f16c", "x86apx", "arm", "sve", "rvv", "vsx", "power")
#: Halide target features that offload to a GPU API (the runtime names its device interface after them).
GPU_APIS = ("cuda", "opencl", "metal", "vulkan", "d3d12compute", "webgpu")


@dataclass(frozen=True)
class Target:
    """A Halide target, normalised to its full string.

    >>> Target.parse("host").arch
    'x86'
    >>> Target.parse("x86-64-linux-avx2").string
    'x86-64-linux-avx2'
    """

    string: str

    @classmethod
    def parse(cls, target: "str | Target") -> "Target":
        """Accept a ``Target``, ``"host"`` or a Halide target string; raise
        ``TargetError`` naming the problem otherwise."""
        if isinstance(target, Target):
            return target
        if not isinstance(target, str) or not target.strip():
            raise TargetError(f"target must be a non-empty string such as 'host', got {target!r}")
        text = target.strip()
        try:  # "host-<gpu api>" asks the GPU driver, and Halide raises when it is missing
            if hl.Target.validate_target_string(text):
                return cls(hl.Target(text).to_string())
        except hl.HalideError as error:
            raise TargetError(f"target {text!r} cannot be resolved here: {str(error).strip()}") from error
        raise TargetError(
            f"unknown or malformed target {text!r}: expected 'host' or a Halide target "
            "string such as 'x86-64-linux-avx2' (arch-bits-os-features)"
        )

    def __reduce__(self):
        # Pickle as the string alone: the cached hl.Target does not pickle.
        return (Target, (self.string,))

    @cached_property
    def halide(self) -> hl.Target:
        return hl.Target(self.string)

    @property
    def arch(self) -> str:
        return str(self.halide.arch).rsplit(".", 1)[-1].lower()

    @property
    def is_gpu(self) -> bool:
        return self.gpu_api is not None

    @property
    def gpu_api(self) -> str | None:
        """The GPU API the target offloads to (``"cuda"``, ``"opencl"``...), or None.

        >>> Target.parse("x86-64-linux-cuda").gpu_api
        'cuda'
        """
        return next((f for f in self.string.split("-") if f in GPU_APIS), None)

    def natural_vector_size(self, dtype: str) -> int:
        """Lanes of one native vector register for ``dtype`` on this target."""
        return self.halide.natural_vector_size(halide_type(dtype))

    @property
    def vector_registers(self) -> int:
        """Vector registers a CPU kernel can hold values in: 32 with AVX-512 and on
        64-bit ARM, else 16 (the register tiles of a schedule's templates follow it).

        >>> Target.parse("x86-64-linux-avx2").vector_registers, Target.parse("x86-64-linux-avx512").vector_registers
        (16, 32)
        """
        wide = self.halide.has_feature(hl.TargetFeature.AVX512) or (self.arch == "arm" and self.halide.bits == 64)
        return 32 if wide else 16

    def runs_on(self, host: "Target") -> bool:
        """Whether code for this target runs on a machine whose own target is
        ``host`` (same arch, bits and OS; every instruction-set feature present
        there; the same GPU API, or none on both)."""
        theirs, mine = host.string.split("-"), self.string.split("-")
        if mine[:3] != theirs[:3] or self.gpu_api != host.gpu_api:
            return False
        isa = {f for f in mine[3:] if f.startswith(_ISA_PREFIXES)}
        return isa <= set(theirs[3:])

    def runs_here(self) -> bool:
        """Whether code for this target can run on this machine: its CPU, and for a
        GPU target a device of that API (OpenCL and CUDA are detected, once)."""
        host = hl.get_host_target().to_string()
        if self.gpu_api is not None:
            if not gpu_available(self.gpu_api):
                return False
            host += "-" + self.gpu_api
        return self.runs_on(Target(host))

    def __str__(self) -> str:
        return self.string


@lru_cache(maxsize=None)
def gpu_available(api: str) -> bool:
    """Whether this machine has a device for GPU ``api``: an OpenCL platform with
    a device (of type ``$HL_OCL_DEVICE_TYPE`` when set, as Halide's runtime picks),
    or a CUDA driver with a device. Asked once per process, through the drivers'
    C entry points; other APIs are not detected (False)."""
    probes = {"opencl": _opencl_devices, "cuda": _cuda_devices}
    try:
        return api in probes and probes[api]() > 0
    except (OSError, AttributeError):  # no driver library, or one without the entry points
        return False


_OCL_TYPES = {"cpu": 1 << 1, "gpu": 1 << 2, "acc": 1 << 3}  # CL_DEVICE_TYPE_*
_OCL_ALL = 0xFFFFFFFF


def _opencl_devices() -> int:
    lib = ctypes.CDLL(ctypes.util.find_library("OpenCL") or "libOpenCL.so.1")
    count = ctypes.c_uint32(0)
    if lib.clGetPlatformIDs(0, None, ctypes.byref(count)) != 0 or count.value == 0:
        return 0
    platforms = (ctypes.c_void_p * count.value)()
    if lib.clGetPlatformIDs(count.value, platforms, None) != 0:
        return 0
    kind = ctypes.c_uint64(_OCL_TYPES.get(os.environ.get("HL_OCL_DEVICE_TYPE", "").lower(), _OCL_ALL))
    lib.clGetDeviceIDs.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p,
                                   ctypes.POINTER(ctypes.c_uint32)]
    total = 0
    for platform in platforms:
        devices = ctypes.c_uint32(0)
        if lib.clGetDeviceIDs(platform, kind, 0, None, ctypes.byref(devices)) == 0:
            total += devices.value
    return total


def _cuda_devices() -> int:
    lib = ctypes.CDLL(ctypes.util.find_library("cuda") or "libcuda.so.1")
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value
