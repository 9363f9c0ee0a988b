"""The ``evokernel`` command: ``demo`` (a short real tuning run) and ``tune``.

    evokernel demo
    evokernel tune matmul m=512 n=512 k=512 --budget 60s --seed 0
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import operators
from .errors import EvokernelError

DEMO_BUDGET = "20s"


def _operator(name: str, assignments: list[str]):
    factory = getattr(operators, name, None)
    if name.startswith("_") or not callable(factory) or name in {"custom", "constrain", "input_param"}:
        raise EvokernelError(f"unknown operator {name!r}; try one of: matmul, fc, conv2d, depthwise_conv2d, "
                             "max_pool2d, avg_pool2d, relu, relu6, add, softmax")
    kwargs = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise EvokernelError(f"operator arguments are key=value, got {item!r}")
        kwargs[key] = _value(value)
    try:
        return factory(**kwargs)
    except TypeError as error:
        raise EvokernelError(f"{name}: {error}") from None


def _value(text: str):
    parts = text.split(",")
    values = [int(p) if p.lstrip("-").isdigit() else p for p in parts]
    return tuple(values) if len(values) > 1 else values[0]


def _tune(op, target: str, budget: str, seed: int | None) -> None:
    from .tuner import tune

    kernel = tune(op, target=target, budget=budget, seed=seed)
    arrays = op.random_inputs(np.random.default_rng(1))
    rtol, atol = op.tolerance
    ok = np.allclose(kernel(*arrays), op.reference(*arrays), rtol=rtol * 10, atol=atol * 10)
    print(kernel.report())
    print(f"check      {'matches' if ok else 'DIFFERS FROM'} the NumPy reference on fresh inputs")
    print("\nschedule:\n" + kernel.schedule)
    if not ok:
        raise EvokernelError("the tuned kernel differs from the reference")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evokernel", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="tune gemm 512^3 for a short while on this machine")
    demo.add_argument("--budget", default=DEMO_BUDGET)
    t = sub.add_parser("tune", help="tune one operator: evokernel tune conv2d n=1 c_in=64 h=56 w=56 c_out=64 k=3 pad=1")
    t.add_argument("operator")
    t.add_argument("args", nargs="*", help="operator arguments as key=value (pairs as 3,3)")
    t.add_argument("--target", default="host")
    t.add_argument("--budget", default="60s")
    t.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            _tune(operators.matmul(512, 512, 512), "host", args.budget, 0)
        else:
            _tune(_operator(args.operator, args.args), args.target, args.budget, args.seed)
    except (EvokernelError, ValueError, TypeError) as error:
        if args.debug:
            raise
        print(f"evokernel: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
