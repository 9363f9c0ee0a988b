"""``TunedModel``: a network with its tuned kernels, run on NumPy arrays, reported,
saved and loaded (``ek.load_model``), and accepted by the exporters."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .._format import format_seconds, table
from ..codegen import write_atomic
from ..errors import EvokernelError, KernelCallError, ModelError
from ..store import Kernel, load_kernel
from ._network import Network
from ._onnx import import_onnx

FORMAT = "evokernel-model"
#: Largest member of a saved model read back (the ONNX model with its weights).
MAX_MEMBER = 4 << 30


class TunedModel:
    """A network whose operators have tuned kernels: call it on NumPy arrays (tuned
    kernels where they exist, ONNX's NumPy reference for the rest).

    ``kernels`` maps operator keys to kernels; ``failed`` maps operator keys whose
    tuning found no correct candidate to the reason.

    >>> import numpy as np, evokernel as ek
    >>> from onnx import helper, TensorProto
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])
    >>> nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], ["y"])]
    >>> net = ek.tune_model(helper.make_model(helper.make_graph(nodes, "g", [x], [y])), budget=4, evaluator="local")
    >>> a = np.random.rand(4, 16).astype(np.float32)
    >>> bool(np.allclose(net(a).sum(axis=1), 1.0, atol=1e-5)), len(net.kernels)
    (True, 2)
    """

    def __init__(self, network: Network, kernels: dict[str, Kernel], failed: dict[str, str] | None = None,
                 input_shapes: dict | None = None, summary: dict | None = None):
        self.network, self._kernels, self.failed = network, dict(kernels), dict(failed or {})
        self.input_shapes = {k: tuple(v) for k, v in (input_shapes or {}).items()}
        self.summary = dict(summary or {})

    @property
    def name(self) -> str:
        return self.network.name

    @property
    def kernels(self) -> list[Kernel]:
        """The tuned kernels, one per distinct operator (what the exporters take)."""
        return list(self._kernels.values())

    @property
    def inputs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Input name -> (shape, dtype), as the network was tuned for."""
        return dict(self.network.inputs)

    def __call__(self, *arrays: np.ndarray, **named: np.ndarray):
        """Run the network on its inputs (in order, or by name); returns its output,
        or a tuple of outputs when it has several."""
        values = self._inputs(arrays, named)
        outputs = self.network.run(values, self._kernels)
        result = tuple(outputs[name] for name in self.network.outputs)
        return result[0] if len(result) == 1 else result

    def _inputs(self, arrays, named) -> dict[str, np.ndarray]:
        names = list(self.network.inputs)
        if len(arrays) > len(names):
            raise KernelCallError(f"{self.name} takes {len(names)} inputs ({', '.join(names)}), got {len(arrays)}")
        given = {**dict(zip(names, arrays)), **named}
        unknown, missing = set(given) - set(names), [n for n in names if n not in given]
        if unknown or missing:
            raise KernelCallError(f"{self.name} takes the inputs {', '.join(names)}"
                                  + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
                                  + (f"; missing: {', '.join(missing)}" if missing else ""))
        out = {}
        for name, (shape, dtype) in self.network.inputs.items():
            array = given[name]
            if not isinstance(array, np.ndarray):
                raise KernelCallError(f"input {name!r} must be a NumPy array, got {type(array).__name__}")
            if array.shape != shape or array.dtype != dtype:
                raise KernelCallError(f"input {name!r} must be {dtype} of shape {shape} (the network was tuned for "
                                      f"it), got {array.dtype} of shape {array.shape}")
            out[name] = array
        return out

    # -- reports ------------------------------------------------------------------

    def rows(self) -> list[dict]:
        """One row per step: node(s), operator, its time before (unscheduled) and
        after tuning in seconds, or why it is computed by NumPy."""
        rows = []
        for step in self.network.steps:
            kernel = self._kernels.get(step.operator.key) if step.operator is not None else None
            if kernel is not None:
                before, after = kernel.stats.baseline, kernel.stats.time
                why = None
            else:
                before = after = None
                why = step.reason or self.failed.get(step.operator.key, "not tuned")
            rows.append({"node": step.name, "kind": step.kind,
                         "operator": step.operator.key if step.operator is not None else None,
                         "before": before, "after": after, "numpy": why})
        return rows

    def report(self, format: str = "text") -> str:
        """Every node: its operator, its share of the tuned nodes' time before and
        after tuning, its speedup, or why it is left to NumPy; totals last."""
        if format not in ("text", "markdown"):
            raise ValueError(f"report format is 'text' or 'markdown', got {format!r}")
        rows = self.rows()
        total_before = sum(r["before"] or 0.0 for r in rows if r["after"] is not None)
        total_after = sum(r["after"] for r in rows if r["after"] is not None)
        body = []
        for r in rows:
            if r["after"] is None:
                body.append([r["node"], r["kind"], "NumPy", "", "", "", r["numpy"]])
                continue
            speedup = f"{r['before'] / r['after']:.1f}x" if r["before"] else ""
            body.append([r["node"], r["kind"], format_seconds(r["after"]), _share(r["before"], total_before),
                         _share(r["after"], total_after), speedup, r["operator"]])
        served = sum(r["after"] is not None for r in rows)
        head = ["node", "op", "time", "share before", "share after", "speedup", "operator / why NumPy"]
        lines = [f"{self.name}: {served} of {len(rows)} nodes on tuned kernels ({len(self._kernels)} distinct)"]
        if total_after:
            speedup = f" ({total_before / total_after:.1f}x)" if total_before else ""
            lines.append(f"tuned nodes: {format_seconds(total_before)} unscheduled -> "
                         f"{format_seconds(total_after)} tuned{speedup}")
        if self.summary:
            lines.append(", ".join(f"{k} {v}" for k, v in self.summary.items()))
        return "\n".join(lines) + "\n\n" + table(head, body, markdown=format == "markdown")

    def __repr__(self) -> str:
        return f"TunedModel({self.name!r}, {len(self._kernels)} kernels, {len(self.network.steps)} steps)"

    # -- files ----------------------------------------------------------------------

    def save(self, path, key=None) -> Path:
        """Write the model (its ONNX graph with weights) and every kernel to one file,
        the kernels signed as ``Kernel.save`` signs them (with ``key``, by default the
        cache's). Load it with ``ek.load_model(path)`` on a machine of the kernels' target."""
        path = Path(path)
        manifest = {"format": FORMAT, "version": 1, "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
                    "kernels": {}, "failed": self.failed, "summary": self.summary}
        with tempfile.TemporaryDirectory() as scratch:
            for i, (operator, kernel) in enumerate(self._kernels.items()):
                manifest["kernels"][operator] = f"kernels/{i}.evokernel"
                kernel.save(Path(scratch) / f"{i}.evokernel", key=key)
            staged = Path(scratch) / "model.zip"
            with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("manifest.json", json.dumps(manifest, indent=1))
                z.writestr("model.onnx", self.network.model_bytes)
                for member in manifest["kernels"].values():
                    z.write(Path(scratch) / Path(member).name, member)
            write_atomic(path, staged.read_bytes())
        return path


