"""Evaluators: build candidates, check them against the reference, time them.

A ``Builder`` compiles genomes into artifacts, a ``Runner`` checks and times them
on the target; an ``Evaluator`` combines the two (as TVM's meta_schedule does).
``create_evaluator`` makes one by name: ``"ray"``, ``"local"``, ``"inline"``.
``EmulatedRunner`` checks kernels of another platform (``arm-64-linux`` here) under
an emulator, as a Ray runner node of another platform does.
"""

from ._builder import Builder, LocalBuilder
from ._cluster import (ensure_ray, local_runner_resources, reachable, runner_resource_for, runner_resources,
                       shutdown_local_ray)
from ._context import Context, Settings
from ._emulated import EmulatedProcess, EmulatedRunner, emulator_for
from ._evaluator import Evaluator, InlineEvaluator, LocalEvaluator
from ._factory import EVALUATORS, create_evaluator
from ._process import WorkerProcess
from ._protocol import CHECK_ONLY, Measurement, Protocol, Task, check, run_one
from ._ray import RayBuilder, RayEvaluator, RayRunner
from ._result import Outcome, Result
from ._runner import InlineRunner, LocalRunner, Runner

__all__ = [
    "Builder", "LocalBuilder", "RayBuilder", "Runner", "LocalRunner", "InlineRunner", "RayRunner",
    "Evaluator", "LocalEvaluator", "InlineEvaluator", "RayEvaluator", "EVALUATORS", "create_evaluator",
    "Context", "Settings", "Protocol", "CHECK_ONLY", "Measurement", "Task", "check", "run_one",
    "Outcome", "Result", "runner_resources", "local_runner_resources", "runner_resource_for", "ensure_ray",
    "reachable", "shutdown_local_ray", "WorkerProcess", "EmulatedProcess", "EmulatedRunner", "emulator_for",
]
