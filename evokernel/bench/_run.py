"""Run the suite: compile, tune, check and time every method side by side.

For each operator, in this process: the unscheduled pipeline and each Halide
autoscheduler are compiled in a child process (``_autoschedule``), evokernel tunes
it (the GA, random search, or both, with the same budget), the library baselines
bind to the same inputs; every method's output is checked against
``op.reference`` before it is timed (Halide-compiled ones first in a killable
worker process), and the methods that pass are timed together (``evokernel._timing``).
Halide-compiled methods, evokernel's included, are linked against one Halide
runtime and called the same way, with the same thread count.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import EvokernelError
from ..codegen import cache_dir as resolve_cache_dir
from ..codegen import default_threads
from ..evaluators import check, shutdown_local_ray
from ..operators import Operator
from ..search import Budget
from ..target import Target
from ..tuner import tune
from ._autoschedule import AUTOSCHEDULERS, compile_isolated
from . import _metaschedule
from ._baselines import numpy_baseline, torch_baseline
from ._halide import HalideMethods
from ._roofline import Roofline, bound, cpuinfo, measure
from ._suite import Case
from .._timing import SideBySide, Timing, time_side_by_side

log = logging.getLogger("evokernel.bench")

STRATEGIES = {"ga": ("ga",), "random": ("random",), "both": ("ga", "random")}
#: The table's method for each search strategy; ``evokernel`` (the GA) is what ratios are relative to.
EVOKERNEL = {"ga": "evokernel", "random": "evokernel-random"}
#: Other tuners that search with the same budget, each in a child process: name ->
#: a module with ``available()``, ``tune(op, budget, threads, work_dir, seed)`` and
#: ``baseline(library, op, inputs, threads)``.
PEERS = {"metaschedule": _metaschedule}
Baseline = Callable[[Operator, Sequence[np.ndarray], int], "Callable[[], object] | None"]


@dataclass(frozen=True)
class Config:
    """How to run the suite. ``budget`` is per operator and per search strategy;
    ``autoscheduler_params`` adds parameters per autoscheduler (``parallelism`` is
    always the thread count); ``peers`` are other tuners given the same budget
    (``"metaschedule"``: TVM's, from the ``tvm`` extra); ``baselines`` maps a method name to a factory
    ``(op, inputs, threads) -> call | None``; a Halide-compiled kernel's check call,
    in a killable worker, may take ``call_timeout`` seconds (an unscheduled softmax
    takes many minutes: it is reported as ``failed: run_timeout``); evokernel's
    kernel is also timed on ``placements`` other copies of its arrays (each at its
    own offset from a page boundary), for the spread of its time over placements."""

    budget: "str | int" = "3m"
    seed: int = 0
    search: str = "ga"
    evaluator: str = "ray"
    target: str = "host"
    threads: int | None = None
    autoschedulers: tuple[str, ...] = AUTOSCHEDULERS
    autoscheduler_params: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    autoschedule_timeout: float = 900.0
    peers: tuple[str, ...] = ()
    baselines: Mapping[str, Baseline] = field(
        default_factory=lambda: {"numpy": numpy_baseline, "torch": torch_baseline})
    protocol: SideBySide = field(default_factory=SideBySide)
    call_timeout: float = 120.0
    placements: int = 5
    cache_dir: "str | Path | None" = None

    def __post_init__(self) -> None:
        if self.search not in STRATEGIES:
            raise EvokernelError(f"unknown search {self.search!r}; use one of: {', '.join(STRATEGIES)}")
        Budget.parse(self.budget)
        Target.parse(self.target)
        unknown = [name for name in self.autoschedulers if name not in AUTOSCHEDULERS]
        if unknown:
            raise EvokernelError(f"unknown autoscheduler(s) {', '.join(unknown)}; Halide ships: "
                                 f"{', '.join(AUTOSCHEDULERS)}")
        unknown = [name for name in self.peers if name not in PEERS]
        if unknown:
            raise EvokernelError(f"unknown peer(s) {', '.join(unknown)}; choose from: {', '.join(PEERS)}")
        missing = [name for name in self.peers if not PEERS[name].available()]
        if missing:
            raise EvokernelError(f"the {', '.join(missing)} peer needs TVM: pip install 'evokernel[tvm]'")


def run(cases: Sequence[Case], config: Config = Config(),
        on_case: Callable[[dict], None] | None = None) -> dict:
    """Benchmark ``cases``; returns the JSON-ready results (see ``_report``), and
    hands the results so far to ``on_case`` after each operator. Tuning runs in a
    fresh cache directory unless ``config.cache_dir`` names one, so every run tunes
    afresh with exactly its budget and leaves the user's cache alone."""
    threads = config.threads or default_threads()
    target = Target.parse(config.target)
    roofline = measure(threads)  # before any tuning starts processes that would share the cores
    header = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(threads, roofline),
              "config": {"budget": str(config.budget), "seed": config.seed, "search": config.search,
                         "evaluator": config.evaluator, "target": target.string,
                         "protocol": dataclasses.asdict(config.protocol)}}
    with tempfile.TemporaryDirectory(prefix="evokernel-bench-") as tmp:
        cache = resolve_cache_dir(config.cache_dir or tmp)
        results = {**header, "operators": []}
        for case in cases:
            results["operators"].append(_bench_case(case, config, target, threads, cache, roofline))
            if on_case is not None:
                on_case(results)
        return results


