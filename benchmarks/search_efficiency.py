"""Search efficiency, side by side: random search, the GA, the GA with its cost
model ("ga+model") and TVM's MetaSchedule ("metaschedule": its evolutionary search
with its XGBoost cost model, from the ``tvm`` extra), with the same budget and
seeds, on gemm 1024^3, conv2d 1x64x56x56->64 3x3, depthwise 3x3 1x128x56x56 and
softmax 1024x1000.

    python benchmarks/search_efficiency.py [--budget 120] [--seeds 0 1] [--only gemm-1024 conv2d]
        [--strategies random ga ga+model metaschedule] [--scenarios empty transfer] [--prefill 60] [--out DIR]

Two scenarios: ``empty`` (every run starts from empty records) and ``transfer``
(every run starts from records of other shapes of the same family, made first by
the GA with ``--prefill`` seconds per shape, and copied afresh for each run, so no
run sees another's evaluations). For each run: the best time against evaluations
and against wall time (plotted to search_efficiency.png when matplotlib is there),
the final kernel's time (its finalists retimed), the seconds each strategy needed
to reach the GA's final best of the same seed, the cost model's rank correlation
on the candidates it ranked, and the seconds spent fitting and screening.
Writes search_efficiency.json and search_efficiency.md into ``--out`` (default:
results/search beside this script). The machine is shared and noisy: compare
within one run, and state the machine (lscpu) beside any number.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import evokernel as ek
from evokernel.bench import SideBySide, time_side_by_side
from evokernel.bench import _metaschedule
from evokernel.search import ModelGuidedSearch, create_strategy
from evokernel.store import MemoryRecords

RESULTS = Path(__file__).resolve().parent / "results" / "search"

OPERATORS = {
    "gemm-1024": lambda: ek.operators.matmul(1024, 1024, 1024),
    "conv2d": lambda: ek.operators.conv2d(1, 64, 56, 56, 64, 3, pad=1),
    "depthwise": lambda: ek.operators.depthwise_conv2d(1, 128, 56, 56, 3, pad=1),
    "softmax": lambda: ek.operators.softmax((1024, 1000)),
}
#: Other shapes of each family: the records the transfer scenario starts from.
OTHER_SHAPES = {
    "gemm-1024": [lambda: ek.operators.matmul(512, 512, 512), lambda: ek.operators.matmul(256, 1024, 512)],
    "conv2d": [lambda: ek.operators.conv2d(1, 32, 28, 28, 64, 3, pad=1),
               lambda: ek.operators.conv2d(1, 64, 28, 28, 64, 3, pad=1)],
    "depthwise": [lambda: ek.operators.depthwise_conv2d(1, 64, 56, 56, 3, pad=1),
                  lambda: ek.operators.depthwise_conv2d(1, 128, 28, 28, 3, pad=1)],
    "softmax": [lambda: ek.operators.softmax((512, 1000)), lambda: ek.operators.softmax((1024, 512))],
}


def private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o700)
    return path


def prefill(name: str, seconds: float, evaluator: str) -> MemoryRecords:
    """Records of the GA on the other shapes of ``name``'s family."""
    db = MemoryRecords()
    for i, make in enumerate(OTHER_SHAPES[name]):
        op = make()
        began = time.monotonic()
        ek.tune(op, budget=f"{seconds}s", seed=100 + i, evaluator=evaluator, records=db,
                cache_dir=private_dir("ek-prefill-"), progress=False, retune=True)
        print(f"  prefill {op.key}: {time.monotonic() - began:.0f} s", flush=True)
    return db


def copy(records: MemoryRecords | None) -> MemoryRecords:
    db = MemoryRecords()
    for r in (records.find() if records is not None else ()):
        db.add(r)
    return db


