"""The benchmark suite: the operators of issue #6, each with the rate that suits it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from .. import operators
from ..errors import EvokernelError
from ..operators import Operator


@dataclass(frozen=True)
class Case:
    """One benchmarked operator: a short ``name`` for ``--only``, a factory (so the
    suite costs nothing until run), and ``metric``: ``"flops"`` for compute-bound
    operators (reported in GFLOP/s), ``"bytes"`` for memory-bound ones (GB/s).
    The issue's targets: evokernel within ``library_slack`` times the faster
    library's time, faster than PyTorch (``beat_torch``), and the GA
    ``search_gain`` times faster than random search."""

    name: str
    make: Callable[[], Operator]
    metric: str = "flops"
    title: str = ""
    library_slack: float | None = None
    search_gain: float | None = None
    beat_torch: bool = False

    @property
    def operator(self) -> Operator:
        return self.make()


SUITE: tuple[Case, ...] = (
    Case("gemm-512", lambda: operators.matmul(512, 512, 512), title="gemm 512³", library_slack=1.15),
    Case("gemm-1024", lambda: operators.matmul(1024, 1024, 1024), title="gemm 1024³", library_slack=1.15,
         search_gain=1.3),
    Case("fc", lambda: operators.fc(1, 2048, 1000), "bytes", "fc 1×2048→1000"),
    Case("conv2d", lambda: operators.conv2d(1, 64, 56, 56, 64, 3, pad=1), title="conv2d 1×64×56×56→64 3×3",
         library_slack=1.15, search_gain=1.3),
    Case("conv2d-bias-relu", lambda: operators.conv2d(1, 64, 56, 56, 64, 3, pad=1, bias=True, activation="relu"),
         title="conv2d+bias+ReLU", library_slack=1.15),
    Case("depthwise", lambda: operators.depthwise_conv2d(1, 128, 56, 56, 3, pad=1), "bytes",
         "depthwise 3×3 1×128×56×56", beat_torch=True),
    Case("maxpool", lambda: operators.max_pool2d(1, 64, 112, 112, 2, stride=2), "bytes",
         "max pool 2×2/2 1×64×112×112", beat_torch=True),
    Case("relu", lambda: operators.relu((1, 64, 112, 112)), "bytes", "ReLU 1×64×112×112", beat_torch=True),
    Case("softmax", lambda: operators.softmax((1024, 1000)), "bytes", "softmax 1024×1000", beat_torch=True),
)


def select(only: "str | Iterable[str] | None", suite: Iterable[Case] = SUITE) -> list[Case]:
    """The cases named in ``only`` (comma-separated text or names), in suite order;
    all of them for ``None``.

    >>> [c.name for c in select("relu,gemm-512")]
    ['gemm-512', 'relu']
    """
    suite = list(suite)
    if only is None:
        return suite
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    known = {c.name for c in suite}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise EvokernelError(f"unknown benchmark operator(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose from: {', '.join(c.name for c in suite)}")
    return [c for c in suite if c.name in names]