def machine(threads: int, roofline: Roofline | None = None) -> dict:
    """What the numbers were measured on (and, given it, the machine's roofline)."""
    from importlib import metadata

    info = cpuinfo()
    versions = {}
    for package in ("halide", "numpy", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    described = {"cpu": info.get("model name") or platform.processor() or platform.machine(),
                 "cores": os.cpu_count(), "threads": threads, "python": platform.python_version(), **versions}
    if roofline is not None:
        described.update(microarchitecture=roofline.microarchitecture, roofline=roofline.to_dict())
    return described


def _bench_case(case: Case, config: Config, target: Target, threads: int, cache: Path, roofline: Roofline) -> dict:
    op = case.operator
    log.info("%s: %s", case.name, op.key)
    inputs = op.random_inputs(np.random.default_rng(config.seed))
    reference = np.asarray(op.reference(*inputs), op.dtype)
    halide = HalideMethods(op, target, threads, cache, inputs, reference, config.call_timeout,
                           config.protocol.max_seconds)
    methods: dict[str, dict] = {}
    calls: dict[str, Callable[[], object]] = {}
    try:
        _autoscheduled(case.name, op, config, target, threads, halide, methods, calls)
        search = _tuned(case.name, op, config, target, threads, cache, halide, methods, calls)
    finally:
        halide.close()
    shutdown_local_ray()  # its idle processes would share the cores with the kernels being timed
    _peers(case.name, op, config, inputs, threads, cache, methods, calls, search)
    _libraries(op, config, inputs, threads, methods, calls)
    once = _check_all(case.name, op, reference, methods, calls, config.protocol.max_seconds)
    timings = {**time_side_by_side(calls, config.protocol), **once, **halide.once}
    for name, timing in timings.items():
        methods[name].update(median_ms=timing.median * 1e3, spread=timing.spread, calls=timing.calls,
                             gflops=op.flops / timing.median / 1e9, gbps=op.bytes_moved / timing.median / 1e9)
    if EVOKERNEL["ga"] in calls and config.placements > 1:
        methods[EVOKERNEL["ga"]].update(_placement_spread(halide, EVOKERNEL["ga"], config))
    _ratios(methods)
    return {"name": case.name, "title": case.title or case.name, "key": op.key, "metric": case.metric,
            "flops": int(op.flops), "bytes": int(op.bytes_moved), "roofline": _roofline(op, roofline, methods),
            "methods": methods, "search": search,
            "targets": targets(case, methods, config.autoschedulers, search.get("ga"), Budget.parse(config.budget))}


def _autoscheduled(label: str, op: Operator, config: Config, target: Target, threads: int, halide: HalideMethods,
                   methods: dict, calls: dict) -> None:
    """The unscheduled pipeline and each autoscheduler's, compiled in child processes."""
    for name in ("unscheduled", *config.autoschedulers):
        compiled = compile_isolated(op, None if name == "unscheduled" else name, target.string,
                                    threads, config.autoscheduler_params.get(name), config.autoschedule_timeout)
        methods[name] = {"kind": "halide", "compile_seconds": compiled.seconds, "schedule": compiled.schedule}
        log.info("%s: %s compiled in %.1f s", label, name, compiled.seconds)
        if compiled.ok:
            halide.add(name, compiled.object_bytes, methods[name], calls)
        else:
            methods[name].update(status="failed", error=compiled.error)
            log.warning("%s: %s failed: %s", label, name, compiled.error)


def _tuned(label: str, op: Operator, config: Config, target: Target, threads: int, cache: Path,
           halide: HalideMethods, methods: dict, calls: dict) -> dict:
    """evokernel's kernels, one per search strategy; returns their search curves."""
    search = {}
    for strategy in STRATEGIES[config.search]:
        name = EVOKERNEL[strategy]
        methods[name] = {"kind": "evokernel", "budget": str(config.budget)}
        try:
            kernel = _tune(op, config, strategy, target, threads, cache)
        except EvokernelError as error:
            methods[name].update(status="failed", error=str(error))
            log.warning("%s: %s failed: %s", label, name, str(error).splitlines()[0])
            continue
        methods[name]["schedule"] = kernel.schedule
        halide.add(name, kernel.object_bytes, methods[name], calls)
        if name in calls:  # the same kernel through its public call, as a user calls it
            methods[f"{name}-call"] = {"kind": "evokernel", "budget": str(config.budget)}
            calls[f"{name}-call"] = _public_call(kernel, halide.inputs)
        search[strategy] = _curve(kernel.stats)
    return search


def _peers(label: str, op: Operator, config: Config, inputs: list, threads: int, cache: Path, methods: dict,
           calls: dict, search: dict) -> None:
    """Other tuners, each with the same budget as evokernel's search; their search
    curves go beside evokernel's."""
    for name in config.peers:
        peer = PEERS[name]
        tuned = peer.tune(op, config.budget, threads, cache / f"{name}-{op.key}", config.seed)
        methods[name] = {"kind": "peer", "budget": str(config.budget), "trials": tuned.trials,
                         "tuning_seconds": tuned.seconds}
        if tuned.library is None:
            methods[name].update(status="failed", error=tuned.error)
            log.warning("%s: %s failed: %s", label, name, tuned.error)
            continue
        log.info("%s: %s measured %d candidates in %.0f s", label, name, tuned.trials, tuned.seconds)
        calls[name] = peer.baseline(tuned.library, op, inputs, threads)
        search[name] = {"best_ms": tuned.curve[-1][2] * 1e3 if tuned.curve else None, "evaluations": tuned.trials,
                        "history_ms": [best * 1e3 for _, _, best in tuned.curve],
                        "history_seconds": [at for at, _, _ in tuned.curve],
                        "history_evaluations": [trials for _, trials, _ in tuned.curve]}


def _public_call(kernel, inputs: list) -> Callable[[], np.ndarray]:
    out = np.full(kernel.signature.output.shape, np.nan, kernel.signature.output.dtype)
    return lambda: kernel(*inputs, out=out)


def _placement_spread(halide: HalideMethods, name: str, config: Config) -> dict:
    """Method ``name`` timed side by side on ``config.placements`` copies of its
    arrays, each starting at its own random offset from a page boundary: the median
    per placement, and their spread (slowest over fastest, minus 1)."""
    calls = {f"placement {i}": halide.bind(name, arrays)
             for i, (arrays,) in enumerate(halide.task.placed(config.placements, config.seed))}
    medians = [t.median * 1e3 for t in time_side_by_side(calls, config.protocol).values()]
    return {"placement_ms": medians, "placement_spread": max(medians) / min(medians) - 1}


def _libraries(op: Operator, config: Config, inputs: list, threads: int, methods: dict, calls: dict) -> None:
    """The library baselines, bound to the inputs (``skipped`` where one has no equivalent)."""
    for name, factory in config.baselines.items():
        methods[name] = {"kind": "library"}
        try:
            call = factory(op, inputs, threads)
        except Exception as error:  # a baseline that cannot even be set up is reported, never fatal
            methods[name].update(status="failed", error=f"{type(error).__name__}: {error}")
            continue
        if call is None:
            methods[name].update(status="skipped", error="not available for this operator")
        else:
            calls[name] = call


def _check_all(label: str, op: Operator, reference: np.ndarray, methods: dict, calls: dict,
               max_seconds: float) -> dict[str, Timing]:
    """Check every method once against the reference and drop from ``calls`` those
    that fail, and those whose check call alone took over ``max_seconds``: that one
    call is their time (returned), as a pathological kernel may take minutes a call."""
    rtol, atol = op.tolerance
    once = {}
    for name in list(calls):
        methods[name].update(_checked(calls[name], reference, rtol, atol))
        if methods[name]["status"] != "ok":
            del calls[name]
            log.warning("%s: %s %s: %s", label, name, methods[name]["status"], methods[name]["error"])
        elif methods[name]["check_seconds"] > max_seconds:
            del calls[name]
            once[name] = Timing(methods[name]["check_seconds"], 0.0, 1)
    return once


#: The GA should reach ``EARLY_SHARE`` of its final speed within ``EARLY_PART`` of its budget.
EARLY_SHARE, EARLY_PART = 0.9, 1 / 3


def targets(case: Case, methods: dict[str, dict], autoschedulers: Sequence[str], curve: dict | None = None,
            budget: Budget | None = None) -> list[dict]:
    """The suite's goals for this operator, from the side-by-side ratios: evokernel
    at least as fast as the best autoscheduler; within ``library_slack`` of the
    faster library; faster than PyTorch (``beat_torch``); the GA's kernel
    ``search_gain`` times faster than random search's; and, given the GA's search
    ``curve`` and ``budget``, ``EARLY_SHARE`` of its final speed within ``EARLY_PART``
    of the budget. Methods that failed are left out, and so is a goal none of whose
    methods ran."""
    def best_ratio(names):
        ratios = [methods[n]["ratio_to_evokernel"] for n in names if "ratio_to_evokernel" in methods.get(n, {})]
        return min(ratios, default=None)

    goals = [("as fast as the best autoscheduler", best_ratio(autoschedulers), 1.0)]
    if case.library_slack:
        goals.append((f"within {case.library_slack:g}x of the faster library",
                      best_ratio(["numpy", "torch"]), 1 / case.library_slack))
    if case.beat_torch:
        goals.append(("faster than PyTorch", best_ratio(["torch"]), 1.0))
    if case.search_gain:
        goals.append((f"GA {case.search_gain:g}x faster than random search", best_ratio([EVOKERNEL["random"]]),
                      case.search_gain))
    if curve is not None and budget is not None:
        goals.append((f"GA at {EARLY_SHARE:.0%} of its final speed within the first third of its budget",
                      early_share(curve, budget), EARLY_SHARE))
    return [{"goal": goal, "ratio": ratio, "needed": needed, "met": ratio >= needed}
            for goal, ratio, needed in goals if ratio is not None]


def early_share(curve: dict, budget: Budget) -> float:
    """The share of its final speed a search had reached within ``EARLY_PART`` of
    ``budget`` (of its seconds, else of its evaluations), from its ``_curve``.

    >>> curve = {"history_ms": [None, 4.0, 2.0, 1.0], "history_seconds": [1, 2, 3, 9]}
    >>> early_share(curve, Budget(seconds=9)), early_share(curve, Budget(evaluations=8))
    (0.5, 0.25)
    """
    best = curve["history_ms"]
    if budget.seconds is not None and curve.get("history_seconds"):
        marks, limit = curve["history_seconds"], budget.seconds * EARLY_PART
    else:
        marks, limit = range(1, len(best) + 1), (budget.evaluations or len(best)) * EARLY_PART
    early = [b for b, mark in zip(best, marks) if mark <= limit and b is not None]
    final = next((b for b in reversed(best) if b is not None), None)
    return final / early[-1] if early and final else 0.0


def _tune(op: Operator, config: Config, strategy: str, target: Target, threads: int, cache: Path):
    return tune(op, target, budget=config.budget, seed=config.seed, retune=True, evaluator=config.evaluator,
                strategy=strategy, threads=threads, cache_dir=cache)


def _checked(call: Callable[[], object], reference: np.ndarray, rtol: float, atol: float) -> dict:
    """Run ``call`` once (also the first warm-up; timed) and compare with the reference."""
    start = time.perf_counter()
    try:
        output = np.asarray(call())
        seconds = time.perf_counter() - start
    except Exception as error:  # a baseline or kernel that raises is reported, never fatal
        return {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    if output.shape != reference.shape:
        return {"status": "wrong", "error": f"output shape {output.shape}, expected {reference.shape}"}
    good, max_error = check(output, reference, rtol, atol)
    if not good:
        return {"status": "wrong", "max_error": _finite(max_error),
                "error": f"max abs error {max_error:.3g} exceeds tolerance"}
    return {"status": "ok", "max_error": max_error, "check_seconds": seconds}


def _ratios(methods: dict[str, dict]) -> None:
    """Each timed method's median over evokernel's (the GA's, else random search's):
    above 1, evokernel is faster."""
    base = next((methods[n]["median_ms"] for n in EVOKERNEL.values() if "median_ms" in methods.get(n, {})), None)
    for entry in methods.values():
        if base and "median_ms" in entry:
            entry["ratio_to_evokernel"] = entry["median_ms"] / base


def _roofline(op: Operator, roofline: Roofline, methods: dict[str, dict]) -> dict:
    """The operator's roofline time, and each timed method's fraction of it (the
    roofline time over its own: 1 is as fast as this machine allows); for the row,
    evokernel's fraction (the GA's, else random search's) and the best other method's."""
    seconds, kind, level = bound(op, roofline)
    for entry in methods.values():
        if entry.get("median_ms"):
            entry["roofline_fraction"] = seconds / (entry["median_ms"] / 1e3)
    ours = next((methods[n]["roofline_fraction"] for n in EVOKERNEL.values()
                 if "roofline_fraction" in methods.get(n, {})), None)
    peers = {n: m["roofline_fraction"] for n, m in methods.items()
             if m.get("kind") != "evokernel" and "roofline_fraction" in m}
    peer = max(peers, key=peers.get, default=None)
    return {"seconds": seconds, "bound": kind, "level": level, "evokernel": ours, "best_peer": peer,
            "best_peer_fraction": peers.get(peer)}


def _curve(stats) -> dict:
    """The search's best time after each evaluation (and at which wall second)."""
    return {"best_ms": stats.time * 1e3, "evaluations": len(stats.history), "elapsed_s": stats.elapsed,
            "history_ms": [_finite(t * 1e3) for t in stats.history],
            "history_seconds": list(getattr(stats, "history_seconds", ())) or None}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
