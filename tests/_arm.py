"""AArch64 code run for real under qemu-user: what the ARM tests share.

Imported as ``from _arm import ...`` (tests/conftest.py puts this directory on
sys.path). The tests that need the cross compiler (``gcc-aarch64-linux-gnu``) and
the emulator (``qemu-user``) skip only where one is not installed; .ci/run installs
both, so CI runs them.
"""

from __future__ import annotations

import shutil

import pytest

from evokernel.evaluators import emulator_for

ARM = "arm-64-linux"
CROSS_CC = "aarch64-linux-gnu-gcc"

#: The tests' skip condition: the tools are missing here, never anything else.
needs_arm = pytest.mark.skipif(
    shutil.which(CROSS_CC) is None or shutil.which("qemu-aarch64") is None,
    reason="the AArch64 cross compiler (gcc-aarch64-linux-gnu) or qemu-aarch64 (qemu-user) is not installed")


def qemu() -> list[str]:
    """The command line that runs an AArch64 program here (qemu-aarch64 with its sysroot)."""
    command = emulator_for(ARM)
    assert command is not None and command[0] == "qemu-aarch64", command
    return list(command)

