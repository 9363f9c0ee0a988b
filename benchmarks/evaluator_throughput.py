"""Evaluations per second: inline, local and Ray evaluators on the same candidates.

    python benchmarks/evaluator_throughput.py [--count 48]

For gemm 512^3 and conv2d 1x64x56x56->64 3x3 pad 1, every evaluator evaluates the same
list of genomes (templates, then random ones that do not crash) from a fresh context;
Ray is started beforehand so its start-up is not counted. Then real tuning runs (local versus Ray, same budget): evaluations per second of the
search as the GA really runs it. Then the timing check: a fixed reference
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
from evokernel.codegen import default_threads
from evokernel.evaluators import Context, InlineEvaluator, LocalEvaluator, Outcome, RayEvaluator, ensure_ray
from evokernel.genome import ScheduleSpace, random_genome, templates

OPERATORS = {
    "gemm 512^3": lambda: ek.operators.matmul(512, 512, 512),
    "conv2d 1x64x56x56->64 3x3": lambda: ek.operators.conv2d(1, 64, 56, 56, 64, 3, pad=1),
}


def context(op, cache: Path) -> Context:
    target, threads = ek.Target.parse("host"), default_threads()
    space = ScheduleSpace.from_algorithm(op.algorithm(), target.natural_vector_size(op.dtype), threads)
    return Context(op, target, space, threads, cache)


def candidates(ctx: Context, count: int) -> list:
    """Templates, then random genomes, screened through the isolated local evaluator:
    the inline evaluator runs kernels in this process, where the rare crashing or
    hanging candidate would end the benchmark."""
    rng, pool = random.Random(0), list(templates(ctx.space))
    while len(pool) < 2 * count:
        pool.append(random_genome(ctx.space, rng))
    screen = LocalEvaluator()
    screen.prepare(ctx)
    safe = [g for g, r in zip(pool, screen.evaluate(pool))
            if r.outcome not in (Outcome.RUN_CRASH, Outcome.RUN_TIMEOUT)]
    screen.close()
    return safe[:count]


def throughput(evaluator, ctx: Context, genomes: list) -> float:
    """Evaluations per second over the random candidates, after the templates have
    set a realistic best time (as they do at the start of a search)."""
    evaluator.prepare(ctx)
    seeds = templates(ctx.space)
    evaluator.evaluate(seeds)
    rest = [g for g in genomes if g not in seeds]
    start = time.perf_counter()
    results = evaluator.evaluate(rest)
    seconds = time.perf_counter() - start
    evaluator.close()
    return len(results) / seconds


def tuning_rate(op, kind: str, budget: str) -> float:
    """Evaluations per second of a real tuning run (fresh cache, no records)."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o700)
        kernel = ek.tune(op, budget=budget, seed=0, evaluator=kind, cache_dir=tmp)
        return len(kernel.history) / kernel.stats.elapsed


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
    parser.add_argument("--budget", default="40s", help="budget of the tuning runs")
    args = parser.parse_args()
    ensure_ray()
    rows = []
    print("| operator | inline evals/s | local evals/s | ray evals/s | ray / inline | reference alone ms | "
          "during run ms | drift | tuning local evals/s | tuning ray evals/s | ray / local |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, make in OPERATORS.items():
        op = make()
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp)
            cache.chmod(0o700)
            ctx = context(op, cache)
            genomes = candidates(ctx, args.count)
            rates = {kind: throughput(ev, context(op, cache), genomes)
                     for kind, ev in (("inline", InlineEvaluator()), ("local", LocalEvaluator()),
                                      ("ray", RayEvaluator()))}
            alone, during = timing_check(context(op, cache), genomes)
        drift = during / alone - 1
        tuning = {kind: tuning_rate(op, kind, args.budget) for kind in ("local", "ray")}
        rows.append({"operator": name, **{f"{k}_evals_per_s": v for k, v in rates.items()},
                     "ray_over_inline": rates["ray"] / rates["inline"], "reference_alone_ms": alone * 1e3,
                     "reference_during_run_ms": during * 1e3, "drift": drift,
                     **{f"tuning_{k}_evals_per_s": v for k, v in tuning.items()}})
        print(f"| {name} | {rates['inline']:.2f} | {rates['local']:.2f} | {rates['ray']:.2f} | "
              f"{rates['ray'] / rates['inline']:.2f}x | {alone * 1e3:.3f} | {during * 1e3:.3f} | {100 * drift:+.1f}% | "
              f"{tuning['local']:.2f} | {tuning['ray']:.2f} | {tuning['ray'] / tuning['local']:.2f}x |", flush=True)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "evaluator_throughput.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "threads": default_threads(), "count": args.count, "rows": rows},
        indent=2))


if __name__ == "__main__":
    main()
