"""Target strings: 'host', Halide target strings, and clear errors for the rest."""

import pytest

import evokernel as ek
from evokernel.errors import TargetError


def test_host_is_this_machine_and_runs_here():
    host = ek.Target.parse("host")
    assert host.arch == "x86" and host.runs_here()
    assert ek.Target.parse(host) is host


def test_halide_string_is_normalised_and_subset_of_host_runs_here():
    t = ek.Target.parse(" x86-64-linux-avx2 ")
    assert t.string == "x86-64-linux-avx2"
    assert t.runs_here()


@pytest.mark.parametrize("text", ["arm-64-linux", "x86-64-linux-cuda", "x86-64-osx"])
def test_foreign_targets_parse_but_do_not_run_here(text):
    assert not ek.Target.parse(text).runs_here()


@pytest.mark.parametrize("bad", ["", "   ", "bogus", "x86-64-linux-avx9000", None, 3])
def test_bad_targets_raise_target_error_naming_them(bad):
    with pytest.raises(TargetError, match="target"):
        ek.Target.parse(bad)


def test_natural_vector_size_follows_dtype():
    host = ek.Target.parse("host")
    assert host.natural_vector_size("float32") == 2 * host.natural_vector_size("float64")


def test_vector_registers_follow_the_instruction_set():
    assert ek.Target.parse("x86-64-linux-avx512").vector_registers == 32
    assert ek.Target.parse("x86-64-linux-avx2").vector_registers == 16


@pytest.mark.parametrize("text, api", [("x86-64-linux-cuda", "cuda"), ("arm-64-linux-opencl", "opencl"),
                                       ("x86-64-linux-avx2", None)])
def test_gpu_api_is_read_from_the_features(text, api):
    target = ek.Target.parse(text)
    assert target.gpu_api == api and target.is_gpu == (api is not None)


def test_gpu_targets_run_only_where_the_gpu_api_is_present():
    cpu = ek.Target.parse("x86-64-linux-avx2")
    assert not ek.Target.parse("x86-64-linux-avx2-opencl").runs_on(cpu)
    assert ek.Target.parse("x86-64-linux-avx2-opencl").runs_on(ek.Target.parse("x86-64-linux-avx2-fma-opencl"))
    assert not ek.Target.parse("x86-64-linux-avx2-cuda").runs_on(ek.Target.parse("x86-64-linux-avx2-opencl"))
    assert not cpu.runs_on(ek.Target.parse("x86-64-linux-avx2-opencl"))


def test_opencl_runs_here_exactly_when_a_device_is_found():
    """Compared with the drivers' own answer (clinfo lists the devices), when installed."""
    import shutil
    import subprocess

    from evokernel.target import gpu_available

    found = gpu_available("opencl")
    assert gpu_available("opencl") is found  # asked once, then cached
    assert ek.Target.parse("x86-64-linux-opencl").runs_here() == found
    assert not gpu_available("metal")
    if shutil.which("clinfo"):
        listing = subprocess.run(["clinfo", "-l"], capture_output=True, text=True).stdout
        assert found == ("Device" in listing)


def test_host_with_a_missing_gpu_driver_is_a_target_error():
    """'host-vulkan' makes Halide look for the Vulkan loader; without it, a TargetError."""
    import ctypes.util

    if ctypes.util.find_library("vulkan"):
        pytest.skip("a Vulkan loader is installed here")
    with pytest.raises(TargetError, match="host-vulkan"):
        ek.Target.parse("host-vulkan")
