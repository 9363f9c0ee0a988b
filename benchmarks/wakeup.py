"""A small tuned kernel called back to back, and after the caller spent a while
elsewhere: busy for 50 µs, asleep for 1 ms, asleep for 10 ms.

    python benchmarks/wakeup.py [--budget 30s]

The search times a kernel back to back, as this script's first column does. Between
calls, Halide's workers spin a few dozen times and then sleep until the next
parallel loop wakes them; a caller that does other work in between (a network's
other layers, Python) pays for that wake-up, and after a longer pause for caches
and cores gone cold. Each cell is the median time of one call over a few hundred.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import evokernel as ek

#: (label, seconds busy before each call, seconds asleep before each call, calls)
GAPS = [("back to back", 0.0, 0.0, 300), ("after 50 µs busy", 50e-6, 0.0, 300),
        ("after 1 ms asleep", 0.0, 1e-3, 200), ("after 10 ms asleep", 0.0, 1e-2, 50)]


def per_call(kernel, arrays, out, busy: float, asleep: float, calls: int) -> float:
    """Median seconds of one call, each after ``busy`` seconds of spinning or ``asleep`` of sleep."""
    times = []
    for _ in range(calls):
        if asleep:
            time.sleep(asleep)
        until = time.perf_counter() + busy
        while time.perf_counter() < until:
            pass
        start = time.perf_counter()
        kernel(*arrays, out=out)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="30s")
    parser.add_argument("--rounds", type=int, default=2, help="every gap measured this many times, in turns")
    parser.add_argument("--out", default="evokernel-bench/wakeup.json")
    args = parser.parse_args()
    op = ek.operators.conv1x1(1, 16, 64, 55 * 55, bias=True, activation="relu")  # a SqueezeNet expand conv
    with tempfile.TemporaryDirectory() as scratch:
        kernel = ek.tune(op, budget=args.budget, seed=0, cache_dir=Path(scratch), progress=False)
    arrays = op.random_inputs(np.random.default_rng(0))
    out = np.empty(op.output.shape, op.output.dtype)
    rounds = [{label: per_call(kernel, arrays, out, *rest) for label, *rest in GAPS} for _ in range(args.rounds)]
    results = {label: statistics.median(r[label] for r in rounds) for label, *_ in GAPS}
    print(f"{op.key}: tuned {kernel.stats.time * 1e6:.0f} µs; median µs per call")
    for label, seconds in results.items():
        print(f"  {label:<20} {seconds * 1e6:8.0f}  ({seconds / results['back to back']:.2f}x)")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"operator": op.key, "tuned_seconds": kernel.stats.time, "seconds": results},
                               indent=1))


if __name__ == "__main__":
    main()