def load_model(path, cache_dir=None, *, trusted: bool = False, keys=()) -> TunedModel:
    """A ``TunedModel`` saved with ``TunedModel.save``; its kernels are verified as
    ``ek.load_kernel(path, trusted=, keys=)`` verifies a bundle (signed by this
    cache's key or one of ``keys``, unless ``trusted``). Raises ``ModelError`` naming
    the file when it is not a saved model."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no saved model at {path}")
    try:
        with zipfile.ZipFile(path) as z, tempfile.TemporaryDirectory() as scratch:
            manifest = json.loads(_member(z, "manifest.json", path))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise ModelError(f"{path} is not a saved evokernel model")
            model_bytes = _member(z, "model.onnx", path)
            kernels = {}
            for key, member in dict(manifest["kernels"]).items():
                local = Path(scratch) / Path(str(member)).name
                local.write_bytes(_member(z, str(member), path))
                kernels[str(key)] = load_kernel(local, cache_dir=cache_dir, trusted=trusted, keys=keys)
    except (zipfile.BadZipFile, json.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as error:
        if isinstance(error, EvokernelError):  # a kernel's own verdict (untrusted, foreign target...)
            raise
        raise ModelError(f"{path} is not a readable saved model: {error}") from error
    shapes = manifest.get("input_shapes") or {}
    network = import_onnx(model_bytes, {k: tuple(v) for k, v in shapes.items()})
    missing = set(kernels) - set(network.operators())
    if missing:
        raise ModelError(f"{path}: kernels for operators the model does not have: {', '.join(sorted(missing))}")
    return TunedModel(network, kernels, manifest.get("failed") or {}, shapes, manifest.get("summary") or {})


def _member(z: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise ModelError(f"{path} has no {name}: not a saved evokernel model") from None
    if info.file_size > MAX_MEMBER:
        raise ModelError(f"{path}: {name} would inflate to {info.file_size} bytes, more than a model holds")
    return z.read(info)


def _share(value: float | None, total: float) -> str:
    return f"{100 * value / total:.0f}%" if value and total else ""
