"""Tuned versus unscheduled, side by side: gemm 512^3 and conv2d 1x64x56x56->64 3x3.

    python benchmarks/tuned_vs_unscheduled.py [--budget 60s] [--out DIR]

For each operator: tune within the budget, then time the tuned kernel and the
unscheduled pipeline alternately in this process (medians of several rounds) and
print both with their ratio. Also writes tuned_vs_unscheduled.json into ``--out``
(default: the ``results`` directory beside this script).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import evokernel as ek
from evokernel.codegen import FUNCTION, build, default_threads
from evokernel.genome import ScheduleSpace
from evokernel import codegen

NAME = Path(__file__).stem
RESULTS = Path(__file__).resolve().parent / "results"

OPERATORS = {
    "gemm 512^3": lambda: ek.operators.matmul(512, 512, 512),
    "conv2d 1x64x56x56->64 3x3 pad 1": lambda: ek.operators.conv2d(1, 64, 56, 56, 64, 3, pad=1),
}


def unscheduled(op, target: ek.Target, threads: int) -> codegen.NativeKernel:
    space = ScheduleSpace.from_algorithm(op.algorithm(), target.natural_vector_size(op.dtype), threads)
    native_dir = codegen.native_dir(codegen.cache_dir())
    runtime = codegen.runtime_library(target.string, native_dir)
    library = codegen.link_kernel(build(op, space, None, target).object_bytes, runtime, native_dir)
    specs = (*op.inputs, op.output)
    return codegen.NativeKernel(library, FUNCTION, codegen.load_runtime(runtime, threads),
                                [s.shape for s in specs], [s.dtype for s in specs])


def side_by_side(op, kernel: ek.Kernel, baseline: codegen.NativeKernel, rounds: int = 5) -> tuple[float, float]:
    arrays = op.random_inputs(np.random.default_rng(0))
    out = np.empty(op.output.shape, op.output.dtype)
    tuned, base = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(20):
            kernel(*arrays, out=out)
        tuned.append((time.perf_counter() - start) / 20)
        base.append(float(np.median(baseline.time([[*arrays, out]], 1))))
    return float(np.median(tuned)), float(np.median(base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="60s", help="tuning budget per operator (default 60s)")
    parser.add_argument("--out", type=Path, default=RESULTS, metavar="DIR",
                        help=f"directory for {NAME}.json (default: {RESULTS})")
    args = parser.parse_args()
    target, threads = ek.Target.parse("host"), default_threads()
    rows = []
    print(f"| operator | unscheduled ms | tuned ms ({args.budget}) | speedup |")
    print("|---|---:|---:|---:|")
    for name, make in OPERATORS.items():
        op = make()
        kernel = ek.tune(op, target, budget=args.budget, seed=0)
        tuned, base = side_by_side(op, kernel, unscheduled(op, target, threads))
        rows.append({"operator": name, "key": op.key, "unscheduled_ms": base * 1e3, "tuned_ms": tuned * 1e3,
                     "speedup": base / tuned, "evaluations": len(kernel.history)})
        print(f"| {name} | {base * 1e3:.2f} | {tuned * 1e3:.3f} | {base / tuned:.1f}x |", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json").write_text(json.dumps({
        "machine": platform.processor() or platform.machine(), "threads": threads, "budget": args.budget,
        "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
