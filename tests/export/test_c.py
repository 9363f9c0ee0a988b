"""ek.export_c: a header, a shared and a static library, used from real C programs
compiled with the system compiler and checked against the NumPy references; and the
same for AArch64 (``target="arm-64-linux"``), built with the cross compiler and run
under qemu-aarch64."""

from __future__ import annotations

import subprocess
from pathlib import Path

import halide as hl
import numpy as np
import pytest
from _arm import ARM, CROSS_CC, needs_arm, qemu

import evokernel as ek
from evokernel.export._c import entries

CONV = ek.operators.conv2d(n=2, c_in=4, h=6, w=6, c_out=8, k=3, stride=2, pad=1, bias=True, activation="relu")
MATMUL = ek.operators.matmul(m=12, n=8, k=10)
ops = ek.operators
#: Exported for AArch64: the shapes of test_tengine's cases, so that a session tunes them once.
ARM_CASES = {
    "conv": ops.conv2d(2, 4, 7, 7, 8, k=3, stride=2, pad=1, bias=True, activation="relu"),
    "depthwise": ops.depthwise_conv2d(2, 8, 6, 6, k=3, pad=1),
    "fc": ops.fc(2, 32, 10),
    "maxpool": ops.max_pool2d(1, 4, 8, 8, k=3, stride=2, ceil_mode=True),
    "softmax": ops.softmax((2, 10)),
}


@pytest.fixture(scope="module")
def kernels(tuned):
    return {name: tuned(op, budget=2) for name, op in (("conv", CONV), ("mm", MATMUL))}


def _program(tmp: Path, calls: list[tuple[str, int, list[int]]], header: str) -> Path:
    """A C program that reads each function's inputs from in<i>_<j>.bin, calls it and
    writes out<i>.bin; it prints the return code of a call with a NULL array too."""
    body = []
    for i, (function, n_inputs, sizes) in enumerate(calls):
        arrays = [f"a{i}_{j}" for j in range(len(sizes))]
        body += [f"float *{a} = load(\"in{i}_{j}.bin\", {s});" for j, (a, s) in enumerate(zip(arrays, sizes))]
        body += [f"if ({function}({', '.join(arrays)}) != 0) return 1;",
                 f"save(\"out{i}.bin\", {arrays[-1]}, {sizes[-1]});",
                 f"printf(\"%d %s\\n\", {function}({', '.join(['NULL', *arrays[1:]])}), {header}_last_error());"]
    source = tmp / "prog.c"
    source.write_text(f"""#include <stdio.h>
#include <stdlib.h>
#include "{header}.h"
static float *load(const char *path, int n) {{
    float *p = calloc(n, sizeof *p); FILE *f = fopen(path, "rb");
    if (f) {{ fread(p, sizeof *p, n, f); fclose(f); }}
    return p;
}}
static void save(const char *path, const float *p, int n) {{
    FILE *f = fopen(path, "wb"); fwrite(p, sizeof *p, n, f); fclose(f);
}}
int main(void) {{
    printf("threads %d\\n", {header}_set_num_threads(2));
    printf("threads %d\\n", {header}_set_num_threads(1));
    {chr(10).join(body)}
    return 0;
}}
""")
    return source


def _run_program(tmp: Path, lib: ek.CLibrary, kernels: list, functions: list[str], static: bool,
                 cc: str = "cc", run: list[str] = ()) -> list[str]:
    """Build a program on ``lib`` with ``cc``, run it (under ``run``: an emulator),
    and check every output against the NumPy reference; returns what it printed."""
    rng = np.random.default_rng(0)
    arrays = []
    for i, kernel in enumerate(kernels):
        inputs = kernel.operator.random_inputs(rng)
        for j, a in enumerate(inputs):
            a.astype(np.float32).tofile(tmp / f"in{i}_{j}.bin")
        arrays.append(inputs)
    calls = [(f, len(k.signature.inputs), [int(np.prod(s.shape)) for s in (*k.signature.inputs, k.signature.output)])
             for f, k in zip(functions, kernels)]
    source = _program(tmp, calls, lib.header.stem)
    exe = tmp / ("prog_static" if static else "prog_shared")
    link = ([str(lib.static), "-lpthread", "-ldl", "-lm"] if static else
            [f"-L{lib.shared.parent}", f"-l{lib.header.stem}", f"-Wl,-rpath,{lib.shared.parent}"])
    subprocess.run([cc, "-Wall", "-Werror", "-Wno-unused-result", f"-I{lib.header.parent}", "-o", str(exe),
                    str(source), *link], check=True)
    done = subprocess.run([*run, str(exe)], cwd=tmp, capture_output=True, text=True, check=True)
    for i, (kernel, inputs) in enumerate(zip(kernels, arrays)):
        out = np.fromfile(tmp / f"out{i}.bin", np.float32).reshape(kernel.signature.output.shape)
        rtol, atol = kernel.operator.tolerance
        np.testing.assert_allclose(out, kernel.operator.reference(*inputs), rtol=rtol, atol=atol)
    return done.stdout.splitlines()


