"""The benchmark suites: ``default``, standard NN operators at common sizes with
the goals evokernel should meet on each; ``shapes``, other sizes of them; and
``classes``, the kinds of operator where libraries stay far from the roofline."""

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
    Its goals: evokernel within ``library_slack`` times the faster
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


#: The default suite: gemm, fully connected, conv2d (plain and fused with bias and
#: ReLU), depthwise conv, max pool, ReLU and softmax at common network sizes.
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


#: Other sizes, with the same goals as their kind above: odd, prime and tiny
#: products, a batch, a stride, 1x1 and 7x7 kernels, odd pools and rows. Searching
#: well on the default suite's shapes alone would not be enough.
SHAPES: tuple[Case, ...] = (
    Case("gemm-odd", lambda: operators.matmul(127, 255, 63), title="gemm 127×255×63", library_slack=1.15),
    Case("gemm-prime", lambda: operators.matmul(97, 101, 103), title="gemm 97×101×103", library_slack=1.15),
    Case("gemm-tiny", lambda: operators.matmul(8, 8, 8), title="gemm 8³", library_slack=1.15),
    Case("conv2d-batch", lambda: operators.conv2d(4, 32, 28, 28, 64, 3, pad=1), title="conv2d 4×32×28×28→64 3×3",
         library_slack=1.15),
    Case("conv2d-stride", lambda: operators.conv2d(1, 64, 56, 56, 128, 3, stride=2, pad=1),
         title="conv2d 1×64×56×56→128 3×3/2", library_slack=1.15),
    Case("conv2d-1x1", lambda: operators.conv2d(1, 256, 14, 14, 256, 1), title="conv2d 1×256×14×14→256 1×1",
         library_slack=1.15),
    Case("conv2d-7x7", lambda: operators.conv2d(1, 3, 224, 224, 64, 7, stride=2, pad=3, bias=True, activation="relu"),
         title="conv2d+bias+ReLU 1×3×224×224→64 7×7/2", library_slack=1.15),
    Case("depthwise-odd", lambda: operators.depthwise_conv2d(1, 96, 57, 57, 3, stride=2, pad=1), "bytes",
         "depthwise 3×3/2 1×96×57×57", beat_torch=True),
    Case("maxpool-3x3", lambda: operators.max_pool2d(1, 64, 113, 113, 3, stride=2), "bytes",
         "max pool 3×3/2 1×64×113×113", beat_torch=True),
    Case("relu-odd", lambda: operators.relu((3, 17, 31, 29)), "bytes", "ReLU 3×17×31×29", beat_torch=True),
    Case("softmax-odd", lambda: operators.softmax((13, 1001)), "bytes", "softmax 13×1001", beat_torch=True),
)

#: The classes where nobody is near the machine's limit out of the box: a
#: matrix-vector product (memory bound), a small-batch fully connected layer (compute
#: bound, yet ~a quarter of peak for BLAS), a gemm of a few dozen per side, a 1x1
#: convolution with few output channels (SqueezeNet's squeeze), global average
#: pooling and a padded 3x3/2 max pool.
CLASSES: tuple[Case, ...] = (
    Case("matvec", lambda: operators.fc(1, 4096, 2048), "bytes", "fc 1×4096→2048", library_slack=1.0),
    Case("fc-batch", lambda: operators.fc(16, 2048, 2048), title="fc 16×2048→2048", library_slack=1.0),
    Case("gemm-small", lambda: operators.matmul(32, 32, 32), title="gemm 32³", library_slack=1.0),
    Case("pointwise", lambda: operators.conv1x1(1, 64, 16, 55 * 55, bias=True, activation="relu"),
         title="1×1 conv+bias+ReLU 1×64×55×55→16", library_slack=1.0),
    Case("global-avgpool", lambda: operators.avg_pool2d(1, 512, 7, 7, 7), "bytes", "global average pool 1×512×7×7",
         beat_torch=True),
    Case("maxpool-pad", lambda: operators.max_pool2d(1, 64, 112, 112, 3, stride=2, pad=1), "bytes",
         "max pool 3×3/2 pad 1 1×64×112×112", beat_torch=True),
)

SUITES = {"default": SUITE, "shapes": SHAPES, "classes": CLASSES}


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
