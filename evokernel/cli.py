"""The ``evokernel`` command: tune, list, show and export kernels, run benchmarks.

    evokernel demo                                    # tune gemm 512^3 for 20 s
    evokernel tune conv2d n=1 c_in=64 h=56 w=56 c_out=64 k=3 pad=1 --budget 60s --seed 0
    evokernel tune-model resnet18.onnx --budget 20m --input input=1x3x224x224
    evokernel list                                    # what the cache holds
    evokernel show conv2d                             # report, history and schedule of one kernel
    evokernel export c build/ --operator conv2d       # a C library of cached kernels
    evokernel export tengine libevokernel_tengine.so  # a Tengine plugin
    evokernel cache --prune                           # remove what the cache need not keep
    evokernel bench --help                            # the benchmarks

A bad argument prints one line and exits with status 2; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import sys
from pathlib import Path

import numpy as np

from . import operators
from ._format import format_seconds
from .bench import main as bench_main
from .errors import ArgumentError, EvokernelError, ModelError, NotTunedError, OperatorArgumentError
from .evaluators import EVALUATORS, RayEvaluator, reachable
from .export import EXPORTERS
from .models import tune_model
from .search import STRATEGIES
from .store import cached_kernels, prune_cache
from .target import Target
from .tuner import tune

DEMO_BUDGET = "20s"
OPERATORS = tuple(operators.factories())


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One clear line, not a usage block."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- arguments -------------------------------------------------------------------------

def operator_from_args(name: str, assignments: list[str]):
    """An operator from the command line: ``conv2d n=1 c_in=64 ... k=3 pad=1`` (pairs as ``3,3``).

    >>> operator_from_args("matmul", ["m=4", "n=5", "k=6"]).key
    'matmul(m=4,n=5,k=6,dtype=float32)'
    """
    if name not in OPERATORS:
        raise ArgumentError(f"unknown operator {name!r}; try one of: {', '.join(OPERATORS)}")
    kwargs = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ArgumentError(f"operator arguments are key=value, got {item!r}")
        kwargs[key] = _value(value)
    try:
        return getattr(operators, name)(**kwargs)
    except EvokernelError:
        raise
    except TypeError as error:  # an argument the factory does not take
        raise OperatorArgumentError(f"{name}: {error}") from None


def _value(text: str):
    values = [_scalar(part) for part in text.split(",")]
    return tuple(values) if len(values) > 1 else values[0]


def _scalar(text: str):
    lowered = text.strip().lower()
    if lowered in ("true", "false", "none"):
        return {"true": True, "false": False, "none": None}[lowered]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _evaluator(args):
    if args.cluster:
        return RayEvaluator(address=reachable(args.cluster, what="--cluster"))
    return args.evaluator


# -- commands --------------------------------------------------------------------------

def _tune(args, op) -> int:
    kernel = tune(op, target=args.target, budget=args.budget, seed=args.seed, retune=args.retune,
                  evaluator=_evaluator(args), strategy=args.strategy, progress=False if args.quiet else None)
    arrays = op.random_inputs(np.random.default_rng(1))
    rtol, atol = op.tolerance
    ok = np.allclose(kernel(*arrays), op.reference(*arrays), rtol=rtol * 10, atol=atol * 10)
    print(kernel.report())
    print(f"check: {'matches' if ok else 'DIFFERS FROM'} the NumPy reference on fresh inputs")
    if args.plot:
        print(f"plot: {kernel.plot(args.plot)}")
    if not ok:
        raise EvokernelError("the tuned kernel differs from the reference")
    return 0


def cmd_demo(args) -> int:
    args.target, args.seed, args.retune, args.cluster, args.plot = "host", 0, False, None, None
    return _tune(args, operators.matmul(512, 512, 512))


def cmd_tune(args) -> int:
    return _tune(args, operator_from_args(args.operator, args.args))


def cmd_tune_model(args) -> int:
    shapes = dict(_input_shape(text) for text in args.input or [])
    net = tune_model(args.model, target=args.target, budget=args.budget, seed=args.seed, input_shapes=shapes or None,
                     retune=args.retune, evaluator=_evaluator(args), strategy=args.strategy,
                     progress=False if args.quiet else None)
    print(net.report("markdown" if args.markdown else "text"))
    if args.out:
        print(f"saved: {net.save(args.out)} (ek.load_model reads it)")
    return 0


def _input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``"input=1x3x224x224"`` -> ``("input", (1, 3, 224, 224))``."""
    name, _, dims = text.partition("=")
    try:
        return name, tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise ModelError(f"--input takes NAME=DIMS such as input=1x3x224x224, got {text!r}") from None


