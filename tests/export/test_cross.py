"""Cross-compilation: objects for targets nothing here runs, inspected for real
(ELF headers, disassembly, the PTX and OpenCL C embedded in GPU objects)."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

import evokernel as ek
from evokernel.errors import BuildError, TargetError

EM_X86_64, EM_AARCH64 = 62, 183


def elf_machine(path) -> int:
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF", "not an ELF object"
    assert data[4] == 2, "not a 64-bit ELF object"
    return struct.unpack_from("<H", data, 18)[0]


@pytest.fixture(scope="module")
def matmul():
    return ek.operators.matmul(m=32, n=48, k=16)


def test_arm64_object_is_an_aarch64_elf_with_its_header(matmul, tmp_path):
    out = ek.compile_for(matmul, "arm-64-linux", tmp_path / "mm_arm.o", function="mm_arm")
    assert elf_machine(out.path) == EM_AARCH64
    assert out.target.arch == "arm" and out.function == "mm_arm"
    header = out.header.read_text()
    assert "int mm_arm(" in header and "int mm_arm_argv(" in header
    if shutil.which("readelf"):
        text = subprocess.run(["readelf", "-h", str(out.path)], capture_output=True, text=True).stdout
        assert "AArch64" in text


def disassembly(path) -> str:
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_avx2_object_uses_ymm_registers_and_avx512_object_zmm(matmul, tmp_path):
    genome = ek.compile_for(matmul, "host", tmp_path / "probe.o", header=False).genome
    avx2 = ek.compile_for(matmul, "x86-64-linux-avx2-fma", tmp_path / "avx2.o", genome, runtime=False)
    avx512 = ek.compile_for(matmul, "x86-64-linux-avx-avx2-fma-avx512-avx512_skylake", tmp_path / "avx512.o",
                            genome, runtime=False)
    assert elf_machine(avx2.path) == elf_machine(avx512.path) == EM_X86_64
    code2, code512 = disassembly(avx2.path), disassembly(avx512.path)
    assert "%ymm" in code2 and "%zmm" not in code2
    assert "%zmm" in code512


def test_cuda_object_embeds_ptx_kernels_of_a_gpu_schedule(matmul, tmp_path):
    out = ek.compile_for(matmul, "x86-64-linux-cuda", tmp_path / "mm_cuda.o")
    assert elf_machine(out.path) == EM_X86_64  # host code that launches the kernels
    data = out.path.read_bytes()
    assert b".target sm_" in data and b".entry" in data
    assert b"halide_cuda_initialize_kernels" in data
    assert "gpu_blocks" in out.schedule and "gpu_threads" in out.schedule


def test_opencl_object_embeds_opencl_c_kernels(tmp_path):
    conv = ek.operators.conv2d(1, 3, 9, 9, 4, k=3, pad=1)
    out = ek.compile_for(conv, "x86-64-linux-opencl", tmp_path / "conv_cl.o", header=False)
    data = out.path.read_bytes()
    assert b"__kernel void" in data and b"get_group_id" in data and b"get_local_id" in data
    assert out.header is None and not (tmp_path / "conv_cl.h").exists()


def test_a_tuned_kernel_compiles_with_its_genome_and_a_cpu_genome_gets_gpu_mappings(tuned, tmp_path):
    kernel = tuned(ek.operators.relu((8, 64)), budget=3)
    arm = ek.compile_for(kernel, "arm-64-linux", tmp_path / "relu_arm.o")
    assert elf_machine(arm.path) == EM_AARCH64
    assert arm.genome.stages[0].tiles == kernel.genome.stages[0].tiles
    cuda = ek.compile_for(kernel, "x86-64-linux-cuda", tmp_path / "relu_cuda.o")
    assert "gpu_threads" not in kernel.schedule and "gpu_threads" in cuda.schedule


@pytest.mark.parametrize("target", ["arm-64-windows-nope", "", "x86-64-linux-avx9000"])
def test_bad_targets_raise_target_error(matmul, tmp_path, target):
    with pytest.raises(TargetError, match="target"):
        ek.compile_for(matmul, target, tmp_path / "x.o")


def test_bad_sources_and_names_are_named(matmul, tmp_path):
    with pytest.raises(BuildError, match="Kernel or an operator"):
        ek.compile_for("matmul", "arm-64-linux", tmp_path / "x.o")
    with pytest.raises(BuildError, match="genome"):
        ek.compile_for(matmul, "arm-64-linux", tmp_path / "x.o", genome={"stages": []})
    with pytest.raises(BuildError, match="C identifier"):
        ek.compile_for(matmul, "arm-64-linux", tmp_path / "x.o", function="not a name")


@pytest.mark.parametrize("target", ["arm-64-linux", "x86-64-linux-cuda"])
def test_tuning_for_a_target_no_runner_executes_points_to_compile_for_and_ray(target):
    with pytest.raises(TargetError) as error:
        ek.tune(ek.operators.relu((4, 8)), target, budget=2, evaluator="local")
    text = str(error.value)
    assert "no runner can execute" in text and "ek.compile_for" in text
    assert f"evokernel-runner:{ek.Target.parse(target).string}" in text
