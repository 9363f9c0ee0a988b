"""Compilation targets: ``"host"`` or any Halide target string for this CPU."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import halide as hl

from .errors import TargetError

_ISA_PREFIXES = ("sse", "avx", "fma", "f16c", "x86apx", "arm", "sve", "rvv", "vsx", "power")
_GPU_FEATURES = ("cuda", "opencl", "metal", "vulkan", "d3d12compute", "webgpu")


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
        if not hl.Target.validate_target_string(text):
            raise TargetError(
                f"unknown or malformed target {text!r}: expected 'host' or a Halide target "
                "string such as 'x86-64-linux-avx2' (arch-bits-os-features)"
            )
        return cls(hl.Target(text).to_string())

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
        return any(f in self.string.split("-") for f in _GPU_FEATURES)

    def natural_vector_size(self, dtype: str) -> int:
        """Lanes of one native vector register for ``dtype`` on this target."""
        from .operators._base import halide_type

        return self.halide.natural_vector_size(halide_type(dtype))

    def runs_on(self, host: "Target") -> bool:
        """Whether code for this target runs on a CPU whose own target is ``host``
        (same arch, bits and OS; every instruction-set feature present there)."""
        theirs, mine = host.string.split("-"), self.string.split("-")
        if mine[:3] != theirs[:3] or self.is_gpu:
            return False
        isa = {f for f in mine[3:] if f.startswith(_ISA_PREFIXES)}
        return isa <= set(theirs[3:])

    def runs_here(self) -> bool:
        """Whether code for this target can run on this machine's CPU."""
        return self.runs_on(Target(hl.get_host_target().to_string()))

    def __str__(self) -> str:
        return self.string

