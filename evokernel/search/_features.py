"""Features of a candidate for the cost model: numbers read off its decoded plan
(the directives Halide will receive and the loop nest they make) and off its
operator (shapes, FLOPs, bytes).

A genome alone means little: ``tiles=((64, 8),)`` is a register tile on one
shape and no split at all on another. The plan (``genome.plan``) is where genes
acquire meaning, so the features come from it: per stage its location and
compute-at depth, how often it is recomputed, the extents of its innermost tiles
and their footprint in bytes, vector lanes, the parallel loop's extent and task
count, the product of unrolled extents, the loop order, the reduction's splits
and whether an optional (packed) stage is materialised.

Stages fill fixed slots counted from the output backwards (output, its producer,
...), so operators of one family, whose pipelines share their shape, line up.

>>> import evokernel as ek
>>> from evokernel.genome import ScheduleSpace, templates
>>> op = ek.operators.matmul(64, 32, 128)
>>> space = ScheduleSpace.of(op, ek.Target.parse("host"), threads=2)
>>> row = features(op, space, templates(space)[0])
>>> len(row) == len(FEATURE_NAMES)
True
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..genome import INLINE, ROOT, Genome, ScheduleSpace, StageSpace, plan
from ..genome._loops import Definition, StagePlan, base_name
from ..operators import Operator, from_dict

#: Stages described one by one, counted from the output backwards; the rest are summed.
SLOTS = 4
_DIMS, _RDIMS = 4, 3

_STAGE = ["present", "inline", "root", "at_depth", "packed", "has_update", "log_full", "log_region",
          "log_realizations", "log_redundancy", "loops", "lanes", "vector_contiguous", "log_unroll",
          "log_parallel", "parallel_per_thread", "tasks", "log_tile", "log_tile_bytes", "innermost_contiguous",
          "log_rsplit", "rdepth", "runroll", "rfactor", "splits",
          *(f"log_extent{i}" for i in range(_DIMS)), *(f"log_rextent{i}" for i in range(_RDIMS))]
_OPERATOR = ["log_flops", "log_bytes", "log_intensity", "log_output", "log_reduction", "inputs", "itemsize",
             "stages"]
_GLOBAL = ["materialised", "at_root", "parallel_stages", "log_unroll_total", "max_lanes", "directives"]

#: The name of every feature, in the order ``features`` returns them.
FEATURE_NAMES = (*(f"op_{n}" for n in _OPERATOR), *(f"all_{n}" for n in _GLOBAL),
                 *(f"s{slot}_{n}" for slot in range(SLOTS) for n in _STAGE))


def features(operator: Operator, space: ScheduleSpace, genome: Genome) -> np.ndarray:
    """The feature row of ``genome`` (a genome of ``space``, the space of
    ``operator``), as float64 in the order of ``FEATURE_NAMES``."""
    plans = plan(space, genome)
    itemsize = np.dtype(operator.dtype).itemsize
    stages = [_stage(space, i, plans, itemsize) for i in range(len(space.stages))]
    slots: list[float] = []
    for slot in range(SLOTS):
        index = len(stages) - 1 - slot
        slots += stages[index] if index >= 0 else [0.0] * len(_STAGE)
    column = {n: i for i, n in enumerate(_STAGE)}
    total = lambda name: sum(s[column[name]] for s in stages)  # noqa: E731
    directives = sum(len(d.directives) for p in plans for d in p.definitions)
    glob = [total("present") - total("inline"), total("root"), sum(s[column["log_parallel"]] > 0 for s in stages),
            total("log_unroll"), max(s[column["lanes"]] for s in stages), directives]
    return np.asarray([*_operator(operator, space), *glob, *slots], dtype=np.float64)


def _log(value: float) -> float:
    return math.log2(value) if value > 0 else 0.0


def _operator(operator: Operator, space: ScheduleSpace) -> list[float]:
    flops, moved = max(1, int(operator.flops)), max(1, int(operator.bytes_moved))
    return [_log(flops), _log(moved), _log(flops / moved), _log(math.prod(operator.output.shape)),
            _log(operator.reduction_length), len(operator.inputs), np.dtype(operator.dtype).itemsize,
            len(space.stages)]


def _stage(space: ScheduleSpace, index: int, plans: list[StagePlan], itemsize: int) -> list[float]:
    stage, sp = space.stages[index], plans[index]
    f = dict.fromkeys(_STAGE, 0.0)
    f["present"] = 1.0
    f["has_update"] = float(stage.has_update)
    full = math.prod(stage.extents)
    f["log_full"] = _log(full)
    for i, e in enumerate(stage.extents[:_DIMS]):
        f[f"log_extent{i}"] = _log(e)
    for i, e in enumerate(stage.rextents[:_RDIMS]):
        f[f"log_rextent{i}"] = _log(e)
    if sp.location == INLINE or not sp.definitions:
        f["inline"] = 1.0
        return list(f.values())
    f["root"] = float(sp.location == ROOT)
    f["at_depth"] = float(max(0, sp.location))
    f["packed"] = float(stage.optional)
    pure, last = sp.definitions[0], sp.definitions[-1]
    region = math.prod(l.extent for l in pure.loops if not l.rvar)
    realizations = _realizations(space, stage, sp, plans)
    f["log_region"] = _log(region)
    f["log_realizations"] = _log(realizations)
    f["log_redundancy"] = _log(region * realizations / max(1, full))
    f["loops"] = float(len(last.loops))
    lanes, contiguous = _lanes(stage, sp)
    f["lanes"], f["vector_contiguous"] = float(lanes), float(contiguous)
    f["log_unroll"] = max(_log(_named_product(d, "unroll")) for d in sp.definitions)
    extent, tasks = _parallel(sp)
    f["log_parallel"] = _log(extent)
    f["parallel_per_thread"] = min(extent, 4 * space.threads) / space.threads if extent else 0.0
    f["tasks"] = float(tasks)
    tile = _tile(stage, pure)
    f["log_tile"] = _log(tile)
    f["log_tile_bytes"] = _log(tile * itemsize)
    f["innermost_contiguous"] = float(_innermost_contiguous(stage, last))
    f["log_rsplit"] = _log(math.prod(l.extent for l in last.loops if l.rvar and l.name.endswith("_r")))
    f["rdepth"] = float(_rdepth(last))
    f["runroll"] = float(any(d[0] == "unroll" and _is_rvar_loop(last, d[1]) for d in last.directives))
    f["rfactor"] = _rfactor_lanes(last)
    f["splits"] = float(sum(d[0] == "split" for d in (x for dd in sp.definitions for x in dd.directives)))
    return list(f.values())


def _realizations(space: ScheduleSpace, stage: StageSpace, sp: StagePlan, plans: list[StagePlan]) -> float:
    """How many times the stage is computed: once at root, else once per iteration
    of its consumer's loops down to the one it is computed at."""
    if sp.location <= ROOT or stage.consumer is None:
        return 1.0
    consumer = plans[space.index(stage.consumer)]
    count = 1
    for loop in consumer.loops:
        count *= max(1, loop.extent)
        if loop.name == sp.at_loop:
            break
    return float(count)


