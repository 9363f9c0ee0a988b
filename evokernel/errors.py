"""Exceptions raised by evokernel; each names the problem it reports."""

from __future__ import annotations


class EvokernelError(Exception):
    """Base class of every error evokernel raises on purpose."""


class ArgumentError(EvokernelError, ValueError, TypeError):
    """An argument of the wrong type or out of range (``seed="abc"``, ``threads=-1``,
    ``ek.load("matmul")``, an unknown evaluator name); the message names the argument.
    It is a ``ValueError`` and a ``TypeError`` too, as NumPy's ``AxisError`` is both."""


class OperatorArgumentError(EvokernelError, ValueError):
    """An operator was given impossible arguments (a non-positive size, a kernel
    larger than the padded input, channels not divisible by groups...)."""


class UnsupportedDtypeError(EvokernelError, TypeError):
    """A dtype evokernel cannot generate code for."""


class TargetError(EvokernelError, ValueError):
    """An unknown, malformed or unsupported target string."""


class KernelCallError(EvokernelError, ValueError):
    """A Kernel was called with the wrong number, shape or dtype of arrays."""


class BudgetError(EvokernelError, ValueError):
    """A tuning budget that cannot be understood (``"60s"``, ``"2m"``, ``100``)."""


class SearchSettingsError(EvokernelError, ValueError):
    """Search settings that make no sense (an unknown strategy, an empty population)."""


class BuildError(EvokernelError, RuntimeError):
    """Halide rejected a schedule, or compiling or linking generated code failed.
    During a search these become recorded ``compile_error`` results, never raised."""


class KernelRuntimeError(EvokernelError, RuntimeError):
    """Generated code reported an error while running (Halide's message)."""


class TuningError(EvokernelError, RuntimeError):
    """A tuning run ended without a single correct candidate."""


class ClusterError(EvokernelError, RuntimeError):
    """The Ray instance evaluating candidates failed (its raylet or head process
    died): the run stops, what it evaluated is recorded, and the next run starts a
    fresh local instance."""


class CacheError(EvokernelError, RuntimeError):
    """The cache directory or a cached file cannot be trusted or used."""


class UntrustedBundleError(CacheError):
    """A kernel bundle that is not signed, or not signed by a key this cache trusts
    (its own, or one passed to ``load_kernel(keys=...)``). Loading a bundle runs its
    code: ``load_kernel(path, trusted=True)`` loads it anyway, for a bundle whose
    origin you trust."""


class ExportError(EvokernelError, ValueError):
    """Kernels cannot be exported as asked (no kernels, mixed targets, a bad name,
    an unwritable directory, an operator the export format cannot express...)."""


class NotTunedError(EvokernelError, LookupError):
    """``ek.load`` found no cached kernel for this operator, target and machine."""


class ModelError(EvokernelError, ValueError):
    """A network cannot be imported or run as asked: a missing or corrupt ONNX file,
    an unsupported opset or data type, an input shape that does not fit the graph,
    a dynamic dimension without ``input_shapes=``, no node evokernel can compute."""


class NoGradientError(EvokernelError, RuntimeError):
    """A backward pass reached a layer that runs on a tuned kernel: kernels compute
    the forward pass only (inference). Train the original module, or run the
    optimized one under ``torch.no_grad()``."""
