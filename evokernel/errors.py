"""Exceptions raised by evokernel; each names the problem it reports."""

from __future__ import annotations


class EvokernelError(Exception):
    """Base class of every error evokernel raises on purpose."""


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


class CacheError(EvokernelError, RuntimeError):
    """The cache directory or a cached file cannot be trusted or used."""


class ExportError(EvokernelError, ValueError):
    """Kernels cannot be exported as asked (no kernels, mixed targets, a bad name,
    an unwritable directory, an operator the export format cannot express...)."""


class NotTunedError(EvokernelError, LookupError):
    """``ek.load`` found no cached kernel for this operator, target and machine."""
