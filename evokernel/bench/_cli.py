"""``evokernel bench`` / ``python -m evokernel.bench``: run the suite, write the results."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

from ..errors import EvokernelError
from ._report import markdown, write
from ._roofline import measure
from ._run import PEERS, STRATEGIES, Config, run
from ._suite import SUITES, select

#: Where results go without ``--out``: relative, so in the directory the command runs in.
DEFAULT_OUT = "evokernel-bench"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark suite; returns the exit status (2 for bad arguments)."""
    parser = argparse.ArgumentParser(
        prog="evokernel bench",
        description="Time evokernel beside Halide's autoschedulers, NumPy and PyTorch on a suite of operators.")
    parser.add_argument("--budget", default="3m", help="tuning budget per operator and search strategy "
                                                       "(a duration such as 3m, or evaluations: 50); default 3m")
    parser.add_argument("--suite", choices=list(SUITES), default="default",
                        help="default: standard NN operators (gemm, fc, conv2d, depthwise, max pool, ReLU, "
                             "softmax) at common sizes, each with its goals, used without --suite; shapes: other "
                             "sizes of them, with the same goals; classes: matrix-vector, small-batch fc, a tiny "
                             "gemm, a 1x1 conv, global average and padded max pooling")
    parser.add_argument("--only", help="comma-separated operators of the suite: "
                        + "; ".join(f"{name}: {','.join(c.name for c in cases)}" for name, cases in SUITES.items()))
    parser.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                        help=f"results directory for bench.json, bench.md and the plots; created if missing "
                             f"(default: ./{DEFAULT_OUT} in the current directory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search", choices=list(STRATEGIES), default="ga",
                        help="ga, random, or both (same budget each; reports the search curves)")
    parser.add_argument("--peers", default="", metavar="NAMES",
                        help=f"other tuners given the same budget, comma-separated: {', '.join(PEERS)} (TVM's "
                             "MetaSchedule, evolutionary search with its XGBoost cost model; needs the tvm extra)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    parser.add_argument("--evaluator", default="ray", choices=["ray", "local", "inline"])
    parser.add_argument("--roofline", action="store_true",
                        help="only measure and print this machine's roofline (peak FMA throughput, read bandwidth "
                             "per memory level), which every bench run measures and reports beside its times")
    args = parser.parse_args(argv)
    if args.roofline:
        return _print_roofline()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        config = Config(budget=args.budget, seed=args.seed, search=args.search, evaluator=args.evaluator,
                        peers=tuple(name for name in args.peers.split(",") if name))
        if args.no_torch:
            config = replace(config, baselines={k: v for k, v in config.baselines.items() if k != "torch"})
        results = run(select(args.only, SUITES[args.suite]), config, on_case=lambda partial: write(partial, args.out))
    except EvokernelError as error:
        print(f"evokernel bench: error: {error}", file=sys.stderr)
        return 2
    paths = write(results, args.out)
    print(markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _print_roofline() -> int:
    try:
        roofline = measure()
    except EvokernelError as error:
        print(f"evokernel bench: error: {error}", file=sys.stderr)
        return 2
    print(roofline)
    print(f"measured in {roofline.seconds:.1f} s; cache capacities ({roofline.cache_source}): "
          + ", ".join(f"{level} {nbytes / 2**20:g} MiB" for level, nbytes in roofline.capacity_bytes.items()))
    return 0
