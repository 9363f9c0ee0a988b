"""The C toolchain that links code for a target: this machine's own compiler and
binutils for its own platform (arch, bits and OS), a GNU cross toolchain for another.

Halide emits objects for any platform its LLVM knows; turning them into a shared
library, a static archive or a program needs a linker for that platform. A cross
toolchain is found by its GNU triple (``aarch64-linux-gnu-gcc`` for ``arm-64-linux``,
Debian's ``gcc-aarch64-linux-gnu``), or named by its prefix in
``$EVOKERNEL_CROSS_<ARCH>_<BITS>_<OS>`` (``EVOKERNEL_CROSS_ARM_64_LINUX=/opt/gcc/bin/aarch64-none-linux-gnu-``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from functools import cache

import halide as hl

from ..errors import BuildError
from ..target import Target

#: (arch, bits, OS) -> the GNU triple of Debian's cross toolchains for that platform.
TRIPLES = {
    "arm-64-linux": "aarch64-linux-gnu",
    "arm-32-linux": "arm-linux-gnueabihf",
    "x86-64-linux": "x86_64-linux-gnu",
    "x86-32-linux": "i686-linux-gnu",
    "riscv-64-linux": "riscv64-linux-gnu",
    "powerpc-64-linux": "powerpc64le-linux-gnu",
}


def platform(target: "str | Target") -> str:
    """The ``arch-bits-os`` of a target: what decides which toolchain links its code.

    >>> platform("arm-64-linux-arm_dot_prod")
    'arm-64-linux'
    """
    return "-".join(Target.parse(target).string.split("-")[:3])


@cache
def host_platform() -> str:
    """This machine's ``arch-bits-os``."""
    return platform(hl.get_host_target().to_string())


def env_var(platform_name: str) -> str:
    """The environment variable that names the cross toolchain's prefix for a platform.

    >>> env_var("arm-64-linux")
    'EVOKERNEL_CROSS_ARM_64_LINUX'
    """
    return "EVOKERNEL_CROSS_" + platform_name.upper().replace("-", "_")


@dataclass(frozen=True)
class Toolchain:
    """How code for one platform is compiled and linked here: ``prefix`` is ``None``
    for this machine's own tools (``$CC`` or ``cc``; binutils by name or ``$OBJCOPY``,
    ``$AR``...), else the cross toolchain's prefix (``aarch64-linux-gnu-``)."""

    platform: str
    prefix: str | None = None

    @property
    def native(self) -> bool:
        return self.prefix is None

    def cc(self, error: type[Exception] = BuildError) -> str:
        """The C compiler (and linker driver); ``error`` if it is not installed."""
        if self.native:
            cc = os.environ.get("CC", "cc")
            if shutil.which(cc) is None:
                raise error(f"no C compiler found ({cc!r}); evokernel links kernels with one: install gcc or set CC")
            return cc
        return self._cross("gcc", error)

    def tool(self, name: str, error: type[Exception] = BuildError) -> str:
        """A binutils program (``objcopy``, ``readelf``, ``ar``) for this platform."""
        if self.native:
            tool = os.environ.get(name.upper(), name)
            if shutil.which(tool) is None:
                raise error(f"{tool!r} (GNU binutils) is needed; install binutils or set ${name.upper()}")
            return tool
        return self._cross(name, error)

    def _cross(self, name: str, error: type[Exception]) -> str:
        program = self.prefix + name
        if shutil.which(program) is None:
            triple = TRIPLES.get(self.platform)
            debian = f" (Debian: apt-get install gcc-{triple})" if triple else ""
            raise error(f"code for {self.platform} is linked with a cross toolchain, and {program!r} is not "
                        f"installed{debian}; or set ${env_var(self.platform)} to your toolchain's prefix "
                        "(the part before 'gcc')")
        return program


def toolchain(target: "str | Target") -> Toolchain:
    """The toolchain for ``target``'s platform: this machine's own if it is this
    machine's platform, else the cross toolchain (``$EVOKERNEL_CROSS_...``, or the
    GNU triple's); raises ``BuildError`` for a platform without a known triple.

    >>> toolchain("host").native
    True
    >>> toolchain("arm-64-linux").prefix if host_platform() != "arm-64-linux" else "aarch64-linux-gnu-"
    'aarch64-linux-gnu-'
    """
    name = platform(target)
    if name == host_platform():
        return Toolchain(name)
    prefix = os.environ.get(env_var(name))
    if prefix:
        return Toolchain(name, prefix)
    if name not in TRIPLES:
        raise BuildError(f"no cross toolchain is known for {name}: set ${env_var(name)} to the prefix of one "
                         "(the part of its compiler's path before 'gcc')")
    return Toolchain(name, TRIPLES[name] + "-")
