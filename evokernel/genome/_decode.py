"""Decoding: apply a genome's plan to a fresh algorithm, and print it as code.

One walk does both: every Halide call goes through ``_Recorder``, which makes the call
and writes the same call as a line of Python, so the printed schedule is exactly the
one that was compiled.
"""

from __future__ import annotations

import halide as hl

from ..operators._base import Algorithm
from ._genome import INLINE, ROOT, Genome
from ._loops import OUTERMOST, MemoryType, TailStrategy
from ._plan import plan
from ._space import ScheduleSpace


def apply(genome: Genome, algorithm: Algorithm, space: ScheduleSpace) -> str:
    """Schedule ``algorithm`` (freshly built) as ``genome`` says; return the code.

    Raises ``hl.HalideError`` if Halide rejects the schedule; the algorithm's Funcs
    are then half-changed and must be thrown away.
    """
    recorder = _Recorder(algorithm)
    stages = {s.name: s for s in algorithm.stages}
    for stage_space, stage_plan in reversed(list(zip(space.stages, plan(space, genome)))):
        func = stages[stage_space.name].func
        rec = _Handle(recorder, stage_space.name, func)
        if stage_plan.location == INLINE:
            rec.call("compute_inline")
            continue
        if stage_plan.location == ROOT:
            if not stage_space.is_output:
                rec.call("compute_root")
        else:
            host = stage_plan.at_stage or stage_space.consumer
            rec.call("compute_at", _FuncRef(host, stages[host].func), stage_plan.at_loop)
        intermediate = None
        for index, definition in enumerate(stage_plan.definitions):
            target = rec if index == 0 else rec.update(index - 1)
            for directive in definition.directives:
                if directive[0] == "rfactor":
                    intermediate = target.rfactor(*directive[1:])
                else:
                    target.call(*directive)
        if intermediate is not None:
            _apply_intermediate(intermediate, stage_plan.intermediate, _FuncRef(stage_space.name, func))
    return recorder.code()


def _apply_intermediate(rec: "_Handle", planned, stage: "_FuncRef") -> None:
    rec.call("compute_at", stage, planned.at_loop)
    for index, definition in enumerate(planned.definitions):
        target = rec if index == 0 else rec.update(index - 1)
        for directive in definition.directives:
            target.call(*directive)


def schedule_code(genome: Genome, algorithm: Algorithm, space: ScheduleSpace) -> str:
    """The Halide (Python) schedule code of ``genome`` for ``algorithm``."""
    try:
        return apply(genome, algorithm, space)
    except hl.HalideError as error:
        return f"# Halide rejects this schedule: {error}"


class _Recorder:
    def __init__(self, algorithm: Algorithm):
        self.lines: list[str] = []
        self.loop_vars: dict[str, object] = {}
        self.declared: list[str] = []
        self.rvars: dict[str, hl.RVar] = {}
        for stage in algorithm.stages:
            if stage.rdom is not None:
                for i in range(stage.rdom.dimensions()):
                    self.rvars[stage.rdom[i].name()] = stage.rdom[i]

    def loop(self, name: str, rvar: bool):
        """The Var or RVar called ``name`` (created and declared on first use)."""
        if name in self.rvars:
            return self.rvars[name]
        if name not in self.loop_vars:
            self.loop_vars[name] = hl.RVar(name) if rvar else hl.Var(name)
            kind = "RVar" if rvar else "Var"
            self.declared.append(f'{name} = hl.{kind}("{name}")')
        return self.loop_vars[name]

    def is_rvar(self, name: str) -> bool:
        return name in self.rvars or isinstance(self.loop_vars.get(name), hl.RVar)

    def code(self) -> str:
        return "\n".join(self.declared + self.lines)


class _FuncRef:
    def __init__(self, name: str, func: hl.Func):
        self.name, self.func = name, func


def _code_name(name: str) -> str:
    """``r$x`` (an RDom's own RVar) prints as ``r.x``."""
    return name.replace("$", ".")


class _Handle:
    """A Func or one of its update stages: makes calls and records them."""

    def __init__(self, recorder: _Recorder, code: str, target):
        self.recorder, self.code, self.target = recorder, code, target

    def update(self, index: int) -> "_Handle":
        return _Handle(self.recorder, f"{self.code}.update({index})", self.target.update(index))

    def rfactor(self, rvar: str, var: str, name: str) -> "_Handle":
        """``name = <this update>.rfactor([(rvar, var)])``: the intermediate's handle."""
        pair = (self.recorder.loop(rvar, True), self.recorder.loop(var, False))
        func = self.target.rfactor([pair])
        self.recorder.lines.append(f"{name} = {self.code}.rfactor([({_code_name(rvar)}, {_code_name(var)})])")
        return _Handle(self.recorder, name, func)

    def call(self, method: str, *args) -> None:
        values, texts = [], []
        rvar_context = method == "split" and self.recorder.is_rvar(args[0]) if args else False
        for arg in args:
            value, text = self._argument(arg, rvar_context)
            values.append(value)
            texts.append(text)
        getattr(self.target, method)(*values)
        self.recorder.lines.append(f"{self.code}.{method}({', '.join(texts)})")

    def _argument(self, arg, rvar_context: bool):
        if isinstance(arg, _FuncRef):
            return arg.func, arg.name
        if isinstance(arg, (TailStrategy, MemoryType)):
            kind = type(arg).__name__
            return getattr(getattr(hl, kind), arg.name), f"hl.{kind}.{arg.name}"
        if arg == OUTERMOST:
            return hl.Var.outermost(), "hl.Var.outermost()"
        if isinstance(arg, str):
            rvar = rvar_context or self.recorder.is_rvar(arg)
            return self.recorder.loop(arg, rvar), _code_name(arg)
        return arg, repr(arg)
