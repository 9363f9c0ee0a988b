"""Which toolchain links a target's code: this machine's own for its platform, a
GNU cross toolchain (found by its triple, or named by an environment variable) for
another, and an error naming the way out where none is installed."""

from __future__ import annotations

import shutil

import pytest

import evokernel as ek
from evokernel.codegen import TRIPLES, host_platform, platform, toolchain


def test_this_machine_s_platform_links_with_its_own_compiler(monkeypatch):
    tools = toolchain("host")
    assert tools.native and tools.platform == host_platform() == platform(ek.Target.parse("host"))
    monkeypatch.setenv("CC", "no-such-cc")
    with pytest.raises(ek.BuildError, match="no C compiler found .*'no-such-cc'"):
        tools.cc()


@pytest.mark.skipif(host_platform() == "arm-64-linux", reason="this machine is an ARM one")
def test_another_platform_links_with_the_cross_toolchain_of_its_triple(monkeypatch):
    tools = toolchain("arm-64-linux-arm_dot_prod")
    assert not tools.native and tools.prefix == "aarch64-linux-gnu-" == TRIPLES["arm-64-linux"] + "-"
    if shutil.which("aarch64-linux-gnu-gcc"):
        assert tools.cc() == "aarch64-linux-gnu-gcc" and tools.tool("objcopy") == "aarch64-linux-gnu-objcopy"
    monkeypatch.setenv("EVOKERNEL_CROSS_ARM_64_LINUX", "/opt/nowhere/aarch64-none-linux-gnu-")
    tools = toolchain("arm-64-linux")
    assert tools.prefix == "/opt/nowhere/aarch64-none-linux-gnu-"
    with pytest.raises(ek.BuildError, match="'/opt/nowhere/aarch64-none-linux-gnu-gcc' is not installed "
                                            r"\(Debian: apt-get install gcc-aarch64-linux-gnu\).*"
                                            "EVOKERNEL_CROSS_ARM_64_LINUX"):
        tools.cc()


def test_a_platform_without_a_known_triple_asks_for_its_toolchain():
    with pytest.raises(ek.BuildError, match="no cross toolchain is known for x86-64-osx.*EVOKERNEL_CROSS_X86_64_OSX"):
        toolchain("x86-64-osx")
