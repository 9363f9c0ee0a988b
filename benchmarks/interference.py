"""A tuned kernel among other libraries' thread pools: its time alone, right after
NumPy (OpenBLAS) calls and right after PyTorch calls, in fresh processes with and
without the settings ``ek.thread_advice()`` gives.

    python benchmarks/interference.py [--budget 60s] [--size 512]

OpenBLAS's worker threads spin for a while after each call (2^28 cycles by
default, about 0.1 s), and so do OpenMP's (PyTorch's pool); a kernel whose own
thread pool starts in that window shares the cores with them. Each line is the
median per-call time over batches of kernel calls, each batch right after a few
calls of the other library, so every batch starts inside that window.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "default": {},
    "advised": {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"},
}


def child(bundle: str, size: int, batches: int = 15, calls: int = 20) -> dict:
    """Run in a fresh process: the kernel alone, after NumPy, after PyTorch (seconds per call)."""
    import numpy as np

    import evokernel as ek

    kernel = ek.load_kernel(bundle, trusted=True)
    rng = np.random.default_rng(0)
    a, b = (rng.random((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty((size, size), np.float32)
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        others = {"numpy": lambda: a @ b, "pytorch": lambda: torch.mm(ta, tb)}
    except ImportError:
        others = {"numpy": lambda: a @ b}

    def batch(before) -> float:
        for _ in range(3):
            before()
        start = time.perf_counter()
        for _ in range(calls):
            kernel(a, b, out=out)
        return (time.perf_counter() - start) / calls

    results = {}
    for name, before in {"alone": lambda: time.sleep(0.2), **others}.items():
        batch(before)
        results[name] = statistics.median(batch(before) for _ in range(batches))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="60s")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="evokernel-bench/interference.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size)))
        return
    import evokernel as ek

    with tempfile.TemporaryDirectory() as scratch:
        op = ek.operators.matmul(args.size, args.size, args.size)
        kernel = ek.tune(op, budget=args.budget, seed=0, cache_dir=Path(scratch, "cache"), progress=False)
        bundle = kernel.save(Path(scratch, "gemm.evokernel"))
        results = {}
        for label, env in SETTINGS.items():
            done = subprocess.run([sys.executable, __file__, "--child", str(bundle), "--size", str(args.size)],
                                  env={**os.environ, **env}, capture_output=True, text=True, check=True)
            results[label] = json.loads(done.stdout.splitlines()[-1])
    print(f"gemm {args.size}^3, tuned {kernel.time_ms:.3f} ms; median ms per call, each batch right after:")
    for label, times in results.items():
        alone = times["alone"]
        cells = "  ".join(f"{k} {v * 1e3:.3f} ({v / alone:.2f}x)" for k, v in times.items())
        print(f"  {label:<8} {cells}   env {SETTINGS[label] or 'as is'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"kernel_ms": kernel.time_ms, "settings": SETTINGS, "results": results}, indent=1))


if __name__ == "__main__":
    main()
