"""Tuned kernels inside the engines people run, side by side: SqueezeNet v1.1 and
ResNet-18 (torchvision's definitions, random weights) in PyTorch eager, under
``torch.compile``, with ``ek.torch.optimize``; in ONNX Runtime's CPU provider alone
and with the library ``ek.export_onnxruntime`` writes (every tuned node, and only the
nodes it runs faster than ONNX Runtime in the graph, ``min_speedup=1.0``: no row where
there are none). All with the same threads.

    pip install '.[bench]' torchvision
    python benchmarks/engines.py --budget 10m                    # both networks
    python benchmarks/engines.py --models squeezenet --budget 10m

Prints, per network, the end-to-end median latency of each way of running it (the ways
timed in turns, 15 rounds of batches of at least 50 ms), the tuning time of each evokernel path, and the
largest difference of each output from PyTorch eager's; writes a JSON beside. Both evokernel paths tune into one cache, so
an operator the ONNX and the PyTorch graphs share is tuned once (the second path's
tuning time says so).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from networks import MODELS, export, machine

import evokernel as ek
from evokernel.bench import SideBySide, time_side_by_side

#: Every way of running a network timed in turns; each batch (50 ms at least) after a
#: pause that lets the other libraries' idle workers sleep, and one untimed call.
PROTOCOL = SideBySide(rounds=15, min_time=0.05, settle=0.25)


def torch_paths(name: str, x: np.ndarray, budget: str, threads: int, cache: Path):
    """(a call by path, tuning seconds, outputs) for PyTorch eager, torch.compile and
    ek.torch.optimize."""
    import torch
    import torchvision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, MODELS[name])(weights=None).eval()
    tx = torch.from_numpy(x)
    started = time.monotonic()
    fast = ek.torch.optimize(model, tx, budget=budget, seed=0, threads=threads, cache_dir=cache)
    tuning = {"ek.torch.optimize": time.monotonic() - started}
    compiled = torch.compile(model)
    outputs, calls = {}, {}
    for label, module in (("pytorch eager", model), ("torch.compile", compiled), ("pytorch + evokernel", fast)):
        started = time.monotonic()
        with torch.inference_mode():
            outputs[label] = module(tx).numpy()
        if label == "torch.compile":
            tuning["torch.compile (first call)"] = time.monotonic() - started
        calls[label] = partial(_inference, torch, module, tx)
    return calls, tuning, outputs


def _inference(torch, module, x):
    with torch.inference_mode():
        return module(x)


def onnxruntime_paths(name: str, x: np.ndarray, budget: str, threads: int, cache: Path, work: Path):
    """(a call by path, tuning seconds, outputs) for ORT's CPU provider alone and
    with the evokernel custom-op library."""
    import onnxruntime as ort

    path = export(name, work / f"{name}.onnx")
    started = time.monotonic()
    net = ek.tune_model(path, budget=budget, seed=0, threads=threads, cache_dir=cache)
    tuning = {"ek.tune_model": time.monotonic() - started}
    library, rewritten = ek.export_onnxruntime(net, work / f"ort-{name}")
    ways = [("onnxruntime", path, None), ("onnxruntime + evokernel", rewritten, library)]
    started = time.monotonic()
    try:
        chosen = ek.export_onnxruntime(net, work / f"ort-{name}-chosen", min_speedup=1.0)
        ways.append(("onnxruntime + evokernel, faster nodes", *reversed(chosen)))
        print(chosen[1].with_suffix(".report.txt").read_text())
    except ek.ExportError as error:  # ONNX Runtime runs every node faster in the graph: nothing to export
        print(error)
    tuning["export_onnxruntime(min_speedup=1.0)"] = time.monotonic() - started
    sessions = {}
    for label, model, extra in ways:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        if extra is not None:
            options.register_custom_ops_library(str(extra))
        sessions[label] = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    outputs = {label: s.run(None, {"input": x})[0] for label, s in sessions.items()}
    calls = {label: partial(s.run, None, {"input": x}) for label, s in sessions.items()}
    calls["evokernel (NumPy executor)"] = partial(net, x)
    outputs["evokernel (NumPy executor)"] = net(x)
    print(net.report())
    return calls, tuning, outputs


def bench(name: str, budget: str, threads: int, work: Path) -> dict:
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    calls, tuning, outputs = torch_paths(name, x, budget, threads, cache)
    more = onnxruntime_paths(name, x, budget, threads, cache, work)
    calls.update(more[0]), tuning.update(more[1]), outputs.update(more[2])
    times = {label: t.median for label, t in time_side_by_side(calls, PROTOCOL).items()}
    reference = outputs["pytorch eager"]
    return {"model": name, "budget": budget, "latency_seconds": times, "tuning_seconds": tuning,
            "max_abs_difference_from_eager": {k: float(np.abs(v - reference).max()) for k, v in outputs.items()}}


def table(result: dict) -> str:
    times, eager = result["latency_seconds"], result["latency_seconds"]["pytorch eager"]
    lines = [f"{result['model']} (budget {result['budget']} per evokernel path)",
             f"{'path':<40}{'median ms':>11}{'vs eager':>10}{'max |diff|':>12}"]
    for label, seconds in times.items():
        diff = result["max_abs_difference_from_eager"].get(label, float("nan"))
        lines.append(f"{label:<40}{seconds * 1e3:>11.2f}{eager / seconds:>9.2f}x{diff:>12.2e}")
    lines += [f"tuning: {label} {seconds:.0f} s" for label, seconds in result["tuning_seconds"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--budget", default="10m", help="tuning budget per network")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="evokernel-bench/engines.json")
    parser.add_argument("--work", help="keep the models and the tuning cache here (a second run reuses them)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        results = {name: bench(name, args.budget, args.threads, work / name) for name in args.models}
    results["machine"] = machine(args.threads)
    for name in args.models:
        print(table(results[name]), "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
