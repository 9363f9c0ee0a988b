"""A small tuned kernel called back to back, and after the caller spent a while
elsewhere: busy for 50 µs, asleep for 1 ms, asleep for 10 ms; with its workers
spinning for no time (Halide's own pool, the default), for 0.2 ms and for 1 ms after
each parallel loop (``ek.set_spin``).

    python benchmarks/wakeup.py [--budget 30s]

The search times a kernel back to back, as this script's first row does. Halide's
workers spin a few dozen times after a loop and then sleep until the next one wakes
them; a caller that does other work in between (a network's other layers, Python)
pays for that wake-up, and after a longer pause for caches and cores gone cold. Each
cell is the median time of one call over a few hundred, the settings taken in turns.
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

#: Seconds of spin compared: none (Halide's own pool, the default), 0.2 ms, 1 ms.
SPINS = [0.0, 2e-4, 1e-3]
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
    rounds = []
    for _ in range(args.rounds):
        for spin in SPINS:
            ek.set_spin(spin)
            rounds.append((spin, {label: per_call(kernel, arrays, out, *rest) for label, *rest in GAPS}))
    results = {f"spin {spin}": {label: statistics.median(r[label] for s, r in rounds if s == spin)
                                for label, *_ in GAPS} for spin in SPINS}
    print(f"{op.key}: tuned {kernel.stats.time * 1e6:.0f} µs; median µs per call, by seconds of spin")
    print(f"  {'':<20}" + "".join(f"{spin:>10g}" for spin in SPINS))
    for label, *_ in GAPS:
        print(f"  {label:<20}" + "".join(f"{results[f'spin {spin}'][label] * 1e6:10.0f}" for spin in SPINS))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"operator": op.key, "tuned_seconds": kernel.stats.time, "seconds": results},
                               indent=1))


if __name__ == "__main__":
    main()
