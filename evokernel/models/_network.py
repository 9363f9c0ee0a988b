"""A network as evokernel runs it: steps in topological order, each computed by
a tuned kernel (an operator) or by ONNX's NumPy reference implementation."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np

from ..operators import Operator

#: A kernel step's argument: the name of a value of the network, or a constant
#: (a weight read from the model, already in the layout the operator takes).
Arg = Union[str, np.ndarray]


@dataclass(eq=False)
class Step:
    """ONNX nodes computed as one: by ``operator`` (``args`` in its input order;
    the result reshaped to ``shape``), or, where ``operator`` is None, by the
    reference implementation of the single node ``node`` (``reason`` says why)."""

    nodes: tuple[str, ...]
    op_types: tuple[str, ...]
    outputs: tuple[str, ...]
    operator: Operator | None = None
    args: tuple[Arg, ...] = ()
    shape: tuple[int, ...] | None = None
    node: object = None  # an onnx.NodeProto, for reference steps
    reason: str | None = None
    opsets: dict = field(default_factory=dict, repr=False)
    _reference: Callable | None = field(default=None, repr=False)
    _out: np.ndarray | None = field(default=None, repr=False)  # the kernel's output, reused from run to run

    def __post_init__(self):
        self.key = self.operator.key if self.operator is not None else None
        self._shapes = tuple(spec.shape for spec in self.operator.inputs) if self.operator is not None else ()

    @property
    def name(self) -> str:
        return "+".join(self.nodes)

    @property
    def kind(self) -> str:
        return "+".join(self.op_types)

    def run(self, values: dict, kernel: Callable | None) -> None:
        """Compute this step from ``values`` (name -> array) and store its outputs
        there; ``kernel`` is the tuned kernel of the operator, or None (NumPy). A
        kernel writes into this step's own buffer, the same one on every run."""
        if self.operator is None:
            inputs = {name: values[name] for name in self.node.input if name}
            for name, value in zip(self.outputs, self._evaluator().run(None, inputs)):
                values[name] = value
            return
        arrays = [np.ascontiguousarray(values[a]).reshape(shape) if isinstance(a, str) else a
                  for a, shape in zip(self.args, self._shapes)]
        if kernel is None:
            result = self.operator.reference(*arrays)
        else:
            if self._out is None:
                self._out = np.empty(self.operator.output.shape, self.operator.output.dtype)
            result = kernel(*arrays, out=self._out)
        values[self.outputs[0]] = result if self.shape is None else result.reshape(self.shape)

    def _evaluator(self):
        if self._reference is None:
            from onnx.reference import ReferenceEvaluator

            self._reference = ReferenceEvaluator(self.node, opsets=self.opsets)
        return self._reference


@dataclass
class Network:
    """An imported network: its inputs (name -> shape, dtype), outputs, constants
    (initializers) and steps in an order that computes every value before use."""

    name: str
    inputs: dict[str, tuple[tuple[int, ...], np.dtype]]
    outputs: tuple[str, ...]
    constants: dict[str, np.ndarray]
    steps: list[Step]
    model_bytes: bytes = b""
    value_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # every value's static shape
    _running: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def operators(self) -> dict[str, tuple[Operator, int]]:
        """Distinct operators by key, with how many steps use each."""
        counts = Counter(s.operator.key for s in self.steps if s.operator is not None)
        first = {s.operator.key: s.operator for s in reversed(self.steps) if s.operator is not None}
        return {key: (first[key], counts[key]) for key in counts}

    def run(self, arrays: dict[str, np.ndarray], kernels: dict[str, Callable]) -> dict[str, np.ndarray]:
        """Every output of the network for ``arrays`` (checked inputs by name), with
        ``kernels`` (operator key -> callable taking ``out=``) where they exist. The
        steps' buffers are reused, so one run at a time; the outputs are copies."""
        with self._running:
            values = {**self.constants, **arrays}
            for step in self.steps:
                step.run(values, kernels.get(step.key))
            return {name: np.array(values[name], copy=True) for name in self.outputs}
