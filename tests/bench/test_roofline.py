"""The machine's roofline, measured for real (once per process), and its place in the
bench's results and table. Bounds come from the CPU's own description, never from
numbers of one machine."""

from __future__ import annotations

import json
import os
import re

import pytest

import evokernel as ek
from evokernel import bench
from evokernel.bench._roofline import caches, microarchitecture
from evokernel.errors import EvokernelError

GHZ_CEILING = 6.0


@pytest.fixture(scope="module")
def roof():
    return bench.measure()


def widest_lanes_fp32() -> int:
    """FP32 lanes of the widest vector the CPU has, from its flags in /proc/cpuinfo."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return 4
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith(("flags", "Features"))), []))
    return 16 if "avx512f" in flags else 8 if "avx" in flags else 4


def test_peak_is_positive_and_below_what_the_cores_could_issue(roof):
    """At most 2 FMA units per core, each of the widest vector, 2 flops an FMA, at 6 GHz."""
    cores = len(os.sched_getaffinity(0))
    lanes = widest_lanes_fp32()
    ceiling = {"float32": cores * 2 * lanes * 2 * GHZ_CEILING, "float64": cores * 2 * lanes // 2 * 2 * GHZ_CEILING}
    for dtype, gflops in roof.peak_gflops.items():
        assert 0 < gflops < ceiling[dtype], (dtype, gflops, ceiling[dtype])
        assert roof.per_core(dtype) == pytest.approx(gflops / roof.cores) and roof.cores <= cores
    assert roof.vector_bits == 32 * lanes


def test_fp64_peak_is_about_half_of_fp32(roof):
    assert 0.3 < roof.peak_gflops["float64"] / roof.peak_gflops["float32"] < 0.7


def test_dram_is_slower_than_l2(roof):
    assert list(roof.bandwidth_gbps)[-1] == "DRAM"
    assert 0 < roof.bandwidth_gbps["DRAM"] < roof.bandwidth_gbps["L2"]
    capacities = list(roof.capacity_bytes.values())
    assert capacities == sorted(capacities) and roof.level(capacities[-1] + 1) == "DRAM"
    assert roof.level(1) == "L2"


def test_a_large_gemm_is_compute_bound_and_relu_memory_bound(roof):
    gemm = ek.operators.matmul(1024, 1024, 1024)
    seconds, kind, level = bench.bound(gemm, roof)
    assert kind == "compute" and seconds == pytest.approx(gemm.flops / (roof.peak_gflops["float32"] * 1e9))
    assert level == roof.level(gemm.bytes_moved)
    relu = ek.operators.relu((1, 64, 112, 112))
    seconds, kind, level = bench.bound(relu, roof)
    assert kind == "memory" and seconds == pytest.approx(relu.bytes_moved / (roof.bandwidth_gbps[level] * 1e9))
    double = ek.operators.matmul(1024, 1024, 1024, dtype="float64")
    assert bench.bound(double, roof)[0] == pytest.approx(double.flops / (roof.peak_gflops["float64"] * 1e9))


def test_it_is_measured_once_per_process(roof):
    assert bench.measure() is roof
    assert bench.Roofline.from_dict(json.loads(json.dumps(roof.to_dict()))) == roof
    with pytest.raises(EvokernelError, match="threads"):
        bench.measure(0)


def test_the_bench_states_every_kernel_as_a_fraction_of_the_roofline(roof, tmp_path):
    """A real tiny run: the results carry the roofline, each timed method its fraction,
    and the table the new columns with the machine's roofline above them."""
    case = bench.Case("tiny-relu", lambda: ek.operators.relu((4, 64)), "bytes")
    config = bench.Config(budget=1, evaluator="inline", autoschedulers=(),
                          baselines={"numpy": bench.numpy_baseline},
                          protocol=bench.SideBySide(rounds=2, min_time=0.001))
    results = bench.run([case], config)
    assert results["machine"]["roofline"] == roof.to_dict()
    (op,) = results["operators"]
    seconds, kind, level = bench.bound(case.operator, roof)
    assert (op["roofline"]["seconds"], op["roofline"]["bound"], op["roofline"]["level"]) == (seconds, kind, level)
    for name in ("evokernel", "numpy"):
        entry = op["methods"][name]
        assert entry["roofline_fraction"] == pytest.approx(seconds / (entry["median_ms"] / 1e3))
    assert op["roofline"]["evokernel"] == op["methods"]["evokernel"]["roofline_fraction"]
    peer = op["roofline"]["best_peer"]
    assert peer in ("unscheduled", "numpy") and op["roofline"]["best_peer_fraction"] == max(
        op["methods"][n]["roofline_fraction"] for n in ("unscheduled", "numpy"))

    bench.write(results, tmp_path)
    table = (tmp_path / "bench.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| operator"))
    columns = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", header.strip("|"))]
    assert columns[-3:-1] == ["evokernel % of roofline (compute|memory)", "best other % of roofline"]
    row = next(line for line in table.splitlines() if line.startswith("| tiny-relu"))
    assert re.search(r"\| [\d.]+% \(memory, L2\) \| \w+ [\d.]+% \| [\d.]+% \(slowest [\d.]+ µs\) \|$", row), row
    assert str(roof) in table and roof.cpu in table
    if roof.microarchitecture:
        assert f"({roof.microarchitecture})" in table


def test_the_cli_prints_the_roofline_alone(roof, capsys):
    assert bench.main(["--roofline"]) == 0
    out = capsys.readouterr().out
    assert str(roof) in out and "GFLOP/s" in out and "GB/s" in out


def write_cache(root, cpu, index, level, kind, size, shared):
    d = root / f"cpu{cpu}" / "cache" / f"index{index}"
    d.mkdir(parents=True)
    for name, value in {"level": level, "type": kind, "size": size, "shared_cpu_list": shared}.items():
        (d / name).write_text(f"{value}\n")


def test_caches_count_a_shared_cache_once_and_fall_back(tmp_path):
    for cpu in (0, 1):
        write_cache(tmp_path, cpu, 0, 1, "Data", "32K", str(cpu))
        write_cache(tmp_path, cpu, 1, 1, "Instruction", "32K", str(cpu))
        write_cache(tmp_path, cpu, 2, 2, "Unified", "1024K", str(cpu))
        write_cache(tmp_path, cpu, 3, 3, "Unified", "32M", "0-1")
    assert caches({0, 1}, tmp_path) == ({"L1": 64 << 10, "L2": 2 << 20, "L3": 32 << 20}, "sysfs")
    assert caches({0}, tmp_path) == ({"L1": 32 << 10, "L2": 1 << 20, "L3": 32 << 20}, "sysfs")
    sizes, source = caches({0, 1}, tmp_path / "nothing")
    assert source == "assumed" and sizes["L1"] < sizes["L2"] < sizes["L3"]


@pytest.mark.parametrize("vendor,family,model,name", [
    ("AuthenticAMD", 25, 0x01, "Zen 3"), ("AuthenticAMD", 25, 0x21, "Zen 3"), ("AuthenticAMD", 25, 0x50, "Zen 3"),
    ("AuthenticAMD", 25, 0x11, "Zen 4"), ("AuthenticAMD", 25, 0x61, "Zen 4"), ("AuthenticAMD", 26, 0x02, "Zen 5"),
    ("AuthenticAMD", 23, 0x31, "Zen 2"), ("GenuineIntel", 6, 0x8F, None),
])
def test_microarchitecture_from_family_and_model(vendor, family, model, name):
    assert microarchitecture({"vendor_id": vendor, "cpu family": str(family), "model": str(model)}) == name