def cmd_list(args) -> int:
    kernels = cached_kernels(args.operator, args.target)
    if not kernels:
        print("no cached kernels" + (" match" if args.operator or args.target else " yet (evokernel tune ...)"))
        return 0
    host = Target.parse("host").string
    rows = [("id", "operator", "target", "time", "speedup", "tuned")]
    for k in kernels:
        rows.append((k.id, k.operator, "host" if k.target == host else k.target, format_seconds(k.time),
                     f"{k.speedup:.1f}x" if k.speedup else "-",
                     datetime.datetime.fromtimestamp(k.created).strftime("%Y-%m-%d %H:%M")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _chosen(spec: list[str], target: str | None):
    """Cached kernels named on the command line: an id, a name or key, or an
    operator with its arguments."""
    wanted = operator_from_args(spec[0], spec[1:]) if len(spec) > 1 else spec[0]
    kernels = cached_kernels(wanted, target)
    if not kernels:
        raise NotTunedError(f"no cached kernel matches {' '.join(spec)!r} (evokernel list shows what is cached)")
    return kernels


def cmd_show(args) -> int:
    kernels = _chosen(args.kernel, args.target)
    if len(kernels) > 1:
        ids = ", ".join(f"{k.id} ({k.operator})" for k in kernels)
        raise ArgumentError(f"{' '.join(args.kernel)!r} matches {len(kernels)} cached kernels: {ids}; name one by id")
    kernel = kernels[0].load()
    print(kernel.report("markdown" if args.markdown else "text"))
    print("history: " + _improvements(kernel.stats.history))
    if args.plot:
        print(f"plot: {kernel.plot(args.plot)}")
    return 0


def _improvements(history) -> str:
    """Where the best time improved: ``evaluation: time``."""
    steps, best = [], float("inf")
    for i, t in enumerate(history, 1):
        if t < best:
            best = t
            steps.append(f"{i}: {format_seconds(t)}")
    return ", ".join(steps) if steps else "not recorded"


def cmd_export(args) -> int:
    if args.operator:
        kernels = [k for spec in args.operator for k in _chosen(spec, args.target)]
    else:
        kernels = cached_kernels(target=args.target)
    if not kernels:
        raise NotTunedError("the cache holds no kernels to export (evokernel tune ... first)")
    loaded = [k.load() for k in {k.id: k for k in kernels}.values()]
    options = {"name": args.name} if args.format == "c" else {}
    written = EXPORTERS[args.format](loaded, args.path, **options)
    paths = [written] if isinstance(written, Path) else [getattr(written, f.name) for f in dataclasses.fields(written)]
    print(f"exported {len(loaded)} kernels:", *paths, sep="\n  ")
    return 0


def cmd_cache(args) -> int:
    print(prune_cache(dry_run=not args.prune))
    return 0


def cmd_bench(args) -> int:
    return bench_main(args.rest)


# -- the parser --------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    examples = __doc__.split("\n\n")[1]
    parser = _Parser(prog="evokernel", formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Evolve fast Halide kernels for neural-network operators; list, show and export them.",
                     epilog=f"examples:\n{examples}\n\nevokernel COMMAND --help tells more.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (Python logging, INFO)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log what happens (INFO)")
    tuning = argparse.ArgumentParser(add_help=False)
    tuning.add_argument("--evaluator", choices=tuple(EVALUATORS), default="ray",
                        help="how candidates are built and timed (default: ray)")
    tuning.add_argument("--strategy", choices=tuple(STRATEGIES), default="ga",
                        help="how candidates are proposed (default: ga, the genetic algorithm)")
    tuning.add_argument("--quiet", action="store_true", help="no progress bar")
    where = argparse.ArgumentParser(add_help=False)  # what tune and tune-model share beyond that
    where.add_argument("--target", default="host", help="Halide target string (default: host)")
    where.add_argument("--seed", type=int, default=None, help="make the search reproducible")
    where.add_argument("--cluster", metavar="ADDRESS", help="tune on the Ray cluster at ADDRESS (host:port)")
    where.add_argument("--retune", action="store_true", help="search again even if it was tuned here before")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", parents=[common, tuning], help="tune gemm 512^3 for a short while on this machine")
    demo.add_argument("--budget", default=DEMO_BUDGET,
                      help=f"time ('60s', '2m') or evaluations (default {DEMO_BUDGET})")
    demo.set_defaults(run=cmd_demo)

    tune = sub.add_parser("tune", parents=[common, tuning, where], help="tune one operator",
                          description="Tune one operator, e.g. evokernel tune conv2d n=1 c_in=64 h=56 w=56 "
                                      "c_out=64 k=3 pad=1 --budget 60s")
    tune.add_argument("operator", help=", ".join(OPERATORS))
    tune.add_argument("args", nargs="*", metavar="KEY=VALUE", help="operator arguments (pairs as 3,3)")
    tune.add_argument("--budget", default="60s", help="time ('60s', '2m') or evaluations ('100')")
    tune.add_argument("--plot", metavar="PATH", help="also draw the search to PATH (needs matplotlib)")
    tune.set_defaults(run=cmd_tune)

    net = sub.add_parser("tune-model", parents=[common, tuning, where], help="tune every operator of an ONNX network",
                         description="Tune every operator of an ONNX network under one budget, e.g. "
                                     "evokernel tune-model resnet18.onnx --budget 20m --input input=1x3x224x224")
    net.add_argument("model", help="path to an .onnx file")
    net.add_argument("--input", action="append", metavar="NAME=DIMS",
                     help="the shape of an input with dynamic dimensions, e.g. input=1x3x224x224 (repeatable)")
    net.add_argument("--budget", default="10m", help="time ('10m', '1h') or evaluations for the whole network")
    net.add_argument("--markdown", action="store_true", help="the report as markdown")
    net.add_argument("--out", metavar="PATH", help="save the tuned network to PATH (ek.load_model reads it)")
    net.set_defaults(run=cmd_tune_model)

    lst = sub.add_parser("list", parents=[common], help="list the cached kernels")
    lst.add_argument("operator", nargs="?", help="only this operator (name, key or id)")
    lst.add_argument("--target", help="only this target")
    lst.set_defaults(run=cmd_list)

    show = sub.add_parser("show", parents=[common], help="report, history and schedule of a cached kernel")
    show.add_argument("kernel", nargs="+", metavar="KERNEL",
                      help="an id from 'evokernel list', an operator name or key, or an operator and its KEY=VALUEs")
    show.add_argument("--target", help="the kernel's target, when several match")
    show.add_argument("--markdown", action="store_true", help="the report as markdown")
    show.add_argument("--plot", metavar="PATH", help="draw the search to PATH (needs matplotlib)")
    show.set_defaults(run=cmd_show)

    export = sub.add_parser("export", parents=[common], help="export cached kernels as a C library or Tengine plugin")
    export.add_argument("format", choices=tuple(EXPORTERS))
    export.add_argument("path", help="c: a directory; tengine: the plugin's .so path; onnxruntime: a tuned "
                        "model only (ek.export_onnxruntime in Python)")
    export.add_argument("--operator", action="append", nargs="+", metavar="KERNEL",
                        help="export this kernel: an id, an operator name or key, or an operator and its "
                             "KEY=VALUEs (repeatable; default: every cached kernel)")
    export.add_argument("--target", help="only kernels of this target")
    export.add_argument("--name", default="evokernel", help="c: the library's name (default: evokernel)")
    export.set_defaults(run=cmd_export)

    cache = sub.add_parser("cache", parents=[common], help="what the cache holds and may lose; --prune removes it",
                           description="Report what the cache need not keep (the scratch of killed runs, files "
                                       "of interrupted writes, damaged files set aside, unreadable entries, "
                                       "runtimes of other Halide versions); --prune removes it. Winners, records "
                                       "and the signing key are kept.")
    cache.add_argument("--prune", action="store_true", help="remove it, and report the space reclaimed")
    cache.set_defaults(run=cmd_cache)

    bench = sub.add_parser("bench", add_help=False, help="run the benchmarks (evokernel bench --help)")
    bench.set_defaults(run=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    >>> main(["tune", "matmul", "m=0", "n=4", "k=4"])
    2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    debug = args.debug or "--debug" in argv
    if args.verbose:
        log = logging.getLogger("evokernel")
        log.setLevel(logging.INFO)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("evokernel: %(message)s"))
        log.addHandler(handler)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("evokernel: interrupted", file=sys.stderr)
        return 130
    except (EvokernelError, ValueError, TypeError, LookupError, OSError, ImportError) as error:
        if debug:
            raise
        print(f"evokernel: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug: still one line unless --debug
        if debug:
            raise
        print(f"evokernel: internal error: {type(error).__name__}: {error} (--debug shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