def run(name: str, strategy_name: str, seed: int, seconds: float, evaluator: str,
        past: MemoryRecords | None) -> dict:
    op = OPERATORS[name]()
    strategy = create_strategy(strategy_name)
    db = copy(past)
    began = time.monotonic()
    kernel = ek.tune(op, budget=f"{seconds}s", seed=seed, evaluator=evaluator, strategy=strategy, records=db,
                     cache_dir=private_dir("ek-search-"), progress=False, retune=True)
    s = kernel.stats
    out = {"operator": name, "key": op.key, "strategy": strategy_name, "seed": seed,
           "time_ms": s.time * 1e3, "best_searched_ms": min(s.history) * 1e3 if s.history else None,
           "evaluations": len(s.history), "history_ms": [t * 1e3 for t in s.history],
           "history_seconds": list(s.history_seconds), "elapsed": s.elapsed, "wall": time.monotonic() - began,
           "rank_correlation": s.rank_correlation, "predicted": s.predicted, "outcomes": s.outcomes}
    if isinstance(strategy, ModelGuidedSearch):
        out["fit_seconds"] = sum(strategy.fit_seconds)
        out["fits"] = len(strategy.fit_seconds)
        out["screen_seconds"] = sum(strategy.screen_seconds)
    return out


def failed(name: str, strategy: str, seed: int, error: str) -> dict:
    """A run's row before (or without) a kernel: ``error`` says why there is none."""
    return {"operator": name, "key": OPERATORS[name]().key, "strategy": strategy, "seed": seed, "time_ms": None,
            "best_searched_ms": None, "evaluations": 0, "history_ms": [], "history_seconds": [], "elapsed": 0.0,
            "wall": 0.0, "rank_correlation": None, "predicted": 0, "outcomes": {}, "error": error or None}


def run_metaschedule(name: str, seed: int, seconds: float) -> dict:
    """MetaSchedule on ``name`` for ``seconds``, its exported kernel timed here."""
    op = OPERATORS[name]()
    tuned = _metaschedule.tune(op, f"{seconds}s", 2, private_dir("ek-metaschedule-"), seed)
    out = failed(name, "metaschedule", seed, tuned.error)
    out.update(evaluations=tuned.trials, elapsed=tuned.seconds, wall=tuned.seconds)
    if tuned.library is None:
        return out
    inputs = op.random_inputs(np.random.default_rng(seed))
    timing = time_side_by_side({"metaschedule": _metaschedule.baseline(tuned.library, op, inputs, 2)}, SideBySide())
    previous = 0
    for at, trials, best in tuned.curve:  # one point per candidate, each round's best at the round's end
        out["history_ms"] += [best * 1e3] * (trials - previous)
        out["history_seconds"] += [at] * (trials - previous)
        previous = trials
    out.update(time_ms=timing["metaschedule"].median * 1e3,
               best_searched_ms=min(out["history_ms"], default=None))
    return out


def reach(result: dict, target_ms: float) -> tuple[int | None, float | None]:
    """Evaluations and seconds ``result`` needed to reach ``target_ms`` (None: never)."""
    for i, (best, at) in enumerate(zip(result["history_ms"], result["history_seconds"] or [None] * 10**6)):
        if best <= target_ms * (1 + 1e-9):
            return i + 1, at
    return None, None


def machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines()
        model = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("Model name")), platform.processor())
        cpus = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("CPU(s)")), "?")
        family = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("CPU family")), "?")
        number = next((l.split(":", 1)[1].strip() for l in lines if l.strip().startswith("Model:")), "?")
        return f"{model} (family {family}, model {number}), {cpus} CPUs"
    except (OSError, subprocess.SubprocessError, StopIteration):
        return platform.processor() or platform.machine()


