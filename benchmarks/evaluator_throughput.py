"""Evaluations per second: inline, local and Ray evaluators on the same candidates.

    python benchmarks/evaluator_throughput.py [--count 48]

For gemm 512^3 and conv2d 1x64x56x56->64 3x3 pad 1, every evaluator evaluates the same
list of genomes (templates, then random ones) from a fresh context; Ray is started
beforehand so its start-up is not counted. Then the timing check: a fixed reference
kernel (the first template) is timed alone, and again by the Ray runner between two
batches of a tuning run; the two medians should agree within 10%.
Writes benchmarks/results/evaluator_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

import evokernel as ek
from evokernel.evaluators import Context, InlineEvaluator, LocalEvaluator, RayEvaluator, default_threads
from evokernel.evaluators._ray import ensure_ray
from evokernel.genome import ScheduleSpace, random_genome, templates

OPERATORS = {
    "gemm 512^3": lambda: ek.operators.matmul(512, 512, 512),
    "conv2d 1x64x56x56->64 3x3": lambda: ek.operators.conv2d(1, 64, 56, 56, 64, 3, pad=1),
}


def context(op, cache: Path) -> Context:
    target, threads = ek.Target.parse("host"), default_threads()
    space = ScheduleSpace.from_algorithm(op.algorithm(), target.natural_vector_size(op.dtype), threads)
    return Context(op, target, space, threads, cache)


def candidates(space, count: int) -> list:
    rng, out = random.Random(0), list(templates(space))
    while len(out) < count:
        out.append(random_genome(space, rng))
    return out[:count]


def throughput(evaluator, ctx: Context, genomes: list) -> tuple[float, int]:
    evaluator.prepare(ctx)
    evaluator.evaluate_one(genomes[0])  # warm: first worker start, runtime load
    start = time.perf_counter()
    results = evaluator.evaluate(genomes[1:])
    seconds = time.perf_counter() - start
    evaluator.close()
    return len(results) / seconds, sum(r.ok for r in results)


def timing_check(ctx: Context, genomes: list) -> tuple[float, float]:
    """Median of the reference kernel timed alone, and timed between batches."""
    ray_ev = RayEvaluator()
    ray_ev.prepare(ctx)
    reference = genomes[0]
    alone = ray_ev.retime([reference], rounds=5)[reference.key].time
    during = []
    for start in range(1, len(genomes), 8):
        ray_ev.evaluate(genomes[start:start + 8])
        during.append(ray_ev.retime([reference], rounds=1)[reference.key].time)
    ray_ev.close()
    return alone, float(np.median(during))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48)
    args = parser.parse_args()
    ensure_ray()
    rows = []
    print("| operator | inline evals/s | local evals/s | ray evals/s | ray / inline | reference alone ms | during run ms | drift |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, make in OPERATORS.items():
        op = make()
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp)
            cache.chmod(0o700)
            ctx = context(op, cache)
            genomes = candidates(ctx.space, args.count)
            rates = {kind: throughput(ev, context(op, cache), genomes)[0]
                     for kind, ev in (("inline", InlineEvaluator()), ("local", LocalEvaluator()),
                                      ("ray", RayEvaluator()))}
            alone, during = timing_check(context(op, cache), genomes)
        drift = during / alone - 1
        rows.append({"operator": name, **{f"{k}_evals_per_s": v for k, v in rates.items()},
                     "ray_over_inline": rates["ray"] / rates["inline"], "reference_alone_ms": alone * 1e3,
                     "reference_during_run_ms": during * 1e3, "drift": drift})
        print(f"| {name} | {rates['inline']:.2f} | {rates['local']:.2f} | {rates['ray']:.2f} | "
              f"{rates['ray'] / rates['inline']:.2f}x | {alone * 1e3:.3f} | {during * 1e3:.3f} | {100 * drift:+.1f}% |",
              flush=True)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "evaluator_throughput.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "threads": default_threads(), "count": args.count, "rows": rows},
        indent=2))


if __name__ == "__main__":
    main()