@pytest.mark.parametrize("static", [False, True], ids=["shared", "static"])
def test_c_program_computes_what_numpy_does(kernels, tmp_path, static):
    lib = ek.export_c(kernels, tmp_path / "lib", name="mylib")
    lines = _run_program(tmp_path, lib, list(kernels.values()), ["mylib_conv", "mylib_mm"], static)
    assert lines[1] == "threads 2"  # setting the thread count returns the old one
    assert lines[2].startswith("-12 mylib_conv: an array pointer is NULL")
    assert lines[3].startswith("-12 mylib_mm")


@pytest.fixture(scope="module")
def arm_kernels(tuned):
    return {name: tuned(op, budget=2) for name, op in ARM_CASES.items()}


def _elf_machine(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[18:20], "little")


@pytest.fixture(scope="module")
def arm_lib(arm_kernels, tmp_path_factory):
    return ek.export_c(arm_kernels, tmp_path_factory.mktemp("arm") / "lib", name="armlib", target=ARM)


@needs_arm
@pytest.mark.parametrize("static", [False, True], ids=["shared", "static"])
def test_an_aarch64_program_computes_what_numpy_does_under_qemu(arm_kernels, arm_lib, tmp_path, static):
    """Kernels tuned here, their schedules compiled for AArch64, linked with the
    cross toolchain into a library that a cross-compiled program calls under
    qemu-aarch64: conv2d with bias and ReLU, depthwise, fc, max pooling, softmax."""
    assert _elf_machine(arm_lib.shared) == 183  # EM_AARCH64
    assert f"target {ARM}." in arm_lib.header.read_text()
    functions = [f"armlib_{name}" for name in arm_kernels]
    lines = _run_program(tmp_path, arm_lib, list(arm_kernels.values()), functions, static, CROSS_CC, qemu())
    assert lines[1] == "threads 2"
    assert lines[2].startswith("-12 armlib_conv: an array pointer is NULL")


@pytest.fixture(scope="module")
def other_mm(kernels):
    """The matmul tuned for another target that runs here."""
    return ek.tune(MATMUL, target=_other_target(kernels["mm"].target), budget=2, seed=0, evaluator="local")


@needs_arm
def test_kernels_of_several_targets_share_a_library_compiled_for_one(kernels, other_mm, tmp_path):
    other = other_mm
    lib = ek.export_c({"conv": kernels["conv"], "mm": other}, tmp_path / "lib", name="mixed", target=ARM)
    header = lib.header.read_text()
    assert f"tuned on {other.target.string}:" in header and f"tuned on {kernels['conv'].target.string}:" in header
    lines = _run_program(tmp_path, lib, [kernels["conv"], other], ["mixed_conv", "mixed_mm"], True, CROSS_CC, qemu())
    assert lines[3].startswith("-12 mixed_mm")


@pytest.mark.parametrize("target, variable, message", [
    (ARM, "EVOKERNEL_CROSS_ARM_64_LINUX", "'/nonexistent/aarch64-gcc' is not installed.*EVOKERNEL_CROSS_ARM_64_LINUX"),
    ("x86-64-osx", None, "no cross toolchain is known for x86-64-osx.*EVOKERNEL_CROSS_X86_64_OSX"),
    ("x86-64-linux-cuda", None, "only CPU targets"),
    ("arm-64-nowhere", None, "target"),
])
def test_a_target_that_cannot_be_linked_here_names_the_way_out(kernels, tmp_path, monkeypatch, target, variable,
                                                               message):
    if variable:
        monkeypatch.setenv(variable, "/nonexistent/aarch64-")
    with pytest.raises(ek.EvokernelError, match=message):
        ek.export_c([kernels["mm"]], tmp_path / "lib", target=target)
    assert not (tmp_path / "lib" / "libevokernel.so").exists()


