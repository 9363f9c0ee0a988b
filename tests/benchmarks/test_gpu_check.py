"""benchmarks/gpu_prepare.py and benchmarks/gpu_check.py, dry-run where no GPU is:
a carry packed and unpacked for real (wheels made here, one recompressed with xz as
Halide's is), the refusals of a damaged, foreign or missing carry and of a machine
without a GPU, and every method the check times built for the CUDA target."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from evokernel.target import gpu_available

ROOT = Path(__file__).resolve().parents[2]
HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check, gpu_prepare = script("gpu_check"), script("gpu_prepare")


def make_wheel(directory: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A real (pure) wheel: the files, and a dist-info with METADATA, WHEEL and RECORD."""
    info = f"{name}-{version}.dist-info"
    files = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"]).encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for member, data in files.items():
            wheel.writestr(member, data)
    return path


@pytest.fixture
def wheels(tmp_path):
    directory = tmp_path / "wheels"
    directory.mkdir()
    make_wheel(directory, "bigpkg", "1.0", {"bigpkg/__init__.py": b"VALUE = 1\n", "bigpkg/libnative.so": b"\x7fELF"})
    make_wheel(directory, "small_pkg", "2.0", {"small_pkg/__init__.py": b"VALUE = 2\n"})
    return directory


def packed(tmp_path, wheels, python=HERE) -> Path:
    out = tmp_path / "carry"
    gpu_prepare.prepare(out, python, wheels, xz=("bigpkg",), dists={"bigpkg": "1.0", "small-pkg": "2.0"})
    return out


def test_a_carry_packed_here_unpacks_into_importable_packages(tmp_path, wheels):
    carry = packed(tmp_path, wheels)
    manifest = json.loads((carry / "manifest.json").read_text())
    assert manifest["python"] == HERE
    assert sorted(f["name"] for f in manifest["files"]) == ["bigpkg-1.0-py3-none-any.tar.xz",
                                                           "small_pkg-2.0-py3-none-any.whl"]
    site = gpu_check.unpack(carry, tmp_path / "site")
    assert os.access(site / "bigpkg" / "libnative.so", os.X_OK)
    done = subprocess.run([sys.executable, "-c", "import bigpkg, small_pkg; print(bigpkg.VALUE, small_pkg.VALUE)"],
                          env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "2"]


def test_halide_is_carried_without_what_the_check_never_uses():
    drop = gpu_prepare.DROP
    assert all(drop.match(p) for p in ["halide/bin/gengen", "halide/lib64/libHalide_GenGen.a",
                                       "halide/lib64/cmake/Halide/HalideConfig.cmake", "halide/share/doc/x"])
    assert not any(drop.match(p) for p in ["halide/lib64/libHalide.so", "halide/include/HalideRuntime.h",
                                           "halide/lib64/libautoschedule_anderson2021.so", "halide/__init__.py"])


def test_a_missing_damaged_or_foreign_carry_is_refused_naming_the_problem(tmp_path, wheels):
    with pytest.raises(gpu_check.GpuCheckError, match="no carried packages in .*gpu_prepare.py"):
        gpu_check.unpack(tmp_path / "nowhere", tmp_path / "site")
    carry = packed(tmp_path, wheels, python="3.12" if HERE != "3.12" else "3.11")
    with pytest.raises(gpu_check.GpuCheckError, match=f"for Python 3.1[12], this is Python {HERE}"):
        gpu_check.unpack(carry, tmp_path / "site")
    carry = packed(tmp_path, wheels)
    archive = carry / "bigpkg-1.0-py3-none-any.tar.xz"
    archive.write_bytes(archive.read_bytes()[:-1] + b"\0")
    with pytest.raises(gpu_check.GpuCheckError, match="bigpkg-1.0-py3-none-any.tar.xz is damaged"):
        gpu_check.unpack(carry, tmp_path / "site")
    with pytest.raises(gpu_prepare.PrepareError, match=r"no wheel in .* for deap==9.9"):
        gpu_prepare.prepare(tmp_path / "carry2", HERE, wheels, dists={"deap": "9.9"})


def test_what_evokernel_loads_is_carried_less_what_the_gpu_machine_has():
    dists = gpu_prepare.needed_distributions()
    assert {"halide", "deap", "platformdirs"} <= set(dists)
    assert dists["halide"] == metadata.version("halide")
    assert not {"numpy", "filelock", "ray", "evokernel"} & set(dists), "the local evaluator needs no Ray"


@pytest.mark.skipif(gpu_available("cuda"), reason="this machine has a CUDA device")
@pytest.mark.parametrize("args, message", [
    ([], "no CUDA device|PyTorch is not installed"),
    (["--ops", "gemm,fft"], "--ops takes some of gemm, conv2d, softmax, got fft"),
    (["--seconds", "0"], "--seconds must be positive"),
])
def test_the_check_refuses_what_it_cannot_do_in_one_line(tmp_path, args, message):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("gpu_check: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert __import__("re").search(message, done.stderr)


def dry_run(tmp_path, ops: str) -> dict:
    """The check's dry run in a fresh process in which Ray cannot be imported."""
    code = ("import runpy, sys; sys.modules['ray'] = None; "
            f"sys.argv = ['gpu_check.py', '--dry-run', '--out', {str(tmp_path)!r}, '--ops', {ops!r}]; "
            f"runpy.run_path({str(ROOT / 'benchmarks' / 'gpu_check.py')!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "gpu_check.json").read_text())


def check_dry_run(report: dict, ops: list[str]) -> None:
    capability = max(c for c in gpu_check.known_capabilities() if c <= 90)
    assert report["dry_run"] and f"-cuda-cuda_capability_{capability}" in report["target"]
    assert [row["key"].split("(")[0] for row in report["operators"]] == [
        gpu_check.OPERATORS[o][1][0] for o in ops]
    for row in report["operators"]:
        assert row["evokernel"] == {"status": "compiled", "ptx": True, "gpu_mapped": True}, row
        assert row["anderson2021"]["status"] == "compiled" and row["anderson2021"]["ptx"], row


def test_a_dry_run_builds_every_halide_method_for_the_gpu_without_ray(tmp_path):
    report = dry_run(tmp_path, "softmax")
    check_dry_run(report, ["softmax"])
    assert "| softmax 4096×1000 | compiled | compiled |" in (tmp_path / "gpu_check.md").read_text()


@pytest.mark.slow
def test_a_dry_run_of_every_operator(tmp_path):
    check_dry_run(dry_run(tmp_path, "gemm,conv2d,softmax"), ["gemm", "conv2d", "softmax"])
