"""Whole networks, side by side: SqueezeNet v1.1 and ResNet-18 (torchvision's
definitions, random weights, exported to ONNX) tuned by ``ek.tune_model`` under one
budget, then timed beside onnxruntime and PyTorch on the same machine and threads.

    pip install '.[bench]' torchvision
    python benchmarks/networks.py --budget 10m                   # both networks
    python benchmarks/networks.py --models squeezenet --budget 10m --per-operator 2m
    python benchmarks/networks.py --warm-start 60s               # a new conv shape, with and without its family

Prints, per network: tuning wall time, the sum of the tuned operators' times before
(unscheduled) and after, the network run by evokernel, onnxruntime and PyTorch
(medians, all with the same number of threads), and writes a JSON beside.
``--per-operator`` also tunes every distinct operator alone for that long, for the
"one budget versus a budget per operator" comparison. ``--warm-start`` measures how
long a new shape of a known family takes to reach 90% of its final speed, with and
without records of its family.
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

MODELS = {"squeezenet": "squeezenet1_1", "resnet18": "resnet18"}


def machine(threads: int) -> dict:
    """The CPU, its microarchitecture and measured roofline, and the date, as the bench states them."""
    from evokernel import bench

    return {**bench.machine(threads, bench.measure(threads)), "date": time.strftime("%Y-%m-%d")}


def export(name: str, path: Path) -> Path:
    """torchvision's ``name`` with random weights, as ONNX (opset 17, batch 1)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, MODELS[name])(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"], opset_version=17,
                      dynamo=False)
    return path


def median_time(run, repeat: int = 30, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peers(name: str, path: Path, x: np.ndarray, threads: int) -> dict:
    import onnxruntime as ort
    import torch
    import torchvision

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, MODELS[name])(weights=None).eval()
    tx = torch.from_numpy(x)
    with torch.inference_mode():
        eager = median_time(lambda: model(tx))
    return {"onnxruntime": median_time(lambda: session.run(None, {"input": x})), "pytorch": eager,
            "reference_output": session.run(None, {"input": x})[0]}


def bench_network(name: str, budget: str, per_operator: str | None, threads: int, work: Path) -> dict:
    path = export(name, work / f"{name}.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    started = time.monotonic()
    net = ek.tune_model(path, budget=budget, seed=0, threads=threads, cache_dir=work / f"cache-{name}")
    tuning = time.monotonic() - started
    rows = [r for r in net.rows() if r["after"] is not None]  # one per node served by a tuned kernel
    before, after = sum(r["before"] or 0.0 for r in rows), sum(r["after"] for r in rows)
    result = {"model": name, "budget": budget, "tuning_seconds": tuning, "distinct_operators": len(net.kernels),
              "sum_before": before, "sum_after": after, "evokernel": median_time(lambda: net(x))}
    others = peers(name, path, x, threads)
    result["max_abs_error_vs_onnxruntime"] = float(np.abs(net(x) - others.pop("reference_output")).max())
    result.update(others)
    if per_operator:
        started = time.monotonic()
        alone = 0.0
        for op, count in net.network.operators().values():
            kernel = ek.tune(op, budget=per_operator, seed=0, threads=threads, progress=False,
                             cache_dir=work / f"cache-{name}-alone")
            alone += count * kernel.stats.time
            print(f"alone: {op.key} {kernel.stats.time * 1e3:.4g} ms x{count}", flush=True)
        result.update({"per_operator_budget": per_operator, "per_operator_tuning_seconds": time.monotonic() - started,
                       "per_operator_sum_after": alone})
    print(net.report())
    return result


def seconds_to(history: list[float], stamps: list[float], fraction: float = 0.9) -> float:
    """Seconds until the best time is within ``fraction`` of speed of the final best."""
    final = history[-1]
    return next(s for best, s in zip(history, stamps) if final / best >= fraction)


def bench_warm_start(budget: str, threads: int, work: Path) -> dict:
    """A conv shape no model has: tuned from empty records, then with records of
    five other conv shapes present (each tuned briefly first)."""
    new = ek.operators.conv2d(1, 96, 28, 28, 96, 3, pad=1, bias=True, activation="relu")
    family = [ek.operators.conv2d(1, c, s, s, c, 3, pad=1, bias=True, activation="relu")
              for c, s in ((64, 56), (128, 28), (256, 14), (48, 32), (160, 20))]
    cold = ek.tune(new, budget=budget, seed=1, threads=threads, progress=False, cache_dir=work / "cold")
    for op in family:
        ek.tune(op, budget="30s", seed=1, threads=threads, progress=False, cache_dir=work / "warm")
    warm = ek.tune(new, budget=budget, seed=1, threads=threads, progress=False, cache_dir=work / "warm")
    result = {name: {"final_ms": k.stats.time * 1e3,
                     "seconds_to_90": seconds_to(list(k.stats.history), list(k.stats.history_seconds))}
              for name, k in (("without family records", cold), ("with family records", warm))}
    history, stamps = list(warm.stats.history), list(warm.stats.history_seconds)
    reached = [s for best, s in zip(history, stamps) if best <= cold.stats.time]
    result["with family records"]["seconds_to_the_cold_final"] = reached[0] if reached else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--budget", default="10m", help="one budget per network")
    parser.add_argument("--per-operator", help="also tune every distinct operator alone with this budget")
    parser.add_argument("--warm-start", metavar="BUDGET", help="measure the warm start instead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="evokernel-bench/networks.json")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(args.threads)}  # the roofline, measured before anything shares the cores
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.warm_start:
            results["warm_start"] = bench_warm_start(args.warm_start, args.threads, work)
        for name in [] if args.warm_start else args.models:
            results[name] = bench_network(name, args.budget, args.per_operator, args.threads, work)
            out.write_text(json.dumps(results, indent=1))  # each network as it is done
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