def test_only_the_api_is_exported(kernels, tmp_path):
    lib = ek.export_c(list(kernels.values()), tmp_path)
    api = {e.name for e in entries(list(kernels.values()), "evokernel")}
    assert api | {"evokernel_set_num_threads", "evokernel_last_error"} == _defined(["nm", "-D", str(lib.shared)])
    assert api | {"evokernel_set_num_threads", "evokernel_last_error"} == _defined(["nm", "-g", str(lib.static)])


def _defined(command: list[str]) -> set[str]:
    listing = subprocess.run([*command, "--defined-only"], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in listing.splitlines() if len(line.split()) == 3}


def test_header_documents_shapes_and_derives_names(kernels, tmp_path):
    text = ek.export_c(list(kernels.values()), tmp_path).header.read_text()
    assert "int evokernel_matmul_m12_n8_k10_dtypefloat32(const float *a, const float *b, float *out);" in text
    assert "float32[2][4][6][6]" in text and "float32[8][4][3][3]" in text and "float32[2][8][3][3]" in text
    assert "#define EVOKERNEL_MATMUL_M12_N8_K10_DTYPEFLOAT32_OUT_SIZE 96" in text


def test_user_strings_never_reach_c_unescaped(tmp_path):
    def add(params):
        (a, b), i, out = params, hl.Var("i"), hl.Func("o")
        out[i] = a[i] + b[i]
        return out

    op = ek.operators.custom("naïve", [("int", 16), ("struct", 16)], 16, add, lambda a, b: a + b)
    kernel = ek.tune(op, budget=2, seed=0, evaluator="local")
    lib = ek.export_c([kernel, kernel], tmp_path)  # the same key twice: unique names
    text = lib.header.read_text()
    assert "int evokernel_custom_na_ve_int16_struct16_out16_dtypefloat32(const float *arg0, const float *arg1, " \
           "float *out);" in text
    assert "evokernel_custom_na_ve_int16_struct16_out16_dtypefloat32_2(" in text
    assert text.isascii()


@pytest.mark.parametrize("kernels_arg, name, message", [
    ([], "evokernel", "empty"),
    (["not a kernel"], "evokernel", "not a Kernel"),
    ("conv", "evokernel", "list of Kernel"),
    (None, "1lib", "C identifier"),
    (None, "my-lib", "C identifier"),
    (None, "int", "C identifier"),
    ({"bad name": None}, "evokernel", "C identifier"),
    ({"a__b": None}, "evokernel", "reserved"),
    ({"last_error": None}, "evokernel", "reserved"),
])
def test_bad_input_names_the_problem(kernels, tmp_path, kernels_arg, name, message):
    arg = list(kernels.values()) if kernels_arg is None else kernels_arg
    if isinstance(arg, dict):
        arg = {k: kernels["mm"] for k in arg}
    with pytest.raises(ek.ExportError, match=message):
        ek.export_c(arg, tmp_path, name=name)


def test_names_differing_only_in_case_are_refused(kernels, tmp_path):
    with pytest.raises(ek.ExportError, match="must differ"):
        ek.export_c({"mm": kernels["mm"], "MM": kernels["conv"]}, tmp_path)


def test_kernels_of_different_targets_are_refused(kernels, other_mm, tmp_path):
    with pytest.raises(ek.ExportError, match="different targets"):
        ek.export_c([kernels["mm"], other_mm], tmp_path)


def _other_target(target: ek.Target) -> str:
    """A target that runs here but is not the kernels' own: host without its last feature."""
    features = target.string.split("-")
    return "-".join(features[:-1]) if len(features) > 3 else f"{target.string}-no_asserts"


def test_unwritable_directory_is_refused(kernels, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ek.ExportError, match="cannot write"):
        ek.export_c(list(kernels.values()), blocker / "lib")