def report(results: list[dict], args, out: Path) -> str:
    lines = [f"# Search efficiency ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"Machine: {machine()}; budget {args.budget:g} s per run, seeds {args.seeds}, evaluator "
             f"{args.evaluator}.", ""]
    for scenario in args.scenarios:
        lines += [f"## {scenario}", "",
                  "| operator | strategy | seed | kernel ms | best searched ms | evaluations | reaches GA's best "
                  "after | rank corr. (n) | fit s / screen s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in results if r["scenario"] == scenario):
            ga = next((g for g in results if g["scenario"] == scenario and g["operator"] == r["operator"]
                       and g["seed"] == r["seed"] and g["strategy"] == "ga"), None)
            when = "-"
            if ga is not None and ga["best_searched_ms"] is not None:
                n, at = reach(r, ga["best_searched_ms"])
                when = "never" if n is None else f"{n} evals, {at:.0f} s" if at is not None else f"{n} evals"
                if r["strategy"] == "metaschedule":
                    when += " (by its own runner's times)"
            rho = "-" if r["rank_correlation"] is None else f"{r['rank_correlation']:.2f} ({r['predicted']})"
            cost = f"{r['fit_seconds']:.1f} / {r['screen_seconds']:.1f}" if "fit_seconds" in r else "-"
            lines.append(f"| {r['operator']} | {r['strategy']} | {r['seed']} | {_number(r['time_ms'])} | "
                         f"{_number(r['best_searched_ms'])} | {r['evaluations']} | {when} | {rho} | {cost} |")
        lines.append("")
    text = "\n".join(lines)
    (out / "search_efficiency.md").write_text(text)
    return text


def _number(ms: float | None) -> str:
    return "failed" if ms is None else f"{ms:.4g}"


def plot(results: list[dict], args, out: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [(s, name) for s in args.scenarios for name in args.only]
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.2 * len(rows)), squeeze=False)
    for (scenario, name), (by_eval, by_time) in zip(rows, axes):
        for r in (r for r in results if r["scenario"] == scenario and r["operator"] == name):
            label = f"{r['strategy']} s{r['seed']}"
            by_eval.plot(range(1, len(r["history_ms"]) + 1), r["history_ms"], label=label)
            if r["history_seconds"]:
                by_time.plot(r["history_seconds"], r["history_ms"], label=label)
        for ax, xlabel in ((by_eval, "evaluations"), (by_time, "seconds")):
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("best ms")
            ax.set_title(f"{name}, {scenario} records")
        by_eval.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "search_efficiency.png", dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of search per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="+", default=list(OPERATORS), choices=list(OPERATORS))
    parser.add_argument("--strategies", nargs="+", default=["random", "ga", "ga+model", "metaschedule"])
    parser.add_argument("--scenarios", nargs="+", default=["empty", "transfer"], choices=["empty", "transfer"])
    parser.add_argument("--prefill", type=float, default=60.0, help="GA seconds per other shape (transfer)")
    parser.add_argument("--evaluator", default="local", help="local (default) or ray")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    create_strategy("ga+model")  # fails early, naming the package, when LightGBM is missing
    if "metaschedule" in args.strategies and not _metaschedule.available():
        parser.error("the metaschedule strategy needs TVM: pip install 'evokernel[tvm]'")
    results = []
    for scenario in args.scenarios:
        for name in args.only:
            past = prefill(name, args.prefill, args.evaluator) if scenario == "transfer" else None
            for seed in args.seeds:
                for strategy in args.strategies:
                    if strategy == "metaschedule":
                        if scenario != "empty":
                            continue
                        r = run_metaschedule(name, seed, args.budget)
                    else:
                        try:
                            r = run(name, strategy, seed, args.budget, args.evaluator, past)
                        except ek.EvokernelError as error:  # no correct candidate in the budget: say so, go on
                            r = failed(name, strategy, seed, str(error))
                    r["scenario"] = scenario
                    results.append(r)
                    print(f"{scenario:8} {name:10} {strategy:9} seed {seed}: kernel {r['time_ms']} ms, "
                          f"{r['evaluations']} evaluations, rank corr. {r['rank_correlation']}", flush=True)
                    (args.out / "search_efficiency.json").write_text(json.dumps(
                        {"machine": machine(), "budget": args.budget, "results": results}, indent=1))
    print(report(results, args, args.out))
    plot(results, args, args.out)


if __name__ == "__main__":
    main()