def _lanes(stage: StageSpace, sp: StagePlan) -> tuple[int, bool]:
    """Widest vector in any definition, and whether it runs along the innermost
    (contiguous) dimension."""
    best, contiguous = 1, False
    for d in sp.definitions:
        extents = {l.name: l.extent for l in d.loops}
        for directive in d.directives:
            if directive[0] == "vectorize" and directive[1] in extents and extents[directive[1]] > best:
                best = extents[directive[1]]
                contiguous = bool(stage.vars) and base_name(directive[1]) == stage.vars[0]
    return best, contiguous


def _named_product(d: Definition, kind: str) -> int:
    names = {x[1] for x in d.directives if x[0] == kind}
    return math.prod(l.extent for l in d.loops if l.name in names)


def _parallel(sp: StagePlan) -> tuple[int, int]:
    """Iterations of the parallel loop, and the tasks it was cut into (0: one per iteration)."""
    d = sp.definitions[-1]
    names = {x[1] for x in d.directives if x[0] == "parallel"}
    loops = [l for l in d.loops if l.name in names]
    if not loops:
        return 0, 0
    extent = loops[0].extent
    split = next((l for l in d.loops if l.name.endswith("_k")), None)
    return extent * (split.extent if split else 1), (extent if split else 0)


def _tile(stage: StageSpace, pure: Definition) -> int:
    """Elements of the innermost tile: per variable, the loops inside its outermost
    one (a variable left whole counts whole, one fused into the parallel loop
    counts the loops left of it)."""
    fused = {x[i] for x in pure.directives if x[0] == "fuse" for i in (1, 2)}
    tile = 1
    for var in stage.vars:
        mine = [l for l in pure.loops if not l.rvar and base_name(l.name) == var]
        inner = [l for l in mine if l.name != var or var in fused]
        if var not in fused and len(mine) == 1:
            inner = mine
        tile *= math.prod(l.extent for l in inner) if inner else 1
    return tile


def _innermost_contiguous(stage: StageSpace, d: Definition) -> bool:
    """Whether the innermost loop that is neither vectorised nor an rvar walks the
    stage's innermost dimension."""
    vectorized = {x[1] for x in d.directives if x[0] == "vectorize"}
    for loop in reversed(d.loops):
        if loop.name in vectorized or loop.rvar:
            continue
        return bool(stage.vars) and base_name(loop.name) == stage.vars[0]
    return False


def _rdepth(d: Definition) -> int:
    """Pure loops nested inside the innermost reduction loop."""
    last = max((i for i, l in enumerate(d.loops) if l.rvar), default=None)
    return 0 if last is None else sum(1 for l in d.loops[last + 1:] if not l.rvar)


def _is_rvar_loop(d: Definition, name: str) -> bool:
    return any(l.rvar and l.name == name for l in d.loops)


def _rfactor_lanes(d: Definition) -> float:
    factored = next((x for x in d.directives if x[0] == "rfactor"), None)
    if factored is None:
        return 0.0
    split = next((x for x in d.directives if x[0] == "split" and x[3] == factored[1]), None)
    return float(split[4]) if split else 0.0


# -- operators from their keys ---------------------------------------------------------

_KEY = re.compile(r"^([A-Za-z_]\w*)\((.*)\)$")
_INTS = re.compile(r"^-?\d+(x-?\d+)+$")


def operator_of(key: str) -> Operator | None:
    """The built-in operator whose ``key`` this is, rebuilt from it, or ``None``
    (a custom operator, a family this version lacks, a key from elsewhere): the
    records keep keys, and the model needs shapes, FLOPs and bytes.

    >>> import evokernel as ek
    >>> op = ek.operators.conv2d(1, 8, 9, 9, 4, k=3, pad=1)
    >>> operator_of(op.key) == op, operator_of("mystery(x=1)")
    (True, None)
    """
    match = _KEY.match(key) if isinstance(key, str) else None
    if match is None:
        return None
    args = {}
    for part in filter(None, match.group(2).split(",")):
        name, sep, text = part.partition("=")
        if not sep:
            return None
        args[name] = _value(text)
    try:
        operator = from_dict({"family": match.group(1), "args": args})
    except Exception:  # noqa: BLE001 - any key that does not rebuild is simply not usable
        return None
    return operator if operator.key == key else None


def _value(text: str):
    if text in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[text]
    if _INTS.match(text):
        return tuple(int(v) for v in text.split("x"))
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
